package segment

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/walship/walship/vfs"

	"github.com/walship/walship/walerr"
)

var (
	// ErrClosed is returned by operations on a closed Log or Reader.
	ErrClosed = errors.New("segment: log closed")
	// ErrRemoved is returned when a reader asks for an LSN that retention
	// has already removed, and when a segment file that was listed is gone
	// by the time it is opened (retention removed it under a reader that
	// does not hold the writer's lock: a read-only open, Verify). It is
	// never corruption: listing the directory again shows the log as it
	// now is.
	ErrRemoved = errors.New("segment: LSN removed by retention")
	// ErrFailed wraps the first write or sync error of a Log. Such an error
	// is sticky: after it, every write and sync fails, because unsynced data
	// may have been dropped by the kernel and a retried fsync could report
	// success for data that is gone (docs/DESIGN.md §4.1).
	ErrFailed = errors.New("segment: log failed")

	errReadOnly = errors.New("segment: log opened read-only")
)

type failedError struct{ err error }

func (e *failedError) Error() string   { return "segment: log failed: " + e.err.Error() }
func (e *failedError) Unwrap() []error { return []error{ErrFailed, e.err} }
func sticky(err error) error           { return &failedError{err} }

// openListed opens the segment file name of dir, found by listing dir.
// One that has gone since is ErrRemoved (and fs.ErrNotExist).
func openListed(open func(string) (vfs.File, error), dir, name string) (vfs.File, error) {
	f, err := open(vfs.Join(dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: segment %s was removed while the log in %s was being read: %w", ErrRemoved, name, dir, err)
	}
	return f, err
}

// corruptf reports a bad segment header, frame or record that is not a
// recoverable torn tail, naming the segment file (Object, e.g.
// 0000000000000001.seg) and the byte offset of the bad header, frame or
// record.
func corruptf(seg string, off int64, format string, args ...any) *walerr.CorruptionError {
	return &walerr.CorruptionError{Component: "segment", Object: seg, Offset: off, Reason: fmt.Sprintf(format, args...)}
}
