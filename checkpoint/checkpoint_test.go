package checkpoint

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/walship/walship/vfs"
	"github.com/walship/walship/walerr"
)

const dir = "/wal/ckpt"

var modes = []vfs.CrashMode{vfs.DropUnsynced, vfs.KeepRandomPrefix, vfs.KeepRandomSectors}

func mustOpen(t *testing.T, fsys vfs.FS, dir string) *Store {
	t.Helper()
	s, err := Open(t.Context(), fsys, dir, Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func mustSet(t *testing.T, s *Store, name string, pos uint64, payload []byte) {
	t.Helper()
	if err := s.Set(t.Context(), name, pos, payload); err != nil {
		t.Fatalf("Set(%s, %d): %v", name, pos, err)
	}
}

func TestRoundTrip(t *testing.T) {
	backends := []struct {
		name string
		fs   vfs.FS
		dir  string
	}{
		{"os", vfs.Default, t.TempDir() + "/ckpt"},
		{"crashfs", vfs.NewCrashFS(), dir},
	}
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			now := time.Date(2025, 3, 1, 12, 0, 0, 123456789, time.UTC)
			s, err := Open(t.Context(), b.fs, b.dir, Options{Now: func() time.Time { return now }})
			if err != nil {
				t.Fatal(err)
			}
			mustSet(t, s, "kafka", 42, []byte(`{"walship.t":{"0":17}}`))
			mustSet(t, s, "archive", 7, nil)
			mustSet(t, s, "pg.source", 9, []byte("0/16B3748"))
			mustSet(t, s, "archive", 8, []byte{}) // forward
			mustSet(t, s, "kafka", 42, []byte("same pos, new payload"))
			big := bytes.Repeat([]byte{0xAB}, MaxPayload)
			mustSet(t, s, "big_payload-1", 1, big)
			want := s.All()

			s2 := mustOpen(t, b.fs, b.dir)
			got := s2.All()
			if !slices.EqualFunc(got, want, equalCheckpoint) {
				t.Fatalf("after reopen:\n got %v\nwant %v", summary(got), summary(want))
			}
			wantNames := []string{"archive", "big_payload-1", "kafka", "pg.source"}
			for i, c := range got {
				if c.Name != wantNames[i] {
					t.Errorf("All()[%d].Name = %q, want %q", i, c.Name, wantNames[i])
				}
				if !c.Updated.Equal(now) {
					t.Errorf("%s: Updated = %v, want %v", c.Name, c.Updated, now)
				}
			}
			c, ok := s2.Get("archive")
			if !ok || c.Pos != 8 || c.Payload != nil {
				t.Errorf("Get(archive) = %+v, %t; want pos 8, nil payload", c, ok)
			}
			if _, ok := s2.Get("nope"); ok {
				t.Error("Get(nope) found a checkpoint")
			}
			// Returned payloads belong to the caller.
			c, _ = s2.Get("kafka")
			c.Payload[0] = 'X'
			if c2, _ := s2.Get("kafka"); c2.Payload[0] == 'X' {
				t.Error("Get returned the Store's own payload")
			}
			// Forward-only holds across reopen.
			if err := s2.Set(t.Context(), "kafka", 41, nil); !errors.Is(err, ErrBackward) {
				t.Errorf("Set backward after reopen: got %v, want ErrBackward", err)
			}
		})
	}
}

func equalCheckpoint(a, b Checkpoint) bool {
	return a.Name == b.Name && a.Pos == b.Pos && bytes.Equal(a.Payload, b.Payload) && a.Updated.Equal(b.Updated)
}

func summary(cs []Checkpoint) string {
	var sb strings.Builder
	for _, c := range cs {
		fmt.Fprintf(&sb, "%s@%d(%dB) ", c.Name, c.Pos, len(c.Payload))
	}
	return sb.String()
}

func TestBackward(t *testing.T) {
	s := mustOpen(t, vfs.NewCrashFS(), dir)
	ctx := t.Context()
	mustSet(t, s, "kafka", 10, []byte("ten"))
	err := s.Set(ctx, "kafka", 9, nil)
	if !errors.Is(err, ErrBackward) {
		t.Fatalf("Set 10 -> 9: got %v, want ErrBackward", err)
	}
	if !strings.Contains(err.Error(), "kafka") {
		t.Errorf("error %q does not name the checkpoint", err)
	}
	if c, _ := s.Get("kafka"); c.Pos != 10 || string(c.Payload) != "ten" {
		t.Errorf("after refused Set: %+v, want pos 10", c)
	}
	if err := s.SetBackward(ctx, "kafka", 3, nil); err != nil {
		t.Fatal(err)
	}
	if c, _ := s.Get("kafka"); c.Pos != 3 {
		t.Errorf("after SetBackward: pos %d, want 3", c.Pos)
	}
	if err := s.Reset(ctx, "kafka"); err != nil {
		t.Fatal(err)
	}
	if c, ok := s.Get("kafka"); !ok || c.Pos != 0 || c.Payload != nil {
		t.Errorf("after Reset: %+v, %t; want pos 0", c, ok)
	}
	if pos, name, ok := s.Min(); !ok || pos != 0 || name != "kafka" {
		t.Errorf("Min after Reset = %d, %q, %t; want 0, kafka", pos, name, ok)
	}
}

func TestNameValidation(t *testing.T) {
	s := mustOpen(t, vfs.NewCrashFS(), dir)
	ctx := t.Context()
	tests := []struct {
		name string
		ok   bool
	}{
		{"kafka", true},
		{"a", true},
		{"s3.archive_main-2", true},
		{"..", true},
		{strings.Repeat("x", 64), true},
		{"", false},
		{strings.Repeat("x", 65), false},
		{"Kafka", false},
		{"a/b", false},
		{"../etc", false},
		{"a b", false},
		{"é", false},
		{"a\x00", false},
	}
	for _, tt := range tests {
		errs := map[string]error{
			"Set":        s.Set(ctx, tt.name, 1, nil),
			"Register":   s.Register(tt.name),
			"Unregister": s.Unregister(ctx, tt.name),
		}
		for op, err := range errs {
			if tt.ok {
				if err != nil {
					t.Errorf("%s(%q): %v", op, tt.name, err)
				}
				continue
			}
			if !errors.Is(err, ErrInvalidName) {
				t.Errorf("%s(%q): got %v, want ErrInvalidName", op, tt.name, err)
			} else if !strings.Contains(err.Error(), fmt.Sprintf("%q", tt.name)) {
				t.Errorf("%s(%q): error %q does not quote the name", op, tt.name, err)
			}
		}
	}
}

func TestPayloadTooLarge(t *testing.T) {
	s := mustOpen(t, vfs.NewCrashFS(), dir)
	err := s.Set(t.Context(), "kafka", 1, make([]byte, MaxPayload+1))
	if !errors.Is(err, ErrPayloadTooLarge) {
		t.Fatalf("got %v, want ErrPayloadTooLarge", err)
	}
	if _, ok := s.Get("kafka"); ok {
		t.Error("refused Set left a checkpoint")
	}
}

func TestMin(t *testing.T) {
	type set struct {
		name string
		pos  uint64
	}
	tests := []struct {
		name       string
		register   []string
		sets       []set
		unregister []string
		wantPos    uint64
		wantName   string
		wantOK     bool
	}{
		{name: "empty"},
		{name: "registered but unset counts as 0", register: []string{"archive", "kafka"}, sets: []set{{"kafka", 50}}, wantPos: 0, wantName: "archive", wantOK: true},
		{name: "lowest set", register: []string{"archive", "kafka"}, sets: []set{{"kafka", 50}, {"archive", 20}}, wantPos: 20, wantName: "archive", wantOK: true},
		{name: "set registers", sets: []set{{"kafka", 50}, {"archive", 70}}, wantPos: 50, wantName: "kafka", wantOK: true},
		{name: "tie goes to first name", sets: []set{{"kafka", 5}, {"archive", 5}}, wantPos: 5, wantName: "archive", wantOK: true},
		{name: "unregister releases", register: []string{"slow"}, sets: []set{{"kafka", 50}}, unregister: []string{"slow"}, wantPos: 50, wantName: "kafka", wantOK: true},
		{name: "unregister all", sets: []set{{"kafka", 50}}, unregister: []string{"kafka"}},
		{name: "unregister unknown", sets: []set{{"kafka", 50}}, unregister: []string{"nope"}, wantPos: 50, wantName: "kafka", wantOK: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := mustOpen(t, vfs.NewCrashFS(), dir)
			for _, n := range tt.register {
				if err := s.Register(n); err != nil {
					t.Fatal(err)
				}
			}
			for _, st := range tt.sets {
				mustSet(t, s, st.name, st.pos, nil)
			}
			for _, n := range tt.unregister {
				if err := s.Unregister(t.Context(), n); err != nil {
					t.Fatal(err)
				}
			}
			pos, name, ok := s.Min()
			if pos != tt.wantPos || name != tt.wantName || ok != tt.wantOK {
				t.Errorf("Min() = %d, %q, %t; want %d, %q, %t", pos, name, ok, tt.wantPos, tt.wantName, tt.wantOK)
			}
		})
	}
}

func TestReopenRegistersSetNames(t *testing.T) {
	cfs := vfs.NewCrashFS()
	s := mustOpen(t, cfs, dir)
	if err := s.Register("unset"); err != nil {
		t.Fatal(err)
	}
	mustSet(t, s, "kafka", 30, nil)
	mustSet(t, s, "archive", 20, nil)
	mustSet(t, s, "gone", 10, nil)
	if err := s.Unregister(t.Context(), "gone"); err != nil {
		t.Fatal(err)
	}
	cfs.Crash(nil, vfs.DropUnsynced)
	s2 := mustOpen(t, cfs, dir)
	if pos, name, ok := s2.Min(); pos != 20 || name != "archive" || !ok {
		t.Errorf("Min after reopen = %d, %q, %t; want 20, archive (unset registration is not durable, unregistered name stays gone)", pos, name, ok)
	}
	if _, ok := s2.Get("gone"); ok {
		t.Error("unregistered checkpoint came back after a crash")
	}
}

// record builds a valid file content for c, then lets patch change the
// bytes before the checksum is computed.
func record(c Checkpoint, patch func(b []byte) []byte) []byte {
	b := encode(c)
	b = b[:len(b)-4]
	if patch != nil {
		b = patch(b)
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

func TestCorrupt(t *testing.T) {
	good := Checkpoint{Name: "kafka", Pos: 99, Payload: []byte("payload"), Updated: time.Unix(1, 0)}
	goodBytes := encode(good)
	n := len(goodBytes)
	flip := func(off int) func([]byte) []byte {
		return func(b []byte) []byte { b[off] ^= 0x10; return b }
	}
	tests := []struct {
		name   string
		mutate func([]byte) []byte
		reason string // substring of CorruptionError.Reason
	}{
		{"flip magic", flip(0), "magic"},
		{"flip version", flip(4), "checksum"},
		{"flip name length", flip(6), "checksum"},
		{"flip payload length", flip(8), "checksum"},
		{"flip position", flip(12), "checksum"},
		{"flip time", flip(20), "checksum"},
		{"flip name", flip(28), "checksum"},
		{"flip payload", flip(28 + 5), "checksum"},
		{"flip checksum", flip(n - 1), "checksum"},
		{"empty", func([]byte) []byte { return nil }, "shorter"},
		{"truncated", func(b []byte) []byte { return b[:n-1] }, "checksum"},
		{"header only", func(b []byte) []byte { return b[:20] }, "shorter"},
		{"trailing byte", func(b []byte) []byte { return append(b, 0) }, "checksum"},
		{"zeroed start", func(b []byte) []byte { clear(b[:16]); return b }, "magic"},
		{"too large", func([]byte) []byte { return make([]byte, maxFileLen+1) }, "more than the largest"},
		{"other name", func([]byte) []byte {
			return encode(Checkpoint{Name: "archive", Pos: 1})
		}, `"archive"`},
		{"future version", func([]byte) []byte {
			return record(good, func(b []byte) []byte { b[4] = 2; return b })
		}, "version 2"},
		{"payload length past end", func([]byte) []byte {
			return record(good, func(b []byte) []byte { binary.LittleEndian.PutUint32(b[8:], 100); return b })
		}, "record says"},
		{"payload length over max", func([]byte) []byte {
			return record(good, func(b []byte) []byte { binary.LittleEndian.PutUint32(b[8:], MaxPayload+1); return b })
		}, "payload length"},
		{"zero name length", func([]byte) []byte {
			return record(good, func(b []byte) []byte { binary.LittleEndian.PutUint16(b[6:], 0); return b })
		}, "name length 0"},
		{"invalid name in record", func([]byte) []byte {
			return record(good, func(b []byte) []byte { b[28] = 'K'; return b })
		}, "not a valid name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfs := vfs.NewCrashFS()
			s := mustOpen(t, cfs, dir)
			mustSet(t, s, "archive", 5, nil)
			mustSet(t, s, "kafka", 99, []byte("payload"))
			path := vfs.Join(dir, "kafka.ckpt")
			b, err := cfs.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := cfs.WriteFile(path, tt.mutate(b), true); err != nil {
				t.Fatal(err)
			}
			_, err = Open(t.Context(), cfs, dir, Options{})
			var ce *walerr.CorruptionError
			if !errors.As(err, &ce) {
				t.Fatalf("Open: got %v, want *walerr.CorruptionError", err)
			}
			if !errors.Is(err, walerr.ErrCorruption) {
				t.Errorf("errors.Is(%v, walerr.ErrCorruption) = false", err)
			}
			if ce.Object != path {
				t.Errorf("CorruptionError.Object = %q, want %q", ce.Object, path)
			}
			if !strings.Contains(ce.Reason, tt.reason) {
				t.Errorf("CorruptionError.Reason = %q, want it to mention %q", ce.Reason, tt.reason)
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the file", err)
			}
		})
	}
}

func TestCorruptSeveral(t *testing.T) {
	cfs := vfs.NewCrashFS()
	s := mustOpen(t, cfs, dir)
	for _, name := range []string{"a", "b", "c"} {
		mustSet(t, s, name, 1, nil)
	}
	for _, name := range []string{"a", "c"} {
		if err := cfs.WriteFile(vfs.Join(dir, name+".ckpt"), []byte("junk"), true); err != nil {
			t.Fatal(err)
		}
	}
	_, err := Open(t.Context(), cfs, dir, Options{})
	for _, name := range []string{"a.ckpt", "c.ckpt"} {
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("Open error %v does not name %s", err, name)
		}
	}
}

func TestOpenHousekeeping(t *testing.T) {
	cfs := vfs.NewCrashFS()
	s := mustOpen(t, cfs, dir) // creates dir
	mustSet(t, s, "kafka", 1, nil)
	for name, data := range map[string][]byte{
		"kafka.ckpt.tmp":   []byte("torn"),
		"archive.ckpt.tmp": nil,
		"README":           []byte("not ours"),
		"Upper.ckpt":       []byte("invalid name"),
	} {
		if err := cfs.WriteFile(vfs.Join(dir, name), data, true); err != nil {
			t.Fatal(err)
		}
	}
	s2 := mustOpen(t, cfs, dir)
	if got := summary(s2.All()); got != "kafka@1(0B) " {
		t.Errorf("All() = %s, want only kafka@1", got)
	}
	cfs.Crash(nil, vfs.DropUnsynced) // the removals must be durable
	names, err := cfs.List(dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"README", "Upper.ckpt", "kafka.ckpt"}; !slices.Equal(names, want) {
		t.Errorf("files after Open and crash: %q, want %q", names, want)
	}
}

func TestSyncFailure(t *testing.T) {
	ctx := t.Context()
	errDisk := errors.New("EIO")
	cfs := vfs.NewCrashFS()
	s := mustOpen(t, cfs, dir)
	mustSet(t, s, "kafka", 10, []byte("a"))

	cfs.InjectSyncError("kafka", errDisk)
	if err := s.Set(ctx, "kafka", 20, []byte("b")); !errors.Is(err, errDisk) {
		t.Fatalf("Set with failing fsync: got %v, want %v", err, errDisk)
	}
	if c, _ := s.Get("kafka"); c.Pos != 10 || string(c.Payload) != "a" {
		t.Errorf("after failed fsync Get = %+v, want pos 10", c)
	}
	mustSet(t, s, "archive", 5, nil) // other names unaffected
	if pos, name, _ := s.Min(); pos != 5 || name != "archive" {
		t.Errorf("Min = %d, %s; want 5, archive", pos, name)
	}
	cfs.ClearInjectedErrors()

	cfs.InjectSyncDirError(dir, errDisk)
	if err := s.Set(ctx, "kafka", 30, []byte("c")); !errors.Is(err, errDisk) {
		t.Fatalf("Set with failing directory fsync: got %v, want %v", err, errDisk)
	}
	if c, _ := s.Get("kafka"); c.Pos != 10 {
		t.Errorf("after failed directory fsync Get = %+v, want pos 10", c)
	}
	if err := s.Unregister(ctx, "archive"); !errors.Is(err, errDisk) {
		t.Fatalf("Unregister with failing directory fsync: got %v, want %v", err, errDisk)
	}
	if pos, name, _ := s.Min(); pos != 5 || name != "archive" {
		t.Errorf("after failed Unregister Min = %d, %s; want 5, archive", pos, name)
	}

	cfs.Crash(nil, vfs.DropUnsynced)
	cfs.ClearInjectedErrors()
	s2 := mustOpen(t, cfs, dir)
	if c, _ := s2.Get("kafka"); c.Pos != 10 || string(c.Payload) != "a" {
		t.Errorf("after crash Get = %+v, want pos 10 payload a", c)
	}
	if _, ok := s2.Get("archive"); !ok {
		t.Error("archive lost though its Unregister failed")
	}
	mustSet(t, s2, "kafka", 30, []byte("c"))
	if err := s2.Unregister(ctx, "archive"); err != nil {
		t.Fatal(err)
	}
}

func TestContextCanceled(t *testing.T) {
	s := mustOpen(t, vfs.NewCrashFS(), dir)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := s.Set(ctx, "kafka", 1, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Set: got %v, want context.Canceled", err)
	}
	if _, ok := s.Get("kafka"); ok {
		t.Error("canceled Set stored a checkpoint")
	}

	// A Set waiting for the name's lock gives up when ctx is done.
	unlock, err := s.lockName(t.Context(), "kafka")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel = context.WithTimeout(t.Context(), 10*time.Millisecond)
	defer cancel()
	if err := s.Set(ctx, "kafka", 1, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Set waiting on a busy name: got %v, want context.DeadlineExceeded", err)
	}
	unlock()
	mustSet(t, s, "kafka", 1, nil)
}

func randomPayload(rng *rand.Rand) []byte {
	if rng.IntN(4) == 0 {
		return nil
	}
	b := make([]byte, rng.IntN(3000))
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// checkAfterCrash checks that each name reads back its last acknowledged
// checkpoint, or else the one whose write failed.
func checkAfterCrash(t *testing.T, s *Store, names []string, acked, failed map[string]Checkpoint) {
	t.Helper()
	same := func(a, b Checkpoint) bool { return a.Pos == b.Pos && bytes.Equal(a.Payload, b.Payload) }
	for _, name := range names {
		got, ok := s.Get(name)
		want, wantOK := acked[name]
		f, fOK := failed[name]
		switch {
		case ok && wantOK && same(got, want):
		case ok && fOK && same(got, f):
		case !ok && !wantOK:
		default:
			t.Errorf("%s: got pos %d (found %t), want acknowledged pos %d (found %t) or failed write's pos %d (%t)",
				name, got.Pos, ok, want.Pos, wantOK, f.Pos, fOK)
		}
	}
}

// TestCrashSequential crashes at a random fsync in a run of Sets and checks
// that every acknowledged Set survives and nothing is corrupt, then writes
// again.
func TestCrashSequential(t *testing.T) {
	ctx := t.Context()
	names := []string{"archive", "kafka", "pg.source"}
	for _, mode := range modes {
		for seed := range uint64(60) {
			rng := rand.New(rand.NewPCG(seed, uint64(mode)))
			cfs := vfs.NewCrashFS()
			s := mustOpen(t, cfs, dir)
			acked, failed := map[string]Checkpoint{}, map[string]Checkpoint{}
			crashAt, syncs, crashed := rng.IntN(80), 0, false
			cfs.SetSyncHook(func(string) {
				if syncs == crashAt {
					cfs.Crash(rng, mode)
					crashed = true
				}
				syncs++
			})
			for i := 0; i < 40 && !crashed; i++ {
				name := names[rng.IntN(len(names))]
				c := Checkpoint{Name: name, Pos: acked[name].Pos + uint64(rng.IntN(3)), Payload: randomPayload(rng)}
				err := s.Set(ctx, name, c.Pos, c.Payload)
				switch {
				case err == nil:
					acked[name] = c
				case errors.Is(err, vfs.ErrCrashed):
					failed[name] = c
				default:
					t.Fatalf("%v/seed %d: Set: %v", mode, seed, err)
				}
			}
			cfs.SetSyncHook(nil)
			if !crashed {
				cfs.Crash(rng, mode)
			}
			s2, err := Open(ctx, cfs, dir, Options{})
			if err != nil {
				t.Fatalf("%v/seed %d: Open after crash: %v", mode, seed, err)
			}
			checkAfterCrash(t, s2, names, acked, failed)

			// The reopened store keeps working.
			for _, name := range names {
				c, _ := s2.Get(name)
				mustSet(t, s2, name, c.Pos+1, []byte("after"))
			}
			cfs.Crash(rng, mode)
			s3 := mustOpen(t, cfs, dir)
			for _, name := range names {
				c2, _ := s2.Get(name)
				if c3, ok := s3.Get(name); !ok || !equalCheckpoint(c2, c3) {
					t.Errorf("%v/seed %d: %s after second crash: %+v, want %+v", mode, seed, name, c3, c2)
				}
			}
		}
	}
}

// TestCrashConcurrent runs one writer per name and crashes at a random fsync
// of any of them. Writers that outlive the crash go on writing to the
// rebooted filesystem, which is legal: their later acknowledgements must
// hold too.
func TestCrashConcurrent(t *testing.T) {
	ctx := t.Context()
	names := []string{"archive", "kafka", "pg.source", "s3"}
	for _, mode := range modes {
		for seed := range uint64(20) {
			rng := rand.New(rand.NewPCG(seed, 100+uint64(mode)))
			cfs := vfs.NewCrashFS()
			s := mustOpen(t, cfs, dir)
			crashAt := int64(rng.IntN(200))
			var syncs atomic.Int64
			var once sync.Once
			var crashed atomic.Bool
			cfs.SetSyncHook(func(string) {
				if syncs.Add(1)-1 == crashAt {
					once.Do(func() { crashed.Store(true); cfs.Crash(rng, mode) })
				}
			})
			ackedPer := make([]*Checkpoint, len(names))
			failedPer := make([]*Checkpoint, len(names))
			var wg sync.WaitGroup
			for i, name := range names {
				wg.Go(func() {
					for j := uint64(1); j <= 30; j++ {
						c := Checkpoint{Name: name, Pos: j, Payload: []byte(fmt.Sprintf("%s-%d", name, j))}
						err := s.Set(ctx, name, c.Pos, c.Payload)
						// A Set that returns after the crash was in flight
						// during it: a real process would have died before
						// its acknowledgement, and CrashFS lets its last
						// steps (rename, directory fsync) run in the
						// rebooted filesystem. It may or may not survive.
						if err != nil || crashed.Load() {
							failedPer[i] = &c
							return
						}
						ackedPer[i] = &c
					}
				})
			}
			wg.Wait()
			cfs.SetSyncHook(nil)
			once.Do(func() { crashed.Store(true); cfs.Crash(rng, mode) })

			acked, failed := map[string]Checkpoint{}, map[string]Checkpoint{}
			for i, name := range names {
				if ackedPer[i] != nil {
					acked[name] = *ackedPer[i]
				}
				if failedPer[i] != nil {
					failed[name] = *failedPer[i]
				}
			}
			s2, err := Open(ctx, cfs, dir, Options{})
			if err != nil {
				t.Fatalf("%v/seed %d: Open after crash: %v", mode, seed, err)
			}
			checkAfterCrash(t, s2, names, acked, failed)
		}
	}
}

// TestConcurrentSameName checks that writes to one name are serialized and
// the final value is the highest acknowledged one.
func TestConcurrentSameName(t *testing.T) {
	cfs := vfs.NewCrashFS()
	s := mustOpen(t, cfs, dir)
	var wg sync.WaitGroup
	var backward atomic.Int64
	for i := range 8 {
		wg.Go(func() {
			for j := range 20 {
				err := s.Set(t.Context(), "kafka", uint64(j*8+i), nil)
				if errors.Is(err, ErrBackward) {
					backward.Add(1)
				} else if err != nil {
					t.Error(err)
				}
				s.Min()
				s.All()
			}
		})
	}
	wg.Wait()
	c, _ := s.Get("kafka")
	cfs.Crash(nil, vfs.DropUnsynced)
	s2 := mustOpen(t, cfs, dir)
	if c2, _ := s2.Get("kafka"); c2.Pos != c.Pos {
		t.Errorf("after crash pos %d, want %d", c2.Pos, c.Pos)
	}
	if c.Pos != 8*20-1 {
		t.Errorf("final pos %d, want %d", c.Pos, 8*20-1)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(encode(Checkpoint{Name: "kafka", Pos: 42, Payload: []byte("x")}))
	f.Add(encode(Checkpoint{Name: "a", Updated: time.Unix(-1, 5)}))
	f.Add([]byte("WCKP"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := decode(b)
		if err != nil {
			return
		}
		if got := encode(c); !bytes.Equal(got, b) {
			t.Fatalf("re-encoding a decoded record differs:\n got %x\nwant %x", got, b)
		}
	})
}
