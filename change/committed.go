package change

import "time"

// Committed is a transaction as the log holds it: the Txn plus the
// positions and commit time the log assigned when it became durable. It is
// the read model every consumer of the log passes around — the Kafka sink
// and consumer, the archive, restores and replicas — so that none of them
// needs to link the log's writer to name a transaction.
//
// FirstLSN and CommitLSN are the LSNs of the transaction's first and last
// record (one record per change, so CommitLSN-FirstLSN+1 == len(Changes)
// for a transaction read from the log). CommitTime is the commit time the
// log recorded, in UTC; it never decreases along the log.
//
// Aborted marks not a transaction but the LSN range FirstLSN..CommitLSN
// of one the log aborted midway (wal.WAL.AppendStream, docs/FORMAT.md §3):
// it has no changes and is no part of the log's content, but its LSNs are
// used. Only readers that ask for such ranges see one (wal.Reader's
// ReportAborted, kafkawire.Assembler), so that a copy of the log
// accounts for every LSN; CommitTime is then the time of the abort.
type Committed struct {
	FirstLSN, CommitLSN uint64
	CommitTime          time.Time
	Txn
	Aborted bool
}
