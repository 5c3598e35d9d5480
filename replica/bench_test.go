package replica

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/walship/walship/change"
)

// benchTxns builds n txns of 5 changes on an accounts-like table: 3
// inserts, 1 update, 1 delete (the CDC workload of the benches).
func benchTxns(from, n int) []change.Committed {
	types := types("id", "int8", "owner", "text", "balance", "numeric", "updated", "timestamptz")
	mk := func(op change.Op, id int, bal string) change.Change {
		r := change.Row{
			{Name: "id", Value: change.IntValue(int64(id))},
			{Name: "owner", Value: change.TextValue(fmt.Sprintf("owner-%d", id))},
			{Name: "balance", Value: num(bal)},
			{Name: "updated", Value: ts(t0.Add(time.Duration(id) * time.Microsecond))},
		}
		return change.Change{Table: tbl("public.accounts"), Op: op, Key: r[:1], After: r, Types: types}
	}
	out := make([]change.Committed, 0, n)
	for i := from; i < from+n; i++ {
		id := i * 3
		d := change.Change{Table: tbl("public.accounts"), Op: change.Delete, Key: change.Row{{Name: "id", Value: change.IntValue(int64(id - 2))}}}
		out = append(out, txn(uint64(i), mk(change.Insert, id, "10.00"), mk(change.Insert, id+1, "20.50"), mk(change.Insert, id+2, "0.01"), mk(change.Update, id, "11.25"), d))
	}
	return out
}

func benchApply(b *testing.B, url string, batch int) {
	a := open(b, url, Options{MaxBatchTxns: batch})
	ctx := context.Background()
	apply(b, a, benchTxns(1, 100)...) // create the table
	next := 101
	b.ResetTimer()
	start := time.Now()
	changes := 0
	for b.Loop() {
		txns := benchTxns(next, 1000)
		next += 1000
		if err := a.Apply(ctx, txns); err != nil {
			b.Fatal(err)
		}
		changes += 5000
	}
	b.ReportMetric(float64(changes)/time.Since(start).Seconds(), "changes/s")
}

func BenchmarkApplySQLite(b *testing.B)   { benchApply(b, sqliteURL(b), 1000) }
func BenchmarkApplyPostgres(b *testing.B) { benchApply(b, pgURL(b), 1000) }

// One DB transaction (and fsync) per log transaction: the latency-bound
// end of the range.
func BenchmarkApplySQLiteTxnEach(b *testing.B)   { benchApply(b, sqliteURL(b), 1) }
func BenchmarkApplyPostgresTxnEach(b *testing.B) { benchApply(b, pgURL(b), 1) }
