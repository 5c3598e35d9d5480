package main

import (
	"context"
	"errors"
	"io"

	"github.com/walship/walship/config"
	"github.com/walship/walship/daemon"
	"github.com/walship/walship/internal/logx"
)

// runRun is `walship run --config FILE`: the primary daemon.
func runRun(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("run", stderr)
	path := fs.String("config", "", "YAML config file (see docs/CONFIG.md)")
	if help, err := parseFlags(fs, args); help || err != nil {
		return err
	}
	if err := requireFlag("config", *path); err != nil {
		return err
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		return err
	}
	if err := cfg.ForRun(); err != nil {
		return &exitError{code: 2, err: err}
	}
	logger, err := logx.New(logx.Options{Format: cfg.Log.Format, Level: cfg.Log.Level, Writer: stderr})
	if err != nil {
		return err
	}
	d, err := daemon.New(ctx, cfg, logger)
	if err != nil {
		return err
	}
	return d.Run(ctx)
}

// loadConfig reads the config; a bad config exits 2 like bad usage.
func loadConfig(path string) (*config.Config, error) {
	cfg, err := config.Load(path)
	if err != nil {
		var ce *config.Error
		if errors.As(err, &ce) {
			return nil, &exitError{code: 2, err: err}
		}
		return nil, err
	}
	return cfg, nil
}
