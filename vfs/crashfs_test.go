package vfs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
)

var allModes = []CrashMode{DropUnsynced, KeepRandomPrefix, KeepRandomSectors}

// mustWrite creates name in c with data, optionally syncing the file and its
// directory.
func mustWrite(t *testing.T, c FS, name string, data []byte, syncFile, syncDir bool) {
	t.Helper()
	f, err := c.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	if syncFile {
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if syncDir {
		if err := c.SyncDir(Join(name, "..")); err != nil {
			t.Fatal(err)
		}
	}
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

// readAll returns the named file's content, or nil and the error.
func readAll(c FS, name string) ([]byte, error) {
	f, err := c.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	size, err := f.Size()
	if err != nil {
		return nil, err
	}
	b := make([]byte, size)
	n, err := f.ReadAt(b, 0)
	if err != nil && !(err == io.EOF && n == len(b)) {
		return nil, err
	}
	return b, nil
}

// TestCrashDeterministic covers outcomes that are the same in every mode.
func TestCrashDeterministic(t *testing.T) {
	synced := pattern(3000, 1)
	tests := []struct {
		name  string
		setup func(t *testing.T, c *CrashFS)
		// want maps file names to their content after the crash; nil
		// content means the file must not exist.
		want map[string][]byte
	}{
		{
			name: "synced file and dir survive",
			setup: func(t *testing.T, c *CrashFS) {
				mustWrite(t, c, "/d/a", synced, true, true)
			},
			want: map[string][]byte{"/d/a": synced},
		},
		{
			name: "synced data, unsynced create vanishes",
			setup: func(t *testing.T, c *CrashFS) {
				mustWrite(t, c, "/d/a", synced, true, false)
			},
			want: map[string][]byte{"/d/a": nil},
		},
		{
			name: "rename reverts without SyncDir",
			setup: func(t *testing.T, c *CrashFS) {
				mustWrite(t, c, "/d/a", synced, true, true)
				mustWrite(t, c, "/d/b", []byte("old b"), true, true)
				if err := c.Rename("/d/a", "/d/b"); err != nil {
					t.Fatal(err)
				}
			},
			want: map[string][]byte{"/d/a": synced, "/d/b": []byte("old b")},
		},
		{
			name: "rename durable with SyncDir",
			setup: func(t *testing.T, c *CrashFS) {
				mustWrite(t, c, "/d/a", synced, true, true)
				mustWrite(t, c, "/d/b", []byte("old b"), true, true)
				if err := c.Rename("/d/a", "/d/b"); err != nil {
					t.Fatal(err)
				}
				if err := c.SyncDir("/d"); err != nil {
					t.Fatal(err)
				}
			},
			want: map[string][]byte{"/d/a": nil, "/d/b": synced},
		},
		{
			name: "remove reverts without SyncDir",
			setup: func(t *testing.T, c *CrashFS) {
				mustWrite(t, c, "/d/a", synced, true, true)
				if err := c.Remove("/d/a"); err != nil {
					t.Fatal(err)
				}
			},
			want: map[string][]byte{"/d/a": synced},
		},
		{
			name: "remove durable with SyncDir",
			setup: func(t *testing.T, c *CrashFS) {
				mustWrite(t, c, "/d/a", synced, true, true)
				if err := c.Remove("/d/a"); err != nil {
					t.Fatal(err)
				}
				if err := c.SyncDir("/d"); err != nil {
					t.Fatal(err)
				}
			},
			want: map[string][]byte{"/d/a": nil},
		},
		{
			name: "cross-directory rename, only target synced",
			setup: func(t *testing.T, c *CrashFS) {
				if err := c.MkdirAll("/e"); err != nil {
					t.Fatal(err)
				}
				mustWrite(t, c, "/d/a", synced, true, true)
				if err := c.Rename("/d/a", "/e/a"); err != nil {
					t.Fatal(err)
				}
				if err := c.SyncDir("/e"); err != nil {
					t.Fatal(err)
				}
			},
			want: map[string][]byte{"/d/a": synced, "/e/a": synced},
		},
		{
			name: "WriteFile durable survives, non-durable vanishes",
			setup: func(t *testing.T, c *CrashFS) {
				if err := c.WriteFile("/d/a", synced, true); err != nil {
					t.Fatal(err)
				}
				if err := c.WriteFile("/d/b", synced, false); err != nil {
					t.Fatal(err)
				}
			},
			want: map[string][]byte{"/d/a": synced, "/d/b": nil},
		},
	}
	for _, tt := range tests {
		for _, mode := range allModes {
			for seed := range uint64(20) {
				c := NewCrashFS()
				if err := c.MkdirAll("/d"); err != nil {
					t.Fatal(err)
				}
				tt.setup(t, c)
				c.Crash(rand.New(rand.NewPCG(seed, 0)), mode)
				for name, want := range tt.want {
					got, err := readAll(c, name)
					if want == nil {
						if !errors.Is(err, fs.ErrNotExist) {
							t.Errorf("%s/%v/seed %d: %s: got err %v, want fs.ErrNotExist", tt.name, mode, seed, name, err)
						}
						continue
					}
					if err != nil {
						t.Errorf("%s/%v/seed %d: %s: %v", tt.name, mode, seed, name, err)
					} else if !bytes.Equal(got, want) {
						t.Errorf("%s/%v/seed %d: %s: got %d bytes, want the %d synced bytes", tt.name, mode, seed, name, len(got), len(want))
					}
				}
			}
		}
	}
}

// checkSectors reports whether got is a legal post-crash content of a file
// whose durable content was dur and current content cur, in mode.
func checkSectors(mode CrashMode, got, cur, dur []byte) error {
	lo, hi := min(len(cur), len(dur)), max(len(cur), len(dur))
	if len(got) < lo || len(got) > hi {
		return fmt.Errorf("length %d outside [%d, %d]", len(got), lo, hi)
	}
	at := func(b []byte, i int) (byte, bool) {
		if i < len(b) {
			return b[i], true
		}
		return 0, false
	}
	for s := 0; s < len(got); s += SectorSize {
		e := min(s+SectorSize, len(got))
		isOld, isNew := true, true
		for i := s; i < e; i++ {
			o, okO := at(dur, i)
			n, okN := at(cur, i)
			if !okN {
				n, okN = o, okO
			}
			switch mode {
			case KeepRandomPrefix:
				// Beyond the overlap the longer copy is kept as is.
				if i >= lo {
					if len(cur) > len(dur) {
						o = n
					} else {
						n = o
					}
				}
			case KeepRandomSectors:
				if !okO {
					o = 0
				}
			}
			isOld = isOld && got[i] == o
			isNew = isNew && got[i] == n
		}
		if mode == KeepRandomPrefix && s < lo && e > lo {
			// A sector straddling the overlap's end is judged on
			// its overlapping part only; the rest was checked above.
			continue
		}
		if !isOld && !isNew {
			return fmt.Errorf("sector at %d is neither old nor new", s)
		}
	}
	return nil
}

// TestCrashUnsyncedData checks, for many seeds, that synced bytes survive and
// unsynced bytes come back only as the mode allows.
func TestCrashUnsyncedData(t *testing.T) {
	type step struct {
		off  int64
		data []byte
	}
	tests := []struct {
		name     string
		durable  []byte // written and synced first
		unsynced []step
		truncate int64 // if >= 0, Truncate after the writes
		prealloc int64 // if > 0, Preallocate after the writes
	}{
		{name: "append", durable: pattern(1500, 1), unsynced: []step{{1500, pattern(3000, 2)}}, truncate: -1},
		{name: "append to empty", durable: nil, unsynced: []step{{0, pattern(2048, 3)}}, truncate: -1},
		{name: "overwrite in place", durable: pattern(4096, 4), unsynced: []step{{100, pattern(1000, 5)}, {3000, pattern(10, 6)}}, truncate: -1},
		{name: "overwrite and append", durable: pattern(1024, 7), unsynced: []step{{700, pattern(2000, 8)}}, truncate: -1},
		{name: "truncate", durable: pattern(4096, 9), truncate: 1000},
		{name: "truncate and rewrite", durable: pattern(4096, 10), unsynced: []step{{0, pattern(600, 11)}}, truncate: 600},
		{name: "preallocate", durable: pattern(100, 12), truncate: -1, prealloc: 5000},
		{name: "nothing unsynced", durable: pattern(2000, 13), truncate: -1},
	}
	for _, tt := range tests {
		for _, mode := range allModes {
			lengths := map[int]bool{}
			grew := false
			for seed := range uint64(50) {
				c := NewCrashFS()
				if err := c.MkdirAll("/d"); err != nil {
					t.Fatal(err)
				}
				mustWrite(t, c, "/d/f", tt.durable, true, true)
				f, err := c.OpenReadWrite("/d/f")
				if err != nil {
					t.Fatal(err)
				}
				for _, s := range tt.unsynced {
					if _, err := f.WriteAt(s.data, s.off); err != nil {
						t.Fatal(err)
					}
				}
				if tt.truncate >= 0 {
					if err := f.Truncate(tt.truncate); err != nil {
						t.Fatal(err)
					}
				}
				if tt.prealloc > 0 {
					if err := f.Preallocate(tt.prealloc); err != nil {
						t.Fatal(err)
					}
				}
				cur, err := c.ReadFile("/d/f")
				if err != nil {
					t.Fatal(err)
				}
				c.Crash(rand.New(rand.NewPCG(seed, 1)), mode)
				if _, err := f.Size(); !errors.Is(err, ErrCrashed) {
					t.Fatalf("Size on crashed handle: got %v, want ErrCrashed", err)
				}
				got, err := readAll(c, "/d/f")
				if err != nil {
					t.Fatal(err)
				}
				lengths[len(got)] = true
				grew = len(cur) != len(tt.durable)
				if mode == DropUnsynced {
					if !bytes.Equal(got, tt.durable) {
						t.Errorf("%s/%v: got %d bytes, want the %d durable bytes", tt.name, mode, len(got), len(tt.durable))
					}
					continue
				}
				if err := checkSectors(mode, got, cur, tt.durable); err != nil {
					t.Errorf("%s/%v/seed %d: %v", tt.name, mode, seed, err)
				}
				// A second crash changes nothing: the outcome is durable.
				c.Crash(rand.New(rand.NewPCG(seed, 2)), mode)
				again, err := readAll(c, "/d/f")
				if err != nil || !bytes.Equal(again, got) {
					t.Errorf("%s/%v/seed %d: second crash changed the file (err %v)", tt.name, mode, seed, err)
				}
			}
			if mode != DropUnsynced && grew && len(lengths) < 2 {
				t.Errorf("%s/%v: 50 seeds gave a single length %v; want variety", tt.name, mode, lengths)
			}
		}
	}
}

func TestSyncErrorSticky(t *testing.T) {
	errDisk := errors.New("disk on fire")
	c := NewCrashFS()
	if err := c.MkdirAll("/d"); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, c, "/d/ok", []byte("v1"), true, true)
	mustWrite(t, c, "/d/bad.log", []byte("v1"), true, true)

	c.InjectSyncError("bad", errDisk)
	f, err := c.OpenReadWrite("/d/bad.log")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("v2"), 0); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := f.Sync(); !errors.Is(err, errDisk) {
			t.Fatalf("Sync #%d: got %v, want %v", i, err, errDisk)
		}
	}
	c.ClearInjectedErrors()
	if err := f.Sync(); !errors.Is(err, errDisk) {
		t.Fatalf("Sync after ClearInjectedErrors on the failed handle: got %v, want sticky %v", err, errDisk)
	}
	mustWrite(t, c, "/d/ok", []byte("v2"), true, true)

	c.InjectSyncDirError("/d", errDisk)
	if err := c.SyncDir("/d"); !errors.Is(err, errDisk) {
		t.Fatalf("SyncDir: got %v, want %v", err, errDisk)
	}
	if err := c.SyncDir("/"); err != nil {
		t.Fatalf("SyncDir of a non-matching dir: %v", err)
	}

	c.Crash(nil, DropUnsynced)
	for name, want := range map[string]string{"/d/ok": "v2", "/d/bad.log": "v1"} {
		got, err := readAll(c, name)
		if err != nil || string(got) != want {
			t.Errorf("%s after crash: got %q, %v; want %q", name, got, err, want)
		}
	}
}

func TestSyncHookCrash(t *testing.T) {
	c := NewCrashFS()
	if err := c.MkdirAll("/d"); err != nil {
		t.Fatal(err)
	}
	var names []string
	c.SetSyncHook(func(name string) {
		names = append(names, name)
		if len(names) == 3 {
			c.Crash(nil, DropUnsynced)
		}
	})
	mustWrite(t, c, "/d/a", []byte("a"), true, true) // syncs 1, 2
	f, err := c.Create("/d/b")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("b"), 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); !errors.Is(err, ErrCrashed) {
		t.Fatalf("Sync crashed by its hook: got %v, want ErrCrashed", err)
	}
	if err := f.Close(); !errors.Is(err, ErrCrashed) {
		t.Fatalf("Close after crash: got %v, want ErrCrashed", err)
	}
	if got, want := names, []string{"/d/a", "/d", "/d/b"}; !slices.Equal(got, want) {
		t.Errorf("hook names: got %q, want %q", got, want)
	}
	if got, want := c.SyncCount(), int64(2); got != want {
		t.Errorf("SyncCount: got %d, want %d", got, want)
	}
	c.SetSyncHook(nil)
	if got, err := c.List("/d"); err != nil || !slices.Equal(got, []string{"a"}) {
		t.Errorf("List after crash: got %q, %v; want [a]", got, err)
	}
}

func TestCrashedHandles(t *testing.T) {
	c := NewCrashFS()
	if err := c.MkdirAll("/d"); err != nil {
		t.Fatal(err)
	}
	f, err := c.Create("/d/a")
	if err != nil {
		t.Fatal(err)
	}
	c.Crash(nil, DropUnsynced)
	buf := make([]byte, 1)
	ops := []struct {
		name string
		op   func() error
	}{
		{"ReadAt", func() error { _, err := f.ReadAt(buf, 0); return err }},
		{"WriteAt", func() error { _, err := f.WriteAt(buf, 0); return err }},
		{"Sync", f.Sync},
		{"Truncate", func() error { return f.Truncate(0) }},
		{"Preallocate", func() error { return f.Preallocate(10) }},
		{"Size", func() error { _, err := f.Size(); return err }},
		{"Close", f.Close},
	}
	for _, tt := range ops {
		if err := tt.op(); !errors.Is(err, ErrCrashed) {
			t.Errorf("%s: got %v, want ErrCrashed", tt.name, err)
		}
	}
	if err := f.Close(); !errors.Is(err, fs.ErrClosed) {
		t.Errorf("second Close: got %v, want fs.ErrClosed", err)
	}
}

// TestConcurrentReadWrite runs one writer and several readers on one file;
// run it with -race.
func TestConcurrentReadWrite(t *testing.T) {
	c := NewCrashFS()
	if err := c.MkdirAll("/d"); err != nil {
		t.Fatal(err)
	}
	w, err := c.Create("/d/log")
	if err != nil {
		t.Fatal(err)
	}
	const n = 200
	var wg sync.WaitGroup
	for range 4 {
		r, err := c.Open("/d/log")
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			defer r.Close()
			buf := make([]byte, 8)
			for i := 0; i < n; i++ {
				size, err := r.Size()
				if err != nil {
					t.Error(err)
					return
				}
				if size == 0 {
					continue
				}
				if _, err := r.ReadAt(buf[:1], size-1); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for i := range n {
			if _, err := w.WriteAt([]byte{byte(i)}, int64(i)); err != nil {
				t.Error(err)
				return
			}
			if i%10 == 0 {
				if err := w.Sync(); err != nil {
					t.Error(err)
					return
				}
			}
		}
	})
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// observe runs a small scenario on fsys inside dir and records what an
// observer sees, for comparing CrashFS with the real filesystem.
func observe(t *testing.T, fsys FS, dir string) []string {
	t.Helper()
	var out []string
	rec := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	class := func(err error) string {
		switch {
		case err == nil:
			return "nil"
		case err == io.EOF:
			return "EOF"
		case errors.Is(err, fs.ErrNotExist):
			return "ErrNotExist"
		case errors.Is(err, fs.ErrExist):
			return "ErrExist"
		case errors.Is(err, fs.ErrClosed):
			return "ErrClosed"
		}
		return "error"
	}
	sub := Join(dir, "sub")
	if err := fsys.MkdirAll(sub); err != nil {
		t.Fatal(err)
	}
	f, err := fsys.Create(Join(sub, "b"))
	if err != nil {
		t.Fatal(err)
	}
	n, err := f.WriteAt([]byte("hello world"), 0)
	rec("write: %d %s", n, class(err))
	size, err := f.Size()
	rec("size: %d %s", size, class(err))
	buf := make([]byte, 8)
	for _, off := range []int64{0, 6, 11, 20} {
		n, err := f.ReadAt(buf, off)
		rec("readat %d: %d %q %s", off, n, buf[:n], class(err))
	}
	n, err = f.ReadAt(buf[:0], 100)
	rec("readat empty: %d %s", n, class(err))
	_, err = f.ReadAt(buf, -1)
	rec("readat negative: %s", class(err))
	n, err = f.WriteAt([]byte("!"), 15)
	rec("write past end: %d %s", n, class(err))
	b, _ := readAll(fsys, Join(sub, "b"))
	rec("content: %q", b)
	rec("truncate 4: %s", class(f.Truncate(4)))
	rec("truncate 8: %s", class(f.Truncate(8)))
	b, _ = readAll(fsys, Join(sub, "b"))
	rec("content: %q", b)
	rec("sync: %s", class(f.Sync()))
	rec("close: %s", class(f.Close()))
	rec("close again: %s", class(f.Close()))
	_, err = f.ReadAt(buf, 0)
	rec("readat closed: %s", class(err))

	for _, name := range []string{"c", "a"} {
		f, err := fsys.Create(Join(sub, name))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt([]byte(name), 0); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	names, err := fsys.List(sub)
	rec("list: %q %s", names, class(err))
	rec("rename a d: %s", class(fsys.Rename(Join(sub, "a"), Join(sub, "d"))))
	rec("rename c d: %s", class(fsys.Rename(Join(sub, "c"), Join(sub, "d"))))
	b, _ = readAll(fsys, Join(sub, "d"))
	rec("d: %q", b)
	rec("rename missing: %s", class(fsys.Rename(Join(sub, "missing"), Join(sub, "x"))))
	names, err = fsys.List(sub)
	rec("list: %q %s", names, class(err))
	rec("syncdir: %s", class(fsys.SyncDir(sub)))
	rec("remove missing: %s", class(fsys.Remove(Join(sub, "missing"))))
	rec("remove non-empty dir: %s", class(fsys.Remove(sub)))
	_, err = fsys.Open(Join(sub, "missing"))
	rec("open missing: %s", class(err))
	_, err = fsys.OpenReadWrite(Join(sub, "missing"))
	rec("openrw missing: %s", class(err))
	_, err = fsys.Create(Join(dir, "nodir", "x"))
	rec("create in missing dir: %s", class(err))
	_, err = fsys.List(Join(dir, "nodir"))
	rec("list missing dir: %s", class(err))
	rec("syncdir missing dir: %s", class(fsys.SyncDir(Join(dir, "nodir"))))

	r, err := fsys.Open(Join(sub, "d"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.WriteAt([]byte("x"), 0)
	rec("write read-only: %s", class(err))
	rec("name: %t", r.Name() == Join(sub, "d"))
	r.Close()

	f, err = fsys.Create(Join(sub, "d"))
	if err != nil {
		t.Fatal(err)
	}
	size, err = f.Size()
	rec("create truncates: %d %s", size, class(err))
	f.Close()
	rec("remove d: %s", class(fsys.Remove(Join(sub, "d"))))
	names, err = fsys.List(sub)
	rec("list: %q %s", names, class(err))
	return out
}

func TestCrashFSAgreesWithDefault(t *testing.T) {
	want := observe(t, Default, t.TempDir())
	got := observe(t, NewCrashFS(), "/tmp/x")
	for i := range max(len(got), len(want)) {
		var g, w string
		if i < len(got) {
			g = got[i]
		}
		if i < len(want) {
			w = want[i]
		}
		if g != w {
			t.Errorf("step %d: CrashFS %q, os %q", i, g, w)
		}
	}
}

func TestPaths(t *testing.T) {
	c := NewCrashFS()
	if err := c.MkdirAll("a/b/../c"); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, c, "/a/c/f", []byte("x"), true, true)
	got, err := c.ReadFile("a//c/./f")
	if err != nil || string(got) != "x" {
		t.Fatalf("ReadFile through an unclean path: %q, %v", got, err)
	}
	if names, err := c.List("/a"); err != nil || !slices.Equal(names, []string{"c"}) {
		t.Errorf("List(/a): %q, %v; want [c]", names, err)
	}
	if err := c.MkdirAll("/a/c/f"); err == nil {
		t.Error("MkdirAll over a file succeeded")
	}
	if _, err := c.Create("/a/c/f/g"); err == nil {
		t.Error("Create under a file succeeded")
	}
	if _, err := c.Open("/a/c"); err == nil {
		t.Error("Open of a directory succeeded")
	}
	var pe *fs.PathError
	if _, err := c.Open("/a/nope"); !errors.As(err, &pe) || pe.Path != "/a/nope" {
		t.Errorf("Open missing: got %v, want *fs.PathError naming the path", err)
	}
}
