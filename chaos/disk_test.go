package chaos

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// diskSize is each member's tmpfs for wal.dir: small, so that disk-full
// fills it in an instant, yet larger than the log of a long run.
const diskSize = "512m"

// mountTmpfs mounts a tmpfs of diskSize on dir and unmounts it when the
// test ends, failed or not (after the members are stopped: cleanups run
// after the test function's deferred stops).
func mountTmpfs(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+diskSize); err != nil {
		t.Fatalf("mount -t tmpfs -o size=%s %s: %v", diskSize, dir, err)
	}
	t.Cleanup(func() {
		// Detached: a process still holding a file there cannot keep the
		// mount (and its memory) alive after the test.
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("umount %s: %v", dir, err)
		}
	})
}

// fillDisk allocates every free block of the tmpfs at dir to one file and
// returns its path and size: any write to the disk then fails with ENOSPC
// until the file is removed.
func fillDisk(dir string) (string, int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return "", 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	path := filepath.Join(dir, "chaos-filler")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return "", 0, fmt.Errorf("disk-full: %w", err)
	}
	defer f.Close()
	size := int64(st.Bavail) * int64(st.Bsize)
	if err := syscall.Fallocate(int(f.Fd()), 0, 0, size); err != nil {
		return path, 0, fmt.Errorf("disk-full: fallocate %d bytes in %s: %w", size, path, err)
	}
	// Blocks the allocation could not take (metadata of the file itself):
	// write until the disk says it is full.
	buf := make([]byte, 4096)
	for {
		n, err := f.WriteAt(buf, size)
		size += int64(n)
		if err != nil {
			break
		}
	}
	return path, size, nil
}

// keepDiverged moves the logs a member moved aside (wal.diverged-*) from its
// tmpfs to its directory on disk, so that a long run's copies do not fill
// the tmpfs and a post-mortem still has them.
func keepDiverged(m *member) error {
	old, err := filepath.Glob(filepath.Join(m.disk, "wal.diverged-*"))
	if err != nil || len(old) == 0 {
		return err
	}
	for _, d := range old {
		if out, err := exec.Command("cp", "-a", d, m.dir).CombinedOutput(); err != nil {
			return fmt.Errorf("cp -a %s %s: %v: %s", d, m.dir, err, out)
		}
		if err := os.RemoveAll(d); err != nil {
			return err
		}
	}
	return nil
}
