package archive

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/walship/walship/internal/seal"
	"github.com/walship/walship/walerr"
)

func realSealer(t *testing.T) *seal.Sealer {
	t.Helper()
	s, err := seal.New(seal.Options{}, seal.GenerateKey())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// wantRefused checks that err refuses key as damage of the given kind.
func wantRefused(t *testing.T, what string, err error, key string, kinds ...error) {
	t.Helper()
	var se *SealError
	if !errors.As(err, &se) || se.Key != key || !errors.Is(err, walerr.ErrCorruption) {
		t.Fatalf("%s: %v; want a *SealError naming %s", what, err, key)
	}
	for _, k := range kinds {
		if !errors.Is(err, k) {
			t.Fatalf("%s: %v; want errors.Is %v", what, err, k)
		}
	}
}

// problemOf returns the problem Catalog reports for key.
func problemOf(t *testing.T, l *Lineage, key string) error {
	t.Helper()
	for _, p := range l.Problems {
		if p.Key == key && p.Kind == ProblemCorrupt {
			return p.Err
		}
	}
	t.Fatalf("lineage %s: no corrupt problem for %s in %v", l.ID, key, l.Problems)
	return nil
}

// TestSealedArchiveRefusesForgeries: with a Sealer, everything read must be
// sealed with a configured key and bound to its own key: plain objects and
// manifests, ones sealed with another key, authentic ones moved to another
// lineage or position (even with their clear-text header rewritten to
// match, and a manifest to match), and format 1 (including a forged
// downgrade of the version byte) are refused as damage naming the key;
// without a Sealer, sealed objects are ErrEncrypted, not damage.
func TestSealedArchiveRefusesForgeries(t *testing.T) {
	eachBackend(t, func(t *testing.T, tb testBackend) {
		ctx := testCtx(t)
		a := openArchive(t, tb, Options{Seal: realSealer(t)})
		plain := openArchive(t, tb, Options{})
		other := openArchive(t, tb, Options{Seal: realSealer(t)})
		b := a.Backend()
		t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
		m, err := a.StoreSegment(ctx, must(a.EncodeSegment("main", 0, mkTxns(1, 10, t0))))
		if err != nil {
			t.Fatal(err)
		}
		db := filepath.Join(t.TempDir(), "snap.db")
		os.WriteFile(db, bytes.Repeat([]byte("SQLite format 3\x00"), 100), 0o644)
		if err := a.PutSnapshot(ctx, "main", 5, t0, db); err != nil {
			t.Fatal(err)
		}
		if l := must(a.LineageCatalog(ctx, "main")); len(l.Problems) != 0 || len(l.Segments) != 1 || len(l.Snapshots) != 1 {
			t.Fatalf("authentic lineage: %+v", l)
		}

		// Written without a key, and sealed with another key.
		pm, err := plain.StoreSegment(ctx, must(plain.EncodeSegment("p", 0, mkTxns(1, 10, t0))))
		if err != nil {
			t.Fatal(err)
		}
		wantRefused(t, "plain manifest", problemOf(t, must(a.LineageCatalog(ctx, "p")), ManifestKey(pm.Key)), ManifestKey(pm.Key), ErrUnsealed)
		_, err = a.ReadSegment(ctx, pm)
		wantRefused(t, "plain object", err, pm.Key, ErrUnsealed)
		om, err := other.StoreSegment(ctx, must(other.EncodeSegment("o", 0, mkTxns(1, 10, t0))))
		if err != nil {
			t.Fatal(err)
		}
		err = problemOf(t, must(a.LineageCatalog(ctx, "o")), ManifestKey(om.Key))
		wantRefused(t, "manifest of another key", err, ManifestKey(om.Key), ErrUnauthentic, seal.ErrUnknownKey)
		if !strings.Contains(err.Error(), "sealed with key id "+other.opts.Seal.KeyID()+", not among the configured keys") {
			t.Fatalf("manifest of another key: %v", err)
		}
		_, err = a.ReadSegment(ctx, om)
		wantRefused(t, "object of another key", err, om.Key, ErrUnauthentic, seal.ErrUnknownKey)

		// Authentic, moved: the snapshot of LSN 5 copied to LSN 6, the
		// segment into lineage "maim".
		sk, sk6 := SnapshotKey("main", 5), SnapshotKey("main", 6)
		for _, k := range [][2]string{{sk, sk6}, {ManifestKey(sk), ManifestKey(sk6)}, {m.Key, SegmentKey("maim", 1, m.LastLSN)}, {ManifestKey(m.Key), ManifestKey(SegmentKey("maim", 1, m.LastLSN))}} {
			if err := b.Put(ctx, k[1], must(b.Get(ctx, k[0]))); err != nil {
				t.Fatal(err)
			}
		}
		wantRefused(t, "moved snapshot manifest", problemOf(t, must(a.LineageCatalog(ctx, "main")), ManifestKey(sk6)), ManifestKey(sk6), ErrUnauthentic, seal.ErrTampered)
		moved := ManifestKey(SegmentKey("maim", 1, m.LastLSN))
		wantRefused(t, "moved segment manifest", problemOf(t, must(a.LineageCatalog(ctx, "maim")), moved), moved, ErrUnauthentic, seal.ErrTampered)

		// The same moves with the clear-text header rewritten and a
		// manifest to match (what a forged manifest would say): the
		// object itself is bound to its key and header.
		obj := must(b.Get(ctx, m.Key))
		i := bytes.Index(obj, []byte("main"))
		moving := bytes.Clone(obj)
		copy(moving[i:], "maim")
		mm := m
		mm.Lineage, mm.Key, mm.Checksum = "maim", SegmentKey("maim", 1, m.LastLSN), checksum(moving)
		if err := b.Put(ctx, mm.Key, moving); err != nil {
			t.Fatal(err)
		}
		_, err = a.ReadSegment(ctx, mm)
		wantRefused(t, "moved segment object", err, mm.Key, ErrUnauthentic, seal.ErrTampered)
		snaps := must(a.LineageCatalog(ctx, "main")).Snapshots
		if len(snaps) != 1 || snaps[0].LSN != 5 {
			t.Fatalf("snapshots = %+v", snaps)
		}
		sobj := must(b.Get(ctx, sk))
		h, body, err := parseObjectHeader(sk, snapshotMagic, sobj)
		if err != nil {
			t.Fatal(err)
		}
		h.a = 6
		sobj6 := append(h.append(nil), body...)
		s6 := snaps[0]
		s6.LSN, s6.Key, s6.Checksum = 6, sk6, checksum(sobj6)
		if err := b.Put(ctx, sk6, sobj6); err != nil {
			t.Fatal(err)
		}
		err = a.GetSnapshot(ctx, s6, filepath.Join(t.TempDir(), "r.db"))
		wantRefused(t, "moved snapshot object", err, sk6, ErrUnauthentic, seal.ErrTampered)

		// Format 1: a plain manifest naming a key id (an encrypted archive
		// of an earlier walship), and a sealed object whose version byte
		// was set to 1 (a forged downgrade).
		old := m
		old.Lineage, old.Key = "old", SegmentKey("old", 1, m.LastLSN)
		if err := b.Put(ctx, ManifestKey(old.Key), must(encodeManifest(&old))); err != nil {
			t.Fatal(err)
		}
		wantRefused(t, "format 1 manifest", problemOf(t, must(a.LineageCatalog(ctx, "old")), ManifestKey(old.Key)), ManifestKey(old.Key), ErrOldFormat)
		down := bytes.Clone(obj)
		down[4] = formatVersion
		_, err = a.DecodeSegment(m, down)
		wantRefused(t, "downgraded object", err, m.Key, ErrOldFormat)

		// Without a key: the archive is encrypted, which is not damage.
		var ee *EncryptedError
		if _, err := plain.LineageCatalog(ctx, "main"); !errors.As(err, &ee) || ee.KeyID != a.opts.Seal.KeyID() || errors.Is(err, walerr.ErrCorruption) {
			t.Fatalf("catalog without a key: %v", err)
		}
		if _, err := plain.ReadSegment(ctx, m); !errors.As(err, &ee) || ee.Key != m.Key {
			t.Fatalf("read without a key: %v", err)
		}
		// And the authentic objects still read.
		if _, err := a.ReadSegment(ctx, m); err != nil {
			t.Fatal(err)
		}
		if err := a.GetSnapshot(ctx, snaps[0], filepath.Join(t.TempDir(), "r.db")); err != nil {
			t.Fatal(err)
		}
	})
}

// TestKeyChange: after the writer's key changes, the newest segment sealed
// with the old key still gives its range (by its name, with the refusal),
// while a reader with the new key refuses the old key's manifests as
// "not among the configured keys".
func TestKeyChange(t *testing.T) {
	ctx := testCtx(t)
	dir := t.TempDir()
	oldKey := must(Open(ctx, "file://"+dir, Options{Seal: realSealer(t)}))
	m, err := oldKey.StoreSegment(ctx, must(oldKey.EncodeSegment("main", 0, mkTxns(1, 10, time.Now()))))
	if err != nil {
		t.Fatal(err)
	}
	newKey := must(Open(ctx, "file://"+dir, Options{Seal: realSealer(t)}))
	// The range comes from the name alone, with the refusal: the caller
	// (the archiver, by its checkpoint) decides whether to trust it.
	last, ok, err := newKey.LastSegment(ctx, "main")
	if !ok || last.FirstLSN != m.FirstLSN || last.LastLSN != m.LastLSN || last.Key != m.Key {
		t.Fatalf("LastSegment after a key change: %+v %v %v, want LSNs %d..%d", last, ok, err, m.FirstLSN, m.LastLSN)
	}
	wantRefused(t, "old key's newest manifest", err, ManifestKey(m.Key), ErrUnauthentic, seal.ErrUnknownKey)
	n, err := newKey.StoreSegment(ctx, must(newKey.EncodeSegment("main", m.LastLSN+1, mkTxns(m.LastLSN+1, 5, time.Now()))))
	if err != nil {
		t.Fatal(err)
	}
	l := must(newKey.LineageCatalog(ctx, "main"))
	if len(l.Segments) != 1 || l.Segments[0].Key != n.Key {
		t.Fatalf("new key's catalog: %+v", l)
	}
	wantRefused(t, "old key's manifest", problemOf(t, l, ManifestKey(m.Key)), ManifestKey(m.Key), ErrUnauthentic, seal.ErrUnknownKey)
}
