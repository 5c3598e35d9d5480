package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/walship/walship/config"
	"github.com/walship/walship/daemon"
	"github.com/walship/walship/internal/cli"
)

// runHA is `walship ha check --config FILE [--acknowledge] [--json]`: the
// transactions an HA group lost (docs/HA.md, "Loss you can see"). Exit 0
// when none is recorded, 1 when some are (each range named), 2 on bad
// usage or config.
func runHA(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("ha", stderr)
	path := fs.String("config", "", "the walship run config of a member of the group")
	ack := fs.Bool("acknowledge", false, "after printing them, forget the recorded losses (the next check exits 0)")
	asJSON := fs.Bool("json", false, "print the losses as JSON")
	if len(args) > 0 && args[0] == "check" {
		args = args[1:]
	} else if help, err := parseFlags(fs, args); help || err != nil {
		return err // -h: the command's help
	} else {
		return cli.UsageError("walship ha: want the subcommand check (walship ha check --config FILE)")
	}
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
	if cfg.HA == nil {
		return cli.Exit(2, errors.New(*path+": no ha section: this walship is not a member of an HA group"))
	}
	losses, err := daemon.HALosses(ctx, cfg, *ack)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(map[string]any{"losses": losses}); err != nil {
			return err
		}
	} else if len(losses) == 0 {
		fmt.Fprintln(stdout, "no loss recorded: every transaction confirmed to the source is in the group's log")
	} else {
		for _, l := range losses {
			fmt.Fprintf(stdout, "LOST: %s, found by %s at %s\n", l, l.Member, l.Detected.Format("2006-01-02T15:04:05Z"))
		}
	}
	switch {
	case len(losses) == 0:
		return nil
	case *ack:
		fmt.Fprintf(stdout, "acknowledged %d loss record(s)\n", len(losses))
		return cli.Exit(1, fmt.Errorf("%d range(s) of transactions were lost (now acknowledged)", len(losses)))
	}
	return cli.Exit(1, fmt.Errorf("%d range(s) of transactions were lost: see above; walship ha check --acknowledge forgets them", len(losses)))
}
