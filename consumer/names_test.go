package consumer

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/walship/walship/change"
	"github.com/walship/walship/internal/pgtest"
	"github.com/walship/walship/replica"
)

// TestLongNamesThroughKafka: tables and columns whose names share their
// first 63 bytes (PostgreSQL's identifier limit), and names with a
// two-byte character where a mapped name is cut, travel through Kafka into
// SQLite and PostgreSQL replicas as distinct tables and columns with
// exactly their own rows. A later table whose short name equals the
// mapped name of one of them stops the PostgreSQL consumer with an error
// naming both source names, and nothing of its transaction is written.
func TestLongNamesThroughKafka(t *testing.T) {
	ctx := context.Background()
	var (
		longA = strings.Repeat("t", 63) + "_alpha"
		longB = strings.Repeat("t", 63) + "_beta"
		colX  = strings.Repeat("c", 63) + "_x"
		colY  = strings.Repeat("c", 63) + "_y"
		utfA  = strings.Repeat("u", 53) + "é" + strings.Repeat("ü", 10) + "1"
		utfB  = strings.Repeat("u", 53) + "é" + strings.Repeat("ü", 10) + "2"
	)
	pub := change.DefaultSchema
	tb := func(name string) change.Table { return change.Table{Schema: pub, Name: name} }
	ins := func(t change.Table, kv ...any) change.Change {
		var r change.Row
		for i := 0; i < len(kv); i += 2 {
			v := change.TextValue(fmt.Sprint(kv[i+1]))
			if n, ok := kv[i+1].(int); ok {
				v = change.IntValue(int64(n))
			}
			r = append(r, change.Column{Name: kv[i].(string), Value: v})
		}
		return change.Change{Table: t, Op: change.Insert, Key: r[:1], After: r}
	}
	work := []change.Txn{
		{Changes: []change.Change{
			ins(tb(longA), "id", 1, "v", "a1", colX, "ax", colY, "ay"),
			ins(tb(longB), "id", 1, "v", "b1", colX, "bx", colY, "by"),
			ins(tb(utfA), "id", 1, "v", "u1"),
			ins(tb(utfB), "id", 1, "v", "u2"),
		}},
		{Changes: []change.Change{
			ins(tb(longB), "id", 2, "v", "b2", colX, "bx2", colY, "by2"),
			{Table: tb(longA), Op: change.Update, Key: change.Row{{Name: "id", Value: change.IntValue(1)}},
				After: change.Row{{Name: "id", Value: change.IntValue(1)}, {Name: colY, Value: change.TextValue("ay'")}}},
		}},
	}
	want := replica.Tables{
		longA: {`{"` + colX + `":"ax","` + colY + `":"ay'","id":"1","v":"a1"}`},
		longB: {`{"` + colX + `":"bx","` + colY + `":"by","id":"1","v":"b1"}`, `{"` + colX + `":"bx2","` + colY + `":"by2","id":"2","v":"b2"}`},
		utfA:  {`{"id":"1","v":"u1"}`},
		utfB:  {`{"id":"1","v":"u2"}`},
	}

	kc := startCluster(t)
	dir := t.TempDir()
	w, err := openWAL(dir)
	if err != nil {
		t.Fatal(err)
	}
	// Closed after the sink has stopped (cleanups run last-in first-out).
	t.Cleanup(func() { w.Close() })
	for i := range work {
		if _, err := w.Append(ctx, &work[i]); err != nil {
			t.Fatal(err)
		}
	}
	startSink(t, dir, w, []string{kc.Addr})
	pg := pgtest.Start(t, pgtest.WithoutFsync())
	if err := pg.CreateDB(ctx, "names"); err != nil {
		t.Fatal(err)
	}
	pgURL := pg.DSN("names")
	last := w.Durable()
	for _, url := range []string{"sqlite://" + filepath.Join(dir, "r.db"), pgURL} {
		c, stop := startConsumer(t, Options{Brokers: []string{kc.Addr}, ReplicaURL: url, Lineage: "L1", Group: "g-" + url[:6]})
		waitApplied(t, c, last, 30*time.Second)
		stop()
		got, err := replica.Dump(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		if d := replica.Diff(want, got); d != "" {
			t.Fatalf("%s: replica differs:\n%s", url[:6], d)
		}
	}

	// The near collision: refused in PostgreSQL, nothing of it written.
	short := replica.MapIdent(longA, 63)
	clash := change.Txn{Changes: []change.Change{ins(tb("other"), "id", 1), ins(tb(short), "id", 1, "v", "short")}}
	if _, err := w.Append(ctx, &clash); err != nil {
		t.Fatal(err)
	}
	c, err := New(ctx, Options{Brokers: []string{kc.Addr}, ReplicaURL: pgURL, Lineage: "L1", Group: "g-clash"})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Minute) // only catches a hang
	defer cancel()
	err = c.Run(rctx)
	c.Close()
	var nc *replica.NameConflictError
	if !errors.As(err, &nc) || nc.Other != tb(longA).String() || nc.Name != tb(short).String() {
		t.Fatalf("Run = %v, want a name conflict of %s and %s", err, tb(longA), tb(short))
	}
	if st, err := replica.ReadState(ctx, pgURL); err != nil || st.LSN != last {
		t.Fatalf("replica at %d (%v) after the refused transaction, want %d", st.LSN, err, last)
	}
	if got, err := replica.Dump(ctx, pgURL); err != nil || replica.Diff(want, got) != "" {
		t.Fatalf("the refused transaction wrote: %v\n%s", err, replica.Diff(want, got))
	}
}
