package status_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/walship/walship/internal/httpx"
	"github.com/walship/walship/internal/logx"
	"github.com/walship/walship/internal/secret"
	"github.com/walship/walship/obs"
	"github.com/walship/walship/status"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// TestNoSecretAnywhere runs an operator-endpoint scenario whose inputs are
// full of secrets — DSN and S3 passwords, a SASL password, the listener's
// token, an encryption key — and greps every log line and every page and
// response for them.
func TestNoSecretAnywhere(t *testing.T) {
	const (
		pgPass   = "pg-Pa55-9f3a1"
		s3Secret = "wJalrXUtnFEMIK7MDENGbPxRfiCY"
		saslPass = "sasl-Pa55-77b"
		token    = "tok-5b2c7e1d9a0f4e3c"
		keyHex   = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
	)
	secrets := []string{pgPass, s3Secret, saslPass, token, keyHex}
	pgDSN := "postgres://walship:" + pgPass + "@db.internal:5432/app?sslmode=require"
	s3URL := "s3://AKIAEXAMPLE:" + s3Secret + "@minio.internal:9000/walship"

	for _, format := range []string{"json", "text"} {
		t.Run(format, func(t *testing.T) {
			logs := &lockedBuffer{}
			log, err := logx.New(logx.Options{Format: format, Level: "debug", Writer: logs})
			if err != nil {
				t.Fatal(err)
			}
			m, err := obs.New(obs.Options{Logger: log, Lag: obs.LagOptions{Warn: obs.Thresholds{P50: time.Millisecond}}})
			if err != nil {
				t.Fatal(err)
			}
			m.AddReadiness("postgres", func(context.Context) error { return fmt.Errorf("connect %s: connection refused", pgDSN) })
			m.AddReadiness("archive", func(context.Context) error { return errors.New("s3: secret_key=" + s3Secret + " rejected") })
			m.SinkPosition("kafka", obs.Position{LSN: 10, Lag: time.Second})
			m.Tick(time.Now()) // raises (and logs) a lag alert

			mux := m.Mux()
			status.Register(mux, func(context.Context) (status.Snapshot, error) {
				s := status.Snapshot{Title: "walship run",
					Source: &status.Source{Kind: "postgres", Name: pgDSN, Error: "auth failed for " + pgDSN},
					Sinks: []status.Sink{{Name: "kafka", Kind: "kafka", Target: "sasl plain user=walship password=" + saslPass},
						{Name: "replica", Kind: "replica", Target: pgDSN}},
					Archive:  &status.Archive{URL: s3URL, Encrypted: true, KeyID: "0011223344556677"},
					Warnings: []status.Warning{{Level: "critical", Component: "archive", Message: "upload to " + s3URL + " failed"}},
				}
				s.AddMetrics(m)
				return s, nil
			})
			srv, err := httpx.Listen(httpx.Options{Addr: "127.0.0.1:0", Token: secret.Secret(token), Public: []string{"/healthz"}, Logger: log}, mux)
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()

			var pages strings.Builder
			for _, path := range []string{"/status", "/status.json", "/readyz", "/metrics", "/healthz"} {
				for _, auth := range []string{"Bearer " + token, "Bearer wrong-" + token[:8], ""} {
					req, _ := http.NewRequest("GET", srv.URL()+path, nil)
					if auth != "" {
						req.Header.Set("Authorization", auth)
					}
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if auth == "Bearer "+token && path != "/readyz" && resp.StatusCode != 200 {
						t.Errorf("%s: %d", path, resp.StatusCode)
					}
					fmt.Fprintf(&pages, "== %s (auth %d chars) %d\n%s\n", path, len(auth), resp.StatusCode, b)
				}
			}
			// What components log in such a run.
			log.Error("replication connection lost", "err", fmt.Errorf("read %s: EOF", pgDSN), "dsn", pgDSN)
			log.Warn("kafka", "sasl_password", saslPass, "brokers", "b1:9092")
			log.Info("archive", "url", s3URL, "encryption_key", keyHex, "key", "lineage/1/seg/0001")
			log.Debug("http request", "authorization", "Bearer "+token)

			all := logs.String() + pages.String()
			for _, s := range secrets {
				if strings.Contains(all, s) {
					t.Errorf("secret %q appears in the output:\n%s", s, all)
				}
			}
			for _, want := range []string{"walship:REDACTED@db.internal", "lag objective breached", "postgres: connect", "lineage/1/seg/0001"} {
				if !strings.Contains(all, want) {
					t.Errorf("output lacks %q (over-redaction or missing scenario step)", want)
				}
			}
		})
	}
}
