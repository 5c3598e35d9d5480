package segment

import (
	"errors"
	"fmt"

	"github.com/walship/walship/walerr"
)

var (
	// ErrClosed is returned by operations on a closed Log or Reader.
	ErrClosed = errors.New("segment: log closed")
	// ErrRemoved is returned when a reader asks for an LSN that retention
	// has already removed.
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

// corruptf reports a bad segment header, frame or record that is not a
// recoverable torn tail, naming the segment file (Object, e.g.
// 0000000000000001.seg) and the byte offset of the bad header, frame or
// record.
func corruptf(seg string, off int64, format string, args ...any) *walerr.CorruptionError {
	return &walerr.CorruptionError{Component: "segment", Object: seg, Offset: off, Reason: fmt.Sprintf(format, args...)}
}
