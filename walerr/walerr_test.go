package walerr_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/walship/walship/archive"
	"github.com/walship/walship/change"
	"github.com/walship/walship/checkpoint"
	"github.com/walship/walship/segment"
	"github.com/walship/walship/vfs"
	"github.com/walship/walship/wal"
	"github.com/walship/walship/walerr"
)

// wantCorruption checks that err is a corruption and, when component is
// not "", that it is a *CorruptionError of component naming object.
func wantCorruption(t *testing.T, what string, err error, component, object string) {
	t.Helper()
	if !errors.Is(err, walerr.ErrCorruption) {
		t.Fatalf("%s: %v (%T) is not walerr.ErrCorruption", what, err, err)
	}
	if component == "" {
		return
	}
	var ce *walerr.CorruptionError
	if !errors.As(err, &ce) {
		t.Fatalf("%s: %v (%T) is not a *walerr.CorruptionError", what, err, err)
	}
	if ce.Component != component || ce.Object != object {
		t.Fatalf("%s: CorruptionError names %s %q, want %s %q", what, ce.Component, ce.Object, component, object)
	}
	if !strings.Contains(err.Error(), object) {
		t.Fatalf("%s: message %q does not name %q", what, err, object)
	}
}

// TestEveryCorruptionIsErrCorruption damages a segment, a checkpoint, an
// archive object and a change record, and checks that each package reports
// it with the one marker.
func TestEveryCorruptionIsErrCorruption(t *testing.T) {
	ctx := context.Background()

	t.Run("segment", func(t *testing.T) {
		dir := t.TempDir()
		w, _, err := wal.Open(wal.Options{Dir: dir, SegmentSize: 8 << 10})
		if err != nil {
			t.Fatal(err)
		}
		for xid := uint64(1); xid <= 40; xid++ {
			txn := change.Txn{Header: change.TxHeader{XID: xid}, Changes: []change.Change{{
				Table: change.Table{Schema: "public", Name: "t"}, Op: change.Insert,
				Key:   change.Row{{Name: "id", Value: change.IntValue(int64(xid))}},
				After: change.Row{{Name: "id", Value: change.IntValue(int64(xid))}, {Name: "v", Value: change.TextValue(fmt.Sprintf("%0500d", xid))}},
			}}}
			if _, err := w.Append(ctx, &txn); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
		slices.Sort(segs)
		if len(segs) < 2 {
			t.Fatalf("%d segments, want at least 2", len(segs))
		}
		// The middle of the oldest segment: a damaged frame, never a torn
		// tail.
		flipByte(t, segs[0], -1)
		_, err = segment.Verify(nil, dir)
		wantCorruption(t, "segment.Verify", err, "segment", filepath.Base(segs[0]))
	})

	t.Run("checkpoint", func(t *testing.T) {
		dir := t.TempDir()
		s, err := checkpoint.Open(ctx, vfs.Default, dir, checkpoint.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Set(ctx, "sink", 7, []byte("payload")); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "sink.ckpt")
		flipByte(t, path, -1)
		_, err = checkpoint.Open(ctx, vfs.Default, dir, checkpoint.Options{})
		wantCorruption(t, "checkpoint.Open", err, "checkpoint", path)
	})

	t.Run("archive", func(t *testing.T) {
		a, err := archive.Open(ctx, "file://"+t.TempDir(), archive.Options{})
		if err != nil {
			t.Fatal(err)
		}
		src := filepath.Join(t.TempDir(), "replica.db")
		if err := os.WriteFile(src, []byte(strings.Repeat("snapshot bytes ", 1000)), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := a.PutSnapshot(ctx, "main", 42, time.Unix(1, 0), src); err != nil {
			t.Fatal(err)
		}
		c, err := a.Catalog(ctx)
		if err != nil {
			t.Fatal(err)
		}
		snap := c.Lineage("main").Snapshots[0]
		obj, err := a.Backend().Get(ctx, snap.Key)
		if err != nil {
			t.Fatal(err)
		}
		obj[len(obj)/2] ^= 1
		if err := a.Backend().Put(ctx, snap.Key, obj); err != nil {
			t.Fatal(err)
		}
		err = a.GetSnapshot(ctx, snap, filepath.Join(t.TempDir(), "x.db"))
		wantCorruption(t, "archive.GetSnapshot", err, "archive", snap.Key)
	})

	t.Run("change", func(t *testing.T) {
		_, _, err := change.DecodeRecord([]byte{1, 0, 't', 5, 'a'})
		wantCorruption(t, "change.DecodeRecord", err, "", "")
		var de *change.DecodeError
		if !errors.As(err, &de) {
			t.Fatalf("change.DecodeRecord: %v (%T) is not a *change.DecodeError", err, err)
		}
		// A newer format is not corruption.
		_, _, err = change.DecodeRecord([]byte{200})
		if !errors.Is(err, change.ErrUnsupportedVersion) || errors.Is(err, walerr.ErrCorruption) {
			t.Fatalf("change.DecodeRecord of a newer version: %v, want ErrUnsupportedVersion only", err)
		}
	})
}

// flipByte inverts one bit of the byte at off in the file at path; off < 0
// means the middle.
func flipByte(t *testing.T, path string, off int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if off < 0 {
		off = len(b) / 2
	}
	b[off] ^= 1
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestKind(t *testing.T) {
	malformed := walerr.Kind("x: malformed")
	err := fmt.Errorf("%w: lsn 5", malformed)
	if !errors.Is(err, malformed) || !errors.Is(err, walerr.ErrCorruption) || err.Error() != "x: malformed: lsn 5" {
		t.Fatalf("%v: want both the kind and ErrCorruption", err)
	}
	if other := fmt.Errorf("x: %w", walerr.ErrCorruption); errors.Is(other, malformed) {
		t.Fatal("ErrCorruption is not every kind")
	}
}

func TestCorruptionErrorMessage(t *testing.T) {
	for _, tc := range []struct {
		e    walerr.CorruptionError
		want string
	}{
		{walerr.CorruptionError{Component: "segment", Object: "01.seg", Offset: 0, Reason: "bad magic"}, "segment: corrupt 01.seg offset 0: bad magic"},
		{walerr.CorruptionError{Component: "archive", Object: "main/x", Offset: -1, Reason: "checksum"}, "archive: corrupt main/x: checksum"},
		{walerr.CorruptionError{Component: "wal", Object: "log", Offset: -1, LSN: 9, Reason: "r"}, "wal: corrupt log at LSN 9: r"},
	} {
		if got := tc.e.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
	}
}
