package daemon

import (
	"context"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/walship/walship/archive"
	"github.com/walship/walship/change"
	"github.com/walship/walship/internal/secret"
	"github.com/walship/walship/kafkawire"
	"github.com/walship/walship/obs"
	"github.com/walship/walship/status"
)

// atomicTime is a time.Time safe for concurrent use.
type atomicTime struct{ v atomic.Pointer[time.Time] }

func (a *atomicTime) Load() time.Time {
	if p := a.v.Load(); p != nil {
		return *p
	}
	return time.Time{}
}

func (a *atomicTime) Store(t time.Time) { a.v.Store(&t) }

func (d *Daemon) pollPostgres() {
	s := d.pg.Stats()
	d.metrics.SlotLag(d.cfg.Source.Postgres.Slot, s.SlotLagBytes)
	d.metrics.IncrementalSnapshots(d.cfg.Source.Postgres.Slot, s.IncrementalRows, s.IncrementalChunks, s.IncrementalPending)
	d.metrics.SourcePosition("postgres", obs.Position{LSN: d.wal.Durable()})
}

// catalogInterval is how often the archive's catalog is read for the PITR
// window and the snapshot list.
const catalogInterval = 30 * time.Second

// watchCatalog refreshes the archive's oldest restorable time and the
// status page's archive summary.
func (d *Daemon) watchCatalog(ctx context.Context) error {
	t := time.NewTicker(catalogInterval)
	defer t.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, catalogInterval)
		cat, err := d.archiveHandle.Catalog(cctx)
		cancel()
		if err == nil {
			d.setCatalog(cat)
		} else if ctx.Err() == nil {
			d.log.Warn("reading the archive catalog", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (d *Daemon) setCatalog(cat *archive.Catalog) {
	lin := cat.Lineage(Lineage)
	if lin == nil {
		return
	}
	sum := &status.Archive{URL: secret.URL(d.cfg.Archive.URL), Segments: len(lin.Segments),
		Encrypted: d.cfg.Archive.EncryptionKeyFile != "" || d.cfg.Archive.EncryptionKeyEnv != ""}
	var oldest time.Time
	if len(lin.Snapshots) > 0 {
		oldest = lin.Snapshots[0].CommitTime
	} else if len(lin.Segments) > 0 && lin.Segments[0].FirstLSN <= 1 {
		oldest = lin.Segments[0].FirstCommitTime
	}
	for _, s := range lin.Snapshots {
		sum.Snapshots = append(sum.Snapshots, status.SnapshotInfo{LSN: s.LSN, Time: s.CommitTime, Size: s.Size})
	}
	if n := len(lin.Segments); n > 0 {
		sum.Newest = lin.Segments[n-1].LastCommitTime
	}
	sum.Oldest = oldest
	d.archiveOldest.Store(oldest)
	d.archiveSummary.Store(sum)
}

// registerStatus adds /status and /status.json to mux.
func (d *Daemon) registerStatus(mux *http.ServeMux) {
	host, _ := os.Hostname()
	started := time.Now()
	status.Register(mux, func(ctx context.Context) (status.Snapshot, error) {
		snap := status.Snapshot{Title: "walship run", Role: "primary", Host: host, Version: Version(), Started: started}
		segs := d.wal.Segments()
		snap.WAL = &status.WAL{Dir: d.cfg.WAL.Dir, FirstLSN: d.wal.FirstLSN(), VisibleLSN: d.wal.Durable(),
			Segments: len(segs), SizeBytes: d.retention.walBytes.Load(), State: "ok"}
		if err := d.walProblem(); err != nil {
			snap.WAL.State, snap.WAL.Error = "critical", err.Error()
		}
		durable := d.wal.Durable()
		leading := d.leading()
		switch {
		case !leading:
			// A follower runs no source and no sink (the group section says
			// who does).
		case d.pg != nil:
			s := d.pg.Stats()
			state := "ok"
			if !s.SnapshotDone && s.SnapshotTables > 0 {
				state = "snapshotting"
			}
			state, errText := depState(s.Server, state)
			snap.Source = &status.Source{Kind: "postgres", Name: d.cfg.Source.Postgres.Slot, Position: change.FormatSourceLSN(s.LastSourceLSN),
				LSN: durable, SlotBytes: s.SlotLagBytes, State: state, Error: errText}
			if s.IncrementalPending > 0 || s.IncrementalChunks > 0 || s.IncrementalFailed > 0 {
				snap.Source.Incremental = &status.Incremental{Table: s.IncrementalTable, Rows: s.IncrementalRows,
					Chunks: s.IncrementalChunks, Pending: s.IncrementalPending, Failed: s.IncrementalFailed}
			}
		case d.httpSource.Load() != nil:
			snap.Source = &status.Source{Kind: "http", Name: d.Addr("source.http"), LSN: durable, State: "ok"}
		}
		if k := d.kafka; k != nil && leading {
			s := k.Stats()
			topic := kafkawire.OrderedTopic(d.cfg.Kafka.TopicPrefix)
			if d.cfg.Kafka.Mode == kafkawire.ModeTables {
				topic = d.cfg.Kafka.TopicPrefix + ".<schema>.<table>"
			}
			state, errText := depState(s.Brokers, sinkState(s.LagRecords, s.Retries))
			snap.Sinks = append(snap.Sinks, status.Sink{Name: topic, Kind: "kafka", Target: strings.Join(d.cfg.Kafka.Brokers, ","),
				LSN: s.AckedLSN, LagRecords: s.LagRecords, Lag: status.Duration(time.Duration(s.LagSeconds * float64(time.Second))), State: state, Error: errText})
		}
		if a := d.archiver; a != nil && leading {
			s := a.Stats()
			lag := uint64(0)
			if durable > s.ArchivedLSN {
				lag = durable - s.ArchivedLSN
			}
			st := status.Sink{Name: Lineage, Kind: "archive", Target: secret.URL(d.cfg.Archive.URL), LSN: s.ArchivedLSN,
				LagRecords: lag, Lag: status.Duration(s.Lag), Error: s.LastError}
			ok := "ok"
			if s.LastError != "" && lag > 0 {
				ok = "retrying"
			}
			var depErr string
			if st.State, depErr = depState(s.Backend, ok); depErr != "" {
				st.Error = depErr
			}
			snap.Sinks = append(snap.Sinks, st)
			if sum := d.archiveSummary.Load(); sum != nil {
				snap.Archive = sum
			}
		}
		if m := d.ha; m != nil {
			snap.Role = m.role()
			snap.Group = m.statusGroup(d.cfg.Kafka.TopicPrefix)
			if snap.Group.Loss != "" {
				snap.Warnings = append(snap.Warnings, status.Warning{Level: "critical", Component: "ha",
					Message: "transactions lost at takeover: " + snap.Group.Loss + " (walship ha check)"})
			}
		}
		snap.AddMetrics(d.metrics)
		return snap, nil
	})
}

func sinkState(lag, retries uint64) string {
	if lag > 0 && retries > 0 {
		return "retrying"
	}
	return "ok"
}
