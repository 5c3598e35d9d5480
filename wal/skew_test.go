package wal

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/walship/walship/change"
)

// TestFarFutureCommitTimeIsRefused: a source commit time beyond
// MaxCommitTimeSkew is refused by every append path with an error naming
// commit_time and the bound's key, nothing is written, and a later
// transaction without a commit time gets this host's clock, not the
// outlier's.
func TestFarFutureCommitTimeIsRefused(t *testing.T) {
	ctx := context.Background()
	w, _, err := Open(Options{Dir: t.TempDir(), MaxCommitTimeSkew: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	future := time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)
	check := func(what string, err error) {
		t.Helper()
		var ie *change.InvalidError
		if !errors.As(err, &ie) || ie.Path != "commit_time" || !errors.Is(err, change.ErrInvalid) {
			t.Fatalf("%s: got %v, want an invalid-input error on commit_time", what, err)
		}
		for _, s := range []string{"2099-01-01T00:00:00Z", "1m0s", "wal.max_commit_time_skew"} {
			if !strings.Contains(err.Error(), s) {
				t.Fatalf("%s: error %q does not name %q", what, err, s)
			}
		}
		if w.seg.NextLSN() != 1 {
			t.Fatalf("%s: next LSN %d after a refused transaction", what, w.seg.NextLSN())
		}
	}
	txn := txnOf(1, 2)
	txn.Header.SourceCommitTime = future
	_, err = w.Append(ctx, &txn)
	check("Append", err)
	_, err = w.AppendAsync(ctx, &txn)
	check("AppendAsync", err)
	called := false
	_, err = w.AppendStream(ctx, txn.Header, func() (*change.Change, error) {
		called = true
		return nil, io.EOF
	})
	check("AppendStream", err)
	if called {
		t.Fatal("AppendStream read changes of a refused transaction")
	}

	// Within the skew is accepted as given.
	near := time.Now().Add(30 * time.Second).UTC()
	txn = txnOf(2, 1)
	txn.Header.SourceCommitTime = near
	tk, err := w.Append(ctx, &txn)
	if err != nil {
		t.Fatalf("commit time within the skew: %v", err)
	}
	if !tk.Time().Equal(near) {
		t.Fatalf("commit time %v, want the source's %v", tk.Time(), near)
	}
	// A later transaction without a commit time gets the clock (raised to
	// the previous commit's at most 30s ahead), never 2099.
	txn = txnOf(3, 1)
	before := time.Now()
	tk, err = w.Append(ctx, &txn)
	if err != nil {
		t.Fatal(err)
	}
	if tk.Time().Before(before) || tk.Time().After(near) {
		t.Fatalf("later commit time %v, want between %v and %v", tk.Time(), before, near)
	}
}

// TestNegativeSkewDisablesTheBound: MaxCommitTimeSkew < 0 accepts any
// commit time (for tools that rewrite a log whose times are already
// recorded).
func TestNegativeSkewDisablesTheBound(t *testing.T) {
	w, _, err := Open(Options{Dir: t.TempDir(), MaxCommitTimeSkew: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	txn := txnOf(1, 1)
	txn.Header.SourceCommitTime = time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)
	if _, err := w.Append(context.Background(), &txn); err != nil {
		t.Fatal(err)
	}
}

// TestSourceClockStepBackStaysMonotonic: commit times earlier than the
// previous one (a source clock stepped back) are raised to it, so the log's
// commit times never decrease, and the first one after the source clock
// passes the old high-water mark is recorded as given.
func TestSourceClockStepBackStaysMonotonic(t *testing.T) {
	ctx := context.Background()
	w, _, err := Open(Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	src := []time.Duration{1, 2, 3, 1, 2, 3, 4} // in seconds; steps back after 3
	want := []time.Duration{1, 2, 3, 3, 3, 3, 4}
	for i, s := range src {
		txn := txnOf(uint64(i+1), 1)
		txn.Header.SourceCommitTime = t0.Add(s * time.Second)
		tk, err := w.Append(ctx, &txn)
		if err != nil {
			t.Fatal(err)
		}
		if got := tk.Time(); !got.Equal(t0.Add(want[i] * time.Second)) {
			t.Fatalf("txn %d (source time +%v): commit time %v, want +%v", i+1, s*time.Second, got.Sub(t0), want[i]*time.Second)
		}
	}
}
