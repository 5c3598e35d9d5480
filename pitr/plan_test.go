package pitr

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/walship/walship/archive"
	"github.com/walship/walship/change"
	"github.com/walship/walship/walerr"
)

// targetsFor returns targets on, around and between the transactions of
// txns, inclusive and exclusive.
func targetsFor(txns []change.Committed) []Target {
	var ts []Target
	ts = append(ts, Target{Kind: Latest})
	var maxSrc uint64
	for _, tx := range txns {
		maxSrc = max(maxSrc, tx.Header.SourceLSN)
	}
	for _, i := range []int{0, 1, 3, 4, 9, 10, 17, 24, 25, 33, 41, 48, len(txns) - 1} {
		tx := txns[i]
		for _, ex := range []bool{false, true} {
			ts = append(ts,
				Target{Kind: Time, Time: tx.CommitTime, Exclusive: ex},
				Target{Kind: LSN, LSN: tx.CommitLSN, Exclusive: ex},
				Target{Kind: LSN, LSN: tx.FirstLSN, Exclusive: ex},
				Target{Kind: XID, XID: tx.Header.XID, Exclusive: ex},
			)
			if between := tx.CommitTime.Add(500 * time.Millisecond); !between.After(txns[len(txns)-1].CommitTime) {
				ts = append(ts, Target{Kind: Time, Time: between, Exclusive: ex})
			}
			if s := tx.Header.SourceLSN; s != 0 {
				ts = append(ts, Target{Kind: SourceLSN, LSN: s, Exclusive: ex})
				if s < maxSrc {
					ts = append(ts, Target{Kind: SourceLSN, LSN: s + 1, Exclusive: ex})
				}
			}
			if i%10 == 9 {
				ts = append(ts, Target{Kind: Name, Name: fmt.Sprintf("rp%d", i), Exclusive: ex})
			}
		}
	}
	return ts
}

func TestRestoreIsExactPrefix(t *testing.T) {
	txns := genTxns(50)
	configs := []struct {
		per    int
		snapAt []int
	}{
		{1, nil},
		{4, []int{10, 30}},
		{7, []int{0, 25, 49}},
		{50, []int{20}},
	}
	for _, cfg := range configs {
		src := newMemSource(txns, cfg.per, cfg.snapAt...)
		for _, tg := range targetsFor(txns) {
			name := fmt.Sprintf("per%d/snaps%v/%s", cfg.per, cfg.snapAt, tg)
			want := expectedPrefix(txns, tg)
			plan, err := PlanRestore(context.Background(), src, tg, PlanOptions{})
			if err != nil {
				t.Fatalf("%s: plan: %v", name, err)
			}
			var gotApp *fakeApplier
			res, err := Execute(context.Background(), src, plan, func(ctx context.Context, f string) (Applier, error) {
				a, err := openFake(t, txns)(ctx, f)
				gotApp = a.(*fakeApplier)
				return a, err
			}, Options{Parallel: 3, BatchTxns: 4})
			if err != nil {
				t.Fatalf("%s: execute: %v", name, err)
			}
			got := gotApp.applied
			if len(got) != want {
				t.Fatalf("%s: restored %d transactions (position %d), want %d (plan %+v)", name, len(got), res.Position, want, plan.Rule)
			}
			for i := range got {
				if got[i].CommitLSN != txns[i].CommitLSN {
					t.Fatalf("%s: transaction %d is LSN %d, want %d", name, i, got[i].CommitLSN, txns[i].CommitLSN)
				}
			}
			wantPos := uint64(0)
			if want > 0 {
				wantPos = txns[want-1].CommitLSN
			}
			if res.Position != wantPos {
				t.Fatalf("%s: position %d, want %d", name, res.Position, wantPos)
			}
			// The plan reads no segment wholly beyond the target, except
			// where the manifests cannot tell (source LSN).
			if n := len(plan.Segments); n > 0 && tg.Kind != SourceLSN && tg.Kind != Latest && want > 0 {
				lastSeg := plan.Segments[n-1]
				if lastSeg.FirstLSN > txns[want-1].CommitLSN+1 {
					t.Fatalf("%s: plan reads segment %s past the target", name, lastSeg.Key)
				}
			}
		}
	}
}

func TestPlanChoosesLatestSnapshotAtOrBeforeTarget(t *testing.T) {
	txns := genTxns(50)
	src := newMemSource(txns, 5, 9, 19, 29)
	for _, c := range []struct {
		target   Target
		wantSnap uint64 // 0: none
	}{
		{Target{Kind: Latest}, txns[29].CommitLSN},
		{Target{Kind: LSN, LSN: txns[19].CommitLSN}, txns[19].CommitLSN},
		{Target{Kind: LSN, LSN: txns[19].CommitLSN, Exclusive: true}, txns[9].CommitLSN},
		{Target{Kind: Time, Time: txns[25].CommitTime}, txns[19].CommitLSN},
		{Target{Kind: Time, Time: txns[9].CommitTime.Add(-time.Millisecond)}, 0},
		{Target{Kind: XID, XID: txns[29].Header.XID}, txns[29].CommitLSN},
		{Target{Kind: XID, XID: txns[29].Header.XID, Exclusive: true}, txns[19].CommitLSN},
		{Target{Kind: Name, Name: "rp19"}, txns[19].CommitLSN},
		{Target{Kind: Name, Name: "rp19", Exclusive: true}, txns[9].CommitLSN},
	} {
		plan, err := PlanRestore(context.Background(), src, c.target, PlanOptions{})
		if err != nil {
			t.Fatalf("%s: %v", c.target, err)
		}
		got := uint64(0)
		if plan.Snapshot != nil {
			got = plan.Snapshot.LSN
		}
		if got != c.wantSnap {
			t.Errorf("%s: snapshot at LSN %d, want %d", c.target, got, c.wantSnap)
		}
		if want := got + 1; plan.FromLSN != want {
			t.Errorf("%s: FromLSN %d, want %d", c.target, plan.FromLSN, want)
		}
		if len(plan.Segments) > 0 && plan.Segments[0].FirstLSN > plan.FromLSN {
			t.Errorf("%s: first segment starts at %d, after FromLSN %d", c.target, plan.Segments[0].FirstLSN, plan.FromLSN)
		}
	}
}

func TestPlanRefusesOutOfRange(t *testing.T) {
	txns := genTxns(50)
	full := newMemSource(txns, 5)
	pruned := newMemSource(txns, 5, 19, 29)
	pruned.cat.Segments = pruned.cat.Segments[4:] // segments from txn 20 on
	last := txns[len(txns)-1]
	for _, c := range []struct {
		src    *memSource
		target Target
		want   error
		msg    string
	}{
		{full, Target{Kind: Time, Time: last.CommitTime.Add(time.Nanosecond)}, ErrOutOfRange, "after the last archived commit"},
		{full, Target{Kind: LSN, LSN: last.CommitLSN + 1}, ErrOutOfRange, "after the last archived commit (LSN " + fmt.Sprint(last.CommitLSN)},
		{full, Target{Kind: SourceLSN, LSN: 0xFFFFFFFFFF}, ErrOutOfRange, "after the last archived source commit"},
		{full, Target{Kind: XID, XID: 99}, ErrTargetNotFound, "no archived transaction has xid 99"},
		{full, Target{Kind: Name, Name: "nope"}, ErrTargetNotFound, `no restore point named "nope"`},
		{pruned, Target{Kind: Time, Time: txns[10].CommitTime}, ErrOutOfRange, "before the first snapshot (LSN " + fmt.Sprint(txns[19].CommitLSN)},
		{pruned, Target{Kind: LSN, LSN: txns[19].CommitLSN, Exclusive: true}, ErrOutOfRange, "before the first snapshot"},
	} {
		_, err := PlanRestore(context.Background(), c.src, c.target, PlanOptions{})
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: got %v, want %v containing %q", c.target, err, c.want, c.msg)
		}
	}
	// A destination to continue that is already past the target.
	if _, err := PlanRestore(context.Background(), full, Target{Kind: LSN, LSN: txns[20].CommitLSN},
		PlanOptions{FromLSN: txns[30].CommitLSN + 1}); !errors.Is(err, ErrOutOfRange) || !strings.Contains(err.Error(), "the destination is at LSN") {
		t.Errorf("continuing past the target: %v", err)
	}
	// The first snapshot itself is restorable.
	plan, err := PlanRestore(context.Background(), pruned, Target{Kind: LSN, LSN: txns[19].CommitLSN}, PlanOptions{})
	if err != nil || plan.Snapshot == nil || len(plan.Segments) != 0 {
		t.Fatalf("target = first snapshot: plan %+v, err %v", plan, err)
	}
}

func TestPlanRefusesHole(t *testing.T) {
	txns := genTxns(50)
	src := newMemSource(txns, 5, 9)
	hole := src.cat.Segments[4] // txns 20-24
	src.cat.Segments = append(src.cat.Segments[:4:4], src.cat.Segments[5:]...)
	for _, tg := range []Target{
		{Kind: Latest},
		{Kind: LSN, LSN: txns[22].CommitLSN},
		{Kind: Time, Time: txns[19].CommitTime.Add(time.Millisecond)},
		{Kind: SourceLSN, LSN: txns[40].Header.SourceLSN},
		{Kind: XID, XID: txns[40].Header.XID},
	} {
		_, err := PlanRestore(context.Background(), src, tg, PlanOptions{})
		var he *HoleError
		if !errors.As(err, &he) || he.From != hole.FirstLSN || he.To != hole.LastLSN {
			t.Errorf("%s: got %v, want a hole at LSNs %d-%d", tg, err, hole.FirstLSN, hole.LastLSN)
		}
	}
	// Targets before the hole restore fine.
	for _, tg := range []Target{
		{Kind: LSN, LSN: txns[19].CommitLSN},
		{Kind: LSN, LSN: hole.FirstLSN, Exclusive: true},
		{Kind: Name, Name: "rp19"},
	} {
		if _, err := PlanRestore(context.Background(), src, tg, PlanOptions{}); err != nil {
			t.Errorf("%s: %v", tg, err)
		}
	}
}

func TestCorruptOrMissingObjectFoundBeforeAnythingIsApplied(t *testing.T) {
	txns := genTxns(50)
	for _, fault := range []string{"corrupt", "missing"} {
		src := newMemSource(txns, 5)
		bad := src.cat.Segments[7].Key
		if fault == "corrupt" {
			src.corrupt[bad] = true
		} else {
			src.missing[bad] = true
		}
		plan, err := PlanRestore(context.Background(), src, Target{Kind: Latest}, PlanOptions{})
		if err != nil {
			t.Fatal(err)
		}
		opened := false
		_, err = Execute(context.Background(), src, plan, func(ctx context.Context, f string) (Applier, error) {
			opened = true
			return &fakeApplier{}, nil
		}, Options{Parallel: 4})
		var oe *ObjectError
		if !errors.As(err, &oe) || oe.Key != bad {
			t.Fatalf("%s: got %v, want an ObjectError naming %s", fault, err, bad)
		}
		want := map[string]error{"corrupt": walerr.ErrCorruption, "missing": ErrMissing}[fault]
		if !errors.Is(err, want) {
			t.Fatalf("%s: %v is not %v", fault, err, want)
		}
		if opened {
			t.Fatalf("%s: the destination was opened before verification finished", fault)
		}
	}
}

func TestTransientErrorsAreRetriedNotTakenForTheEnd(t *testing.T) {
	txns := genTxns(50)
	src := newMemSource(txns, 5)
	for _, s := range src.cat.Segments {
		src.transient[s.Key] = 2
	}
	plan, err := PlanRestore(context.Background(), src, Target{Kind: Latest}, PlanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var app *fakeApplier
	res, err := Execute(context.Background(), src, plan, func(ctx context.Context, f string) (Applier, error) {
		app = &fakeApplier{}
		return app, nil
	}, Options{Parallel: 4, Retry: archive.RetryPolicy{Initial: time.Millisecond, Max: 2 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	if len(app.applied) != len(txns) || res.Position != txns[len(txns)-1].CommitLSN {
		t.Fatalf("applied %d transactions to %d, want all %d", len(app.applied), res.Position, len(txns))
	}

	// A failure that outlasts the policy is an error, never a short restore.
	src = newMemSource(txns, 5)
	src.transient[src.cat.Segments[3].Key] = 1 << 30
	plan, _ = PlanRestore(context.Background(), src, Target{Kind: Latest}, PlanOptions{})
	_, err = Execute(context.Background(), src, plan, openFake(t, txns),
		Options{Retry: archive.RetryPolicy{MaxElapsed: 50 * time.Millisecond, Initial: time.Millisecond}})
	if !errors.Is(err, ErrUnreadable) || !strings.Contains(err.Error(), src.cat.Segments[3].Key) || !strings.Contains(err.Error(), "503") {
		t.Fatalf("got %v, want the transient error naming %s", err, src.cat.Segments[3].Key)
	}
}

func TestPrefetchIsParallelBoundedAndOrdered(t *testing.T) {
	txns := genTxns(200)
	src := newMemSource(txns, 2)
	src.delay = 5 * time.Millisecond
	plan, err := PlanRestore(context.Background(), src, Target{Kind: Latest}, PlanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var app *fakeApplier
	_, err = Execute(context.Background(), src, plan, func(ctx context.Context, f string) (Applier, error) {
		app = &fakeApplier{}
		return app, nil
	}, Options{Parallel: 6, StreamVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := src.maxFlight.Load(); got < 2 || got > 6 {
		t.Errorf("at most %d reads in flight, want 2..6", got)
	}
	if got := src.reads.Load(); got != int64(len(plan.Segments)) {
		t.Errorf("%d reads for %d segments with StreamVerify", got, len(plan.Segments))
	}
	if len(app.applied) != len(txns) {
		t.Fatalf("applied %d of %d", len(app.applied), len(txns))
	}
}

func TestVerifyPassDownloadsEachObjectOnce(t *testing.T) {
	txns := genTxns(100)
	for _, mem := range []int64{1 << 30, 1, 1000} { // all in memory, all spooled, mixed
		src := newMemSource(txns, 3)
		plan, err := PlanRestore(context.Background(), src, Target{Kind: Latest}, PlanOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var app *fakeApplier
		var phases []string
		_, err = Execute(context.Background(), src, plan, func(ctx context.Context, f string) (Applier, error) {
			if got := src.reads.Load(); got != int64(len(plan.Segments)) {
				t.Errorf("memory %d: %d objects read before the destination opened, want all %d", mem, got, len(plan.Segments))
			}
			app = &fakeApplier{}
			return app, nil
		}, Options{Parallel: 3, VerifyMemory: mem, TempDir: t.TempDir(), Progress: func(p Progress) {
			if len(phases) == 0 || phases[len(phases)-1] != p.Phase {
				phases = append(phases, p.Phase)
			}
		}})
		if err != nil {
			t.Fatal(err)
		}
		if got := src.reads.Load(); got != int64(len(plan.Segments)) {
			t.Errorf("memory %d: %d reads for %d objects", mem, got, len(plan.Segments))
		}
		if len(app.applied) != len(txns) {
			t.Errorf("memory %d: applied %d of %d", mem, len(app.applied), len(txns))
		}
		if strings.Join(phases, ",") != "verify,apply" {
			t.Errorf("memory %d: phases %v", mem, phases)
		}
	}
}

// TestXIDScanGivesUpUnderPlanRetry: an xid target's scan over a segment
// that keeps failing transiently gives up by PlanOptions.Retry (not the
// 2-minute default), with ErrUnreadable naming the segment.
func TestXIDScanGivesUpUnderPlanRetry(t *testing.T) {
	txns := genTxns(50)
	src := newMemSource(txns, 5)
	for _, s := range src.cat.Segments {
		src.transient[s.Key] = 1 << 30
	}
	start := time.Now()
	_, err := PlanRestore(context.Background(), src, Target{Kind: XID, XID: txns[10].Header.XID},
		PlanOptions{Retry: archive.RetryPolicy{MaxElapsed: 50 * time.Millisecond, Initial: time.Millisecond}})
	if !errors.Is(err, ErrUnreadable) {
		t.Fatalf("got %v, want ErrUnreadable", err)
	}
	// Generous for a loaded machine; the default policy takes 2 minutes.
	if took := time.Since(start); took > 30*time.Second {
		t.Fatalf("the scan gave up after %s under a 50ms policy", took)
	}
}
