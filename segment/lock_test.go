package segment_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/walship/walship/segment"
	"github.com/walship/walship/vfs"
)

// TestSecondWriterRefusedAfterLockFileRemoved: the writer's lock is held on
// an open descriptor, not by DIR/LOCK existing, so removing that file while
// a writer runs lets no second writer in. The refusal names the directory
// and the holder's pid, and matches vfs.ErrLocked.
func TestSecondWriterRefusedAfterLockFileRemoved(t *testing.T) {
	dir := t.TempDir()
	first, _ := open(t, dir, segment.Options{})

	wantLocked := func(when string, pidKnown bool) {
		t.Helper()
		l, _, err := segment.Open(dir, segment.Options{})
		if err == nil {
			l.Close()
			t.Fatalf("%s: a second writer opened the log %s", when, dir)
		}
		if !errors.Is(err, vfs.ErrLocked) {
			t.Fatalf("%s: second writer: want an error matching vfs.ErrLocked, got %v", when, err)
		}
		var le *vfs.LockedError
		if !errors.As(err, &le) || le.Dir != dir {
			t.Fatalf("%s: second writer: want a *vfs.LockedError naming %s, got %v", when, dir, err)
		}
		if !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "in use by another writer") {
			t.Errorf("%s: error does not name the directory and the cause: %v", when, err)
		}
		pid := fmt.Sprintf("(pid %d)", os.Getpid())
		if pidKnown && !strings.Contains(err.Error(), pid) {
			t.Errorf("%s: error does not name the holder %s: %v", when, pid, err)
		}
	}

	wantLocked("lock file present", true)
	if err := os.Remove(filepath.Join(dir, "LOCK")); err != nil {
		t.Fatal(err)
	}
	wantLocked("lock file removed", false)
	wantLocked("lock file removed, second try", false)

	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	l, _, err := segment.Open(dir, segment.Options{})
	if err != nil {
		t.Fatalf("after the writer closed: %v", err)
	}
	l.Close()
}
