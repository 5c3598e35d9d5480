package pitr

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/walship/walship/archive"
	"github.com/walship/walship/change"
	"github.com/walship/walship/internal/seal"
	"github.com/walship/walship/walerr"
)

func sealedOptions(t *testing.T) (archive.Options, seal.Key) {
	t.Helper()
	k := seal.GenerateKey()
	s, err := seal.New(seal.Options{}, k)
	if err != nil {
		t.Fatal(err)
	}
	return archive.Options{Seal: s}, k
}

// storeSegments stores txns as segments of per transactions each.
func storeSegments(t *testing.T, a *archive.Archive, txns []change.Committed, per int) []archive.SegmentManifest {
	t.Helper()
	var ms []archive.SegmentManifest
	for i := 0; i < len(txns); i += per {
		enc, err := a.EncodeSegment("main", 0, txns[i:min(i+per, len(txns))])
		if err != nil {
			t.Fatal(err)
		}
		m, err := a.StoreSegment(context.Background(), enc)
		if err != nil {
			t.Fatal(err)
		}
		ms = append(ms, m)
	}
	return ms
}

// forge returns txns with every row value changed: what an adversary
// would rather have restored.
func forge(txns []change.Committed) []change.Committed {
	out := make([]change.Committed, len(txns))
	for i, tx := range txns {
		tx.Changes = append([]change.Change(nil), tx.Changes...)
		for j := range tx.Changes {
			if tx.Changes[j].After != nil {
				tx.Changes[j].After = change.Row{{Name: "id", Value: tx.Changes[j].Key[0].Value}, {Name: "v", Value: change.IntValue(-666)}}
			}
		}
		out[i] = tx
	}
	return out
}

// overwrite writes segment m of dir (object and manifest) with what
// another archive at other holds under the keys of om.
func overwrite(t *testing.T, dir string, m archive.SegmentManifest, other string, om archive.SegmentManifest) {
	t.Helper()
	for _, p := range [][2]string{{m.Key, om.Key}, {archive.ManifestKey(m.Key), archive.ManifestKey(om.Key)}} {
		b, err := os.ReadFile(filepath.Join(other, p[1]))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p[0]), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSealedArchiveRefusesForgedObjects: in an encrypted archive, a
// segment whose object and manifest were replaced by ones written without
// a key, sealed with another key, or copied from another segment's name is
// refused by the restore plan, naming the manifest, before anything is
// applied; a reader without the key is told the archive is encrypted.
func TestSealedArchiveRefusesForgedObjects(t *testing.T) {
	ctx := context.Background()
	txns := genTxns(40)
	opts, _ := sealedOptions(t)
	otherOpts, otherKey := sealedOptions(t)
	for _, c := range []struct {
		name string
		// replace makes what overwrites segment 1 (of 0..3) of dir.
		replace func(t *testing.T, dir string, ms []archive.SegmentManifest)
		want    string
	}{
		{"written without a key", func(t *testing.T, dir string, ms []archive.SegmentManifest) {
			other := t.TempDir()
			b, _ := archive.Open(ctx, "file://"+other, archive.Options{})
			om := storeSegments(t, b, forge(txns[10:20]), 10)[0]
			overwrite(t, dir, ms[1], other, om)
		}, "not sealed, but an encryption key is configured"},
		{"sealed with another key", func(t *testing.T, dir string, ms []archive.SegmentManifest) {
			other := t.TempDir()
			b, _ := archive.Open(ctx, "file://"+other, otherOpts)
			om := storeSegments(t, b, forge(txns[10:20]), 10)[0]
			overwrite(t, dir, ms[1], other, om)
		}, "sealed with key id " + otherKey.ID + ", not among the configured keys"},
		{"authentic, moved from another name", func(t *testing.T, dir string, ms []archive.SegmentManifest) {
			overwrite(t, dir, ms[1], dir, ms[2])
		}, "failed authentication"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			a, err := archive.Open(ctx, "file://"+dir, opts)
			if err != nil {
				t.Fatal(err)
			}
			ms := storeSegments(t, a, txns, 10)
			c.replace(t, dir, ms)
			src := NewArchiveSource(a)
			_, err = PlanRestore(ctx, src, Target{Kind: Latest}, PlanOptions{})
			var oe *ObjectError
			if !errors.As(err, &oe) || oe.Key != archive.ManifestKey(ms[1].Key) || !errors.Is(err, walerr.ErrCorruption) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("plan: %v; want corruption of %s saying %q", err, archive.ManifestKey(ms[1].Key), c.want)
			}
			// Follow shares the plan: it stops with the same error and
			// applies nothing.
			app := &fakeApplier{}
			err = Follow(ctx, src, app, FollowOptions{Interval: time.Millisecond})
			if !errors.As(err, &oe) || oe.Key != archive.ManifestKey(ms[1].Key) || app.pos != 0 {
				t.Fatalf("follow: %v, applied up to %d", err, app.pos)
			}
			rep, err := VerifyArchive(ctx, src, VerifyOptions{})
			if err != nil || len(rep.Corrupt) != 1 || rep.Corrupt[0].Key != archive.ManifestKey(ms[1].Key) {
				t.Fatalf("verify: %v %+v", err, rep)
			}

			plain, _ := archive.Open(ctx, "file://"+dir, archive.Options{})
			_, err = PlanRestore(ctx, NewArchiveSource(plain), Target{Kind: Latest}, PlanOptions{})
			if !errors.Is(err, archive.ErrEncrypted) || errors.Is(err, walerr.ErrCorruption) {
				t.Fatalf("plan without the key: %v, want archive.ErrEncrypted", err)
			}
		})
	}
}

// TestFollowRefusesForgedNewObjects: a standby of an encrypted archive
// that meets a newer segment written without the key stops with an error
// naming it, and applies nothing of it.
func TestFollowRefusesForgedNewObjects(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	txns := genTxns(30)
	dir := t.TempDir()
	opts, _ := sealedOptions(t)
	a, err := archive.Open(ctx, "file://"+dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	storeSegments(t, a, txns[:20], 10)
	app := &fakeApplier{}
	applied := make(chan uint64, 10)
	done := make(chan error, 1)
	go func() {
		done <- Follow(ctx, NewArchiveSource(a), app, FollowOptions{Interval: 5 * time.Millisecond,
			OnApply: func(r *Result) { applied <- r.Position }})
	}()
	select {
	case p := <-applied:
		if p != txns[19].CommitLSN {
			t.Fatalf("applied up to %d, want %d", p, txns[19].CommitLSN)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("standby did not apply the authentic segments")
	}
	plain, _ := archive.Open(ctx, "file://"+dir, archive.Options{})
	forged := storeSegments(t, plain, forge(txns[20:]), 10)[0]
	select {
	case err := <-done:
		var oe *ObjectError
		if !errors.As(err, &oe) || oe.Key != archive.ManifestKey(forged.Key) || !errors.Is(err, walerr.ErrCorruption) {
			t.Fatalf("follow: %v, want corruption of %s", err, archive.ManifestKey(forged.Key))
		}
	case p := <-applied:
		t.Fatalf("applied the forged segment (position %d)", p)
	case <-time.After(20 * time.Second):
		t.Fatal("follow did not stop at the forged segment")
	}
	if app.pos != txns[19].CommitLSN {
		t.Fatalf("position %d, want %d", app.pos, txns[19].CommitLSN)
	}
}
