package change

import (
	"errors"
	"fmt"
	"strings"

	"github.com/walship/walship/walerr"
)

// Sentinel errors. Test for them with errors.Is; the concrete errors are
// *DecodeError and *InvalidError, which carry where the problem is. A
// *DecodeError about bytes that are not a well-formed record of a
// supported version wraps walerr.ErrCorruption, walship's one corruption
// marker.
var (
	// ErrUnsupportedVersion is wrapped by a *DecodeError whose record
	// starts with a format version newer than this build reads: the record
	// may be intact, but a newer walship wrote it.
	ErrUnsupportedVersion = errors.New("change: unsupported record version")
	// ErrInvalid is wrapped by every *InvalidError: malformed JSON input or
	// a Change, Txn or TxHeader that fails Validate.
	ErrInvalid = errors.New("change: invalid input")
)

// DecodeError reports a record that DecodeRecord cannot decode.
type DecodeError struct {
	// Offset is the byte offset within the record where the bad element
	// starts.
	Offset int
	// Reason says what is wrong, e.g. "string length 300 exceeds the 5
	// remaining bytes".
	Reason string
	// Err is walerr.ErrCorruption or ErrUnsupportedVersion; nil means
	// walerr.ErrCorruption.
	Err error
}

func (e *DecodeError) Error() string {
	what := "change: corrupt record"
	if e.Err != nil && e.Err != walerr.ErrCorruption {
		what = e.Err.Error()
	}
	return fmt.Sprintf("%s at offset %d: %s", what, e.Offset, e.Reason)
}

// Unwrap returns e.Err, or walerr.ErrCorruption when e.Err is nil.
func (e *DecodeError) Unwrap() error {
	if e.Err == nil {
		return walerr.ErrCorruption
	}
	return e.Err
}

// InvalidError reports malformed input (a line of `walship append`, a line of
// `walship dump`, a JSON value) or a value that fails Validate. Its message
// names the line (when known), the JSON path of the offending element and
// what is wrong, e.g.
//
//	line 7: changes[2].after.v: $type "bytes": invalid base64: illegal base64 data at input byte 4
type InvalidError struct {
	// Line is the 1-based input line number; 0 when the input is not
	// line-oriented (ParseTxnLine leaves it 0; Decoder sets it).
	Line int
	// Path is the JSON path of the offending element, e.g.
	// `changes[2].after.v` or `after["my col"]`; "" means the whole input.
	Path string
	// Reason says what is wrong.
	Reason string
}

func (e *InvalidError) Error() string {
	var b strings.Builder
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Reason)
	return b.String()
}

// Unwrap returns ErrInvalid.
func (e *InvalidError) Unwrap() error { return ErrInvalid }
