//go:build !nodemo

package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDemo runs `walship demo` as a user would (a short workload): it must
// end with the equality proofs and leave no process and no files behind.
func TestDemo(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"postgres", "http-source"} {
		t.Run(mode, func(t *testing.T) {
			dir := filepath.Join(searchableTempDir(t), "demo")
			args := []string{"demo", "--txns", "300", "--dir", dir, "--listen", "127.0.0.1:0"}
			if mode == "http-source" {
				args = append(args, "--http-source")
			}
			res := walship(t, nil, args...)
			if res.code != 0 {
				t.Fatalf("walship demo: %v", res)
			}
			if n := strings.Count(res.stdout, "  OK  "); n != 3 {
				t.Fatalf("want 3 proof lines, got %d:\n%s", n, res.stdout)
			}
			for _, want := range []string{"Kafka replica (walship consume, SQLite) == source now", "== source at the end of phase 1", "status page:  http://"} {
				if !strings.Contains(res.stdout, want) {
					t.Fatalf("output lacks %q:\n%s", want, res.stdout)
				}
			}
			if out, _ := exec.Command("pgrep", "-f", dir).Output(); len(out) > 0 {
				t.Fatalf("processes left behind:\n%s", out)
			}
			// The closing hints work as printed.
			_, hints, ok := strings.Cut(res.stdout, "the same with the command line")
			if !ok {
				t.Fatalf("no command-line hints:\n%s", res.stdout)
			}
			n := 0
			for _, line := range strings.Split(hints, "\n")[1:] {
				if !strings.HasPrefix(line, "  ") {
					break
				}
				n++
				if out, err := exec.Command("sh", "-c", line).CombinedOutput(); err != nil {
					t.Errorf("hint %q: %v\n%s", line, err, out)
				}
			}
			if n != 2 {
				t.Errorf("%d hint lines, want 2:\n%s", n, res.stdout)
			}
		})
	}
}

// TestDemoInterrupt: Ctrl-C during the demo stops everything, including
// PostgreSQL, and removes the temporary directory.
func TestDemoInterrupt(t *testing.T) {
	t.Parallel()
	tmp := searchableTempDir(t)
	cmd := exec.Command(walshipBin, "demo", "--txns", "30000", "--listen", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// A bound for a hung demo, not a speed target: on a loaded 2-core
	// machine starting PostgreSQL, the broker and both daemons has taken
	// over a minute.
	deadline := time.Now().Add(4 * time.Minute)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	for !strings.Contains(out.String(), "workload phase 1") {
		select {
		case <-exited:
			t.Fatalf("demo ended before the workload:\n%s", out.String())
		default:
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("demo did not reach the workload:\n%s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-exited:
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		t.Fatalf("demo did not stop after SIGINT:\n%s", out.String())
	}
	if pids, _ := exec.Command("pgrep", "-f", tmp).Output(); len(pids) > 0 {
		t.Fatalf("processes left behind after Ctrl-C:\n%s", pids)
	}
	ents, _ := os.ReadDir(tmp)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "walship-demo-") {
			t.Fatalf("temporary directory %s left behind", e.Name())
		}
	}
}

// TestWalreplayCommand: without a walreplay beside walship or on $PATH the
// demo's hints fall back to a command that works in the source tree.
func TestWalreplayCommand(t *testing.T) {
	if got := walreplayCommand(func(string) (string, error) { return "", exec.ErrNotFound }); got != "go run github.com/walship/walship/cmd/walreplay" {
		t.Errorf("no walreplay anywhere: %q", got)
	}
	if got := walreplayCommand(func(string) (string, error) { return "/usr/bin/walreplay", nil }); got != "walreplay" {
		t.Errorf("walreplay on $PATH: %q", got)
	}
}

// searchableTempDir returns a temporary directory the postgres user can
// traverse (PostgreSQL runs as postgres when the tests run as root).
func searchableTempDir(t *testing.T) string {
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
