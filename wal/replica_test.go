package wal

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/walship/walship/change"
	"github.com/walship/walship/segment"
)

// allTxns reads the whole visible log of w.
func allTxns(t *testing.T, w *WAL) []change.Committed {
	t.Helper()
	return readTxns(t, w.seg, w.FirstLSN())
}

// sameTxns fails unless got and want are equal transaction by transaction:
// LSNs, commit times, headers (marks included) and changes.
func sameTxns(t *testing.T, got, want []change.Committed) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d transactions, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := &got[i], &want[i]
		if g.FirstLSN != w.FirstLSN || g.CommitLSN != w.CommitLSN || !g.CommitTime.Equal(w.CommitTime) ||
			!g.Header.Equal(w.Header) || !g.Txn.Equal(&w.Txn) {
			t.Fatalf("transaction %d:\n got %d-%d %s %+v\nwant %d-%d %s %+v", i, g.FirstLSN, g.CommitLSN, g.CommitTime, g.Header,
				w.FirstLSN, w.CommitLSN, w.CommitTime, w.Header)
		}
	}
}

// TestAppendReplicaCopiesExactly: a log built with AppendReplica from
// another log's transactions reads back equal to it, idempotency marks and
// in-request flags included, and LoadKeys finds the key at its original
// LSNs; a transaction not at the next LSN (gap, overlap) or with an
// earlier commit time is refused, naming both sides, and nothing of it is
// appended.
func TestAppendReplicaCopiesExactly(t *testing.T) {
	ctx := context.Background()
	src, _, err := Open(Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	for x := uint64(1); x <= 3; x++ {
		tx := txnOf(x, int(x))
		tx.Header.Origin = "o"
		tx.Header.SourceCommitTime = time.Unix(1000+int64(x), 7).UTC()
		if _, err := src.Append(ctx, &tx); err != nil {
			t.Fatal(err)
		}
	}
	keys, err := src.LoadKeys(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	hash := sha256.Sum256([]byte("body"))
	claim, err := keys.Claim(ctx, "key-1", hash, 2)
	if err != nil {
		t.Fatal(err)
	}
	b := src.NewBatch()
	b.Add(testTxn(10))
	b.Add(testTxn(11))
	b.SetMark(claim.Mark())
	if err := src.AppendBatchAsync(ctx, b); err != nil {
		t.Fatal(err)
	}
	claim.Done(b)
	if err := src.Wait(ctx, b.Last()); err != nil {
		t.Fatal(err)
	}
	want := allTxns(t, src)
	if want[3].Header.Idempotency == nil || !want[4].Header.InRequest {
		t.Fatalf("the source log lacks the mark or the in-request flag: %+v %+v", want[3].Header, want[4].Header)
	}

	dst, _, err := Open(Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if _, err := dst.AppendReplica(ctx, &want[0]); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		txn  change.Committed
		is   error
		says []string
	}{
		{"gap", want[2], ErrNotNext, []string{"LSN 4", "next LSN is 2"}},
		{"overlap", want[0], ErrNotNext, []string{"LSN 1", "next LSN is 2"}},
		{"earlier commit time", func() change.Committed {
			tx := want[1]
			tx.CommitTime = want[0].CommitTime.Add(-time.Nanosecond)
			return tx
		}(), ErrCommitTimeOrder, []string{want[0].CommitTime.Add(-time.Nanosecond).Format(time.RFC3339Nano), want[0].CommitTime.Format(time.RFC3339Nano)}},
	} {
		_, err := dst.AppendReplica(ctx, &c.txn)
		if !errors.Is(err, c.is) {
			t.Fatalf("%s: %v, want %v", c.name, err, c.is)
		}
		for _, s := range c.says {
			if !strings.Contains(err.Error(), s) {
				t.Fatalf("%s: %q does not say %q", c.name, err, s)
			}
		}
		if n := dst.NextLSN(); n != 2 {
			t.Fatalf("%s: next LSN %d after a refusal, want 2", c.name, n)
		}
	}
	for i := 1; i < len(want); i++ {
		tk, err := dst.AppendReplica(ctx, &want[i])
		if err != nil {
			t.Fatal(err)
		}
		if tk.First != want[i].FirstLSN || tk.Last != want[i].CommitLSN || tk.CommitTime != want[i].CommitTime.UnixNano() {
			t.Fatalf("ticket %+v for transaction %d-%d at %s", tk, want[i].FirstLSN, want[i].CommitLSN, want[i].CommitTime)
		}
	}
	sameTxns(t, allTxns(t, dst), want)

	dkeys, err := dst.LoadKeys(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := dkeys.Claim(ctx, "key-1", hash, 2)
	if err != nil || !c.Replayed {
		t.Fatalf("the copy's key: %+v, %v; want a replay", c, err)
	}
	var got []Ticket
	if err := c.Tickets(ctx, func(tk Ticket) { got = append(got, tk) }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].First != want[3].FirstLSN || got[1].Last != want[4].CommitLSN {
		t.Fatalf("the copy's key gives tickets %+v, want LSNs %d-%d", got, want[3].FirstLSN, want[4].CommitLSN)
	}
}

// TestFirstLSNStartsANewLog: a new log given Options.FirstLSN takes its
// first transaction there, and keeps its LSNs when reopened (the option is
// ignored for an existing log).
func TestFirstLSNStartsANewLog(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	w, _, err := Open(Options{Dir: dir, FirstLSN: 1000, SegmentSize: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if n := w.NextLSN(); n != 1000 {
		t.Fatalf("next LSN of a new log %d, want 1000", n)
	}
	tx := txnOf(1, 2)
	rep := change.Committed{FirstLSN: 999, CommitLSN: 1000, CommitTime: time.Unix(5, 0).UTC(), Txn: tx}
	if _, err := w.AppendReplica(ctx, &rep); !errors.Is(err, ErrNotNext) {
		t.Fatalf("a transaction at 999 in a log starting at 1000: %v, want ErrNotNext", err)
	}
	rep.FirstLSN, rep.CommitLSN = 1000, 1001
	if _, err := w.AppendReplica(ctx, &rep); err != nil {
		t.Fatal(err)
	}
	w.Close()
	w, _, err = Open(Options{Dir: dir, FirstLSN: 5, SegmentSize: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	sameTxns(t, allTxns(t, w), []change.Committed{rep})
	if n := w.NextLSN(); n != 1002 {
		t.Fatalf("next LSN after reopening %d, want 1002", n)
	}
}

// gate refuses the next `refuse` batches with errGate.
type gate struct{ refuse atomic.Int32 }

var errGate = errors.New("test gate: lease lost")

func (g *gate) check() error {
	if g.refuse.Add(-1) >= 0 {
		return errGate
	}
	g.refuse.Store(0)
	return nil
}

// TestGateRefusesExactlyItsBatch: a batch the gate refuses fails its
// appenders with the gate's error and writes nothing; the refusal is not
// sticky: the next batch gets the refused LSNs and is written.
func TestGateRefusesExactlyItsBatch(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	var g gate
	w, _, err := Open(Options{Dir: dir, Gate: g.check, SegmentSize: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	a := txnOf(1, 2)
	if _, err := w.Append(ctx, &a); err != nil {
		t.Fatal(err)
	}
	before := allTxns(t, w)
	size, _ := DiskBytes(dir)

	g.refuse.Store(1)
	b := txnOf(2, 3)
	_, err = w.Append(ctx, &b)
	if !errors.Is(err, ErrGateRefused) || !errors.Is(err, errGate) {
		t.Fatalf("append under a refusing gate: %v, want ErrGateRefused wrapping the gate's error", err)
	}
	if !strings.Contains(err.Error(), "LSNs 3 to 5") {
		t.Fatalf("%q does not name the refused LSNs 3 to 5", err)
	}
	if n := w.NextLSN(); n != 3 {
		t.Fatalf("next LSN %d after the refusal, want 3 (the refused LSNs given back)", n)
	}
	if err := w.Wait(ctx, 5); !errors.Is(err, errGate) {
		t.Fatalf("Wait for a refused LSN: %v, want the gate's error", err)
	}
	sameTxns(t, allTxns(t, w), before)
	if s, _ := DiskBytes(dir); s != size {
		t.Fatalf("the log's files grew from %d to %d bytes under a refusal", size, s)
	}

	c := txnOf(3, 1)
	tk, err := w.Append(ctx, &c)
	if err != nil {
		t.Fatalf("append once the gate passes again: %v", err)
	}
	if tk.First != 3 || tk.Last != 3 {
		t.Fatalf("ticket %+v, want LSN 3", tk)
	}
	got := allTxns(t, w)
	if len(got) != 2 || !got[1].Txn.Equal(&c) {
		t.Fatalf("the log holds %d transactions, want a and c", len(got))
	}
	w.Close()
	if _, err := Verify(nil, dir); err != nil {
		t.Fatal(err)
	}
}

// TestGateRefusesAStream: a stream whose records the gate refuses after
// some of them were written — midway, or in the batch with its commit —
// fails and is aborted: nothing of it becomes visible, now or after a
// reopen, and the log goes on.
func TestGateRefusesAStream(t *testing.T) {
	for _, at := range []int{100, 200} {
		t.Run(map[int]string{100: "midway", 200: "at its commit"}[at], func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			var g gate
			var flushed atomic.Int64 // records written
			w, _, err := Open(Options{Dir: dir, Gate: g.check, MaxBatchBytes: 4 << 10, SegmentSize: 256 << 10,
				Observe: func(records, _ int, _ time.Duration) { flushed.Add(int64(records)) }})
			if err != nil {
				t.Fatal(err)
			}
			a := txnOf(1, 1)
			if _, err := w.Append(ctx, &a); err != nil {
				t.Fatal(err)
			}
			next := streamOf(200, 1000, func(i int) error {
				if i == at {
					// Some of the stream's frames are written (the flusher
					// takes each completed one), then the next batch is
					// refused.
					for deadline := time.Now().Add(60 * time.Second); flushed.Load() <= 1; {
						if time.Now().After(deadline) {
							return errors.New("nothing of the stream written in 60s")
						}
						runtime.Gosched()
					}
					g.refuse.Store(1)
				}
				return nil
			})
			_, err = w.AppendStream(ctx, change.TxHeader{XID: 2}, next)
			if !errors.Is(err, ErrGateRefused) {
				t.Fatalf("stream under a refusing gate: %v, want ErrGateRefused", err)
			}
			c := txnOf(3, 1)
			if _, err := w.Append(ctx, &c); err != nil {
				t.Fatalf("append after the refused stream: %v", err)
			}
			check := func() {
				got := allTxns(t, w)
				if len(got) != 2 || !got[0].Txn.Equal(&a) || !got[1].Txn.Equal(&c) {
					t.Fatalf("the log holds %d transactions, want a and c only", len(got))
				}
			}
			check()
			w.Close()
			w, _, err = Open(Options{Dir: dir, SegmentSize: 256 << 10})
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			check()
		})
	}
}

// abortStream appends to w (opened with a small MaxPendingBytes, so that
// the stream's first records are written before it fails) a streamed
// transaction of n changes whose source fails at the last: the log keeps
// its LSNs, ended by an abort frame.
func abortStream(t *testing.T, w *WAL, n int) {
	t.Helper()
	_, err := w.AppendStream(context.Background(), change.TxHeader{XID: 900}, streamOf(n+1, 300, func(i int) error {
		if i == n {
			return errBoom
		}
		return nil
	}))
	if !errors.Is(err, errBoom) {
		t.Fatalf("AppendStream: %v, want %v", err, errBoom)
	}
	// The abort frame is queued, not waited for.
	if err := w.Wait(context.Background(), w.NextLSN()-1); err != nil {
		t.Fatal(err)
	}
}

// readAll reads w from its first LSN with ReportAborted.
func readAll(t *testing.T, w *WAL) []change.Committed {
	t.Helper()
	r, err := w.NewReader(w.FirstLSN(), false)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.ReportAborted()
	var out []change.Committed
	for {
		tx, err := r.Next(context.Background())
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, *tx)
	}
}

// TestAppendReplicaCopiesAbortedRanges: a reader with ReportAborted
// returns each transaction aborted midway as its whole LSN range; a log
// built with AppendReplica from what it returns (aborted ranges included)
// reads back exactly as the original, with or without ReportAborted, has
// the same next LSN, survives reopening and verification, and takes the
// next transaction after the range. An aborted range not at the next LSN
// is refused.
func TestAppendReplicaCopiesAbortedRanges(t *testing.T) {
	ctx := context.Background()
	opts := func(dir string) Options {
		return Options{Dir: dir, MaxPendingBytes: 4 << 10, MaxBatchBytes: 2 << 10, SegmentSize: 64 << 10}
	}
	src, _, err := Open(opts(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	for x := uint64(1); x <= 2; x++ {
		tx := txnOf(x, 2)
		if _, err := src.Append(ctx, &tx); err != nil {
			t.Fatal(err)
		}
		abortStream(t, src, 120) // between the two, and at the end of the log
	}
	want := readAll(t, src)
	if len(want) != 4 || want[0].Aborted || !want[1].Aborted || want[2].Aborted || !want[3].Aborted {
		t.Fatalf("read with ReportAborted: %+v, want a transaction, a range, a transaction, a range", want)
	}
	if r := want[1]; r.FirstLSN != want[0].CommitLSN+1 || r.CommitLSN != want[2].FirstLSN-1 || len(r.Changes) != 0 || r.CommitLSN-r.FirstLSN < 10 {
		t.Fatalf("aborted range %d-%d (%d changes) between transactions ending at %d and starting at %d", r.FirstLSN, r.CommitLSN, len(r.Changes), want[0].CommitLSN, want[2].FirstLSN)
	}
	if r := want[3]; r.CommitLSN != src.NextLSN()-1 || src.Durable() != r.CommitLSN {
		t.Fatalf("last aborted range ends at %d; the log's next LSN is %d, durable %d", r.CommitLSN, src.NextLSN(), src.Durable())
	}
	// A reader starting inside a range gets it whole.
	r, err := src.NewReader(want[1].FirstLSN+5, false)
	if err != nil {
		t.Fatal(err)
	}
	r.ReportAborted()
	if tx, err := r.Next(ctx); err != nil || !tx.Aborted || tx.FirstLSN != want[1].FirstLSN || tx.CommitLSN != want[1].CommitLSN {
		t.Fatalf("reading from inside the range: %+v, %v", tx, err)
	}
	r.Close()

	dir := t.TempDir()
	dst, _, err := Open(opts(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { dst.Close() }()
	if _, err := dst.AppendReplica(ctx, &want[0]); err != nil {
		t.Fatal(err)
	}
	bad := want[3] // not at the next LSN
	if _, err := dst.AppendReplica(ctx, &bad); !errors.Is(err, ErrNotNext) {
		t.Fatalf("aborted range at LSN %d with next LSN %d: %v, want ErrNotNext", bad.FirstLSN, dst.NextLSN(), err)
	}
	for i := 1; i < len(want); i++ {
		tk, err := dst.AppendReplica(ctx, &want[i])
		if err != nil {
			t.Fatal(err)
		}
		if tk.First != want[i].FirstLSN || tk.Last != want[i].CommitLSN {
			t.Fatalf("ticket %+v for %d-%d", tk, want[i].FirstLSN, want[i].CommitLSN)
		}
	}
	same := func(stage string) {
		t.Helper()
		if dst.NextLSN() != src.NextLSN() || dst.Durable() != src.Durable() {
			t.Fatalf("%s: next LSN %d durable %d, the original's %d and %d", stage, dst.NextLSN(), dst.Durable(), src.NextLSN(), src.Durable())
		}
		sameTxns(t, allTxns(t, dst), allTxns(t, src))
		got := readAll(t, dst)
		if len(got) != len(want) {
			t.Fatalf("%s: %d read back with ReportAborted, want %d", stage, len(got), len(want))
		}
		for i := range want {
			g, w := &got[i], &want[i]
			if g.Aborted != w.Aborted || g.FirstLSN != w.FirstLSN || g.CommitLSN != w.CommitLSN || !g.Txn.Equal(&w.Txn) {
				t.Fatalf("%s: %d: got %d-%d aborted %v, want %d-%d aborted %v", stage, i, g.FirstLSN, g.CommitLSN, g.Aborted, w.FirstLSN, w.CommitLSN, w.Aborted)
			}
		}
	}
	same("copied")
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := segment.Verify(nil, dir)
	if err != nil || rep.Aborted != 2 || rep.LastLSN != src.NextLSN()-1 {
		t.Fatalf("verify the copy: %+v, %v; want 2 aborted, last LSN %d", rep, err, src.NextLSN()-1)
	}
	dst, rep2, err := Open(opts(dir))
	if err != nil || !rep2.Clean() {
		t.Fatalf("reopen the copy: %v, %v", rep2, err)
	}
	same("reopened")
	tx := txnOf(3, 2)
	if tk, err := dst.Append(ctx, &tx); err != nil || tk.First != src.NextLSN() {
		t.Fatalf("append after the copied range: %+v, %v; want first LSN %d", tk, err, src.NextLSN())
	}
}
