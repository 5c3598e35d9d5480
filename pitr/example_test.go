package pitr_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/walship/walship/archive"
	"github.com/walship/walship/change"
	"github.com/walship/walship/pitr"
	"github.com/walship/walship/replica"
)

// This example archives four transactions in two segment objects and a
// base snapshot, as `walship run` would, then restores a SQLite replica to
// a point in time between them: planning from the manifests, then
// verifying and applying.
func Example() {
	dir, err := os.MkdirTemp("", "pitr-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()

	// An archive in a directory (s3://bucket/prefix works the same).
	arch, err := archive.Open(ctx, "file://"+filepath.Join(dir, "archive"), archive.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer arch.Close()

	// Four transactions of one change each, committed a minute apart, as
	// the log returns them: the price of item 1 goes 10, 11, 12, 13.
	start := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	var txns []change.Committed
	for i := range 4 {
		lsn := uint64(i + 1)
		txns = append(txns, change.Committed{
			FirstLSN: lsn, CommitLSN: lsn, CommitTime: start.Add(time.Duration(i) * time.Minute),
			Txn: change.Txn{Changes: []change.Change{{
				Table: change.Table{Schema: "public", Name: "prices"},
				Op:    change.Insert,
				Key:   change.Row{{Name: "item", Value: change.IntValue(1)}},
				After: change.Row{
					{Name: "item", Value: change.IntValue(1)},
					{Name: "price", Value: change.IntValue(int64(10 + i))},
				},
			}}},
		})
	}
	for _, seg := range [][]change.Committed{txns[:2], txns[2:]} {
		enc, err := arch.EncodeSegment("main", 0, seg)
		if err != nil {
			log.Fatal(err)
		}
		if _, err := arch.StoreSegment(ctx, enc); err != nil {
			log.Fatal(err)
		}
	}

	// A base snapshot of the replica after LSN 2, as archivesink.Snapshotter
	// takes them, so that restores need not replay the log from its start.
	base := filepath.Join(dir, "base.db")
	app, err := replica.Open(ctx, "sqlite://"+base, replica.Options{})
	if err != nil {
		log.Fatal(err)
	}
	if err := app.Apply(ctx, txns[:2]); err != nil {
		log.Fatal(err)
	}
	if err := app.Close(); err != nil {
		log.Fatal(err)
	}
	snap := filepath.Join(dir, "snap.db")
	if err := replica.Snapshot(ctx, base, snap); err != nil {
		log.Fatal(err)
	}
	if err := arch.PutSnapshot(ctx, "main", 2, txns[1].CommitTime, snap); err != nil {
		log.Fatal(err)
	}

	// Plan a restore to 12:02:30: from the manifests alone, it picks the
	// latest snapshot at or before the target and the segments after it.
	src := pitr.NewArchiveSource(arch)
	target, err := pitr.ParseTarget("time", "2024-05-01T12:02:30Z", false)
	if err != nil {
		log.Fatal(err)
	}
	plan, err := pitr.PlanRestore(ctx, src, target, pitr.PlanOptions{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("plan: lineage %s, snapshot at LSN %d, %d segment(s) from LSN %d, %s\n",
		plan.Lineage, plan.Snapshot.LSN, len(plan.Segments), plan.FromLSN, plan.Rule)

	// Restore verifies every object of the plan, then starts from the
	// snapshot and applies exactly the transactions the target selects
	// (here LSN 3; LSNs 1 and 2 are in the snapshot) to a new SQLite replica.
	url := "sqlite://" + filepath.Join(dir, "restored.db")
	res, err := pitr.Restore(ctx, src, plan, url, pitr.RestoreOptions{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("restored: applied %d, position %d, last commit %s\n",
		res.Txns, res.Position, res.LastCommitTime.Format(time.TimeOnly))

	tables, err := replica.Dump(ctx, url)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("prices:", tables["prices"])
	// Output:
	// plan: lineage main, snapshot at LSN 2, 1 segment(s) from LSN 3, commit time <= 2024-05-01T12:02:30Z
	// restored: applied 1, position 3, last commit 12:02:00
	// prices: [{"item":"1","price":"12"}]
}
