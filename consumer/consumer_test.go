package consumer

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/walship/walship/change"
	"github.com/walship/walship/checkpoint"
	"github.com/walship/walship/internal/pgtest"
	"github.com/walship/walship/kafkasink"
	"github.com/walship/walship/kafkasink/kafkatest"
	"github.com/walship/walship/kafkawire"
	"github.com/walship/walship/replica"
	"github.com/walship/walship/vfs"
	"github.com/walship/walship/wal"
)

// ---- helpers shared with the kill test ----

func openWAL(dir string) (*wal.WAL, error) {
	w, _, err := wal.Open(wal.Options{Dir: filepath.Join(dir, "wal")})
	return w, err
}

func readWAL(t *testing.T, w *wal.WAL) []change.Committed {
	t.Helper()
	rd, err := w.NewReader(1, false)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	var out []change.Committed
	for {
		txn, err := rd.Next(context.Background())
		if err != nil {
			return out
		}
		out = append(out, *txn)
	}
}

// testLogger returns a logger writing to t's log until the test ends (a
// log line after that would panic).
func testLogger(t *testing.T) *slog.Logger {
	tw := &testWriter{t: t}
	t.Cleanup(func() { tw.mu.Lock(); tw.done = true; tw.mu.Unlock() })
	return slog.New(slog.NewTextHandler(tw, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct {
	t    *testing.T
	mu   sync.Mutex
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

// startSink runs a sink over w until the test ends. Run must only end
// because the test does: any other error fails the test.
func startSink(t *testing.T, dir string, w *wal.WAL, brokers []string) *kafkasink.Sink {
	t.Helper()
	return startSinkFormat(t, dir, w, brokers, "")
}

// startSinkFormat is startSink writing records in format (kafka.format).
func startSinkFormat(t *testing.T, dir string, w *wal.WAL, brokers []string, format string) *kafkasink.Sink {
	t.Helper()
	ck, err := checkpoint.Open(context.Background(), vfs.Default, filepath.Join(dir, "ckpt"), checkpoint.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := kafkasink.New(kafkasink.Options{Brokers: brokers, Database: "app", Format: format, Logger: testLogger(t)}, w, ck, "L1")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := s.Run(ctx); ctx.Err() == nil || !errors.Is(err, context.Canceled) {
			t.Errorf("sink Run ended early: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return s
}

// startConsumer runs a consumer until the returned stop is called (or the
// test ends); stop returns Run's error.
func startConsumer(t *testing.T, cfg Options) (*Consumer, func() error) {
	t.Helper()
	c, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		err := c.Run(ctx)
		if ctx.Err() == nil {
			t.Errorf("consumer Run ended early: %v", err)
		}
		errc <- err
	}()
	stopped := false
	var runErr error
	stop := func() error {
		if !stopped {
			stopped = true
			cancel()
			runErr = <-errc
			c.Close()
		}
		return runErr
	}
	t.Cleanup(func() { stop() })
	return c, stop
}

func waitApplied(t *testing.T, c *Consumer, lsn uint64, within time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	if err := c.WaitApplied(ctx, lsn); err != nil {
		t.Fatalf("replica at %d after %v, want %d: %+v", c.Stats().AppliedLSN, within, lsn, c.Stats())
	}
}

// applyDirect builds the expected replica: the WAL applied straight through
// the Applier, no Kafka in between.
func applyDirect(t *testing.T, url string, txns []change.Committed) {
	t.Helper()
	ap, err := replica.Open(context.Background(), url, replica.Options{Lineage: "L1"})
	if err != nil {
		t.Fatal(err)
	}
	defer ap.Close()
	if err := ap.Apply(context.Background(), txns); err != nil {
		t.Fatal(err)
	}
}

// dump returns every user table of a replica, rows sorted, and the
// bookkeeping row's LSN and transaction count. It is this package's own
// reader (no replica API for it), so it reads SQL directly.
func dump(t *testing.T, url string) (tables string, lsn, txns uint64) {
	t.Helper()
	ctx := context.Background()
	kind, path, err := replica.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	type querier func(q string) ([][]any, error)
	var query querier
	var listTables string
	if kind == "sqlite" {
		db, err := sql.Open("sqlite", path)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		query = func(q string) ([][]any, error) {
			rows, err := db.QueryContext(ctx, q)
			if err != nil {
				return nil, err
			}
			defer rows.Close()
			cols, _ := rows.Columns()
			var out [][]any
			for rows.Next() {
				vals := make([]any, len(cols))
				ptrs := make([]any, len(cols))
				for i := range vals {
					ptrs[i] = &vals[i]
				}
				if err := rows.Scan(ptrs...); err != nil {
					return nil, err
				}
				out = append(out, vals)
			}
			return out, rows.Err()
		}
		listTables = `SELECT '', name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'walship\_%' ESCAPE '\' AND name NOT LIKE 'sqlite\_%' ESCAPE '\' ORDER BY name`
	} else {
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		query = func(q string) ([][]any, error) {
			rows, err := conn.Query(ctx, q)
			if err != nil {
				return nil, err
			}
			defer rows.Close()
			var out [][]any
			for rows.Next() {
				v, err := rows.Values()
				if err != nil {
					return nil, err
				}
				out = append(out, v)
			}
			return out, rows.Err()
		}
		listTables = `SELECT table_schema::text, table_name::text FROM information_schema.tables WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND table_name NOT LIKE 'walship\_%' ORDER BY 1, 2`
	}
	names, err := query(listTables)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, n := range names {
		qname := `"` + strings.ReplaceAll(fmt.Sprint(n[1]), `"`, `""`) + `"`
		if s := fmt.Sprint(n[0]); s != "" {
			qname = `"` + strings.ReplaceAll(s, `"`, `""`) + `".` + qname
		}
		rows, err := query("SELECT * FROM " + qname)
		if err != nil {
			t.Fatal(err)
		}
		lines := make([]string, len(rows))
		for i, r := range rows {
			lines[i] = fmt.Sprintf("%#v", r)
		}
		sort.Strings(lines)
		fmt.Fprintf(&b, "table %s (%d rows)\n%s\n", qname, len(rows), strings.Join(lines, "\n"))
	}
	st, err := query(`SELECT lsn, txns FROM walship_applied`)
	if err != nil || len(st) != 1 {
		t.Fatalf("walship_applied: %v %v", st, err)
	}
	return b.String(), toU(st[0][0]), toU(st[0][1])
}

func toU(v any) uint64 {
	switch x := v.(type) {
	case int64:
		return uint64(x)
	case int32:
		return uint64(x)
	}
	var u uint64
	fmt.Sscan(fmt.Sprint(v), &u)
	return u
}

// sameReplica checks that the replica built through Kafka equals the one
// built straight from the WAL, and that each transaction was applied once.
func sameReplica(t *testing.T, got, want string, txns []change.Committed) {
	t.Helper()
	g, glsn, gtxns := dump(t, got)
	w, wlsn, wtxns := dump(t, want)
	if g != w {
		t.Fatalf("replica through Kafka differs from the WAL applied directly:\n--- got\n%.3000s\n--- want\n%.3000s", g, w)
	}
	last := txns[len(txns)-1].CommitLSN
	if glsn != last || wlsn != last {
		t.Fatalf("positions %d (kafka) and %d (direct), want %d", glsn, wlsn, last)
	}
	if gtxns != uint64(len(txns)) || wtxns != uint64(len(txns)) {
		t.Fatalf("walship_applied counts %d transactions (direct: %d), the source has %d: applied twice or lost", gtxns, wtxns, len(txns))
	}
	if !strings.Contains(g, "accounts") {
		t.Fatalf("no accounts table in the replica:\n%.2000s", g)
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

func roundTrip(t *testing.T, gotURL, wantURL string) {
	roundTripFormat(t, gotURL, wantURL, "")
}

// roundTripFormat is roundTrip with the sink writing format; json-schemas
// adds transactions over a table with a column of every supported type.
func roundTripFormat(t *testing.T, gotURL, wantURL, format string) {
	kc := startCluster(t)
	dir := t.TempDir()
	w, err := openWAL(dir)
	if err != nil {
		t.Fatal(err)
	}
	// Closed after the sink has stopped (cleanups run last-in first-out).
	t.Cleanup(func() { w.Close() })
	wl := kafkatest.NewWorkload(11)
	for range 300 {
		txn := wl.Next()
		if _, err := w.Append(context.Background(), &txn); err != nil {
			t.Fatal(err)
		}
	}
	if format == kafkawire.FormatJSONSchemas {
		for _, txn := range kafkatest.EveryTypeTxns(30) {
			if _, err := w.Append(context.Background(), &txn); err != nil {
				t.Fatal(err)
			}
		}
	}
	startSinkFormat(t, dir, w, []string{kc.Addr}, format)
	c, _ := startConsumer(t, Options{Brokers: []string{kc.Addr}, ReplicaURL: gotURL, Lineage: "L1", MaxBatchTxns: 64})
	txns := readWAL(t, w)
	waitApplied(t, c, txns[len(txns)-1].CommitLSN, 30*time.Second)
	applyDirect(t, wantURL, txns)
	sameReplica(t, gotURL, wantURL, txns)
	st := c.Stats()
	if st.Txns != uint64(len(txns)) || st.LagRecords != 0 || st.LagSeconds != 0 {
		t.Fatalf("stats after catching up: %+v (want %d txns, no lag)", st, len(txns))
	}

	// Read-your-writes.
	srv := httptest.NewServer(c.WaitHandler())
	defer srv.Close()
	get := func(q string) (int, map[string]any) {
		resp, err := http.Get(srv.URL + "/v1/wait?" + q)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var v map[string]any
		b, _ := io.ReadAll(resp.Body)
		json.Unmarshal(b, &v)
		return resp.StatusCode, v
	}
	last := txns[len(txns)-1].CommitLSN
	if code, v := get(fmt.Sprintf("lsn=%d", last)); code != 200 || v["applied"] != float64(last) {
		t.Fatalf("wait for an applied LSN: %d %v", code, v)
	}
	if code, v := get(fmt.Sprintf("lsn=%d&timeout=100ms", last+1)); code != 504 || !strings.Contains(fmt.Sprint(v["error"]), "not applied") {
		t.Fatalf("wait for a future LSN: %d %v", code, v)
	}
	for _, q := range []string{"lsn=x", "", "lsn=5&timeout=forever", "lsn=5&timeout=-1s"} {
		if code, v := get(q); code != 400 || v["error"] == nil {
			t.Fatalf("?%s: %d %v, want 400 with an error", q, code, v)
		}
	}
	// A write that lands later releases a waiting client.
	done := make(chan int, 1)
	go func() { code, _ := get(fmt.Sprintf("lsn=%d&timeout=20s", last+1)); done <- code }()
	time.Sleep(50 * time.Millisecond)
	txn := wl.Next()
	if _, err := w.Append(context.Background(), &txn); err != nil {
		t.Fatal(err)
	}
	if code := <-done; code != 200 {
		t.Fatalf("wait across a new write: %d", code)
	}
}

func TestRoundTripSQLite(t *testing.T) {
	dir := t.TempDir()
	roundTrip(t, "sqlite://"+filepath.Join(dir, "got.db"), "sqlite://"+filepath.Join(dir, "want.db"))
}

// TestRoundTripSQLiteJSONSchemas: walship consume applies a json-schemas
// topic to SQLite, which then equals the source.
func TestRoundTripSQLiteJSONSchemas(t *testing.T) {
	dir := t.TempDir()
	roundTripFormat(t, "sqlite://"+filepath.Join(dir, "got.db"), "sqlite://"+filepath.Join(dir, "want.db"), kafkawire.FormatJSONSchemas)
}

func TestRoundTripPostgres(t *testing.T) {
	pg := pgtest.Start(t, pgtest.WithoutFsync())
	ctx := context.Background()
	for _, db := range []string{"got", "want"} {
		if err := pg.CreateDB(ctx, db); err != nil {
			t.Fatal(err)
		}
	}
	roundTrip(t, pg.DSN("got"), pg.DSN("want"))
}

// TestReplicaDecidesStart: a fresh replica joining a group whose committed
// offset is at the end of the topic still gets everything — the start
// comes from the replica's position, not from Kafka's group offset. A
// replica halfway through starts by binary search without the group.
func TestReplicaDecidesStart(t *testing.T) {
	kc := startCluster(t)
	dir := t.TempDir()
	w, err := openWAL(dir)
	if err != nil {
		t.Fatal(err)
	}
	// Closed after the sink has stopped (cleanups run last-in first-out).
	t.Cleanup(func() { w.Close() })
	wl := kafkatest.NewWorkload(12)
	for range 200 {
		txn := wl.Next()
		w.Append(context.Background(), &txn)
	}
	startSink(t, dir, w, []string{kc.Addr})
	txns := readWAL(t, w)
	last := txns[len(txns)-1].CommitLSN
	urlA := "sqlite://" + filepath.Join(dir, "a.db")
	c, stop := startConsumer(t, Options{Brokers: []string{kc.Addr}, ReplicaURL: urlA, Group: "g"})
	waitApplied(t, c, last, 30*time.Second)
	stop()

	urlB := "sqlite://" + filepath.Join(dir, "b.db")
	c, stop = startConsumer(t, Options{Brokers: []string{kc.Addr}, ReplicaURL: urlB, Group: "g"})
	waitApplied(t, c, last, 30*time.Second)
	stop()
	sameReplica(t, urlB, urlA, txns)

	// Replica C: the first half applied directly, then a new group.
	urlC := "sqlite://" + filepath.Join(dir, "c.db")
	applyDirect(t, urlC, txns[:100])
	c, stop = startConsumer(t, Options{Brokers: []string{kc.Addr}, ReplicaURL: urlC, Group: "fresh"})
	waitApplied(t, c, last, 30*time.Second)
	if st := c.Stats(); st.Txns != uint64(len(txns)-100) {
		t.Fatalf("consumer applied %d transactions, want %d (the rest)", st.Txns, len(txns)-100)
	}
	stop()
	sameReplica(t, urlC, urlA, txns)
}

func TestValidate(t *testing.T) {
	cfg := Options{Brokers: []string{"x"}, ReplicaURL: "mysql://x", MaxBatchTxns: -1}
	err := cfg.Validate()
	for _, want := range []string{"kafka.brokers[0]", "replica.url", "replica.max_batch_txns"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not name %s", err, want)
		}
	}
	ok := Options{Brokers: []string{"127.0.0.1:1"}, ReplicaURL: "sqlite:///tmp/x.db"}
	if err := ok.Validate(); err != nil || ok.Topic != "walship.ordered" || ok.Group != DefaultGroup {
		t.Fatalf("%v %+v", err, ok)
	}
}

func TestMain(m *testing.M) {
	if role := os.Getenv(childEnv); role != "" {
		os.Exit(childMain(role))
	}
	os.Exit(m.Run())
}

// TestBrokerOutage cuts the consumer (and the sink) off the broker while
// the WAL keeps growing; once the broker is back the replica catches up
// and equals the WAL, each transaction applied once.
func TestBrokerOutage(t *testing.T) {
	kc, proxy, err := kafkatest.StartBehindProxy()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close(); kc.Close() })
	dir := t.TempDir()
	w, err := openWAL(dir)
	if err != nil {
		t.Fatal(err)
	}
	// Closed after the sink has stopped (cleanups run last-in first-out).
	t.Cleanup(func() { w.Close() })
	wl := kafkatest.NewWorkload(13)
	wl.NoKinds = true
	appendN := func(n int) {
		for range n {
			txn := wl.Next()
			if _, err := w.Append(context.Background(), &txn); err != nil {
				t.Fatal(err)
			}
		}
	}
	appendN(100)
	s := startSink(t, dir, w, []string{proxy.Addr})
	url := "sqlite://" + filepath.Join(dir, "got.db")
	c, _ := startConsumer(t, Options{Brokers: []string{proxy.Addr}, ReplicaURL: url, Lineage: "L1", SessionTimeout: time.Second, Logger: testLogger(t)})
	waitApplied(t, c, readWAL(t, w)[99].CommitLSN, 30*time.Second)
	for range 3 {
		retries := s.Stats().Retries
		proxy.Down()
		appendN(200)
		// The outage lasts until the sink has failed to reach the broker
		// with the backlog in hand.
		for deadline := time.Now().Add(30 * time.Second); s.Stats().Retries == retries; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("the sink saw no broker error in 30s of outage: %+v", s.Stats())
			}
		}
		if err := proxy.Up(); err != nil {
			t.Fatal(err)
		}
		appendN(50)
	}
	txns := readWAL(t, w)
	waitApplied(t, c, txns[len(txns)-1].CommitLSN, 60*time.Second)
	want := "sqlite://" + filepath.Join(dir, "want.db")
	applyDirect(t, want, txns)
	sameReplica(t, url, want, txns)
}

// TestGapAndLineageStop: a replica whose next transaction was removed from
// the topic (Kafka retention, simulated with DeleteRecords) stops with
// kafkawire.ErrGap instead of skipping it; records of another lineage stop
// the consumer too.
func TestGapAndLineageStop(t *testing.T) {
	kc := startCluster(t)
	dir := t.TempDir()
	w, err := openWAL(dir)
	if err != nil {
		t.Fatal(err)
	}
	// Closed after the sink has stopped (cleanups run last-in first-out).
	t.Cleanup(func() { w.Close() })
	wl := kafkatest.NewWorkload(14)
	wl.NoKinds = true
	for range 50 {
		txn := wl.Next()
		w.Append(context.Background(), &txn)
	}
	s := startSink(t, dir, w, []string{kc.Addr})
	txns := readWAL(t, w)
	for s.Stats().CheckpointLSN < txns[len(txns)-1].CommitLSN {
		time.Sleep(10 * time.Millisecond)
	}
	url := "sqlite://" + filepath.Join(dir, "r.db")
	applyDirect(t, url, txns[:10])
	// Drop the first half of the topic: the replica needs what follows
	// txns[9], which is gone.
	cl, err := kgo.NewClient(kgo.SeedBrokers(kc.Addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var offs kadm.Offsets
	offs.Add(kadm.Offset{Topic: kafkawire.OrderedTopic("walship"), Partition: 0, At: 100})
	if _, err := kadm.NewClient(cl).DeleteRecords(context.Background(), offs); err != nil {
		t.Fatal(err)
	}
	c, err := New(context.Background(), Options{Brokers: []string{kc.Addr}, ReplicaURL: url, Lineage: "L1", Group: "gap"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = c.Run(ctx)
	c.Close()
	if !errors.Is(err, kafkawire.ErrGap) {
		t.Fatalf("Run = %v, want ErrGap", err)
	}
	if st, _, _ := dump(t, url); !strings.Contains(st, "accounts") {
		t.Fatalf("replica changed")
	}
	if _, lsn, txnCount := dump(t, url); lsn != txns[9].CommitLSN || txnCount != 10 {
		t.Fatalf("replica at %d with %d txns after the gap, want %d and 10", lsn, txnCount, txns[9].CommitLSN)
	}

	// Another lineage: a fresh replica of lineage L2 reading L1's records.
	c, err = New(context.Background(), Options{Brokers: []string{kc.Addr}, ReplicaURL: "sqlite://" + filepath.Join(dir, "l2.db"), Lineage: "L2", Group: "l2"})
	if err != nil {
		t.Fatal(err)
	}
	err = c.Run(ctx)
	c.Close()
	if err == nil || !strings.Contains(err.Error(), `lineage "L1", want "L2"`) {
		t.Fatalf("Run across lineages = %v", err)
	}
}

// TestStartAtDelete: a replica whose next transaction begins with a delete
// must start at the delete's record, not at the tombstone that follows it
// with the same LSN: starting there skips the delete, and the rest of the
// transaction stops the consumer with a gap. Both ways of finding the start
// are covered: the binary search (no group offset), and a group offset
// committed by a replica further ahead, pointing at such a tombstone.
func TestStartAtDelete(t *testing.T) {
	kc := startCluster(t)
	dir := t.TempDir()
	w, err := openWAL(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	wl := kafkatest.NewWorkload(13)
	wl.NoKinds = true
	for range 150 {
		txn := wl.Next()
		if _, err := w.Append(context.Background(), &txn); err != nil {
			t.Fatal(err)
		}
	}
	txns := readWAL(t, w)
	last := txns[len(txns)-1].CommitLSN
	// The two transactions the replicas resume before: the first that
	// begins with a delete, and the first that is a single delete.
	startsWithDelete, singleDelete := -1, -1
	nrecs := 0
	for i, tx := range txns {
		if i > 0 && tx.Changes[0].Op == change.Delete {
			if startsWithDelete < 0 && len(tx.Changes) > 1 {
				startsWithDelete = i
			}
			if singleDelete < 0 && len(tx.Changes) == 1 {
				singleDelete = i
			}
		}
		for _, c := range tx.Changes {
			nrecs++
			if c.Op == change.Delete {
				nrecs++ // its tombstone
			}
		}
	}
	if startsWithDelete < 0 || singleDelete < 0 {
		t.Fatalf("workload has no transaction beginning with a delete (%d) or no single delete (%d)", startsWithDelete, singleDelete)
	}
	startSink(t, dir, w, []string{kc.Addr})
	topic := kafkawire.OrderedTopic("walship")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	recs, err := kafkatest.ReadTopic(ctx, []string{kc.Addr}, topic, nrecs)
	if err != nil {
		t.Fatal(err)
	}
	// tombstoneOf returns the offset of the tombstone of lsn.
	tombstoneOf := func(lsn uint64) int64 {
		for _, r := range recs {
			if l, _, _, _, err := kafkawire.DecodeHeaders(r); err == nil && l == lsn && r.Value == nil {
				return r.Offset
			}
		}
		t.Fatalf("no tombstone of LSN %d in %s", lsn, topic)
		return 0
	}

	// run applies the topic to a replica holding txns[:k] and fails if Run
	// stops before the replica has everything.
	run := func(t *testing.T, name string, k int, group string) {
		url := "sqlite://" + filepath.Join(dir, name+".db")
		applyDirect(t, url, txns[:k])
		c, err := New(context.Background(), Options{Brokers: []string{kc.Addr}, ReplicaURL: url, Lineage: "L1", Group: group, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		rctx, stop := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { errc <- c.Run(rctx) }()
		waited := make(chan error, 1)
		go func() {
			wctx, cancel := context.WithTimeout(rctx, 30*time.Second)
			defer cancel()
			waited <- c.WaitApplied(wctx, last)
		}()
		select {
		case err := <-errc:
			stop()
			t.Fatalf("replica at LSN %d (next transaction %d-%d begins with a delete): Run = %v before it reached %d",
				txns[k-1].CommitLSN, txns[k].FirstLSN, txns[k].CommitLSN, err, last)
		case err := <-waited:
			stop()
			if rerr := <-errc; !errors.Is(rerr, context.Canceled) {
				t.Fatalf("Run = %v, want context.Canceled", rerr)
			}
			if err != nil {
				t.Fatalf("replica at %d, want %d: %v", c.Stats().AppliedLSN, last, err)
			}
		}
		want := "sqlite://" + filepath.Join(dir, name+"-want.db")
		applyDirect(t, want, txns)
		sameReplica(t, url, want, txns)
		if st := c.Stats(); st.Txns != uint64(len(txns)-k) {
			t.Fatalf("consumer applied %d transactions, want %d (the rest)", st.Txns, len(txns)-k)
		}
	}

	t.Run("search", func(t *testing.T) {
		run(t, "search", startsWithDelete, "search")
	})
	t.Run("group-offset", func(t *testing.T) {
		// A replica that has applied the single delete committed the
		// offset after it: its tombstone.
		k := singleDelete
		cl, err := kgo.NewClient(kgo.SeedBrokers(kc.Addr))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		var offs kadm.Offsets
		offs.Add(kadm.Offset{Topic: topic, Partition: 0, At: tombstoneOf(txns[k].CommitLSN), LeaderEpoch: -1})
		if err := kadm.NewClient(cl).CommitAllOffsets(ctx, "ahead", offs); err != nil {
			t.Fatal(err)
		}
		run(t, "group", k, "ahead")
	})
	t.Run("delete-gone", func(t *testing.T) {
		// Retention removed the delete but kept its tombstone: a gap.
		k := startsWithDelete
		url := "sqlite://" + filepath.Join(dir, "gone.db")
		applyDirect(t, url, txns[:k])
		cl, err := kgo.NewClient(kgo.SeedBrokers(kc.Addr))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		var offs kadm.Offsets
		offs.Add(kadm.Offset{Topic: topic, Partition: 0, At: tombstoneOf(txns[k].FirstLSN)})
		if _, err := kadm.NewClient(cl).DeleteRecords(ctx, offs); err != nil {
			t.Fatal(err)
		}
		c, err := New(context.Background(), Options{Brokers: []string{kc.Addr}, ReplicaURL: url, Lineage: "L1", Group: "gone", Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		err = c.Run(ctx)
		if !errors.Is(err, kafkawire.ErrGap) {
			t.Fatalf("Run = %v, want ErrGap", err)
		}
		t.Logf("Run = %v", err)
	})
}
