package status_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/walship/walship/internal/httpx"
	"github.com/walship/walship/internal/logx"
	"github.com/walship/walship/internal/secret"
	"github.com/walship/walship/obs"
	"github.com/walship/walship/status"
)

// Example shows how walship run wires the operator endpoint: logger,
// metrics (fed by the components), the status page and a secure listener.
func Example() {
	log, err := logx.New(logx.Options{Format: "json", Level: "info", Writer: os.Stderr})
	if err != nil {
		panic(err)
	}
	m, err := obs.New(obs.Options{Logger: log, Lag: obs.LagOptions{Window: 5 * time.Minute}})
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go m.Run(ctx) // history and lag objectives, every 5 s

	// Components report through setters (normally from their own loops):
	// wal.Options{Observe: m.ObserveWAL}; m.WatchWAL(w.Log); ...
	m.SinkPosition("kafka", obs.Position{LSN: 42, LagRecords: 0, Lag: 3 * time.Millisecond})
	m.AddReadiness("wal", func(context.Context) error { return nil })

	mux := m.Mux() // /metrics, /healthz, /readyz
	status.Register(mux, func(ctx context.Context) (status.Snapshot, error) {
		s := status.Snapshot{Title: "walship run", Role: "primary",
			Sinks: []status.Sink{{Name: "kafka", Kind: "kafka", LSN: 42, State: "ok"}}}
		s.AddMetrics(m)
		return s, nil
	})
	srv, err := httpx.Listen(httpx.Options{Addr: "127.0.0.1:0", Name: "http", Token: secret.Secret(""),
		Public: []string{"/healthz"}, Logger: log}, mux)
	if err != nil {
		panic(err)
	}
	defer srv.Close()
	fmt.Println("status page at", srv.URL()[:len("http://127.0.0.1:")]+"…/status")
	// Output: status page at http://127.0.0.1:…/status
}
