// Package checksum checks, while the stream runs, that replicas hold the
// source's rows. A round walks each table of the source's publication in
// primary-key order, chunk by chunk (Options.ChunkRows rows), and for each
// chunk, in one source transaction, locks the chunk's rows (SELECT ... FOR
// SHARE), hashes them in the canonical form of package replica and emits
// the hash as a transactional logical message (prefix
// replica.ChecksumPrefix). The message is part of that transaction's
// commit, so it sits in the stream exactly where the rows it describes
// stand; a replica applying the stream hashes the same key range in the
// same database transaction as it applies the message, and records both
// hashes (table walship_checksums). A round ends with a message marking it
// done with its chunk count.
//
// Guarantees:
//   - Equal rows give equal hashes in a PostgreSQL source, a PostgreSQL
//     replica and a SQLite replica: both sides use replica's canonical
//     values and the byte encoding of docs/CHECKSUM.md.
//   - Updates and deletes of a chunk's rows by concurrent transactions
//     cannot slip between the hash and the message's commit: the rows are
//     locked FOR SHARE until the commit.
//   - Inserts into a chunk's range are not blocked by row locks. Each
//     chunk is therefore checked twice (Attempt 1 and a recheck of the
//     same range in a new transaction right after): a chunk is reported
//     different only when every attempt differs, so a concurrent insert
//     that races one attempt raises no alarm. A replica that really
//     differs differs at both attempts.
//   - Rounds resume after a restart at the chunk they reached (progress in
//     the source checkpoint store, name CheckpointName).
//   - Checks never change source rows: the locks are shared and held for
//     one chunk's transaction.
//
// Summarize turns a replica's recorded results into a per-table report of
// the last finished round. Repair asks a Repairer to copy each differing
// chunk again through the stream (an incremental snapshot of the key
// range whose chunks also delete the replica rows the source lacks; see
// docs/CHECKSUM.md, "Repair").
package checksum
