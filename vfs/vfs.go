// Package vfs is the filesystem seam under walship's durable state (the
// segmented log and checkpoints).
//
// Production code uses Default, a thin wrapper over package os. Tests use
// NewCrashFS, an in-memory filesystem that remembers which bytes and which
// directory entries have been made durable by Sync and SyncDir, and whose
// Crash method simulates power loss: every unsynced write and every unsynced
// create, rename or remove is dropped (optionally keeping a random part of the
// unsynced bytes, as a real disk may). It also injects fsync failures.
//
// The interface is deliberately small: only what the log and checkpoints use.
package vfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/walship/walship/internal/fsutil"
)

// File is an open file. Offsets passed to ReadAt and WriteAt are absolute.
type File interface {
	io.ReaderAt
	io.WriterAt
	io.Closer
	// Sync makes the file's data durable (fdatasync on Linux). After a
	// failed Sync the caller must assume the unsynced data is lost; it must
	// not retry Sync on the same file and expect durability.
	Sync() error
	// Truncate changes the file's size.
	Truncate(size int64) error
	// Preallocate reserves space for the file up to size bytes without
	// changing the bytes already written; the file's size becomes size and
	// the new bytes read as zeros. It may be a no-op returning nil.
	Preallocate(size int64) error
	// Size returns the file's current size.
	Size() (int64, error)
	// Name returns the path the file was opened with.
	Name() string
}

// Writebacker is implemented by files that can start writing a range's
// dirty pages to the disk without waiting for them (sync_file_range with
// SYNC_FILE_RANGE_WRITE on Linux). It makes nothing durable: it only
// spreads the disk writes that a later Sync would otherwise issue at once.
type Writebacker interface {
	StartWriteback(off, n int64) error
}

// FS is a filesystem.
type FS interface {
	// Create creates or truncates the named file for reading and writing.
	Create(name string) (File, error)
	// OpenReadWrite opens an existing file for reading and writing.
	OpenReadWrite(name string) (File, error)
	// Open opens an existing file for reading.
	Open(name string) (File, error)
	// Rename atomically replaces newname, if it exists, by oldname. The
	// change is durable only after SyncDir of the directories involved.
	Rename(oldname, newname string) error
	// Remove removes a file or an empty directory. The removal is durable
	// only after SyncDir of its directory.
	Remove(name string) error
	// MkdirAll creates a directory and its parents.
	MkdirAll(dir string) error
	// List returns the names (not paths) of the entries in dir, sorted.
	List(dir string) ([]string, error)
	// SyncDir makes creates, renames and removes in dir durable.
	SyncDir(dir string) error
	// LockDir takes an exclusive lock on the directory dir for one writer,
	// without waiting: a *LockedError (errors.Is ErrLocked) if another
	// holder, in this process or another, has it. The lock is held on an
	// open descriptor, not by a file's existence, so removing or replacing
	// any file in dir neither releases it nor lets a second holder in. It
	// is released by closing the returned Closer or by process exit.
	LockDir(dir string) (io.Closer, error)
}

// LockFileName is the file in a locked directory that names the holder's
// process id, for the error a second writer gets. It is informative only:
// the lock does not depend on it.
const LockFileName = "LOCK"

// ErrLocked is matched (errors.Is) by the error of FS.LockDir when the
// lock is held elsewhere.
var ErrLocked = errors.New("vfs: locked by another writer")

// LockedError is the error of FS.LockDir when another holder has the lock.
type LockedError struct {
	Dir string
	PID int // the holder's process id as it recorded it; 0 if unknown
}

func (e *LockedError) Error() string {
	if e.PID > 0 {
		return fmt.Sprintf("vfs: directory %s is in use by another writer (pid %d)", e.Dir, e.PID)
	}
	return fmt.Sprintf("vfs: directory %s is in use by another writer (pid unknown)", e.Dir)
}

// Is makes a *LockedError match ErrLocked.
func (e *LockedError) Is(target error) bool { return target == ErrLocked }

// Default is the operating system's filesystem.
var Default FS = osFS{}

type osFS struct{}

type osFile struct{ *os.File }

func (f osFile) Sync() error { return fdatasync(f.File) }

// StartWriteback implements Writebacker.
func (f osFile) StartWriteback(off, n int64) error {
	if err := startWriteback(f.File, off, n); err != nil {
		return &fs.PathError{Op: "sync_file_range", Path: f.File.Name(), Err: err}
	}
	return nil
}

func (f osFile) Size() (int64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

func (f osFile) Preallocate(size int64) error {
	err := fallocate(f.File, size)
	if err == syscall.EOPNOTSUPP || err == syscall.ENOSYS {
		return nil
	}
	if err != nil {
		return &fs.PathError{Op: "fallocate", Path: f.File.Name(), Err: err}
	}
	return nil
}

func (osFS) Create(name string) (File, error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

func (osFS) OpenReadWrite(name string) (File, error) {
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

func (osFS) Open(name string) (File, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

func (osFS) Rename(oldname, newname string) error { return os.Rename(oldname, newname) }
func (osFS) Remove(name string) error             { return os.Remove(name) }
func (osFS) MkdirAll(dir string) error            { return os.MkdirAll(dir, 0o755) }

func (osFS) List(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names, nil
}

func (osFS) SyncDir(dir string) error { return fsutil.SyncDir(dir) }

// Join is filepath.Join, re-exported so callers of FS need not import two
// path packages.
func Join(elem ...string) string { return filepath.Join(elem...) }

// LockDir implements FS.LockDir with flock(2) on a descriptor of the
// directory itself. Locking a file in it instead would tie the lock to that
// file's name: after someone removes it, a second writer creates a new file
// and locks that. The holder also flocks DIR/LOCK, so that a writer of an
// older walship, which locked only that file, still conflicts, and records
// its pid there.
func (osFS) LockDir(dir string) (io.Closer, error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	name := filepath.Join(dir, LockFileName)
	if err := flock(d); err != nil {
		d.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, &LockedError{Dir: dir, PID: readLockPID(name)}
		}
		return nil, &fs.PathError{Op: "flock", Path: dir, Err: err}
	}
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		d.Close()
		return nil, err
	}
	if err := flock(f); err != nil {
		f.Close()
		d.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, &LockedError{Dir: dir, PID: readLockPID(name)}
		}
		return nil, &fs.PathError{Op: "flock", Path: name, Err: err}
	}
	// The pid is for people and for the error above; a failure to record
	// it leaves the lock held and the pid unknown.
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return dirLock{dir: d, file: f}, nil
}

type dirLock struct{ dir, file *os.File }

func (l dirLock) Close() error {
	err := l.file.Close()
	if derr := l.dir.Close(); err == nil {
		err = derr
	}
	return err
}

// readLockPID returns the pid recorded in the lock file name, or 0.
func readLockPID(name string) int {
	b, err := os.ReadFile(name)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}
