package segment

import (
	"errors"
	"fmt"
)

var (
	// ErrCorrupt is matched (errors.Is) by every *CorruptionError.
	ErrCorrupt = errors.New("corrupt log")
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

// CorruptionError reports a bad segment header, frame or record that is not
// a recoverable torn tail. It names the segment file and the byte offset.
type CorruptionError struct {
	Segment string // file name, e.g. 0000000000000001.seg
	Offset  int64  // byte offset of the bad header, frame or record
	Reason  string
}

func (e *CorruptionError) Error() string {
	return fmt.Sprintf("corrupt log: segment %s offset %d: %s", e.Segment, e.Offset, e.Reason)
}

// Is makes errors.Is(err, ErrCorrupt) true.
func (e *CorruptionError) Is(target error) bool { return target == ErrCorrupt }

type failedError struct{ err error }

func (e *failedError) Error() string   { return "segment: log failed: " + e.err.Error() }
func (e *failedError) Unwrap() []error { return []error{ErrFailed, e.err} }
func sticky(err error) error           { return &failedError{err} }
func corruptf(seg string, off int64, format string, args ...any) *CorruptionError {
	return &CorruptionError{Segment: seg, Offset: off, Reason: fmt.Sprintf(format, args...)}
}
