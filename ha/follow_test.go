package ha

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/walship/walship/change"
	"github.com/walship/walship/checkpoint"
	"github.com/walship/walship/kafkasink"
	"github.com/walship/walship/kafkasink/kafkatest"
	"github.com/walship/walship/kafkawire"
	"github.com/walship/walship/vfs"
	"github.com/walship/walship/wal"
)

const (
	prefix  = "grp"
	lineage = "L1"
)

var topic = kafkawire.OrderedTopic(prefix)

// leader is a WAL shipped to the ordered topic by a real kafkasink.Sink.
type leader struct {
	t    *testing.T
	addr string
	w    *wal.WAL
	sink *kafkasink.Sink
	wl   *kafkatest.Workload
}

func startLeader(t *testing.T) *leader {
	t.Helper()
	c, err := kafkatest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	dir := t.TempDir()
	w, _, err := wal.Open(wal.Options{Dir: filepath.Join(dir, "wal"), SegmentSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	ck, err := checkpoint.Open(context.Background(), vfs.Default, filepath.Join(dir, "ckpt"), checkpoint.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := kafkasink.New(kafkasink.Options{Brokers: []string{c.Addr}, TopicPrefix: prefix, Linger: time.Millisecond}, w, ck, lineage)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("sink: %v", err)
		}
	})
	return &leader{t: t, addr: c.Addr, w: w, sink: s, wl: kafkatest.NewWorkload(1)}
}

// append appends n workload transactions, each with every header field.
func (l *leader) append(n int) {
	l.t.Helper()
	for range n {
		tx := l.wl.Next()
		lsn := l.w.NextLSN()
		tx.Header = change.TxHeader{XID: 1000 + lsn, SourceLSN: 0x1_0000_0000 + lsn, Origin: "app-" + fmt.Sprint(lsn%3),
			SourceCommitTime: time.Unix(1700000000, int64(lsn)).UTC()}
		if _, err := l.w.Append(context.Background(), &tx); err != nil {
			l.t.Fatal(err)
		}
	}
}

// shipped waits until the sink has acknowledged everything durable.
func (l *leader) shipped() {
	l.t.Helper()
	waitFor(l.t, "the sink to ship the log", func() bool { return l.sink.Stats().AckedLSN >= l.w.Durable() })
}

func (l *leader) follow() FollowOptions {
	return FollowOptions{Topic: topic, Lineage: lineage, Client: []kgo.Opt{kgo.SeedBrokers(l.addr)}}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(90 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("waited 90s for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func openLog(t *testing.T, opts wal.Options) *wal.WAL {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	opts.SegmentSize = 1 << 20
	w, _, err := wal.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

// txns reads the whole visible log.
func txns(t *testing.T, w *wal.WAL) []change.Committed {
	t.Helper()
	r, err := w.NewReader(w.FirstLSN(), false)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
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

// sameLog fails unless got is want transaction by transaction: LSNs,
// commit times, every header field (marks included) and every change.
func sameLog(t *testing.T, got, want []change.Committed) {
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

func newFollower(t *testing.T, w *wal.WAL, o FollowOptions) *Follower {
	t.Helper()
	f, err := NewFollower(w, o)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// running is a Run in progress (run).
type running struct {
	done chan struct{} // closed when Run returned
	err  error         // Run's result, once done
}

// run runs f.Run until the test ends.
func run(t *testing.T, f *Follower) *running {
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{done: make(chan struct{})}
	go func() {
		r.err = f.Run(ctx)
		close(r.done)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(90 * time.Second):
			t.Error("Run did not end in 90s after its context")
		}
	})
	return r
}

func bigChange(i int) change.Change {
	id := change.IntValue(int64(1_000_000 + i))
	return change.Change{Table: kafkatest.Accounts, Op: change.Insert, Key: change.Row{{Name: "id", Value: id}},
		After: change.Row{{Name: "id", Value: id}, {Name: "balance", Value: change.IntValue(int64(i))}, {Name: "note", Value: change.TextValue(strings.Repeat("x", 2000))}}}
}

// TestFollowerLogEqualsLeaders: a follower's log, built from the topic a
// real sink ships the leader's log to, equals the leader's transaction by
// transaction — multi-change, logical messages, a large transaction, one
// appended with AppendStream, a request of several transactions appended
// whole under an idempotency key — and LoadKeys on it finds the key with
// the original LSNs.
func TestFollowerLogEqualsLeaders(t *testing.T) {
	ctx := context.Background()
	l := startLeader(t)
	fw := openLog(t, wal.Options{})
	f := newFollower(t, fw, l.follow())
	done := run(t, f)

	l.append(50)
	msg := change.Txn{Header: change.TxHeader{XID: 7, Origin: "msg"}, Changes: []change.Change{
		{Op: change.Message, Message: &change.LogicalMessage{Prefix: "p1", Content: []byte{0, 1, 2}, Transactional: true}},
		{Op: change.Message, Message: &change.LogicalMessage{Prefix: "p2", Content: []byte("hello")}},
	}}
	if _, err := l.w.Append(ctx, &msg); err != nil {
		t.Fatal(err)
	}
	big := change.Txn{Header: change.TxHeader{XID: 8}}
	for i := range 1500 {
		big.Changes = append(big.Changes, bigChange(i))
	}
	if _, err := l.w.Append(ctx, &big); err != nil {
		t.Fatal(err)
	}
	i := 0
	if _, err := l.w.AppendStream(ctx, change.TxHeader{XID: 9, Origin: "stream"}, func() (*change.Change, error) {
		if i == 800 {
			return nil, io.EOF
		}
		c := bigChange(10_000 + i)
		i++
		return &c, nil
	}); err != nil {
		t.Fatal(err)
	}
	keys, err := l.w.LoadKeys(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	hash := sha256.Sum256([]byte("request body"))
	claim, err := keys.Claim(ctx, "req-42", hash, 3)
	if err != nil {
		t.Fatal(err)
	}
	b := l.w.NewBatch()
	for range 3 {
		tx := l.wl.Next()
		if err := b.Add(&tx); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.SetMark(claim.Mark()); err != nil {
		t.Fatal(err)
	}
	if err := l.w.AppendBatchAsync(ctx, b); err != nil {
		t.Fatal(err)
	}
	claim.Done(b)
	var wantTickets []wal.Ticket
	b.Tickets(func(tk wal.Ticket) { wantTickets = append(wantTickets, tk) })
	if err := l.w.Wait(ctx, b.Last()); err != nil {
		t.Fatal(err)
	}
	l.append(20)

	last := l.w.Durable()
	waitFor(t, "the follower to reach the leader", func() bool {
		select {
		case <-done.done:
			t.Fatalf("Run ended: %v", done.err)
		default:
		}
		return f.Position() >= last
	})
	want := txns(t, l.w)
	sameLog(t, txns(t, fw), want)
	marked := 0
	for _, tx := range want {
		if tx.Header.Idempotency != nil || tx.Header.InRequest {
			marked++
		}
	}
	if marked != 3 {
		t.Fatalf("%d transactions of the leader's log carry the request's mark or flag, want 3", marked)
	}

	fkeys, err := fw.LoadKeys(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := fkeys.Claim(ctx, "req-42", hash, 3)
	if err != nil || !c.Replayed {
		t.Fatalf("the follower's key: %+v, %v; want a replay", c, err)
	}
	var got []wal.Ticket
	if err := c.Tickets(ctx, func(tk wal.Ticket) { got = append(got, tk) }); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(wantTickets) {
		t.Fatalf("the follower's key gives %v, want the leader's %v", got, wantTickets)
	}
}

// lastCommitBelow returns the commit LSN of the last transaction whose
// records all lie below offset end in recs (the topic from its start).
func lastCommitBelow(t *testing.T, recs []*kgo.Record, end int64) uint64 {
	t.Helper()
	a := kafkawire.NewAssembler(0)
	for _, r := range recs {
		if r.Offset >= end {
			break
		}
		ev, err := kafkawire.Decode(r)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := a.Add(&ev); err != nil {
			t.Fatal(err)
		}
	}
	return a.Done()
}

func endOffset(t *testing.T, addr string) int64 {
	t.Helper()
	_, end, err := offsetRange(context.Background(), &FollowOptions{Topic: topic, Client: []kgo.Opt{kgo.SeedBrokers(addr)}})
	if err != nil {
		t.Fatal(err)
	}
	return end
}

// TestCatchUpEndsAtTheTopicsEnd: CatchUp appends exactly what the topic
// holds — all of it when nothing is being produced, and, while the leader
// keeps appending and shipping, at least what was committed when it was
// called and at most what was committed when it returned — and the log is
// then a prefix of the leader's.
func TestCatchUpEndsAtTheTopicsEnd(t *testing.T) {
	ctx := context.Background()
	l := startLeader(t)
	l.append(100)
	l.shipped()
	fw := openLog(t, wal.Options{})
	f := newFollower(t, fw, l.follow())
	if err := f.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	sameLog(t, txns(t, fw), txns(t, l.w))

	// Concurrently produced records.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
				// One transaction at a time, shipped before the next, so
				// that each round reads a few hundred of them.
				l.append(1)
				for d := l.w.Durable(); l.sink.Stats().AckedLSN < d; {
					select {
					case <-stop:
						return
					case <-time.After(time.Millisecond):
					}
				}
			}
		}
	})
	for round := range 3 {
		waitFor(t, "the leader to ship more", func() bool { return l.sink.Stats().AckedLSN > fw.Durable()+20 })
		before := endOffset(t, l.addr)
		t0 := time.Now()
		if err := f.CatchUp(ctx); err != nil {
			t.Fatal(err)
		}
		t.Logf("round %d: CatchUp took %v", round, time.Since(t0))
		after := endOffset(t, l.addr)
		recs, err := kafkatest.ReadTopic(ctx, []string{l.addr}, topic, int(after))
		t.Logf("round %d: read %d records at %v", round, len(recs), time.Since(t0))
		if err != nil {
			t.Fatal(err)
		}
		lo, hi, pos := lastCommitBelow(t, recs, before), lastCommitBelow(t, recs, after), f.Position()
		if pos < lo || pos > hi {
			t.Fatalf("round %d: CatchUp ended at LSN %d; the topic's committed transactions ended at LSN %d when it was called and %d after", round, pos, lo, hi)
		}
		all := txns(t, l.w)
		got := txns(t, fw)
		sameLog(t, got, all[:len(got)])
	}
	close(stop)
	wg.Wait()
}

// TestDivergedLocalExtraTransaction: a log with a transaction the topic
// does not have (a deposed leader's unshipped tail) is ErrDiverged: for
// CatchUp because it ends beyond the topic's end, for Run once the topic
// holds another transaction at those LSNs. The error names the LSN.
func TestDivergedLocalExtraTransaction(t *testing.T) {
	ctx := context.Background()
	l := startLeader(t)
	l.append(30)
	l.shipped()
	fw := openLog(t, wal.Options{})
	f := newFollower(t, fw, l.follow())
	if err := f.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	extra := kafkatest.NewWorkload(99).Next()
	tk, err := fw.Append(ctx, &extra)
	if err != nil {
		t.Fatal(err)
	}
	err = f.CatchUp(ctx)
	if !errors.Is(err, ErrDiverged) || !strings.Contains(err.Error(), fmt.Sprintf("LSN %d", tk.Last)) {
		t.Fatalf("CatchUp with a local extra transaction at LSN %d: %v, want ErrDiverged naming it", tk.First, err)
	}
	done := run(t, f)
	l.append(5)
	select {
	case <-done.done:
		err := done.err
		if !errors.Is(err, ErrDiverged) || !strings.Contains(err.Error(), fmt.Sprintf("at LSN %d", tk.First)) {
			t.Fatalf("Run with a local extra transaction at LSN %d: %v, want ErrDiverged naming it", tk.First, err)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("Run did not notice the divergence in 90s")
	}
}

// TestDivergedDifferentTransaction: a log whose last transaction differs
// from the topic's at the same LSNs — in a change, in a header field, in
// its commit time — is ErrDiverged naming the LSN; the same transaction
// is not.
func TestDivergedDifferentTransaction(t *testing.T) {
	ctx := context.Background()
	l := startLeader(t)
	l.append(20)
	l.shipped()
	want := txns(t, l.w)
	k := len(want) - 5
	for _, c := range []struct {
		name   string
		change func(tx *change.Committed)
		says   string
	}{
		{"same", func(*change.Committed) {}, ""},
		{"change", func(tx *change.Committed) {
			tx.Changes = append([]change.Change(nil), tx.Changes...)
			tx.Changes[0].After = change.Row{{Name: "id", Value: change.IntValue(-1)}}
			tx.Changes[0].Before, tx.Changes[0].Op = nil, change.Insert
		}, "change at LSN"},
		{"origin", func(tx *change.Committed) { tx.Header.Origin = "another" }, "header"},
		{"commit time", func(tx *change.Committed) { tx.CommitTime = tx.CommitTime.Add(time.Microsecond) }, "commit time"},
	} {
		t.Run(c.name, func(t *testing.T) {
			fw := openLog(t, wal.Options{})
			for i := range k {
				if _, err := fw.AppendReplica(ctx, &want[i]); err != nil {
					t.Fatal(err)
				}
			}
			tx := want[k]
			c.change(&tx)
			if _, err := fw.AppendReplica(ctx, &tx); err != nil {
				t.Fatal(err)
			}
			err := newFollower(t, fw, l.follow()).CatchUp(ctx)
			if c.says == "" {
				if err != nil {
					t.Fatal(err)
				}
				sameLog(t, txns(t, fw), want)
				return
			}
			if !errors.Is(err, ErrDiverged) || !strings.Contains(err.Error(), fmt.Sprintf("at LSN %d", want[k].FirstLSN)) || !strings.Contains(err.Error(), c.says) {
				t.Fatalf("%v, want ErrDiverged at LSN %d saying %q", err, want[k].FirstLSN, c.says)
			}
		})
	}
}

// TestFreshLogAtTopicStart: when retention removed the topic's head
// (records deleted up to the middle of a transaction), TopicStart gives
// the first LSN of the first whole transaction left, a fresh log opened
// there with Options.FirstLSN catches up to the leader's log from that
// LSN on, and a log that needs what was removed gets kafkawire.ErrGap.
func TestFreshLogAtTopicStart(t *testing.T) {
	ctx := context.Background()
	l := startLeader(t)
	o := l.follow()
	if _, empty, err := TopicStart(ctx, o); err != nil || !empty {
		t.Fatalf("TopicStart of a topic without records: empty %v, %v; want empty", empty, err)
	}
	l.append(40)
	l.shipped()
	want := txns(t, l.w)
	// Cut inside a transaction of several changes.
	k := 10
	for len(want[k].Changes) < 2 {
		k++
	}
	all, err := kafkatest.ReadTopic(ctx, []string{l.addr}, topic, int(endOffset(t, l.addr)))
	if err != nil {
		t.Fatal(err)
	}
	var cut int64 = -1
	for _, r := range all {
		lsn, _, _, _, err := kafkawire.DecodeHeaders(r)
		if err != nil {
			t.Fatal(err)
		}
		if lsn == want[k].FirstLSN+1 {
			cut = r.Offset
			break
		}
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(l.addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	offs := kadm.Offsets{}
	offs.Add(kadm.Offset{Topic: topic, Partition: 0, At: cut})
	if resp, err := kadm.NewClient(cl).DeleteRecords(ctx, offs); err != nil || resp.Error() != nil {
		t.Fatalf("delete records before offset %d: %v %v", cut, err, resp.Error())
	}
	first, empty, err := TopicStart(ctx, o)
	if err != nil || empty || first != want[k+1].FirstLSN {
		t.Fatalf("TopicStart: %d, empty %v, %v; want %d (after the transaction cut at LSN %d)", first, empty, err, want[k+1].FirstLSN, want[k].FirstLSN+1)
	}

	fw := openLog(t, wal.Options{FirstLSN: first})
	if err := newFollower(t, fw, o).CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	sameLog(t, txns(t, fw), want[k+1:])

	old := openLog(t, wal.Options{})
	err = newFollower(t, old, o).CatchUp(ctx)
	if !errors.Is(err, kafkawire.ErrGap) || !strings.Contains(err.Error(), "from LSN 1 on") {
		t.Fatalf("CatchUp of a log needing removed records: %v, want ErrGap naming LSN 1", err)
	}
}

// TestFollowerReadsCommittedOnly: records a transactional producer aborted
// (a fenced leader's) never reach the follower's log, and CatchUp ends at
// the last stable offset even when only transaction markers precede it;
// records of another lineage stop the follower with an error naming both.
func TestFollowerReadsCommittedOnly(t *testing.T) {
	ctx := context.Background()
	l := startLeader(t)
	l.append(10)
	l.shipped()
	want := txns(t, l.w)

	// A zombie's transaction at the next LSNs, aborted.
	zombie := kafkatest.NewWorkload(5).Next()
	next := l.w.NextLSN()
	zt := change.Committed{FirstLSN: next, CommitLSN: next + uint64(len(zombie.Changes)) - 1, CommitTime: time.Now().UTC(), Txn: zombie}
	enc := &kafkawire.Encoder{Lineage: lineage}
	pr, err := kgo.NewClient(kgo.SeedBrokers(l.addr), kgo.TransactionalID("zombie"), kgo.DefaultProduceTopic(topic))
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	if err := pr.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := pr.ProduceSync(ctx, enc.OrderedRecords(&zt, prefix, false)...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := pr.EndTransaction(ctx, kgo.TryAbort); err != nil {
		t.Fatal(err)
	}

	fw := openLog(t, wal.Options{})
	f := newFollower(t, fw, l.follow())
	if err := f.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	sameLog(t, txns(t, fw), want)

	// The leader goes on at the same LSNs.
	l.append(5)
	l.shipped()
	if err := f.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	sameLog(t, txns(t, fw), txns(t, l.w))

	o := l.follow()
	o.Lineage = "L2"
	err = newFollower(t, openLog(t, wal.Options{}), o).CatchUp(ctx)
	if !errors.Is(err, ErrLineage) || !strings.Contains(err.Error(), `"L1"`) || !strings.Contains(err.Error(), `"L2"`) {
		t.Fatalf("CatchUp of another lineage's topic: %v, want ErrLineage naming L1 and L2", err)
	}
}
