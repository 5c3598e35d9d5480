package pitr

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/walship/walship/archive"
	"github.com/walship/walship/change"
	"github.com/walship/walship/internal/pgtest"
	"github.com/walship/walship/replica"
)

// Source names PostgreSQL would cut alike (docs/REPLICA.md, Names): two
// tables and two columns sharing their first 63 bytes, two names with a
// two-byte character where a mapped name is cut, a long schema, and a
// table of schema public whose name has a dot (flattened alike in SQLite
// with table b of schema a).
var (
	nLongA  = strings.Repeat("t", 63) + "_alpha"
	nLongB  = strings.Repeat("t", 63) + "_beta"
	nColX   = strings.Repeat("c", 63) + "_x"
	nColY   = strings.Repeat("c", 63) + "_y"
	nUTFA   = strings.Repeat("u", 53) + "é" + strings.Repeat("ü", 10) + "1"
	nUTFB   = strings.Repeat("u", 53) + "é" + strings.Repeat("ü", 10) + "2"
	nLongSc = strings.Repeat("s", 70)
)

func nt(schema, name string) change.Table { return change.Table{Schema: schema, Name: name} }

func nrow(kv ...any) change.Row {
	var r change.Row
	for i := 0; i < len(kv); i += 2 {
		v := change.TextValue(fmt.Sprint(kv[i+1]))
		if n, ok := kv[i+1].(int); ok {
			v = change.IntValue(int64(n))
		}
		r = append(r, change.Column{Name: kv[i].(string), Value: v})
	}
	return r
}

func nins(t change.Table, after change.Row) change.Change {
	return change.Change{Table: t, Op: change.Insert, Key: after[:1], After: after}
}

// longNameWork is the workload: same-key rows in every table, then
// updates and deletes through the long names.
func longNameWork() []change.Txn {
	pub := change.DefaultSchema
	return []change.Txn{
		{Changes: []change.Change{
			nins(nt(pub, nLongA), nrow("id", 1, "v", "a1", nColX, "ax", nColY, "ay")),
			nins(nt(pub, nLongB), nrow("id", 1, "v", "b1", nColX, "bx", nColY, "by")),
			nins(nt(pub, nUTFA), nrow("id", 1, "v", "u1")),
			nins(nt(pub, nUTFB), nrow("id", 1, "v", "u2")),
			nins(nt(pub, "a.b"), nrow("id", 1, "v", "dot")),
			nins(nt(nLongSc, nLongA), nrow("id", 1, nUTFA, "s1", nUTFB, "s2")),
		}},
		{Changes: []change.Change{
			nins(nt(pub, nLongA), nrow("id", 2, "v", "a2", nColX, "ax2", nColY, "ay2")),
			nins(nt(pub, nLongB), nrow("id", 2, "v", "b2", nColX, "bx2", nColY, "by2")),
		}},
		{Changes: []change.Change{
			{Table: nt(pub, nLongA), Op: change.Update, Key: nrow("id", 1), After: nrow("id", 1, "v", "a1'", nColY, "ay'")},
			{Table: nt(pub, nLongB), Op: change.Delete, Key: nrow("id", 2)},
		}},
		{Changes: []change.Change{
			{Table: nt(nLongSc, nLongA), Op: change.Update, Key: nrow("id", 1), After: nrow("id", 1, nUTFA, "s1'", nUTFB, "s2")},
			nins(nt(pub, nUTFB), nrow("id", 2, "v", "u22")),
		}},
	}
}

// longNameWant is every table of longNameWork with exactly its own rows.
func longNameWant() replica.Tables {
	return replica.Tables{
		nLongA:                 {`{"` + nColX + `":"ax","` + nColY + `":"ay'","id":"1","v":"a1'"}`, `{"` + nColX + `":"ax2","` + nColY + `":"ay2","id":"2","v":"a2"}`},
		nLongB:                 {`{"` + nColX + `":"bx","` + nColY + `":"by","id":"1","v":"b1"}`},
		nUTFA:                  {`{"id":"1","v":"u1"}`},
		nUTFB:                  {`{"id":"1","v":"u2"}`, `{"id":"2","v":"u22"}`},
		"a.b":                  {`{"id":"1","v":"dot"}`},
		nLongSc + "." + nLongA: {`{"id":"1","` + nUTFA + `":"s1'","` + nUTFB + `":"s2"}`},
	}
}

// committed gives txns consecutive LSNs and commit times.
func committed(txns []change.Txn) []change.Committed {
	var out []change.Committed
	lsn := uint64(1)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, tx := range txns {
		c := change.Committed{FirstLSN: lsn, CommitLSN: lsn + uint64(len(tx.Changes)) - 1,
			CommitTime: t0.Add(time.Duration(i) * time.Second), Txn: tx}
		c.Header.XID = uint64(500 + i)
		lsn = c.CommitLSN + 1
		out = append(out, c)
	}
	return out
}

// wantRestored checks a restored replica's content and, in PostgreSQL,
// that public."a.b" stayed a table of schema public.
func wantRestored(t *testing.T, what, url string, want replica.Tables) {
	t.Helper()
	ctx := context.Background()
	got, err := replica.Dump(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	if d := replica.Diff(want, got); d != "" {
		t.Fatalf("%s: restored replica differs:\n%s", what, d)
	}
	if strings.HasPrefix(url, "postgres") {
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename = 'a.b'`).Scan(&n); err != nil || n != 1 {
			t.Fatalf("%s: public.\"a.b\" is not a table of schema public (%d, %v)", what, n, err)
		}
	}
}

// TestRestoreKeepsLongNamesApart restores, into SQLite and PostgreSQL, with
// and without a base snapshot (taken by the archive's snapshotter and by
// a replica copy), a log whose source names PostgreSQL would cut alike:
// every table keeps exactly its own rows. And a short name equal to the
// mapped form of a long one is refused during the verify pass, naming
// both, before the destination is opened.
func TestRestoreKeepsLongNamesApart(t *testing.T) {
	ctx := context.Background()
	pg := pgtest.Start(t, pgtest.WithoutFsync())
	dbs := 0
	newDB := func() string {
		dbs++
		name := fmt.Sprintf("names%d", dbs)
		if err := pg.CreateDB(ctx, name); err != nil {
			t.Fatal(err)
		}
		return pg.DSN(name)
	}
	dests := func(dir string) map[string]string {
		return map[string]string{"sqlite": "sqlite://" + filepath.Join(dir, "r.db"), "postgres": newDB()}
	}

	t.Run("archive", func(t *testing.T) {
		txns := committed(longNameWork())
		a, err := archive.Open(ctx, "file://"+t.TempDir(), archive.Options{})
		if err != nil {
			t.Fatal(err)
		}
		archiveTxns(t, a, "l1", txns, 1)
		src := NewArchiveSource(a)
		for _, noSnap := range []bool{false, true} {
			for kind, url := range dests(t.TempDir()) {
				plan, err := PlanRestore(ctx, src, Target{Kind: Latest}, PlanOptions{NoSnapshot: noSnap})
				if err != nil {
					t.Fatal(err)
				}
				if (plan.Snapshot == nil) != noSnap {
					t.Fatalf("plan snapshot %v, want none: %v", plan.Snapshot, noSnap)
				}
				if _, err := Restore(ctx, src, plan, url, RestoreOptions{Options: Options{BatchTxns: 1}}); err != nil {
					t.Fatalf("%s (snapshot %v): restore: %v", kind, !noSnap, err)
				}
				wantRestored(t, fmt.Sprintf("%s (snapshot %v)", kind, !noSnap), url, longNameWant())
			}
		}
	})

	t.Run("snapshotter", func(t *testing.T) {
		n := startNode(t, 0)
		work := longNameWork()
		for i := range work[:2] {
			if _, err := n.w.Append(ctx, &work[i]); err != nil {
				t.Fatal(err)
			}
		}
		n.waitArchived(t)
		snap, err := n.snap.TakeSnapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for i := range work[2:] {
			if _, err := n.w.Append(ctx, &work[2+i]); err != nil {
				t.Fatal(err)
			}
		}
		n.waitArchived(t)
		src := NewArchiveSource(n.a)
		for kind, url := range dests(t.TempDir()) {
			plan, err := PlanRestore(ctx, src, Target{Kind: Latest}, PlanOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if plan.Snapshot == nil || plan.Snapshot.LSN != snap.LSN {
				t.Fatalf("plan starts from snapshot %+v, want the one at LSN %d", plan.Snapshot, snap.LSN)
			}
			if _, err := Restore(ctx, src, plan, url, RestoreOptions{}); err != nil {
				t.Fatalf("%s: restore: %v", kind, err)
			}
			wantRestored(t, kind+" from the snapshotter's snapshot", url, longNameWant())
		}
	})

	t.Run("near collision", func(t *testing.T) {
		short := replica.MapIdent(nLongA, 63)
		pub := change.DefaultSchema
		for _, c := range []struct {
			kind        string // the destination where the names clash
			first, last change.Table
		}{
			{"postgres", nt(pub, short), nt(pub, nLongA)},
			{"postgres", nt(pub, nLongA), nt(pub, short)},
			{"sqlite", nt(pub, "a.b"), nt("a", "b")},
		} {
			work := []change.Txn{{Changes: []change.Change{nins(c.first, nrow("id", 1, "v", "first"))}}}
			for i := range 30 {
				work = append(work, change.Txn{Changes: []change.Change{nins(nt(pub, "filler"), nrow("id", i, "v", "x"))}})
			}
			work = append(work, change.Txn{Changes: []change.Change{nins(c.last, nrow("id", 1, "v", "last"))}})
			txns := committed(work)
			a, err := archive.Open(ctx, "file://"+t.TempDir(), archive.Options{})
			if err != nil {
				t.Fatal(err)
			}
			archiveTxns(t, a, "l1", txns, 0, 10)
			src := NewArchiveSource(a)
			for _, noSnap := range []bool{false, true} {
				url := dests(t.TempDir())[c.kind]
				plan, err := PlanRestore(ctx, src, Target{Kind: Latest}, PlanOptions{NoSnapshot: noSnap})
				if err != nil {
					t.Fatal(err)
				}
				what := fmt.Sprintf("%s, %s then %s, snapshot %v", c.kind, c.first, c.last, !noSnap)
				_, err = Restore(ctx, src, plan, url, RestoreOptions{Options: Options{BatchTxns: 1}})
				var nc *replica.NameConflictError
				// The verify pass reads objects in parallel: either may come first.
				if !errors.As(err, &nc) || nc.Kind != "table" ||
					!(nc.Other == c.first.String() && nc.Name == c.last.String() || nc.Other == c.last.String() && nc.Name == c.first.String()) {
					t.Fatalf("%s: restore: %v, want a table name conflict of %s and %s", what, err, c.first, c.last)
				}
				// Nothing was written: no file, or an empty database.
				if c.kind == "sqlite" {
					if _, err := os.Stat(strings.TrimPrefix(url, "sqlite://")); !errors.Is(err, os.ErrNotExist) {
						t.Fatalf("%s: the destination exists (%v)", what, err)
					}
				} else if got, err := replica.Dump(ctx, url); err != nil || len(got) != 0 {
					t.Fatalf("%s: destination holds %v (%v), want nothing", what, got, err)
				}
			}
		}
	})
}
