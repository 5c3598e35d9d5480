package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/walship/walship/config"
	"github.com/walship/walship/daemon"
	"github.com/walship/walship/internal/cli"
)

// runSnapshot is `walship snapshot --config FILE --table T [--where SQL]`:
// it asks the running daemon of that config (its operator listener,
// http.listen, with http.token) for an incremental snapshot of table T
// (docs/POSTGRES.md, "Incremental snapshots"). Exit 0 once queued (the
// request printed as JSON), 1 when the daemon refuses it or cannot be
// reached, 2 on bad usage or config.
func runSnapshot(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("snapshot", stderr)
	path := fs.String("config", "", "the config of the running walship run")
	table := fs.String("table", "", "the table to copy, schema.table")
	where := fs.String("where", "", "an SQL condition: copy only the rows matching it")
	if help, err := parseFlags(fs, args); help || err != nil {
		return err
	}
	if err := requireFlag("config", *path); err != nil {
		return err
	}
	if err := requireFlag("table", *table); err != nil {
		return err
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return cli.Exit(2, err)
	}
	if cfg.Source.Postgres == nil {
		return cli.Exit(2, errors.New(*path+": no source.postgres section: incremental snapshots copy PostgreSQL tables"))
	}
	url, client, err := operatorClient(cfg.HTTP.Listener)
	if err != nil {
		return cli.Exit(2, err)
	}
	body, _ := json.Marshal(daemon.SnapshotRequestBody{Table: *table, Where: *where})
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/snapshot", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if cfg.HTTP.Token != "" {
		req.Header.Set("Authorization", "Bearer "+cfg.HTTP.Token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return cli.Exit(1, fmt.Errorf("walship snapshot: reach the daemon at %s (is walship run running with this config?): %w", url, err))
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusAccepted {
		var e struct {
			Error string `json:"error"`
		}
		msg := strings.TrimSpace(string(out))
		if json.Unmarshal(out, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		return cli.Exit(1, fmt.Errorf("walship snapshot: the daemon refused (%s): %s", resp.Status, msg))
	}
	_, err = stdout.Write(out)
	return err
}

// operatorClient returns the base URL of the operator listener l and a
// client for it: HTTPS trusting l's own certificate when it has one; a
// wildcard listen address is reached on loopback.
func operatorClient(l config.Listener) (string, *http.Client, error) {
	host, port, err := net.SplitHostPort(l.Listen)
	if err != nil {
		return "", nil, fmt.Errorf("http.listen %q: %v", l.Listen, err)
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	client := &http.Client{Timeout: 30 * time.Second}
	scheme := "http"
	if l.TLSCert != "" {
		scheme = "https"
		pem, err := os.ReadFile(l.TLSCert)
		if err != nil {
			return "", nil, fmt.Errorf("http.tls_cert: %v", err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	}
	return scheme + "://" + net.JoinHostPort(host, port), client, nil
}
