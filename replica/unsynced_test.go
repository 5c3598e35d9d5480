package replica

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/walship/walship/change"
)

// TestUnsyncedSQLite: an unsynced applier commits without syncing
// (synchronous=NORMAL), and Close leaves every applied transaction in the
// database file itself (the WAL checkpointed and emptied), where the
// checkpoint synced it.
func TestUnsyncedSQLite(t *testing.T) {
	ctx := context.Background()
	url := sqliteURL(t)
	a, err := Open(ctx, url, Options{Unsynced: true})
	if err != nil {
		t.Fatal(err)
	}
	var sync int
	if err := a.(*applier).b.(*sqliteBackend).db.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&sync); err != nil {
		t.Fatal(err)
	}
	if sync != 1 {
		t.Fatalf("PRAGMA synchronous = %d under Unsynced, want 1 (NORMAL)", sync)
	}
	for i := range 50 {
		apply(t, a, txn(uint64(100+i), ins("public.t", []string{"id"}, row("id", i, "v", "x"))))
	}
	path := strings.TrimPrefix(url, "sqlite://")
	if fi, err := os.Stat(path + "-wal"); err != nil || fi.Size() == 0 {
		t.Fatalf("before Close the commits should sit in the WAL file: %v %v", fi, err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path + "-wal"); err == nil && fi.Size() != 0 {
		t.Fatalf("after Close the WAL file still holds %d bytes: not checkpointed into the database", fi.Size())
	}
	d := dump(t, url)
	if n := len(d["t"]); n != 50 {
		t.Fatalf("after reopening: %d rows, want 50", n)
	}

	// The default stays FULL: a consumer's commit is on disk before it
	// is acknowledged upstream.
	b := open(t, sqliteURL(t), Options{})
	if err := b.(*applier).b.(*sqliteBackend).db.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&sync); err != nil {
		t.Fatal(err)
	}
	if sync != 2 {
		t.Fatalf("PRAGMA synchronous = %d by default, want 2 (FULL)", sync)
	}
	var cache int
	if err := b.(*applier).b.(*sqliteBackend).db.QueryRowContext(ctx, "PRAGMA cache_size").Scan(&cache); err != nil {
		t.Fatal(err)
	}
	if cache != -65536 {
		t.Fatalf("PRAGMA cache_size = %d, want -65536 (64 MiB)", cache)
	}
}

// TestUnsyncedPostgres: the session runs with synchronous_commit off, and
// Close ends with a synchronous commit (which waits for the WAL flush of
// everything before it) that succeeds.
func TestUnsyncedPostgres(t *testing.T) {
	ctx := context.Background()
	url := pgURL(t)
	a, err := Open(ctx, url, Options{Unsynced: true})
	if err != nil {
		t.Fatal(err)
	}
	var setting string
	if err := a.(*applier).b.(*postgresBackend).conn.QueryRow(ctx, "SHOW synchronous_commit").Scan(&setting); err != nil {
		t.Fatal(err)
	}
	if setting != "off" {
		t.Fatalf("synchronous_commit = %q under Unsynced, want off", setting)
	}
	apply(t, a, txn(100, ins("public.t", []string{"id"}, row("id", 1, "v", "x"))),
		txn(101, change.Change{Table: tbl("public.t"), Op: change.Insert, Key: row("id", 2), After: row("id", 2, "v", "y")}))
	if err := a.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	d := dump(t, url)
	if n := len(d["t"]); n != 2 {
		t.Fatalf("%d rows, want 2", n)
	}
	pos, err := ReadState(ctx, url)
	if err != nil || pos.LSN != 101 {
		t.Fatalf("position %+v, %v; want 101", pos, err)
	}
}
