package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/walship/walship/internal/cli"

	"github.com/walship/walship/config"
	"github.com/walship/walship/daemon"
	"github.com/walship/walship/internal/logx"
	"github.com/walship/walship/internal/seal"
)

// runRun is `walship run --config FILE`: the primary daemon.
func runRun(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	cfg, logger, err := daemonSetup("run", "YAML config file (see docs/CONFIG.md)", args, stderr, checkRun)
	if cfg == nil || err != nil {
		return err
	}
	d, err := daemon.New(ctx, cfg, logger)
	if err != nil {
		return err
	}
	if err := d.Run(ctx); errors.Is(err, daemon.ErrHA) {
		// Lost the lease, or the log diverged: a supervisor restarts it
		// and it rejoins as a follower.
		return cli.Exit(daemon.ExitHA, err)
	} else if err != nil {
		return err
	}
	return nil
}

// checkRun checks a config for `walship run`, including the archive's
// encryption key: a key file or variable that holds no usable key is a
// bad config (exit 2), refused before any listener opens.
func checkRun(cfg *config.Config) error {
	if err := cfg.ForRun(); err != nil {
		return err
	}
	if a := cfg.Archive; a != nil {
		if _, err := seal.FromConfig(a.EncryptionKeyFile, a.EncryptionKeyEnv); err != nil {
			return fmt.Errorf("archive encryption key: %w", err)
		}
	}
	return nil
}

// runConsume is `walship consume --config FILE`: the replica daemon.
func runConsume(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	cfg, logger, err := daemonSetup("consume", "YAML config file with kafka: and replica: sections (see docs/CONFIG.md)", args, stderr, (*config.Config).ForConsume)
	if cfg == nil || err != nil {
		return err
	}
	c, err := daemon.NewConsume(ctx, cfg, logger)
	if err != nil {
		return err
	}
	return c.Run(ctx)
}

// daemonSetup parses --config, loads and checks the config (a missing,
// unreadable or bad one exits 2, like bad usage) and builds the logger. A nil config with a nil
// error means -h was asked for.
func daemonSetup(name, usage string, args []string, stderr io.Writer, check func(*config.Config) error) (*config.Config, *slog.Logger, error) {
	fs := newFlagSet(name, stderr)
	path := fs.String("config", "", usage)
	if help, err := parseFlags(fs, args); help || err != nil {
		return nil, nil, err
	}
	if err := requireFlag("config", *path); err != nil {
		return nil, nil, err
	}
	cfg, err := config.Load(*path)
	if err == nil {
		err = check(cfg)
	}
	if err != nil {
		// Any config that cannot be used — missing, unreadable or
		// invalid — is bad usage, exit 2, before anything starts.
		return nil, nil, cli.Exit(2, err)
	}
	logger, err := logx.New(logx.Options{Format: cfg.Log.Format, Level: cfg.Log.Level, Writer: stderr})
	if err != nil {
		return nil, nil, err
	}
	return cfg, logger, nil
}
