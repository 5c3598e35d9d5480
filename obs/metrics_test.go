package obs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/walship/walship/internal/health"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"

	"github.com/walship/walship/change"
	"github.com/walship/walship/segment"
	"github.com/walship/walship/wal"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// gather returns metric name{labels} -> value for gauges and counters and
// name_count for histograms.
func gather(t *testing.T, m *Metrics) map[string]float64 {
	t.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, mt := range mf.Metric {
			key := mf.GetName()
			if len(mt.Label) > 0 {
				var ls []string
				for _, l := range mt.Label {
					ls = append(ls, l.GetName()+"="+l.GetValue())
				}
				key += "{" + strings.Join(ls, ",") + "}"
			}
			switch mf.GetType() {
			case dto.MetricType_GAUGE:
				out[key] = mt.Gauge.GetValue()
			case dto.MetricType_COUNTER:
				out[key] = mt.Counter.GetValue()
			case dto.MetricType_HISTOGRAM:
				out[key+"_count"] = float64(mt.Histogram.GetSampleCount())
				out[key+"_sum"] = mt.Histogram.GetSampleSum()
			}
		}
	}
	return out
}

func txn(i int) *change.Txn {
	t, err := change.ParseTxnLine([]byte(fmt.Sprintf(`{"table":"public.t","op":"c","key":{"id":%d},"after":{"id":%d,"v":"%s"}}`, i, i, strings.Repeat("x", 100))))
	if err != nil {
		panic(err)
	}
	return &t
}

// TestWALMetricsMoveUnderLoad appends through a real WAL wired to
// ObserveWAL and WatchWAL, and checks the metrics through /metrics.
func TestWALMetricsMoveUnderLoad(t *testing.T) {
	m, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	w, _, err := wal.Open(wal.Options{Dir: t.TempDir(), SegmentSize: 64 << 10, Observe: m.ObserveWAL})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := m.WatchWAL(w); err != nil {
		t.Fatal(err)
	}
	if err := m.WatchWAL(w); err == nil {
		t.Fatal("second WatchWAL accepted")
	}
	srv := httptest.NewServer(m.Mux())
	defer srv.Close()
	scrape := func() string {
		resp, err := http.Get(srv.URL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	value := func(text, name string) float64 {
		re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`)
		mm := re.FindStringSubmatch(text)
		if mm == nil {
			t.Fatalf("%s not in /metrics", name)
		}
		var v float64
		fmt.Sscan(mm[1], &v)
		return v
	}

	ctx := context.Background()
	var wg sync.WaitGroup
	load := func(base int) {
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 100; i++ {
					if _, err := w.Append(ctx, txn(base+g*1000+i)); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
	}
	load(0)
	first := scrape()
	load(100000)
	second := scrape()
	for _, name := range []string{"walship_wal_records_total", "walship_wal_bytes_total", "walship_wal_batch_records_count", "walship_wal_fsync_seconds_count", "walship_wal_visible_lsn", "walship_wal_size_bytes"} {
		a, b := value(first, name), value(second, name)
		if !(a > 0 && b > a) {
			t.Errorf("%s did not move under load: %v then %v", name, a, b)
		}
	}
	if got := value(second, "walship_wal_records_total"); got != 1600 {
		t.Errorf("walship_wal_records_total = %v, want 1600 (one record per one-change txn)", got)
	}
	if got := value(second, "walship_wal_visible_lsn"); got != 1600 {
		t.Errorf("walship_wal_visible_lsn = %v, want 1600", got)
	}
	if got := value(second, "walship_wal_segments"); got < 2 {
		t.Errorf("walship_wal_segments = %v, want several 64 KiB segments", got)
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if !strings.Contains(second, name) {
			t.Errorf("%s missing: Go/process collectors not registered", name)
		}
	}
}

// TestNamingConventions lints every metric walship registers (with a
// label set of each) against the Prometheus conventions, and checks the
// walship_ prefix and that docs/OBSERVABILITY.md lists each.
func TestNamingConventions(t *testing.T) {
	m, _ := New(Options{NoProcessCollectors: true, Logger: slog.New(slog.DiscardHandler)})
	m.WatchWAL(fakeWAL{})
	exercise(m)
	m.AddDependency("kafka", false, (&health.Tracker{}).State)
	m.Tick(time.Now())
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	doc, err := os.ReadFile("../docs/OBSERVABILITY.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "walship_") {
			t.Errorf("%s: no walship_ prefix", mf.GetName())
		}
		if !bytes.Contains(doc, []byte("`"+mf.GetName()+"`")) {
			t.Errorf("%s is not documented in docs/OBSERVABILITY.md", mf.GetName())
		}
	}
	if len(mfs) < 25 {
		t.Errorf("only %d metric families", len(mfs))
	}
}

type fakeWAL struct{}

func (fakeWAL) Dir() string                     { return os.TempDir() }
func (fakeWAL) Segments() []segment.SegmentInfo { return nil }
func (fakeWAL) FirstLSN() uint64                { return 1 }
func (fakeWAL) Visible() uint64                 { return 10 }

func exercise(m *Metrics) {
	m.ObserveWAL(10, 1000, time.Millisecond)
	m.SinkPosition("kafka", Position{LSN: 5, LagRecords: 5, LagBytes: 500, Lag: 20 * time.Millisecond})
	m.ConsumerPosition("replica", Position{LSN: 4, LagRecords: 6, Lag: 30 * time.Millisecond})
	m.SourcePosition("postgres", Position{LSN: 10})
	m.SlotLag("walship", 4096)
	m.ReplicationLevel("shipped", 3)
	m.ArchiveState(Archive{Position: Position{LSN: 3, LagRecords: 7, Lag: time.Second}, Oldest: time.Unix(100, 0), Newest: time.Unix(200, 0), Snapshots: 2})
	m.Retry("kafka", "broker_unavailable")
	m.Error("archive", "put")
}

func TestPositionsAndCounters(t *testing.T) {
	m, _ := New(Options{NoProcessCollectors: true, Logger: slog.New(slog.DiscardHandler)})
	exercise(m)
	exercise(m)
	got := gather(t, m)
	want := map[string]float64{
		"walship_sink_position_lsn{sink=kafka}":                          5,
		"walship_sink_lag_records{sink=kafka}":                           5,
		"walship_sink_lag_bytes{sink=kafka}":                             500,
		"walship_sink_lag_seconds{sink=kafka}":                           0.02,
		"walship_consumer_position_lsn{consumer=replica}":                4,
		"walship_consumer_lag_seconds{consumer=replica}":                 0.03,
		"walship_source_position_lsn{source=postgres}":                   10,
		"walship_postgres_slot_lag_bytes{slot=walship}":                  4096,
		"walship_archive_position_lsn":                                   3,
		"walship_archive_lag_records":                                    7,
		"walship_archive_lag_seconds":                                    1,
		"walship_pitr_oldest_restorable_timestamp_seconds":               100,
		"walship_pitr_newest_restorable_timestamp_seconds":               200,
		"walship_archive_snapshots":                                      2,
		"walship_retries_total{component=kafka,kind=broker_unavailable}": 2,
		"walship_errors_total{component=archive,kind=put}":               2,
		"walship_wal_records_total":                                      20,
		"walship_wal_bytes_total":                                        2000,
		"walship_wal_fsync_seconds_count":                                2,
		"walship_wal_batch_records_sum":                                  20,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
}

func TestHistory(t *testing.T) {
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	m, _ := New(Options{NoProcessCollectors: true, Now: clk.now, Resolution: 5 * time.Second, History: time.Minute})
	lsn := uint64(0)
	for tick := 0; tick < 20; tick++ { // 20 ticks; the ring keeps 12
		for i := 0; i < 5; i++ {
			lsn += 10
			m.SinkPosition("kafka", Position{LSN: lsn, Lag: time.Duration(tick*10+i) * time.Millisecond})
			m.ObserveWAL(10, 1000, time.Millisecond)
		}
		clk.advance(5 * time.Second)
		m.Tick(clk.now())
	}
	h := m.History()
	if len(h) != 2 || h[0].Component != "sink/kafka" || h[1].Component != "wal" {
		t.Fatalf("components %+v", h)
	}
	for _, s := range h {
		if len(s.Points) != 12 {
			t.Fatalf("%s: %d points, want 12", s.Component, len(s.Points))
		}
		for i, p := range s.Points {
			tick := 8 + i
			if want := time.Unix(1_700_000_000, 0).Add(time.Duration(tick+1) * 5 * time.Second); !p.T.Equal(want) {
				t.Fatalf("%s point %d at %v, want %v", s.Component, i, p.T, want)
			}
			if p.Rate != 10 { // 50 records per 5 s
				t.Errorf("%s point %d: rate %v, want 10/s", s.Component, i, p.Rate)
			}
			if s.Component == "wal" && p.ByteRate != 1000 {
				t.Errorf("wal point %d: byte rate %v", i, p.ByteRate)
			}
			if s.Component == "sink/kafka" && p.Lag != time.Duration(tick*10+4)*time.Millisecond {
				t.Errorf("kafka point %d: lag %v, want the interval's max %v", i, p.Lag, time.Duration(tick*10+4)*time.Millisecond)
			}
		}
	}
	// Idle interval: the last lag is carried, the rate drops to zero.
	clk.advance(5 * time.Second)
	m.Tick(clk.now())
	last := m.History()[0].Points[11]
	if last.Rate != 0 || last.Lag != 194*time.Millisecond {
		t.Fatalf("idle point %+v", last)
	}
}

// near reports whether got is within the Window's documented error above want.
func near(got, want time.Duration) bool {
	return got >= want && float64(got-want) <= float64(want)*RelativeError
}

type logSink struct {
	mu    sync.Mutex
	lines []map[string]any
}

func (l *logSink) Write(p []byte) (int, error) {
	var m map[string]any
	if err := json.Unmarshal(p, &m); err != nil {
		return 0, err
	}
	l.mu.Lock()
	l.lines = append(l.lines, m)
	l.mu.Unlock()
	return len(p), nil
}

func (l *logSink) take() []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.lines
	l.lines = nil
	return out
}

func TestLagObjectives(t *testing.T) {
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	logs := &logSink{}
	m, err := New(Options{NoProcessCollectors: true, Now: clk.now, Logger: slog.New(slog.NewJSONHandler(logs, nil)),
		Lag: LagOptions{Window: time.Minute, Slots: 12, AlertEvery: 30 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	feed := func(n int, lag time.Duration) {
		for i := 0; i < n; i++ {
			m.ConsumerPosition("replica", Position{Lag: lag})
		}
	}
	level := func() (w, c float64) {
		g := gather(t, m)
		return g["walship_lag_alert{component=consumer/replica,level=warning}"], g["walship_lag_alert{component=consumer/replica,level=critical}"]
	}
	step := func() LagSummary {
		clk.advance(5 * time.Second)
		s := m.Tick(clk.now())
		if len(s) != 1 {
			t.Fatalf("summaries %+v", s)
		}
		return s[0]
	}

	// 1000 samples at 5 ms: all under the default objective.
	feed(1000, 5*time.Millisecond)
	s := step()
	if s.Level != LevelOK || !near(s.P50, 5*time.Millisecond) || !near(s.P999, 5*time.Millisecond) || s.Samples != 1000 {
		t.Fatalf("healthy: %+v", s)
	}
	if w, c := level(); w != 0 || c != 0 {
		t.Fatalf("alert gauges %v %v while healthy", w, c)
	}
	if l := logs.take(); len(l) != 0 {
		t.Fatalf("logged while healthy: %v", l)
	}

	// 20 samples at 800 ms: 20/1020 = 2% > 1%, so p99 = 800 ms > warn
	// 500 ms, below critical 5 s; p95 stays 5 ms.
	feed(20, 800*time.Millisecond)
	s = step()
	if s.Level != LevelWarning || !near(s.P95, 5*time.Millisecond) || s.P99 != 800*time.Millisecond || !strings.HasPrefix(s.Breach, "p99 800ms > warn 500ms") {
		t.Fatalf("warning: %+v", s)
	}
	if w, c := level(); w != 1 || c != 0 {
		t.Fatalf("alert gauges %v %v, want warning", w, c)
	}
	if g := gather(t, m); g["walship_lag_percentile_seconds{component=consumer/replica,percentile=99}"] != 0.8 {
		t.Fatalf("p99 gauge %v", g["walship_lag_percentile_seconds{component=consumer/replica,percentile=99}"])
	}
	l := logs.take()
	if len(l) != 1 || l[0]["level"] != "WARN" || l[0]["msg"] != "lag objective breached" || l[0]["component"] != "consumer/replica" {
		t.Fatalf("warning log: %v", l)
	}
	// Still breached: logged again only after AlertEvery (30 s).
	for i := 0; i < 5; i++ {
		step()
	}
	if l := logs.take(); len(l) != 0 {
		t.Fatalf("re-logged within AlertEvery: %v", l)
	}
	step() // 30 s after the first line
	if l := logs.take(); len(l) != 1 {
		t.Fatalf("want one repeat after AlertEvery, got %v", l)
	}

	// Half the samples at 150 ms: p50 > critical 100 ms.
	feed(1100, 150*time.Millisecond)
	s = step()
	if s.Level != LevelCritical || !strings.Contains(s.Breach, "critical") {
		t.Fatalf("critical: %+v", s)
	}
	if w, c := level(); w != 0 || c != 1 {
		t.Fatalf("alert gauges %v %v, want critical", w, c)
	}
	if l := logs.take(); len(l) != 1 || l[0]["level"] != "ERROR" {
		t.Fatalf("critical log: %v", l)
	}

	// Silence for a whole window: no samples, objective met again.
	for i := 0; i < 12; i++ {
		s = step()
	}
	if s.Level != LevelOK || s.Samples != 0 {
		t.Fatalf("after the window: %+v", s)
	}
	l = logs.take()
	if len(l) == 0 || l[len(l)-1]["msg"] != "lag objective met again" {
		t.Fatalf("recovery log: %v", l)
	}
	if _, ok := gather(t, m)["walship_lag_percentile_seconds{component=consumer/replica,percentile=50}"]; ok {
		t.Fatal("percentile gauge kept for an empty window")
	}
	if got := m.Lag(); len(got) != 1 || got[0].Level != LevelOK {
		t.Fatalf("Lag() = %+v", got)
	}
}

func TestLagOptionsValidate(t *testing.T) {
	_, err := New(Options{Lag: LagOptions{Warn: Thresholds{P99: 10 * time.Second}, Critical: Thresholds{P99: time.Second}}})
	if err == nil || !strings.Contains(err.Error(), "lag.critical.p99") {
		t.Fatalf("critical below warn: %v", err)
	}
	m, err := New(Options{NoProcessCollectors: true, Lag: LagOptions{Warn: Thresholds{P50: time.Second, P95: -1}}})
	if err != nil {
		t.Fatal(err)
	}
	o := m.LagOptions()
	wantCrit := Thresholds{P50: 10 * time.Second, P95: 0, P99: DefaultCritical.P99, P999: DefaultCritical.P999}
	if o.Warn.P50 != time.Second || o.Warn.P95 != -1 || o.Warn.P99 != DefaultWarn.P99 || o.Critical != wantCrit || o.Window != 5*time.Minute {
		t.Fatalf("effective options %+v", o)
	}
}

func TestReadiness(t *testing.T) {
	m, _ := New(Options{NoProcessCollectors: true})
	srv := httptest.NewServer(m.Mux())
	defer srv.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if c, b := get("/readyz"); c != 200 || b != "ready\n" {
		t.Fatalf("no checks: %d %q", c, b)
	}
	m.AddReadiness("wal", func(context.Context) error { return nil })
	m.AddReadiness("postgres", func(context.Context) error {
		return errors.New("connect postgres://walship:hunter2@db/app: refused")
	})
	c, b := get("/readyz")
	if c != 503 || !strings.Contains(b, "postgres: connect postgres://walship:REDACTED@db/app") || strings.Contains(b, "wal:") || strings.Contains(b, "hunter2") {
		t.Fatalf("failing check: %d %q", c, b)
	}
	m.AddReadiness("postgres", func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() })
	start := time.Now()
	c, b = get("/readyz")
	if c != 503 || time.Since(start) > ReadyTimeout+time.Second {
		t.Fatalf("hanging check: %d %q after %v", c, b, time.Since(start))
	}
	m.RemoveReadiness("postgres")
	if c, _ := get("/readyz"); c != 200 {
		t.Fatalf("after removal: %d", c)
	}
	if c, b := get("/healthz"); c != 200 || b != "ok\n" {
		t.Fatalf("healthz: %d %q", c, b)
	}
}
