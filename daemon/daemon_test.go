package daemon

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/walship/walship/archive"
	"github.com/walship/walship/checkpoint"
	"github.com/walship/walship/internal/logx"
	"github.com/walship/walship/kafkasink/kafkatest"
	"github.com/walship/walship/kafkawire"
	"github.com/walship/walship/replica"
	"github.com/walship/walship/vfs"

	"github.com/walship/walship/change"
	"github.com/walship/walship/config"
	"github.com/walship/walship/wal"
)

func testConfig(t *testing.T, extra string) *config.Config {
	t.Helper()
	y := fmt.Sprintf("wal: {dir: %q, segment_size: 1MiB}\nsource:\n  http: {listen: \"127.0.0.1:0\"}\nhttp: {listen: \"127.0.0.1:0\"}\n%s", t.TempDir(), extra)
	cfg, err := config.Parse([]byte(y), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

type running struct {
	d      *Daemon
	cancel context.CancelFunc
	done   chan error
}

func start(t *testing.T, cfg *config.Config) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var logger *slog.Logger
	if os.Getenv("WALSHIP_TEST_LOG") != "" { // debugging a test: the daemon's log on stderr
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("config", cfg.Path, "wal", cfg.WAL.Dir)
	}
	d, err := New(ctx, cfg, logger)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	r := &running{d: d, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- d.Run(ctx) }()
	<-d.Ready()
	return r
}

func (r *running) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("daemon did not stop")
	}
}

func appendN(t *testing.T, addr string, from, n int) {
	t.Helper()
	var b strings.Builder
	for i := from; i < from+n; i++ {
		fmt.Fprintf(&b, `{"table":"public.t","op":"c","key":{"id":%d},"after":{"id":%d,"pad":%q}}`+"\n", i, i, strings.Repeat("x", 200))
	}
	resp, err := http.Post("http://"+addr+"/v1/append", "application/x-ndjson", strings.NewReader(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || strings.Count(string(body), "\n") != n {
		t.Fatalf("append: %d %s", resp.StatusCode, body)
	}
}

func logIDs(t *testing.T, dir string) []int64 {
	t.Helper()
	l, _, err := wal.OpenReadOnly(nil, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	r, err := l.NewReader(l.FirstLSN(), false)
	if err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for {
		txn, err := r.Next(context.Background())
		if err == io.EOF {
			return ids
		}
		if err != nil {
			t.Fatal(err)
		}
		v, _ := txn.Changes[0].After.Get("id")
		id, _ := v.Int()
		ids = append(ids, id)
	}
}

// TestShutdownAndResume: what the HTTP source acknowledged survives a
// graceful stop, and a restart continues the same log.
func TestShutdownAndResume(t *testing.T) {
	cfg := testConfig(t, "")
	r := start(t, cfg)
	appendN(t, r.d.Addr("source.http"), 0, 100)
	r.stop(t)

	r = start(t, cfg)
	appendN(t, r.d.Addr("source.http"), 100, 50)
	resp, err := http.Get("http://" + r.d.Addr("http") + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/readyz = %d", resp.StatusCode)
	}
	r.stop(t)

	ids := logIDs(t, cfg.WAL.Dir)
	if len(ids) != 150 {
		t.Fatalf("log has %d transactions, want 150", len(ids))
	}
	for i, id := range ids {
		if id != int64(i) {
			t.Fatalf("transaction %d has id %d", i, id)
		}
	}
}

func TestStartErrorsNameTheKey(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := testConfig(t, "")
	cfg.Source.HTTP.Listen = ln.Addr().String()
	_, err = New(context.Background(), cfg, nil)
	if err == nil || !strings.Contains(err.Error(), "source.http.listen "+ln.Addr().String()) {
		t.Fatalf("err = %v", err)
	}
	// The failed start released the WAL: a second start works.
	cfg.Source.HTTP.Listen = "127.0.0.1:0"
	start(t, cfg).stop(t)

	cfg = testConfig(t, "")
	cfg.Source.HTTP = nil
	if _, err := New(context.Background(), cfg, nil); err == nil || !strings.Contains(err.Error(), "needs a source") {
		t.Fatalf("err = %v", err)
	}
}

// TestRetentionFollowsSinks: segments are removed only below every sink's
// checkpoint; over max_bytes, "keep" keeps and reports, "drop" removes.
func TestRetentionFollowsSinks(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t, "")
	d, err := New(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.closeAll()
	big := change.TextValue(strings.Repeat("y", 4000))
	for i := range 2000 {
		txn := change.Txn{Changes: []change.Change{{Table: change.Table{Schema: "public", Name: "t"}, Op: change.Insert,
			After: change.Row{{Name: "id", Value: change.IntValue(int64(i))}, {Name: "v", Value: big}}}}}
		if _, err := d.wal.AppendAsync(ctx, &txn); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.wal.Wait(ctx, 2000); err != nil {
		t.Fatal(err)
	}
	nsegs := len(d.wal.Segments())
	if nsegs < 5 {
		t.Fatalf("only %d segments", nsegs)
	}
	for _, s := range []string{"archive", "kafka"} {
		d.sinkCkpts.Register(s)
	}
	d.sinkCkpts.Set(ctx, "archive", 1500, nil)
	// kafka at 0: nothing may go.
	if err := d.retention.once(); err != nil {
		t.Fatal(err)
	}
	if got := len(d.wal.Segments()); got != nsegs {
		t.Fatalf("removed segments while a sink is at 0: %d -> %d", nsegs, got)
	}
	d.sinkCkpts.Set(ctx, "kafka", 700, nil)
	if err := d.retention.once(); err != nil {
		t.Fatal(err)
	}
	segs := d.wal.Segments()
	if len(segs) >= nsegs || segs[0].BaseLSN > 701 || (len(segs) > 1 && segs[1].BaseLSN <= 701) {
		t.Fatalf("after sinks at 700/1500: segments start at %d (%d left of %d)", segs[0].BaseLSN, len(segs), nsegs)
	}

	// Over the bound with policy keep: nothing a sink needs goes; reported.
	d.retention.cfg.MaxBytes = 2 << 20
	before := len(d.wal.Segments())
	if err := d.retention.once(); err != nil {
		t.Fatal(err)
	}
	if len(d.wal.Segments()) != before || !d.retention.overLimit.Load() {
		t.Fatalf("keep: segments %d -> %d, overLimit %v", before, len(d.wal.Segments()), d.retention.overLimit.Load())
	}
	// Policy drop: removed down to the bound, counted as forced.
	d.retention.cfg.RetentionPolicy = "drop"
	if err := d.retention.once(); err != nil {
		t.Fatal(err)
	}
	if n := len(d.wal.Segments()); n >= before || d.retention.forcedDrop.Load() == 0 {
		t.Fatalf("drop: segments %d -> %d, forced %d", before, n, d.retention.forcedDrop.Load())
	}
	if d.retention.walBytes.Load() > 2<<20 {
		t.Fatalf("wal bytes %d over the bound", d.retention.walBytes.Load())
	}
}

// TestSinks runs the daemon with a directory archive and a Kafka sink (an
// in-process broker): everything appended over HTTP reaches both, and both
// checkpoints pass the last LSN, so retention may follow.
func TestSinks(t *testing.T) {
	kc, err := kafkatest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	arch := t.TempDir()
	cfg := testConfig(t, fmt.Sprintf("archive: {url: \"file://%s\", timeout: 200ms, snapshot_interval: 300ms}\nkafka: {brokers: [%q], topic_prefix: t}\n", arch, kc.Addr))
	r := start(t, cfg)
	appendN(t, r.d.Addr("source.http"), 0, 300)
	last := r.d.wal.Durable()
	deadline := time.Now().Add(20 * time.Second)
	for {
		p := r.d.Positions()
		if p.Sinks["archive"] >= last && p.Sinks["kafka"] >= last {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sinks did not reach LSN %d: %+v", last, p)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The metrics moved (they are polled every pollInterval: look until
	// a poll has seen the final positions), and the status page renders
	// the pipeline.
	wantMetrics := map[string]float64{
		"walship_wal_records_total":                  float64(last),
		"walship_wal_visible_lsn":                    float64(last),
		`walship_sink_position_lsn{sink="kafka"}`:    float64(last),
		"walship_archive_position_lsn":               float64(last),
		`walship_source_position_lsn{source="http"}`: float64(last),
	}
	var m map[string]float64
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(pollInterval / 4) {
		m = scrape(t, "http://"+r.d.Addr("http")+"/metrics")
		stale := 0
		for name, want := range wantMetrics {
			if m[name] != want {
				stale++
			}
		}
		if stale == 0 || time.Now().After(deadline) {
			break
		}
	}
	for name, want := range wantMetrics {
		if m[name] != want {
			t.Errorf("metric %s = %v, want %v", name, m[name], want)
		}
	}
	if m["walship_wal_fsync_seconds_count"] < 1 {
		t.Errorf("no fsync observed: %v", m["walship_wal_fsync_seconds_count"])
	}
	page := get(t, "http://"+r.d.Addr("http")+"/status.json")
	for _, want := range []string{`"kind":"http"`, `"name":"t.ordered"`, `"name":"main"`, fmt.Sprintf(`"visible_lsn":%d`, last)} {
		if !strings.Contains(page, want) {
			t.Errorf("/status.json lacks %s:\n%s", want, page)
		}
	}
	// A base snapshot is taken every 300ms once the archive holds what it
	// reflects: wait for one before stopping (on a loaded machine the run
	// above can end before the first).
	for deadline := time.Now().Add(60 * time.Second); r.d.snapshotter.Last().LSN == 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no base snapshot stored within 60s (snapshot_interval 300ms)")
		}
	}
	r.stop(t)

	a, err := archive.Open(context.Background(), "file://"+arch, archive.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cat, err := a.Catalog(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	lin := cat.Lineage(Lineage)
	if lin == nil || !cat.Intact() || lin.FirstLSN() != 1 || lin.LastLSN() != last {
		t.Fatalf("archive catalog: intact=%v lineage=%+v", cat.Intact(), lin)
	}
	if len(lin.Snapshots) == 0 || lin.Snapshots[len(lin.Snapshots)-1].LSN > last {
		t.Fatalf("no base snapshot stored (snapshot_interval 300ms): %+v", lin.Snapshots)
	}
	recs, err := kafkatest.ReadTopic(context.Background(), []string{kc.Addr}, kafkawire.OrderedTopic("t"), int(last))
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != int(last) {
		t.Fatalf("kafka has %d records, want %d", len(recs), last)
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := (&http.Client{Timeout: 60 * time.Second}).Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return string(b)
}

// scrape returns the samples of a Prometheus text exposition by
// "name{labels}".
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, line := range strings.Split(get(t, url), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		var v float64
		fmt.Sscan(line[i+1:], &v)
		out[line[:i]] = v
	}
	return out
}

// TestConsume: walship run ships to Kafka, walship consume applies to a
// SQLite replica; /v1/wait answers once the LSN is applied, and the replica
// holds exactly the appended rows.
func TestConsume(t *testing.T) {
	kc, err := kafkatest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	cfg := testConfig(t, fmt.Sprintf("kafka: {brokers: [%q], topic_prefix: c}\n", kc.Addr))
	r := start(t, cfg)
	defer r.stop(t)
	appendN(t, r.d.Addr("source.http"), 0, 200)
	last := r.d.wal.Durable()

	db := filepath.Join(t.TempDir(), "replica.db")
	ccfg, err := config.Parse([]byte(fmt.Sprintf("kafka: {brokers: [%q], topic_prefix: c}\nreplica: {url: \"sqlite://%s\"}\nhttp: {listen: \"127.0.0.1:0\"}\n", kc.Addr, db)), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cd, err := NewConsume(ctx, ccfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cd.Run(ctx) }()
	get(t, fmt.Sprintf("http://%s/v1/wait?lsn=%d&timeout=20s", cd.Addr(), last))
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("consume: %v", err)
	}
	tables, err := replica.Dump(context.Background(), "sqlite://"+db)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(tables["t"]); n != 200 {
		t.Fatalf("replica table t has %d rows, want 200 (tables: %v)", n, len(tables))
	}
	st, err := replica.ReadState(context.Background(), "sqlite://"+db)
	if err != nil {
		t.Fatal(err)
	}
	if st.LSN != last || st.Txns != 200 {
		t.Fatalf("replica state %+v, want lsn %d and 200 transactions applied once each", st, last)
	}
}

// TestNoSecretsLeak: a DSN password, S3 secret key and listener token from
// the config appear in no log line, no error and no page.
func TestNoSecretsLeak(t *testing.T) {
	const pw, s3key, token = "pw-Zq81-secret", "s3-Kx92-secret", "tok-Lp33-secret-0123456789"
	var logs syncBuf
	logger, err := logx.New(logx.Options{Format: "json", Level: "debug", Writer: &logs})
	if err != nil {
		t.Fatal(err)
	}
	// A Postgres source that cannot connect: the error names the DSN.
	y := fmt.Sprintf("wal: {dir: %q}\nsource:\n  postgres: {dsn: \"postgres://walship:%s@127.0.0.1:1/db?connect_timeout=2\"}\n"+
		"archive: {url: \"file://%s\", s3: {access_key: AKIA, secret_key: %q}}\nhttp: {listen: \"127.0.0.1:0\"}\n", t.TempDir(), pw, t.TempDir(), s3key)
	cfg, err := config.Parse([]byte(y), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	cfg.HTTP.Token = token
	var runErr error
	d, err := New(context.Background(), cfg, logger)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		done := make(chan error, 1)
		go func() { done <- d.Run(ctx) }()
		<-d.Ready()
		req, _ := http.NewRequest("GET", "http://"+d.Addr("http")+"/status.json", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			logs.Write(b) // checked with the logs below
		}
		runErr = <-done
		cancel()
	} else {
		runErr = err
	}
	if runErr == nil {
		t.Fatal("a Postgres source on a closed port did not fail")
	}
	all := logs.String() + "\n" + runErr.Error()
	for _, s := range []string{pw, s3key, token} {
		if strings.Contains(all, s) {
			t.Fatalf("secret %q leaked:\n%s", s, all)
		}
	}
	if !strings.Contains(all, "127.0.0.1:1") {
		t.Fatalf("the error does not say what failed:\n%s", all)
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRefusesLogBehindSinks: a log that ends before what a sink has
// shipped (recovery cut acknowledged records, or an old copy) is refused
// before any LSN could be reused.
func TestRefusesLogBehindSinks(t *testing.T) {
	cfg := testConfig(t, "")
	r := start(t, cfg)
	appendN(t, r.d.Addr("source.http"), 0, 10)
	end := r.d.wal.Durable()
	r.stop(t)
	ck, err := checkpoint.Open(context.Background(), vfs.Default, filepath.Join(cfg.WAL.Dir, "checkpoints", "sinks"), checkpoint.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := ck.Set(context.Background(), "kafka", end+3, nil); err != nil {
		t.Fatal(err)
	}
	_, err = New(context.Background(), cfg, nil)
	want := fmt.Sprintf("ends at LSN %d, but sink \"kafka\" has already shipped up to LSN %d", end, end+3)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v, want it to say %q", err, want)
	}
	// At (not beyond) the end is fine.
	if err := ck.SetBackward(context.Background(), "kafka", end, nil); err != nil {
		t.Fatal(err)
	}
	start(t, cfg).stop(t)
}
