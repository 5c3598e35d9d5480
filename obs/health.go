package obs

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/walship/walship/internal/secret"
)

// ReadyTimeout bounds one /readyz evaluation of all checks.
const ReadyTimeout = 2 * time.Second

type health struct {
	mu struct {
		sync.Mutex
		checks map[string]func(context.Context) error
	}
}

func (h *health) init() { h.mu.checks = map[string]func(context.Context) error{} }

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

// Ready runs every readiness check concurrently (bounded by ReadyTimeout)
// and returns the failures by name, redacted; empty means ready.
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
// passes, else 503 with one "name: error" line per failing check.
func (m *Metrics) ReadyzHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fail := m.Ready(r.Context())
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if len(fail) == 0 {
			fmt.Fprintln(w, "ready")
			return
		}
		names := make([]string, 0, len(fail))
		for n := range fail {
			names = append(names, n)
		}
		sort.Strings(names)
		var b strings.Builder
		for _, n := range names {
			fmt.Fprintf(&b, "%s: %s\n", n, fail[n])
		}
		w.WriteHeader(http.StatusServiceUnavailable)
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
