package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/walship/walship/config"
	"github.com/walship/walship/internal/health"
	"github.com/walship/walship/obs"
	"github.com/walship/walship/wal"
)

// pollInterval is how often component positions are read into the
// metrics.
const pollInterval = time.Second

// lagOptions maps the lag: section to the objectives. The archive is
// judged against its own bound, archive.timeout (by design its newest
// object may be that old): warn when the median exceeds it, critical at
// ten times.
func lagOptions(c config.Lag, a *config.Archive) obs.LagOptions {
	th := func(p config.Percentiles) obs.Thresholds {
		return obs.Thresholds{P50: p.P50, P95: p.P95, P99: p.P99, P999: p.P999}
	}
	o := obs.LagOptions{Window: c.Window, Warn: th(c.Warn), Critical: th(c.Critical)}
	if a != nil {
		to := a.Timeout
		o.Components = map[string]obs.ComponentThresholds{
			obs.ComponentArchive: {Warn: obs.Thresholds{P50: to, P95: 2 * to, P99: 3 * to, P999: 5 * to}},
		}
	}
	return o
}

// buildHTTP binds the operator listener: /metrics, /healthz, /readyz,
// /status, /status.json, /v1/positions and POST /v1/snapshot.
func (d *Daemon) buildHTTP() error {
	if err := d.metrics.WatchWAL(d.wal); err != nil {
		return err
	}
	d.metrics.AddReadiness("started", func(context.Context) error {
		select {
		case <-d.ready:
			return nil
		default:
			return errors.New("starting")
		}
	})
	d.metrics.AddReadiness("wal", func(context.Context) error { return d.walProblem() })
	if d.ha == nil {
		// A group member's sources and sinks are its dependencies only
		// once it leads (lead).
		d.addDependencies()
	}
	mux := d.metrics.Mux()
	mux.HandleFunc("/v1/positions", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(d.Positions())
	})
	mux.HandleFunc("/v1/checksum", d.handleChecksum)
	d.registerStatus(mux)
	mux.HandleFunc("POST /v1/snapshot", d.handleSnapshot)
	_, err := d.listen("http", d.cfg.HTTP.Listener, mux)
	return err
}

// walProblem is why the log makes the daemon not ready, nil when it does
// not: /readyz's "wal" check and the status page's WAL state both read it.
func (d *Daemon) walProblem() error {
	if d.retention.overLimit.Load() {
		return errors.New("wal.max_bytes exceeded: a sink is behind (see the log)")
	}
	return nil
}

// addDependencies registers the external systems walship run uses with
// the metrics (docs/OBSERVABILITY.md "Dependencies"). Only the PostgreSQL
// source gates readiness: while it is down nothing is captured. A dead
// Kafka or archive backend does not stop the log from accepting and
// keeping writes (retention holds them until the sink catches up): the
// daemon is degraded then, not unready.
func (d *Daemon) addDependencies() {
	if pg := d.pg; pg != nil {
		d.metrics.AddDependency("postgres", true, func() health.State { return pg.Stats().Server })
	}
	if k := d.kafka; k != nil {
		d.metrics.AddDependency("kafka", false, func() health.State { return k.Stats().Brokers })
	}
	if a := d.archiver; a != nil {
		d.metrics.AddDependency("archive", false, func() health.State { return a.Stats().Backend })
	}
}

// depState is the state a status page shows for a component whose
// dependency is in st: "down" while it is, "unknown" until it was first
// reached (a component whose dependency is not up is never "ok"), else ok.
func depState(st health.State, ok string) (state, errText string) {
	switch {
	case !st.Known:
		return "unknown", ""
	case !st.Up:
		return "down", st.LastError
	}
	return ok, ""
}

// observe reads every component's position into the metrics each
// pollInterval, and runs the metrics' own ticker.
func (d *Daemon) observe(ctx context.Context) error {
	go d.metrics.Run(ctx)
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		d.pollOnce()
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (d *Daemon) pollOnce() {
	durable := d.wal.Durable()
	d.metrics.ReplicationLevel(wal.LevelLocal.String(), d.levels.Position(wal.LevelLocal))
	if len(d.levels.Sinks()) > 0 {
		d.metrics.ReplicationLevel(wal.LevelShipped.String(), d.levels.Position(wal.LevelShipped))
	}
	if d.levels.Quorum() != nil {
		d.metrics.ReplicationLevel(wal.LevelApplied.String(), d.levels.Position(wal.LevelApplied))
	}
	behind := func(lsn uint64) uint64 {
		if durable > lsn {
			return durable - lsn
		}
		return 0
	}
	if !d.leading() {
		// A follower runs no source and no sink: their positions would
		// only say how far behind a component is that does not run.
		d.pollHA()
		return
	}
	if src := d.httpSource.Load(); src != nil {
		d.metrics.SourcePosition("http", obs.Position{LSN: durable})
		s := src.Stats()
		d.metrics.HTTPSourceState(obs.HTTPSource{Rejected: s.Rejected, RejectedLoad: s.RejectedLoad,
			Replayed: s.Replayed, InflightBytes: s.InflightBytes})
	}
	if d.pg != nil {
		d.pollPostgres()
	}
	d.pollHA()
	if k := d.kafka; k != nil {
		s := k.Stats()
		d.metrics.SinkPosition("kafka", obs.Position{LSN: s.AckedLSN, LagRecords: s.LagRecords,
			Lag: time.Duration(s.LagSeconds * float64(time.Second))})
	}
	if a := d.archiver; a != nil {
		s := a.Stats()
		d.metrics.ArchiveState(obs.Archive{Position: obs.Position{LSN: s.ArchivedLSN, LagRecords: behind(s.ArchivedLSN), Lag: s.Lag},
			Oldest: d.archiveOldest.Load(), Newest: s.ArchivedCommitTime})
	}
}

// leading reports whether this daemon writes: a single daemon always, a
// group member while it leads.
func (d *Daemon) leading() bool { return d.ha == nil || d.ha.leader.Load() }

// pollHA reports a group member's state to the metrics.
func (d *Daemon) pollHA() {
	m := d.ha
	if m == nil {
		return
	}
	p := m.position()
	lost := 0
	if p.Loss != nil {
		lost = 1
	}
	d.metrics.HAState(obs.HA{Leader: m.leader.Load(), Term: p.Term, Takeovers: p.Takeovers,
		Takeover: time.Duration(p.TakeoverMS) * time.Millisecond, LostRanges: lost})
}
