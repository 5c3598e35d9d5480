package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/walship/walship/config"
	"github.com/walship/walship/internal/miniotest"
	"github.com/walship/walship/internal/pgtest"
	"github.com/walship/walship/kafkasink/kafkatest"
	"github.com/walship/walship/status"
)

// Each test here stops one dependency and watches /readyz, the metrics and
// /status.json say so, then restores it and watches them recover. Every
// wait is for a condition; the bounds only catch hangs.

const healthWait = 90 * time.Second

// observed is what the operator endpoints say about one dependency.
type observed struct {
	code    int    // /readyz status
	readyz  string // /readyz body
	up      float64
	present bool // walship_dependency_up{dependency=...} is exported
	metrics map[string]float64
	dep     status.Dependency // from /status.json
	snap    statusView
}

// statusView is the part of /status.json these tests read.
type statusView struct {
	Source *struct {
		State, Error string
	}
	Sinks []struct {
		Kind, State, Error string
	}
	WAL          *status.WAL
	Dependencies []status.Dependency
	Warnings     []status.Warning
}

func observe(t *testing.T, addr, dep string) observed {
	t.Helper()
	var o observed
	resp, err := (&http.Client{Timeout: 60 * time.Second}).Get("http://" + addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	o.code, o.readyz = resp.StatusCode, string(b)
	o.metrics = scrape(t, "http://"+addr+"/metrics")
	o.up, o.present = o.metrics[fmt.Sprintf(`walship_dependency_up{dependency=%q}`, dep)]
	if err := json.Unmarshal([]byte(get(t, "http://"+addr+"/status.json")), &o.snap); err != nil {
		t.Fatal(err)
	}
	for _, d := range o.snap.Dependencies {
		if d.Name == dep {
			o.dep = d
		}
	}
	return o
}

// waitObserved polls until ok holds for what the endpoints say.
func waitObserved(t *testing.T, addr, dep, what string, ok func(o observed) bool) observed {
	t.Helper()
	deadline := time.Now().Add(healthWait)
	for {
		o := observe(t, addr, dep)
		if ok(o) {
			return o
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: /readyz %d %q, up=%v (exported %v), status %+v", what, healthWait, o.code, o.readyz, o.up, o.present, o.dep)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// isDown: the dependency is reported down everywhere, with its error and
// since when; required says whether /readyz must be 503 (else 200
// "degraded"), never plain "ready".
func isDown(dep string, required bool) func(o observed) bool {
	return func(o observed) bool {
		line := dep + ": down since "
		readyzOK := o.code == 503 && strings.Contains(o.readyz, line)
		if !required {
			readyzOK = o.code == 200 && strings.HasPrefix(o.readyz, "degraded\n") && strings.Contains(o.readyz, line)
		}
		return readyzOK && o.present && o.up == 0 &&
			o.dep.State == "down" && o.dep.Required == required && o.dep.Error != "" && !o.dep.Since.IsZero() &&
			o.metrics[fmt.Sprintf(`walship_dependency_last_error_timestamp_seconds{dependency=%q}`, dep)] > 0
	}
}

func isUp(dep string) func(o observed) bool {
	return func(o observed) bool {
		return o.code == 200 && o.readyz == "ready\n" && o.present && o.up == 1 && o.dep.State == "up"
	}
}

func hasWarning(s statusView, component string) bool {
	for _, w := range s.Warnings {
		if w.Component == component {
			return true
		}
	}
	return false
}

// TestRunKafkaDown: with the brokers cut off, walship run keeps accepting
// writes and says it is degraded (not ready-and-fine, not unready); the
// Kafka sink's lag in seconds grows past an alert threshold although
// nothing is acknowledged; when the brokers return everything recovers
// and the lag drops to 0.
func TestRunKafkaDown(t *testing.T) {
	t.Parallel()
	kc, proxy, err := kafkatest.StartBehindProxy()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { proxy.Close(); kc.Close() }()
	cfg := testConfig(t, fmt.Sprintf("kafka: {brokers: [%q], topic_prefix: h}\n", proxy.Addr))
	r := start(t, cfg)
	defer r.stop(t)
	addr := r.d.Addr("http")
	appendN(t, r.d.Addr("source.http"), 0, 10)
	waitObserved(t, addr, "kafka", "kafka up", isUp("kafka"))

	proxy.Down()
	appendN(t, r.d.Addr("source.http"), 10, 10) // the log still takes writes
	o := waitObserved(t, addr, "kafka", "kafka down", isDown("kafka", false))
	if !hasWarning(o.snap, "dependency/kafka") {
		t.Errorf("no warning for kafka on the status page: %+v", o.snap.Warnings)
	}
	// An alert on walship_sink_lag_seconds > 2 fires while the brokers are
	// down: the lag is the age of the oldest unshipped transaction.
	o = waitObserved(t, addr, "kafka", "sink lag above 2s", func(o observed) bool {
		return o.metrics[`walship_sink_lag_seconds{sink="kafka"}`] > 2 && o.metrics[`walship_sink_lag_records{sink="kafka"}`] > 0
	})
	for _, s := range o.snap.Sinks {
		if s.Kind == "kafka" && (s.State != "down" || s.Error == "") {
			t.Errorf("kafka sink on the status page: %+v", s)
		}
	}

	if err := proxy.Up(); err != nil {
		t.Fatal(err)
	}
	last := r.d.wal.Durable()
	waitObserved(t, addr, "kafka", "kafka recovered and caught up", func(o observed) bool {
		return isUp("kafka")(o) && o.metrics[`walship_sink_position_lsn{sink="kafka"}`] == float64(last) &&
			o.metrics[`walship_sink_lag_seconds{sink="kafka"}`] == 0 && !hasWarning(o.snap, "dependency/kafka")
	})
}

// archiveDownBound is how soon after the object store stops answering
// walship run must say it is degraded: the first failed attempt counts,
// not the end of a call's retries (the probe alone gives up on a call
// only after 10 s; uploads retry until they succeed).
const archiveDownBound = 8 * time.Second

// TestRunArchiveDown: with the object store refusing connections, at
// start and under a running daemon, walship run is degraded and says why
// within archiveDownBound; the status page never shows the archive sink
// "ok" while its store is not up; once it answers again the archive is up
// and catches up.
func TestRunArchiveDown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := miniotest.Start(t, miniotest.Options{})
	if err := srv.MakeBucket(ctx, "health"); err != nil {
		t.Fatal(err)
	}
	proxy, err := miniotest.NewProxy(srv.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	s3 := fmt.Sprintf("{endpoint: %q, region: %s, path_style: true, access_key: %s, secret_key: %q}", proxy.Endpoint, miniotest.Region, miniotest.AccessKey, miniotest.SecretKey)
	cfg := testConfig(t, fmt.Sprintf("archive: {url: \"s3://health/walship\", timeout: 1s, s3: %s}\n", s3))
	// Dead at start: degraded within the bound, and meanwhile the archive
	// sink is never "ok".
	if err := proxy.Set(miniotest.Down); err != nil {
		t.Fatal(err)
	}
	// Counted from when the daemon is ready, not from before New: under
	// load, opening the log is no part of what the bound is about.
	r := start(t, cfg)
	defer r.stop(t)
	began := time.Now()
	addr := r.d.Addr("http")
	waitObserved(t, addr, "archive", "archive down at start", func(o observed) bool {
		for _, s := range o.snap.Sinks {
			if s.Kind == "archive" && s.State == "ok" && o.dep.State != "up" {
				t.Errorf("archive sink %q while its store is %q", s.State, o.dep.State)
			}
		}
		return isDown("archive", false)(o)
	})
	if took := time.Since(began); took > archiveDownBound {
		t.Errorf("dead at start: degraded only after %v, want within %v", took, archiveDownBound)
	}
	if err := proxy.Set(miniotest.Pass); err != nil {
		t.Fatal(err)
	}
	appendN(t, r.d.Addr("source.http"), 0, 10)
	waitObserved(t, addr, "archive", "archive up", isUp("archive"))

	if err := proxy.Set(miniotest.Down); err != nil {
		t.Fatal(err)
	}
	began = time.Now()
	appendN(t, r.d.Addr("source.http"), 10, 10)
	o := waitObserved(t, addr, "archive", "archive down", isDown("archive", false))
	if took := time.Since(began); took > archiveDownBound {
		t.Errorf("stopped under a running daemon: degraded only after %v, want within %v", took, archiveDownBound)
	}
	for _, s := range o.snap.Sinks {
		if s.Kind == "archive" && (s.State != "down" || s.Error == "") {
			t.Errorf("archive sink on the status page: %+v", s)
		}
	}
	// The archive's lag grows while it waits.
	waitObserved(t, addr, "archive", "archive lag above 2s", func(o observed) bool {
		return o.metrics["walship_archive_lag_seconds"] > 2
	})

	if err := proxy.Set(miniotest.Pass); err != nil {
		t.Fatal(err)
	}
	last := r.d.wal.Durable()
	waitObserved(t, addr, "archive", "archive recovered and caught up", func(o observed) bool {
		return isUp("archive")(o) && o.metrics["walship_archive_position_lsn"] == float64(last)
	})
}

// TestRunPostgresDown: while the PostgreSQL server is stopped walship run
// is not ready (/readyz 503 naming it): nothing is captured. Started again,
// capture resumes and readiness returns.
func TestRunPostgresDown(t *testing.T) {
	t.Parallel()
	pg := pgtest.Start(t, pgtest.WithoutFsync())
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pg.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE t (id int PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	y := fmt.Sprintf("wal: {dir: %q}\nsource:\n  postgres: {dsn: %q, heartbeat: 200ms, status_interval: 100ms}\nhttp: {listen: \"127.0.0.1:0\"}\n", t.TempDir(), pg.DSN("postgres"))
	cfg, err := config.Parse([]byte(y), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, cfg)
	defer r.stop(t)
	addr := r.d.Addr("http")
	waitObserved(t, addr, "postgres", "postgres up", isUp("postgres"))

	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	o := waitObserved(t, addr, "postgres", "postgres down", isDown("postgres", true))
	if o.snap.Source == nil || o.snap.Source.State != "down" || o.snap.Source.Error == "" {
		t.Errorf("source on the status page: %+v", o.snap.Source)
	}
	if !hasWarning(o.snap, "dependency/postgres") {
		t.Errorf("no warning for postgres on the status page: %+v", o.snap.Warnings)
	}

	if err := pg.Start(); err != nil {
		t.Fatal(err)
	}
	waitObserved(t, addr, "postgres", "postgres recovered", isUp("postgres"))
	// Capture works again.
	conn, err = pgx.Connect(ctx, pg.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "INSERT INTO t VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(healthWait)
	for r.d.pg.Stats().LoggedSourceLSN == 0 { // a streamed transaction (the snapshot of the empty table appends its end marker)
		if time.Now().After(deadline) {
			t.Fatalf("nothing captured after PostgreSQL came back: %+v", r.d.pg.Stats())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startConsume runs walship consume with the given config until the test
// ends.
func startConsume(t *testing.T, y string) *Consume {
	t.Helper()
	cfg, err := config.Parse([]byte(y), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cd, err := NewConsume(ctx, cfg, nil)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cd.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("consume: %v", err)
		}
	})
	return cd
}

// TestConsumeKafkaDown: walship consume with no reachable broker is not
// ready and says so; /readyz, the metric and the page recover when the
// broker is back, and the replica catches up.
func TestConsumeKafkaDown(t *testing.T) {
	t.Parallel()
	kc, proxy, err := kafkatest.StartBehindProxy()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { proxy.Close(); kc.Close() }()
	r := start(t, testConfig(t, fmt.Sprintf("kafka: {brokers: [%q], topic_prefix: ck}\n", proxy.Addr)))
	defer r.stop(t)
	appendN(t, r.d.Addr("source.http"), 0, 10)

	proxy.Down() // before walship consume starts: it never reaches a broker
	db := filepath.Join(t.TempDir(), "replica.db")
	cd := startConsume(t, fmt.Sprintf("kafka: {brokers: [%q], topic_prefix: ck}\nreplica: {url: \"sqlite://%s\"}\nhttp: {listen: \"127.0.0.1:0\"}\n", proxy.Addr, db))
	o := waitObserved(t, cd.Addr(), "kafka", "kafka down", isDown("kafka", true))
	if o.snap.Source == nil || o.snap.Source.State != "down" {
		t.Errorf("kafka source on the status page: %+v", o.snap.Source)
	}

	if err := proxy.Up(); err != nil {
		t.Fatal(err)
	}
	waitObserved(t, cd.Addr(), "kafka", "kafka recovered", isUp("kafka"))
	get(t, fmt.Sprintf("http://%s/v1/wait?lsn=%d&timeout=60s", cd.Addr(), r.d.wal.Durable()))
}

// TestConsumeReplicaDown: with the replica's PostgreSQL server stopped,
// walship consume is not ready and says so; started again, it recovers
// and applies.
func TestConsumeReplicaDown(t *testing.T) {
	t.Parallel()
	kc, err := kafkatest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	r := start(t, testConfig(t, fmt.Sprintf("kafka: {brokers: [%q], topic_prefix: cr}\n", kc.Addr)))
	defer r.stop(t)
	appendN(t, r.d.Addr("source.http"), 0, 10)
	pg := pgtest.Start(t, pgtest.WithoutFsync())
	cd := startConsume(t, fmt.Sprintf("kafka: {brokers: [%q], topic_prefix: cr}\nreplica: {url: %q}\nhttp: {listen: \"127.0.0.1:0\"}\n", kc.Addr, pg.DSN("postgres")))
	get(t, fmt.Sprintf("http://%s/v1/wait?lsn=%d&timeout=60s", cd.Addr(), r.d.wal.Durable()))
	waitObserved(t, cd.Addr(), "replica", "replica up", isUp("replica"))

	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	o := waitObserved(t, cd.Addr(), "replica", "replica down", isDown("replica", true))
	if len(o.snap.Sinks) != 1 || o.snap.Sinks[0].State != "down" || o.snap.Sinks[0].Error == "" {
		t.Errorf("replica on the status page: %+v", o.snap.Sinks)
	}

	if err := pg.Start(); err != nil {
		t.Fatal(err)
	}
	waitObserved(t, cd.Addr(), "replica", "replica recovered", isUp("replica"))
	appendN(t, r.d.Addr("source.http"), 10, 10)
	get(t, fmt.Sprintf("http://%s/v1/wait?lsn=%d&timeout=60s", cd.Addr(), r.d.wal.Durable()))
}
