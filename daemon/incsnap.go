package daemon

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/walship/walship/pgsource"
)

// SnapshotRequestBody is the body of POST /v1/snapshot on the operator
// listener: an incremental snapshot of Table ("schema.table") restricted
// to the rows matching Where (an SQL predicate; empty for all). With
// Repair it is a repair of that key range instead (docs/CHECKSUM.md,
// "Repair"): its chunks also delete the replica rows of the range that
// the source does not have; Where must then be empty.
type SnapshotRequestBody struct {
	Table  string             `json:"table"`
	Where  string             `json:"where,omitempty"`
	Repair *pgsource.KeyRange `json:"repair,omitempty"`
}

// handleSnapshot queues an incremental snapshot of the PostgreSQL source
// (docs/POSTGRES.md, "Incremental snapshots"), or a repair of a key range
// (docs/CHECKSUM.md, "Repair"): 202 with the request; 400
// for a malformed body, a table without a primary key or a bad where
// clause; 404 for a table that does not exist or is not published; 409
// when this daemon runs no PostgreSQL source (or follows in an HA group).
func (d *Daemon) handleSnapshot(w http.ResponseWriter, r *http.Request) {
	fail := func(code int, msg string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(map[string]string{"error": msg})
	}
	if d.pg == nil || !d.leading() {
		fail(http.StatusConflict, "no PostgreSQL source runs here (source.postgres is not configured, or this HA member follows)")
		return
	}
	var body SnapshotRequestBody
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		fail(http.StatusBadRequest, "body: want {\"table\": \"schema.table\", \"where\": \"...\"}: "+err.Error())
		return
	}
	if body.Table == "" {
		fail(http.StatusBadRequest, "body: table is required (\"schema.table\")")
		return
	}
	var req pgsource.SnapshotRequest
	var err error
	switch {
	case body.Repair != nil && body.Where != "":
		fail(http.StatusBadRequest, "body: a repair covers a key range: where must be empty")
		return
	case body.Repair != nil:
		req, err = d.pg.RequestRepair(r.Context(), body.Table, body.Repair.After, body.Repair.Hi)
	default:
		req, err = d.pg.RequestSnapshot(r.Context(), body.Table, body.Where)
	}
	switch {
	case errors.Is(err, pgsource.ErrUnknownTable), errors.Is(err, pgsource.ErrNotPublished):
		fail(http.StatusNotFound, err.Error())
		return
	case errors.Is(err, pgsource.ErrNoPrimaryKey), errors.Is(err, pgsource.ErrBadRequest):
		fail(http.StatusBadRequest, err.Error())
		return
	case err != nil:
		fail(http.StatusServiceUnavailable, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	json.NewEncoder(w).Encode(req)
}
