package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/walship/walship/change"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/walship/walship/checksum"
	"github.com/walship/walship/consumer"
	"github.com/walship/walship/obs"
	"github.com/walship/walship/pgsource"
	"github.com/walship/walship/replica"
	"github.com/walship/walship/status"
)

// buildChecksum adds the check rounds (checksum:) over the PostgreSQL
// source src as a component.
func (d *Daemon) buildChecksum(src *pgsource.Source) {
	k := d.cfg.Checksum
	if k == nil {
		return
	}
	p := d.cfg.Source.Postgres
	protected := map[string][]string{}
	for _, t := range p.Tables {
		if cols := append(slices.Clone(t.Hash), t.Mask...); len(cols) > 0 {
			if tb, err := change.ParseTable(t.Table); err == nil { // validated with the config
				protected[tb.String()] = cols
			}
		}
	}
	r := checksum.New(checksum.Options{DSN: p.DSN, Publication: p.Publication, ChunkRows: k.ChunkRows, Rate: k.Rate,
		Schedule: k.Schedule, Store: d.srcCkpts, Logger: d.log, Protected: protected,
		Ready: func() bool { return p.Snapshot == "never" || src.Stats().SnapshotDone }})
	d.checksum = r
	d.sources = append(d.sources, component{name: "checksum", run: r.Run})
}

// ChecksumRequest is the body of POST /v1/checksum.
type ChecksumRequest struct {
	// Table limits the round to one table ("schema.name"); "" for all.
	Table string `json:"table"`
}

// handleChecksum serves POST /v1/checksum (start a round) and GET (the
// runner's status) on the operator listener.
func (d *Daemon) handleChecksum(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	if d.checksum == nil {
		w.WriteHeader(http.StatusNotFound)
		json.NewEncoder(w).Encode(map[string]string{"error": "no checksum section in this walship's config (or no source.postgres)"})
		return
	}
	switch r.Method {
	case http.MethodGet:
		json.NewEncoder(w).Encode(d.checksum.Status())
	case http.MethodPost:
		var req ChecksumRequest
		if r.ContentLength != 0 {
			if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&req); err != nil {
				w.WriteHeader(http.StatusBadRequest)
				json.NewEncoder(w).Encode(map[string]string{"error": "body: " + err.Error()})
				return
			}
		}
		if err := d.checksum.Start(req.Table); err != nil {
			code := http.StatusInternalServerError
			if errors.Is(err, checksum.ErrBusy) {
				code = http.StatusConflict
			}
			w.WriteHeader(code)
			json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
			return
		}
		w.WriteHeader(http.StatusAccepted)
		json.NewEncoder(w).Encode(map[string]string{"started": "round queued", "table": req.Table})
	default:
		w.Header().Set("Allow", "GET, POST")
		w.WriteHeader(http.StatusMethodNotAllowed)
	}
}

// registerChecksumMetrics exports the consumer's check attempts
// (walship_checksum_attempts_total{result}) and returns the verdict that
// /status shows.
func registerChecksumMetrics(m *obs.Metrics, c *consumer.Consumer, replicaURL string) *checksumVerdict {
	for _, r := range []string{"equal", "different"} {
		m.Registry().MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "walship_checksum_attempts_total",
			Help:        "Check attempts (walship.checksum messages) the replica verified, by result; a differing attempt a recheck clears is no difference.",
			ConstLabels: prometheus.Labels{"result": r}}, func() float64 {
			s := c.Stats()
			if r == "equal" {
				return float64(s.ChecksumsEqual)
			}
			return float64(s.ChecksumsDifferent)
		}))
	}
	return &checksumVerdict{url: replicaURL, c: c}
}

// checksumVerdict is the replica's last finished check round, read from
// walship_checksums when a check was applied since the last read.
type checksumVerdict struct {
	url string
	c   *consumer.Consumer
	mu  sync.Mutex
	at  uint64 // attempts counted when rep was read
	rep *checksum.Report
}

// warn adds a warning to snap when the last finished round found a
// difference.
func (v *checksumVerdict) warn(ctx context.Context, snap *status.Snapshot) {
	v.mu.Lock()
	defer v.mu.Unlock()
	s := v.c.Stats()
	if n := s.ChecksumsEqual + s.ChecksumsDifferent; n != v.at || v.rep == nil {
		res, err := replica.ReadChecksums(ctx, v.url)
		if err != nil {
			return
		}
		rep := checksum.Summarize(res)
		v.rep, v.at = &rep, n
	}
	if v.rep.Exit() != checksum.ExitDifferent {
		return
	}
	n := 0
	for _, t := range v.rep.Tables {
		n += len(t.Different)
	}
	snap.Warnings = append(snap.Warnings, status.Warning{Level: "critical", Component: "checksum",
		Message: fmt.Sprintf("check round %s: %d chunk(s) differ from the source (walship checksum report)", v.rep.Round, n), Since: time.Now().UTC()})
}
