package replica

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/walship/walship/change"
)

func wantDump(t *testing.T, url string, want Tables) {
	t.Helper()
	if d := Diff(want, dump(t, url)); d != "" {
		t.Errorf("replica content:\n%s", d)
	}
}

func wantState(t *testing.T, url string, lsn, txns, changes uint64) {
	t.Helper()
	st, err := ReadState(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	if st.LSN != lsn || st.Txns != txns || st.Changes != changes {
		t.Errorf("state = lsn %d, txns %d, changes %d; want %d, %d, %d", st.LSN, st.Txns, st.Changes, lsn, txns, changes)
	}
}

func TestUpdatesDeletesAndKeyChanges(t *testing.T) {
	backends(t, func(t *testing.T, url string) {
		a := open(t, url, Options{})
		apply(t, a,
			txn(1, ins("t", []string{"id"}, row("id", 1, "v", "a", "big", "toast")), ins("t", []string{"id"}, row("id", 2, "v", "b", "big", "x"))),
			// A key change with an image lacking "big" (an unchanged TOAST value): big moves with the row.
			txn(2, upd("t", row("id", 1), row("id", 3, "v", "a3"))),
			// An update of a missing row inserts it; a delete of a missing row is fine.
			txn(3, upd("t", row("id", 9), row("id", 9, "v", "n")), del("t", row("id", 42))),
			// A key change by before image, then a swap of two keys in one txn.
			txn(4, change.Change{Table: tbl("t"), Op: change.Update, Before: row("id", 2, "v", "b", "big", "x"), After: row("id", 4, "v", "b4", "big", "x")}),
			txn(5, upd("t", row("id", 3), row("id", 100)), upd("t", row("id", 4), row("id", 3)), upd("t", row("id", 100), row("id", 4))),
			txn(6, del("t", row("id", 9)), change.Change{Table: tbl("t"), Op: change.Delete, Before: row("id", 77, "v", "zz")}),
		)
		wantDump(t, url, Tables{"t": {
			`{"big":"toast","id":"4","v":"a3"}`,
			`{"big":"x","id":"3","v":"b4"}`,
		}})
		wantState(t, url, 6, 6, 11)
	})
}

func TestTruncateAndMessages(t *testing.T) {
	backends(t, func(t *testing.T, url string) {
		a := open(t, url, Options{})
		msg := change.Change{Op: change.Message, Message: &change.LogicalMessage{Prefix: "walship.restore_point", Content: []byte("p1"), Transactional: true}}
		apply(t, a,
			txn(1, ins("a", []string{"id"}, row("id", 1)), ins("a", []string{"id"}, row("id", 2)), ins("other.b", []string{"id"}, row("id", 1))),
			txn(2, change.Change{Table: tbl("a"), Op: change.Truncate}, change.Change{Table: tbl("never.seen"), Op: change.Truncate}, ins("a", []string{"id"}, row("id", 3))),
			txn(3, msg),
		)
		wantDump(t, url, Tables{"a": {`{"id":"3"}`}, "other.b": {`{"id":"1"}`}})
		wantState(t, url, 3, 3, 7)
		if p, _ := a.Position(context.Background()); p != 3 {
			t.Errorf("Position = %d after a message-only txn, want 3", p)
		}
	})
}

func TestKeylessTable(t *testing.T) {
	backends(t, func(t *testing.T, url string) {
		a := open(t, url, Options{})
		noKey := func(r change.Row) change.Change { return change.Change{Table: tbl("log"), Op: change.Insert, After: r} }
		apply(t, a,
			txn(1, noKey(row("a", 1, "b", "x")), noKey(row("a", 1, "b", "x")), noKey(row("a", 2, "b", nil))),
			// REPLICA IDENTITY FULL: the before image finds one of two equal rows.
			txn(2, change.Change{Table: tbl("log"), Op: change.Update, Before: row("a", 1, "b", "x"), After: row("a", 1, "b", "y")}),
			txn(3, change.Change{Table: tbl("log"), Op: change.Delete, Before: row("a", 2, "b", nil)}),
		)
		wantDump(t, url, Tables{"log": {`{"a":"1","b":"x"}`, `{"a":"1","b":"y"}`}})
	})
}

// TestKeylessUpdateOfMissingRow: an update of a table without a key whose
// old row the replica lacks (a resumed snapshot left it out, the source
// having updated it) inserts the new image, as for a table with a key; an
// update that finds its row inserts nothing.
func TestKeylessUpdateOfMissingRow(t *testing.T) {
	backends(t, func(t *testing.T, url string) {
		a := open(t, url, Options{})
		apply(t, a,
			txn(1, change.Change{Table: tbl("log"), Op: change.Insert, After: row("a", 1, "b", "x")}),
			txn(2, change.Change{Table: tbl("log"), Op: change.Update, Before: row("a", 1, "b", "x"), After: row("a", 1, "b", "y")},
				change.Change{Table: tbl("log"), Op: change.Update, Before: row("a", 2, "b", "gone"), After: row("a", 2, "b", "new")}),
		)
		wantDump(t, url, Tables{"log": {`{"a":"1","b":"y"}`, `{"a":"2","b":"new"}`}})
	})
}

func TestSchemaChanges(t *testing.T) {
	typed := func(op change.Op, r change.Row, types ...string) change.Change {
		c := change.Change{Table: tbl("s.t"), Op: op, After: r, Key: r[:1]}
		if op == change.Insert {
			c.Key = r[:1]
		}
		for i := 0; i < len(types); i += 2 {
			c.Types = append(c.Types, change.ColumnType{Name: types[i], Type: types[i+1]})
		}
		return c
	}
	backends(t, func(t *testing.T, url string) {
		a := open(t, url, Options{})
		apply(t, a,
			txn(1, typed(change.Insert, row("id", 1, "v", "a"), "id", "int4", "v", "text")),
			// An untyped new column (the HTTP source), then a typed one.
			txn(2, ins("s.t", []string{"id"}, row("id", 2, "v", "b", "extra", true))),
			txn(3, typed(change.Insert, row("id", 3, "v", "c", "extra", nil, "n", num("2.50")), "id", "int4", "v", "text", "extra", "bool", "n", "numeric")),
			// v dropped at the source: a full typed image without it.
			txn(4, typed(change.Insert, row("id", 4, "extra", false, "n", num("1")), "id", "int4", "extra", "bool", "n", "numeric")),
			// n retyped numeric -> text, existing values converted.
			txn(5, typed(change.Update, row("id", 3, "extra", nil, "n", change.TextValue("two")), "id", "int4", "extra", "bool", "n", "text")),
		)
		wantDump(t, url, Tables{"s.t": {
			`{"extra":"f","id":"4","n":"1"}`,
			`{"extra":"t","id":"2","n":null}`,
			`{"extra":null,"id":"1","n":null}`,
			`{"extra":null,"id":"3","n":"two"}`,
		}})
		if s := a.Stats(); s.SchemaChanges != 5 {
			t.Errorf("SchemaChanges = %d, want 5 (create, 2 adds, drop, retype)", s.SchemaChanges)
		}
		// The cache is not needed to see the shape: a new applier agrees.
		a.Close()
		b := open(t, url, Options{})
		apply(t, b, txn(6, typed(change.Insert, row("id", 5, "extra", true, "n", change.TextValue("five")), "id", "int4", "extra", "bool", "n", "text")))
		if s := b.Stats(); s.SchemaChanges != 0 {
			t.Errorf("reopened applier made %d schema changes, want 0", s.SchemaChanges)
		}
		if strings.HasPrefix(url, "postgres") {
			var typ string
			conn, err := connectPostgres(context.Background(), url)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(context.Background())
			if err := conn.QueryRow(context.Background(), `SELECT data_type FROM information_schema.columns WHERE table_schema = 's' AND table_name = 't' AND column_name = 'n'`).Scan(&typ); err != nil || typ != "text" {
				t.Errorf("column n has type %q (%v), want text", typ, err)
			}
		}
	})
}

func TestKeepDroppedColumns(t *testing.T) {
	backends(t, func(t *testing.T, url string) {
		a := open(t, url, Options{KeepDroppedColumns: true})
		types := []change.ColumnType{{Name: "id", Type: "int8"}, {Name: "v", Type: "text"}}
		c1 := ins("t", []string{"id"}, row("id", 1, "v", "a"))
		c1.Types = types
		c2 := ins("t", []string{"id"}, row("id", 2))
		c2.Types = types[:1]
		apply(t, a, txn(1, c1), txn(2, c2))
		wantDump(t, url, Tables{"t": {`{"id":"1","v":"a"}`, `{"id":"2","v":null}`}})
	})
}

func TestRedelivery(t *testing.T) {
	backends(t, func(t *testing.T, url string) {
		var txns []change.Committed
		for i := 1; i <= 7; i++ {
			txns = append(txns, txn(uint64(i*10), ins("t", []string{"id"}, row("id", i, "v", "x")), upd("t", row("id", 1), row("id", 1, "v", i))))
		}
		a := open(t, url, Options{MaxBatchTxns: 3})
		apply(t, a, txns[:5]...)
		before := dump(t, url)
		apply(t, a, txns[:5]...)
		apply(t, a, txns[2:4]...)
		if s := a.Stats(); s.Applied != 5 || s.Skipped != 7 || s.Changes != 10 {
			t.Errorf("Stats = %+v, want 5 applied, 7 skipped, 10 changes", s)
		}
		wantDump(t, url, before)
		// A new applier (a restarted consumer) reads the position and skips too.
		a.Close()
		b := open(t, url, Options{})
		if p, err := b.Position(context.Background()); p != 50 || err != nil {
			t.Fatalf("Position = %d, %v; want 50", p, err)
		}
		apply(t, b, txns...)
		if s := b.Stats(); s.Applied != 2 || s.Skipped != 5 {
			t.Errorf("Stats = %+v, want 2 applied, 5 skipped", s)
		}
		wantState(t, url, 70, 7, 14)
		if err := b.Apply(context.Background(), []change.Committed{txn(80), txn(75)}); !errors.Is(err, ErrOrder) {
			t.Errorf("out-of-order txns: %v, want ErrOrder", err)
		}
		if err := b.Apply(context.Background(), []change.Committed{txn(60), txn(75), txn(75)}); !errors.Is(err, ErrOrder) {
			t.Errorf("out-of-order txns: %v, want ErrOrder", err)
		}
		wantState(t, url, 70, 7, 14)
	})
}

// TestBatchAtomicity: an error in the middle of a batch leaves neither its
// data, its schema changes nor its position; the applier stays usable.
func TestBatchAtomicity(t *testing.T) {
	backends(t, func(t *testing.T, url string) {
		a := open(t, url, Options{})
		apply(t, a, txn(1, ins("t", []string{"id"}, row("id", 1))))
		bad := ins("t", []string{"id"}, row("id", nil, "v", "x")) // NULL key: refused by the database
		err := a.Apply(context.Background(), []change.Committed{
			txn(2, ins("t", []string{"id"}, row("id", 2, "added", "y")), ins("fresh", []string{"k"}, row("k", 1))),
			txn(3, bad),
			txn(4, ins("t", []string{"id"}, row("id", 4))),
		})
		if err == nil || !strings.Contains(err.Error(), "LSN 3") {
			t.Fatalf("Apply = %v, want an error naming LSN 3", err)
		}
		wantDump(t, url, Tables{"t": {`{"id":"1"}`}})
		wantState(t, url, 1, 1, 1)
		if p, _ := a.Position(context.Background()); p != 1 {
			t.Errorf("Position = %d, want 1", p)
		}
		apply(t, a, txn(2, ins("t", []string{"id"}, row("id", 2, "added", "y")), ins("fresh", []string{"k"}, row("k", 1))), txn(4, ins("t", []string{"id"}, row("id", 4))))
		wantDump(t, url, Tables{"t": {`{"added":"y","id":"2"}`, `{"added":null,"id":"1"}`, `{"added":null,"id":"4"}`}, "fresh": {`{"k":"1"}`}})
	})
}

// TestCanceledApply: a context canceled during Apply leaves the replica
// at a batch boundary (the open DB transaction is never committed), and
// the same applier continues afterwards.
func TestCanceledApply(t *testing.T) {
	backends(t, func(t *testing.T, url string) {
		a := open(t, url, Options{MaxBatchTxns: 10})
		var txns []change.Committed
		for i := 1; i <= 20000; i++ {
			txns = append(txns, txn(uint64(i), ins("t", []string{"id"}, row("id", i))))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		defer cancel()
		if err := a.Apply(ctx, txns); err == nil {
			t.Fatal("Apply with a canceled context succeeded")
		}
		// A COMMIT sent just before the cancel can still land on the
		// server after Apply returned: read the position and the rows
		// until both reads of the position agree around the rows.
		var st State
		var got int
		for range 100 {
			st1, err := ReadState(context.Background(), url)
			if err != nil {
				t.Fatal(err)
			}
			got = len(dump(t, url)["t"])
			if st, err = ReadState(context.Background(), url); err != nil {
				t.Fatal(err)
			}
			if st == st1 {
				break
			}
		}
		if uint64(got) != st.Txns || st.LSN%10 != 0 || st.LSN == 20000 {
			t.Errorf("%d rows, state %+v: want one row per applied txn, at a batch boundary before the end", got, st)
		}
		apply(t, a, txns...)
		wantState(t, url, 20000, 20000, 20000)
	})
}

func TestLineage(t *testing.T) {
	backends(t, func(t *testing.T, url string) {
		a := open(t, url, Options{Lineage: "L1"})
		apply(t, a, txn(1, ins("t", []string{"id"}, row("id", 1))))
		a.Close()
		_, err := Open(context.Background(), url, Options{Lineage: "L2"})
		if !errors.Is(err, ErrLineage) || !strings.Contains(err.Error(), `"L1"`) {
			t.Errorf("Open with another lineage: %v, want ErrLineage naming L1", err)
		}
		b := open(t, url, Options{}) // no lineage given: no check
		b.Close()
		open(t, url, Options{Lineage: "L1"}).Close()
		if st, _ := ReadState(context.Background(), url); st.Lineage != "L1" {
			t.Errorf("stored lineage %q", st.Lineage)
		}
	})
}

func TestBadURLs(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ url, want string }{
		{"", "empty"},
		{"/abs/no/scheme.db", "no scheme"},
		{"mysql://u:hunter2@h/db", `unsupported scheme "mysql"`},
		{"sqlite://relative.db", "host"},
		{"sqlite:///", "directory"},
		{"sqlite:///x.db?mode=ro", "query"},
		{"sqlite://" + filepath.Join(dir, "missing", "r.db"), "directory of the database"},
		{"sqlite://" + dir, "is a directory"},
		{"postgres://u:hunter2@127.0.0.1:1/db?connect_timeout=2", "127.0.0.1:1"},
		{"postgres://u:hunter2@[::1/db", "malformed"},
	} {
		_, err := Open(context.Background(), tc.url, Options{})
		if err == nil {
			t.Errorf("Open(%q) succeeded", tc.url)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%q) = %v, want it to mention %q", tc.url, err, tc.want)
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("Open(%q) error leaks the password: %v", tc.url, err)
		}
	}
	if _, err := Open(context.Background(), sqliteURL(t), Options{MaxBatchTxns: -1}); err == nil || !strings.Contains(err.Error(), "MaxBatchTxns") {
		t.Errorf("negative MaxBatchTxns: %v", err)
	}
}

func TestSnapshot(t *testing.T) {
	url := sqliteURL(t)
	a := open(t, url, Options{Lineage: "L"})
	apply(t, a, txn(5, valuesChanges()...), txn(6, ins("t", []string{"id"}, row("id", 1))))
	dst := filepath.Join(t.TempDir(), "snap.db")
	if err := Snapshot(context.Background(), url, dst); err != nil {
		t.Fatal(err)
	}
	wantDump(t, dst, dump(t, url))
	st, err := ReadState(context.Background(), dst)
	if err != nil || st.LSN != 6 || st.Txns != 2 || st.Lineage != "L" {
		t.Errorf("snapshot state %+v, %v", st, err)
	}
	if err := Snapshot(context.Background(), url, dst); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("snapshot over an existing file: %v", err)
	}
	// The snapshot is a replica: applying continues from its position.
	b := open(t, "sqlite://"+dst, Options{Lineage: "L"})
	apply(t, b, txn(6, ins("t", []string{"id"}, row("id", 1))), txn(7, ins("t", []string{"id"}, row("id", 2))))
	if s := b.Stats(); s.Applied != 1 || s.Skipped != 1 {
		t.Errorf("Stats = %+v", s)
	}
	if got := dump(t, dst)["t"]; !slices.Equal(got, []string{`{"id":"1"}`, `{"id":"2"}`}) {
		t.Errorf("t = %v", got)
	}
}

// TestPostgresRestart: an Apply during a server outage fails whole, and
// the same applier resumes once the server is back.
func TestPostgresRestart(t *testing.T) {
	url := pgURL(t)
	a := open(t, url, Options{})
	apply(t, a, txn(1, ins("t", []string{"id"}, row("id", 1))))
	if err := pg.cluster.Stop(); err != nil {
		t.Fatal(err)
	}
	err := a.Apply(context.Background(), []change.Committed{txn(2, ins("t", []string{"id"}, row("id", 2)))})
	if serr := pg.cluster.Start(); serr != nil {
		t.Fatal(serr)
	}
	if err == nil {
		t.Fatal("Apply with the server down succeeded")
	}
	apply(t, a, txn(2, ins("t", []string{"id"}, row("id", 2))), txn(3, ins("t", []string{"id"}, row("id", 3))))
	wantDump(t, url, Tables{"t": {`{"id":"1"}`, `{"id":"2"}`, `{"id":"3"}`}})
	wantState(t, url, 3, 3, 3)
}
