package replica

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/walship/walship/change"
)

// crashTxns: txn i inserts row i and sets the counter row to i, so a
// replica is consistent iff it has rows 1..LSN and counter = LSN.
func crashTxns(from, to int) []change.Committed {
	var out []change.Committed
	for i := from; i <= to; i++ {
		out = append(out, txn(uint64(i),
			ins("rows", []string{"id"}, row("id", i, "pad", fmt.Sprintf("%0100d", i))),
			upd("counter", row("id", 0), row("id", 0, "n", i))))
	}
	return out
}

const (
	crashChildEnv   = "WALSHIP_REPLICA_CRASH_CHILD"
	crashChildReady = "crash child: replica open"
)

// TestCrashChild is the process TestSIGKILL kills: it applies crashTxns
// forever in batches of varying size.
func TestCrashChild(t *testing.T) {
	url := os.Getenv(crashChildEnv)
	if url == "" {
		return // only as a child of TestSIGKILL
	}
	a, err := Open(context.Background(), url, Options{MaxBatchTxns: 7})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println(crashChildReady) // the replica's tables exist now
	for size := 1; ; size = size%50 + 1 {
		p, err := a.Position(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Apply(context.Background(), crashTxns(int(p)-size/2+1, int(p)+size)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSIGKILL kills a process applying to the replica at random moments;
// after each kill the replica is consistent with its position, and
// applying on from it gives the exact result.
func TestSIGKILL(t *testing.T) {
	backends(t, func(t *testing.T, url string) {
		for round := 0; round < 4; round++ {
			cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$")
			cmd.Env = append(os.Environ(), crashChildEnv+"="+url)
			cmd.Stderr = os.Stderr
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// Kill it while it applies, not while it starts: before Open
			// has created the replica's tables there is nothing to check.
			ready := make(chan bool, 1)
			go func() {
				sc := bufio.NewScanner(stdout)
				for sc.Scan() {
					if sc.Text() == crashChildReady {
						ready <- true
						io.Copy(io.Discard, stdout)
						return
					}
				}
				ready <- false
			}()
			select {
			case ok := <-ready:
				if !ok {
					cmd.Wait()
					t.Fatalf("round %d: the child ended before opening the replica", round)
				}
			case <-time.After(60 * time.Second):
				cmd.Process.Kill()
				t.Fatalf("round %d: the child did not open the replica in 60s", round)
			}
			time.Sleep(time.Duration(150+round*70) * time.Millisecond)
			cmd.Process.Signal(syscall.SIGKILL)
			cmd.Wait()
			// The server finishes a COMMIT it received before the kill:
			// wait until the child's session is gone before looking.
			waitNoOtherSessions(t, url)
			st, err := ReadState(context.Background(), url)
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
			d := dump(t, url)
			if uint64(len(d["rows"])) != st.LSN || st.Txns != st.LSN {
				t.Fatalf("round %d: %d rows, state %+v", round, len(d["rows"]), st)
			}
			if st.LSN > 0 && d["counter"][0] != fmt.Sprintf(`{"id":"0","n":"%d"}`, st.LSN) {
				t.Fatalf("round %d: counter %v at LSN %d", round, d["counter"], st.LSN)
			}
			t.Logf("round %d: killed at LSN %d", round, st.LSN)
		}
		st, _ := ReadState(context.Background(), url)
		a := open(t, url, Options{})
		end := int(st.LSN) + 10
		apply(t, a, crashTxns(1, end)...)
		want := dump(t, url)
		if len(want["rows"]) != end || want["counter"][0] != fmt.Sprintf(`{"id":"0","n":"%d"}`, end) {
			t.Errorf("after resuming: %d rows, counter %v; want %d", len(want["rows"]), want["counter"], end)
		}
	})
}

func waitNoOtherSessions(t *testing.T, url string) {
	t.Helper()
	if !strings.HasPrefix(url, "postgres") {
		return
	}
	ctx := context.Background()
	conn, err := connectPostgres(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for deadline := time.Now().Add(10 * time.Second); ; {
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions of the killed process remain", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
