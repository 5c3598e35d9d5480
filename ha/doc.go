// Package ha makes several walship daemons of one pipeline a group with one
// leader and standbys (docs/HA.md). This part is the follower side: a
// standby keeps a local log that is LSN-identical to the leader's, built
// from the ordered Kafka topic the leader ships to.
//
// # Guarantees
//
//   - Same log: a Follower appends each whole transaction of the ordered
//     topic (read_committed: records a fenced producer aborted are never
//     seen) with wal.AppendReplica, at the LSNs, with the commit time and
//     with every header field (XID, source LSN and commit time, origin,
//     idempotency mark, in-request flag) the leader's log holds, so that
//     the follower's log reads back transaction by transaction as the
//     leader's, and wal.LoadKeys on it finds the leader's idempotency keys
//     at their original LSNs. A range of LSNs the leader's log used for a
//     transaction it aborted midway arrives as a marker and is written at
//     the same LSNs as an aborted range, which readers skip as they do in
//     the leader's log: both logs have the same next LSN.
//   - Prefix or error: before appending, the Follower reads from the topic
//     the transaction at the LSNs of its own last one and compares every
//     field (header, commit time, changes). A difference, or a local log
//     that ends beyond the topic's end once CatchUp has read to the end,
//     is ErrDiverged naming the LSN: the local tail was never shipped (a
//     deposed leader's), and the log must be rebuilt from the topic.
//   - Nothing skipped: a transaction the log needs that the topic no
//     longer holds (Kafka retention) is an error wrapping kafkawire.ErrGap;
//     TopicStart says where a fresh log can start instead.
//   - CatchUp returns only when every transaction committed in the topic
//     when it was called (below the partition's last stable offset) is in
//     the log and durable; a transaction whose records are only partly
//     committed there yet is left for later.
//   - Records of another lineage are an error naming both lineages.
//   - Without Kafka, an ArchiveFollower builds the same log from the
//     archive's segments (those whose manifest exists), with the same
//     guarantees: LSNs between two archived transactions are written as
//     one aborted range; a segment the log needs that the archive lacks
//     is an error wrapping kafkawire.ErrGap (ArchiveStart says where a
//     fresh log starts); a corrupt object's *walerr.CorruptionError is
//     passed on.
package ha
