package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/walship/walship/archivesink"
	"github.com/walship/walship/config"
	"github.com/walship/walship/httpsource"
	"github.com/walship/walship/internal/pgtest"
	"github.com/walship/walship/kafkasink/kafkatest"
	"github.com/walship/walship/kafkawire"
	"github.com/walship/walship/wal"
)

// levelWait bounds the waits for conditions in these tests: generous, only
// to catch hangs on a loaded machine.
const levelWait = 60 * time.Second

type appendResult struct {
	code   int
	header string // Walship-Sync of the answer
	body   string
}

// postOne appends one transaction (id) with the Walship-Sync header level
// ("" for none).
func postOne(t *testing.T, addr string, id int, level string) appendResult {
	t.Helper()
	body := fmt.Sprintf(`{"table":"public.t","op":"c","key":{"id":%d},"after":{"id":%d}}`+"\n", id, id)
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/append", strings.NewReader(body))
	if err != nil {
		t.Error(err)
		return appendResult{}
	}
	if level != "" {
		req.Header.Set(httpsource.SyncHeader, level)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Error(err)
		return appendResult{}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return appendResult{code: resp.StatusCode, header: resp.Header.Get(httpsource.SyncHeader), body: string(b)}
}

func ackLSN(t *testing.T, r appendResult) uint64 {
	t.Helper()
	var a struct {
		LSN uint64 `json:"lsn"`
	}
	if r.code != 200 || json.Unmarshal([]byte(r.body), &a) != nil || a.LSN == 0 {
		t.Fatalf("append: %d %q", r.code, r.body)
	}
	return a.LSN
}

// waitFor polls cond until it holds, failing after levelWait.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(levelWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, levelWait)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestShippedHTTPWaitsForKafka: with wal.sync: shipped an HTTP append is
// not answered while Kafka is down, although it is durable locally; once
// the brokers are back it is answered 200, and what was acknowledged is in
// Kafka. A request that lowers its level (Walship-Sync: local) is answered
// at once meanwhile, and the shipped level's metric shows how far it got.
func TestShippedHTTPWaitsForKafka(t *testing.T) {
	t.Parallel()
	kc, proxy, err := kafkatest.StartBehindProxy()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { proxy.Close(); kc.Close() }()
	cfg := testConfig(t, fmt.Sprintf("kafka: {brokers: [%q], topic_prefix: lv}\n", proxy.Addr))
	cfg.WAL.Sync = "shipped"
	cfg.WAL.ShippedSinks = []string{"kafka"}
	r := start(t, cfg)
	defer r.stop(t)
	src := r.d.Addr("source.http")

	first := postOne(t, src, 1, "")
	lsn1 := ackLSN(t, first)
	if first.header != "shipped" {
		t.Fatalf("answer's %s %q, want shipped", httpsource.SyncHeader, first.header)
	}
	if got := r.d.kafka.Stats().AckedLSN; got < lsn1 {
		t.Fatalf("answered 200 at LSN %d with Kafka acknowledged only up to %d", lsn1, got)
	}

	proxy.Down()
	durableBefore := r.d.wal.Durable()
	done := make(chan appendResult, 1)
	go func() { done <- postOne(t, src, 2, "") }()
	// The transaction becomes durable locally, and still no answer.
	waitFor(t, "the second transaction durable locally", func() bool { return r.d.wal.Durable() > durableBefore })
	lsn2 := r.d.wal.Durable()
	select {
	case res := <-done:
		t.Fatalf("answered while Kafka is down: %d %q", res.code, res.body)
	case <-time.After(300 * time.Millisecond):
	}
	if got := r.d.levels.Position(r.d.levels.Level()); got >= lsn2 {
		t.Fatalf("shipped level at %d past the unshipped LSN %d", got, lsn2)
	}
	// Lowering the level per request: answered once durable locally.
	local := postOne(t, src, 3, "local")
	lsn3 := ackLSN(t, local)
	if local.header != "local" {
		t.Fatalf("answer's %s %q, want local", httpsource.SyncHeader, local.header)
	}
	select {
	case res := <-done:
		t.Fatalf("answered while Kafka is down: %d %q", res.code, res.body)
	default:
	}
	// The metrics show the shipped level stopped before the transaction
	// and the local one past it.
	waitObserved(t, r.d.Addr("http"), "kafka", "levels metric with Kafka down", func(o observed) bool {
		sh := o.metrics[`walship_replication_level_lsn{level="shipped"}`]
		return sh >= float64(lsn1) && sh < float64(lsn2) && o.metrics[`walship_replication_level_lsn{level="local"}`] >= float64(lsn3)
	})

	if err := proxy.Up(); err != nil {
		t.Fatal(err)
	}
	var second appendResult
	select {
	case second = <-done:
	case <-time.After(levelWait):
		t.Fatal("no answer after Kafka came back")
	}
	if got := ackLSN(t, second); got != lsn2 {
		t.Fatalf("second answer LSN %d, want %d", got, lsn2)
	}
	// Everything acknowledged is in Kafka: one record per change, LSNs
	// 1..lsn3 in order.
	recs, err := kafkatest.ReadTopic(context.Background(), []string{kc.Addr}, kafkawire.OrderedTopic("lv"), int(lsn3))
	if err != nil {
		t.Fatal(err)
	}
	for i, rec := range recs[:lsn3] {
		got, _ := strconv.ParseUint(string(rec.Headers[0].Value), 10, 64)
		if got != uint64(i+1) {
			t.Fatalf("record %d has LSN %d, want %d", i, got, i+1)
		}
	}
	waitObserved(t, r.d.Addr("http"), "kafka", "shipped level metric caught up", func(o observed) bool {
		return o.metrics[`walship_replication_level_lsn{level="shipped"}`] == float64(lsn3) &&
			o.metrics[`walship_replication_level_lsn{level="local"}`] == float64(lsn3)
	})
}

// TestShippedTimeoutAnswers504: a request that raises its level to
// shipped (over wal.sync: local) while Kafka is down is answered 504 after
// source.http.sync_timeout, listing what is durable locally and how far
// the level got, never 200; the same request with its Idempotency-Key,
// retried once Kafka is back, gets the original LSN (nothing appended
// twice) with 200 at shipped.
func TestShippedTimeoutAnswers504(t *testing.T) {
	t.Parallel()
	kc, proxy, err := kafkatest.StartBehindProxy()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { proxy.Close(); kc.Close() }()
	cfg := testConfig(t, fmt.Sprintf("kafka: {brokers: [%q], topic_prefix: lt}\n", proxy.Addr))
	cfg.Source.HTTP.SyncTimeout = 500 * time.Millisecond
	proxy.Down()
	r := start(t, cfg)
	defer r.stop(t)
	src := r.d.Addr("source.http")

	post := func() (int, string) {
		req, _ := http.NewRequest(http.MethodPost, "http://"+src+"/v1/append",
			strings.NewReader(`{"table":"public.t","op":"c","key":{"id":1},"after":{"id":1}}`+"\n"))
		req.Header.Set(httpsource.SyncHeader, "shipped")
		req.Header.Set("Idempotency-Key", "raise-1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := post()
	if code != http.StatusGatewayTimeout {
		t.Fatalf("raised to shipped with Kafka down: %d %q, want 504", code, body)
	}
	var e struct {
		DurableLSNs []uint64 `json:"durable_lsns"`
		Level       string   `json:"level"`
		LevelLSN    *uint64  `json:"level_lsn"`
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatal(err)
	}
	durable := r.d.wal.Durable()
	if len(e.DurableLSNs) != 1 || e.DurableLSNs[0] != durable || e.Level != "shipped" || e.LevelLSN == nil || *e.LevelLSN >= durable {
		t.Fatalf("504 body %q: want durable_lsns [%d], level shipped, level_lsn below it", body, durable)
	}
	// The configured level is still local: a request without the header
	// is answered at once.
	if res := postOne(t, src, 2, ""); res.code != 200 || res.header != "local" {
		t.Fatalf("local append with Kafka down: %d %q (%s %q)", res.code, res.body, httpsource.SyncHeader, res.header)
	}

	if err := proxy.Up(); err != nil {
		t.Fatal(err)
	}
	// Retried until the brokers have it (each retry waits at most the
	// short sync_timeout, and appends nothing).
	waitFor(t, "the retry answered 200", func() bool {
		code, body = post()
		if code != 200 && code != http.StatusGatewayTimeout {
			t.Fatalf("retry: %d %q", code, body)
		}
		return code == 200
	})
	if code != 200 || !strings.HasPrefix(body, fmt.Sprintf(`{"lsn":%d,`, e.DurableLSNs[0])) {
		t.Fatalf("retry after Kafka came back: %d %q, want 200 with LSN %d", code, body, e.DurableLSNs[0])
	}
	if got := r.d.kafka.Stats().AckedLSN; got < e.DurableLSNs[0] {
		t.Fatalf("retry answered 200 with Kafka acknowledged only up to %d", got)
	}
	// Two transactions of one change each: LSNs 1 and 2, nothing more.
	if got := r.d.wal.Durable(); got != 2 {
		t.Fatalf("the log ends at LSN %d, want 2: a retry appended again", got)
	}
}

// TestShippedPostgresConfirmation: with wal.sync: shipped the replication
// slot's confirmed_flush_lsn does not pass a transaction that is durable
// in the local log but not yet in Kafka; once the brokers are back it
// does, and the transaction is in Kafka.
func TestShippedPostgresConfirmation(t *testing.T) {
	t.Parallel()
	pg := pgtest.Start(t, pgtest.WithoutFsync())
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pg.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE TABLE t (id int PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	kc, proxy, err := kafkatest.StartBehindProxy()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { proxy.Close(); kc.Close() }()
	// No heartbeats: the only transactions are the test's.
	y := fmt.Sprintf("wal: {dir: %q, sync: shipped}\nsource:\n  postgres: {dsn: %q, snapshot: never, heartbeat: 1h, status_interval: 50ms}\n"+
		"kafka: {brokers: [%q], topic_prefix: lp}\nhttp: {listen: \"127.0.0.1:0\"}\n", t.TempDir(), pg.DSN("postgres"), proxy.Addr)
	cfg, err := config.Parse([]byte(y), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, cfg)
	defer r.stop(t)
	confirmed := func() uint64 {
		var s string
		if err := conn.QueryRow(ctx, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'walship'").Scan(&s); err != nil {
			t.Fatal(err)
		}
		lsn, err := pglogrepl.ParseLSN(s)
		if err != nil {
			t.Fatal(err)
		}
		return uint64(lsn)
	}
	waitFor(t, "the slot created and streaming", func() bool {
		var n int
		err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'walship' AND active").Scan(&n)
		return err == nil && n == 1
	})
	// insert commits one transaction and returns its source commit LSN
	// once it is durable in walship's log.
	insert := func(id int) uint64 {
		t.Helper()
		before, prev := r.d.pg.Stats().Txns, r.d.wal.Durable()
		if _, err := conn.Exec(ctx, "INSERT INTO t VALUES ($1)", id); err != nil {
			t.Fatal(err)
		}
		waitFor(t, fmt.Sprintf("row %d captured", id), func() bool { return r.d.pg.Stats().Txns > before })
		waitFor(t, fmt.Sprintf("row %d durable", id), func() bool { return r.d.wal.Durable() > prev })
		return r.d.pg.Stats().LastSourceLSN
	}
	commit1 := insert(1)
	waitFor(t, "the slot confirmed past the first transaction (Kafka up)", func() bool { return confirmed() > commit1 })

	proxy.Down()
	commit2 := insert(2)
	local := r.d.wal.Durable()
	// Durable locally, not in Kafka: over many status intervals the slot
	// stays at or before the transaction's commit.
	for range 20 {
		if c := confirmed(); c > commit2 {
			t.Fatalf("slot confirmed %s, past the commit %s of a transaction not in Kafka", pglogrepl.LSN(c), pglogrepl.LSN(commit2))
		}
		if got := r.d.kafka.Stats().AckedLSN; got >= local {
			t.Fatalf("Kafka acknowledged LSN %d while down", got)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := proxy.Up(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the slot confirmed past the second transaction (Kafka back)", func() bool { return confirmed() > commit2 })
	if got := r.d.kafka.Stats().AckedLSN; got < local {
		t.Fatalf("slot confirmed with Kafka acknowledged only up to %d < %d", got, local)
	}
	recs, err := kafkatest.ReadTopic(ctx, []string{kc.Addr}, kafkawire.OrderedTopic("lp"), int(local))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := strconv.ParseUint(string(recs[local-1].Headers[0].Value), 10, 64); got != local {
		t.Fatalf("record %d in Kafka has LSN %d", local, got)
	}
}

// TestShippedArchive: with wal.sync: shipped and the archive as the only
// sink (a directory archive), an HTTP append is answered once the archive
// has stored the object holding it, not before.
func TestShippedArchive(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, fmt.Sprintf("archive: {url: \"file://%s\", timeout: 1s}\n", t.TempDir()))
	cfg.WAL.Sync = "shipped"
	if len(cfg.WAL.ShippedSinks) != 1 || cfg.WAL.ShippedSinks[0] != "archive" {
		t.Fatalf("default wal.shipped_sinks %v, want [archive]", cfg.WAL.ShippedSinks)
	}
	r := start(t, cfg)
	defer r.stop(t)
	for id := 1; id <= 3; id++ {
		res := postOne(t, r.d.Addr("source.http"), id, "")
		lsn := ackLSN(t, res)
		if res.header != "shipped" {
			t.Fatalf("answer's %s %q, want shipped", httpsource.SyncHeader, res.header)
		}
		if got := r.d.archiver.Stats().ArchivedLSN; got < lsn {
			t.Fatalf("answered 200 at LSN %d with the archive stored only up to %d", lsn, got)
		}
	}
}

// consumeNamed starts walship consume named name on kc with topic prefix
// prefix, into its own SQLite replica.
func consumeNamed(t *testing.T, kc *kafkatest.Cluster, prefix, name string) *Consume {
	t.Helper()
	return startConsume(t, fmt.Sprintf("kafka: {brokers: [%q], topic_prefix: %s}\nreplica: {url: \"sqlite://%s/r.db\"}\nconsumer: {name: %s}\nhttp: {listen: \"127.0.0.1:0\"}\n",
		kc.Addr, prefix, t.TempDir(), name))
}

// TestAppliedQuorum: with wal.sync: applied, an HTTP append is answered
// once the quorum of named walship consume processes has applied it, as
// they report on the positions topic. ANY 1 (r1, r2) is met by r1 alone;
// FIRST 2 (r1, r2) is not (504 after source.http.sync_timeout, nothing
// acknowledged) until r2 runs too, and then the same request, retried
// with its Idempotency-Key, is answered 200 with both replicas past it.
func TestAppliedQuorum(t *testing.T) {
	t.Parallel()
	kc, err := kafkatest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	run := func(prefix, quorum string) *running {
		cfg := testConfig(t, fmt.Sprintf("kafka: {brokers: [%q], topic_prefix: %s}\n", kc.Addr, prefix))
		cfg.WAL.Sync = "applied"
		cfg.WAL.AppliedQuorum = quorum
		cfg.Source.HTTP.SyncTimeout = time.Second
		return start(t, cfg)
	}
	// post appends the same keyed transaction to r's HTTP source: retries
	// append nothing.
	post := func(r *running) (int, string, string) {
		req, _ := http.NewRequest(http.MethodPost, "http://"+r.d.Addr("source.http")+"/v1/append",
			strings.NewReader(`{"table":"public.t","op":"c","key":{"id":1},"after":{"id":1}}`+"\n"))
		req.Header.Set("Idempotency-Key", "quorum-1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 && resp.StatusCode != http.StatusGatewayTimeout {
			t.Fatalf("append: %d %q", resp.StatusCode, body)
		}
		return resp.StatusCode, string(body), resp.Header.Get(httpsource.SyncHeader)
	}

	// ANY 1: one replica is enough.
	a := run("qa", "ANY 1 (r1, r2)")
	defer a.stop(t)
	r1 := consumeNamed(t, kc, "qa", "r1")
	var code int
	var body, level string
	waitFor(t, "ANY 1 answered", func() bool { code, body, level = post(a); return code == 200 })
	if !strings.HasPrefix(body, `{"lsn":1,`) || level != "applied" {
		t.Fatalf("ANY 1: %q (%s %q), want LSN 1 at applied", body, httpsource.SyncHeader, level)
	}
	if got := r1.Consumer().Stats().AppliedLSN; got < 1 {
		t.Fatalf("ANY 1 answered with r1 applied only up to %d", got)
	}

	// FIRST 2: r1 alone is not enough.
	b := run("qb", "FIRST 2 (r1, r2)")
	defer b.stop(t)
	b1 := consumeNamed(t, kc, "qb", "r1")
	code, body, _ = post(b)
	if code != http.StatusGatewayTimeout || !strings.Contains(body, `"level":"applied"`) {
		t.Fatalf("FIRST 2 with one replica: %d %q, want 504", code, body)
	}
	waitFor(t, "r1 applied the transaction", func() bool { return b1.Consumer().Stats().AppliedLSN >= 1 })
	if got := b.d.levels.Position(b.d.levels.Level()); got != 0 {
		t.Fatalf("FIRST 2 position %d with one replica", got)
	}
	b2 := consumeNamed(t, kc, "qb", "r2")
	waitFor(t, "FIRST 2 answered once r2 runs", func() bool { code, body, _ = post(b); return code == 200 })
	if !strings.HasPrefix(body, `{"lsn":1,`) {
		t.Fatalf("retry answered %q, want the original LSN 1", body)
	}
	for name, c := range map[string]*Consume{"r1": b1, "r2": b2} {
		if got := c.Consumer().Stats().AppliedLSN; got < 1 {
			t.Fatalf("FIRST 2 answered with %s applied only up to %d", name, got)
		}
	}
	if got := b.d.wal.Durable(); got != 1 {
		t.Fatalf("the log ends at LSN %d, want 1: a retry appended again", got)
	}
}

// TestShippedNotSeededFromArchiveCheckpoint: at start, shipped does not
// take the archive's word from its checkpoint: the archive may end before
// it (objects lost, the bucket rolled back), and then what lies between is
// archived again, not shipped. Only the archiver, once it has checked
// where the archive ends, reports a position.
func TestShippedNotSeededFromArchiveCheckpoint(t *testing.T) {
	t.Parallel()
	arch := t.TempDir()
	cfg := testConfig(t, fmt.Sprintf("archive: {url: \"file://%s\", timeout: 1s}\n", arch))
	cfg.WAL.Sync = "shipped"
	r := start(t, cfg)
	var last uint64
	for id := 1; id <= 3; id++ {
		last = ackLSN(t, postOne(t, r.d.Addr("source.http"), id, ""))
	}
	r.stop(t)
	// The bucket rolled back to nothing: the checkpoint still says last.
	if err := os.RemoveAll(filepath.Join(arch, Lineage, "wal")); err != nil {
		t.Fatal(err)
	}
	d, err := New(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.closeAll()
	if got := d.Positions().Sinks[archivesink.CheckpointName]; got != last {
		t.Fatalf("archive checkpoint %d, want %d (the test's premise)", got, last)
	}
	if got := d.levels.Position(wal.LevelShipped); got != 0 {
		t.Fatalf("shipped at %d before the archiver checked the archive, which holds nothing", got)
	}
}
