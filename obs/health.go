package obs

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/walship/walship/internal/health"
	"github.com/walship/walship/internal/secret"
)

// ReadyTimeout bounds one /readyz evaluation of all checks.
const ReadyTimeout = 2 * time.Second

type checks struct {
	mu struct {
		sync.Mutex
		checks map[string]func(context.Context) error
		deps   map[string]dependency
	}
}

func (h *checks) init() {
	h.mu.checks = map[string]func(context.Context) error{}
	h.mu.deps = map[string]dependency{}
}

type dependency struct {
	gates bool
	state func() health.State
}

// Dependency is one external system the process uses (PostgreSQL, Kafka,
// the archive's backend, the replica database) and its health.
type Dependency struct {
	Name string
	// Gates: while the dependency is down, or not reached yet, /readyz is
	// 503 naming it. A dependency that does not gate readiness makes the
	// process "degraded" while it is down or not reached yet: /readyz
	// stays 200 but says so (never "ready" before it answered).
	Gates bool
	health.State
}

// Problem describes a dependency that is down or not reached yet; ""
// when it is up.
func (d Dependency) Problem(now time.Time) string {
	switch {
	case !d.Known:
		return "not reached yet"
	case d.Up:
		return ""
	}
	msg := fmt.Sprintf("down since %s (%v)", d.Since.UTC().Format(time.RFC3339), now.Sub(d.Since).Round(time.Second))
	if d.LastError != "" {
		msg += ": " + d.LastError
	}
	return msg
}

// AddDependency registers a dependency whose health state reads (state
// must not block or do I/O: a health.Tracker's State). It is exported as
// walship_dependency_up and its companions, checked by /readyz (see
// Dependency.Gates) and listed by Dependencies. Registering a name again
// replaces it.
func (m *Metrics) AddDependency(name string, gates bool, state func() health.State) {
	m.health.mu.Lock()
	m.health.mu.deps[name] = dependency{gates: gates, state: state}
	m.health.mu.Unlock()
}

// Dependencies returns every registered dependency's health, by name.
func (m *Metrics) Dependencies() []Dependency {
	m.health.mu.Lock()
	out := make([]Dependency, 0, len(m.health.mu.deps))
	for name, d := range m.health.mu.deps {
		out = append(out, Dependency{Name: name, Gates: d.gates, State: d.state()})
	}
	m.health.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Degraded returns the dependencies that do not gate readiness but are
// down or not reached yet, with their problem, by name; empty means none.
func (m *Metrics) Degraded() map[string]string {
	now := m.opts.Now()
	out := map[string]string{}
	for _, d := range m.Dependencies() {
		if !d.Gates && !d.Up {
			out[d.Name] = d.Problem(now)
		}
	}
	return out
}

// dependencyCollector exports the dependencies' health at scrape time.
type dependencyCollector struct{ m *Metrics }

var (
	depUpDesc = prometheus.NewDesc("walship_dependency_up",
		"1 while the dependency answered its last use, else 0 (also 0 before it was first reached).", []string{"dependency"}, nil)
	depSinceDesc = prometheus.NewDesc("walship_dependency_state_since_timestamp_seconds",
		"When walship_dependency_up took its current value (Unix seconds).", []string{"dependency"}, nil)
	depErrDesc = prometheus.NewDesc("walship_dependency_last_error_timestamp_seconds",
		"When the dependency last failed (Unix seconds; 0 if never).", []string{"dependency"}, nil)
	depGatesDesc = prometheus.NewDesc("walship_dependency_required",
		"1 if the dependency being down makes /readyz 503, 0 if it only degrades the process.", []string{"dependency"}, nil)
)

func (c dependencyCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- depUpDesc
	ch <- depSinceDesc
	ch <- depErrDesc
	ch <- depGatesDesc
}

func (c dependencyCollector) Collect(ch chan<- prometheus.Metric) {
	unix := func(t time.Time) float64 {
		if t.IsZero() {
			return 0
		}
		return float64(t.UnixNano()) / 1e9
	}
	b2f := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	for _, d := range c.m.Dependencies() {
		ch <- prometheus.MustNewConstMetric(depUpDesc, prometheus.GaugeValue, b2f(d.Known && d.Up), d.Name)
		ch <- prometheus.MustNewConstMetric(depSinceDesc, prometheus.GaugeValue, unix(d.Since), d.Name)
		ch <- prometheus.MustNewConstMetric(depErrDesc, prometheus.GaugeValue, unix(d.LastErrorAt), d.Name)
		ch <- prometheus.MustNewConstMetric(depGatesDesc, prometheus.GaugeValue, b2f(d.Gates), d.Name)
	}
}

// AddReadiness registers a named readiness check (e.g. "wal" open and not
// failed, "postgres" streaming, "kafka" reachable). /readyz is 200 only
// when every check returns nil. Registering a name again replaces it.
func (m *Metrics) AddReadiness(name string, check func(ctx context.Context) error) {
	m.health.mu.Lock()
	m.health.mu.checks[name] = check
	m.health.mu.Unlock()
}

// RemoveReadiness unregisters a check.
func (m *Metrics) RemoveReadiness(name string) {
	m.health.mu.Lock()
	delete(m.health.mu.checks, name)
	m.health.mu.Unlock()
}

// Ready runs every readiness check concurrently (bounded by ReadyTimeout),
// adds every dependency that gates readiness and is down or not reached
// yet, and returns the failures by name, redacted; empty means ready.
func (m *Metrics) Ready(ctx context.Context) map[string]string {
	ctx, cancel := context.WithTimeout(ctx, ReadyTimeout)
	defer cancel()
	m.health.mu.Lock()
	checks := make(map[string]func(context.Context) error, len(m.health.mu.checks))
	for k, v := range m.health.mu.checks {
		checks[k] = v
	}
	m.health.mu.Unlock()
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		fail = map[string]string{}
	)
	for name, check := range checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			done := make(chan error, 1)
			go func() { done <- check(ctx) }()
			var err error
			select {
			case err = <-done:
			case <-ctx.Done():
				err = fmt.Errorf("check did not finish within %v", ReadyTimeout)
			}
			if err != nil {
				mu.Lock()
				fail[name] = secret.Text(err.Error())
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	now := m.opts.Now()
	for _, d := range m.Dependencies() {
		if p := d.Problem(now); p != "" && d.Gates {
			fail[d.Name] = p
		}
	}
	return fail
}

// HealthzHandler serves /healthz: 200 "ok" while the process serves HTTP
// (liveness). It reveals nothing, so it may be a public path.
func HealthzHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
}

// ReadyzHandler serves /readyz: 200 "ready" when every readiness check
// passes and every dependency is up; 200 "degraded" followed by one
// "name: problem" line per dependency that is down but does not gate
// readiness; else 503 with one "name: error" line per failing check or
// dependency (and the degraded ones after them). An error that spans lines
// is folded onto its one line (health.OneLine).
func (m *Metrics) ReadyzHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fail := m.Ready(r.Context())
		degraded := m.Degraded()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		var b strings.Builder
		lines := func(set map[string]string) {
			names := make([]string, 0, len(set))
			for n := range set {
				names = append(names, n)
			}
			sort.Strings(names)
			for _, n := range names {
				fmt.Fprintf(&b, "%s: %s\n", n, health.OneLine(secret.Text(set[n])))
			}
		}
		switch {
		case len(fail) > 0:
			lines(fail)
			if len(degraded) > 0 {
				b.WriteString("degraded:\n")
				lines(degraded)
			}
			w.WriteHeader(http.StatusServiceUnavailable)
		case len(degraded) > 0:
			b.WriteString("degraded\n")
			lines(degraded)
		default:
			b.WriteString("ready\n")
		}
		fmt.Fprint(w, b.String())
	})
}

// Mux returns a mux with /metrics, /healthz and /readyz; the status
// package adds /status and /status.json to it.
func (m *Metrics) Mux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	mux.Handle("GET /healthz", HealthzHandler())
	mux.Handle("GET /readyz", m.ReadyzHandler())
	return mux
}
