// Package logx sets up walship's log/slog logger (docs/OBSERVABILITY.md,
// "Logging"):
//
//   - Format: text when the output is a terminal, JSON otherwise
//     ("auto", the default); "text" or "json" force one.
//   - Level: debug, info (default), warn, error.
//   - Secrets: every attribute and message passes secret.ReplaceAttr, so
//     DSN passwords, S3 keys, tokens and attributes named like secrets
//     print as REDACTED.
//   - Repeated errors are rate-limited by Dedup: a record at Warn or above
//     whose message, error texts and string attributes (numbers, durations
//     and times are ignored: attempt counters and measurements vary) equal
//     those of one already emitted within Options.RepeatWindow is counted,
//     not written; the first one
//     after the window is written with repeated=K (the number suppressed
//     since the last one written). There is no timer goroutine: the count
//     rides on the next occurrence after the window, so if the error stops
//     the final count is never printed (the last line written still says
//     it happened). Records below Warn are never suppressed.
package logx

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/walship/walship/internal/secret"
)

// DefaultRepeatWindow is how long an identical warning or error is
// suppressed after it was written.
const DefaultRepeatWindow = 30 * time.Second

// Options configure New. The zero value logs info and above to stderr.
type Options struct {
	Format string // auto (default) | text | json
	Level  string // debug | info (default) | warn | error
	// Writer receives the log; default os.Stderr.
	Writer io.Writer
	// RepeatWindow; 0 means DefaultRepeatWindow, negative disables.
	RepeatWindow time.Duration
	// Now is the clock of the rate limiter; default time.Now.
	Now func() time.Time
}

// ParseLevel maps debug|info|warn|error (any case; "" is info) to a level.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "", "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("log.level: %q: want debug, info, warn or error", s)
}

// IsTerminal reports whether w is a character device (a terminal).
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// New builds the logger.
func New(opts Options) (*slog.Logger, error) {
	level, err := ParseLevel(opts.Level)
	if err != nil {
		return nil, err
	}
	w := opts.Writer
	if w == nil {
		w = os.Stderr
	}
	hopts := &slog.HandlerOptions{Level: level, ReplaceAttr: secret.ReplaceAttr}
	var h slog.Handler
	switch strings.ToLower(opts.Format) {
	case "", "auto":
		if IsTerminal(w) {
			h = slog.NewTextHandler(w, hopts)
		} else {
			h = slog.NewJSONHandler(w, hopts)
		}
	case "text":
		h = slog.NewTextHandler(w, hopts)
	case "json":
		h = slog.NewJSONHandler(w, hopts)
	default:
		return nil, fmt.Errorf("log.format: %q: want auto, text or json", opts.Format)
	}
	window := opts.RepeatWindow
	if window == 0 {
		window = DefaultRepeatWindow
	}
	if window > 0 {
		h = NewDedup(h, window, opts.Now)
	}
	return slog.New(h), nil
}

// Dedup is an slog.Handler that rate-limits repeated warnings and errors
// (see the package doc). Handlers derived by WithAttrs/WithGroup share
// its memory but key records by their own attributes too, so the same
// message from two components is not merged.
type Dedup struct {
	next   slog.Handler
	window time.Duration
	now    func() time.Time
	scope  string // attrs and groups added by WithAttrs/WithGroup
	state  *dedupState
}

type dedupState struct {
	mu struct {
		sync.Mutex
		seen map[string]*seenEntry
	}
}

type seenEntry struct {
	last       time.Time // when last written
	suppressed int
}

// maxKeys bounds the memory of Dedup; entries older than the window are
// swept when it is reached.
const maxKeys = 4096

// NewDedup wraps next; now defaults to time.Now.
func NewDedup(next slog.Handler, window time.Duration, now func() time.Time) *Dedup {
	if now == nil {
		now = time.Now
	}
	st := &dedupState{}
	st.mu.seen = map[string]*seenEntry{}
	return &Dedup{next: next, window: window, now: now, state: st}
}

// Enabled implements slog.Handler.
func (d *Dedup) Enabled(ctx context.Context, l slog.Level) bool { return d.next.Enabled(ctx, l) }

// Handle implements slog.Handler.
func (d *Dedup) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < slog.LevelWarn {
		return d.next.Handle(ctx, r)
	}
	var key strings.Builder
	key.WriteString(d.scope)
	key.WriteString("\x00")
	key.WriteString(r.Level.String())
	key.WriteString("\x00")
	key.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		v := a.Value.Resolve()
		var text string
		switch {
		case v.Kind() == slog.KindString:
			text = v.String()
		case v.Kind() == slog.KindAny:
			if err, ok := v.Any().(error); ok {
				text = err.Error()
			} else {
				return true
			}
		default: // numbers, durations, times: counters and measurements vary
			return true
		}
		key.WriteString("\x00")
		key.WriteString(a.Key)
		key.WriteString("=")
		key.WriteString(text)
		return true
	})
	k := key.String()
	now := d.now()
	st := d.state
	st.mu.Lock()
	e := st.mu.seen[k]
	if e != nil && now.Sub(e.last) < d.window {
		e.suppressed++
		st.mu.Unlock()
		return nil
	}
	if e == nil {
		if len(st.mu.seen) >= maxKeys {
			for kk, ee := range st.mu.seen {
				if now.Sub(ee.last) >= d.window {
					delete(st.mu.seen, kk)
				}
			}
		}
		e = &seenEntry{}
		if len(st.mu.seen) < maxKeys {
			st.mu.seen[k] = e
		}
	}
	repeated := e.suppressed
	e.suppressed, e.last = 0, now
	st.mu.Unlock()
	if repeated > 0 {
		r = r.Clone()
		r.AddAttrs(slog.Int("repeated", repeated))
	}
	return d.next.Handle(ctx, r)
}

// WithAttrs implements slog.Handler.
func (d *Dedup) WithAttrs(as []slog.Attr) slog.Handler {
	c := *d
	c.next = d.next.WithAttrs(as)
	var b strings.Builder
	b.WriteString(d.scope)
	for _, a := range as {
		b.WriteString("\x01" + a.String())
	}
	c.scope = b.String()
	return &c
}

// WithGroup implements slog.Handler.
func (d *Dedup) WithGroup(name string) slog.Handler {
	c := *d
	c.next = d.next.WithGroup(name)
	c.scope = d.scope + "\x02" + name
	return &c
}

var _ slog.Handler = (*Dedup)(nil)
