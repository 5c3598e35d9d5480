package pgsource

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/walship/walship/change"
	"github.com/walship/walship/internal/pgtest"
	"github.com/walship/walship/replica"
)

// TestKeylessAndTruncateReplayInReplicas: streamed changes of a REPLICA
// IDENTITY FULL table without a key (duplicate rows, one of them updated,
// another deleted), a TRUNCATE ... CASCADE of a parent and its child and a
// TRUNCATE ... RESTART IDENTITY of a serial table, followed by inserts that
// take the restarted ids, give SQLite and PostgreSQL replicas equal to the
// source; the log carries the truncates' options.
func TestKeylessAndTruncateReplayInReplicas(t *testing.T) {
	e := newEnv(t, pgtest.WithoutFsync())
	e.exec(`CREATE TABLE parent (id serial PRIMARY KEY, v text)`,
		`CREATE TABLE child (id serial PRIMARY KEY, pid int REFERENCES parent, v text)`,
		`CREATE TABLE counter (id serial PRIMARY KEY, v text)`,
		`CREATE TABLE dup (a int, b text)`, `ALTER TABLE dup REPLICA IDENTITY FULL`,
		`INSERT INTO parent (v) VALUES ('p1'), ('p2')`, `INSERT INTO child (pid, v) VALUES (1, 'c1'), (2, 'c2')`,
		`INSERT INTO dup VALUES (0, 'snap'), (0, 'snap')`,
		`CREATE DATABASE replica`)
	r := e.run(testConfig(e.dsn))
	// The snapshot's locks would deadlock with TRUNCATE ... CASCADE.
	deadline := time.Now().Add(2 * time.Minute)
	for !r.src.Stats().SnapshotDone {
		if time.Now().After(deadline) {
			t.Fatal("snapshot not done within 2 minutes")
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.exec(`INSERT INTO dup VALUES (1, 'x'), (1, 'x'), (1, 'x'), (2, NULL), (2, NULL)`,
		`UPDATE dup SET b = 'z' WHERE ctid = (SELECT ctid FROM dup WHERE a = 1 LIMIT 1)`,
		`DELETE FROM dup WHERE ctid = (SELECT ctid FROM dup WHERE a = 2 LIMIT 1)`,
		`DELETE FROM dup WHERE ctid = (SELECT ctid FROM dup WHERE a = 0 LIMIT 1)`,
		`TRUNCATE parent CASCADE`,
		`INSERT INTO parent (v) VALUES ('p3')`, `INSERT INTO child (pid, v) VALUES (3, 'c3')`,
		`INSERT INTO counter (v) SELECT 'a' || i FROM generate_series(1, 5) i`,
		`TRUNCATE counter RESTART IDENTITY`,
		`INSERT INTO counter (v) VALUES ('b1'), ('b2')`)
	e.catchUp(r, 60*time.Second)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	txns := readLog(t, e.w)
	opts := map[string]change.TruncateOptions{}
	for _, txn := range txns {
		for _, c := range txn.Changes {
			if c.Op == change.Truncate {
				opts[c.Table.Name] = c.TruncateOpts
			}
		}
	}
	if opts["parent"] != change.TruncateCascade || opts["child"] != change.TruncateCascade ||
		opts["counter"] != change.TruncateRestartIdentity {
		t.Errorf("truncate options in the log: %v", opts)
	}

	ctx := context.Background()
	want, err := replica.Dump(ctx, e.dsn)
	if err != nil {
		t.Fatal(err)
	}
	if got := want["counter"]; len(got) != 2 || got[0] != `{"id":"1","v":"b1"}` {
		t.Fatalf("source counter = %v, want ids restarted at 1", got)
	}
	for _, url := range []string{"sqlite://" + filepath.Join(t.TempDir(), "r.db"), e.c.DSN("replica")} {
		a, err := replica.Open(ctx, url, replica.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Apply(ctx, txns); err != nil {
			t.Fatalf("%s: %v", url, err)
		}
		a.Close()
		got, err := replica.Dump(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		if d := replica.Diff(want, got); d != "" {
			t.Errorf("replica %s differs from the source:\n%s", url, d)
		}
	}
}
