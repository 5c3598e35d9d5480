package daemon

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/walship/walship/checksum"
	"github.com/walship/walship/pgsource"
)

// buildChecksum adds the check rounds (checksum:) over the PostgreSQL
// source src as a component.
func (d *Daemon) buildChecksum(src *pgsource.Source) {
	k := d.cfg.Checksum
	if k == nil {
		return
	}
	p := d.cfg.Source.Postgres
	r := checksum.New(checksum.Options{DSN: p.DSN, Publication: p.Publication, ChunkRows: k.ChunkRows, Rate: k.Rate,
		Schedule: k.Schedule, Store: d.srcCkpts, Logger: d.log,
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
