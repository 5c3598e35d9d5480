package main

import (
	"context"
	"io"

	"github.com/walship/walship/daemon"
	"github.com/walship/walship/internal/logx"
)

// runConsume is `walship consume --config FILE`: the replica daemon.
func runConsume(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("consume", stderr)
	path := fs.String("config", "", "YAML config file with kafka: and replica: sections (see docs/CONFIG.md)")
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
	if err := cfg.ForConsume(); err != nil {
		return &exitError{code: 2, err: err}
	}
	logger, err := logx.New(logx.Options{Format: cfg.Log.Format, Level: cfg.Log.Level, Writer: stderr})
	if err != nil {
		return err
	}
	c, err := daemon.NewConsume(ctx, cfg, logger)
	if err != nil {
		return err
	}
	return c.Run(ctx)
}
