package pitr

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/walship/walship/archive"
	"github.com/walship/walship/change"
	"github.com/walship/walship/internal/pgtest"
	"github.com/walship/walship/replica"
	"github.com/walship/walship/wal"
)

// workload appends n generated transactions to a new WAL in dir and
// returns them as read back from the log (with their LSNs and commit
// times). Tables: public.accounts and sales.orders; inserts, updates,
// deletes, a truncate, a column added half way, restore points (alone and
// inside a data transaction), increasing xids, source LSNs and commit
// times (some equal).
func workload(t testing.TB, dir string, n int) []change.Committed {
	t.Helper()
	w, _, err := wal.Open(wal.Options{Dir: dir, Sync: wal.SyncOff}) // tests need no power-loss durability
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	accounts := change.Table{Schema: "public", Name: "accounts"}
	orders := change.Table{Schema: "sales", Name: "orders"}
	live := map[int64]bool{}
	ct := t0
	for i := range n {
		if i%7 != 3 {
			ct = ct.Add(time.Duration(50+rng.IntN(100)) * time.Millisecond)
		}
		txn := &change.Txn{Header: change.TxHeader{XID: uint64(5000 + 3*i), SourceLSN: 0x1_0000_0000 + uint64(i)*0x100, SourceCommitTime: ct}}
		switch {
		case i%25 == 24:
			txn.Changes = RestorePointTxn(fmt.Sprintf("rp-%d", i)).Changes
		case i == 200:
			txn.Changes = []change.Change{{Table: orders, Op: change.Truncate}}
		default:
			for k := 0; k < 1+rng.IntN(4); k++ {
				id := int64(rng.IntN(40))
				row := change.Row{{Name: "id", Value: change.IntValue(id)}, {Name: "owner", Value: change.TextValue(fmt.Sprintf("o%d-%d", id, i))},
					{Name: "balance", Value: must(change.NumericValue(fmt.Sprintf("%d.%02d", rng.IntN(10000), rng.IntN(100))))}}
				types := []change.ColumnType{{Name: "id", Type: "bigint"}, {Name: "owner", Type: "text"}, {Name: "balance", Type: "numeric"}}
				if i >= 150 { // schema change: a column added
					row = append(row, change.Column{Name: "tier", Value: change.IntValue(int64(i % 3))})
					types = append(types, change.ColumnType{Name: "tier", Type: "integer"})
				}
				key := change.Row{{Name: "id", Value: change.IntValue(id)}}
				c := change.Change{Table: accounts, Key: key, Types: types}
				switch {
				case !live[id]:
					c.Op, c.After = change.Insert, row
					live[id] = true
				case rng.IntN(4) == 0:
					c.Op = change.Delete
					delete(live, id)
				default:
					c.Op, c.After = change.Update, row
				}
				txn.Changes = append(txn.Changes, c)
				if rng.IntN(2) == 0 {
					ts, _ := change.TimestampValue(ct)
					txn.Changes = append(txn.Changes, change.Change{Table: orders, Op: change.Insert,
						Key: change.Row{{Name: "id", Value: change.IntValue(int64(i*10 + k))}},
						After: change.Row{{Name: "id", Value: change.IntValue(int64(i*10 + k))}, {Name: "account", Value: change.IntValue(id)},
							{Name: "amount", Value: change.FloatValue(float64(rng.IntN(1000)) / 8)}, {Name: "at", Value: ts}},
						Types: []change.ColumnType{{Name: "id", Type: "bigint"}, {Name: "account", Type: "bigint"},
							{Name: "amount", Type: "double precision"}, {Name: "at", Type: "timestamp with time zone"}}})
				}
			}
			if i%3 == 0 { // every kind of value
				id := int64(i % 11)
				day, _ := change.TimestampValue(time.Date(2026, 1, 1+i%28, 0, 0, 0, 0, time.UTC))
				f := float64(i) / 3
				if i%9 == 0 {
					f = math.NaN()
				}
				row := change.Row{{Name: "id", Value: change.IntValue(id)}, {Name: "ok", Value: change.BoolValue(i%2 == 0)},
					{Name: "raw", Value: change.BytesValue([]byte{0, byte(i), 0xff, '"', '\\'})},
					{Name: "doc", Value: must(change.JSONValue([]byte(fmt.Sprintf(`{"i":%d,"s":"a\"b"}`, i))))},
					{Name: "nums", Value: change.ArrayValue(change.IntValue(id), change.NullValue(), change.IntValue(-3))},
					{Name: "tags", Value: change.ArrayValue(change.TextValue("x,y"), change.TextValue(`q"u\\o`), change.TextValue("NULL"))},
					{Name: "day", Value: day}, {Name: "f", Value: change.FloatValue(f)}, {Name: "nothing", Value: change.NullValue()}}
				txn.Changes = append(txn.Changes, change.Change{Table: change.Table{Schema: "public", Name: "misc"}, Op: change.Insert,
					Key: change.Row{{Name: "id", Value: change.IntValue(id)}}, After: row,
					Types: []change.ColumnType{{Name: "id", Type: "integer"}, {Name: "ok", Type: "boolean"}, {Name: "raw", Type: "bytea"},
						{Name: "doc", Type: "jsonb"}, {Name: "nums", Type: "integer[]"}, {Name: "tags", Type: "text[]"}, {Name: "day", Type: "date"},
						{Name: "f", Type: "double precision"}, {Name: "nothing", Type: "text"}}})
			}
			if i == 111 { // a restore point inside a data transaction
				txn.Changes = append(txn.Changes, RestorePointTxn("inside-111").Changes...)
			}
		}
		if _, err := w.Append(context.Background(), txn); err != nil {
			t.Fatalf("append txn %d: %v", i, err)
		}
	}
	r, err := w.NewReader(1, false)
	if err != nil {
		t.Fatal(err)
	}
	var out []change.Committed
	for {
		tx, err := r.Next(context.Background())
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, *tx)
	}
	r.Close()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if len(out) != n {
		t.Fatalf("read back %d transactions, appended %d", len(out), n)
	}
	return out
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// archiveTxns stores txns in a as segments of 1 to 20 transactions, and a
// snapshot after each transaction index of snapAt (a SQLite replica built
// by applying the prefix).
func archiveTxns(t testing.TB, a *archive.Archive, lineage string, txns []change.Committed, snapAt ...int) []archive.SegmentManifest {
	t.Helper()
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(3, 4))
	var ms []archive.SegmentManifest
	for i := 0; i < len(txns); {
		n := min(1+rng.IntN(20), len(txns)-i)
		enc, err := a.EncodeSegment(lineage, 0, txns[i:i+n])
		if err != nil {
			t.Fatal(err)
		}
		m, err := a.StoreSegment(ctx, enc)
		if err != nil {
			t.Fatal(err)
		}
		ms = append(ms, m)
		i += n
	}
	for _, k := range snapAt {
		dir := t.TempDir()
		buildReplica(t, "sqlite://"+filepath.Join(dir, "replica.db"), txns[:k+1])
		f := filepath.Join(dir, "snap.db")
		if err := replica.Snapshot(ctx, filepath.Join(dir, "replica.db"), f); err != nil {
			t.Fatal(err)
		}
		if err := a.PutSnapshot(ctx, lineage, txns[k].CommitLSN, txns[k].CommitTime, f); err != nil {
			t.Fatal(err)
		}
	}
	return ms
}

// buildReplica applies txns to a fresh replica at url: the expected state,
// computed without pitr.
func buildReplica(t testing.TB, url string, txns []change.Committed) {
	t.Helper()
	app, err := replica.Open(context.Background(), url, replica.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(txns) > 0 {
		if err := app.Apply(context.Background(), txns); err != nil {
			t.Fatal(err)
		}
	}
	if err := app.Close(); err != nil {
		t.Fatal(err)
	}
}

// compareReplicas fails t unless the replicas at gotURL and wantURL hold
// equal tables (replica.Dump) and equal positions and transaction counts.
func compareReplicas(t testing.TB, what, gotURL, wantURL string) {
	t.Helper()
	compareReplicasCounts(t, what, gotURL, wantURL, true)
}

// compareReplicasCounts is compareReplicas; counts false skips comparing
// the transaction and change counts (a snapshot loaded into PostgreSQL is
// one transaction).
func compareReplicasCounts(t testing.TB, what, gotURL, wantURL string, counts bool) {
	t.Helper()
	ctx := context.Background()
	got, err := replica.Dump(ctx, gotURL)
	if err != nil {
		t.Fatal(err)
	}
	want, err := replica.Dump(ctx, wantURL)
	if err != nil {
		t.Fatal(err)
	}
	if d := replica.Diff(want, got); d != "" {
		t.Fatalf("%s: restored state differs from the source's at the target:\n%s", what, d)
	}
	gs, err := replica.ReadState(ctx, gotURL)
	if err != nil {
		t.Fatal(err)
	}
	ws, err := replica.ReadState(ctx, wantURL)
	if err != nil {
		t.Fatal(err)
	}
	if gs.LSN != ws.LSN || !gs.CommitTime.Equal(ws.CommitTime) || counts && (gs.Txns != ws.Txns || gs.Changes != ws.Changes) {
		t.Fatalf("%s: bookkeeping %+v, want %+v", what, gs, ws)
	}
}

// exactTargets are the restore targets of the exactness tests.
func exactTargets(txns []change.Committed) []Target {
	var ts []Target
	for _, i := range []int{0, 100, 150, 221, len(txns) - 1} {
		tx := txns[i]
		for _, ex := range []bool{false, true} {
			ts = append(ts,
				Target{Kind: Time, Time: tx.CommitTime, Exclusive: ex},
				Target{Kind: LSN, LSN: tx.CommitLSN, Exclusive: ex},
				Target{Kind: SourceLSN, LSN: tx.Header.SourceLSN, Exclusive: ex},
				Target{Kind: XID, XID: tx.Header.XID, Exclusive: ex},
			)
			if tx.CommitLSN > tx.FirstLSN {
				ts = append(ts, Target{Kind: LSN, LSN: tx.FirstLSN, Exclusive: ex})
			}
		}
	}
	ts = append(ts, Target{Kind: Name, Name: "rp-99"}, Target{Kind: Name, Name: "rp-99", Exclusive: true},
		Target{Kind: Name, Name: "inside-111"}, Target{Kind: Name, Name: "inside-111", Exclusive: true},
		Target{Kind: Time, Time: txns[150].CommitTime.Add(-time.Millisecond)}, Target{Kind: Latest})
	return ts
}

// TestExactRestoreIntoSQLite restores a file:// archive of a 300-transaction
// workload (two snapshots) to many targets of every kind and compares each
// restored replica, table by table, with a replica built by applying the
// expected prefix of the log directly.
func TestExactRestoreIntoSQLite(t *testing.T) {
	ctx := context.Background()
	txns := workload(t, t.TempDir(), 300)
	a, err := archive.Open(ctx, "file://"+t.TempDir(), archive.Options{})
	if err != nil {
		t.Fatal(err)
	}
	archiveTxns(t, a, "l1", txns, 100, 220)
	src := NewArchiveSource(a)
	dir := t.TempDir()
	expected := map[int]string{} // prefix length -> replica file
	for i, tg := range exactTargets(txns) {
		want := expectedPrefix(txns, tg)
		ef, ok := expected[want]
		if !ok {
			ef = filepath.Join(dir, fmt.Sprintf("expected-%d.db", want))
			buildReplica(t, "sqlite://"+ef, txns[:want])
			expected[want] = ef
		}
		plan, err := PlanRestore(ctx, src, tg, PlanOptions{})
		if err != nil {
			t.Fatalf("%s: plan: %v", tg, err)
		}
		got := filepath.Join(dir, fmt.Sprintf("restored-%d.db", i))
		res, err := Restore(ctx, src, plan, "sqlite://"+got, RestoreOptions{Options: Options{Parallel: 3, BatchTxns: 40}})
		if err != nil {
			t.Fatalf("%s: restore: %v", tg, err)
		}
		wantPos := uint64(0)
		if want > 0 {
			wantPos = txns[want-1].CommitLSN
		}
		if res.Position != wantPos {
			t.Fatalf("%s: restored to LSN %d, want %d (%d transactions)", tg, res.Position, wantPos, want)
		}
		compareReplicas(t, tg.String(), "sqlite://"+got, "sqlite://"+ef)
		os.Remove(got)
	}
}

// TestExactRestoreIntoPostgres restores the same workload into fresh
// PostgreSQL databases, once replaying from LSN 1 and once from the latest
// snapshot at or before the target (its rows loaded from the SQLite file),
// and compares each, table by table, with a SQLite replica of the expected
// prefix (replica.Dump gives equal Tables for equal data across the two).
func TestExactRestoreIntoPostgres(t *testing.T) {
	ctx := context.Background()
	pg := pgtest.Start(t, pgtest.WithoutFsync())
	txns := workload(t, t.TempDir(), 300)
	a, err := archive.Open(ctx, "file://"+t.TempDir(), archive.Options{})
	if err != nil {
		t.Fatal(err)
	}
	archiveTxns(t, a, "l1", txns, 100, 220)
	src := NewArchiveSource(a)
	dir := t.TempDir()
	targets := []Target{
		{Kind: Time, Time: txns[99].CommitTime},
		{Kind: Time, Time: txns[150].CommitTime, Exclusive: true},
		{Kind: LSN, LSN: txns[200].CommitLSN},
		{Kind: SourceLSN, LSN: txns[221].Header.SourceLSN, Exclusive: true},
		{Kind: XID, XID: txns[260].Header.XID},
		{Kind: Name, Name: "inside-111"},
		{Kind: Latest},
	}
	for i, tg := range targets {
		want := expectedPrefix(txns, tg)
		ef := "sqlite://" + filepath.Join(dir, fmt.Sprintf("expected-%d.db", i))
		buildReplica(t, ef, txns[:want])
		for _, noSnap := range []bool{true, false} {
			db := fmt.Sprintf("restore%d_%v", i, noSnap)
			if err := pg.CreateDB(ctx, db); err != nil {
				t.Fatal(err)
			}
			plan, err := PlanRestore(ctx, src, tg, PlanOptions{NoSnapshot: noSnap})
			if err != nil {
				t.Fatalf("%s: plan: %v", tg, err)
			}
			if noSnap && (plan.Snapshot != nil || plan.FromLSN != 1) {
				t.Fatalf("%s: NoSnapshot plan starts from %d with snapshot %v", tg, plan.FromLSN, plan.Snapshot)
			}
			if !noSnap && want > 101 && plan.Snapshot == nil {
				t.Fatalf("%s: no snapshot used for a %d-transaction restore", tg, want)
			}
			res, err := Restore(ctx, src, plan, pg.DSN(db), RestoreOptions{Options: Options{Parallel: 4}})
			if err != nil {
				t.Fatalf("%s: restore: %v", tg, err)
			}
			if want > 0 && res.Position != txns[want-1].CommitLSN {
				t.Fatalf("%s: position %d, want %d", tg, res.Position, txns[want-1].CommitLSN)
			}
			compareReplicasCounts(t, fmt.Sprintf("%s (postgres, snapshot %v)", tg, plan.Snapshot != nil), pg.DSN(db), ef, plan.Snapshot == nil)
		}
	}
	// A database that is not empty is refused.
	plan, _ := PlanRestore(ctx, src, Target{Kind: Latest}, PlanOptions{NoSnapshot: true})
	if _, err := Restore(ctx, src, plan, pg.DSN("restore0_true"), RestoreOptions{}); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("restore into a used database: %v", err)
	}
}
