package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/walship/walship/change"
	"github.com/walship/walship/replica"
)

// emptyHash is the checksum of a chunk without rows: SHA-256 of nothing.
const emptyHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// applyChecks applies one transaction per message to the SQLite replica
// at path, from LSN lsn on.
func applyChecks(t *testing.T, path string, lsn uint64, msgs ...replica.ChecksumMessage) {
	t.Helper()
	ctx := context.Background()
	app, err := replica.Open(ctx, "sqlite://"+path, replica.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	var txns []change.Committed
	for i, m := range msgs {
		b, _ := json.Marshal(m)
		txns = append(txns, change.Committed{CommitLSN: lsn + uint64(i), CommitTime: time.Now(), Txn: change.Txn{Changes: []change.Change{{Op: change.Message,
			Message: &change.LogicalMessage{Prefix: replica.ChecksumPrefix, Content: b, Transactional: true}}}}})
	}
	if err := app.Apply(ctx, txns); err != nil {
		t.Fatal(err)
	}
}

func TestChecksumReportExitCodes(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "r.db")
	cfg := filepath.Join(dir, "consume.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("wal: {dir: %q}\nreplica: {url: \"sqlite://%s\"}\n", dir, db)), 0o644); err != nil {
		t.Fatal(err)
	}
	// The table is absent from the replica: it holds no rows in any range.
	chunk := func(round string, n, attempt int, rows int64, hash string) replica.ChecksumMessage {
		m := replica.ChecksumMessage{Round: round, Table: "public.t", Chunk: n, Attempt: attempt, Key: []string{"id"}, Columns: []string{"id"}, Rows: rows, Hash: hash}
		if n > 1 {
			m.After = []string{fmt.Sprint(n * 10)}
		}
		return m
	}
	applyChecks(t, db, 1, chunk("r1", 1, 1, 0, emptyHash), chunk("r1", 1, 2, 0, emptyHash))
	if r := walship(t, nil, "checksum", "report", "--config", cfg); r.code != 3 || !strings.Contains(r.stdout, "no finished round") {
		t.Fatalf("round without its end: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	applyChecks(t, db, 10, replica.ChecksumMessage{Round: "r1", Done: true, Chunks: 1})
	if r := walship(t, nil, "checksum", "report", "--config", cfg); r.code != 0 || !strings.Contains(r.stdout, "public.t: 1 chunks, 1 equal, 0 different") {
		t.Fatalf("equal round: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// Round r2: chunk 2 differs at a settled attempt (the source agreed
	// with itself); chunk 1 differs only at an attempt the source's
	// recheck disowned, then agrees.
	applyChecks(t, db, 20, chunk("r2", 1, 1, 1, "aa"), chunk("r2", 1, 2, 0, emptyHash),
		chunk("r2", 2, 1, 3, "bb"), chunk("r2", 2, 2, 3, "bb"), replica.ChecksumMessage{Round: "r2", Done: true, Chunks: 2})
	r := walship(t, nil, "checksum", "report", "--config", cfg)
	if r.code != 1 || !strings.Contains(r.stdout, "public.t: 2 chunks, 1 equal, 1 different") || !strings.Contains(r.stdout, "chunk 2 keys (20, +inf): source 3 rows, replica 0 rows") {
		t.Fatalf("differing round: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = walship(t, nil, "checksum", "report", "--config", cfg, "--json")
	var rep struct {
		Round  string
		Tables []struct {
			Table     string
			Different []struct{ Chunk int }
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || r.code != 1 || rep.Round != "r2" || len(rep.Tables) != 1 || len(rep.Tables[0].Different) != 1 || rep.Tables[0].Different[0].Chunk != 2 {
		t.Fatalf("--json: exit %d, %v\n%s", r.code, err, r.stdout)
	}
}

// TestChecksumStartPostsToTheDaemon: `walship checksum start` posts the
// round to the operator listener of the run config, with its token.
func TestChecksumStartPostsToTheDaemon(t *testing.T) {
	const token = "0123456789abcdef0123"
	got := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.URL.Path != "/v1/checksum" || r.Header.Get("Authorization") != "Bearer "+token {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		got <- string(b)
		w.WriteHeader(http.StatusAccepted)
	}))
	defer srv.Close()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "walship.yaml")
	y := fmt.Sprintf("wal: {dir: %q}\nsource:\n  postgres: {dsn: \"postgres://localhost/x\"}\nchecksum: {}\nhttp: {listen: %q, token: %q}\n", dir, strings.TrimPrefix(srv.URL, "http://"), token)
	if err := os.WriteFile(cfg, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	r := walship(t, nil, "checksum", "start", "--config", cfg, "--table", "public.t")
	if r.code != 0 || !strings.Contains(r.stdout, "queued") {
		t.Fatalf("start: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if b := <-got; !strings.Contains(b, `"table":"public.t"`) {
		t.Fatalf("body %s", b)
	}
}

// TestChecksumRepairPostsDifferingChunks: `walship checksum repair` reads
// the replica's last finished round and posts one repair per differing
// chunk to the daemon of the run config; with no finished round it exits
// 3 and posts nothing.
func TestChecksumRepairPostsDifferingChunks(t *testing.T) {
	const token = "0123456789abcdef0123"
	got := make(chan string, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.URL.Path != "/v1/snapshot" || r.Header.Get("Authorization") != "Bearer "+token {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		got <- string(b)
		w.WriteHeader(http.StatusAccepted)
		w.Write([]byte(`{"id":"abc-1","table":"public.t"}`))
	}))
	defer srv.Close()
	dir := t.TempDir()
	db := filepath.Join(dir, "r.db")
	consume := filepath.Join(dir, "consume.yaml")
	run := filepath.Join(dir, "walship.yaml")
	if err := os.WriteFile(consume, []byte(fmt.Sprintf("wal: {dir: %q}\nreplica: {url: \"sqlite://%s\"}\n", dir, db)), 0o644); err != nil {
		t.Fatal(err)
	}
	y := fmt.Sprintf("wal: {dir: %q}\nsource:\n  postgres: {dsn: \"postgres://localhost/x\"}\nhttp: {listen: %q, token: %q}\n", dir, strings.TrimPrefix(srv.URL, "http://"), token)
	if err := os.WriteFile(run, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	chunk := func(n int, rows int64, hash string) replica.ChecksumMessage {
		m := replica.ChecksumMessage{Round: "r1", Table: "public.t", Chunk: n, Attempt: 1, Key: []string{"id"}, Columns: []string{"id"}, Rows: rows, Hash: hash}
		if n == 1 {
			m.Hi = []string{"10"}
		} else {
			m.After = []string{"10"}
		}
		return m
	}
	applyChecks(t, db, 1, chunk(1, 0, emptyHash))
	if r := walship(t, nil, "checksum", "repair", "--config", consume, "--run-config", run); r.code != 3 || len(got) != 0 {
		t.Fatalf("no finished round: exit %d, %d posts\n%s%s", r.code, len(got), r.stdout, r.stderr)
	}
	// Chunk 2 (10, +inf) differs at two attempts that agree at the source.
	c2 := chunk(2, 3, "bb")
	c2b := c2
	c2b.Attempt = 2
	applyChecks(t, db, 10, c2, c2b, replica.ChecksumMessage{Round: "r1", Done: true, Chunks: 2})
	r := walship(t, nil, "checksum", "repair", "--config", consume, "--run-config", run)
	if r.code != 0 || !strings.Contains(r.stdout, "repair abc-1 queued: public.t keys (10, +inf)") || !strings.Contains(r.stdout, "1 repair(s) queued from round r1") {
		t.Fatalf("repair: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if b := <-got; b != `{"table":"public.t","repair":{"after":["10"]}}` || len(got) != 0 {
		t.Fatalf("posted %s (and %d more)", b, len(got))
	}
}
