package kafkawire

import (
	"errors"
	"fmt"

	"github.com/walship/walship/change"
)

// ErrGap is wrapped by the error Assembler.Add returns when a transaction
// starts past the LSN after the last one completed: records are missing
// from the ordered topic (e.g. removed by Kafka retention before they were
// consumed).
var ErrGap = errors.New("kafkawire: gap in the ordered stream")

// Assembler rebuilds whole transactions from the records of the ordered
// topic, in order, exactly once: a transaction is complete when the record
// with lsn == commit_lsn arrives after every earlier record of it.
//
// The topic may hold the same records more than once (a sink resumes at the
// start of the transaction holding its checkpoint, re-sending what it may
// already have sent), and a transaction may be cut short by a sink crash
// before being sent again whole. The rules:
//   - a tombstone is ignored (it repeats its delete's position);
//   - an aborted-range marker (Event.Aborted) completes its whole range at
//     once: it is returned as a change.Committed with Aborted set and no
//     changes, which has nothing to apply but moves Done past the range
//     (a duplicate is skipped, one past a missing LSN is a gap, as for a
//     transaction's first record);
//   - a record of a transaction whose commit LSN is at or below the last
//     completed one is a duplicate and is skipped;
//   - a record with lsn == txn_first_lsn starts the transaction afresh,
//     dropping any partial one;
//   - any other record continues the partial transaction only if it is the
//     next LSN of it, and is skipped otherwise (the rest of a cut-off
//     transaction whose start was skipped as a duplicate cannot occur, since
//     the sink always resumes at a transaction's first record).
//
// Assembler is not safe for concurrent use.
type Assembler struct {
	done    uint64 // commit LSN of the last transaction completed
	cur     *change.Committed
	next    uint64 // the LSN cur expects next
	Skipped uint64 // records skipped as duplicates or orphans
}

// NewAssembler returns an Assembler that treats every transaction with a
// commit LSN at or below done as already applied.
func NewAssembler(done uint64) *Assembler { return &Assembler{done: done} }

// Done returns the commit LSN of the last transaction completed (or given
// to NewAssembler).
func (a *Assembler) Done() uint64 { return a.done }

// Add takes the next record's event and returns a transaction when it
// completes one. The returned transaction owns ev's change.
func (a *Assembler) Add(ev *Event) (txn change.Committed, complete bool, err error) {
	if ev.Tombstone {
		return txn, false, nil
	}
	if ev.CommitLSN <= a.done {
		a.Skipped++
		return txn, false, nil
	}
	if ev.Aborted {
		// A whole range at once, nothing to apply: it completes like a
		// transaction, and whatever partial transaction came before it was
		// cut short (it is sent again whole, before this marker).
		if a.done > 0 && ev.FirstLSN > a.done+1 {
			return txn, false, fmt.Errorf("%w: after commit LSN %d the next aborted range starts at LSN %d", ErrGap, a.done, ev.FirstLSN)
		}
		a.cur = nil
		a.done = ev.CommitLSN
		return change.Committed{FirstLSN: ev.FirstLSN, CommitLSN: ev.CommitLSN, CommitTime: ev.CommitTime, Aborted: true}, true, nil
	}
	switch {
	case ev.LSN == ev.FirstLSN:
		if a.done > 0 && ev.FirstLSN > a.done+1 {
			return txn, false, fmt.Errorf("%w: after commit LSN %d the next transaction starts at LSN %d", ErrGap, a.done, ev.FirstLSN)
		}
		a.cur = &change.Committed{FirstLSN: ev.FirstLSN, CommitLSN: ev.CommitLSN, CommitTime: ev.CommitTime,
			Txn: change.Txn{Header: ev.Header}}
	case a.cur != nil && a.cur.FirstLSN == ev.FirstLSN && ev.LSN == a.next:
	default:
		a.Skipped++
		return txn, false, nil
	}
	a.cur.Changes = append(a.cur.Changes, ev.Change)
	a.next = ev.LSN + 1
	if ev.LSN != ev.CommitLSN {
		return txn, false, nil
	}
	txn = *a.cur
	a.cur = nil
	a.done = txn.CommitLSN
	return txn, true, nil
}
