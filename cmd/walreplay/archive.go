package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/walship/walship/archive"
	"github.com/walship/walship/pitr"
)

// openArchive opens the archive named by the flags. An archive that cannot
// be opened is exit 2.
func openArchive(ctx context.Context, af archiveFlags) (*pitr.ArchiveSource, error) {
	if err := requireFlag("archive", af.url); err != nil {
		return nil, err
	}
	a, err := archive.Open(ctx, af.url, archive.Options{
		Backend: archive.BackendOptions{Endpoint: af.endpoint, Region: af.region, PathStyle: af.pathStyle,
			CAFile: af.caFile, InsecureSkipVerify: af.insecure},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return nil, &exitError{code: exitUsage, err: fmt.Errorf("open archive: %w", err)}
	}
	return pitr.NewArchiveSource(a), nil
}
