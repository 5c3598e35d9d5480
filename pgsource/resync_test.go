package pgsource

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/walship/walship/change"
	"github.com/walship/walship/internal/pgtest"
	"github.com/walship/walship/replica"
)

// replicaEqualsSource applies txns to a new SQLite replica and compares
// it with the source's tables.
func replicaEqualsSource(t *testing.T, dsn string, txns []change.Committed) {
	t.Helper()
	ctx := context.Background()
	url := "sqlite://" + filepath.Join(t.TempDir(), "r.db")
	ap, err := replica.Open(ctx, url, replica.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ap.Close()
	if err := ap.Apply(ctx, txns); err != nil {
		t.Fatal(err)
	}
	diff, err := replica.Compare(ctx, dsn, url)
	if err != nil {
		t.Fatal(err)
	}
	if diff != "" {
		t.Errorf("replica differs from the source:\n%s", diff)
	}
}

// TestResyncOfATablePublishedAgain: rows deleted while a table was out of
// the publication are deleted in replicas when it comes back (its copy
// is a repair of its whole key range), not left behind.
func TestResyncOfATablePublishedAgain(t *testing.T) {
	e := newEnv(t, pgtest.WithoutFsync())
	e.exec(`CREATE TABLE a (id int PRIMARY KEY, v int)`, `INSERT INTO a SELECT g, g FROM generate_series(1, 50) g`,
		`CREATE TABLE b (id int PRIMARY KEY, v text)`, `INSERT INTO b SELECT g, 'b' || g FROM generate_series(1, 50) g`)
	cfg := testConfig(e.dsn)
	cfg.Tables = []TableSpec{{Name: "public.a"}, {Name: "public.b"}}
	r := e.run(cfg)
	waitFor(t, r, 60*time.Second, "initial snapshot", func(s Stats) bool { return s.SnapshotDone })
	e.catchUp(r, 60*time.Second)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	with := cfg.Tables
	cfg.Tables = slices.DeleteFunc(slices.Clone(cfg.Tables), func(t TableSpec) bool { return t.Name == "public.b" })
	r = e.run(cfg)
	waitFor(t, r, 60*time.Second, "streaming without b", func(s Stats) bool { return s.ConfirmedLSN > 0 })
	e.exec(`DELETE FROM b WHERE id <= 10`, `UPDATE b SET v = 'away' WHERE id > 45`)
	e.catchUp(r, 60*time.Second)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	cfg.Tables = with
	r = e.run(cfg)
	waitFor(t, r, 2*time.Minute, "b copied again", func(s Stats) bool {
		return s.IncrementalPending == 0 && s.IncrementalChunks > 0
	})
	e.catchUp(r, 60*time.Second)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	replicaEqualsSource(t, e.dsn, readLog(t, e.w))
}

// TestResyncWhenTheRowFilterChanges: a table whose row filter changes
// between runs is copied again under the new one: rows the old filter
// left out reach replicas when it widens, and rows the new one leaves out
// are deleted from them when it narrows.
func TestResyncWhenTheRowFilterChanges(t *testing.T) {
	e := newEnv(t, pgtest.WithoutFsync())
	e.exec(`CREATE TABLE a (id int PRIMARY KEY, v int)`, `ALTER TABLE a REPLICA IDENTITY FULL`,
		`INSERT INTO a SELECT g, g FROM generate_series(1, 20) g`)
	cfg := testConfig(e.dsn)
	step := func(where string) []change.Committed {
		t.Helper()
		cfg.Tables = []TableSpec{{Name: "public.a", Where: where}}
		r := e.run(cfg)
		waitFor(t, r, 60*time.Second, "snapshot", func(s Stats) bool { return s.SnapshotDone })
		e.exec(`UPDATE a SET v = v + 100 WHERE id > 18`)
		waitFor(t, r, 2*time.Minute, "copies", func(s Stats) bool { return s.IncrementalPending == 0 })
		e.catchUp(r, 60*time.Second)
		if err := r.stop(); err != nil {
			t.Fatal(err)
		}
		return readLog(t, e.w)
	}
	step("id % 2 = 0")
	replicaEqualsSource(t, e.dsn, step("")) // widened: every row
	e.exec(`UPDATE a SET v = -v WHERE id % 2 = 1`)
	txns := step("id > 10") // narrowed: 1..10 leave the replica
	ctx := context.Background()
	url := "sqlite://" + filepath.Join(t.TempDir(), "r.db")
	ap, err := replica.Open(ctx, url, replica.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ap.Close()
	if err := ap.Apply(ctx, txns); err != nil {
		t.Fatal(err)
	}
	d, err := replica.Dump(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(d["a"]); n != 10 {
		t.Errorf("after narrowing the filter to id > 10 the replica has %d rows, want 10:\n%v", n, d["a"])
	}
}
