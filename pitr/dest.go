package pitr

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	_ "modernc.org/sqlite" // driver "sqlite", to settle a restored file

	"github.com/walship/walship/change"
	"github.com/walship/walship/internal/fsutil"
	"github.com/walship/walship/replica"
)

// RestoreOptions configure Restore.
type RestoreOptions struct {
	Options
	// Continue allows an existing destination: it must be at the plan's
	// FromLSN-1 (plan with PlanOptions.FromLSN from ReplicaPosition).
	// Default false: the destination must not exist (SQLite) or must be
	// empty, at position 0 (PostgreSQL).
	Continue bool
	// Replica configures the destination's applier (its Lineage is set to
	// the plan's).
	Replica replica.Options
}

// Restore executes plan into the replica at url and closes it.
//
// SQLite (sqlite:///abs/path.db): the restore is built in
// "<path>.restoring" beside the destination — starting from the verified
// snapshot file, or empty — and renamed to path only when complete, so a
// failed or interrupted restore never leaves a file at path that looks
// finished. With opts.Continue the file at path is continued in place.
//
// PostgreSQL (postgres://...): the database must exist and be empty
// (position 0). A snapshot is loaded first: its rows, read from the
// SQLite file, applied as snapshot-read (op r) changes of one transaction
// at the snapshot's LSN (so the load is atomic with the position; it is
// held in memory). Plan with PlanOptions.NoSnapshot to replay the whole
// log instead.
//
// Nothing is created or changed at url before every object of the plan is
// verified (unless opts.StreamVerify).
func Restore(ctx context.Context, src Source, plan *Plan, url string, opts RestoreOptions) (*Result, error) {
	kind, path, err := replica.ParseURL(url)
	if err != nil {
		return nil, err
	}
	ropts := opts.Replica
	ropts.Lineage = plan.Lineage
	// Nothing upstream waits on a restore's position, so its commits need
	// not be synced one by one: Close makes them durable at the end (a
	// crash before that takes back the last ones with their position, and
	// --continue goes on from there).
	ropts.Unsynced = true
	if opts.CheckNames == nil && !opts.StreamVerify {
		nc, err := replica.NewNameCheck(url)
		if err != nil {
			return nil, err
		}
		opts.CheckNames = nc.Add
	}
	switch kind {
	case "sqlite":
		return restoreSQLite(ctx, src, plan, path, opts, ropts)
	case "postgres":
		return Execute(ctx, src, plan, func(ctx context.Context, snap string) (Applier, error) {
			app, err := replica.Open(ctx, url, ropts)
			if err != nil {
				return nil, err
			}
			if !opts.Continue || snap != "" {
				if pos, err := app.Position(ctx); err != nil || pos != 0 {
					app.Close()
					return nil, errors.Join(err, fmt.Errorf("pitr: destination database is at LSN %d, not empty: restore into a new database", pos))
				}
			}
			if snap != "" {
				// The snapshot's rows, as one transaction at its LSN: all
				// or nothing, with the position.
				txn, err := snapshotTxn(ctx, snap)
				if err == nil {
					err = app.Apply(ctx, []change.Committed{txn})
				}
				if err != nil {
					app.Close()
					return nil, fmt.Errorf("pitr: load snapshot %s into PostgreSQL: %w", plan.Snapshot.Key, err)
				}
			}
			return app, nil
		}, opts.Options)
	}
	return nil, fmt.Errorf("pitr: unsupported destination kind %q", kind)
}

func restoreSQLite(ctx context.Context, src Source, plan *Plan, path string, opts RestoreOptions, ropts replica.Options) (*Result, error) {
	if opts.Continue {
		if _, err := os.Stat(path); err == nil {
			return Execute(ctx, src, plan, func(ctx context.Context, _ string) (Applier, error) {
				if plan.Snapshot != nil {
					return nil, fmt.Errorf("pitr: cannot continue %s from a snapshot: plan with FromLSN", path)
				}
				return replica.Open(ctx, "sqlite://"+path, ropts)
			}, opts.Options)
		}
	} else if _, err := os.Stat(path); err == nil {
		return nil, fmt.Errorf("pitr: destination %s exists: restore into a new file (or continue it with --continue)", path)
	}
	building := path + ".restoring"
	for _, f := range []string{building, building + "-wal", building + "-shm"} {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("pitr: remove the leftover of an earlier restore: %w", err)
		}
	}
	if opts.TempDir == "" {
		opts.TempDir = filepath.Dir(path) // so that the snapshot can be renamed into place
	}
	done := false
	defer func() {
		if !done {
			for _, f := range []string{building, building + "-wal", building + "-shm"} {
				os.Remove(f)
			}
		}
	}()
	res, err := Execute(ctx, src, plan, func(ctx context.Context, snap string) (Applier, error) {
		if snap != "" {
			if err := moveFile(snap, building); err != nil {
				return nil, fmt.Errorf("pitr: place the snapshot: %w", err)
			}
		}
		return replica.Open(ctx, "sqlite://"+building, ropts)
	}, opts.Options)
	if err != nil {
		return res, err
	}
	if err := settleSQLite(ctx, building); err != nil {
		return res, err
	}
	if err := os.Rename(building, path); err != nil {
		return res, fmt.Errorf("pitr: %w", err)
	}
	done = true
	return res, fsutil.SyncDir(filepath.Dir(path))
}

// settleSQLite checkpoints the file's WAL into it and leaves it a single
// file (journal mode DELETE), so that it can be renamed; the next replica
// Open switches it back to WAL.
func settleSQLite(ctx context.Context, path string) error {
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	var mode string
	if err := db.QueryRowContext(ctx, "PRAGMA journal_mode=DELETE").Scan(&mode); err != nil {
		return fmt.Errorf("pitr: settle %s: %w", path, err)
	}
	if mode != "delete" {
		return fmt.Errorf("pitr: settle %s: journal mode stays %q", path, mode)
	}
	if err := db.Close(); err != nil {
		return err
	}
	// The file is renamed into place next: it must be on disk first.
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("pitr: settle %s: %w", path, err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("pitr: settle %s: %w", path, err)
	}
	return nil
}

// moveFile renames src to dst, copying (and fsyncing) across file systems.
func moveFile(src, dst string) error {
	if err := os.Rename(src, dst); err == nil {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// ReplicaPosition returns the position of the replica at url and whether
// it exists (a SQLite file that does not exist is at 0 and does not; a
// PostgreSQL database always exists once reachable).
func ReplicaPosition(ctx context.Context, url string) (uint64, bool, error) {
	kind, path, err := replica.ParseURL(url)
	if err != nil {
		return 0, false, err
	}
	if kind == "sqlite" {
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			return 0, false, nil
		}
	}
	app, err := replica.Open(ctx, url, replica.Options{})
	if err != nil {
		return 0, false, err
	}
	defer app.Close()
	pos, err := app.Position(ctx)
	return pos, true, err
}

// FollowURL opens the replica at url and follows the archive into it (see
// Follow) until ctx ends or a permanent error.
func FollowURL(ctx context.Context, src Source, url string, opts FollowOptions) error {
	app, err := replica.Open(ctx, url, replica.Options{Lineage: opts.Lineage})
	if err != nil {
		return err
	}
	defer app.Close()
	return Follow(ctx, src, app, opts)
}
