package replica

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/walship/walship/change"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// txn builds a log transaction at commit LSN lsn.
func txn(lsn uint64, changes ...change.Change) change.Committed {
	return change.Committed{FirstLSN: lsn, CommitLSN: lsn, CommitTime: t0.Add(time.Duration(lsn) * time.Millisecond), Txn: change.Txn{Changes: changes}}
}

func tbl(s string) change.Table {
	t, err := change.ParseTable(s)
	if err != nil {
		panic(err)
	}
	return t
}

func row(kv ...any) change.Row {
	r := change.Row{}
	for i := 0; i < len(kv); i += 2 {
		var v change.Value
		switch x := kv[i+1].(type) {
		case change.Value:
			v = x
		case int:
			v = change.IntValue(int64(x))
		case string:
			v = change.TextValue(x)
		case nil:
			v = change.NullValue()
		case bool:
			v = change.BoolValue(x)
		default:
			panic(x)
		}
		r = append(r, change.Column{Name: kv[i].(string), Value: v})
	}
	return r
}

func ins(table string, key []string, after change.Row) change.Change {
	c := change.Change{Table: tbl(table), Op: change.Insert, After: after}
	for _, k := range key {
		v, _ := after.Get(k)
		c.Key = append(c.Key, change.Column{Name: k, Value: v})
	}
	return c
}

func upd(table string, key, after change.Row) change.Change {
	return change.Change{Table: tbl(table), Op: change.Update, Key: key, After: after}
}

func del(table string, key change.Row) change.Change {
	return change.Change{Table: tbl(table), Op: change.Delete, Key: key}
}

func sqliteURL(t testing.TB) string {
	return "sqlite://" + filepath.Join(t.TempDir(), "replica.db")
}

func open(t testing.TB, url string, opts Options) Applier {
	t.Helper()
	a, err := Open(context.Background(), url, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

func apply(t testing.TB, a Applier, txns ...change.Committed) {
	t.Helper()
	if err := a.Apply(context.Background(), txns); err != nil {
		t.Fatalf("Apply: %v", err)
	}
}

func dump(t testing.TB, url string) Tables {
	t.Helper()
	d, err := Dump(context.Background(), url)
	if err != nil {
		t.Fatalf("Dump: %v", err)
	}
	return d
}

func mustVal(v change.Value, err error) change.Value {
	if err != nil {
		panic(err)
	}
	return v
}
