package archive

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/walship/walship/change"
	"github.com/walship/walship/walerr"
)

// xorSealer is a trivial Sealer: it XORs with a key byte and prepends a
// marker and a digest of the associated data, enough to prove bodies pass
// through it both ways, bound to their identity.
type xorSealer struct {
	id  string
	key byte
}

func (s xorSealer) KeyID() string { return s.id }
func (s xorSealer) Seal(p, ad []byte) ([]byte, error) {
	sum := sha256.Sum256(ad)
	out := append(append([]byte("X"), sum[:8]...), p...)
	for i := 9; i < len(out); i++ {
		out[i] ^= s.key
	}
	return out, nil
}
func (s xorSealer) Open(c, ad []byte) ([]byte, error) {
	sum := sha256.Sum256(ad)
	if len(c) < 9 || c[0] != 'X' || !bytes.Equal(c[1:9], sum[:8]) {
		return nil, errors.New("xorSealer: not sealed, or not for this identity")
	}
	out := bytes.Clone(c[9:])
	for i := range out {
		out[i] ^= s.key
	}
	return out, nil
}

// mkTxns makes n transactions starting at LSN first, with varied values,
// a restore point in the third.
func mkTxns(first uint64, n int, t0 time.Time) []change.Committed {
	var out []change.Committed
	lsn := first
	for i := range n {
		var cs []change.Change
		for j := range 1 + i%3 {
			id := int64(i*10 + j)
			cs = append(cs, change.Change{
				Table: change.Table{Schema: "public", Name: "accounts"}, Op: change.Insert,
				Key:   change.Row{{Name: "id", Value: change.IntValue(id)}},
				After: change.Row{{Name: "id", Value: change.IntValue(id)}, {Name: "v", Value: change.TextValue(strings.Repeat("x", i%7))}, {Name: "b", Value: change.BoolValue(i%2 == 0)}},
				Types: []change.ColumnType{{Name: "id", Type: "bigint"}, {Name: "v", Type: "text"}, {Name: "b", Type: "boolean"}},
			})
		}
		if i == 2 {
			cs = append(cs, change.Change{Op: change.Message, Message: &change.LogicalMessage{Prefix: RestorePointPrefix, Content: []byte("before-migration"), Transactional: true}})
		}
		t := change.Committed{FirstLSN: lsn, CommitLSN: lsn + uint64(len(cs)) - 1, CommitTime: t0.Add(time.Duration(i) * time.Millisecond).UTC()}
		t.Header = change.TxHeader{XID: uint64(1000 + i), SourceLSN: uint64(0x1_0000_0000 + i*100)}
		t.Changes = cs
		out = append(out, t)
		lsn = t.CommitLSN + 1
	}
	return out
}

func txnsEqual(t *testing.T, got, want []change.Committed) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d transactions, want %d", len(got), len(want))
	}
	for i := range got {
		g, w := &got[i], &want[i]
		if g.FirstLSN != w.FirstLSN || g.CommitLSN != w.CommitLSN || !g.CommitTime.Equal(w.CommitTime) || !g.Txn.Equal(&w.Txn) {
			t.Fatalf("transaction %d differs:\n got %+v\nwant %+v", i, *g, *w)
		}
	}
}

func TestSegmentRoundTrip(t *testing.T) {
	eachBackend(t, func(t *testing.T, tb testBackend) {
		for _, o := range []struct {
			name string
			opts Options
		}{
			{"zstd", Options{}},
			{"none", Options{Compression: "none"}},
			{"sealed", Options{Seal: xorSealer{"k1", 0x5a}}},
		} {
			t.Run(o.name, func(t *testing.T) {
				ctx := testCtx(t)
				a := openArchive(t, tb, o.opts)
				t0 := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
				txns := mkTxns(100, 50, t0)
				enc, err := a.EncodeSegment(o.name, 0, txns)
				if err != nil {
					t.Fatal(err)
				}
				m, err := a.StoreSegment(ctx, enc)
				if err != nil {
					t.Fatal(err)
				}
				last := txns[len(txns)-1]
				if m.FirstLSN != 100 || m.LastLSN != last.CommitLSN || m.Txns != 50 ||
					!m.FirstCommitTime.Equal(t0) || !m.LastCommitTime.Equal(last.CommitTime) ||
					m.FirstSourceLSN != 0x1_0000_0000 || m.LastSourceLSN != 0x1_0000_0000+49*100 ||
					m.MinXID != 1000 || m.MaxXID != 1049 || m.Key != SegmentKey(o.name, 100, last.CommitLSN) {
					t.Fatalf("manifest = %+v", m)
				}
				if len(m.RestorePoints) != 1 || m.RestorePoints[0].Name != "before-migration" || m.RestorePoints[0].LSN != txns[2].CommitLSN {
					t.Fatalf("restore points = %+v, want before-migration at %d", m.RestorePoints, txns[2].CommitLSN)
				}
				if o.name == "sealed" && m.KeyID != "k1" {
					t.Fatalf("KeyID = %q", m.KeyID)
				}
				// One lineage: the backend is shared by the cases, and a
				// sealed reader refuses the plain lineages beside it.
				l, err := a.LineageCatalog(ctx, o.name)
				if err != nil {
					t.Fatal(err)
				}
				if len(l.Segments) != 1 || len(l.Problems) != 0 || len(l.Gaps) != 0 {
					t.Fatalf("catalog = %+v", l)
				}
				if got := l.Segments[0]; got.Checksum != m.Checksum || got.Size != m.Size || !got.LastCommitTime.Equal(m.LastCommitTime) {
					t.Fatalf("catalog manifest %+v, stored %+v", got, m)
				}
				got, err := a.ReadSegment(ctx, l.Segments[0])
				if err != nil {
					t.Fatal(err)
				}
				txnsEqual(t, got, txns)

				// Storing the same segment again (a retried upload) is
				// accepted; a different segment under the same key is not.
				if _, err := a.StoreSegment(ctx, enc); err != nil {
					t.Fatalf("re-store of the same segment: %v", err)
				}
				other := mkTxns(100, 50, t0.Add(time.Hour))
				enc2, err := a.EncodeSegment(o.name, 0, other)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := a.StoreSegment(ctx, enc2); !errors.Is(err, ErrExists) {
					t.Fatalf("storing different contents under an existing key: %v, want ErrExists", err)
				}
				if got, err := a.ReadSegment(ctx, l.Segments[0]); err != nil {
					t.Fatal(err)
				} else {
					txnsEqual(t, got, txns)
				}
			})
		}
	})
}

func TestSealedNeedsSealer(t *testing.T) {
	ctx := testCtx(t)
	dir := t.TempDir()
	a, err := Open(ctx, "file://"+dir, Options{Seal: xorSealer{"k1", 1}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := a.StoreSegment(ctx, must(a.EncodeSegment("main", 0, mkTxns(1, 3, time.Now()))))
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := Open(ctx, "file://"+dir, Options{})
	defer plain.Close()
	defer plain.Close() // idempotent
	var ee *EncryptedError
	if _, err := plain.ReadSegment(ctx, m); !errors.As(err, &ee) || ee.KeyID != "k1" || ee.Key != m.Key || errors.Is(err, walerr.ErrCorruption) {
		t.Fatalf("ReadSegment without a Sealer: %v, want an *EncryptedError naming key k1 and %s", err, m.Key)
	}
	if _, err := plain.Catalog(ctx); !errors.Is(err, ErrEncrypted) || !strings.Contains(err.Error(), "key id k1") {
		t.Fatalf("Catalog without a Sealer: %v, want ErrEncrypted naming key id k1", err)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestOrphanAdopted: an object stored without its manifest (a crash
// between the two writes) is adopted by the next StoreSegment of the same
// transactions, even sealed differently.
func TestOrphanAdopted(t *testing.T) {
	eachBackend(t, func(t *testing.T, tb testBackend) {
		ctx := testCtx(t)
		a := openArchive(t, tb, Options{})
		txns := mkTxns(1, 10, time.Now())
		enc := must(a.EncodeSegment("main", 0, txns))
		if err := a.Backend().PutIfAbsent(ctx, enc.Manifest.Key, enc.Object); err != nil {
			t.Fatal(err)
		}
		c := must(a.Catalog(ctx))
		if l := c.Lineage("main"); l == nil || len(l.Problems) != 1 || l.Problems[0].Kind != ProblemOrphan || len(l.Segments) != 0 || !c.Intact() {
			t.Fatalf("catalog with an orphan: %+v", c.Lineages[0])
		}
		b := openArchive(t, tb, Options{Compression: "none"})
		m, err := b.StoreSegment(ctx, must(b.EncodeSegment("main", 0, txns)))
		if err != nil {
			t.Fatal(err)
		}
		if m.Codec != "zstd" || m.Checksum != enc.Manifest.Checksum {
			t.Fatalf("adopted manifest %+v does not describe the stored object", m)
		}
		txnsEqual(t, must(b.ReadSegment(ctx, m)), txns)
	})
}

func TestSnapshotRoundTrip(t *testing.T) {
	eachBackend(t, func(t *testing.T, tb testBackend) {
		ctx := testCtx(t)
		a := openArchive(t, tb, Options{Seal: xorSealer{"k", 3}})
		src := filepath.Join(t.TempDir(), "replica.db")
		data := bytes.Repeat([]byte("SQLite format 3\x00 page "), 50000)
		for i := 0; i < len(data); i += 97 {
			data[i] = byte(rand.Uint32())
		}
		if err := os.WriteFile(src, data, 0o644); err != nil {
			t.Fatal(err)
		}
		ct := time.Date(2026, 5, 6, 7, 8, 9, 10, time.UTC)
		if err := a.PutSnapshot(ctx, "main", 42, ct, src); err != nil {
			t.Fatal(err)
		}
		if err := a.PutSnapshot(ctx, "main", 42, ct, src); !errors.Is(err, ErrExists) {
			t.Fatalf("second snapshot at the same LSN: %v, want ErrExists", err)
		}
		c := must(a.Catalog(ctx))
		l := c.Lineage("main")
		if l == nil || len(l.Snapshots) != 1 || l.Snapshots[0].LSN != 42 || !l.Snapshots[0].CommitTime.Equal(ct) {
			t.Fatalf("catalog snapshots = %+v", l)
		}
		dst := filepath.Join(t.TempDir(), "restored.db")
		if err := a.GetSnapshot(ctx, l.Snapshots[0], dst); err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(dst); !bytes.Equal(got, data) {
			t.Fatalf("restored snapshot differs (%d bytes, want %d)", len(got), len(data))
		}
		// A corrupted snapshot is refused, naming its key, and dst is
		// left alone.
		obj := must(a.Backend().Get(ctx, l.Snapshots[0].Key))
		obj[len(obj)/2] ^= 1
		must(0, a.Backend().Put(ctx, l.Snapshots[0].Key, obj))
		err := a.GetSnapshot(ctx, l.Snapshots[0], filepath.Join(t.TempDir(), "x.db"))
		if !errors.Is(err, walerr.ErrCorruption) || !strings.Contains(err.Error(), l.Snapshots[0].Key) {
			t.Fatalf("GetSnapshot of a corrupted object: %v, want walerr.ErrCorruption naming %s", err, l.Snapshots[0].Key)
		}
	})
}

// TestDamageDetected: a corrupted object fails its checksum with its key
// named; a deleted object is reported missing (not a failed fetch); a
// deleted object and manifest leave a gap found by LSN arithmetic.
func TestDamageDetected(t *testing.T) {
	eachBackend(t, func(t *testing.T, tb testBackend) {
		ctx := testCtx(t)
		a := openArchive(t, tb, Options{})
		var ms []SegmentManifest
		next := uint64(1)
		for range 6 {
			txns := mkTxns(next, 5, time.Now())
			m := must(a.StoreSegment(ctx, must(a.EncodeSegment("main", 0, txns))))
			ms = append(ms, m)
			next = m.LastLSN + 1
		}
		b := a.Backend()
		// 1: corrupt one byte of the object.
		obj := must(b.Get(ctx, ms[1].Key))
		obj[len(obj)-3] ^= 0x40
		must(0, b.Put(ctx, ms[1].Key, obj))
		// 2: delete the object only.
		must(0, b.Delete(ctx, ms[2].Key))
		// 3: delete object and manifest.
		must(0, a.DeleteSegment(ctx, ms[3]))
		// 4: corrupt the manifest.
		mb := must(b.Get(ctx, ManifestKey(ms[4].Key)))
		mb[len(mb)-5] ^= 1
		must(0, b.Put(ctx, ManifestKey(ms[4].Key), mb))

		c := must(a.Catalog(ctx))
		if c.Intact() {
			t.Fatal("damaged archive reported intact")
		}
		l := c.Lineage("main")
		kinds := map[string]ProblemKind{}
		for _, p := range l.Problems {
			kinds[p.Key] = p.Kind
		}
		if kinds[ms[2].Key] != ProblemMissing || kinds[ManifestKey(ms[4].Key)] != ProblemCorrupt || len(kinds) != 2 {
			t.Fatalf("problems = %v", l.Problems)
		}
		want := []Gap{{ms[3].FirstLSN, ms[4].LastLSN}}
		if fmt.Sprint(l.Gaps) != fmt.Sprint(want) {
			t.Fatalf("gaps = %v, want %v", l.Gaps, want)
		}
		if _, err := a.ReadSegment(ctx, ms[1]); !errors.Is(err, walerr.ErrCorruption) || !strings.Contains(err.Error(), ms[1].Key) {
			t.Fatalf("ReadSegment(corrupt) = %v, want walerr.ErrCorruption naming %s", err, ms[1].Key)
		}
		_, err := a.ReadSegment(ctx, ms[2])
		if !errors.Is(err, ErrNotFound) || errors.Is(err, walerr.ErrCorruption) || !strings.Contains(err.Error(), ms[2].Key) {
			t.Fatalf("ReadSegment(deleted) = %v, want ErrNotFound naming %s", err, ms[2].Key)
		}
		if got, err := a.ReadSegment(ctx, ms[0]); err != nil || len(got) != 5 {
			t.Fatalf("ReadSegment(intact) = %d txns, %v", len(got), err)
		}
	})
}
