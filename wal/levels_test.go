package wal

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestLevelsShippedWaitsForEverySink: a Wait for LevelShipped returns only
// once every counted sink has reported a position at or past the LSN (the
// lowest of them counts), never on a report of a sink that does not count;
// LevelLocal returns once the log is durable; Close releases the waiters
// with ErrLevelsClosed; a level the log cannot reach is refused at once.
func TestLevelsShippedWaitsForEverySink(t *testing.T) {
	ctx := context.Background()
	w, _, err := Open(Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	lv, err := NewLevels(w, LevelShipped, []string{"kafka", "archive"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tx := txnOf(1, 3)
	tk, err := w.Append(ctx, &tx)
	if err != nil {
		t.Fatal(err)
	}
	if err := lv.Wait(ctx, LevelLocal, tk.Last); err != nil {
		t.Fatalf("local: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- lv.Wait(ctx, LevelShipped, tk.Last) }()
	notYet := func(what string) {
		t.Helper()
		// A short look catches a wrong release; the release itself is
		// checked without a time bound below.
		select {
		case err := <-done:
			t.Fatalf("shipped released after %s: %v", what, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	lv.Report("snapshotter", tk.Last) // does not count
	notYet("a sink that does not count")
	lv.Report("kafka", tk.Last)
	notYet("only kafka")
	if got := lv.Position(LevelShipped); got != 0 {
		t.Fatalf("shipped position with the archive at 0: %d", got)
	}
	lv.Report("archive", tk.Last-1) // not yet the commit
	notYet("the archive below the commit")
	lv.Report("archive", tk.Last)
	if err := <-done; err != nil {
		t.Fatalf("shipped: %v", err)
	}
	if got := lv.Position(LevelShipped); got != tk.Last {
		t.Fatalf("shipped position %d, want %d", got, tk.Last)
	}
	lv.Report("kafka", 1) // positions never go back
	if got := lv.Position(LevelShipped); got != tk.Last {
		t.Fatalf("shipped position went back to %d", got)
	}

	tx2 := txnOf(2, 1)
	tk2, err := w.Append(ctx, &tx2)
	if err != nil {
		t.Fatal(err)
	}
	go func() { done <- lv.Wait(ctx, LevelShipped, tk2.Last) }()
	notYet("nothing")
	lv.Close()
	if err := <-done; !errors.Is(err, ErrLevelsClosed) {
		t.Fatalf("after Close: %v, want ErrLevelsClosed", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := lv.Wait(cctx, LevelShipped, tk2.Last+10); !errors.Is(err, context.Canceled) && !errors.Is(err, ErrLevelsClosed) {
		t.Fatalf("cancelled wait: %v", err)
	}

	none, err := NewLevels(w, LevelLocal, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := none.Wait(ctx, LevelShipped, 1); !errors.Is(err, ErrLevelUnavailable) {
		t.Fatalf("shipped without sinks: %v, want ErrLevelUnavailable", err)
	}
	if _, err := NewLevels(w, LevelShipped, nil, nil); !errors.Is(err, ErrLevelUnavailable) {
		t.Fatalf("NewLevels shipped without sinks: %v", err)
	}
}

// TestLevelsOffLog: a log that does not fsync cannot promise local or
// shipped; LevelOff waits for the write.
func TestLevelsOffLog(t *testing.T) {
	ctx := context.Background()
	w, _, err := Open(Options{Dir: t.TempDir(), Sync: SyncOff})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := NewLevels(w, LevelLocal, nil, nil); !errors.Is(err, ErrLevelUnavailable) {
		t.Fatalf("NewLevels local on an off log: %v", err)
	}
	lv, err := NewLevels(w, LevelOff, []string{"kafka"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := lv.Wait(ctx, LevelShipped, 1); !errors.Is(err, ErrLevelUnavailable) {
		t.Fatalf("shipped on an off log: %v", err)
	}
	tx := txnOf(1, 1)
	tk, err := w.AppendAsync(ctx, &tx)
	if err != nil {
		t.Fatal(err)
	}
	if err := lv.Wait(ctx, LevelOff, tk.Last); err != nil {
		t.Fatal(err)
	}
	if w.Durable() < tk.Last {
		t.Fatalf("off returned before the write: durable %d < %d", w.Durable(), tk.Last)
	}
	for _, s := range []string{"off", "local", "shipped", "applied", ""} {
		l, err := ParseLevel(s)
		if err != nil || (s != "" && l.String() != s) {
			t.Errorf("ParseLevel(%q) = %v, %v", s, l, err)
		}
	}
	if _, err := ParseLevel("remote_apply"); err == nil {
		t.Error("ParseLevel(remote_apply): no error")
	}
}

// TestLevelsApplied: a Wait for LevelApplied returns once the quorum's
// position passes the LSN: ANY 1 on the first replica's report, FIRST 2
// only on the second's; without a quorum applied is unavailable.
func TestLevelsApplied(t *testing.T) {
	ctx := context.Background()
	w, _, err := Open(Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := NewLevels(w, LevelApplied, nil, nil); !errors.Is(err, ErrLevelUnavailable) {
		t.Fatalf("applied without a quorum: %v", err)
	}
	tx := txnOf(1, 2)
	tk, err := w.Append(ctx, &tx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		quorum string
		needs  int // reports (r1, then r2) before the wait returns
	}{{"ANY 1 (r1, r2)", 1}, {"FIRST 2 (r1, r2)", 2}} {
		q, err := ParseQuorum(tc.quorum)
		if err != nil {
			t.Fatal(err)
		}
		lv, err := NewLevels(w, LevelApplied, nil, q)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- lv.Wait(ctx, LevelApplied, tk.Last) }()
		for i, r := range []string{"r1", "r2"} {
			select {
			case err := <-done:
				t.Fatalf("%s: released after %d report(s), want %d: %v", tc.quorum, i, tc.needs, err)
			case <-time.After(50 * time.Millisecond):
			}
			lv.ReportApplied("other", tk.Last) // not in the quorum
			lv.ReportApplied(r, tk.Last)
			if i+1 == tc.needs {
				break
			}
		}
		if err := <-done; err != nil {
			t.Fatalf("%s: %v", tc.quorum, err)
		}
		if got := lv.Position(LevelApplied); got != tk.Last {
			t.Fatalf("%s: applied position %d, want %d", tc.quorum, got, tk.Last)
		}
	}
}
