// Package archivesink holds the two sinks of `walship run` that feed the
// archive (package archive) from the local log: the Archiver, which
// follows the log and stores its transactions as segment objects, and the
// Snapshotter, which keeps a local SQLite replica of the log and stores
// base snapshots of it, so that restores (package pitr) start near their
// target. They are kept apart from package archive so that the readers of
// the archive — pitr and `walreplay` — never link the log's writer.
//
// # Guarantees
//
//   - Only durable data leaves the host: both read the log through a
//     following wal.Reader, which returns whole durable transactions only.
//   - No holes: the archiver stores transactions in LSN order, one
//     pipeline of read, build, compress and upload; it advances its
//     checkpoint (CheckpointName) only after an object and its manifest
//     are stored, retries failures forever while its context lives, never
//     skips, refuses to start when the local log no longer holds the LSNs
//     after the archive's end, and writes only into a lineage it owns
//     (archive.Claim, *archive.OwnerError).
//   - Retention waits for both: each registers its checkpoint (archiver:
//     CheckpointName; snapshotter: SnapshotterCheckpoint) before it reads,
//     so local segments they still need are kept.
//   - Gate and bound (HA): with a Gate, nothing is put once it fails
//     (checked right before each object, manifest and record; Run returns
//     its error, matching archive.ErrGateClosed); with Through, nothing
//     past Through() is archived or applied to the snapshot replica.
//   - A snapshot is a consistent copy of the local replica at a
//     transaction boundary, stored with the LSN and commit time it
//     reflects, and only after the segments up to that LSN are archived.
package archivesink
