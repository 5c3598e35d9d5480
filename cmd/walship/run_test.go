package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/walship/walship/wal"
)

// daemonProc is a `walship run` child process.
type daemonProc struct {
	cmd      *exec.Cmd
	httpAddr string // the HTTP source's address
	stderr   *syncBuffer
	done     chan struct{} // closed when the process has been waited for
}

// wait waits for the process to end and returns its exit code (-1 if
// killed by a signal).
func (p *daemonProc) wait() int {
	<-p.done
	return p.cmd.ProcessState.ExitCode()
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startRun starts `walship run --config cfg` and waits until its HTTP
// source listens (the address is read from its JSON log).
func startRun(t *testing.T, cfg string) *daemonProc {
	t.Helper()
	cmd := exec.Command(walshipBin, "run", "--config", cfg)
	pr, pw := io.Pipe()
	p := &daemonProc{cmd: cmd, stderr: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stderr = io.MultiWriter(pw, p.stderr)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			var m struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &m) == nil && m.Msg == "http source listening" {
				found <- m.Addr
			}
		}
	}()
	go func() { cmd.Wait(); pw.Close(); close(p.done) }()
	select {
	case p.httpAddr = <-found:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("walship run did not start:\n%s", p.stderr.String())
	}
	return p
}

func writeRunConfig(t *testing.T, dir string) string {
	t.Helper()
	cfg := filepath.Join(dir, "walship.yaml")
	y := "wal: {dir: wal, segment_size: 1MiB}\nsource:\n  http: {listen: \"127.0.0.1:0\"}\nhttp: {listen: \"127.0.0.1:0\"}\nlog: {format: json}\n"
	if err := os.WriteFile(cfg, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// postIDs posts one transaction per id and returns the acknowledged LSN
// of each, or an error if the request got no complete answer.
func postIDs(client *http.Client, addr string, ids []int) (map[int]uint64, error) {
	var b strings.Builder
	for _, id := range ids {
		fmt.Fprintf(&b, `{"table":"public.t","op":"c","key":{"id":%d},"after":{"id":%d,"v":"%d"}}`+"\n", id, id, id)
	}
	resp, err := client.Post("http://"+addr+"/v1/append", "application/x-ndjson", strings.NewReader(b.String()))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		body, _ := io.ReadAll(resp.Body)
		return nil, fmt.Errorf("status %d: %s", resp.StatusCode, body)
	}
	out := map[int]uint64{}
	dec := json.NewDecoder(resp.Body)
	for _, id := range ids {
		var a struct{ LSN uint64 }
		if err := dec.Decode(&a); err != nil {
			return nil, err
		}
		out[id] = a.LSN
	}
	return out, nil
}

// TestRunSIGKILL kills `walship run` at random moments while clients post
// transactions over HTTP, many times. Every acknowledged transaction must
// be in the log exactly once at its acknowledged LSN; no transaction may
// appear twice; LSNs stay dense.
func TestRunSIGKILL(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := writeRunConfig(t, dir)
	rng := rand.New(rand.NewPCG(seed(t), 7))
	acked := map[int]uint64{}
	var mu sync.Mutex
	nextID := 0
	rounds := 12
	if testing.Short() {
		rounds = 4
	}
	for round := range rounds {
		p := startRun(t, cfg)
		client := &http.Client{Timeout: 10 * time.Second}
		ctx, stop := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for ctx.Err() == nil {
					mu.Lock()
					ids := make([]int, 1+rng.IntN(5))
					for i := range ids {
						ids[i] = nextID
						nextID++
					}
					mu.Unlock()
					got, err := postIDs(client, p.httpAddr, ids)
					if err != nil {
						return // the daemon is gone
					}
					mu.Lock()
					for id, lsn := range got {
						acked[id] = lsn
					}
					mu.Unlock()
				}
			})
		}
		mu.Lock()
		delay := time.Duration(30+rng.IntN(250)) * time.Millisecond
		mu.Unlock()
		time.Sleep(delay)
		p.cmd.Process.Signal(syscall.SIGKILL)
		stop()
		wg.Wait()
		p.wait()
		t.Logf("round %d: %d acknowledged so far", round, len(acked))
	}
	if len(acked) == 0 {
		t.Fatal("nothing was acknowledged")
	}

	l, _, err := wal.OpenReadOnly(nil, filepath.Join(dir, "wal"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	r, err := l.NewReader(l.FirstLSN(), false)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]uint64{}
	next := l.FirstLSN()
	for {
		txn, err := r.Next(context.Background())
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if txn.FirstLSN != next {
			t.Fatalf("LSN gap: transaction at %d, expected %d", txn.FirstLSN, next)
		}
		next = txn.CommitLSN + 1
		v, _ := txn.Changes[0].After.Get("id")
		id64, _ := v.Int()
		id := int(id64)
		if prev, dup := seen[id]; dup {
			t.Fatalf("id %d is in the log twice (LSNs %d and %d)", id, prev, txn.CommitLSN)
		}
		seen[id] = txn.CommitLSN
	}
	for id, lsn := range acked {
		got, ok := seen[id]
		if !ok {
			t.Fatalf("acknowledged id %d (LSN %d) is missing after SIGKILL", id, lsn)
		}
		if got != lsn {
			t.Fatalf("id %d acknowledged at LSN %d but is at %d", id, lsn, got)
		}
	}
	t.Logf("%d acknowledged, %d in the log", len(acked), len(seen))
}

// TestRunSIGTERM: a graceful stop answers in-flight requests, exits 0, and
// the log then holds exactly the acknowledged transactions.
func TestRunSIGTERM(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := writeRunConfig(t, dir)
	p := startRun(t, cfg)
	client := &http.Client{Timeout: 10 * time.Second}
	var acked, failed int
	var wg sync.WaitGroup
	var mu sync.Mutex
	for c := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				_, err := postIDs(client, p.httpAddr, []int{c*1_000_000 + i})
				mu.Lock()
				if err != nil {
					failed++
					mu.Unlock()
					return
				}
				acked++
				mu.Unlock()
			}
		})
	}
	time.Sleep(300 * time.Millisecond)
	p.cmd.Process.Signal(syscall.SIGTERM)
	wg.Wait()
	if code := p.wait(); code != 0 {
		t.Fatalf("exit code %d after SIGTERM:\n%s", code, p.stderr.String())
	}
	if !strings.Contains(p.stderr.String(), `"msg":"stopped"`) {
		t.Fatalf("no orderly stop in the log:\n%s", p.stderr.String())
	}
	res := mustWalship(t, nil, "dump", "--wal", filepath.Join(dir, "wal"))
	if n := len(lines(res.stdout)); n < acked {
		t.Fatalf("log has %d changes, %d were acknowledged", n, acked)
	}
}

func TestRunBadConfig(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "c.yaml")
	os.WriteFile(cfg, []byte("wal: {dir: w, sync: sometimes}\nsource: {http: {}}\n"), 0o644)
	res := walship(t, nil, "run", "--config", cfg)
	if res.code != 2 || !strings.Contains(res.stderr, cfg+": wal.sync (line 1)") {
		t.Fatalf("bad config: %v", res)
	}
	res = walship(t, nil, "run")
	if res.code != 2 || !strings.Contains(res.stderr, "--config is required") {
		t.Fatalf("no config: %v", res)
	}
	// A config file that does not exist is a bad config too.
	missing := filepath.Join(dir, "nope.yaml")
	for _, cmd := range []string{"run", "consume"} {
		res = walship(t, nil, cmd, "--config", missing)
		if res.code != 2 || !strings.Contains(res.stderr, missing) {
			t.Fatalf("%s with a missing config file: %v", cmd, res)
		}
	}
	// A token too short is refused (exit 2, naming the key) before
	// anything starts: no WAL is created, no listener opened.
	wal := filepath.Join(dir, "wal")
	for key, yaml := range map[string]string{
		"http.token":        "source: {http: {listen: \"127.0.0.1:0\"}}\nhttp: {listen: \"127.0.0.1:0\", token: abc12}\n",
		"source.http.token": "source: {http: {listen: \"127.0.0.1:0\", token: abc12}}\nhttp: {listen: \"127.0.0.1:0\"}\n",
	} {
		os.WriteFile(cfg, []byte("wal: {dir: "+wal+"}\n"+yaml), 0o644)
		res = walship(t, nil, "run", "--config", cfg)
		if res.code != 2 || !strings.Contains(res.stderr, key) || !strings.Contains(res.stderr, "too short") || strings.Contains(res.stderr, "listening") {
			t.Fatalf("%s too short: %v", key, res)
		}
		if _, err := os.Stat(wal); err == nil {
			t.Fatalf("%s too short: the WAL was created before the refusal", key)
		}
	}
}
