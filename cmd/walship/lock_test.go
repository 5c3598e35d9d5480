package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/walship/walship/wal"
)

// TestAppendRefusedAfterLockFileRemoved: while another process (this test)
// writes to a log, `walship append` is refused, naming the directory and the
// holder's pid, and it is still refused after DIR/LOCK has been removed: the
// lock is the writer's open descriptor, not the file. Nothing is appended.
func TestAppendRefusedAfterLockFileRemoved(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	w, _, err := wal.Open(wal.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()

	in := []byte(killTxn(1) + "\n")
	refused := func(when, pid string) {
		t.Helper()
		r := walship(t, in, "append", "--wal", dir)
		if r.code == 0 || r.stdout != "" {
			t.Fatalf("%s: a second writer appended to %s:\n%v", when, dir, r)
		}
		for _, want := range []string{dir, "in use by another writer", pid} {
			if !strings.Contains(r.stderr, want) {
				t.Errorf("%s: stderr does not say %q:\n%v", when, want, r)
			}
		}
	}
	refused("lock file present", fmt.Sprintf("(pid %d)", os.Getpid()))
	if err := os.Remove(filepath.Join(dir, "LOCK")); err != nil {
		t.Fatal(err)
	}
	refused("lock file removed", "(pid unknown)")

	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if d := mustWalship(t, nil, "dump", "--wal", dir); d.stdout != "" {
		t.Errorf("the refused appends wrote:\n%s", d.stdout)
	}
	mustWalship(t, in, "append", "--wal", dir)
}
