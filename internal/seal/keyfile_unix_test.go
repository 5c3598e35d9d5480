//go:build unix

package seal

import (
	"errors"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestLoadKeyFileRefusesNonRegular: /dev/zero (which os.ReadFile would read
// until memory ran out), a FIFO without a writer (which would block the
// open forever) and a directory are refused at once as not a regular
// file, naming the file.
func TestLoadKeyFileRefusesNonRegular(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "key.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for path, kind := range map[string]string{"/dev/zero": "a device", fifo: "a FIFO", t.TempDir(): "a directory"} {
		done := make(chan error, 1)
		go func() { _, err := LoadKeyFile(path); done <- err }()
		select {
		case err := <-done:
			if !errors.Is(err, ErrBadKey) || !strings.Contains(err.Error(), "key file "+path+" is "+kind+", not a regular file") {
				t.Errorf("%s: %v, want ErrBadKey: is %s, not a regular file", path, err, kind)
			}
		case <-time.After(30 * time.Second): // only catches a hang
			t.Fatalf("LoadKeyFile(%s) hangs", path)
		}
	}
}
