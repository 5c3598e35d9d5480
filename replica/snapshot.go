package replica

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/walship/walship/internal/fsutil"
	"github.com/walship/walship/internal/secret"
)

// Snapshot writes a consistent copy of a SQLite replica (src: a
// sqlite:/// URL or an absolute path) to the new file dst, with VACUUM
// INTO: the copy is the state of the last committed DB transaction, so its
// walship_applied row matches its data. It may run while an Applier
// writes the replica (WAL mode: the copy does not block the writer). dst
// must not exist; it is fsynced, with its directory, before Snapshot
// returns. The copy is a plain rollback-journal database file.
func Snapshot(ctx context.Context, src, dst string) error {
	if strings.HasPrefix(src, "/") {
		src = "sqlite://" + src
	}
	kind, path, err := ParseURL(src)
	if err != nil {
		return err
	}
	if kind != "sqlite" {
		return fmt.Errorf("snapshot of %s: only SQLite replicas can be snapshotted", secret.URL(src))
	}
	if !filepath.IsAbs(dst) {
		return fmt.Errorf("snapshot of %s: destination %q is not an absolute path", path, dst)
	}
	if _, err := os.Lstat(dst); err == nil {
		return fmt.Errorf("snapshot of %s: destination %s exists", path, dst)
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("snapshot of %s: %w", path, err)
	}
	db, err := openSQLiteExisting(ctx, path, false) // VACUUM INTO is refused under query_only
	if err != nil {
		return fmt.Errorf("snapshot of %s: %w", path, err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `VACUUM INTO ?`, dst); err != nil {
		os.Remove(dst)
		return fmt.Errorf("snapshot of %s into %s: %w", path, dst, err)
	}
	if err := syncFile(dst); err != nil {
		return fmt.Errorf("snapshot of %s: %w", path, err)
	}
	if err := fsutil.SyncDir(filepath.Dir(dst)); err != nil {
		return fmt.Errorf("snapshot of %s: fsync %s: %w", path, filepath.Dir(dst), err)
	}
	return nil
}

// syncFile fsyncs the file name (a directory goes to fsutil.SyncDir).
func syncFile(name string) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", name, err)
	}
	return nil
}
