package kafkasink

import (
	"sort"
	"sync"
	"time"
)

// watermark tracks LSNs handed to the producer in increasing order and the
// acknowledgements of their records, which arrive in any order
// (docs/DESIGN.md §4.6: produce callbacks complete out of order across partitions). Its
// position only advances over a gap-free prefix of fully acknowledged LSNs,
// and only to commit LSNs (whole transactions).
// Memory is one entry per LSN in flight, bounded by the producer's
// MaxBufferedRecords plus the job being produced (encodedJobLen changes).
type watermark struct {
	mu struct {
		sync.Mutex
		pending []wmEntry // in issue (LSN) order; front is the oldest not yet passed
		array   []wmEntry // the whole array pending is a part of
		pos     uint64    // every LSN <= pos issued so far is acknowledged
		posTime time.Time // commit time of the transaction of pos
	}
}

type wmEntry struct {
	lsn        uint64
	left       int  // records of this LSN not yet acknowledged
	commit     bool // the last LSN of its transaction
	commitTime time.Time
}

func newWatermark(pos uint64) *watermark {
	w := &watermark{}
	w.mu.pos = pos
	return w
}

// issue records that lsn (greater than every LSN issued before) is being
// sent as n records; n == 0 means nothing is sent for it (it passes as soon
// as everything before it has). commit says lsn is its transaction's
// commit LSN: the watermark only ever stops on one, so that the checkpoint
// is a transaction boundary and retention (which removes everything at or
// below it) never cuts a transaction the sink must still re-send.
func (w *watermark) issue(lsn uint64, n int, commit bool, commitTime time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.makeRoomLocked(1)
	w.mu.pending = append(w.mu.pending, wmEntry{lsn: lsn, left: n, commit: commit, commitTime: commitTime})
	w.advanceLocked()
}

// issueAll issues es (in LSN order, each as by issue) under one lock. It
// returns the position and whether it advanced (entries without records
// pass at once).
func (w *watermark) issueAll(es []wmEntry) (uint64, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.makeRoomLocked(len(es))
	w.mu.pending = append(w.mu.pending, es...)
	return w.mu.pos, w.advanceLocked()
}

// makeRoomLocked moves the pending entries to the front of their array
// when n more would not fit behind them but would in front: pending is
// sliced from the front as LSNs pass, so appending alone would allocate a
// new array every few thousand LSNs.
func (w *watermark) makeRoomLocked(n int) {
	p := w.mu.pending
	if len(p)+n <= cap(p) {
		return
	}
	full := w.mu.array[:cap(w.mu.array)]
	if len(p)+n > len(full) {
		// Grow: allocate with room to spare and remember the array.
		w.mu.array = make([]wmEntry, len(p), 2*(len(p)+n))
		copy(w.mu.array, p)
		w.mu.pending = w.mu.array
		return
	}
	w.mu.pending = full[:copy(full, p)]
}

// ack records the acknowledgement of one record of lsn. It returns the
// position and whether this acknowledgement advanced it.
func (w *watermark) ack(lsn uint64) (uint64, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	p := w.mu.pending
	i := 0 // one partition acknowledges in order: the front, most often
	if len(p) == 0 || p[0].lsn != lsn {
		i = sort.Search(len(p), func(i int) bool { return p[i].lsn >= lsn })
	}
	if i == len(p) || p[i].lsn != lsn || p[i].left == 0 {
		panic("kafkasink: acknowledgement of an LSN not in flight")
	}
	p[i].left--
	if i == 0 && w.advanceLocked() {
		return w.mu.pos, true
	}
	return w.mu.pos, false
}

// advanceLocked passes the acknowledged front and reports whether the
// position moved.
func (w *watermark) advanceLocked() bool {
	p := w.mu.pending
	before := w.mu.pos
	n := 0
	for n < len(p) && p[n].left == 0 {
		// A resumed sink re-sends the start of the transaction holding
		// its checkpoint: those LSNs are below pos and never lower it.
		if p[n].commit && p[n].lsn > w.mu.pos {
			w.mu.pos = p[n].lsn
			w.mu.posTime = p[n].commitTime
		}
		n++
	}
	if n > 0 {
		// Reuse the array once it is drained; otherwise makeRoomLocked
		// shifts the rest when the end is reached.
		w.mu.pending = p[n:]
		if len(w.mu.pending) == 0 {
			w.mu.pending = w.mu.array[:0]
		}
	}
	return w.mu.pos != before
}

// position returns the watermark, the commit time of its transaction, the
// number of LSNs in flight and the commit time of the oldest of them.
func (w *watermark) position() (pos uint64, posTime time.Time, inFlight int, oldest time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.mu.pending) > 0 {
		oldest = w.mu.pending[0].commitTime
	}
	return w.mu.pos, w.mu.posTime, len(w.mu.pending), oldest
}
