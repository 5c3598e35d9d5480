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
	"time"

	"github.com/walship/walship/checksum"
	"github.com/walship/walship/config"
	"github.com/walship/walship/daemon"
	"github.com/walship/walship/internal/cli"
	"github.com/walship/walship/replica"
)

// runChecksum is `walship checksum start|report` (docs/CHECKSUM.md).
//
//	start  --config RUN_CONFIG [--table T]   ask the running daemon for a round
//	report --config CONSUME_CONFIG [--json]  the replica's verdict: exit 0
//	                                         equal, 1 different, 3 no round finished
func runChecksum(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("checksum", stderr)
	path := fs.String("config", "", "start: the walship run config; report: the walship consume config")
	table := fs.String("table", "", "start: check only this table (schema.name)")
	asJSON := fs.Bool("json", false, "report: print the report as JSON")
	if len(args) == 0 || (args[0] != "start" && args[0] != "report") {
		if help, err := parseFlags(fs, args); help || err != nil {
			return err // -h: the command's help
		}
		return cli.UsageError("walship checksum: want the subcommand start or report")
	}
	sub, args := args[0], args[1:]
	if help, err := parseFlags(fs, args); help || err != nil {
		return err
	}
	if err := requireFlag("config", *path); err != nil {
		return err
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return cli.Exit(2, err)
	}
	if sub == "start" {
		return checksumStart(ctx, cfg, *table, stdout)
	}
	if cfg.Replica == nil {
		return cli.Exit(2, errors.New(*path+": no replica section: report reads the replica's walship_checksums"))
	}
	res, err := replica.ReadChecksums(ctx, cfg.Replica.URL)
	if err != nil {
		return cli.Exit(2, err)
	}
	rep := checksum.Summarize(res)
	if *asJSON {
		stdout.Write(append(rep.JSON(), '\n'))
	} else {
		rep.Print(stdout)
	}
	switch rep.Exit() {
	case checksum.ExitDifferent:
		return cli.Exit(checksum.ExitDifferent, fmt.Errorf("round %s: the replica differs from the source (see above)", rep.Round))
	case checksum.ExitUnfinished:
		return cli.Exit(checksum.ExitUnfinished, errors.New("no check round has finished on this replica yet"))
	}
	return nil
}

// checksumStart posts the round to the daemon's operator listener (http:).
func checksumStart(ctx context.Context, cfg *config.Config, table string, stdout io.Writer) error {
	if cfg.Checksum == nil {
		return cli.Exit(2, errors.New("no checksum section in the config: the daemon runs no check rounds"))
	}
	l := cfg.HTTP.Listener
	host, port, err := net.SplitHostPort(l.Listen)
	if err != nil {
		return cli.Exit(2, fmt.Errorf("http.listen %q: %w", l.Listen, err))
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
			return cli.Exit(2, fmt.Errorf("http.tls_cert: %w", err))
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	}
	body, _ := json.Marshal(daemon.ChecksumRequest{Table: table})
	url := scheme + "://" + net.JoinHostPort(host, port) + "/v1/checksum"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if l.Token != "" {
		req.Header.Set("Authorization", "Bearer "+l.Token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("asking the daemon at %s for a round: %w", url, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("daemon at %s: %s: %s", url, resp.Status, bytes.TrimSpace(out))
	}
	if table == "" {
		table = "every table"
	}
	fmt.Fprintf(stdout, "check round queued (%s); walship checksum report --config <consume config> gives the verdict once the replica applied it\n", table)
	return nil
}
