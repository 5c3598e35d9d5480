package main

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/walship/walship/internal/cli"

	"github.com/walship/walship/archive"
	"github.com/walship/walship/internal/seal"
	"github.com/walship/walship/pitr"
)

// openArchive opens the archive named by the flags. An archive that cannot
// be opened is exit 2.
func openArchive(ctx context.Context, af archiveFlags) (*pitr.ArchiveSource, error) {
	if err := requireFlag("archive", af.url); err != nil {
		return nil, err
	}
	sealer, err := seal.FromConfig(af.keyFile, af.keyEnv)
	if err != nil {
		return nil, usageError("encryption key: %v", err)
	}
	opts := archive.Options{
		Backend: archive.BackendOptions{MustExist: true, Endpoint: af.endpoint, Region: af.region, PathStyle: af.pathStyle,
			CAFile: af.caFile, InsecureSkipVerify: af.insecure},
		Logger: slog.New(slog.DiscardHandler),
	}
	if sealer != nil {
		opts.Seal = sealer
	}
	a, err := archive.Open(ctx, af.url, opts)
	if err != nil {
		return nil, cli.Exit(exitUsage, err)
	}
	return pitr.NewArchiveSource(a), nil
}

// requireKey fails (exit 2) when the archive holds sealed objects and no
// key was given: they cannot be read, and are not corrupt.
func requireKey(ctx context.Context, src *pitr.ArchiveSource, af archiveFlags) error {
	if af.keyFile != "" || af.keyEnv != "" {
		return nil
	}
	cat, err := src.Catalog(ctx)
	if err != nil {
		return cli.Exit(exitUsage, fmt.Errorf("read the archive's catalog: %w", err))
	}
	ids := map[string]bool{}
	for _, s := range cat.Segments {
		if s.KeyID != "" {
			ids[s.KeyID] = true
		}
	}
	for _, s := range cat.Snapshots {
		if s.KeyID != "" {
			ids[s.KeyID] = true
		}
	}
	if len(ids) == 0 {
		return nil
	}
	var list []string
	for id := range ids {
		list = append(list, id)
	}
	slices.Sort(list)
	return cli.Exit(exitUsage, fmt.Errorf("the archive is encrypted (key id %s): give its key with --encryption-key-file or --encryption-key-env",
		strings.Join(list, ", ")))
}
