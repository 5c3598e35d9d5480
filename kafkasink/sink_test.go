package kafkasink

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/walship/walship/change"
	"github.com/walship/walship/checkpoint"
	"github.com/walship/walship/kafkasink/kafkatest"
	"github.com/walship/walship/kafkawire"
	"github.com/walship/walship/vfs"
	"github.com/walship/walship/wal"
)

type env struct {
	t     *testing.T
	dir   string
	w     *wal.WAL
	ckpts *checkpoint.Store
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	w, _, err := wal.Open(wal.Options{Dir: filepath.Join(dir, "wal")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	ck, err := checkpoint.Open(context.Background(), vfs.Default, filepath.Join(dir, "ckpt"), checkpoint.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, dir: dir, w: w, ckpts: ck}
}

func (e *env) append(wl *kafkatest.Workload, n int) {
	e.t.Helper()
	for range n {
		txn := wl.Next()
		if _, err := e.w.Append(context.Background(), &txn); err != nil {
			e.t.Fatal(err)
		}
	}
}

// walTxns reads the whole WAL.
func (e *env) walTxns() []change.Committed {
	e.t.Helper()
	rd, err := e.w.NewReader(1, false)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rd.Close()
	var out []change.Committed
	for {
		txn, err := rd.Next(context.Background())
		if err != nil {
			break
		}
		out = append(out, *txn)
	}
	return out
}

// runSink runs a sink until the returned stop function is called; stop
// returns Run's error.
func runSink(t *testing.T, s *Sink) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()
	var once bool
	var err error
	stop = func() error {
		if !once {
			once = true
			cancel()
			err = <-errc
		}
		return err
	}
	t.Cleanup(func() { stop() })
	return stop
}

func waitAcked(t *testing.T, s *Sink, lsn uint64, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for s.Stats().CheckpointLSN < lsn {
		if time.Now().After(deadline) {
			t.Fatalf("checkpoint at %d after %v, want %d (stats %+v)", s.Stats().CheckpointLSN, within, lsn, s.Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func startCluster(t *testing.T) *kafkatest.Cluster {
	t.Helper()
	c, err := kafkatest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// rebuild decodes the ordered topic's records and assembles transactions.
func rebuild(t *testing.T, recs []*kgo.Record) []change.Committed {
	t.Helper()
	a := kafkawire.NewAssembler(0)
	var out []change.Committed
	for _, r := range recs {
		ev, err := kafkawire.Decode(r)
		if err != nil {
			t.Fatalf("offset %d: %v", r.Offset, err)
		}
		txn, ok, err := a.Add(&ev)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			out = append(out, txn)
		}
	}
	return out
}

func sameTxns(t *testing.T, got, want []change.Committed) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d transactions, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := &got[i], &want[i]
		if g.FirstLSN != w.FirstLSN || g.CommitLSN != w.CommitLSN || !g.CommitTime.Equal(w.CommitTime) || !g.Txn.Equal(&w.Txn) {
			t.Fatalf("transaction %d differs:\n got %+v\nwant %+v", i, *g, *w)
		}
	}
}

// recordCount is how many records the ordered topic gets for txns.
func recordCount(txns []change.Committed, tombstones bool) int {
	n := 0
	for _, t := range txns {
		for _, c := range t.Changes {
			n++
			if tombstones && c.Op == change.Delete && c.Key != nil {
				n++
			}
		}
	}
	return n
}

func TestOrderedRoundTripExact(t *testing.T) {
	c := startCluster(t)
	e := newEnv(t)
	e.append(kafkatest.NewWorkload(1), 300)
	want := e.walTxns()
	s, err := New(Options{Brokers: []string{c.Addr}, Database: "app"}, e.w, e.ckpts, "L1")
	if err != nil {
		t.Fatal(err)
	}
	stop := runSink(t, s)
	last := want[len(want)-1].CommitLSN
	waitAcked(t, s, last, 20*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	recs, err := kafkatest.ReadTopic(ctx, []string{c.Addr}, kafkawire.OrderedTopic("walship"), recordCount(want, true))
	if err != nil {
		t.Fatal(err)
	}
	sameTxns(t, rebuild(t, recs), want)
	// Exactly the expected records, in LSN order; a tombstone right after
	// its delete.
	var prev uint64
	for i, r := range recs {
		lsn, _, _, lineage, err := kafkawire.DecodeHeaders(r)
		if err != nil {
			t.Fatal(err)
		}
		if lineage != "L1" {
			t.Fatalf("record %d: lineage %q", i, lineage)
		}
		if r.Value == nil {
			if lsn != prev || recs[i-1].Value == nil {
				t.Fatalf("record %d: tombstone of lsn %d not right after its delete (previous lsn %d)", i, lsn, prev)
			}
			if !bytes.Equal(r.Key, recs[i-1].Key) {
				t.Fatalf("tombstone key %s, delete key %s", r.Key, recs[i-1].Key)
			}
			continue
		}
		if lsn != prev+1 {
			t.Fatalf("record %d: lsn %d after %d", i, lsn, prev)
		}
		prev = lsn
	}
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
	ck, _ := e.ckpts.Get(CheckpointName)
	if ck.Pos != last {
		t.Fatalf("checkpoint %d, want %d", ck.Pos, last)
	}
	if st := s.Stats(); st.LagRecords != 0 || st.LagSeconds != 0 {
		t.Fatalf("lag after catching up: %+v", st)
	}
}

func TestEnvelopeFields(t *testing.T) {
	c := startCluster(t)
	e := newEnv(t)
	ts := time.Date(2024, 5, 1, 12, 0, 0, 123456789, time.UTC)
	num, _ := change.NumericValue("12.30")
	key := change.Row{{Name: "id", Value: change.IntValue(7)}}
	txn := change.Txn{Header: change.TxHeader{XID: 571, SourceLSN: 0x16_B374D848, SourceCommitTime: ts}, Changes: []change.Change{
		{Table: kafkatest.Accounts, Op: change.Insert, Key: key, After: change.Row{{Name: "id", Value: change.IntValue(7)}, {Name: "price", Value: num}, {Name: "raw", Value: change.BytesValue([]byte{1, 2})}}},
		{Table: kafkatest.Odd, Op: change.Insert, Key: change.Row{{Name: "k", Value: change.TextValue("a")}}, After: change.Row{{Name: "k", Value: change.TextValue("a")}}},
		{Table: kafkatest.Accounts, Op: change.Delete, Key: key},
		{Op: change.Message, Message: &change.LogicalMessage{Prefix: "p", Content: []byte("hi"), Transactional: true}},
	}}
	if _, err := e.w.Append(context.Background(), &txn); err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{Brokers: []string{c.Addr}, Database: "app", Name: "srv"}, e.w, e.ckpts, "L1")
	if err != nil {
		t.Fatal(err)
	}
	runSink(t, s)
	waitAcked(t, s, 4, 20*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	recs, err := kafkatest.ReadTopic(ctx, []string{c.Addr}, kafkawire.OrderedTopic("walship"), 5)
	if err != nil {
		t.Fatal(err)
	}
	type obj = map[string]any
	var v obj
	if err := json.Unmarshal(recs[0].Value, &v); err != nil {
		t.Fatal(err)
	}
	src := v["source"].(obj)
	for k, want := range map[string]any{"version": kafkawire.Version, "connector": "postgresql", "name": "srv", "db": "app",
		"schema": "public", "table": "accounts", "txId": 571.0, "lsn": float64(0x16_B374D848), "snapshot": "false",
		"ts_ms": float64(ts.UnixMilli()), "sequence": `["` + strconv.Itoa(0x16_B374D848) + `","1"]`} {
		if src[k] != want {
			t.Errorf("source.%s = %#v, want %#v", k, src[k], want)
		}
	}
	if v["op"] != "c" || v["before"] != nil {
		t.Errorf("op %v before %v", v["op"], v["before"])
	}
	after := v["after"].(obj)
	if after["price"] != "12.30" || after["raw"] != "AQI=" || after["id"] != 7.0 {
		t.Errorf("after = %v: want numeric as string, bytes as base64", after)
	}
	tx := v["transaction"].(obj)
	if tx["id"] != "571:"+strconv.Itoa(0x16_B374D848) || tx["total_order"] != 1.0 || tx["data_collection_order"] != 1.0 {
		t.Errorf("transaction = %v", tx)
	}
	if string(recs[0].Key) != `{"id":7}` {
		t.Errorf("key = %s", recs[0].Key)
	}
	hdr := map[string]string{}
	for _, h := range recs[2].Headers {
		hdr[h.Key] = string(h.Value)
	}
	// The header names are the contract (docs/KAFKA.md "Headers"): spelled out.
	if hdr["walship.lsn"] != "3" || hdr["walship.commit_lsn"] != "4" || hdr["walship.txn_first_lsn"] != "1" || hdr["walship.lineage"] != "L1" || len(hdr) != 4 {
		t.Errorf("headers of the delete: %v", hdr)
	}
	// The delete, its tombstone, then the message.
	var del obj
	json.Unmarshal(recs[2].Value, &del)
	if del["op"] != "d" || del["after"] != nil || del["transaction"].(obj)["total_order"] != 3.0 || del["transaction"].(obj)["data_collection_order"] != 2.0 {
		t.Errorf("delete = %v", del)
	}
	if recs[3].Value != nil || string(recs[3].Key) != `{"id":7}` {
		t.Errorf("record 3 = %q/%q, want the tombstone", recs[3].Key, recs[3].Value)
	}
	var msg obj
	json.Unmarshal(recs[4].Value, &msg)
	if msg["op"] != "m" || msg["message"].(obj)["content"] != "aGk=" || msg["message"].(obj)["prefix"] != "p" || string(recs[4].Key) != `{"prefix":"p"}` {
		t.Errorf("message = %v key %s", msg, recs[4].Key)
	}
	if !recs[0].Timestamp.Equal(e.walTxns()[0].CommitTime.Truncate(time.Millisecond)) {
		t.Errorf("record timestamp %v, want the commit time %v", recs[0].Timestamp, e.walTxns()[0].CommitTime)
	}
}

func TestTablesMode(t *testing.T) {
	c := startCluster(t)
	e := newEnv(t)
	e.append(kafkatest.NewWorkload(2), 200)
	want := e.walTxns()
	no := false
	s, err := New(Options{Brokers: []string{c.Addr}, Mode: kafkawire.ModeTables, TopicPrefix: "tp", Tombstones: &no, Compression: "lz4"}, e.w, e.ckpts, "L1")
	if err != nil {
		t.Fatal(err)
	}
	runSink(t, s)
	// The checkpoint passes the logical messages, which get no record.
	waitAcked(t, s, want[len(want)-1].CommitLSN, 20*time.Second)
	perTopic := map[string][]change.Change{}
	lsns := map[string][]uint64{}
	for _, txn := range want {
		for i, ch := range txn.Changes {
			if ch.Op == change.Message {
				continue
			}
			topic := kafkawire.TablesTopic("tp", ch.Table.Schema, ch.Table.Name)
			perTopic[topic] = append(perTopic[topic], ch)
			lsns[topic] = append(lsns[topic], txn.FirstLSN+uint64(i))
		}
	}
	if _, ok := perTopic["tp.app.odd_table"]; !ok {
		t.Fatalf("no changes for app.\"odd table\" in the workload; topics %v", perTopic)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for topic, changes := range perTopic {
		recs, err := kafkatest.ReadTopic(ctx, []string{c.Addr}, topic, len(changes))
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != len(changes) {
			t.Fatalf("%s: %d records, want %d", topic, len(recs), len(changes))
		}
		for i, r := range recs {
			ev, err := kafkawire.Decode(r)
			if err != nil {
				t.Fatal(err)
			}
			if ev.LSN != lsns[topic][i] || !ev.Change.Equal(&changes[i]) {
				t.Fatalf("%s record %d: lsn %d change %+v, want lsn %d %+v", topic, i, ev.LSN, ev.Change, lsns[topic][i], changes[i])
			}
			if changes[i].Key != nil {
				k, _ := (&kafkawire.Encoder{}).AppendKey(nil, &changes[i])
				if !bytes.Equal(r.Key, k) {
					t.Fatalf("%s record %d: key %s, want %s", topic, i, r.Key, k)
				}
			}
		}
	}
}

// TestRestartResumes stops and restarts the sink many times while the WAL
// grows: the topic, deduplicated by the Assembler, equals the WAL.
func TestRestartResumes(t *testing.T) {
	c := startCluster(t)
	e := newEnv(t)
	wl := kafkatest.NewWorkload(3)
	for round := range 8 {
		e.append(wl, 40)
		s, err := New(Options{Brokers: []string{c.Addr}, Linger: time.Millisecond, CheckpointInterval: 5 * time.Millisecond}, e.w, e.ckpts, "L1")
		if err != nil {
			t.Fatal(err)
		}
		stop := runSink(t, s)
		time.Sleep(time.Duration(round*7) * time.Millisecond) // stop at varied points
		stop()
	}
	s, _ := New(Options{Brokers: []string{c.Addr}}, e.w, e.ckpts, "L1")
	runSink(t, s)
	want := e.walTxns()
	waitAcked(t, s, want[len(want)-1].CommitLSN, 20*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// Read everything there is: at least the records of the WAL.
	recs, err := kafkatest.ReadTopic(ctx, []string{c.Addr}, kafkawire.OrderedTopic("walship"), recordCount(want, true))
	if err != nil {
		t.Fatal(err)
	}
	hw := highWatermark(t, c.Addr, kafkawire.OrderedTopic("walship"))
	for int64(len(recs)) < hw {
		more, err := kafkatest.ReadTopic(ctx, []string{c.Addr}, kafkawire.OrderedTopic("walship"), int(hw))
		if err != nil {
			t.Fatal(err)
		}
		recs = more
	}
	sameTxns(t, rebuild(t, recs), want)
	t.Logf("%d records for %d in the WAL (re-sent after restarts: %d)", len(recs), recordCount(want, true), len(recs)-recordCount(want, true))
}

func highWatermark(t *testing.T, addr, topic string) int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	offs, err := kadm.NewClient(cl).ListEndOffsets(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	o, _ := offs.Lookup(topic, 0)
	return o.Offset
}

// TestBrokerOutage cuts the broker off while the WAL keeps growing: the
// backlog stays in the WAL (records in memory stay bounded), the checkpoint
// stops, and once the broker is back everything arrives, nothing lost.
func TestBrokerOutage(t *testing.T) {
	c, proxy, err := kafkatest.StartBehindProxy()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close(); c.Close() })
	e := newEnv(t)
	wl := kafkatest.NewWorkload(4)
	e.append(wl, 50)
	const maxBuf = 64
	s, err := New(Options{Brokers: []string{proxy.Addr}, MaxBufferedRecords: maxBuf, CheckpointInterval: 10 * time.Millisecond}, e.w, e.ckpts, "L1")
	if err != nil {
		t.Fatal(err)
	}
	stop := runSink(t, s)
	waitAcked(t, s, e.walTxns()[49].CommitLSN, 20*time.Second)

	proxy.Down()
	before := s.Stats().CheckpointLSN
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	heapBefore := ms.HeapAlloc
	// InFlight counts LSNs issued and not yet passed: the producer's
	// buffer (every change of this workload is at least one record), and
	// the job whose LSNs are issued together before its first record
	// blocks in Produce.
	const bound = maxBuf + encodedJobLen
	for range 20 {
		e.append(wl, 100)
		if st := s.Stats(); st.InFlight > bound {
			t.Fatalf("%d LSNs in flight, bound %d", st.InFlight, bound)
		}
	}
	time.Sleep(300 * time.Millisecond)
	st := s.Stats()
	if st.InFlight > bound {
		t.Fatalf("%d LSNs in flight during the outage, bound %d", st.InFlight, bound)
	}
	if st.LagRecords < 1000 || st.LagSeconds <= 0 {
		t.Fatalf("lag during the outage: %+v", st)
	}
	if st.CheckpointLSN > before+maxBuf {
		t.Fatalf("checkpoint moved from %d to %d with the broker down", before, st.CheckpointLSN)
	}
	runtime.GC()
	runtime.ReadMemStats(&ms)
	if grew := int64(ms.HeapAlloc) - int64(heapBefore); grew > 32<<20 {
		t.Fatalf("heap grew by %d bytes during the outage: the backlog must stay in the WAL", grew)
	}
	if err := proxy.Up(); err != nil {
		t.Fatal(err)
	}
	want := e.walTxns()
	waitAcked(t, s, want[len(want)-1].CommitLSN, 60*time.Second)
	if s.Stats().Retries == 0 {
		t.Errorf("no retries counted across the outage")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	recs, err := kafkatest.ReadTopic(ctx, []string{proxy.Addr}, kafkawire.OrderedTopic("walship"), recordCount(want, true))
	if err != nil {
		t.Fatal(err)
	}
	sameTxns(t, rebuild(t, recs), want)

	// Shutting down while the broker is unreachable and records are in
	// flight returns within the flush grace period.
	proxy.Down()
	e.append(wl, 200)
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
	// flushGrace, then the client's close and a checkpoint on a loaded
	// machine: the bound only has to show that shutdown does not wait for
	// the broker.
	if took := time.Since(start); took > flushGrace+20*time.Second {
		t.Fatalf("shutdown during an outage took %v", took)
	}
}

func TestKcatReadsTopics(t *testing.T) {
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		t.Fatal("kcat not found: run scripts/deps.sh (Debian package kcat)")
	}
	c := startCluster(t)
	e := newEnv(t)
	num, _ := change.NumericValue("-0.5")
	txn := change.Txn{Header: change.TxHeader{XID: 9}, Changes: []change.Change{
		{Table: kafkatest.Accounts, Op: change.Insert, Key: change.Row{{Name: "id", Value: change.IntValue(1)}},
			After: change.Row{{Name: "id", Value: change.IntValue(1)}, {Name: "amount", Value: num}, {Name: "note", Value: change.TextValue("é \"q\"")}}},
		{Table: kafkatest.Accounts, Op: change.Delete, Key: change.Row{{Name: "id", Value: change.IntValue(1)}}},
	}}
	e.w.Append(context.Background(), &txn)
	for _, mode := range []string{kafkawire.ModeOrdered, kafkawire.ModeTables} {
		s, err := New(Options{Brokers: []string{c.Addr}, Mode: mode, TopicPrefix: "k" + mode}, e.w, e.ckpts, "L9")
		if err != nil {
			t.Fatal(err)
		}
		stop := runSink(t, s)
		waitAcked(t, s, 2, 20*time.Second)
		stop()
		e.ckpts.Reset(context.Background(), CheckpointName)
	}
	for _, topic := range []string{kafkawire.OrderedTopic("kordered"), kafkawire.TablesTopic("ktables", "public", "accounts")} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := exec.CommandContext(ctx, kcat, "-C", "-b", c.Addr, "-t", topic, "-o", "beginning", "-e", "-q", "-J").CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("kcat %s: %v\n%s", topic, err, out)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if len(lines) != 3 {
			t.Fatalf("kcat %s: %d messages, want 3 (insert, delete, tombstone):\n%s", topic, len(lines), out)
		}
		type kmsg struct {
			Key     *string  `json:"key"`
			Payload *string  `json:"payload"`
			Headers []string `json:"headers"`
			Part    int      `json:"partition"`
		}
		var msgs []kmsg
		for _, l := range lines {
			var m kmsg
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				t.Fatalf("kcat line %q: %v", l, err)
			}
			msgs = append(msgs, m)
		}
		var v struct {
			Op     string         `json:"op"`
			After  map[string]any `json:"after"`
			Source map[string]any `json:"source"`
		}
		if err := json.Unmarshal([]byte(*msgs[0].Payload), &v); err != nil {
			t.Fatal(err)
		}
		if v.Op != "c" || v.After["amount"] != "-0.5" || v.After["note"] != "é \"q\"" || v.Source["connector"] != "postgresql" || v.Source["txId"] != 9.0 || v.Source["table"] != "accounts" {
			t.Errorf("%s: insert as kcat reads it: %s", topic, *msgs[0].Payload)
		}
		if *msgs[0].Key != `{"id":1}` {
			t.Errorf("%s: key %q", topic, *msgs[0].Key)
		}
		h := msgs[1].Headers // [k1, v1, k2, v2, ...]
		want := []string{"walship.lsn", "2", "walship.commit_lsn", "2", "walship.txn_first_lsn", "1", "walship.lineage", "L9"}
		if strings.Join(h, ",") != strings.Join(want, ",") {
			t.Errorf("%s: delete headers %q, want %q", topic, h, want)
		}
		if msgs[2].Payload != nil || *msgs[2].Key != `{"id":1}` {
			t.Errorf("%s: third message is not the tombstone: %+v", topic, msgs[2])
		}
	}
}

func TestValidateNamesKeys(t *testing.T) {
	bad := Options{Brokers: []string{"nohost"}, Mode: "fast", Format: "avro", Compression: "brotli", Linger: -1, TopicPrefix: "a b",
		SASL: kafkawire.SASLOptions{Mechanism: "gssapi"}, TLS: kafkawire.TLSOptions{CertFile: "x"}}
	err := bad.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"kafka.brokers[0]", "kafka.mode", "kafka.format", "kafka.compression", "kafka.linger", "kafka.topic_prefix", "kafka.sasl.mechanism", "kafka.tls.cert_file"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	good := Options{Brokers: []string{"127.0.0.1:9092"}}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	if good.Mode != kafkawire.ModeOrdered || good.Compression != "zstd" || !*good.Tombstones || good.Name != "walship" || good.TopicPrefix != "walship" {
		t.Fatalf("defaults: %+v", good)
	}
	if _, err := kafkawire.ClientOptions([]string{"127.0.0.1:1"}, kafkawire.TLSOptions{CAFile: "/nonexistent"}, kafkawire.SASLOptions{}); err == nil || !strings.Contains(err.Error(), "kafka.tls.ca_file") {
		t.Fatalf("missing CA file: %v", err)
	}
}

// Jobs and their buffers are reused once their records are acknowledged:
// with a small producer buffer they are reused many times over, and every
// record must still come out exactly as encoded.
func TestOrderedRoundTripReusedBuffers(t *testing.T) {
	c := startCluster(t)
	e := newEnv(t)
	e.append(kafkatest.NewWorkload(3), 3000)
	want := e.walTxns()
	s, err := New(Options{Brokers: []string{c.Addr}, Database: "app", MaxBufferedRecords: 50, Linger: time.Millisecond}, e.w, e.ckpts, "L1")
	if err != nil {
		t.Fatal(err)
	}
	stop := runSink(t, s)
	waitAcked(t, s, want[len(want)-1].CommitLSN, 40*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	recs, err := kafkatest.ReadTopic(ctx, []string{c.Addr}, kafkawire.OrderedTopic("walship"), recordCount(want, true))
	if err != nil {
		t.Fatal(err)
	}
	sameTxns(t, rebuild(t, recs), want)
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
}

// TestKcatReadsJSONSchemas: kcat (librdkafka) reads a json-schemas topic
// written by the sink; every key and value it prints is a schema and a
// payload that match, over a workload of every supported column type.
func TestKcatReadsJSONSchemas(t *testing.T) {
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		t.Fatal("kcat not found: run scripts/deps.sh (Debian package kcat)")
	}
	c := startCluster(t)
	e := newEnv(t)
	txns := kafkatest.EveryTypeTxns(12)
	n := 0
	for i := range txns {
		e.w.Append(context.Background(), &txns[i])
		n += len(txns[i].Changes)
	}
	s, err := New(Options{Brokers: []string{c.Addr}, TopicPrefix: "ks", Format: kafkawire.FormatJSONSchemas}, e.w, e.ckpts, "L9")
	if err != nil {
		t.Fatal(err)
	}
	stop := runSink(t, s)
	waitAcked(t, s, uint64(n), 30*time.Second)
	stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, kcat, "-C", "-b", c.Addr, "-t", kafkawire.OrderedTopic("ks"), "-o", "beginning", "-e", "-q", "-J").CombinedOutput()
	if err != nil {
		t.Fatalf("kcat: %v\n%s", err, out)
	}
	var values, timestamps int
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var m struct {
			Key     *string `json:"key"`
			Payload *string `json:"payload"`
		}
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("kcat line %q: %v", l, err)
		}
		for _, b := range []*string{m.Key, m.Payload} {
			if b == nil {
				continue
			}
			if err := kafkatest.CheckSchemaPayload([]byte(*b)); err != nil {
				t.Fatalf("%v\n%s", err, *b)
			}
		}
		if m.Payload != nil {
			values++
			if strings.Contains(*m.Payload, `"name":"io.debezium.time.MicroTimestamp"`) {
				timestamps++
			}
		}
	}
	if values != n || timestamps == 0 {
		t.Fatalf("kcat read %d values (%d with a MicroTimestamp), want %d", values, timestamps, n)
	}
}
