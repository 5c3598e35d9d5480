package chaos

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// The run's knobs (package doc). Defaults are the short CI run.
var (
	flagFaults  = flag.Int("chaos.faults", 4, "faults to inject (the first three are a host loss, a zombie and a PostgreSQL connection cut)")
	flagSeed    = flag.Uint64("chaos.seed", 0, "seed of the nemesis and the workloads (0: random, printed; or $WALSHIP_CHAOS_SEED)")
	flagMembers = flag.Int("chaos.members", 3, "members of the group (1: a single daemon without ha, and only faults it must survive alone)")
	flagKinds   = flag.String("chaos.kinds", "", "comma-separated fault kinds to inject in turn, after the mandatory ones (default: all kinds, at random)")
	flagGroup   = flag.String("chaos.group", groupKafka, "the group TestChaos runs: kafka (the lease and the history in Kafka) or archive (no kafka section: the lease and the history in the archive; TestChaosArchiveGroup then leaves it to TestChaos)")
	flagKeep    = flag.Bool("chaos.keep", false, "keep the run's directory (members' logs, configs, replica) and print where it is")
)

// Paths of the binaries TestMain builds.
var walshipBin, walreplayBin string

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "walship-chaos-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "TestMain:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	walshipBin = filepath.Join(dir, "walship")
	walreplayBin = filepath.Join(dir, "walreplay")
	// Without -race on purpose: the members are the system under test, and a
	// race build would slow them down enough to turn every lease into a
	// takeover on a loaded 2-core machine.
	for bin, pkg := range map[string]string{walshipBin: "../cmd/walship", walreplayBin: "../cmd/walreplay"} {
		build := exec.Command("go", "build", "-o", bin, pkg)
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "TestMain: go build %s: %v\n", pkg, err)
			return 1
		}
	}
	return m.Run()
}

// runSeed returns the seed of this run and logs it, so a failure can be
// repeated with -chaos.seed.
func runSeed(t testing.TB) uint64 {
	t.Helper()
	s := *flagSeed
	if env := os.Getenv("WALSHIP_CHAOS_SEED"); s == 0 && env != "" {
		var err error
		if s, err = strconv.ParseUint(env, 10, 64); err != nil {
			t.Fatalf("WALSHIP_CHAOS_SEED: %v", err)
		}
	}
	if s == 0 {
		s = rand.Uint64()
	}
	t.Logf("chaos seed %d (repeat with -chaos.seed=%d)", s, s)
	return s
}

// freePort returns a loopback port free at the time of the call. The
// members need their ports known before they start (the writers and the
// pollers address them), so port 0 will not do; a port taken in between
// makes that member's start fail and the supervisor start it again.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// cmdResult is the outcome of one run of a tool.
type cmdResult struct {
	stdout, stderr string
	code           int
}

func (r cmdResult) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, clip(r.stdout), clip(r.stderr))
}

// runTool runs bin with args and returns its output and exit code; an error
// only when it could not run at all.
func runTool(ctx context.Context, bin string, args ...string) (cmdResult, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	res := cmdResult{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		res.code = ee.ExitCode()
		return res, nil
	}
	return res, err
}

func clip(s string) string {
	if len(s) > 4000 {
		return s[:2000] + "\n...\n" + s[len(s)-2000:]
	}
	return s
}

// waitFor polls cond until it returns true or limit passes; it then fails
// the test with what cond said last. Every wait of the suite is one: a
// condition with a generous deadline, never a sleep.
func waitFor(t testing.TB, what string, limit time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(limit)
	last := ""
	for {
		ok, why := cond()
		if ok {
			return
		}
		if why != "" {
			last = why
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s: %s", limit, what, last)
		}
		time.Sleep(100 * time.Millisecond) // poll interval, not a wait for an event
	}
}
