// Package walerr holds walship's one corruption marker. Every error about
// bytes that cannot be trusted — a segment frame or record, a checkpoint
// file, a change record, an archive object or manifest, a Kafka message, a
// segment whose transactions disagree with its manifest — satisfies
// errors.Is(err, ErrCorruption), whichever package found it; callers ask
// that one question (the CLIs' "corrupt" exit codes, pitr's "do not
// retry"), as pebble callers ask errors.Is(err, base.ErrCorruption).
// Where the corruption is (file or object, offset, LSN), when known, is in
// a *CorruptionError (errors.As).
//
// It is its own package, importing only the standard library, because the
// packages that report corruption span both sides of the log: the writer
// (segment, checkpoint, wal) and the read side (change, archive, pitr,
// kafkasink, consumer), and the read side must not link the writer. It is
// not internal because errors.Is(err, ErrCorruption) is part of the API of
// those public packages.
package walerr

import (
	"errors"
	"strconv"
	"strings"
)

// ErrCorruption is matched by every corruption error, and wrapped by those
// that are not a *CorruptionError.
var ErrCorruption = errors.New("corrupt data")

// CorruptionError reports corrupt bytes and where they are. errors.Is(e,
// ErrCorruption) is true. Its message is
//
//	<Component>: corrupt <Object> offset <Offset> at LSN <LSN>: <Reason>
//
// without the offset when Offset is negative, and without the LSN when LSN
// is 0.
type CorruptionError struct {
	// Component names the package that found the corruption ("segment",
	// "checkpoint", "archive").
	Component string
	// Object is the file name, path or object key holding the bytes.
	Object string
	// Offset is the byte offset of the bad header, frame or record in
	// Object; negative when it is not known or not meaningful.
	Offset int64
	// LSN is the LSN of the bad record; 0 when not known.
	LSN uint64
	// Reason says what is wrong.
	Reason string
}

func (e *CorruptionError) Error() string {
	var b strings.Builder
	b.WriteString(e.Component)
	b.WriteString(": corrupt ")
	b.WriteString(e.Object)
	if e.Offset >= 0 {
		b.WriteString(" offset ")
		b.WriteString(strconv.FormatInt(e.Offset, 10))
	}
	if e.LSN != 0 {
		b.WriteString(" at LSN ")
		b.WriteString(strconv.FormatUint(e.LSN, 10))
	}
	b.WriteString(": ")
	b.WriteString(e.Reason)
	return b.String()
}

// Is makes errors.Is(e, ErrCorruption) true.
func (e *CorruptionError) Is(target error) bool { return target == ErrCorruption }

// Kind returns a sentinel error with message msg for one package's kind of
// corruption (a malformed Kafka message, say): errors.Is(Kind(msg),
// ErrCorruption) is true, and errors wrapping it match both it and
// ErrCorruption.
func Kind(msg string) error { return &kindError{msg} }

type kindError struct{ msg string }

func (e *kindError) Error() string        { return e.msg }
func (e *kindError) Is(target error) bool { return target == ErrCorruption }
