package daemon

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
)

func (d *Daemon) buildPostgres(ctx context.Context) error {
	return errors.New("source.postgres: not available in this build")
}

func (d *Daemon) buildSinks(ctx context.Context) error {
	if d.cfg.Archive != nil {
		return errors.New("archive: not available in this build")
	}
	if d.cfg.Kafka != nil {
		return errors.New("kafka: not available in this build")
	}
	return nil
}

// buildHTTP binds the operator listener: /healthz, /readyz, /v1/positions.
func (d *Daemon) buildHTTP() error {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-d.ready:
		default:
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		if d.retention.overLimit.Load() {
			http.Error(w, "wal.max_bytes exceeded: a sink is behind", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("/v1/positions", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(d.Positions())
	})
	_, err := d.listen("http", d.cfg.HTTP.Listener, mux)
	return err
}

// Positions is a summary of where every part of the pipeline is.
type Positions struct {
	DurableLSN uint64            `json:"durable_lsn"`
	FirstLSN   uint64            `json:"first_lsn"`
	WALBytes   int64             `json:"wal_bytes"`
	Sinks      map[string]uint64 `json:"sinks"`
}

// Positions returns the current positions.
func (d *Daemon) Positions() Positions {
	p := Positions{DurableLSN: d.wal.Durable(), FirstLSN: d.wal.Log.FirstLSN(), WALBytes: d.retention.walBytes.Load(), Sinks: map[string]uint64{}}
	for _, c := range d.sinkCkpts.All() {
		p.Sinks[c.Name] = c.Pos
	}
	return p
}

// requireToken wraps h with a constant-time bearer-token check; /healthz
// stays open so that load balancers can probe without the secret.
func requireToken(token string, h http.Handler) http.Handler {
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			got := []byte(strings.TrimSpace(r.Header.Get("Authorization")))
			if subtle.ConstantTimeCompare(got, want) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="walship"`)
				http.Error(w, "missing or wrong bearer token", http.StatusUnauthorized)
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}
