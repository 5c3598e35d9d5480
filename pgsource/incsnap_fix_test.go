package pgsource

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/walship/walship/internal/pgtest"
)

// A transaction's commit is in the WAL, and streamed, before it is
// visible to other snapshots: with synchronous replication it stays
// invisible while it waits for a standby. An incremental snapshot chunk
// read meanwhile holds the row's old value; placed after the streamed
// update it would undo it in every replica. The chunk must be copied again
// until the commit is visible.
func TestIncrementalChunkWaitsForStreamedCommit(t *testing.T) {
	e := newEnv(t, pgtest.WithoutFsync())
	e.exec(`CREATE TABLE acc (id int PRIMARY KEY, v int)`, `INSERT INTO acc SELECT g, g FROM generate_series(1, 10) g`)
	cfg := testConfig(e.dsn)
	cfg.Snapshot = "never"
	r := e.run(cfg)
	e.waitSlot("walship")
	waitFor(t, r, 60*time.Second, "streaming", func(s Stats) bool { return s.ConfirmedLSN > 0 })
	ctx := context.Background()
	// A synchronous standby that never comes: commits wait for it, in
	// the WAL but not yet visible.
	e.exec(`ALTER SYSTEM SET synchronous_standby_names = 'ghost'`, `SELECT pg_reload_conf()`)
	t.Cleanup(func() { e.exec(`ALTER SYSTEM RESET synchronous_standby_names`, `SELECT pg_reload_conf()`) })
	tc := e.conn()
	var pid int
	if err := tc.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		var ssn string
		if err := tc.QueryRow(ctx, `SHOW synchronous_standby_names`).Scan(&ssn); err != nil {
			t.Fatal(err)
		}
		if ssn == "ghost" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("synchronous_standby_names not reloaded")
		}
		time.Sleep(20 * time.Millisecond)
	}
	before := r.src.Stats().Txns
	done := make(chan error, 1)
	go func() {
		_, err := tc.Exec(ctx, `SET synchronous_commit = on; UPDATE acc SET v = 999 WHERE id = 5`)
		done <- err
	}()
	waitFor(t, r, 60*time.Second, "the update streamed", func(s Stats) bool { return s.Txns > before })
	var vis int
	if err := e.conn().QueryRow(ctx, `SELECT v FROM acc WHERE id = 5`).Scan(&vis); err != nil {
		t.Fatal(err)
	}
	if vis != 5 {
		t.Fatalf("the update is already visible (v = %d): the test proves nothing", vis)
	}
	if _, err := r.src.RequestSnapshot(ctx, "public.acc", ""); err != nil {
		t.Fatal(err)
	}
	// Either the chunk is copied again (fixed) or the snapshot finishes
	// with the stale row (the defect, caught by the comparison below).
	waitFor(t, r, 60*time.Second, "a chunk copied again, or the snapshot done", func(s Stats) bool {
		r.src.inc.mu.Lock()
		retried := r.src.inc.retried
		r.src.inc.mu.Unlock()
		return retried > 0 || s.IncrementalPending == 0
	})
	// Cancelling the wait leaves the transaction committed, now visible.
	e.exec(fmt.Sprintf(`SELECT pg_cancel_backend(%d)`, pid))
	if err := <-done; err != nil {
		t.Logf("update: %v", err)
	}
	e.exec(`ALTER SYSTEM RESET synchronous_standby_names`, `SELECT pg_reload_conf()`)
	waitFor(t, r, 60*time.Second, "incremental snapshot done", func(s Stats) bool {
		return s.IncrementalPending == 0 && s.IncrementalChunks > 0
	})
	e.catchUp(r, 60*time.Second)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	pks := map[string][]string{"public.acc": {"id"}}
	compareModels(t, replay(t, readLog(t, e.w), pks), sourceModel(t, e.dsn, pks))
}

// A where clause naming the table ("rf.id") on a table with a publication
// row filter: the chunk SELECT reads the table through a subquery, which
// must keep the table's name. And a request whose SELECT fails on its SQL
// or its data is abandoned (reported), not retried forever in front of the
// requests queued after it.
func TestIncrementalWhereNamesTableWithRowFilter(t *testing.T) {
	e := newEnv(t, pgtest.WithoutFsync())
	e.exec(`CREATE TABLE rf (id int PRIMARY KEY, region text)`,
		`INSERT INTO rf SELECT g, CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END FROM generate_series(1, 100) g`)
	cfg := testConfig(e.dsn)
	cfg.Snapshot = "never"
	cfg.Tables = []TableSpec{{Name: "public.rf", Where: "id % 2 = 0"}}
	r := e.run(cfg)
	waitFor(t, r, 60*time.Second, "streaming", func(s Stats) bool { return s.ConfirmedLSN > 0 })
	ctx := context.Background()
	if _, err := r.src.RequestSnapshot(ctx, "public.rf", "rf.id <= 50"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, r, 60*time.Second, "the qualified request done", func(s Stats) bool { return s.IncrementalPending == 0 })
	if s := r.src.Stats(); s.IncrementalRows != 25 || s.IncrementalFailed != 0 {
		t.Fatalf("copied %d rows (want the 25 even ids up to 50), %d failed", s.IncrementalRows, s.IncrementalFailed)
	}
	// Valid SQL (the request check runs it with LIMIT 0), fails on every row.
	bad, err := r.src.RequestSnapshot(ctx, "public.rf", "1 / (id - id) = 1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.src.RequestSnapshot(ctx, "public.rf", "id > 90"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, r, 60*time.Second, "the queue past the failing request", func(s Stats) bool { return s.IncrementalPending == 0 })
	if s := r.src.Stats(); s.IncrementalRows != 30 || s.IncrementalFailed != 1 {
		t.Fatalf("copied %d rows (want 25 + 5), %d failed (want 1)", s.IncrementalRows, s.IncrementalFailed)
	}
	var found bool
	for _, q := range r.src.SnapshotRequests() {
		if q.ID == bad.ID {
			found = true
			if !strings.Contains(q.Error, "division by zero") {
				t.Fatalf("failed request's error: %q", q.Error)
			}
		}
	}
	if !found {
		t.Fatalf("the failed request is not reported: %+v", r.src.SnapshotRequests())
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
}
