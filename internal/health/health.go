// Package health records whether a dependency (a PostgreSQL server, Kafka
// brokers, an archive backend, a replica database) is reachable, as its
// client sees it: the outcome of the last attempt to use it, since when
// that outcome holds, and the last error.
//
// Guarantees: a Tracker never does I/O and never blocks, so readiness
// checks, metrics and status pages may read it at any time; the error
// text it keeps is redacted (secret.Text) and on one line (OneLine), so it
// may be shown anywhere, including in line-oriented formats like /readyz.
package health

import (
	"strings"
	"sync"
	"time"

	"github.com/walship/walship/internal/secret"
)

// State is a dependency's health at one moment.
type State struct {
	// Known is false until the first attempt to use the dependency ended.
	Known bool
	// Up is the outcome of the last attempt: it answered.
	Up bool
	// Since is when Up took its current value (the first report, if it
	// never changed).
	Since time.Time
	// LastError is the last failure, redacted, and LastErrorAt when it
	// happened; both stay set after the dependency is up again.
	LastError   string
	LastErrorAt time.Time
}

// Tracker records a dependency's health. The zero value is ready to use
// and unknown; it is safe for concurrent use.
type Tracker struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	mu sync.Mutex
	st State
}

func (t *Tracker) now() time.Time {
	if t.Now != nil {
		return t.Now()
	}
	return time.Now()
}

// OK records a successful use of the dependency.
func (t *Tracker) OK() {
	now := t.now()
	t.mu.Lock()
	if !t.st.Known || !t.st.Up {
		t.st.Known, t.st.Up, t.st.Since = true, true, now
	}
	t.mu.Unlock()
}

// Fail records a failed use of the dependency; a nil err is OK.
func (t *Tracker) Fail(err error) {
	if err == nil {
		t.OK()
		return
	}
	now := t.now()
	msg := OneLine(secret.Text(err.Error()))
	t.mu.Lock()
	if !t.st.Known || t.st.Up {
		t.st.Known, t.st.Up, t.st.Since = true, false, now
	}
	t.st.LastError, t.st.LastErrorAt = msg, now
	t.mu.Unlock()
}

// OneLine returns s on one line: each line break (with the blanks around
// it; empty lines are dropped) becomes "; ", so an error that spans lines
// (a joined error, a server's multi-line answer) stays one entry of a
// line-per-item format such as /readyz's "name: problem".
func OneLine(s string) string {
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	parts := strings.Split(strings.NewReplacer("\r\n", "\n", "\r", "\n").Replace(s), "\n")
	out := parts[:0]
	for _, p := range parts {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return strings.Join(out, "; ")
}

// State returns the current state.
func (t *Tracker) State() State {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.st
}
