// Package kafkasink ships walship's WAL to Kafka (docs/KAFKA.md)
// with github.com/twmb/franz-go, in the record format of package kafkawire
// (compatible with Debezium's PostgreSQL connector), which walship's
// consumer decodes without linking this package.
//
// # Guarantees
//
//   - Only durable data leaves the host: the sink reads the log with a
//     following wal.Reader, which returns whole durable committed
//     transactions only (docs/DESIGN.md §4.2).
//   - Every LSN accounted for: a transaction the log aborted midway is not
//     shipped, but its LSN range is (the reader's ReportAborted): one marker
//     record in the ordered topic (no key, null value, header
//     walship.aborted: true; docs/KAFKA.md, "Aborted ranges"), nothing in
//     tables mode; the watermark passes the range either way. A gap in the
//     log for any other reason is an error, never a marker.
//   - At least once, deduplicable exactly: every record carries the headers
//     walship.lsn, walship.commit_lsn, walship.txn_first_lsn and
//     walship.lineage. The producer is idempotent with acks=all, so within a
//     partition records are neither reordered nor duplicated by retries; a
//     restarted sink starts at the transaction after its checkpoint and
//     re-sends what was acknowledged beyond it; consumers drop what they have
//     by LSN (kafkawire.Assembler does this for the ordered topic).
//   - Contiguous watermark: the checkpoint "kafka" (Pos = the highest
//     commit LSN such that every LSN up to it is acknowledged by the
//     brokers) advances only over a gap-free prefix of acknowledged records,
//     whatever order the produce callbacks complete in (docs/DESIGN.md §4.6), and
//     only to transaction boundaries, so retention, which may remove every
//     segment at or below it, never cuts a transaction the sink must still
//     (re-)send. New registers the name, so retention keeps every segment
//     holding an LSN above it (§4.5).
//   - Bounded memory: at most Config.MaxBufferedRecords records are in
//     flight in the producer, and at most 2048 encoded changes wait for it
//     (reading, encoding on up to 4 workers and producing overlap). When
//     brokers are unreachable, produce blocks, the sink stops reading, and
//     the backlog stays in the local WAL; franz-go retries without end, and
//     a record that fails for good (or credentials or certificates that
//     retrying cannot cure, kafkawire.IsFatal) ends Run with an error.
//   - Order: ordered mode writes every change to one partition of topic
//     "<prefix>.ordered" in LSN order, so transaction boundaries and the
//     total order survive; tables mode writes each table's changes to
//     "<prefix>.<schema>.<table>" keyed by primary key (per-key order only).
//     A record's partition depends on the record alone (its key, or for a
//     keyless record its walship.lsn header).
//   - Transactional mode (Options.TransactionalID; docs/KAFKA.md,
//     "Transactional mode"): records are produced in Kafka transactions,
//     one open at a time; the checkpoint, Acked and Stats.AckedLSN move
//     only over records whose transaction committed; a failed transaction
//     is aborted and its records produced again from the committed
//     position; another producer initialising the id ends Run with
//     ErrFenced; Options.Gate is checked before each run of records, each
//     begin and each commit. After Run returns, the checkpoint is the
//     committed position, so a restart sends each LSN once to
//     read_committed readers (after a crash, the committed records past
//     the last checkpoint write are sent again).
//   - Rebuilding: Publisher produces, for transactions read elsewhere (the
//     archive, by walreplay publish), the records the Sink produced — the
//     same encoder, topics, partitions, headers and timestamps; only the
//     envelope's ts_ms, the processing time, differs — and skips a record
//     its partition already holds (the partition's last walship.lsn says
//     so), so a rebuild re-run or resumed adds nothing twice; a start that
//     would leave a hole in a partition is refused (HoleError).
//
// Files: sink.go is the pipeline (read, encode, produce, checkpoint),
// encode.go the encoding jobs and workers, topics.go topic creation,
// conn.go broker connection health, watermark.go the contiguous
// watermark, txn.go the transactional mode, options.go the sink's
// options, publish.go the Publisher.
package kafkasink
