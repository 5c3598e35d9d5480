// Package archive ships walship's log to an archive — a directory
// (file:///abs/dir) or S3 (s3://bucket/prefix) — and reads it back for
// point-in-time recovery. docs/ARCHIVE.md specifies the object layout byte
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
//   - Archiver: runs inside `walship run`, follows the WAL and stores its
//     transactions, in order, without holes.
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
//   - The archiver advances its checkpoint (CheckpointName) only after an
//     object and its manifest are stored, retries failures forever while
//     its context lives, never skips, and writes only into a lineage it
//     owns (Claim, *OwnerError).
package archive
