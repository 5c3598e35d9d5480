// Package status serves /status, walship's web page for people, and
// /status.json, the data it polls (docs/OBSERVABILITY.md).
//
// The page is one self-contained HTML document — inline CSS, JavaScript
// and SVG, no external assets — so it works on an isolated host. It draws
// the pipeline (source → WAL → sinks and replicas) with positions and
// lags, charts of lag and throughput over the last hour, the lag
// objectives, the archive's PITR window and snapshots, and warnings. The
// first state is embedded in the page (it renders without any request);
// the page then polls status.json (a relative URL) every 2 s.
//
// Input is a Provider the daemon supplies; Snapshot.AddMetrics fills the
// lag, history and warnings from an *obs.Metrics. Every byte served passes
// secret.Text, so a DSN or URL with a password put in a Snapshot shows as
// user:REDACTED@host.
package status

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"reflect"
	"strconv"
	"time"

	"github.com/walship/walship/internal/secret"
	"github.com/walship/walship/obs"
)

// Duration is a time.Duration that marshals to JSON as seconds.
type Duration time.Duration

// MarshalJSON writes the duration in seconds.
func (d Duration) MarshalJSON() ([]byte, error) {
	return strconv.AppendFloat(nil, time.Duration(d).Seconds(), 'f', -1, 64), nil
}

// Snapshot is everything the page shows at one moment. Zero and nil parts
// are left out of the page.
type Snapshot struct {
	Title   string    `json:"title"`   // e.g. "walship run"
	Role    string    `json:"role"`    // "primary" | "replica"
	Host    string    `json:"host"`    // hostname
	Version string    `json:"version"` // walship version
	Time    time.Time `json:"time"`    // when the snapshot was taken; default now
	Started time.Time `json:"started"` // process start

	Source  *Source  `json:"source,omitempty"`
	WAL     *WAL     `json:"wal,omitempty"`
	Sinks   []Sink   `json:"sinks"` // Kafka, archive, replicas: the right-hand side of the pipeline
	Archive *Archive `json:"archive,omitempty"`
	// Dependencies are the external systems the process uses and their
	// health (filled by AddMetrics).
	Dependencies []Dependency `json:"dependencies"`
	// Group is the HA group this process is a member of, nil if none.
	Group    *Group    `json:"group,omitempty"`
	Lag      []Lag     `json:"lag"`
	Series   []Series  `json:"series"`
	Warnings []Warning `json:"warnings"`
}

// Source is where changes come from (Postgres, the HTTP source, or for a
// replica, Kafka).
type Source struct {
	Kind      string   `json:"kind"`                 // postgres | http | kafka
	Name      string   `json:"name"`                 // slot, listen address, topic
	Position  string   `json:"position,omitempty"`   // source position, e.g. Postgres "0/16B3748"
	LSN       uint64   `json:"lsn"`                  // last walship LSN appended (primary)
	SlotBytes int64    `json:"slot_bytes,omitempty"` // Postgres slot lag in bytes
	Lag       Duration `json:"lag"`
	State     string   `json:"state"` // ok | retrying | failed | snapshotting ...
	Error     string   `json:"error,omitempty"`
	// Incremental is a Postgres source's incremental snapshots, if any
	// ran or are queued.
	Incremental *Incremental `json:"incremental,omitempty"`
}

// Incremental is the progress of a Postgres source's incremental
// snapshots: the table being copied, rows and chunks copied by this
// process, requests queued or under way.
type Incremental struct {
	Table   string `json:"table,omitempty"`
	Rows    uint64 `json:"rows"`
	Chunks  uint64 `json:"chunks"`
	Pending int    `json:"pending"`
	// Failed counts the requests abandoned by this process (their SELECT
	// failed on the SQL or the data; the source's log says why).
	Failed int `json:"failed,omitempty"`
}

// WAL is the local log.
type WAL struct {
	Dir        string    `json:"dir"`
	FirstLSN   uint64    `json:"first_lsn"`
	VisibleLSN uint64    `json:"visible_lsn"`
	Segments   int       `json:"segments"`
	SizeBytes  int64     `json:"size_bytes"`
	LastCommit time.Time `json:"last_commit,omitzero"`
	// State is what the process's own readiness check of the log says:
	// "ok", or "critical" with Error (e.g. wal.max_bytes exceeded) while
	// it makes /readyz 503; a critical WAL also gets a Warning. "" is
	// "unknown": the page never shows an unreported state as ok.
	State string `json:"state"`
	Error string `json:"error,omitempty"`
}

// Sink is one consumer of the log: a Kafka producer, the archiver, a
// replica applier.
type Sink struct {
	Name       string   `json:"name"`
	Kind       string   `json:"kind"`   // kafka | archive | replica
	Target     string   `json:"target"` // brokers/topic, archive URL, replica URL
	LSN        uint64   `json:"lsn"`
	LagRecords uint64   `json:"lag_records"`
	LagBytes   int64    `json:"lag_bytes"`
	Lag        Duration `json:"lag"`
	// State: ok | retrying | failed | down | unknown (its dependency not
	// reached yet). Only "ok", "up" and "snapshotting" are drawn green.
	State string `json:"state"`
	Error string `json:"error,omitempty"`
}

// Archive is the archive's PITR window and snapshots.
type Archive struct {
	URL       string         `json:"url"`
	Oldest    time.Time      `json:"oldest"` // earliest restorable commit time
	Newest    time.Time      `json:"newest"` // latest restorable commit time
	Segments  int            `json:"segments"`
	Encrypted bool           `json:"encrypted"`
	KeyID     string         `json:"key_id,omitempty"`
	Snapshots []SnapshotInfo `json:"snapshots"`
}

// SnapshotInfo is one base snapshot in the archive.
type SnapshotInfo struct {
	LSN  uint64    `json:"lsn"`
	Time time.Time `json:"time"`
	Size int64     `json:"size"`
}

// Dependency is one external system (PostgreSQL, Kafka, the archive's
// backend, the replica database) and its health.
type Dependency struct {
	Name string `json:"name"`
	// Required: while it is down the process is not ready (/readyz 503);
	// otherwise it is degraded.
	Required bool   `json:"required"`
	State    string `json:"state"` // up | down | unknown (not reached yet)
	// Since is when State began.
	Since   time.Time `json:"since,omitzero"`
	Error   string    `json:"error,omitempty"` // the last error, also after recovery
	ErrorAt time.Time `json:"error_at,omitzero"`
}

// Lag is one component's lag objective.
type Lag struct {
	Component string   `json:"component"`
	Samples   uint64   `json:"samples"`
	P50       Duration `json:"p50"`
	P95       Duration `json:"p95"`
	P99       Duration `json:"p99"`
	P999      Duration `json:"p999"`
	Level     string   `json:"level"` // ok | warning | critical
	Breach    string   `json:"breach,omitempty"`
}

// Series is one component's history, oldest first.
type Series struct {
	Component string  `json:"component"`
	Points    []Point `json:"points"`
}

// Point is one history sample.
type Point struct {
	T        time.Time `json:"t"`
	Lag      Duration  `json:"lag"`
	Rate     float64   `json:"rate"`      // records/s
	ByteRate float64   `json:"byte_rate"` // bytes/s
}

// Group is an HA group as one member sees it.
type Group struct {
	Name   string `json:"name"`   // the group (the Kafka topic prefix)
	Member string `json:"member"` // this member
	Role   string `json:"role"`   // leader | follower
	Leader string `json:"leader"`
	Term   int64  `json:"term"`
	// LeaseLeft is how long this member's term stays valid without a
	// renewal (leader only).
	LeaseLeft Duration      `json:"lease_left"`
	Members   []GroupMember `json:"members"`
	// Loss names transactions this member found lost when it took over
	// (empty when none).
	Loss string `json:"loss,omitempty"`
}

// GroupMember is a member of an HA group as last heard from.
type GroupMember struct {
	Name     string    `json:"name"`
	Role     string    `json:"role"`
	Position uint64    `json:"position"`
	Seen     time.Time `json:"seen"`
}

// Warning is shown at the top of the page.
type Warning struct {
	Level     string    `json:"level"` // warning | critical
	Component string    `json:"component"`
	Message   string    `json:"message"`
	Since     time.Time `json:"since"`
}

// AddMetrics fills Dependencies, Lag and Series from m and appends a
// Warning for every dependency that is down (critical if it is required)
// or required and not reached yet, and for every breached lag objective.
func (s *Snapshot) AddMetrics(m *obs.Metrics) {
	for _, d := range m.Dependencies() {
		dep := Dependency{Name: d.Name, Required: d.Gates, State: "unknown", Since: d.Since, Error: d.LastError, ErrorAt: d.LastErrorAt}
		switch {
		case d.Known && d.Up:
			dep.State = "up"
		case d.Known:
			dep.State = "down"
			level, what := "warning", "down (degraded: not required for readiness)"
			if d.Gates {
				level, what = "critical", "down (not ready)"
			}
			if d.LastError != "" {
				what += ": " + d.LastError
			}
			s.Warnings = append(s.Warnings, Warning{Level: level, Component: "dependency/" + d.Name, Message: what, Since: d.Since})
		case d.Gates:
			s.Warnings = append(s.Warnings, Warning{Level: "warning", Component: "dependency/" + d.Name, Message: "not reached yet (not ready)"})
		}
		s.Dependencies = append(s.Dependencies, dep)
	}
	for _, l := range m.Lag() {
		s.Lag = append(s.Lag, Lag{Component: l.Component, Samples: l.Samples, P50: Duration(l.P50), P95: Duration(l.P95),
			P99: Duration(l.P99), P999: Duration(l.P999), Level: l.Level.String(), Breach: l.Breach})
		if l.Level != obs.LevelOK {
			s.Warnings = append(s.Warnings, Warning{Level: l.Level.String(), Component: l.Component,
				Message: "lag objective breached: " + l.Breach, Since: l.Since})
		}
	}
	for _, h := range m.History() {
		ser := Series{Component: h.Component, Points: make([]Point, len(h.Points))}
		for i, p := range h.Points {
			ser.Points[i] = Point{T: p.T, Lag: Duration(p.Lag), Rate: p.Rate, ByteRate: p.ByteRate}
		}
		s.Series = append(s.Series, ser)
	}
}

// Provider returns the current snapshot; it is called once per request.
type Provider func(ctx context.Context) (Snapshot, error)

// render returns the snapshot as redacted JSON.
func render(ctx context.Context, p Provider) ([]byte, error) {
	s, err := p(ctx)
	if err != nil {
		return nil, secret.Error(err)
	}
	if s.Time.IsZero() {
		s.Time = time.Now()
	}
	if w := s.WAL; w != nil && w.State != "" && w.State != "ok" {
		// The log failing its readiness check makes the process not
		// ready: say so where people look first.
		s.Warnings = append(s.Warnings, Warning{Level: "critical", Component: "wal", Message: "not ready: " + w.Error})
	}
	// Empty lists as [] keep the page's code simple.
	if s.Sinks == nil {
		s.Sinks = []Sink{}
	}
	if s.Lag == nil {
		s.Lag = []Lag{}
	}
	if s.Dependencies == nil {
		s.Dependencies = []Dependency{}
	}
	if s.Series == nil {
		s.Series = []Series{}
	}
	if s.Warnings == nil {
		s.Warnings = []Warning{}
	}
	for i := range s.Series {
		if s.Series[i].Points == nil {
			s.Series[i].Points = []Point{}
		}
	}
	if s.Archive != nil && s.Archive.Snapshots == nil {
		s.Archive.Snapshots = []SnapshotInfo{}
	}
	redactStrings(reflect.ValueOf(&s).Elem())
	b, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("status: encoding snapshot: %w", err)
	}
	// json.Marshal escapes <, > and &, so the result is also safe inside
	// a <script> element.
	return b, nil
}

// redactStrings applies secret.Text to every string reachable from v
// (struct fields, slices, pointers), in place. Redacting before encoding
// keeps the JSON well-formed whatever the strings contain.
func redactStrings(v reflect.Value) {
	switch v.Kind() {
	case reflect.String:
		if v.CanSet() {
			v.SetString(secret.Text(v.String()))
		}
	case reflect.Pointer:
		if !v.IsNil() {
			redactStrings(v.Elem())
		}
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			redactStrings(v.Field(i))
		}
	case reflect.Slice, reflect.Array:
		for i := 0; i < v.Len(); i++ {
			redactStrings(v.Index(i))
		}
	}
}

// JSONHandler serves /status.json.
func JSONHandler(p Provider) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := render(r.Context(), p)
		if err != nil {
			http.Error(w, "status: "+err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.Write(b)
	})
}

var pageTmpl = template.Must(template.New("status").Parse(pageHTML))

// PageHandler serves /status.
func PageHandler(p Provider) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := render(r.Context(), p)
		if err != nil {
			http.Error(w, "status: "+err.Error(), http.StatusInternalServerError)
			return
		}
		var buf bytes.Buffer
		// The JSON is inserted verbatim into a <script type=application/json>;
		// it is already HTML-safe (see render).
		if err := pageTmpl.Execute(&buf, template.JS(b)); err != nil {
			http.Error(w, "status: "+err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		// The page loads nothing from anywhere; forbid it outright.
		w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; connect-src 'self'")
		w.Write(buf.Bytes())
	})
}

// Register adds GET /status and GET /status.json to mux.
func Register(mux *http.ServeMux, p Provider) {
	mux.Handle("GET /status", PageHandler(p))
	mux.Handle("GET /status.json", JSONHandler(p))
}
