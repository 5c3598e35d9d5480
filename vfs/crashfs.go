package vfs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
)

// SectorSize is the unit of torn writes in CrashFS's random crash modes: a
// disk is assumed to write each aligned 512-byte sector atomically, so after
// a crash every sector holds either its old or its new content, never a mix.
const SectorSize = 512

// ErrCrashed is returned by every operation on a File that was open when its
// CrashFS crashed. The File stays unusable; reopen the file after the crash.
var ErrCrashed = errors.New("vfs: file handle invalidated by simulated crash")

// CrashMode says what happens to the bytes a file received after its last
// successful Sync when a CrashFS crashes. Directory entries do not depend on
// the mode: in every mode each directory reverts to its state at its last
// SyncDir.
type CrashMode int

const (
	// DropUnsynced reverts every file to exactly its content at its last
	// successful Sync (empty if it was never synced). It is the most
	// pessimistic outcome for unsynced data and the easiest to reason about.
	DropUnsynced CrashMode = iota
	// KeepRandomPrefix models a disk that persists writes roughly in order:
	// bytes appended after the last Sync survive up to a random point, that
	// is the file's length after the crash is uniform in [durable length,
	// current length] (or [current, durable] after an unsynced shrink, the
	// bytes beyond the current length then being the old ones). Bytes inside
	// the durable range that were overwritten after the last Sync survive
	// per SectorSize sector at random: each such sector independently holds
	// its new or its old content.
	KeepRandomPrefix
	// KeepRandomSectors models a disk that persists sectors in any order and
	// a file size that may be persisted before the data it covers: the
	// length after the crash is uniform between the durable and the current
	// length, and each SectorSize sector whose content differs from the
	// durable copy independently keeps its new or its old content. Beyond
	// the durable length the old content is zeros, so an appended tail may
	// come back as zeros, or as new sectors with holes of zeros between
	// them: the torn tails a log's recovery must detect.
	KeepRandomSectors
)

// String returns the mode's Go name.
func (m CrashMode) String() string {
	switch m {
	case DropUnsynced:
		return "DropUnsynced"
	case KeepRandomPrefix:
		return "KeepRandomPrefix"
	case KeepRandomSectors:
		return "KeepRandomSectors"
	}
	return fmt.Sprintf("CrashMode(%d)", int(m))
}

// CrashFS is an in-memory FS for crash tests, modelled on pebble's
// vfs.NewCrashableMem. Create one with NewCrashFS.
//
// It keeps for each file its current bytes and its durable bytes (a copy
// taken at the last successful File.Sync), and for each directory its
// current entries and its durable entries (a copy taken at the last
// successful SyncDir of that directory). Crash throws the current state away
// and rebuilds it from the durable one, as a power loss would:
//
//   - data written and not yet synced is dropped, or partly kept, as the
//     CrashMode says;
//   - a file created, renamed or removed in a directory that was not synced
//     afterwards reverts: a new file vanishes, a renamed file is back under
//     its old name (and a file it replaced is back too), a removed file
//     reappears with its durable content.
//
// Directories themselves are simplified: MkdirAll makes the new directories
// durable at once, so only the entries inside them need SyncDir. A real
// filesystem may also persist a create or rename before SyncDir (ext4
// commits its journal every few seconds); CrashFS never does, so code must
// not rely on an unsynced rename either surviving or reverting.
//
// Paths are cleaned with filepath.Clean; relative paths are taken relative
// to the root, so "a/b" and "/a/b" name the same file. A directory must exist
// (MkdirAll) before files are created in it. Errors are those of package
// os: *fs.PathError (*os.LinkError for Rename) wrapping a syscall.Errno, so
// errors.Is(err, fs.ErrNotExist) and errors.Is(err, fs.ErrExist) work as they
// do with Default. Unlike package os, Open of a directory fails with EISDIR.
//
// A CrashFS is safe for concurrent use; all operations take one mutex, which
// is never held while the sync hook runs. Many readers and one writer per
// file is the expected load (the log appends to a file while readers ReadAt
// it).
type CrashFS struct {
	mu struct {
		sync.Mutex
		root *inode
		// gen counts crashes; a File opened in an earlier generation is
		// invalid.
		gen         uint64
		syncErrs    []injectedErr
		syncDirErrs []injectedErr
		hook        func(name string)
		syncs       int64
		locks       map[string]bool
	}
}

// LockDir implements FS.LockDir with an in-memory lock table, which no
// file in the directory affects; a crash releases every lock, as process
// death does.
func (c *CrashFS) LockDir(dir string) (io.Closer, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := cleanPath(dir)
	if c.mu.locks[p] {
		return nil, &LockedError{Dir: dir}
	}
	if c.mu.locks == nil {
		c.mu.locks = map[string]bool{}
	}
	c.mu.locks[p] = true
	gen := c.mu.gen
	return closerFunc(func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.mu.gen == gen {
			delete(c.mu.locks, p)
		}
		return nil
	}), nil
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

var (
	_ FS   = (*CrashFS)(nil)
	_ File = (*crashFile)(nil)
)

// inode is a file or a directory. Slices data and durable never share a
// backing array: data is written in place, durable is replaced whole.
type inode struct {
	isDir bool
	// Files.
	data    []byte // current content
	durable []byte // content at the last successful Sync
	// Directories.
	ents        map[string]*inode // current entries
	durableEnts map[string]*inode // entries at the last successful SyncDir
}

func newDir() *inode {
	return &inode{isDir: true, ents: map[string]*inode{}, durableEnts: map[string]*inode{}}
}

type injectedErr struct {
	substr string
	err    error
}

// NewCrashFS returns an empty CrashFS holding only its root directory "/".
func NewCrashFS() *CrashFS {
	c := &CrashFS{}
	c.mu.root = newDir()
	return c
}

// cleanPath maps name to an absolute, clean path: the key CrashFS uses.
func cleanPath(name string) string { return filepath.Clean("/" + name) }

// lookupLocked returns the inode at clean path p.
func (c *CrashFS) lookupLocked(p string) (*inode, error) {
	n := c.mu.root
	if p == "/" {
		return n, nil
	}
	for _, comp := range strings.Split(p[1:], "/") {
		if !n.isDir {
			return nil, syscall.ENOTDIR
		}
		child := n.ents[comp]
		if child == nil {
			return nil, syscall.ENOENT
		}
		n = child
	}
	return n, nil
}

// parentLocked returns the directory holding clean path p and p's base name.
func (c *CrashFS) parentLocked(p string) (*inode, string, error) {
	if p == "/" {
		return nil, "", syscall.EINVAL
	}
	dir, err := c.lookupLocked(filepath.Dir(p))
	if err != nil {
		return nil, "", err
	}
	if !dir.isDir {
		return nil, "", syscall.ENOTDIR
	}
	return dir, filepath.Base(p), nil
}

// Create implements FS. Creating an existing file truncates it (its durable
// content stays until the next Sync); the new directory entry is durable
// only after SyncDir of its directory.
func (c *CrashFS) Create(name string) (File, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := cleanPath(name)
	if p == "/" {
		return nil, &fs.PathError{Op: "open", Path: name, Err: syscall.EISDIR}
	}
	dir, base, err := c.parentLocked(p)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	n := dir.ents[base]
	switch {
	case n == nil:
		n = &inode{}
		dir.ents[base] = n
	case n.isDir:
		return nil, &fs.PathError{Op: "open", Path: name, Err: syscall.EISDIR}
	default:
		n.data = nil
	}
	return c.newFileLocked(name, n, false), nil
}

// OpenReadWrite implements FS.
func (c *CrashFS) OpenReadWrite(name string) (File, error) { return c.open(name, false) }

// Open implements FS. The returned File's WriteAt, Truncate and Preallocate
// fail, as they do for a file opened read-only by package os.
func (c *CrashFS) Open(name string) (File, error) { return c.open(name, true) }

func (c *CrashFS) open(name string, readOnly bool) (File, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, err := c.lookupLocked(cleanPath(name))
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	if n.isDir {
		return nil, &fs.PathError{Op: "open", Path: name, Err: syscall.EISDIR}
	}
	return c.newFileLocked(name, n, readOnly), nil
}

func (c *CrashFS) newFileLocked(name string, n *inode, readOnly bool) *crashFile {
	return &crashFile{fs: c, name: name, ino: n, gen: c.mu.gen, readOnly: readOnly}
}

// Rename implements FS. It replaces newname if it exists (a directory only
// by an empty directory). Both directories' entries change at once; each
// change is durable only after SyncDir of its directory, so until then a
// crash may bring back the old name, the replaced file, or both names.
func (c *CrashFS) Rename(oldname, newname string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	lerr := func(err error) error {
		return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: err}
	}
	op, np := cleanPath(oldname), cleanPath(newname)
	if op == "/" || np == "/" {
		return lerr(syscall.EBUSY)
	}
	odir, obase, err := c.parentLocked(op)
	if err != nil {
		return lerr(err)
	}
	n := odir.ents[obase]
	if n == nil {
		return lerr(syscall.ENOENT)
	}
	ndir, nbase, err := c.parentLocked(np)
	if err != nil {
		return lerr(err)
	}
	if op == np {
		return nil
	}
	if n.isDir && strings.HasPrefix(np, op+"/") {
		return lerr(syscall.EINVAL)
	}
	if old := ndir.ents[nbase]; old != nil {
		switch {
		case old == n:
			return nil
		case n.isDir && !old.isDir:
			return lerr(syscall.ENOTDIR)
		case !n.isDir && old.isDir:
			return lerr(syscall.EISDIR)
		case old.isDir && len(old.ents) > 0:
			return lerr(syscall.ENOTEMPTY)
		}
	}
	delete(odir.ents, obase)
	ndir.ents[nbase] = n
	return nil
}

// Remove implements FS. It removes a file or an empty directory; the removal
// is durable only after SyncDir of the parent directory. Open Files of a
// removed file keep working on its content.
func (c *CrashFS) Remove(name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := cleanPath(name)
	if p == "/" {
		return &fs.PathError{Op: "remove", Path: name, Err: syscall.EBUSY}
	}
	dir, base, err := c.parentLocked(p)
	if err != nil {
		return &fs.PathError{Op: "remove", Path: name, Err: err}
	}
	n := dir.ents[base]
	if n == nil {
		return &fs.PathError{Op: "remove", Path: name, Err: syscall.ENOENT}
	}
	if n.isDir && len(n.ents) > 0 {
		return &fs.PathError{Op: "remove", Path: name, Err: syscall.ENOTEMPTY}
	}
	delete(dir.ents, base)
	return nil
}

// MkdirAll implements FS. Directories it creates are durable at once (see
// the type's doc).
func (c *CrashFS) MkdirAll(dir string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := cleanPath(dir)
	n := c.mu.root
	if p == "/" {
		return nil
	}
	for _, comp := range strings.Split(p[1:], "/") {
		child := n.ents[comp]
		if child == nil {
			child = newDir()
			n.ents[comp] = child
			n.durableEnts[comp] = child
		} else if !child.isDir {
			return &fs.PathError{Op: "mkdir", Path: dir, Err: syscall.ENOTDIR}
		}
		n = child
	}
	return nil
}

// List implements FS. It returns the current (not the durable) entries.
func (c *CrashFS) List(dir string) ([]string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, err := c.lookupLocked(cleanPath(dir))
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: dir, Err: err}
	}
	if !n.isDir {
		return nil, &fs.PathError{Op: "readdirent", Path: dir, Err: syscall.ENOTDIR}
	}
	return slices.Sorted(maps.Keys(n.ents)), nil
}

// SyncDir implements FS: the directory's current entries become its durable
// entries. It fails with an error injected by InjectSyncDirError, and calls
// the sync hook (see SetSyncHook) before taking effect. If the hook crashes
// the CrashFS, SyncDir takes no effect and returns ErrCrashed.
func (c *CrashFS) SyncDir(dir string) error {
	c.mu.Lock()
	p := cleanPath(dir)
	n, err := c.lookupLocked(p)
	if err == nil && !n.isDir {
		err = syscall.ENOTDIR
	}
	if err != nil {
		c.mu.Unlock()
		return &fs.PathError{Op: "open", Path: dir, Err: err}
	}
	if err := injectedLocked(c.mu.syncDirErrs, p); err != nil {
		c.mu.Unlock()
		return &fs.PathError{Op: "fsync", Path: dir, Err: err}
	}
	gen, hook := c.mu.gen, c.mu.hook
	c.mu.Unlock()

	if hook != nil {
		hook(dir)
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mu.gen != gen {
		return &fs.PathError{Op: "fsync", Path: dir, Err: ErrCrashed}
	}
	n.durableEnts = maps.Clone(n.ents)
	c.mu.syncs++
	return nil
}

func injectedLocked(rules []injectedErr, p string) error {
	for _, r := range rules {
		if strings.Contains(p, r.substr) {
			return r.err
		}
	}
	return nil
}

// InjectSyncError makes every later File.Sync of a file whose cleaned path
// contains pathSubstring fail with err (wrapped in an *fs.PathError, so
// errors.Is(got, err) holds), leaving the file's durable content unchanged.
// An empty substring matches every file. Like a real failed fsync the
// failure is sticky: it lasts until ClearInjectedErrors, and a File whose
// Sync failed keeps failing even after that. Injected errors survive Crash.
// err must not be nil.
func (c *CrashFS) InjectSyncError(pathSubstring string, err error) {
	if err == nil {
		panic("vfs: InjectSyncError with nil error")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mu.syncErrs = append(c.mu.syncErrs, injectedErr{pathSubstring, err})
}

// InjectSyncDirError makes every later SyncDir of a directory whose cleaned
// path contains pathSubstring fail with err (wrapped in an *fs.PathError),
// leaving the directory's durable entries unchanged, until
// ClearInjectedErrors. err must not be nil.
func (c *CrashFS) InjectSyncDirError(pathSubstring string, err error) {
	if err == nil {
		panic("vfs: InjectSyncDirError with nil error")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mu.syncDirErrs = append(c.mu.syncDirErrs, injectedErr{pathSubstring, err})
}

// ClearInjectedErrors removes every error injected by InjectSyncError and
// InjectSyncDirError, as a disk replaced after a failure would. Files whose
// Sync already failed keep failing.
func (c *CrashFS) ClearInjectedErrors() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mu.syncErrs, c.mu.syncDirErrs = nil, nil
}

// SetSyncHook sets a function called before each File.Sync and SyncDir that
// is about to succeed (after injected errors were checked), with the file
// name as passed to Create or Open, or the directory as passed to SyncDir.
// The hook runs in the syncing goroutine without any CrashFS lock held, so
// it may call Crash: the Sync or SyncDir then takes no effect and returns
// ErrCrashed, which is how tests crash "during" a chosen sync. Concurrent
// syncs may call the hook concurrently. A nil fn removes the hook.
func (c *CrashFS) SetSyncHook(fn func(name string)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mu.hook = fn
}

// SyncCount returns the number of File.Sync and SyncDir calls that have
// succeeded since NewCrashFS, across crashes.
func (c *CrashFS) SyncCount() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.syncs
}

// Crash simulates a power loss followed by a reboot, in place: every
// directory's entries revert to their durable view, every file reachable
// from the root through durable entries gets the content mode says (and
// that content becomes its durable content), and every File open before the
// call becomes invalid (its methods return ErrCrashed). Injected errors and
// the sync hook are kept. rng drives the random modes and may be nil for
// DropUnsynced (nil means a fixed seed otherwise); the outcome depends only
// on the durable and current state and on rng, so a seed reproduces it.
// Crash panics on an unknown mode.
func (c *CrashFS) Crash(rng *rand.Rand, mode CrashMode) {
	switch mode {
	case DropUnsynced, KeepRandomPrefix, KeepRandomSectors:
	default:
		panic(fmt.Sprintf("vfs: Crash with unknown mode %v", mode))
	}
	if rng == nil {
		rng = rand.New(rand.NewPCG(0, 0))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mu.gen++
	c.mu.locks = nil
	seen := map[*inode]bool{}
	var walk func(d *inode)
	walk = func(d *inode) {
		if seen[d] {
			return
		}
		seen[d] = true
		d.ents = maps.Clone(d.durableEnts)
		// Sorted, so that a seed gives the same outcome every run.
		for _, name := range slices.Sorted(maps.Keys(d.ents)) {
			n := d.ents[name]
			if n.isDir {
				walk(n)
				continue
			}
			if seen[n] {
				continue
			}
			seen[n] = true
			n.data = crashContent(rng, mode, n.data, n.durable)
			n.durable = bytes.Clone(n.data)
		}
	}
	walk(c.mu.root)
}

// crashContent returns what a file whose current content is cur and whose
// durable content is dur holds after a crash in mode. See CrashMode.
func crashContent(rng *rand.Rand, mode CrashMode, cur, dur []byte) []byte {
	if mode == DropUnsynced || bytes.Equal(cur, dur) {
		return bytes.Clone(dur)
	}
	lo, hi := min(len(cur), len(dur)), max(len(cur), len(dur))
	n := lo + rng.IntN(hi-lo+1)
	out := make([]byte, n)
	switch mode {
	case KeepRandomPrefix:
		// Overwritten bytes inside both copies: per sector, new or old.
		for s := 0; s < min(lo, n); s += SectorSize {
			e := min(s+SectorSize, lo)
			if !bytes.Equal(cur[s:e], dur[s:e]) && rng.IntN(2) == 0 {
				copy(out[s:e], cur[s:e])
			} else {
				copy(out[s:e], dur[s:e])
			}
		}
		// Beyond: whichever copy is longer, as a prefix.
		if len(cur) > len(dur) {
			copy(out[lo:], cur[lo:n])
		} else {
			copy(out[lo:], dur[lo:n])
		}
	case KeepRandomSectors:
		oldAt := func(i int) byte {
			if i < len(dur) {
				return dur[i]
			}
			return 0
		}
		newAt := func(i int) byte {
			if i < len(cur) {
				return cur[i]
			}
			return oldAt(i)
		}
		for s := 0; s < n; s += SectorSize {
			e := min(s+SectorSize, n)
			differ := false
			for i := s; i < e && !differ; i++ {
				differ = newAt(i) != oldAt(i)
			}
			at := oldAt
			if differ && rng.IntN(2) == 0 {
				at = newAt
			}
			for i := s; i < e; i++ {
				out[i] = at(i)
			}
		}
	}
	return out
}

// ReadFile returns a copy of the named file's current content. It is meant
// for tests that inspect or corrupt files.
func (c *CrashFS) ReadFile(name string) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, err := c.lookupLocked(cleanPath(name))
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	if n.isDir {
		return nil, &fs.PathError{Op: "read", Path: name, Err: syscall.EISDIR}
	}
	return bytes.Clone(n.data), nil
}

// WriteFile replaces the named file's current content with a copy of data,
// creating the file if needed (its directory must exist). With durable set
// the content and the directory entry are also made durable at once, as if
// synced, so they survive Crash; tests use it to plant corrupt files (flipped
// bits, zeroed sectors). Open Files of the file see the new content.
func (c *CrashFS) WriteFile(name string, data []byte, durable bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := cleanPath(name)
	if p == "/" {
		return &fs.PathError{Op: "open", Path: name, Err: syscall.EISDIR}
	}
	dir, base, err := c.parentLocked(p)
	if err != nil {
		return &fs.PathError{Op: "open", Path: name, Err: err}
	}
	n := dir.ents[base]
	if n == nil {
		n = &inode{}
		dir.ents[base] = n
	} else if n.isDir {
		return &fs.PathError{Op: "open", Path: name, Err: syscall.EISDIR}
	}
	n.data = bytes.Clone(data)
	if durable {
		n.durable = bytes.Clone(data)
		dir.durableEnts[base] = n
	}
	return nil
}

// crashFile is a File of a CrashFS. All its fields but closed and syncErr
// are immutable; those two are guarded by fs.mu.
type crashFile struct {
	fs       *CrashFS
	name     string
	ino      *inode
	gen      uint64
	readOnly bool
	closed   bool
	syncErr  error // sticky: set by the first failed Sync
}

var errNegativeOffset = errors.New("negative offset")

// checkLocked reports whether f may still be used.
func (f *crashFile) checkLocked(op string) error {
	if f.closed {
		return &fs.PathError{Op: op, Path: f.name, Err: fs.ErrClosed}
	}
	if f.gen != f.fs.mu.gen {
		return &fs.PathError{Op: op, Path: f.name, Err: ErrCrashed}
	}
	return nil
}

// ReadAt implements io.ReaderAt. Like *os.File it returns io.EOF, unwrapped,
// with the bytes it could read when b reaches past the end of the file.
func (f *crashFile) ReadAt(b []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.checkLocked("read"); err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, &fs.PathError{Op: "readat", Path: f.name, Err: errNegativeOffset}
	}
	if len(b) == 0 {
		return 0, nil
	}
	data := f.ino.data
	if off >= int64(len(data)) {
		return 0, io.EOF
	}
	n := copy(b, data[off:])
	if n < len(b) {
		return n, io.EOF
	}
	return n, nil
}

// WriteAt implements io.WriterAt. Writing past the end extends the file,
// the gap reading as zeros.
func (f *crashFile) WriteAt(b []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.checkLocked("write"); err != nil {
		return 0, err
	}
	if f.readOnly {
		return 0, &fs.PathError{Op: "write", Path: f.name, Err: syscall.EBADF}
	}
	if off < 0 {
		return 0, &fs.PathError{Op: "writeat", Path: f.name, Err: errNegativeOffset}
	}
	if len(b) == 0 {
		return 0, nil
	}
	f.ino.grow(off + int64(len(b)))
	copy(f.ino.data[off:], b)
	return len(b), nil
}

// grow extends n's current content with zeros to size bytes, if shorter.
// It appends fresh zeros rather than reslicing, since bytes beyond len(data)
// may be left over from a Truncate.
func (n *inode) grow(size int64) {
	if size > int64(len(n.data)) {
		n.data = append(n.data, make([]byte, size-int64(len(n.data)))...)
	}
}

// Truncate implements File. The new size is durable only after Sync.
func (f *crashFile) Truncate(size int64) error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.checkLocked("truncate"); err != nil {
		return err
	}
	if f.readOnly || size < 0 {
		return &fs.PathError{Op: "truncate", Path: f.name, Err: syscall.EINVAL}
	}
	if size <= int64(len(f.ino.data)) {
		f.ino.data = f.ino.data[:size]
	} else {
		f.ino.grow(size)
	}
	return nil
}

// Preallocate implements File: a file shorter than size grows to size with
// zeros. For durability it is a write of zeros, so the new size survives a
// crash only after Sync.
func (f *crashFile) Preallocate(size int64) error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.checkLocked("fallocate"); err != nil {
		return err
	}
	if f.readOnly {
		return &fs.PathError{Op: "fallocate", Path: f.name, Err: syscall.EBADF}
	}
	if size < 0 {
		return &fs.PathError{Op: "fallocate", Path: f.name, Err: syscall.EINVAL}
	}
	f.ino.grow(size)
	return nil
}

// Size implements File.
func (f *crashFile) Size() (int64, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.checkLocked("stat"); err != nil {
		return 0, err
	}
	return int64(len(f.ino.data)), nil
}

// Name implements File.
func (f *crashFile) Name() string { return f.name }

// Close implements File. Closing twice returns an error wrapping
// fs.ErrClosed, like *os.File.
func (f *crashFile) Close() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	err := f.checkLocked("close")
	f.closed = true
	return err
}

// Sync implements File: the file's current content becomes its durable
// content. It fails, sticky for this File, with an error injected by
// InjectSyncError; it calls the sync hook before taking effect, and if the
// hook crashes the CrashFS it takes no effect and returns ErrCrashed.
func (f *crashFile) Sync() error {
	c := f.fs
	c.mu.Lock()
	if err := f.checkLocked("sync"); err != nil {
		c.mu.Unlock()
		return err
	}
	if f.syncErr != nil {
		err := f.syncErr
		c.mu.Unlock()
		return err
	}
	if err := injectedLocked(c.mu.syncErrs, cleanPath(f.name)); err != nil {
		f.syncErr = &fs.PathError{Op: "sync", Path: f.name, Err: err}
		c.mu.Unlock()
		return f.syncErr
	}
	hook := c.mu.hook
	c.mu.Unlock()

	if hook != nil {
		hook(f.name)
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if err := f.checkLocked("sync"); err != nil {
		return err
	}
	f.ino.durable = bytes.Clone(f.ino.data)
	c.mu.syncs++
	return nil
}
