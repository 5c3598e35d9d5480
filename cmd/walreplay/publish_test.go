package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/walship/walship/change"
	"github.com/walship/walship/checkpoint"
	"github.com/walship/walship/consumer"
	"github.com/walship/walship/kafkasink"
	"github.com/walship/walship/kafkasink/kafkatest"
	"github.com/walship/walship/kafkawire"
	"github.com/walship/walship/vfs"
	"github.com/walship/walship/wal"
)

// source is a daemon-style pipeline that ran to its end: a WAL written by
// a workload, the Kafka topics the sink produced from it (cluster), and an
// archive of the same log (fixture).
type source struct {
	cluster *kafkatest.Cluster
	f       *fixture
	txns    []change.Committed
	mode    string
	parts   int
}

func startKafka(t *testing.T) *kafkatest.Cluster {
	t.Helper()
	c, err := kafkatest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// newSource appends n workload transactions to a WAL, ships them with the
// Kafka sink in mode (ordered, tables or both; parts partitions per table
// topic) until every LSN is acknowledged, and archives the log in segments of 20 transactions.
func newSource(t *testing.T, mode string, parts, n int, noKinds bool) *source {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	w, _, err := wal.Open(wal.Options{Dir: filepath.Join(dir, "wal"), Sync: wal.SyncOff})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ck, err := checkpoint.Open(ctx, vfs.Default, filepath.Join(dir, "ckpt"), checkpoint.Options{})
	if err != nil {
		t.Fatal(err)
	}
	wl := kafkatest.NewWorkload(7)
	wl.NoKinds = noKinds
	for range n {
		txn := wl.Next()
		if _, err := w.Append(ctx, &txn); err != nil {
			t.Fatal(err)
		}
	}
	c := startKafka(t)
	// "both": two sinks, as two daemons with the two modes, into one cluster.
	modes := []string{mode}
	if mode == "both" {
		modes = []string{kafkawire.ModeOrdered, kafkawire.ModeTables}
	}
	for i, m := range modes {
		ck := ck
		if i > 0 {
			if ck, err = checkpoint.Open(ctx, vfs.Default, filepath.Join(dir, "ckpt-"+m), checkpoint.Options{}); err != nil {
				t.Fatal(err)
			}
		}
		s, err := kafkasink.New(kafkasink.Options{Brokers: []string{c.Addr}, Mode: m, Partitions: int32(parts)}, w, ck, "main")
		if err != nil {
			t.Fatal(err)
		}
		rctx, cancel := context.WithCancel(ctx)
		errc := make(chan error, 1)
		go func() { errc <- s.Run(rctx) }()
		deadline := time.Now().Add(2 * time.Minute) // only catches a hang
		for s.Stats().CheckpointLSN < w.Durable() {
			if time.Now().After(deadline) {
				t.Fatalf("sink stuck: %+v", s.Stats())
			}
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
		<-errc
	}

	rd, err := w.NewReader(1, false)
	if err != nil {
		t.Fatal(err)
	}
	var txns []change.Committed
	for {
		tx, err := rd.Next(ctx)
		if err != nil {
			break
		}
		txns = append(txns, *tx)
	}
	rd.Close()
	return &source{cluster: c, f: newFixture(t, txns, 20), txns: txns, mode: mode, parts: parts}
}

// publish runs walreplay publish of the source's archive to brokers.
func (s *source) publish(t *testing.T, brokers string, args ...string) result {
	t.Helper()
	a := []string{"publish", "--archive", s.f.url, "--brokers", brokers, "--topics", s.mode, "--partitions", strconv.Itoa(s.parts)}
	return walreplay(t, context.Background(), append(a, args...)...)
}

// topicRecords reads every record of every walship topic of a cluster:
// topic → partition → records in offset order.
func topicRecords(t *testing.T, addr string) map[string]map[int32][]*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // only catches a hang
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	details, err := adm.ListTopics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var topics []string
	for name := range details {
		if strings.HasPrefix(name, "walship.") {
			topics = append(topics, name)
		}
	}
	out := map[string]map[int32][]*kgo.Record{}
	if len(topics) == 0 {
		return out
	}
	ends, err := adm.ListEndOffsets(ctx, topics...)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]map[int32]kgo.Offset{}
	left := 0
	ends.Each(func(o kadm.ListedOffset) {
		if out[o.Topic] == nil {
			out[o.Topic] = map[int32][]*kgo.Record{}
		}
		if o.Offset > 0 {
			if want[o.Topic] == nil {
				want[o.Topic] = map[int32]kgo.Offset{}
			}
			want[o.Topic][o.Partition] = kgo.NewOffset().AtStart()
			left += int(o.Offset)
		}
	})
	if left == 0 {
		return out
	}
	rd, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumePartitions(want))
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	for left > 0 {
		fs := rd.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read topics: %d records left", left)
		}
		fs.EachRecord(func(r *kgo.Record) {
			out[r.Topic][r.Partition] = append(out[r.Topic][r.Partition], r)
			left--
		})
	}
	return out
}

// tsMS is the envelope's processing time: the one field a republished
// record cannot share with the original (docs/KAFKA.md).
var tsMS = regexp.MustCompile(`("op":"."),"ts_ms":[0-9]+`)

// sameRecord reports how got differs from want ("" if it does not): topic,
// partition, key, value (but its processing time), headers and timestamp.
func sameRecord(want, got *kgo.Record) string {
	norm := func(v []byte) []byte {
		if v == nil {
			return nil
		}
		return tsMS.ReplaceAll(v, []byte(`$1,"ts_ms":0`))
	}
	switch {
	case want.Topic != got.Topic || want.Partition != got.Partition:
		return fmt.Sprintf("at %s/%d, want %s/%d", got.Topic, got.Partition, want.Topic, want.Partition)
	case !bytes.Equal(want.Key, got.Key) || (want.Key == nil) != (got.Key == nil):
		return fmt.Sprintf("key %q, want %q", got.Key, want.Key)
	case !bytes.Equal(norm(want.Value), norm(got.Value)) || (want.Value == nil) != (got.Value == nil):
		return fmt.Sprintf("value\n %s\nwant\n %s", got.Value, want.Value)
	case !want.Timestamp.Equal(got.Timestamp):
		return fmt.Sprintf("timestamp %s, want %s", got.Timestamp, want.Timestamp)
	case len(want.Headers) != len(got.Headers):
		return fmt.Sprintf("headers %v, want %v", got.Headers, want.Headers)
	}
	for i := range want.Headers {
		if want.Headers[i].Key != got.Headers[i].Key || !bytes.Equal(want.Headers[i].Value, got.Headers[i].Value) {
			return fmt.Sprintf("headers %v, want %v", got.Headers, want.Headers)
		}
	}
	return ""
}

func recordLSN(r *kgo.Record) uint64 {
	lsn, _, _, _, _ := kafkawire.DecodeHeaders(r)
	return lsn
}

// sameTopics fails unless got holds, per topic and partition, exactly the
// records of want that keep says to keep, in order.
func sameTopics(t *testing.T, want, got map[string]map[int32][]*kgo.Record, keep func(*kgo.Record) bool) {
	t.Helper()
	n := 0
	for topic, parts := range want {
		for p, recs := range parts {
			var w []*kgo.Record
			for _, r := range recs {
				if keep(r) {
					w = append(w, r)
				}
			}
			g := got[topic][p]
			for i := range max(len(w), len(g)) {
				if i >= len(w) || i >= len(g) {
					t.Fatalf("%s/%d: %d records, want %d", topic, p, len(g), len(w))
				}
				if d := sameRecord(w[i], g[i]); d != "" {
					t.Fatalf("%s/%d record %d (LSN %d, got LSN %d): %s", topic, p, i, recordLSN(w[i]), recordLSN(g[i]), d)
				}
			}
			n += len(w)
		}
	}
	for topic, parts := range got {
		for p, recs := range parts {
			if len(recs) > 0 && len(want[topic][p]) == 0 {
				t.Fatalf("%s/%d: %d records, want none", topic, p, len(recs))
			}
		}
	}
	if n == 0 {
		t.Fatal("nothing compared")
	}
}

func all(*kgo.Record) bool { return true }

// TestPublishRebuildsTheTopicsExactly: publishing the archive into an
// empty cluster gives, in ordered and in tables mode (three partitions per
// table), every record of the daemon's topics — topic, partition, key,
// value, headers, timestamp — in order, and both at once; publishing again
// adds nothing.
func TestPublishRebuildsTheTopicsExactly(t *testing.T) {
	for _, tc := range []struct {
		mode  string
		parts int
	}{{kafkawire.ModeOrdered, 1}, {kafkawire.ModeTables, 3}, {"both", 2}} {
		t.Run(tc.mode, func(t *testing.T) {
			src := newSource(t, tc.mode, tc.parts, 200, false)
			orig := topicRecords(t, src.cluster.Addr)
			dst := startKafka(t)
			if r := src.publish(t, dst.Addr); r.code != 0 {
				t.Fatalf("publish: exit %d: %v\n%s", r.code, r.err, r.stderr)
			}
			sameTopics(t, orig, topicRecords(t, dst.Addr), all)
			r := src.publish(t, dst.Addr)
			if r.code != 0 || !strings.Contains(r.stdout, " 0 records produced") {
				t.Fatalf("second publish: exit %d: %v\n%s", r.code, r.err, r.stdout)
			}
			sameTopics(t, orig, topicRecords(t, dst.Addr), all)
		})
	}
}

// produceRecords copies recs into the cluster at addr, each to its own
// topic and partition.
func produceRecords(t *testing.T, addr string, recs []*kgo.Record) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	created := map[string]bool{}
	for _, r := range recs {
		if !created[r.Topic] {
			created[r.Topic] = true
			if _, err := kadm.NewClient(cl).CreateTopic(context.Background(), 1, -1, nil, r.Topic); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, r := range recs {
		c := &kgo.Record{Topic: r.Topic, Partition: r.Partition, Key: r.Key, Value: r.Value, Headers: r.Headers, Timestamp: r.Timestamp}
		if err := cl.ProduceSync(context.Background(), c).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestPublishCompletesATruncatedTopic: a cluster holding a prefix of the
// ordered topic that ends between a delete and its tombstone, or one that
// an earlier publish with --to-lsn left short (per-table topics too), is
// completed to exactly the daemon's topic: nothing missing, nothing twice.
func TestPublishCompletesATruncatedTopic(t *testing.T) {
	t.Run("prefix ending before a tombstone", func(t *testing.T) {
		src := newSource(t, kafkawire.ModeOrdered, 1, 200, false)
		orig := topicRecords(t, src.cluster.Addr)
		recs := orig[kafkawire.OrderedTopic("walship")][0]
		cut := -1
		for i := len(recs) / 2; i+1 < len(recs); i++ {
			if recs[i].Value != nil && recs[i+1].Value == nil {
				cut = i + 1 // the delete is in, its tombstone is not
				break
			}
		}
		if cut < 0 {
			t.Fatal("the workload has no delete in its second half")
		}
		dst := startKafka(t)
		produceRecords(t, dst.Addr, recs[:cut])
		r := src.publish(t, dst.Addr)
		if r.code != 0 {
			t.Fatalf("publish: exit %d: %v\n%s", r.code, r.err, r.stderr)
		}
		if want := fmt.Sprintf(" %d records produced", len(recs)-cut); !strings.Contains(r.stdout, want) {
			t.Fatalf("publish said %q, want %q", r.stdout, want)
		}
		sameTopics(t, orig, topicRecords(t, dst.Addr), all)
	})
	for _, tc := range []struct {
		mode  string
		parts int
	}{{kafkawire.ModeOrdered, 1}, {kafkawire.ModeTables, 3}} {
		t.Run("after --to-lsn/"+tc.mode, func(t *testing.T) {
			src := newSource(t, tc.mode, tc.parts, 200, false)
			orig := topicRecords(t, src.cluster.Addr)
			dst := startKafka(t)
			mid := src.txns[len(src.txns)/2].CommitLSN
			if r := src.publish(t, dst.Addr, "--to-lsn", strconv.FormatUint(mid, 10)); r.code != 0 {
				t.Fatalf("publish --to-lsn: exit %d: %v\n%s", r.code, r.err, r.stderr)
			}
			sameTopics(t, orig, topicRecords(t, dst.Addr), func(r *kgo.Record) bool { return recordLSN(r) <= mid })
			if r := src.publish(t, dst.Addr); r.code != 0 {
				t.Fatalf("publish: exit %d: %v\n%s", r.code, r.err, r.stderr)
			}
			sameTopics(t, orig, topicRecords(t, dst.Addr), all)
		})
	}
}

// TestPublishFromTheMiddle: --from-lsn and --from-time into an empty
// cluster publish exactly the records from there on; a start after what a
// topic holds is a hole, refused with exit 3 and nothing produced, unless
// --force.
func TestPublishFromTheMiddle(t *testing.T) {
	src := newSource(t, kafkawire.ModeOrdered, 1, 200, false)
	orig := topicRecords(t, src.cluster.Addr)
	mid := src.txns[100]
	from := mid.FirstLSN + 1 // inside a transaction: its later changes only, when it has several
	dst := startKafka(t)
	if r := src.publish(t, dst.Addr, "--from-lsn", strconv.FormatUint(from, 10)); r.code != 0 {
		t.Fatalf("publish --from-lsn: exit %d: %v\n%s", r.code, r.err, r.stderr)
	}
	sameTopics(t, orig, topicRecords(t, dst.Addr), func(r *kgo.Record) bool { return recordLSN(r) >= from })

	byTime := startKafka(t)
	at := src.txns[120].CommitTime
	if r := src.publish(t, byTime.Addr, "--from-time", at.Format(time.RFC3339Nano)); r.code != 0 {
		t.Fatalf("publish --from-time: exit %d: %v\n%s", r.code, r.err, r.stderr)
	}
	firstAt := src.txns[120].FirstLSN // commit times never decrease; Kafka's timestamps have only milliseconds
	for i := 119; i >= 0 && src.txns[i].CommitTime.Equal(at); i-- {
		firstAt = src.txns[i].FirstLSN
	}
	sameTopics(t, orig, topicRecords(t, byTime.Addr), func(r *kgo.Record) bool { return recordLSN(r) >= firstAt })

	// The hole: the topic ends at LSN end, publishing is asked to start
	// well after it.
	holed := startKafka(t)
	end := src.txns[50].CommitLSN
	if r := src.publish(t, holed.Addr, "--to-lsn", strconv.FormatUint(end, 10)); r.code != 0 {
		t.Fatalf("publish --to-lsn: exit %d: %v", r.code, r.err)
	}
	after := src.txns[80].FirstLSN
	r := src.publish(t, holed.Addr, "--from-lsn", strconv.FormatUint(after, 10))
	var he *kafkasink.HoleError
	if r.code != exitHole || !errors.As(r.err, &he) || he.End != end || he.LSN != end+1 || he.Topic != kafkawire.OrderedTopic("walship") {
		t.Fatalf("publish with a hole: exit %d: %v, want %d naming LSN %d", r.code, r.err, exitHole, end)
	}
	sameTopics(t, orig, topicRecords(t, holed.Addr), func(r *kgo.Record) bool { return recordLSN(r) <= end })
	if r := src.publish(t, holed.Addr, "--from-lsn", strconv.FormatUint(after, 10), "--force"); r.code != 0 {
		t.Fatalf("publish --force: exit %d: %v", r.code, r.err)
	}
	sameTopics(t, orig, topicRecords(t, holed.Addr), func(r *kgo.Record) bool { return recordLSN(r) <= end || recordLSN(r) >= after })

	// An end the topic is already past: nothing to do.
	if r := src.publish(t, dst.Addr, "--to-lsn", strconv.FormatUint(end, 10)); r.code != 0 || !strings.Contains(r.stdout, " 0 records produced") {
		t.Fatalf("publish --to-lsn before the topic's end: exit %d: %v\n%s", r.code, r.err, r.stdout)
	}
}

// TestPublishStopsAtDamage: a corrupt segment object stops publish with
// exit 1 naming the object, after every record before it is produced and
// nothing of it or after it.
func TestPublishStopsAtDamage(t *testing.T) {
	src := newSource(t, kafkawire.ModeOrdered, 1, 200, false)
	orig := topicRecords(t, src.cluster.Addr)
	bad := src.f.segs[4]
	path := filepath.Join(src.f.dir, filepath.FromSlash(bad.Key))
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	dst := startKafka(t)
	r := src.publish(t, dst.Addr)
	if r.code != exitFailure || !strings.Contains(r.err.Error(), bad.Key) {
		t.Fatalf("publish of a damaged archive: exit %d: %v, want %d naming %s", r.code, r.err, exitFailure, bad.Key)
	}
	sameTopics(t, orig, topicRecords(t, dst.Addr), func(r *kgo.Record) bool { return recordLSN(r) < bad.FirstLSN })
}

// TestPublishedTopicFeedsAReplica: walship consume's core, reading a topic
// rebuilt in two runs (a prefix, then the rest), builds a replica equal to
// the source.
func TestPublishedTopicFeedsAReplica(t *testing.T) {
	src := newSource(t, kafkawire.ModeOrdered, 1, 200, true)
	dst := startKafka(t)
	mid := src.txns[77].CommitLSN
	if r := src.publish(t, dst.Addr, "--to-lsn", strconv.FormatUint(mid, 10)); r.code != 0 {
		t.Fatalf("publish --to-lsn: exit %d: %v", r.code, r.err)
	}
	if r := src.publish(t, dst.Addr); r.code != 0 {
		t.Fatalf("publish: exit %d: %v", r.code, r.err)
	}
	url := "sqlite://" + filepath.Join(t.TempDir(), "r.db")
	ctx := context.Background()
	c, err := consumer.New(ctx, consumer.Options{Brokers: []string{dst.Addr}, ReplicaURL: url, Lineage: "main"})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { errc <- c.Run(rctx) }()
	last := src.txns[len(src.txns)-1].CommitLSN
	deadline := time.Now().Add(2 * time.Minute) // only catches a hang
	for c.Stats().AppliedLSN < last {
		if time.Now().After(deadline) {
			t.Fatalf("consumer at LSN %d, want %d", c.Stats().AppliedLSN, last)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-errc
	c.Close()
	sameReplica(t, url, expected(t, src.txns))
}

// TestPublishFormatJSONSchemas: --format json-schemas rebuilds the ordered
// topic in that format: the same records, each key and value a schema that
// matches its payload, decoding to the same changes; publishing again adds
// nothing; a bad format is refused naming kafka.format.
func TestPublishFormatJSONSchemas(t *testing.T) {
	src := newSource(t, kafkawire.ModeOrdered, 1, 60, false)
	topic := kafkawire.OrderedTopic(kafkawire.DefaultTopicPrefix)
	orig := topicRecords(t, src.cluster.Addr)[topic][0]
	dst := startKafka(t)
	if r := src.publish(t, dst.Addr, "--format", "avro"); r.code != 2 || !strings.Contains(fmt.Sprint(r.err), "kafka.format") {
		t.Fatalf("--format avro: exit %d: %v", r.code, r.err)
	}
	if r := src.publish(t, dst.Addr, "--format", kafkawire.FormatJSONSchemas); r.code != 0 {
		t.Fatalf("publish: exit %d: %v\n%s", r.code, r.err, r.stderr)
	}
	got := topicRecords(t, dst.Addr)[topic][0]
	if len(got) != len(orig) || len(got) == 0 {
		t.Fatalf("%d records, want %d", len(got), len(orig))
	}
	for i := range got {
		for _, b := range [][]byte{got[i].Key, got[i].Value} {
			if b == nil {
				continue
			}
			if err := kafkatest.CheckSchemaPayload(b); err != nil {
				t.Fatalf("record %d: %v\n%s", i, err, b)
			}
		}
		want, err := kafkawire.Decode(orig[i])
		if err != nil {
			t.Fatal(err)
		}
		ev, err := kafkawire.Decode(got[i])
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if !ev.Change.Equal(&want.Change) || ev.LSN != want.LSN || ev.Tombstone != want.Tombstone || ev.Aborted != want.Aborted {
			t.Fatalf("record %d: %+v, want %+v", i, ev, want)
		}
	}
	if r := src.publish(t, dst.Addr, "--format", kafkawire.FormatJSONSchemas); r.code != 0 || !strings.Contains(r.stdout, " 0 records produced") {
		t.Fatalf("second publish: exit %d: %v\n%s", r.code, r.err, r.stdout)
	}
}
