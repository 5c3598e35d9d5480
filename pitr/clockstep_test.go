package pitr

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/walship/walship/archive"
	"github.com/walship/walship/change"
	"github.com/walship/walship/wal"
)

// TestClockStepRestoresExact: a source whose clock steps back gives commit
// times earlier than the previous one; the log raises them, so its commit
// times never decrease, and restores by time on both sides of the step
// (and inside the raised stretch) give exactly the transactions whose
// recorded commit time is within the target.
func TestClockStepRestoresExact(t *testing.T) {
	ctx := context.Background()
	w, _, err := wal.Open(wal.Options{Dir: t.TempDir(), Sync: wal.SyncOff})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	sec := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	// The source clock steps back 1.5s after the fourth transaction.
	source := []float64{1, 2, 3, 4, 2.5, 3.5, 4.5, 5, 6}
	recorded := []float64{1, 2, 3, 4, 4, 4, 4.5, 5, 6}
	tbl := change.Table{Schema: "public", Name: "t"}
	for i, s := range source {
		id := change.IntValue(int64(i + 1))
		txn := &change.Txn{Header: change.TxHeader{XID: uint64(100 + i), SourceCommitTime: sec(s)},
			Changes: []change.Change{{Table: tbl, Op: change.Insert, Key: change.Row{{Name: "id", Value: id}},
				After: change.Row{{Name: "id", Value: id}, {Name: "v", Value: change.TextValue(fmt.Sprintf("source +%vs", s))}},
				Types: []change.ColumnType{{Name: "id", Type: "bigint"}, {Name: "v", Type: "text"}}}}}
		if _, err := w.Append(ctx, txn); err != nil {
			t.Fatalf("append txn %d: %v", i+1, err)
		}
	}
	r, err := w.NewReader(1, false)
	if err != nil {
		t.Fatal(err)
	}
	var txns []change.Committed
	for {
		tx, err := r.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		txns = append(txns, *tx)
	}
	r.Close()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	for i, tx := range txns {
		if !tx.CommitTime.Equal(sec(recorded[i])) {
			t.Fatalf("txn %d (source time +%vs): recorded commit time +%v, want +%vs", i+1, source[i], tx.CommitTime.Sub(t0), recorded[i])
		}
	}

	a, err := archive.Open(ctx, "file://"+t.TempDir(), archive.Options{})
	if err != nil {
		t.Fatal(err)
	}
	archiveTxns(t, a, "l1", txns, 2) // a snapshot before the step
	src := NewArchiveSource(a)
	dir := t.TempDir()
	for i, tc := range []struct {
		at        float64
		exclusive bool
		want      int // transactions restored
	}{
		{2, false, 2}, {3, false, 3}, // before the step
		{3.5, false, 3},             // the source said +3.5s for txn 6, but it was recorded at +4s
		{4, true, 3}, {4, false, 6}, // the raised stretch: all or none of it
		{4.5, false, 7}, {4.5, true, 6}, {5.5, false, 8}, {6, false, 9}, // after the step
	} {
		tg := Target{Kind: Time, Time: sec(tc.at), Exclusive: tc.exclusive}
		if n := expectedPrefix(txns, tg); n != tc.want {
			t.Fatalf("%s: the log's commit times put %d transactions within it, want %d", tg, n, tc.want)
		}
		want := filepath.Join(dir, fmt.Sprintf("expected-%d.db", i))
		buildReplica(t, "sqlite://"+want, txns[:tc.want])
		plan, err := PlanRestore(ctx, src, tg, PlanOptions{})
		if err != nil {
			t.Fatalf("%s: plan: %v", tg, err)
		}
		got := filepath.Join(dir, fmt.Sprintf("restored-%d.db", i))
		res, err := Restore(ctx, src, plan, "sqlite://"+got, RestoreOptions{})
		if err != nil {
			t.Fatalf("%s: restore: %v", tg, err)
		}
		if res.Position != txns[tc.want-1].CommitLSN {
			t.Fatalf("%s: restored to LSN %d, want %d", tg, res.Position, txns[tc.want-1].CommitLSN)
		}
		compareReplicas(t, tg.String(), "sqlite://"+got, "sqlite://"+want)
	}
}
