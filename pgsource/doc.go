// Package pgsource captures the committed changes of a PostgreSQL database
// through logical replication (pgoutput, protocol 1, via pglogrepl and pgx)
// into a walship WAL, one log transaction per source transaction
// (docs/POSTGRES.md; docs/DESIGN.md §4.4).
//
// Guarantees:
//
//   - Whole transactions. Nothing of a source transaction is appended before
//     its commit is received; a spilled one is streamed with
//     wal.WAL.AppendStream, which never exposes part of it. A transaction cut
//     by a crash or disconnect leaves nothing.
//   - Durable before acknowledged. The position confirmed to PostgreSQL
//     (standby status flush LSN) only moves over transactions whose log
//     tickets are durable (WAL.Durable() >= ticket.Last) and have reached
//     the configured replication level (Options.Confirmable: with shipped,
//     stored by every counted sink), in commit order, or, when nothing is in
//     flight, to the server's keepalive position.
//   - Exactly once across restarts. The checkpoint "pg.<slot>" plus a scan of
//     the log tail give the newest source commit already in the log; a
//     re-sent transaction at or below it is skipped.
//   - Exactly once on a copy of the log. Without the checkpoint (a new HA
//     leader's log, built by a follower) the whole log is scanned for that
//     position, and the state of the initial snapshot is read from the log:
//     an end marker (a logical message SnapshotDonePrefix) or a streamed
//     transaction after the last chunk means done; chunks last mean cut
//     short, and the tables are copied again from a fresh snapshot.
//   - Takeover and fencing. Options.TakeOverSlot terminates a backend
//     holding the slot (an old leader) before streaming; Options.Gate is
//     asked before every standby status update and every append, and once it
//     fails nothing more is confirmed or appended.
//   - Resumable, consistent snapshot. Tables are copied from the slot's
//     exported snapshot in primary-key chunks of `r` changes whose progress is
//     checkpointed; after a crash only the chunks not done are copied again
//     (from a fresh snapshot), and replaying the stream from the slot's start
//     over them converges for upserting appliers. Each chunk's header records
//     its snapshot position (change.TxHeader.Snapshot) for the Kafka
//     envelope's source.snapshot; a table's last chunk is never empty.
//   - Complete after images. Unchanged TOAST values are filled in (old row
//     under REPLICA IDENTITY FULL, a bounded cache, else a read by key),
//     never left as placeholders or nulls.
//   - Exact values. Every column maps to a change.Value without loss; what
//     the model cannot hold is an Unknown value with its text.
//   - What is published is what is captured. Row filters and column lists
//     are the publication's own (PostgreSQL 15), and the snapshot copies
//     the same rows and columns; a publication walship created is brought
//     in step with Options.Tables on every start, and one it did not is
//     never dropped from or changed. Partitions are published as their
//     root, and a root is copied once.
//   - Hashed and masked values never reach the log: they are replaced in
//     every row image and key before it is appended (TableSpec).
//   - Bounded memory. A transaction over Config.MaxTxnMemory spills to a file.
//   - Clear failures. Errors retrying cannot fix are *FatalError naming the
//     config key; a dropped or invalidated slot matches ErrSlotLost and is
//     never recreated behind the user's back. Connection loss and server
//     restarts are retried inside Run.
package pgsource
