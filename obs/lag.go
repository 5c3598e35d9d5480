package obs

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"
)

// Percentiles of the lag objectives, in the order of Thresholds' fields.
var (
	quantiles      = []float64{0.5, 0.95, 0.99, 0.999}
	quantileLabels = []string{"50", "95", "99", "99.9"}
	quantileNames  = []string{"p50", "p95", "p99", "p99.9"}
)

// Thresholds are lag limits per percentile. In Warn a zero field takes
// DefaultWarn's; in Critical a zero field takes ten times the effective
// warn limit (so DefaultCritical when both are unset). A negative field
// disables that limit.
type Thresholds struct {
	P50, P95, P99, P999 time.Duration
}

func (t Thresholds) list() []time.Duration { return []time.Duration{t.P50, t.P95, t.P99, t.P999} }

// DefaultWarn is the classic replication objective: p50 10 ms, p95 100 ms,
// p99 500 ms, p99.9 2 s. Lag above it raises a warning.
var DefaultWarn = Thresholds{P50: 10 * time.Millisecond, P95: 100 * time.Millisecond, P99: 500 * time.Millisecond, P999: 2 * time.Second}

// DefaultCritical is ten times DefaultWarn.
var DefaultCritical = Thresholds{P50: 100 * time.Millisecond, P95: time.Second, P99: 5 * time.Second, P999: 20 * time.Second}

func (t Thresholds) withDefaults(d Thresholds) Thresholds {
	pick := func(v, dv time.Duration) time.Duration {
		if v == 0 {
			return dv
		}
		return v
	}
	return Thresholds{pick(t.P50, d.P50), pick(t.P95, d.P95), pick(t.P99, d.P99), pick(t.P999, d.P999)}
}

// LagOptions configure the lag objectives.
type LagOptions struct {
	// Window is the sliding window of the percentiles; default 5m.
	Window time.Duration
	// Slots is how many steps the window slides in; default 60 (5 s for
	// the default window).
	Slots int
	// Warn and Critical: see Thresholds.
	Warn, Critical Thresholds
	// Components overrides Warn and Critical for the named components
	// (ComponentArchive, SinkComponent("kafka"), ...): the archive's lag
	// is bounded by archive.timeout by design, not by the replication
	// objective. Zero fields follow the same defaults as Warn and
	// Critical.
	Components map[string]ComponentThresholds
	// AlertEvery is the least time between two log lines for an alert that
	// stays raised; default 1m. A change of level is logged at once.
	AlertEvery time.Duration
}

// Level is the state of a lag objective.
type Level int

const (
	LevelOK Level = iota
	LevelWarning
	LevelCritical
)

func (l Level) String() string {
	switch l {
	case LevelWarning:
		return "warning"
	case LevelCritical:
		return "critical"
	}
	return "ok"
}

// LagSummary is one component's lag percentiles and objective state.
type LagSummary struct {
	Component string
	Samples   uint64
	// P50, P95, P99, P999 are zero when Samples is zero.
	P50, P95, P99, P999 time.Duration
	Level               Level
	// Breach names the worst breached percentile and its limit, e.g.
	// "p99 812ms > critical 500ms"; empty when Level is LevelOK.
	Breach string
	Since  time.Time // when Level was entered
}

// lagTracker holds a Window per component and the objective state.
type lagTracker struct {
	opts LagOptions
	log  *slog.Logger
	// onLevel publishes gauges when an objective is evaluated.
	onEval func(component string, s LagSummary, ok bool)

	mu struct {
		sync.Mutex
		comps map[string]*lagComponent
	}
}

type lagComponent struct {
	win     *Window
	level   Level
	since   time.Time
	lastLog time.Time
	last    LagSummary
}

// ComponentThresholds are one component's lag limits.
type ComponentThresholds struct {
	Warn, Critical Thresholds
}

func (o *LagOptions) setDefaults() error {
	for name, c := range o.Components {
		co := LagOptions{Window: 1, Slots: 1, AlertEvery: 1, Warn: c.Warn, Critical: c.Critical}
		if err := co.setDefaults(); err != nil {
			return fmt.Errorf("%w (component %s)", err, name)
		}
		o.Components[name] = ComponentThresholds{Warn: co.Warn, Critical: co.Critical}
	}
	if o.Window == 0 {
		o.Window = 5 * time.Minute
	}
	if o.Window < 0 {
		return fmt.Errorf("obs: lag window %v is negative", o.Window)
	}
	if o.Slots == 0 {
		o.Slots = 60
	}
	if o.Slots < 1 || o.Slots > 3600 {
		return fmt.Errorf("obs: lag window slots %d out of range 1..3600", o.Slots)
	}
	if o.AlertEvery == 0 {
		o.AlertEvery = time.Minute
	}
	o.Warn = o.Warn.withDefaults(DefaultWarn)
	tenfold := Thresholds{}
	for i, w := range o.Warn.list() {
		v := max(w, 0) * 10
		switch i {
		case 0:
			tenfold.P50 = v
		case 1:
			tenfold.P95 = v
		case 2:
			tenfold.P99 = v
		case 3:
			tenfold.P999 = v
		}
	}
	o.Critical = o.Critical.withDefaults(tenfold)
	w, c := o.Warn.list(), o.Critical.list()
	for i := range w {
		if w[i] > 0 && c[i] > 0 && c[i] < w[i] {
			return fmt.Errorf("obs: lag.critical.%s (%v) is below lag.warn.%s (%v)", quantileNames[i], c[i], quantileNames[i], w[i])
		}
	}
	return nil
}

func newLagTracker(opts LagOptions, log *slog.Logger, onEval func(string, LagSummary, bool)) *lagTracker {
	t := &lagTracker{opts: opts, log: log, onEval: onEval}
	t.mu.comps = map[string]*lagComponent{}
	return t
}

// add records one lag sample for component.
func (t *lagTracker) add(component string, at time.Time, lag time.Duration) {
	t.mu.Lock()
	c := t.mu.comps[component]
	if c == nil {
		c = &lagComponent{win: NewWindow(t.opts.Window, t.opts.Slots)}
		t.mu.comps[component] = c
	}
	c.win.Add(at, lag)
	t.mu.Unlock()
}

// evaluate computes every component's percentiles as of now, updates the
// objective states, logs transitions (rate-limited while an alert stays
// raised) and returns the summaries sorted by component.
func (t *lagTracker) evaluate(now time.Time) []LagSummary {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]LagSummary, 0, len(t.mu.comps))
	for name, c := range t.mu.comps {
		s := LagSummary{Component: name, Samples: c.win.Count(now)}
		ps, ok := c.win.Quantiles(now, quantiles)
		level, breach := LevelOK, ""
		if ok {
			s.P50, s.P95, s.P99, s.P999 = ps[0], ps[1], ps[2], ps[3]
			level, breach = t.judge(name, ps)
		}
		prev := c.level
		if level != prev || c.since.IsZero() {
			c.level, c.since = level, now
		}
		s.Level, s.Breach, s.Since = level, breach, c.since
		t.logLocked(c, s, prev, now)
		c.last = s
		if t.onEval != nil {
			t.onEval(name, s, ok)
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Component < out[j].Component })
	return out
}

// judge returns the worst level and a description of the breach that
// caused it (the first percentile, in order, that breaches that level).
func (t *lagTracker) judge(component string, ps []time.Duration) (Level, string) {
	crit, warn := t.opts.Critical.list(), t.opts.Warn.list()
	if c, ok := t.opts.Components[component]; ok {
		crit, warn = c.Critical.list(), c.Warn.list()
	}
	for i, p := range ps {
		if crit[i] > 0 && p > crit[i] {
			return LevelCritical, fmt.Sprintf("%s %v > critical %v", quantileNames[i], p, crit[i])
		}
	}
	for i, p := range ps {
		if warn[i] > 0 && p > warn[i] {
			return LevelWarning, fmt.Sprintf("%s %v > warn %v", quantileNames[i], p, warn[i])
		}
	}
	return LevelOK, ""
}

func (t *lagTracker) logLocked(c *lagComponent, s LagSummary, prev Level, now time.Time) {
	attrs := []any{"component", s.Component, "alert", s.Level.String(), "breach", s.Breach,
		"p50", s.P50, "p95", s.P95, "p99", s.P99, "p999", s.P999, "samples", s.Samples, "window", t.opts.Window}
	switch {
	case s.Level == LevelOK && prev != LevelOK:
		c.lastLog = now
		t.log.Info("lag objective met again", attrs...)
	case s.Level != LevelOK && (s.Level != prev || now.Sub(c.lastLog) >= t.opts.AlertEvery):
		c.lastLog = now
		lvl := slog.LevelWarn
		if s.Level == LevelCritical {
			lvl = slog.LevelError
		}
		t.log.Log(context.Background(), lvl, "lag objective breached", attrs...)
	}
}
