package pitr

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/walship/walship/archive"
	"github.com/walship/walship/change"
)

// benchArchive stores segs segments of per one-change transactions
// (about 200 bytes each) in a file:// archive.
func benchArchive(b *testing.B, segs, per int) (*ArchiveSource, int64) {
	b.Helper()
	ctx := context.Background()
	a, err := archive.Open(ctx, "file://"+b.TempDir(), archive.Options{})
	if err != nil {
		b.Fatal(err)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	lsn := uint64(1)
	var raw int64
	pad := strings.Repeat("x", 150)
	for s := 0; s < segs; s++ {
		txns := make([]change.Committed, per)
		for i := range txns {
			id := int64(s*per + i)
			txns[i] = change.Committed{FirstLSN: lsn, CommitLSN: lsn, CommitTime: t0.Add(time.Duration(id) * time.Millisecond),
				Txn: change.Txn{Header: change.TxHeader{XID: uint64(id + 1)}, Changes: []change.Change{{
					Table: change.Table{Schema: "public", Name: "t"}, Op: change.Insert,
					Key:   change.Row{{Name: "id", Value: change.IntValue(id % 5000)}},
					After: change.Row{{Name: "id", Value: change.IntValue(id % 5000)}, {Name: "v", Value: change.TextValue(fmt.Sprint(pad, id))}}}}}}
			lsn++
		}
		enc, err := a.EncodeSegment("main", 0, txns)
		if err != nil {
			b.Fatal(err)
		}
		m, err := a.StoreSegment(ctx, enc)
		if err != nil {
			b.Fatal(err)
		}
		raw += m.RawSize
	}
	return NewArchiveSource(a), raw
}

// BenchmarkVerifyPass measures reading, verifying and decoding a plan's
// objects (the verify pass), in raw (decoded) bytes per second.
func BenchmarkVerifyPass(b *testing.B) {
	src, raw := benchArchive(b, 64, 2000)
	ctx := context.Background()
	plan, err := PlanRestore(ctx, src, Target{Kind: Latest}, PlanOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(raw)
	b.ResetTimer()
	for range b.N {
		v, err := Verify(ctx, src, plan, Options{Parallel: 8, VerifyMemory: 1 << 30})
		if err != nil {
			b.Fatal(err)
		}
		v.Close()
	}
}

// BenchmarkRestoreSQLite measures a whole restore into SQLite, reporting
// changes per second.
func BenchmarkRestoreSQLite(b *testing.B) {
	src, _ := benchArchive(b, 16, 2000)
	ctx := context.Background()
	plan, err := PlanRestore(ctx, src, Target{Kind: Latest}, PlanOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	var changes int
	for i := range b.N {
		res, err := Restore(ctx, src, plan, "sqlite://"+filepath.Join(b.TempDir(), fmt.Sprintf("r%d.db", i)), RestoreOptions{})
		if err != nil {
			b.Fatal(err)
		}
		changes += res.Changes
	}
	b.ReportMetric(float64(changes)/b.Elapsed().Seconds(), "changes/s")
}
