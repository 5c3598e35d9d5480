package main

import (
	"bufio"
	"errors"
	"io"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/walship/walship/change"
)

// TestConcurrentReaders runs dump and verify, which open the log read-only,
// again and again while an append process is writing to it: they succeed,
// show whole transactions only, and show every transaction acknowledged
// before they started. A second append on the same directory fails at once
// with an error saying the log is in use, and appends nothing.
func TestConcurrentReaders(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const total = 3000
	in := make([]string, total)
	for i := range in {
		in[i] = killTxn(uint64(i + 1))
	}
	txns := parseTxns(t, in)

	cmd := exec.Command(walshipBin, "append", "--wal", dir, "--segment-size", "64KiB")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill() // if the test fails early

	var (
		mu    sync.Mutex
		acks  []ack
		first = make(chan struct{}) // closed at the first acknowledgement
	)
	readDone := make(chan error, 1)
	go func() {
		var perr error
		err := scanLines(bufio.NewReader(stdout), func(l string) {
			a, err := parseAck(l)
			if err != nil && perr == nil {
				perr = err
			}
			mu.Lock()
			acks = append(acks, a)
			if len(acks) == 1 {
				close(first)
			}
			mu.Unlock()
		})
		if perr == nil && !errors.Is(err, io.EOF) {
			perr = err
		}
		readDone <- perr
	}()
	feedDone := make(chan struct{}) // closed when feeding ends, with feedErr set
	var feedErr error
	var dumpsDone atomic.Int64
	go func() {
		defer close(feedDone)
		for i, l := range in {
			if i == len(in)-1 {
				// Hold the last transaction back until a few dumps have run
				// beside the writer: on a loaded CI machine one dump can take
				// longer than feeding everything else.
				for deadline := time.Now().Add(2 * time.Minute); dumpsDone.Load() < 3 && time.Now().Before(deadline); {
					time.Sleep(10 * time.Millisecond)
				}
			}
			if _, err := io.WriteString(stdin, l+"\n"); err != nil {
				feedErr = err
				return
			}
			if i%3 == 2 && i%300 < 200 { // trickles and floods
				time.Sleep(time.Millisecond) // keep it writing for a while
			}
		}
		feedErr = stdin.Close()
	}()

	select {
	case <-first:
	case <-time.After(30 * time.Second):
		t.Fatalf("no acknowledgement in 30s; stderr:\n%s", stderr.String())
	}

	// A second writer is refused at once, naming the problem.
	start := time.Now()
	second := walship(t, []byte(killTxn(1<<40)+"\n"), "append", "--wal", dir, "--segment-size", "64KiB")
	if second.code == 0 || second.stdout != "" || !strings.Contains(second.stderr, "in use") || !strings.Contains(second.stderr, dir) {
		t.Errorf("second append on a log in use: want a failure saying the log %s is in use, got\n%v", dir, second)
	}
	if d := time.Since(start); d > 30*time.Second { // a process start beside a busy writer
		t.Errorf("second append took %v to fail", d)
	}

	running := func() bool {
		select {
		case <-feedDone:
			return false
		default:
			return true
		}
	}
	dumps, verifies, dumpFailures, verifyFailures := 0, 0, 0, 0
	for running() && dumps < 30 {
		mu.Lock()
		before := len(acks)
		var lastAck ack
		if before > 0 {
			lastAck = acks[before-1]
		}
		mu.Unlock()

		var wg sync.WaitGroup
		var v result
		var verr error
		wg.Add(1)
		go func() { defer wg.Done(); v, verr = runWalship(nil, "verify", "--wal", dir) }()
		d := walship(t, nil, "dump", "--wal", dir)
		wg.Wait()
		if verr != nil {
			t.Fatal(verr)
		}
		verifies++
		if v.code != 0 {
			verifyFailures++
			if verifyFailures == 1 {
				t.Errorf("verify beside a running append: want exit 0, got\n%v", v)
			}
		}
		dumps++
		dumpsDone.Add(1)
		if d.code != 0 {
			dumpFailures++
			if dumpFailures == 1 {
				t.Errorf("dump beside a running append: want exit 0, got\n%v", d)
			}
			continue
		}
		dump := parseDump(t, d.stdout)
		// Whole transactions, in order, from the start of the input.
		n := 0
		for i := 0; i < len(dump); n++ {
			if n >= total {
				t.Fatalf("dump has more transactions than were fed")
			}
			k := len(txns[n].Changes)
			if i+k > len(dump) {
				t.Fatalf("dump beside a running append ends inside transaction %d (LSN %d)", n+1, dump[i].LSN)
			}
			for j := range k {
				if dl := dump[i+j]; dl.LSN != uint64(i+j+1) || dl.CommitLSN != uint64(i+k) || !dl.Change.Equal(&txns[n].Changes[j]) {
					t.Fatalf("dump beside a running append: transaction %d is not whole and intact at line %d: %s", n+1, i+j+1,
						change.AppendDumpJSON(nil, dl))
				}
			}
			i += k
		}
		if n < before {
			t.Fatalf("dump shows %d transactions, but %d were acknowledged before it started", n, before)
		}
		if before > 0 && dump[len(dump)-1].CommitLSN < lastAck.LSN {
			t.Fatalf("dump ends at LSN %d, before the acknowledged %s", dump[len(dump)-1].CommitLSN, lastAck.raw)
		}
	}
	select {
	case <-feedDone:
	case <-time.After(time.Minute):
		t.Fatal("feeding append did not end in a minute")
	}
	if feedErr != nil {
		t.Fatalf("feeding append: %v", feedErr)
	}
	select {
	case err := <-readDone:
		if err != nil {
			t.Fatalf("reading acknowledgements: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatalf("append did not finish in a minute after the end of its input; stderr:\n%s", stderr.String())
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("append: %v\n%s", err, stderr.String())
	}
	t.Logf("%d dumps (%d failed) and %d verifies (%d failed) beside the writer", dumps, dumpFailures, verifies, verifyFailures)
	if dumps < 3 {
		t.Errorf("only %d dumps ran while append was writing", dumps)
	}
	checkAcks(t, acks, txns, 1, time.Time{})
	checkDump(t, parseDump(t, mustWalship(t, nil, "dump", "--wal", dir).stdout), txns, acks, 1)
	mustWalship(t, nil, "verify", "--wal", dir)

	// Once the writer is gone, the lock is free again.
	res := mustWalship(t, []byte(killTxn(total+1)+"\n"), "append", "--wal", dir)
	if a := parseAcks(t, res.stdout); len(a) != 1 || a[0].LSN != acks[len(acks)-1].LSN+uint64(1+(total+1)%4) {
		t.Errorf("append after the writer exited: %q", res.stdout)
	}
}
