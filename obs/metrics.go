// Package obs is walship's observability core (docs/OBSERVABILITY.md): a Prometheus
// registry walship owns, the metrics every component reports through,
// lag objectives over a sliding window, a one-hour in-memory history for
// the status page, and the /healthz and /readyz handlers.
//
// Components do not import obs's internals; they get a *Metrics (or just
// a callback) and call small setters:
//
//	wal.Options{Observe: m.ObserveWAL}          // appends, bytes, batch, fsync
//	m.WatchWAL(w.Log)                           // size, segments, first/visible LSN
//	m.SinkPosition("kafka", obs.Position{...})  // per sink
//	m.ConsumerPosition("replica", obs.Position{...})
//	m.SourcePosition("postgres", obs.Position{...}); m.SlotLag("walship", bytes)
//	m.ArchiveState(obs.Archive{...})            // archive lag, PITR window
//	m.Retry("kafka", "broker_down"); m.Error("archive", "put")
//	m.AddDependency("kafka", false, trackerOfTheSink.State) // up/down, since, last error
//	go m.Run(ctx)                               // history + lag objectives
//
// Every setter is safe for concurrent use and never blocks on I/O.
//
// # Lag objectives
//
// Every Position report with a Lag is one sample of its component's lag
// (components: "sink/<name>", "consumer/<name>", "source/<name>",
// "archive"). Run evaluates, every Resolution, the nearest-rank
// p50/p95/p99/p99.9 of each component's samples over the last
// LagOptions.Window (see Window for the bounded error) against the
// warn/critical thresholds, sets walship_lag_percentile_seconds and
// walship_lag_alert{component,level}, and logs a transition at once and
// a persisting alert at most every LagOptions.AlertEvery. A component
// that reports nothing for a whole window has no samples and is "ok":
// components should report on every checkpoint and at least once per
// Resolution while idle (with their current lag).
//
// # Metrics
//
// All names start with walship_; counters end in _total; units are
// seconds and bytes. LSNs are exported as gauges (exact up to 2^53). The
// full list with meanings is in docs/OBSERVABILITY.md and is checked by a
// test.
package obs

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/walship/walship/segment"
)

// Options configure New. The zero value is valid.
type Options struct {
	Lag LagOptions
	// Resolution is the step of the history and of lag evaluation;
	// default 5s.
	Resolution time.Duration
	// History is how much history is kept; default 1h.
	History time.Duration
	// Logger receives lag alerts; default slog.Default().
	Logger *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
	// NoProcessCollectors leaves out the Go and process collectors (tests
	// that compare whole expositions).
	NoProcessCollectors bool
}

// Position is a component's progress, reported by the component.
type Position struct {
	// LSN is the last walship LSN the component has durably handled
	// (sink: acknowledged; consumer: applied; source: appended).
	LSN uint64
	// LagRecords is how many records it is behind the log's visible end.
	LagRecords uint64
	// LagBytes is how many bytes it is behind, if known (else 0).
	LagBytes int64
	// Lag is how far behind it is in time: now minus the commit time of
	// the oldest committed transaction it has not handled (0 when caught
	// up). One sample of the lag objectives.
	Lag time.Duration
}

// Archive is the archive's state, reported by the archiver.
type Archive struct {
	Position
	// Oldest and Newest bound the PITR window: the earliest and latest
	// commit times a restore can target. Zero when unknown.
	Oldest, Newest time.Time
	// Snapshots is the number of base snapshots stored.
	Snapshots int
}

// WALLog is what WatchWAL reads; *segment.Log implements it.
type WALLog interface {
	Dir() string
	Segments() []segment.SegmentInfo
	FirstLSN() uint64
	Visible() uint64
}

var _ WALLog = (*segment.Log)(nil)

// Metrics owns walship's registry and metrics.
type Metrics struct {
	opts Options
	reg  *prometheus.Registry
	log  *slog.Logger
	lag  *lagTracker

	walRecords, walBytes prometheus.Counter
	walBatch, walBatchB  prometheus.Histogram
	walFsync             prometheus.Histogram

	posLSN, lagRecords, lagBytes, lagSeconds map[string]*prometheus.GaugeVec // by kind: sink, consumer, source
	slotLag                                  *prometheus.GaugeVec
	incRows, incChunks, incPending           *prometheus.GaugeVec
	levelLSN                                 *prometheus.GaugeVec
	haRole                                   *prometheus.GaugeVec
	haTerm, haTakeover, haLost               prometheus.Gauge
	haTakeovers                              prometheus.Counter
	archLSN, archLagRecords, archLagSeconds  prometheus.Gauge
	pitrOldest, pitrNewest, archSnapshots    prometheus.Gauge
	retries, errors                          *prometheus.CounterVec
	lagAlert, lagPercentile                  *prometheus.GaugeVec
	httpRejected                             *prometheus.CounterVec
	httpReplayed                             prometheus.Counter
	httpInflight                             prometheus.Gauge

	health checks

	mu struct {
		sync.Mutex
		hist     map[string]*history
		walWatch bool
		lastLag  []LagSummary
		depUp    map[string]bool // each dependency's Up at the last Tick that knew it
		lastHTTP HTTPSource
		// lastTakeovers is the takeover count last reported (HAState adds
		// the difference to the counter).
		lastTakeovers int64
	}
}

// Component names used by the history and the lag objectives.
const (
	ComponentWAL     = "wal"
	ComponentArchive = "archive"
)

// SinkComponent, ConsumerComponent and SourceComponent name components.
func SinkComponent(name string) string     { return "sink/" + name }
func ConsumerComponent(name string) string { return "consumer/" + name }
func SourceComponent(name string) string   { return "source/" + name }

// New creates the registry and registers every metric on it.
func New(opts Options) (*Metrics, error) {
	if err := opts.Lag.setDefaults(); err != nil {
		return nil, err
	}
	if opts.Resolution == 0 {
		opts.Resolution = 5 * time.Second
	}
	if opts.History == 0 {
		opts.History = time.Hour
	}
	if opts.Resolution < 0 || opts.History < opts.Resolution {
		return nil, fmt.Errorf("obs: resolution %v and history %v: want 0 < resolution <= history", opts.Resolution, opts.History)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	m := &Metrics{opts: opts, reg: prometheus.NewRegistry(), log: opts.Logger}
	m.mu.hist = map[string]*history{}
	if !opts.NoProcessCollectors {
		m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	f := factory{reg: m.reg}
	m.walRecords = f.counter("walship_wal_records_total", "Log records made durable (written, with sync off) by the WAL.")
	m.walBytes = f.counter("walship_wal_bytes_total", "Bytes written to the WAL by group commits.")
	m.walBatch = f.histogram("walship_wal_batch_records", "Records per group commit (write + fsync).", prometheus.ExponentialBuckets(1, 4, 10))
	m.walBatchB = f.histogram("walship_wal_batch_bytes", "Bytes per group commit.", prometheus.ExponentialBuckets(256, 4, 10))
	m.walFsync = f.histogram("walship_wal_fsync_seconds", "Time of one group commit's write and fsync.", prometheus.ExponentialBuckets(50e-6, 2, 17))
	m.posLSN, m.lagRecords, m.lagBytes, m.lagSeconds = map[string]*prometheus.GaugeVec{}, map[string]*prometheus.GaugeVec{}, map[string]*prometheus.GaugeVec{}, map[string]*prometheus.GaugeVec{}
	for _, kind := range []string{"sink", "consumer", "source"} {
		m.posLSN[kind] = f.gaugeVec("walship_"+kind+"_position_lsn", "Last walship LSN the "+kind+" has durably handled.", kind)
		m.lagRecords[kind] = f.gaugeVec("walship_"+kind+"_lag_records", "Records the "+kind+" is behind the WAL's visible end.", kind)
		m.lagBytes[kind] = f.gaugeVec("walship_"+kind+"_lag_bytes", "Bytes the "+kind+" is behind, where known.", kind)
		m.lagSeconds[kind] = f.gaugeVec("walship_"+kind+"_lag_seconds", "Age of the oldest transaction the "+kind+" has not handled.", kind)
	}
	m.levelLSN = f.gaugeVec("walship_replication_level_lsn", "Highest LSN each replication level has reached: local (durable in the log), shipped (stored by every sink of wal.shipped_sinks), applied (applied by the quorum of wal.applied_quorum).", "level")
	m.haRole = f.gaugeVec("walship_ha_role", "1 for this HA group member's current role (leader or follower), 0 for the other.", "role")
	m.haTerm = f.gauge("walship_ha_term", "The HA group's current leadership term as this member sees it.")
	m.haTakeovers = f.counter("walship_ha_takeovers_total", "Times this member took over the lead of its HA group since it started.")
	m.haTakeover = f.gauge("walship_ha_takeover_seconds", "Time of this member's last takeover, from winning the lease to leading (fencing the old producer and catching up included).")
	m.haLost = f.gauge("walship_ha_lost_ranges", "Ranges of source positions this member found confirmed to PostgreSQL by a previous leader and missing from the group's log (lost transactions; wal.sync local).")
	m.slotLag = f.gaugeVec("walship_postgres_slot_lag_bytes", "Bytes of Postgres WAL retained by the replication slot (pg_current_wal_lsn - confirmed_flush_lsn).", "slot")
	m.incRows = f.gaugeVec("walship_postgres_incremental_snapshot_rows", "Rows copied by incremental snapshots since this process started.", "slot")
	m.incChunks = f.gaugeVec("walship_postgres_incremental_snapshot_chunks", "Chunks copied by incremental snapshots since this process started.", "slot")
	m.incPending = f.gaugeVec("walship_postgres_incremental_snapshot_pending", "Incremental snapshots queued or under way.", "slot")
	m.archLSN = f.gauge("walship_archive_position_lsn", "Last walship LSN stored in the archive.")
	m.archLagRecords = f.gauge("walship_archive_lag_records", "Records not yet archived.")
	m.archLagSeconds = f.gauge("walship_archive_lag_seconds", "Age of the oldest transaction not yet archived (RPO; bounded by archive.timeout).")
	m.pitrOldest = f.gauge("walship_pitr_oldest_restorable_timestamp_seconds", "Earliest commit time a point-in-time restore can target (Unix seconds).")
	m.pitrNewest = f.gauge("walship_pitr_newest_restorable_timestamp_seconds", "Latest commit time a point-in-time restore can target (Unix seconds).")
	m.archSnapshots = f.gauge("walship_archive_snapshots", "Base snapshots stored in the archive.")
	m.retries = f.counterVec("walship_retries_total", "Retried operations by component and kind.", "component", "kind")
	m.errors = f.counterVec("walship_errors_total", "Errors by component and kind.", "component", "kind")
	m.lagAlert = f.gaugeVec("walship_lag_alert", "1 while the component's lag objective is breached at this level (warning, critical), else 0.", "component", "level")
	m.lagPercentile = f.gaugeVec("walship_lag_percentile_seconds", "Lag percentile (label percentile: 50, 95, 99, 99.9) over the sliding window.", "component", "percentile")
	m.httpRejected = f.counterVec("walship_http_rejected_total", "Requests the HTTP source refused, by reason: load (429, source.http.max_inflight_bytes) or request (4xx: the request's fault).", "reason")
	m.httpReplayed = f.counter("walship_http_replayed_total", "Idempotent retries the HTTP source answered from the log, appending nothing.")
	m.httpInflight = f.gauge("walship_http_inflight_bytes", "Body bytes reserved by the HTTP source's requests in flight (bounded by source.http.max_inflight_bytes).")
	if f.err != nil {
		return nil, f.err
	}
	m.lag = newLagTracker(opts.Lag, opts.Logger, m.publishLag)
	m.health.init()
	if err := m.reg.Register(dependencyCollector{m}); err != nil {
		return nil, err
	}
	return m, nil
}

type factory struct {
	reg *prometheus.Registry
	err error
}

func (f *factory) register(c prometheus.Collector) {
	if err := f.reg.Register(c); err != nil && f.err == nil {
		f.err = err
	}
}

func (f *factory) counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	f.register(c)
	return c
}

func (f *factory) gauge(name, help string) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	f.register(g)
	return g
}

func (f *factory) histogram(name, help string, buckets []float64) prometheus.Histogram {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets})
	f.register(h)
	return h
}

func (f *factory) gaugeVec(name, help string, labels ...string) *prometheus.GaugeVec {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
	f.register(g)
	return g
}

func (f *factory) counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	f.register(c)
	return c
}

// Registry is walship's registry; components with their own collectors
// register on it.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves /metrics in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(m.log.Handler(), slog.LevelWarn)})
}

// ObserveWAL has the signature of wal.Options.Observe: records and bytes
// of one group commit and how long its write and fsync took.
func (m *Metrics) ObserveWAL(records, bytes int, took time.Duration) {
	m.walRecords.Add(float64(records))
	m.walBytes.Add(float64(bytes))
	m.walBatch.Observe(float64(records))
	m.walBatchB.Observe(float64(bytes))
	m.walFsync.Observe(took.Seconds())
	m.mu.Lock()
	h := m.histLocked(ComponentWAL)
	h.records += uint64(records)
	h.bytes += uint64(bytes)
	h.hasCounter = true
	m.mu.Unlock()
}

// WatchWAL exports the log's size, segment count and first and visible
// LSNs, read at each scrape. Call it once per process; a second call
// returns an error (the metric names are taken).
func (m *Metrics) WatchWAL(l WALLog) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.mu.walWatch {
		return fmt.Errorf("obs: WatchWAL called twice")
	}
	m.mu.walWatch = true
	f := factory{reg: m.reg}
	f.register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "walship_wal_size_bytes", Help: "Bytes of the retained WAL segment files."}, func() float64 {
		var n int64
		for _, s := range l.Segments() {
			if fi, err := os.Stat(filepath.Join(l.Dir(), s.Name)); err == nil { // removed meanwhile: skip
				n += fi.Size()
			}
		}
		return float64(n)
	}))
	f.register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "walship_wal_segments", Help: "Retained WAL segment files."}, func() float64 { return float64(len(l.Segments())) }))
	f.register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "walship_wal_first_lsn", Help: "LSN of the first retained record."}, func() float64 { return float64(l.FirstLSN()) }))
	f.register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "walship_wal_visible_lsn", Help: "LSN of the last durable commit (what readers see)."}, func() float64 { return float64(l.Visible()) }))
	return f.err
}

func (m *Metrics) position(kind, name, component string, p Position) {
	m.posLSN[kind].WithLabelValues(name).Set(float64(p.LSN))
	m.lagRecords[kind].WithLabelValues(name).Set(float64(p.LagRecords))
	m.lagBytes[kind].WithLabelValues(name).Set(float64(p.LagBytes))
	m.lagSeconds[kind].WithLabelValues(name).Set(p.Lag.Seconds())
	m.report(component, p)
}

func (m *Metrics) report(component string, p Position) {
	now := m.opts.Now()
	m.lag.add(component, now, p.Lag)
	m.mu.Lock()
	h := m.histLocked(component)
	h.lsn, h.hasLSN = p.LSN, true
	h.maxLag = max(h.maxLag, p.Lag)
	h.lastLag, h.reported = p.Lag, true
	m.mu.Unlock()
}

// HTTPSource is what the HTTP source reports: its counters since start
// and the bytes it holds now.
type HTTPSource struct {
	Rejected, RejectedLoad, Replayed uint64
	InflightBytes                    int64
}

// HTTPSourceState publishes the HTTP source's counters (s holds totals
// since start; the metrics add what is new since the last call).
func (m *Metrics) HTTPSourceState(s HTTPSource) {
	m.mu.Lock()
	last := m.mu.lastHTTP
	m.mu.lastHTTP = s
	m.mu.Unlock()
	m.httpRejected.WithLabelValues("load").Add(float64(s.RejectedLoad - last.RejectedLoad))
	m.httpRejected.WithLabelValues("request").Add(float64((s.Rejected - s.RejectedLoad) - (last.Rejected - last.RejectedLoad)))
	m.httpReplayed.Add(float64(s.Replayed - last.Replayed))
	m.httpInflight.Set(float64(s.InflightBytes))
}

// SinkPosition reports a sink's position (label sink=name; component
// "sink/<name>").
func (m *Metrics) SinkPosition(name string, p Position) {
	m.position("sink", name, SinkComponent(name), p)
}

// ConsumerPosition reports a consumer's (replica applier's) position.
func (m *Metrics) ConsumerPosition(name string, p Position) {
	m.position("consumer", name, ConsumerComponent(name), p)
}

// SourcePosition reports a source's position: LSN is the last LSN it
// appended, Lag the age of the newest source commit it appended when the
// source is known to have more (0 when caught up).
func (m *Metrics) SourcePosition(name string, p Position) {
	m.position("source", name, SourceComponent(name), p)
}

// SlotLag reports the Postgres replication slot's retained WAL in bytes.
func (m *Metrics) SlotLag(slot string, bytes int64) {
	m.slotLag.WithLabelValues(slot).Set(float64(bytes))
}

// IncrementalSnapshots reports a Postgres source's incremental snapshot
// progress: rows and chunks copied by this process, requests pending.
func (m *Metrics) IncrementalSnapshots(slot string, rows, chunks uint64, pending int) {
	m.incRows.WithLabelValues(slot).Set(float64(rows))
	m.incChunks.WithLabelValues(slot).Set(float64(chunks))
	m.incPending.WithLabelValues(slot).Set(float64(pending))
}

// ReplicationLevel reports the highest LSN a replication level ("local",
// "shipped", "applied") has reached.
func (m *Metrics) ReplicationLevel(level string, lsn uint64) {
	m.levelLSN.WithLabelValues(level).Set(float64(lsn))
}

// HA is an HA group member's state for the metrics.
type HA struct {
	Leader     bool
	Term       int64
	Takeovers  int64
	Takeover   time.Duration
	LostRanges int
}

// HAState reports an HA group member's state.
func (m *Metrics) HAState(h HA) {
	leader, follower := 0.0, 1.0
	if h.Leader {
		leader, follower = 1, 0
	}
	m.haRole.WithLabelValues("leader").Set(leader)
	m.haRole.WithLabelValues("follower").Set(follower)
	m.haTerm.Set(float64(h.Term))
	m.mu.Lock()
	last := m.mu.lastTakeovers
	m.mu.lastTakeovers = h.Takeovers
	m.mu.Unlock()
	m.haTakeovers.Add(float64(h.Takeovers - last))
	m.haTakeover.Set(h.Takeover.Seconds())
	m.haLost.Set(float64(h.LostRanges))
}

// ArchiveState reports the archive's position and PITR window.
func (m *Metrics) ArchiveState(a Archive) {
	m.archLSN.Set(float64(a.LSN))
	m.archLagRecords.Set(float64(a.LagRecords))
	m.archLagSeconds.Set(a.Lag.Seconds())
	if !a.Oldest.IsZero() {
		m.pitrOldest.Set(float64(a.Oldest.UnixNano()) / 1e9)
	}
	if !a.Newest.IsZero() {
		m.pitrNewest.Set(float64(a.Newest.UnixNano()) / 1e9)
	}
	m.archSnapshots.Set(float64(a.Snapshots))
	m.report(ComponentArchive, a.Position)
}

// Retry counts a retried operation; kind is a short fixed word
// (e.g. "broker_unavailable", "s3_503"), never an error text.
func (m *Metrics) Retry(component, kind string) { m.retries.WithLabelValues(component, kind).Inc() }

// Error counts an error; kind as for Retry.
func (m *Metrics) Error(component, kind string) { m.errors.WithLabelValues(component, kind).Inc() }

func (m *Metrics) histLocked(component string) *history {
	h := m.mu.hist[component]
	if h == nil {
		h = &history{ring: newRing(int(m.opts.History / m.opts.Resolution))}
		m.mu.hist[component] = h
	}
	return h
}

func (m *Metrics) publishLag(component string, s LagSummary, ok bool) {
	ps := []time.Duration{s.P50, s.P95, s.P99, s.P999}
	for i, q := range quantileLabels {
		if ok {
			m.lagPercentile.WithLabelValues(component, q).Set(ps[i].Seconds())
		} else {
			m.lagPercentile.DeleteLabelValues(component, q)
		}
	}
	b2f := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	m.lagAlert.WithLabelValues(component, "warning").Set(b2f(s.Level == LevelWarning))
	m.lagAlert.WithLabelValues(component, "critical").Set(b2f(s.Level == LevelCritical))
}

// Tick takes one history sample of every component and evaluates the lag
// objectives as of now. Run calls it every Resolution; tests call it
// with a fake clock.
func (m *Metrics) Tick(now time.Time) []LagSummary {
	m.mu.Lock()
	for _, h := range m.mu.hist {
		h.tick(now)
	}
	m.mu.Unlock()
	sums := m.lag.evaluate(now)
	m.mu.Lock()
	m.mu.lastLag = sums
	m.mu.Unlock()
	m.logDependencies()
	return sums
}

// logDependencies logs each dependency that went down or came back since
// the last Tick.
func (m *Metrics) logDependencies() {
	deps := m.Dependencies()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.mu.depUp == nil {
		m.mu.depUp = map[string]bool{}
	}
	for _, d := range deps {
		if !d.Known {
			continue
		}
		was, seen := m.mu.depUp[d.Name]
		m.mu.depUp[d.Name] = d.Up
		switch {
		case !d.Up && (!seen || was):
			m.log.Warn("dependency down", "dependency", d.Name, "required_for_readiness", d.Gates, "since", d.Since, "err", d.LastError)
		case d.Up && seen && !was:
			m.log.Info("dependency up again", "dependency", d.Name, "since", d.Since)
		}
	}
}

// Run calls Tick every Resolution until ctx ends; it returns ctx.Err().
// The caller owns the goroutine.
func (m *Metrics) Run(ctx context.Context) error {
	t := time.NewTicker(m.opts.Resolution)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			m.Tick(m.opts.Now())
		}
	}
}

// History returns every component's history, sorted by component.
func (m *Metrics) History() []Series {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Series, 0, len(m.mu.hist))
	for name, h := range m.mu.hist {
		out = append(out, Series{Component: name, Points: h.ring.points()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Component < out[j].Component })
	return out
}

// Lag returns the lag summaries of the last Tick, sorted by component.
func (m *Metrics) Lag() []LagSummary {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]LagSummary(nil), m.mu.lastLag...)
}

// LagOptions returns the effective lag options (defaults filled in).
func (m *Metrics) LagOptions() LagOptions { return m.opts.Lag }
