package consumer

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/walship/walship/change"
	"github.com/walship/walship/checkpoint"
	"github.com/walship/walship/kafkasink"
	"github.com/walship/walship/kafkasink/kafkatest"
	"github.com/walship/walship/kafkawire"
	"github.com/walship/walship/vfs"
	"github.com/walship/walship/wal"
)

var errSourceLost = errors.New("test: the source's connection dropped")

// appendAborted appends a streamed transaction of n changes whose source
// fails after them: w is opened with a small MaxPendingBytes, so its first
// records are written before it fails, and the log keeps its LSNs, ended
// by an abort frame. It returns the range: the LSNs the log used for it.
func appendAborted(t *testing.T, w *wal.WAL, n int) (first, last uint64) {
	t.Helper()
	i := 0
	first = w.NextLSN()
	_, err := w.AppendStream(context.Background(), change.TxHeader{XID: 77}, func() (*change.Change, error) {
		if i == n {
			return nil, errSourceLost
		}
		i++
		c := change.Change{Table: change.Table{Schema: "public", Name: "big"}, Op: change.Insert,
			Key:   change.Row{{Name: "id", Value: change.IntValue(int64(i))}},
			After: change.Row{{Name: "id", Value: change.IntValue(int64(i))}, {Name: "v", Value: change.TextValue(fmt.Sprintf("%0300d", i))}}}
		return &c, nil
	})
	if !errors.Is(err, errSourceLost) {
		t.Fatalf("AppendStream: %v, want %v", err, errSourceLost)
	}
	last = w.NextLSN() - 1
	if last <= first {
		t.Fatalf("the aborted stream left LSNs %d-%d: none of its records was written", first, last)
	}
	if err := w.Wait(context.Background(), last); err != nil { // the abort frame is queued, not waited for
		t.Fatal(err)
	}
	return first, last
}

// runSinkUntil runs a sink over w with the checkpoints in ck until its
// checkpoint reaches the log's durable end (aborted ranges included), then
// stops it.
func runSinkUntil(t *testing.T, w *wal.WAL, ck *checkpoint.Store, opts kafkasink.Options) {
	t.Helper()
	opts.Logger = testLogger(t)
	s, err := kafkasink.New(opts, w, ck, "L1")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()
	for deadline := time.Now().Add(90 * time.Second); s.Stats().CheckpointLSN < w.Durable(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("sink checkpoint %+v, want the log's durable end %d; Run: %v", s.Stats(), w.Durable(), <-errc)
		}
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("sink Run: %v", err)
	}
}

// markers reads the ordered topic up to its end and returns the aborted
// ranges its markers stand for, in topic order, as "first-last".
func markers(t *testing.T, addr string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	topic := kafkawire.OrderedTopic(kafkawire.DefaultTopicPrefix)
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var out []string
	for {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			t.Fatal(err)
		}
		end := false
		fs.EachPartition(func(p kgo.FetchTopicPartition) {
			for _, r := range p.Records {
				if kafkawire.IsAbortedMarker(r) {
					if r.Key != nil {
						t.Fatalf("marker at offset %d has a key", r.Offset)
					}
					ev, err := kafkawire.Decode(r)
					if err != nil || !ev.Aborted {
						t.Fatalf("marker at offset %d: %+v, %v", r.Offset, ev, err)
					}
					out = append(out, fmt.Sprintf("%d-%d", ev.FirstLSN, ev.CommitLSN))
				}
				end = end || r.Offset+1 >= p.HighWatermark
			}
		})
		if end {
			return out
		}
	}
}

// TestAbortedRangeIsNoGap: a log holding transactions aborted midway
// (between committed transactions and at its end) is shipped by the sink,
// which produces one marker per aborted range, and passes each range in
// its checkpoint; a sink restarted at a checkpoint before the ranges sends
// their markers again. The consumer, restarted meanwhile in a new group
// (its replica right before the last range), applies exactly the log's
// committed content (no ErrGap, no duplicate) and its position passes
// the ranges.
func TestAbortedRangeIsNoGap(t *testing.T) {
	kc := startCluster(t)
	dir := t.TempDir()
	w, _, err := wal.Open(wal.Options{Dir: filepath.Join(dir, "wal"), MaxPendingBytes: 4 << 10, MaxBatchBytes: 2 << 10})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	ck, err := checkpoint.Open(context.Background(), vfs.Default, filepath.Join(dir, "ckpt"), checkpoint.Options{})
	if err != nil {
		t.Fatal(err)
	}
	wl := kafkatest.NewWorkload(5)
	appendN := func(n int) {
		for range n {
			txn := wl.Next()
			if _, err := w.Append(context.Background(), &txn); err != nil {
				t.Fatal(err)
			}
		}
	}
	appendN(5)
	f1, l1 := appendAborted(t, w, 40)
	appendN(5)
	f2, l2 := appendAborted(t, w, 30) // the log ends with it
	if w.Durable() != l2 {
		t.Fatalf("durable %d, want the last abort at %d", w.Durable(), l2)
	}

	sinkOpts := kafkasink.Options{Brokers: []string{kc.Addr}, Database: "app", Linger: time.Millisecond}
	runSinkUntil(t, w, ck, sinkOpts) // the checkpoint passes the final range
	want := []string{fmt.Sprint(f1, "-", l1), fmt.Sprint(f2, "-", l2)}
	if got := markers(t, kc.Addr); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("markers %v, want %v", got, want)
	}

	url := "sqlite://" + filepath.Join(dir, "got.db")
	c, stop := startConsumer(t, Options{Brokers: []string{kc.Addr}, ReplicaURL: url, Lineage: "L1", MaxBatchTxns: 3})
	lastBefore := readWAL(t, w)
	waitApplied(t, c, lastBefore[len(lastBefore)-1].CommitLSN, 60*time.Second)

	// Restart the sink at a checkpoint before both ranges: it sends them
	// (and what lies between) again; the consumer drops the duplicates.
	if err := ck.SetBackward(context.Background(), kafkasink.CheckpointName, f1-1, nil); err != nil {
		t.Fatal(err)
	}
	appendN(4)
	// The consumer restarts too, in a new group: its replica is right
	// before the final range, whose marker is where it must start.
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("consumer Run: %v", err)
	}
	runSinkUntil(t, w, ck, sinkOpts)
	c, stop = startConsumer(t, Options{Brokers: []string{kc.Addr}, ReplicaURL: url, Lineage: "L1", MaxBatchTxns: 3, Group: "second"})
	want = append(want, want...)
	if got := markers(t, kc.Addr); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("markers after the restart %v, want %v", got, want)
	}

	txns := readWAL(t, w)
	last := txns[len(txns)-1].CommitLSN
	if last <= l2 {
		t.Fatalf("the last transaction ends at %d, not after the range %d-%d", last, f2, l2)
	}
	waitApplied(t, c, last, 60*time.Second)
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("consumer Run: %v", err)
	}
	if st := c.Stats(); st.AppliedLSN != last || st.Txns != 4 {
		t.Fatalf("restarted consumer's stats %+v, want applied LSN %d and the 4 transactions appended after its restart", st, last)
	}
	wantURL := "sqlite://" + filepath.Join(dir, "want.db")
	applyDirect(t, wantURL, txns)
	sameReplica(t, url, wantURL, txns)
}
