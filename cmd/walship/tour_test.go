//go:build !nodemo

package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestReadmeTour runs the shell of README.md's "A 5-minute tour" as a reader
// would, top to bottom, with bash -euo pipefail in a temporary directory,
// changing only what a test must:
//
//   - `go build -o X` lines run in the repository and write X into the
//     temporary directory;
//   - the demo, which a reader keeps running with --hold (to look at its
//     status page) while going on in another terminal, is started as its
//     own process and runs a shorter workload (--txns 3000); the rest of
//     the tour runs once it is holding, and Ctrl-C ends it afterwards;
//   - after the tour, any process it left is killed.
//
// The tour must exit 0, the demo too, and every output its comments show
// must appear. Every loopback port the tour names is replaced by a free
// one, and the demo listens on a free one too, so that two runs of the
// suite on one machine never meet; that the demo's default port is none
// of the tour's is checked on the README's own text.
func TestReadmeTour(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	tour := tourShell(t, string(readme))
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	dir := searchableTempDir(t)
	env := append(os.Environ(), "TMPDIR="+dir)
	tour = freePorts(t, tour)

	// The lines before the demo, the demo's, and the lines after it.
	demoAt := slices.IndexFunc(tour, func(l string) bool { return strings.HasPrefix(l, "./walship demo") })
	if demoAt < 0 {
		t.Fatalf("README tour has no `./walship demo` line:\n%s", strings.Join(tour, "\n"))
	}
	buildOut := regexp.MustCompile(`-o (\S+)`)
	before := slices.Clone(tour[:demoAt])
	for i, l := range before {
		if strings.HasPrefix(l, "go build ") {
			before[i] = fmt.Sprintf("(cd %q && %s)", repo, buildOut.ReplaceAllString(l, `-o "$$OLDPWD/$1"`))
		}
	}
	if out, err := runTourShell(t, dir, env, before); err != nil {
		t.Fatalf("README tour, before the demo: %v\n%s", err, out)
	}

	args := strings.Fields(stripComment(tour[demoAt]))[1:]
	for i := range args {
		if args[i] == "--txns" && i+1 < len(args) {
			args[i+1] = "3000"
		}
	}
	args = append(args, "--listen", "127.0.0.1:0")
	demo := exec.Command(filepath.Join(dir, "walship"), args...)
	demo.Dir, demo.Env = dir, env
	var demoOut syncBuffer
	demo.Stdout, demo.Stderr = &demoOut, &demoOut
	if err := demo.Start(); err != nil {
		t.Fatal(err)
	}
	demoDone := make(chan error, 1)
	go func() { demoDone <- demo.Wait() }()
	stopDemo := func() error {
		demo.Process.Signal(syscall.SIGINT)
		select {
		case err := <-demoDone:
			return err
		case <-time.After(2 * time.Minute): // a bound for a hang only
			demo.Process.Kill()
			return fmt.Errorf("did not stop within 2 minutes of SIGINT: %w", <-demoDone)
		}
	}
	if slices.Contains(args, "--hold") {
		// Bounds for a hang only: on a loaded 2-core machine PostgreSQL,
		// the broker, both daemons and the workload have taken minutes.
		deadline := time.After(8 * time.Minute)
		for !strings.Contains(demoOut.String(), "holding for") {
			select {
			case err := <-demoDone:
				t.Fatalf("README tour: demo ended before holding (%v):\n%s", err, demoOut.String())
			case <-deadline:
				t.Fatalf("README tour: demo not holding after 8 minutes: %v\n%s", stopDemo(), demoOut.String())
			case <-time.After(100 * time.Millisecond):
			}
		}
	} else if err := <-demoDone; err != nil {
		t.Fatalf("README tour: demo: %v\n%s", err, demoOut.String())
	}

	out, err := runTourShell(t, dir, env, tour[demoAt+1:])
	if slices.Contains(args, "--hold") {
		if derr := stopDemo(); derr != nil {
			t.Errorf("README tour: demo after Ctrl-C: %v\n%s", derr, demoOut.String())
		}
	}
	if err != nil {
		t.Fatalf("README tour, after the demo: %v\n%s\ndemo:\n%s", err, out, demoOut.String())
	}

	// What the tour's comments show, and that it did happen.
	text := strings.Join(tour, "\n")
	for _, c := range []struct{ output, want string }{
		{demoOut.String(), "OK  Kafka replica (walship consume, SQLite) == source now"},
		{out, "ready"},
		{out, `{"lsn":1,"commit_time":"`},
		{out, "walship_wal_records_total"},
		{out, "1, LSN 1-1, commits"},
		{out, "intact: "},
		{out, "lineages: main LSN 1-1"},
		{out, "restored sqlite://"},
		{out, ": 1 transactions"},
	} {
		if !strings.Contains(text, strings.TrimSuffix(c.want, `"`)) {
			t.Errorf("README tour does not show %q", c.want)
		}
		if !strings.Contains(c.output, c.want) {
			t.Errorf("README tour output lacks %q:\n%s", c.want, c.output)
		}
	}
}

// tourShell returns the lines of the sh blocks of README's "A 5-minute
// tour" section.
func tourShell(t *testing.T, readme string) []string {
	_, section, ok := strings.Cut(readme, "\n## A 5-minute tour\n")
	if !ok {
		t.Fatal(`README.md has no "## A 5-minute tour" section`)
	}
	if end := strings.Index(section, "\n## "); end >= 0 {
		section = section[:end]
	}
	var lines []string
	in := false
	for l := range strings.SplitSeq(section, "\n") {
		switch {
		case !in && l == "```sh":
			in = true
		case in && l == "```":
			in = false
		case in:
			lines = append(lines, l)
		}
	}
	if len(lines) == 0 {
		t.Fatal(`README.md's "A 5-minute tour" has no sh block`)
	}
	return lines
}

// stripComment removes a trailing shell comment from a line without quotes.
func stripComment(l string) string {
	if i := strings.Index(l, " #"); i >= 0 {
		return l[:i]
	}
	return l
}

// freePorts returns the tour with every 127.0.0.1:PORT it names replaced
// by a free loopback port (the same port for the same text), after
// checking that none of them is the demo's default --listen port.
func freePorts(t *testing.T, tour []string) []string {
	t.Helper()
	re := regexp.MustCompile(`127\.0\.0\.1:[0-9]+`)
	text := strings.Join(tour, "\n")
	var code []string // the commands, without their comments
	for _, l := range tour {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			code = append(code, stripComment(l))
		}
	}
	if slices.Contains(re.FindAllString(strings.Join(code, "\n"), -1), defaultDemoListen) {
		t.Fatalf("README tour uses %s, the demo's default --listen: the tour collides with its own step 1", defaultDemoListen)
	}
	seen := map[string]string{}
	text = re.ReplaceAllStringFunc(text, func(p string) string {
		if q, ok := seen[p]; ok {
			return q
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		seen[p] = ln.Addr().String()
		return seen[p]
	})
	return strings.Split(text, "\n")
}

// runTourShell runs lines with bash -euo pipefail in dir, in a process
// group of its own that is killed when it ends (a daemon the tour failed
// to stop must not outlive the test), and returns its output.
func runTourShell(t *testing.T, dir string, env []string, lines []string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute) // a bound for a hang only
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", strings.Join(lines, "\n"))
	cmd.Dir, cmd.Env = dir, env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if cmd.Process != nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	return out.String(), err
}
