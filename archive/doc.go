// Package archive is walship's archive — a directory (file:///abs/dir) or
// S3 (s3://bucket/prefix) — of the log's transactions and base snapshots:
// its object layout, its catalog and its backends, shared by the writer
// (package archivesink, inside `walship run`) and the readers (package
// pitr, `walreplay`). It does not link the log's writer. docs/ARCHIVE.md specifies the object layout byte
// by byte.
//
// # Layers
//
//   - Backend: a small object store interface (Put, PutIfAbsent, Get,
//     List, Delete) with a directory and an S3 implementation
//     (OpenBackend). Transient failures are retried inside the backend by
//     one classifier, IsTransient; ErrNotFound means missing, never
//     "could not fetch".
//   - Archive: the object layout over a Backend. Segment objects hold
//     whole committed transactions, zstd-compressed and optionally sealed
//     (Options.Seal), each described by a small manifest carrying its LSN,
//     commit-time, source-LSN and xid ranges, restore points, size and
//     checksum (XXH64). Catalog builds a restore plan's inputs from listings and
//     manifests only; ReadSegment fetches, verifies and decodes one
//     segment; PutSnapshot/GetSnapshot store and fetch base snapshots.
//   - SegmentBuilder: accumulates transactions, as read from the log
//     undecoded (RawTxn), into a segment object (Archive.Finish).
//
// # Guarantees
//
//   - Objects are immutable and complete under their final key: writes
//     are conditional creates (S3 If-None-Match, link(2)); an object is
//     part of the archive only when its manifest, written after it,
//     exists.
//   - Every fetch checks the object's size and checksum against its
//     manifest; a mismatch is a *walerr.CorruptionError naming the key
//     (errors.Is walerr.ErrCorruption, like all corruption), a missing
//     object wraps ErrNotFound with the key.
//   - Consecutive segments of a lineage are adjacent in LSNs, so Catalog
//     finds gaps by arithmetic.
//   - A writer writes only into a lineage it owns (Claim, *OwnerError).
//   - With Options.Seal, every segment, snapshot and manifest written is
//     sealed and bound to its own key, and every one read must be: a
//     plain one, one sealed with another key, or an authentic one moved
//     to another key is refused as a *SealError naming the key (damage);
//     without a Sealer, a sealed one is an *EncryptedError (not damage).
//     docs/ARCHIVE.md §10.
package archive
