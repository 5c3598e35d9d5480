package checksum

import (
	"context"
	"fmt"
	"testing"

	"github.com/walship/walship/change"
	"github.com/walship/walship/replica"
)

func res(round, table string, chunk, attempt int, srcHash, hash string) replica.ChecksumResult {
	return replica.ChecksumResult{Round: round, Table: table, Chunk: chunk, Attempt: attempt, SourceHash: srcHash, Hash: hash,
		Equal: srcHash == hash, After: []string{fmt.Sprint(chunk * 10)}}
}

func doneRes(round string, chunks int) replica.ChecksumResult {
	return replica.ChecksumResult{Round: round, Chunk: chunks}
}

// TestVerdicts: a chunk is equal if any attempt agreed, different only at
// an attempt the source's next attempt confirmed, otherwise unsettled; a
// round counts once its end and all its chunks were applied.
func TestVerdicts(t *testing.T) {
	results := []replica.ChecksumResult{
		res("r1", "public.a", 1, 1, "x", "y"), res("r1", "public.a", 1, 2, "z", "z"), // raced, then equal
		res("r1", "public.a", 2, 1, "x", "y"), res("r1", "public.a", 2, 2, "x", "y"), // settled and different
		res("r1", "public.a", 3, 1, "x", "y"), res("r1", "public.a", 3, 2, "w", "y"), // never settled
		doneRes("r1", 3),
		res("r2", "public.a", 1, 1, "x", "x"), // a later round under way
	}
	rep := Summarize(results)
	if rep.Round != "r1" || !rep.Finished || rep.Pending != "r2" || rep.Exit() != ExitDifferent {
		t.Fatalf("report %+v", rep)
	}
	tb := rep.Tables[0]
	if tb.Chunks != 3 || tb.Equal != 1 || len(tb.Different) != 1 || tb.Different[0].Chunk != 2 || len(tb.Unsettled) != 1 || tb.Unsettled[0].Chunk != 3 {
		t.Fatalf("table %+v", tb)
	}
	if c := Count(results); c.Equal != 2 || c.Different != 1 || c.Unsettled != 1 {
		t.Fatalf("count %+v", c)
	}
	// A round whose end arrived before all its chunks is not finished.
	if rep := Summarize([]replica.ChecksumResult{res("r1", "public.a", 1, 1, "x", "x"), doneRes("r1", 2)}); rep.Finished || rep.Exit() != ExitUnfinished {
		t.Fatalf("incomplete round: %+v", rep)
	}
	var asked []string
	n, err := Repair(context.Background(), rep, repairFunc(func(tb change.Table, after, hi []string) {
		asked = append(asked, fmt.Sprint(tb, after, hi))
	}))
	if err != nil || n != 1 || fmt.Sprint(asked) != "[public.a [20] []]" {
		t.Fatalf("repair: %d %v %v", n, err, asked)
	}
}

type repairFunc func(change.Table, []string, []string)

func (f repairFunc) RepairRange(_ context.Context, tb change.Table, after, hi []string) error {
	f(tb, after, hi)
	return nil
}
