package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/walship/walship/change"
	"github.com/walship/walship/checksum"
	"github.com/walship/walship/config"
	"github.com/walship/walship/daemon"
	"github.com/walship/walship/internal/cli"
	"github.com/walship/walship/pgsource"
	"github.com/walship/walship/replica"
)

// runChecksum is `walship checksum start|report|repair` (docs/CHECKSUM.md).
//
//	start  --config RUN_CONFIG [--table T]   ask the running daemon for a round
//	report --config CONSUME_CONFIG [--json]  the replica's verdict: exit 0
//	                                         equal, 1 different, 3 no round finished
//	repair --config CONSUME_CONFIG --run-config RUN_CONFIG
//	                                         ask the running daemon to copy again
//	                                         each chunk the replica's last finished
//	                                         round found different
func runChecksum(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("checksum", stderr)
	path := fs.String("config", "", "start: the walship run config; report: the walship consume config")
	table := fs.String("table", "", "start: check only this table (schema.name)")
	asJSON := fs.Bool("json", false, "report: print the report as JSON")
	runConfig := fs.String("run-config", "", "repair: the walship run config (the daemon that queues the repairs)")
	if len(args) == 0 || (args[0] != "start" && args[0] != "report" && args[0] != "repair") {
		if help, err := parseFlags(fs, args); help || err != nil {
			return err // -h: the command's help
		}
		return cli.UsageError("walship checksum: want the subcommand start, report or repair")
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
	if sub == "repair" {
		return checksumRepair(ctx, rep, *runConfig, stdout)
	}
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
	body, _ := json.Marshal(daemon.ChecksumRequest{Table: table})
	if _, err := operatorPost(ctx, cfg, "/v1/checksum", body); err != nil {
		return err
	}
	if table == "" {
		table = "every table"
	}
	fmt.Fprintf(stdout, "check round queued (%s); walship checksum report --config <consume config> gives the verdict once the replica applied it\n", table)
	return nil
}

// checksumRepair asks the daemon of the run config at runPath to repair
// each chunk that rep found different.
func checksumRepair(ctx context.Context, rep checksum.Report, runPath string, stdout io.Writer) error {
	if err := requireFlag("run-config", runPath); err != nil {
		return err
	}
	run, err := config.Load(runPath)
	if err != nil {
		return cli.Exit(2, err)
	}
	if !rep.Finished {
		return cli.Exit(checksum.ExitUnfinished, errors.New("no check round has finished on this replica yet: nothing to repair"))
	}
	n, err := checksum.Repair(ctx, rep, &httpRepairer{cfg: run, out: stdout})
	if err != nil {
		return fmt.Errorf("%d repair(s) queued before: %w", n, err)
	}
	if n == 0 {
		fmt.Fprintf(stdout, "round %s: no chunk differs; nothing to repair\n", rep.Round)
		return nil
	}
	fmt.Fprintf(stdout, "%d repair(s) queued from round %s; start a round once the replica applied them to verify\n", n, rep.Round)
	return nil
}

// httpRepairer is a checksum.Repairer posting repairs to the daemon's
// POST /v1/snapshot.
type httpRepairer struct {
	cfg *config.Config
	out io.Writer
}

func (h *httpRepairer) RepairRange(ctx context.Context, t change.Table, after, hi []string) error {
	body, _ := json.Marshal(daemon.SnapshotRequestBody{Table: t.String(), Repair: &pgsource.KeyRange{After: after, Hi: hi}})
	out, err := operatorPost(ctx, h.cfg, "/v1/snapshot", body)
	if err != nil {
		return err
	}
	var req pgsource.SnapshotRequest
	json.Unmarshal(out, &req)
	fmt.Fprintf(h.out, "repair %s queued: %s keys %s\n", req.ID, t, checksum.Range{After: after, Hi: hi})
	return nil
}

// operatorPost posts body to path on the daemon's operator listener
// (http:) and returns the response body of a 202.
func operatorPost(ctx context.Context, cfg *config.Config, path string, body []byte) ([]byte, error) {
	l := cfg.HTTP.Listener
	base, client, err := operatorClient(l)
	if err != nil {
		return nil, cli.Exit(2, err)
	}
	url := base + path
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if l.Token != "" {
		req.Header.Set("Authorization", "Bearer "+l.Token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("posting to the daemon at %s: %w", url, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusAccepted {
		return nil, fmt.Errorf("daemon at %s: %s: %s", url, resp.Status, bytes.TrimSpace(out))
	}
	return out, nil
}
