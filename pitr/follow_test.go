package pitr

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/walship/walship/walerr"
)

// TestFollowWaitsForHolesAndAppliesInOrder publishes segments out of order
// (as parallel uploads may): the standby waits at the hole, never skips it,
// and applies everything once it is filled.
func TestFollowWaitsForHolesAndAppliesInOrder(t *testing.T) {
	txns := genTxns(60)
	full := newMemSource(txns, 5)
	all := full.cat.Segments
	src := newMemSource(txns, 5)
	src.cat.Segments = slices.Clone(all[:3]) // not sharing all's array
	app := &fakeApplier{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	applied := make(chan uint64, 100)
	done := make(chan error, 1)
	go func() {
		done <- Follow(ctx, src, app, FollowOptions{Interval: 5 * time.Millisecond, OnApply: func(r *Result) { applied <- r.Position }})
	}()
	wait := func(lsn uint64) {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case p := <-applied:
				if p > lsn {
					t.Fatalf("applied up to %d, past %d", p, lsn)
				}
				if p == lsn {
					return
				}
			case <-timeout:
				t.Fatalf("standby did not reach LSN %d", lsn)
			}
		}
	}
	wait(all[2].LastLSN)
	publish := func(segs ...Segment) {
		src.mu.Lock()
		src.cat.Segments = append(src.cat.Segments, segs...)
		src.mu.Unlock()
	}
	publish(all[4], all[5]) // segment 3 not yet there: a hole
	select {
	case p := <-applied:
		t.Fatalf("applied up to %d across a hole", p)
	case <-time.After(100 * time.Millisecond):
	}
	publish(all[3])
	wait(all[5].LastLSN)
	publish(all[6:]...)
	wait(all[len(all)-1].LastLSN)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Follow returned %v", err)
	}
	if len(app.applied) != len(txns) {
		t.Fatalf("applied %d of %d transactions", len(app.applied), len(txns))
	}
}

// TestFollowStopsOnCorruption: a corrupt object stops the standby with an
// error naming it; nothing of it is applied.
func TestFollowStopsOnCorruption(t *testing.T) {
	txns := genTxns(30)
	src := newMemSource(txns, 5)
	bad := src.cat.Segments[2]
	src.corrupt[bad.Key] = true
	app := &fakeApplier{}
	err := Follow(context.Background(), src, app, FollowOptions{Interval: time.Millisecond})
	var oe *ObjectError
	if !errors.As(err, &oe) || oe.Key != bad.Key || !errors.Is(err, walerr.ErrCorruption) {
		t.Fatalf("Follow returned %v, want corruption of %s", err, bad.Key)
	}
	if app.pos != 0 {
		t.Fatalf("applied up to %d before the corrupt object was found", app.pos)
	}
}

// TestMostRecentXIDAndName: repeated xids and names target their most
// recent occurrence.
func TestMostRecentXIDAndName(t *testing.T) {
	txns := genTxns(40)
	txns[30].Header.XID = txns[5].Header.XID
	txns[29].Changes[0] = RestorePointTxn("rp9").Changes[0] // a second "rp9"
	src := newMemSource(txns, 4)
	for _, c := range []struct {
		tg   Target
		want uint64
	}{
		{Target{Kind: XID, XID: txns[5].Header.XID}, txns[30].CommitLSN},
		{Target{Kind: Name, Name: "rp9"}, txns[29].CommitLSN},
	} {
		plan, err := PlanRestore(context.Background(), src, c.tg, PlanOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if plan.rule.lsn != c.want {
			t.Errorf("%s resolves to LSN %d, want %d", c.tg, plan.rule.lsn, c.want)
		}
	}
}
