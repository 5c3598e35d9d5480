package kafkasink

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/walship/walship/kafkasink/kafkatest"
	"github.com/walship/walship/kafkawire"
	"github.com/walship/walship/wal"
)

const testTxnID = "walship.ordered"

// readAll returns every record of the ordered topic a reader with the
// given isolation sees. It first appends an end marker (a
// non-transactional record keyed "test-end", its value unique) and reads until it: once no
// transaction is open, a read_committed reader reaches it too, so the
// caller must have stopped or fenced every transactional producer.
func readAll(t *testing.T, addr string, committed bool) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	topic := kafkawire.OrderedTopic("walship")
	p, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	marker := []byte(strconv.FormatInt(time.Now().UnixNano(), 10))
	if err := p.ProduceSync(ctx, &kgo.Record{Topic: topic, Key: []byte("test-end"), Value: marker}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	iso := kgo.ReadUncommitted()
	if committed {
		iso = kgo.ReadCommitted()
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.FetchIsolationLevel(iso),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var out []*kgo.Record
	for {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("read %s (read_committed %v): %d records, no end marker: %v", topic, committed, len(out), err)
		}
		for _, r := range fs.Records() {
			if string(r.Key) == "test-end" && string(r.Value) == string(marker) {
				return out
			}
			if len(r.Headers) > 0 { // not an earlier marker
				out = append(out, r)
			}
		}
	}
}

// lsns returns the walship.lsn of each record.
func lsns(t *testing.T, recs []*kgo.Record) []uint64 {
	t.Helper()
	out := make([]uint64, len(recs))
	for i, r := range recs {
		n, err := strconv.ParseUint(string(r.Headers[0].Value), 10, 64)
		if err != nil || r.Headers[0].Key != kafkawire.HeaderLSN {
			t.Fatalf("record at offset %d: first header %q=%q", r.Offset, r.Headers[0].Key, r.Headers[0].Value)
		}
		out[i] = n
	}
	return out
}

// exactlyOnce checks that recs are the ordered topic's records of want,
// each exactly once, in order: the consumer rebuilds want from them, and
// there are exactly as many records as the log produces.
func exactlyOnce(t *testing.T, recs []*kgo.Record, e *env) {
	t.Helper()
	want := e.walTxns()
	if got, n := len(recs), recordCount(want, true); got != n {
		ls := lsns(t, recs)
		t.Fatalf("read_committed reader sees %d records, want %d (lsns %v ... %v)", got, n, ls[:min(len(ls), 5)], ls[max(len(ls)-5, 0):])
	}
	sameTxns(t, rebuild(t, recs), want)
}

func txnOptions(addr string) Options {
	return Options{Brokers: []string{addr}, Linger: time.Millisecond, CheckpointInterval: 5 * time.Millisecond, TransactionalID: testTxnID}
}

// waitCommitted waits until the sink's committed position (Stats.AckedLSN
// in transactional mode) reaches lsn.
func waitCommitted(t *testing.T, s *Sink, lsn uint64) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for s.Stats().AckedLSN < lsn {
		if time.Now().After(deadline) {
			t.Fatalf("committed %d, want %d (stats %+v)", s.Stats().AckedLSN, lsn, s.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestTxnReadCommittedExactlyOnce: a read_committed reader sees every
// record of the log exactly once, and the checkpoint reaches the end.
func TestTxnReadCommittedExactlyOnce(t *testing.T) {
	c := startCluster(t)
	e := newEnv(t)
	wl := kafkatest.NewWorkload(11)
	s, err := New(txnOptions(c.Addr), e.w, e.ckpts, "L1")
	if err != nil {
		t.Fatal(err)
	}
	stop := runSink(t, s)
	for range 10 { // in several bursts: several transactions
		e.append(wl, 50)
		waitCommitted(t, s, e.w.Durable())
	}
	waitAcked(t, s, e.w.Durable(), 60*time.Second)
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v, want context.Canceled", err)
	}
	exactlyOnce(t, readAll(t, c.Addr, true), e)
}

// TestTxnAbortedInvisible: the first commits fail (the broker answers
// TransactionAbortable); the sink aborts and produces the records again.
// A read_uncommitted reader sees the aborted copies; a read_committed
// reader sees each record exactly once; and the shipped level never
// reports a position before a commit succeeded.
func TestTxnAbortedInvisible(t *testing.T) {
	c := startCluster(t)
	e := newEnv(t)
	wl := kafkatest.NewWorkload(12)
	e.append(wl, 200)
	h := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.EndTxn}, TxnID: testTxnID, Err: kerr.TransactionAbortable, Count: 2})
	defer h.Remove()
	levels, err := wal.NewLevels(e.w, wal.LevelLocal, []string{CheckpointName}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var early atomic.Uint64 // a position reported before any commit succeeded
	opts := txnOptions(c.Addr)
	opts.Acked = func(lsn uint64) {
		if h.Hits() < 2 {
			early.Store(lsn)
		}
		levels.Report(CheckpointName, lsn)
	}
	s, err := New(opts, e.w, e.ckpts, "L1")
	if err != nil {
		t.Fatal(err)
	}
	stop := runSink(t, s)
	waitAcked(t, s, e.w.Durable(), 60*time.Second)
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}
	if h.Hits() != 2 {
		t.Fatalf("the failing commit was attempted %d times, want 2", h.Hits())
	}
	if lsn := early.Load(); lsn != 0 {
		t.Fatalf("shipped position %d reported before any transaction committed", lsn)
	}
	if got := levels.Position(wal.LevelShipped); got != e.w.Durable() {
		t.Fatalf("shipped level %d, want %d", got, e.w.Durable())
	}
	all := readAll(t, c.Addr, false)
	committed := readAll(t, c.Addr, true)
	if len(all) <= len(committed) {
		t.Fatalf("read_uncommitted sees %d records, read_committed %d: no aborted records", len(all), len(committed))
	}
	exactlyOnce(t, committed, e)
}

// fence initialises transactional id as a new producer would (ha.Fence):
// the broker bumps the id's epoch and aborts its open transaction.
func fence(t *testing.T, addr, id string) (epoch int16) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	req := kmsg.NewPtrInitProducerIDRequest()
	req.TransactionalID = &id
	req.TransactionTimeoutMillis = 60000
	req.ProducerID, req.ProducerEpoch = -1, -1
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := req.RequestWith(ctx, cl)
	if err == nil {
		err = kerr.ErrorForCode(resp.ErrorCode)
	}
	if err != nil {
		t.Fatalf("InitProducerID %q: %v", id, err)
	}
	return resp.ProducerEpoch
}

// txnEpoch returns the transactional id's current producer epoch and
// transaction state.
func txnEpoch(t *testing.T, addr, id string) (int16, string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := kadm.NewClient(cl).DescribeTransactions(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	tx, ok := d[id]
	if !ok || tx.Err != nil {
		t.Fatalf("describe transaction %q: %+v", id, tx)
	}
	return tx.ProducerEpoch, tx.State
}

// TestTxnFenced: a second producer initialising the sink's transactional
// id ends Run with ErrFenced, naming the id; neither the checkpoint nor
// the shipped position passes what a read_committed reader sees; a sink
// restarted from the checkpoint then produces exactly the missing records.
func TestTxnFenced(t *testing.T) {
	c := startCluster(t)
	e := newEnv(t)
	wl := kafkatest.NewWorkload(13)
	var mu sync.Mutex
	var reported uint64
	opts := txnOptions(c.Addr)
	opts.Acked = func(lsn uint64) {
		mu.Lock()
		reported = max(reported, lsn)
		mu.Unlock()
	}
	s, err := New(opts, e.w, e.ckpts, "L1")
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { errc <- s.Run(ctx) }()
	e.append(wl, 100)
	waitCommitted(t, s, e.w.Durable())
	epoch := fence(t, c.Addr, testTxnID)
	// The sink goes on reading; its next produce or commit is refused.
	stopAppend := make(chan struct{})
	appended := make(chan struct{})
	go func() {
		defer close(appended)
		for {
			select {
			case <-stopAppend:
				return
			default:
			}
			e.append(wl, 5)
			time.Sleep(2 * time.Millisecond) // a steady trickle, not a wait
		}
	}()
	var runErr error
	select {
	case runErr = <-errc:
	case <-time.After(60 * time.Second):
		t.Fatal("Run did not end after the id was fenced")
	}
	close(stopAppend)
	<-appended
	if !errors.Is(runErr, ErrFenced) || !strings.Contains(runErr.Error(), testTxnID) {
		t.Fatalf("Run: %v, want ErrFenced naming %q", runErr, testTxnID)
	}
	recs := readAll(t, c.Addr, true)
	ls := lsns(t, recs)
	visible := ls[len(ls)-1]
	ck, _ := e.ckpts.Get(CheckpointName)
	mu.Lock()
	rep := reported
	mu.Unlock()
	if ck.Pos > visible || rep > visible || s.Stats().AckedLSN > visible {
		t.Fatalf("checkpoint %d, reported %d, stats %d: past the last committed LSN %d", ck.Pos, rep, s.Stats().AckedLSN, visible)
	}
	if ck.Pos != rep || e.w.Durable() <= visible {
		t.Fatalf("checkpoint %d, reported %d, durable %d, committed %d: want checkpoint == reported < durable", ck.Pos, rep, e.w.Durable(), visible)
	}
	t.Logf("fenced at %d of %d", visible, e.w.Durable())
	// The fenced sink left the id alone: it did not take it back.
	if got, state := txnEpoch(t, c.Addr, testTxnID); got != epoch {
		t.Fatalf("epoch %d (state %s) after the fenced sink stopped, want the fencing producer's %d", got, state, epoch)
	}

	// Restart from the checkpoint (the sink bumps the epoch in turn).
	s2, err := New(txnOptions(c.Addr), e.w, e.ckpts, "L1")
	if err != nil {
		t.Fatal(err)
	}
	stop := runSink(t, s2)
	waitAcked(t, s2, e.w.Durable(), 60*time.Second)
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}
	exactlyOnce(t, readAll(t, c.Addr, true), e)
}

// TestTxnRestartExact: a transactional sink stopped at varied points and
// restarted from its checkpoint each time produces exactly the missing
// records: a read_committed reader sees the dense LSN sequence once.
func TestTxnRestartExact(t *testing.T) {
	c := startCluster(t)
	e := newEnv(t)
	wl := kafkatest.NewWorkload(14)
	for round := range 8 {
		e.append(wl, 60)
		s, err := New(txnOptions(c.Addr), e.w, e.ckpts, "L1")
		if err != nil {
			t.Fatal(err)
		}
		stop := runSink(t, s)
		// Stop at varied points: at once, part-way, caught up.
		if round%3 == 1 {
			waitCommitted(t, s, e.w.Durable()/2)
		} else if round%3 == 2 {
			waitCommitted(t, s, e.w.Durable())
		}
		if err := stop(); !errors.Is(err, context.Canceled) {
			t.Fatalf("round %d: Run: %v", round, err)
		}
	}
	s, _ := New(txnOptions(c.Addr), e.w, e.ckpts, "L1")
	stop := runSink(t, s)
	waitAcked(t, s, e.w.Durable(), 60*time.Second)
	stop()
	recs := readAll(t, c.Addr, true)
	ls := lsns(t, recs)
	for i := 1; i < len(ls); i++ {
		if ls[i] < ls[i-1] || ls[i] > ls[i-1]+1 {
			t.Fatalf("record %d: lsn %d after %d", i, ls[i], ls[i-1])
		}
	}
	exactlyOnce(t, recs, e)
}

// TestTxnGateStops: once Gate fails, the sink produces and commits
// nothing more: Run returns the gate's error, wrapped naming the sink; no
// record beyond what was committed before is in the topic, even
// uncommitted; the checkpoint stays there.
func TestTxnGateStops(t *testing.T) {
	c := startCluster(t)
	e := newEnv(t)
	wl := kafkatest.NewWorkload(15)
	errLost := errors.New("lease lost")
	var closed atomic.Bool
	opts := txnOptions(c.Addr)
	opts.Gate = func() error {
		if closed.Load() {
			return errLost
		}
		return nil
	}
	s, err := New(opts, e.w, e.ckpts, "L1")
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { errc <- s.Run(ctx) }()
	e.append(wl, 100)
	before := e.w.Durable()
	waitCommitted(t, s, before)
	closed.Store(true)
	e.append(wl, 100)
	var runErr error
	select {
	case runErr = <-errc:
	case <-time.After(60 * time.Second):
		t.Fatal("Run did not end after the gate closed")
	}
	if !errors.Is(runErr, errLost) || !strings.Contains(runErr.Error(), "kafkasink") {
		t.Fatalf("Run: %v, want the gate's error naming the sink", runErr)
	}
	for _, lsn := range lsns(t, readAll(t, c.Addr, false)) {
		if lsn > before {
			t.Fatalf("lsn %d produced after the gate closed at %d", lsn, before)
		}
	}
	if ck, _ := e.ckpts.Get(CheckpointName); ck.Pos != before {
		t.Fatalf("checkpoint %d, want %d", ck.Pos, before)
	}
}

// TestTxnCrashResendsCommittedTail: after a crash the checkpoint may lag
// the committed position (written at most every CheckpointInterval). A
// sink restarted from such a checkpoint K, when C was committed, sends
// the records of (K, C] a second time, whole transactions, and nothing
// else twice: read_committed readers see those LSNs twice, every other
// LSN once, and the consumer's deduplication rebuilds the log exactly.
func TestTxnCrashResendsCommittedTail(t *testing.T) {
	c := startCluster(t)
	e := newEnv(t)
	wl := kafkatest.NewWorkload(16)
	e.append(wl, 100)
	s, err := New(txnOptions(c.Addr), e.w, e.ckpts, "L1")
	if err != nil {
		t.Fatal(err)
	}
	stop := runSink(t, s)
	committed := e.w.Durable()
	waitAcked(t, s, committed, 60*time.Second)
	stop()
	// The crash: the checkpoint on disk is an older commit LSN.
	txns := e.walTxns()
	k := txns[len(txns)/3].CommitLSN
	if err := e.ckpts.SetBackward(context.Background(), CheckpointName, k, nil); err != nil {
		t.Fatal(err)
	}
	e.append(wl, 50)
	s2, err := New(txnOptions(c.Addr), e.w, e.ckpts, "L1")
	if err != nil {
		t.Fatal(err)
	}
	stop = runSink(t, s2)
	waitAcked(t, s2, e.w.Durable(), 60*time.Second)
	stop()
	recs := readAll(t, c.Addr, true)
	seen := map[uint64]int{}
	for _, lsn := range lsns(t, recs) {
		seen[lsn]++
	}
	for _, r := range recs {
		if r.Value == nil { // a tombstone repeats its delete's LSN
			lsn, _ := strconv.ParseUint(string(r.Headers[0].Value), 10, 64)
			seen[lsn]--
		}
	}
	for _, tx := range e.walTxns() {
		want := 1
		if tx.CommitLSN > k && tx.CommitLSN <= committed {
			want = 2
		}
		for lsn := tx.FirstLSN; lsn <= tx.CommitLSN; lsn++ {
			if seen[lsn] != want {
				t.Fatalf("lsn %d (transaction %d-%d) seen %d times, want %d (checkpoint %d, committed %d)", lsn, tx.FirstLSN, tx.CommitLSN, seen[lsn], want, k, committed)
			}
		}
	}
	sameTxns(t, rebuild(t, recs), e.walTxns())
}
