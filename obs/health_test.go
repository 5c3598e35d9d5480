package obs

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/walship/walship/internal/health"
)

// TestDependencies: a dependency that gates readiness makes /readyz 503
// naming it (with since when and its redacted last error) while it is down
// or not reached yet; one that does not gate readiness makes it 200
// "degraded", never plain "ready"; the metrics follow at scrape time and
// everything recovers when the dependency is up again.
func TestDependencies(t *testing.T) {
	now := time.Unix(10_000, 0)
	m, _ := New(Options{NoProcessCollectors: true, Now: func() time.Time { return now }})
	srv := httptest.NewServer(m.Mux())
	defer srv.Close()
	get := func() (int, string) {
		resp, err := http.Get(srv.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	clock := func() time.Time { return now }
	pg, kafka := &health.Tracker{Now: clock}, &health.Tracker{Now: clock}
	m.AddDependency("postgres", true, pg.State)
	m.AddDependency("kafka", false, kafka.State)

	if c, b := get(); c != 503 || b != "postgres: not reached yet\ndegraded:\nkafka: not reached yet\n" {
		t.Fatalf("before first contact: %d %q", c, b)
	}
	pg.OK()
	// Not "ready" before kafka was reached: ok only when it is.
	if c, b := get(); c != 200 || b != "degraded\nkafka: not reached yet\n" {
		t.Fatalf("postgres up, kafka not reached yet: %d %q", c, b)
	}
	kafka.OK()
	if c, b := get(); c != 200 || b != "ready\n" {
		t.Fatalf("postgres and kafka up: %d %q", c, b)
	}
	kafka.Fail(errors.New("dial tcp 127.0.0.1:9: connect: connection refused"))
	if c, b := get(); c != 200 || b != "degraded\nkafka: down since 1970-01-01T02:46:40Z (0s): dial tcp 127.0.0.1:9: connect: connection refused\n" {
		t.Fatalf("kafka down: %d %q", c, b)
	}
	now = now.Add(30 * time.Second)
	pg.Fail(errors.New("connect postgres://walship:hunter2@db/app: refused"))
	now = now.Add(5 * time.Second)
	c, b := get()
	if c != 503 || !strings.HasPrefix(b, "postgres: down since 1970-01-01T02:47:10Z (5s): connect postgres://walship:REDACTED@db/app: refused\ndegraded:\nkafka: down since") || strings.Contains(b, "hunter2") {
		t.Fatalf("postgres down: %d %q", c, b)
	}
	g := gather(t, m)
	want := map[string]float64{
		"walship_dependency_up{dependency=postgres}":                            0,
		"walship_dependency_up{dependency=kafka}":                               0,
		"walship_dependency_required{dependency=postgres}":                      1,
		"walship_dependency_required{dependency=kafka}":                         0,
		"walship_dependency_state_since_timestamp_seconds{dependency=postgres}": 10_030,
		"walship_dependency_last_error_timestamp_seconds{dependency=postgres}":  10_030,
		"walship_dependency_last_error_timestamp_seconds{dependency=kafka}":     10_000,
	}
	for k, v := range want {
		if got, ok := g[k]; !ok || got != v {
			t.Errorf("%s = %v (present %v), want %v", k, got, ok, v)
		}
	}
	pg.OK()
	kafka.OK()
	if c, b := get(); c != 200 || b != "ready\n" {
		t.Fatalf("recovered: %d %q", c, b)
	}
	g = gather(t, m)
	if g["walship_dependency_up{dependency=postgres}"] != 1 || g["walship_dependency_up{dependency=kafka}"] != 1 ||
		g["walship_dependency_state_since_timestamp_seconds{dependency=kafka}"] != 10_035 {
		t.Fatalf("recovered metrics: %v", g)
	}
	deps := m.Dependencies()
	if len(deps) != 2 || deps[0].Name != "kafka" || deps[1].Name != "postgres" || !deps[1].Gates || deps[1].LastError == "" {
		t.Fatalf("Dependencies: %+v", deps)
	}
}

// TestReadyzOneLinePerProblem: a readiness check or dependency whose error
// spans lines still makes exactly one "name: problem" line in /readyz.
func TestReadyzOneLinePerProblem(t *testing.T) {
	now := time.Unix(10_000, 0)
	m, _ := New(Options{NoProcessCollectors: true, Now: func() time.Time { return now }})
	srv := httptest.NewServer(m.Mux())
	defer srv.Close()
	dep := &health.Tracker{Now: func() time.Time { return now }}
	m.AddDependency("archive", true, dep.State)
	dep.Fail(errors.New("put x: connection refused\ncontext deadline exceeded"))
	m.AddReadiness("wal", func(context.Context) error { return errors.New("first\nsecond") })
	resp, err := http.Get(srv.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	want := "archive: down since 1970-01-01T02:46:40Z (0s): put x: connection refused; context deadline exceeded\nwal: first; second\n"
	if resp.StatusCode != 503 || string(b) != want {
		t.Fatalf("/readyz %d %q, want 503 %q", resp.StatusCode, b, want)
	}
}
