package change

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// MaxLineSize is the longest input line Decoder accepts, without its line
// terminator.
const MaxLineSize = 64 << 20

// Decoder reads `walship append` input: NDJSON, one transaction per line
// (see ParseTxnLine). Lines may end in "\n" or "\r\n"; the last may lack a
// terminator; blank lines (only spaces and tabs) are skipped.
//
// A Decoder is not safe for concurrent use.
type Decoder struct {
	sc      *bufio.Scanner
	maxLine int
	line    int   // number of the last line read
	err     error // sticky: io.EOF, a read error or a too-long line
	charge  func(int) error
}

// SetCharge makes Next tell fn, as it decodes a line, about the memory the
// decoded transaction takes: an estimate in bytes, counted as its changes,
// columns and values are decoded, in steps of up to 64 KiB. An error from
// fn ends the decoding of the line: Next returns that error as it is.
// Nothing is counted for the line being read, nor for what the caller
// keeps after Next returns.
func (d *Decoder) SetCharge(fn func(n int) error) { d.charge = fn }

// NewDecoder returns a Decoder reading from r. It buffers: it may read
// more of r than the lines it has returned.
func NewDecoder(r io.Reader) *Decoder { return newDecoderSize(r, MaxLineSize) }

func newDecoderSize(r io.Reader, maxLine int) *Decoder {
	sc := bufio.NewScanner(r)
	// The scanner needs room for the terminator too.
	sc.Buffer(make([]byte, 0, min(64<<10, maxLine+2)), maxLine+2)
	return &Decoder{sc: sc, maxLine: maxLine}
}

// Next returns the next transaction and the number (from 1) of the line it
// was on. At the end of the input it returns io.EOF.
//
// A malformed line gives an *InvalidError with Line set; Next may be called
// again to go on with the following line. A read error or a line longer
// than MaxLineSize ends the input: Next returns that error (an
// *InvalidError for a long line, naming it) from then on. Next blocks
// reading from the underlying reader.
func (d *Decoder) Next() (line int, txn Txn, err error) {
	if d.err != nil {
		return d.line, Txn{}, d.err
	}
	for d.sc.Scan() {
		d.line++
		b := d.sc.Bytes()
		if len(b) > d.maxLine {
			d.err = d.tooLong()
			return d.line, Txn{}, d.err
		}
		if len(bytes.Trim(b, " \t\r")) == 0 {
			continue
		}
		txn, err := parseTxnLine(b, d.charge)
		if err != nil {
			if ie, ok := errors.AsType[*InvalidError](err); ok {
				ie.Line = d.line
			}
			return d.line, Txn{}, err
		}
		return d.line, txn, nil
	}
	switch err := d.sc.Err(); {
	case err == nil:
		d.err = io.EOF
		return d.line, Txn{}, io.EOF
	case errors.Is(err, bufio.ErrTooLong):
		d.line++
		d.err = d.tooLong()
	default:
		d.line++
		d.err = fmt.Errorf("change: reading line %d: %w", d.line, err)
	}
	return d.line, Txn{}, d.err
}

func (d *Decoder) tooLong() error {
	return &InvalidError{Line: d.line, Reason: fmt.Sprintf("line longer than %d bytes", d.maxLine)}
}
