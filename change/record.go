package change

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"slices"
	"time"
	"unicode/utf8"
)

// RecordVersion is the format version written as the first byte of every
// record.
const RecordVersion = 1

// Record flags (second byte).
const (
	flagHeader  = 1 << 0
	flagKey     = 1 << 1
	flagBefore  = 1 << 2
	flagAfter   = 1 << 3
	flagTypes   = 1 << 4
	flagMessage = 1 << 5
	flagTrunc   = 1 << 6
	flagsKnown  = 1<<7 - 1
)

// Header flags (first byte of the header).
const (
	hdrSourceLSN  = 1 << 0
	hdrCommitTime = 1 << 1
	hdrOrigin     = 1 << 2
	hdrIdem       = 1 << 3
	hdrInRequest  = 1 << 4
	hdrIdemAt     = 1 << 5 // the idempotency mark has appended_at
	hdrSnapshot   = 1 << 6 // a snapshot position byte follows
	hdrKnown      = 1<<7 - 1
)

// Message flags.
const (
	msgTransactional = 1 << 0
	msgKnown         = 1<<1 - 1
)

// AppendRecord appends the binary record of c to dst and returns the
// extended slice; hdr is the transaction header for the first change of a
// transaction and nil for the others. The layout is in the package doc.
//
// AppendRecord does not validate: callers must Validate the transaction
// first, since only valid changes are guaranteed to come back Equal from
// DecodeRecord. It allocates nothing beyond growing dst (once, to
// RecordSize(hdr, c) more bytes, if its capacity is short). It does not
// retain dst, hdr or c.
func AppendRecord(dst []byte, hdr *TxHeader, c *Change) []byte {
	dst = slices.Grow(dst, RecordSize(hdr, c))
	flags := byte(0)
	if hdr != nil {
		flags |= flagHeader
	}
	if c.Key != nil {
		flags |= flagKey
	}
	if c.Before != nil {
		flags |= flagBefore
	}
	if c.After != nil {
		flags |= flagAfter
	}
	if len(c.Types) > 0 {
		flags |= flagTypes
	}
	if c.Message != nil {
		flags |= flagMessage
	}
	if c.TruncateOpts != 0 {
		flags |= flagTrunc
	}
	dst = append(dst, RecordVersion, flags)
	if hdr != nil {
		hf := byte(0)
		if hdr.SourceLSN != 0 {
			hf |= hdrSourceLSN
		}
		if !hdr.SourceCommitTime.IsZero() {
			hf |= hdrCommitTime
		}
		if hdr.Origin != "" {
			hf |= hdrOrigin
		}
		if hdr.Idempotency != nil {
			hf |= hdrIdem
			if hdr.Idempotency.AppendedAt != 0 {
				hf |= hdrIdemAt
			}
		}
		if hdr.InRequest {
			hf |= hdrInRequest
		}
		if hdr.Snapshot != 0 {
			hf |= hdrSnapshot
		}
		dst = append(dst, hf)
		dst = binary.AppendUvarint(dst, hdr.XID)
		if hf&hdrSourceLSN != 0 {
			dst = binary.AppendUvarint(dst, hdr.SourceLSN)
		}
		if hf&hdrCommitTime != 0 {
			dst = binary.AppendVarint(dst, hdr.SourceCommitTime.Unix())
			dst = binary.AppendUvarint(dst, uint64(hdr.SourceCommitTime.Nanosecond()))
		}
		if hf&hdrOrigin != 0 {
			dst = appendString(dst, hdr.Origin)
		}
		if m := hdr.Idempotency; m != nil {
			dst = appendString(dst, m.Key)
			dst = append(dst, m.Hash[:]...)
			dst = binary.AppendUvarint(dst, uint64(m.Start))
			dst = binary.AppendUvarint(dst, uint64(m.Count))
			if m.AppendedAt != 0 {
				dst = binary.AppendVarint(dst, m.AppendedAt)
			}
		}
		if hf&hdrSnapshot != 0 {
			dst = append(dst, byte(hdr.Snapshot))
		}
	}
	dst = append(dst, byte(c.Op))
	dst = appendString(dst, c.Table.Schema)
	dst = appendString(dst, c.Table.Name)
	for _, r := range [...]Row{c.Key, c.Before, c.After} {
		if r != nil {
			dst = binary.AppendUvarint(dst, uint64(len(r)))
			for i := range r {
				dst = appendString(dst, r[i].Name)
				dst = appendValue(dst, &r[i].Value)
			}
		}
	}
	if len(c.Types) > 0 {
		dst = binary.AppendUvarint(dst, uint64(len(c.Types)))
		for _, t := range c.Types {
			dst = appendString(dst, t.Name)
			dst = appendString(dst, t.Type)
		}
	}
	if m := c.Message; m != nil {
		mf := byte(0)
		if m.Transactional {
			mf |= msgTransactional
		}
		dst = append(dst, mf)
		dst = appendString(dst, m.Prefix)
		dst = binary.AppendUvarint(dst, uint64(len(m.Content)))
		dst = append(dst, m.Content...)
	}
	if c.TruncateOpts != 0 {
		dst = append(dst, byte(c.TruncateOpts))
	}
	return dst
}

// SetInRequest sets TxHeader.InRequest in rec, the encoded first record of
// a transaction (made by AppendRecord with a header), in place. It reports
// false, changing nothing, if rec carries no header.
func SetInRequest(rec []byte) bool {
	if len(rec) < 3 || rec[0] != RecordVersion || rec[1]&flagHeader == 0 {
		return false
	}
	rec[2] |= hdrInRequest
	return true
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

func appendValue(dst []byte, v *Value) []byte {
	dst = append(dst, byte(v.kind))
	switch v.kind {
	case KindBool:
		dst = append(dst, byte(v.num))
	case KindInt:
		dst = binary.AppendVarint(dst, int64(v.num))
	case KindFloat:
		dst = binary.LittleEndian.AppendUint64(dst, v.num)
	case KindNumeric, KindText, KindBytes, KindJSON:
		dst = appendString(dst, v.str)
	case KindTimestamp:
		dst = binary.AppendVarint(dst, int64(v.num))
		dst = binary.AppendUvarint(dst, uint64(v.nsec))
	case KindArray:
		dst = binary.AppendUvarint(dst, uint64(len(v.arr)))
		for i := range v.arr {
			dst = appendValue(dst, &v.arr[i])
		}
	case KindUnknown:
		dst = appendString(dst, v.typ)
		dst = appendString(dst, v.str)
	}
	return dst
}

// RecordSize returns the length of the record AppendRecord appends.
func RecordSize(hdr *TxHeader, c *Change) int {
	n := 2
	if hdr != nil {
		n += 1 + uvarintLen(hdr.XID)
		if hdr.SourceLSN != 0 {
			n += uvarintLen(hdr.SourceLSN)
		}
		if t := hdr.SourceCommitTime; !t.IsZero() {
			n += varintLen(t.Unix()) + uvarintLen(uint64(t.Nanosecond()))
		}
		if hdr.Origin != "" {
			n += stringLen(hdr.Origin)
		}
		if m := hdr.Idempotency; m != nil {
			n += stringLen(m.Key) + len(m.Hash) + uvarintLen(uint64(m.Start)) + uvarintLen(uint64(m.Count))
			if m.AppendedAt != 0 {
				n += varintLen(m.AppendedAt)
			}
		}
		if hdr.Snapshot != 0 {
			n++
		}
	}
	n += 1 + stringLen(c.Table.Schema) + stringLen(c.Table.Name)
	for _, r := range [...]Row{c.Key, c.Before, c.After} {
		if r != nil {
			n += uvarintLen(uint64(len(r)))
			for i := range r {
				n += stringLen(r[i].Name) + valueSize(&r[i].Value)
			}
		}
	}
	if len(c.Types) > 0 {
		n += uvarintLen(uint64(len(c.Types)))
		for _, t := range c.Types {
			n += stringLen(t.Name) + stringLen(t.Type)
		}
	}
	if m := c.Message; m != nil {
		n += 1 + stringLen(m.Prefix) + uvarintLen(uint64(len(m.Content))) + len(m.Content)
	}
	if c.TruncateOpts != 0 {
		n++
	}
	return n
}

func valueSize(v *Value) int {
	n := 1
	switch v.kind {
	case KindBool:
		n++
	case KindInt:
		n += varintLen(int64(v.num))
	case KindFloat:
		n += 8
	case KindNumeric, KindText, KindBytes, KindJSON:
		n += stringLen(v.str)
	case KindTimestamp:
		n += varintLen(int64(v.num)) + uvarintLen(uint64(v.nsec))
	case KindArray:
		n += uvarintLen(uint64(len(v.arr)))
		for i := range v.arr {
			n += valueSize(&v.arr[i])
		}
	case KindUnknown:
		n += stringLen(v.typ) + stringLen(v.str)
	}
	return n
}

func uvarintLen(x uint64) int { return (bits.Len64(x|1) + 6) / 7 }
func varintLen(x int64) int   { return uvarintLen(uint64(x<<1) ^ uint64(x>>63)) }
func stringLen(s string) int  { return uvarintLen(uint64(len(s))) + len(s) }

// DecodeRecord decodes a record made by AppendRecord. hdr is nil unless the
// record is the first of its transaction.
//
// Every length is checked against the bytes that remain before anything is
// allocated, so the memory used is bounded by a small multiple of len(b).
// The decoded strings share one copy of b; b is not retained. Errors are
// *DecodeError wrapping walerr.ErrCorruption (or ErrUnsupportedVersion for a record
// of a newer format); the Offset says where in b the bad element starts.
//
// DecodeRecord checks the structure (lengths, flags, kinds, value
// invariants such as JSON being valid and compact, timestamps in range,
// nesting depth, no trailing bytes) but not the rules of Change.Validate:
// a record written from an invalid Change still decodes, so nothing written
// is ever unreadable for that reason.
func DecodeRecord(b []byte) (hdr *TxHeader, c Change, err error) {
	if len(b) == 0 {
		return nil, Change{}, &DecodeError{Offset: 0, Reason: "empty record"}
	}
	switch v := b[0]; {
	case v == 0:
		return nil, Change{}, &DecodeError{Offset: 0, Reason: "format version 0"}
	case v != RecordVersion:
		return nil, Change{}, &DecodeError{Offset: 0, Err: ErrUnsupportedVersion,
			Reason: fmt.Sprintf("format version %d (this build reads %d)", v, RecordVersion)}
	}
	d := decoder{b: b, s: string(b), off: 1}
	flags, err := d.byte()
	if err != nil {
		return nil, Change{}, err
	}
	if flags&^flagsKnown != 0 {
		return nil, Change{}, d.failAt(1, "unknown flags %#02x", flags&^flagsKnown)
	}
	if flags&flagHeader != 0 {
		hdr, err = d.header()
		if err != nil {
			return nil, Change{}, err
		}
	}
	op, err := d.byte()
	if err != nil {
		return nil, Change{}, err
	}
	c.Op = Op(op)
	if c.Table.Schema, err = d.str(); err != nil {
		return nil, Change{}, err
	}
	if c.Table.Name, err = d.str(); err != nil {
		return nil, Change{}, err
	}
	for _, r := range [...]struct {
		flag byte
		row  *Row
	}{{flagKey, &c.Key}, {flagBefore, &c.Before}, {flagAfter, &c.After}} {
		if flags&r.flag != 0 {
			if *r.row, err = d.row(); err != nil {
				return nil, Change{}, err
			}
		}
	}
	if flags&flagTypes != 0 {
		if c.Types, err = d.types(); err != nil {
			return nil, Change{}, err
		}
	}
	if flags&flagMessage != 0 {
		if c.Message, err = d.message(); err != nil {
			return nil, Change{}, err
		}
	}
	if flags&flagTrunc != 0 {
		at := d.off
		b, err := d.byte()
		if err != nil {
			return nil, Change{}, err
		}
		if b == 0 || b&^truncateKnown != 0 {
			return nil, Change{}, d.failAt(at, "invalid truncate options %#02x", b)
		}
		c.TruncateOpts = TruncateOptions(b)
	}
	if d.off != len(b) {
		return nil, Change{}, d.fail("%d trailing bytes", len(b)-d.off)
	}
	return hdr, c, nil
}

type decoder struct {
	b   []byte
	s   string // string(b): decoded strings are substrings of it
	off int
}

func (d *decoder) fail(format string, args ...any) error {
	return d.failAt(d.off, format, args...)
}

func (d *decoder) failAt(off int, format string, args ...any) error {
	return &DecodeError{Offset: off, Reason: fmt.Sprintf(format, args...)}
}

func (d *decoder) byte() (byte, error) {
	if d.off >= len(d.b) {
		return 0, d.fail("unexpected end of record")
	}
	c := d.b[d.off]
	d.off++
	return c, nil
}

func (d *decoder) uvarint() (uint64, error) {
	x, n := binary.Uvarint(d.b[d.off:])
	if n <= 0 {
		if n == 0 {
			return 0, d.fail("unexpected end of record in varint")
		}
		return 0, d.fail("varint overflows 64 bits")
	}
	d.off += n
	return x, nil
}

func (d *decoder) varint() (int64, error) {
	x, n := binary.Varint(d.b[d.off:])
	if n <= 0 {
		if n == 0 {
			return 0, d.fail("unexpected end of record in varint")
		}
		return 0, d.fail("varint overflows 64 bits")
	}
	d.off += n
	return x, nil
}

// count reads a count of elements each at least minSize bytes long and
// checks it against the remaining bytes.
func (d *decoder) count(what string, minSize int) (int, error) {
	at := d.off
	n, err := d.uvarint()
	if err != nil {
		return 0, err
	}
	if rem := uint64(len(d.b) - d.off); n > rem/uint64(minSize) {
		return 0, d.failAt(at, "%s count %d exceeds what the %d remaining bytes can hold", what, n, rem)
	}
	return int(n), nil
}

// span reads a length-prefixed byte string and returns its bounds.
func (d *decoder) span() (start, end int, err error) {
	at := d.off
	n, err := d.uvarint()
	if err != nil {
		return 0, 0, err
	}
	if rem := uint64(len(d.b) - d.off); n > rem {
		return 0, 0, d.failAt(at, "length %d exceeds the %d remaining bytes", n, rem)
	}
	start = d.off
	d.off += int(n)
	return start, d.off, nil
}

func (d *decoder) str() (string, error) {
	start, end, err := d.span()
	if err != nil {
		return "", err
	}
	return d.s[start:end], nil
}

func (d *decoder) header() (*TxHeader, error) {
	at := d.off
	hf, err := d.byte()
	if err != nil {
		return nil, err
	}
	if hf&^hdrKnown != 0 {
		return nil, d.failAt(at, "unknown header flags %#02x", hf&^hdrKnown)
	}
	h := new(TxHeader)
	if h.XID, err = d.uvarint(); err != nil {
		return nil, err
	}
	if hf&hdrSourceLSN != 0 {
		if h.SourceLSN, err = d.uvarint(); err != nil {
			return nil, err
		}
	}
	if hf&hdrCommitTime != 0 {
		at := d.off
		sec, err := d.varint()
		if err != nil {
			return nil, err
		}
		nsec, err := d.uvarint()
		if err != nil {
			return nil, err
		}
		if nsec >= 1e9 {
			return nil, d.failAt(at, "commit time nanoseconds %d out of range", nsec)
		}
		h.SourceCommitTime = time.Unix(sec, int64(nsec)).UTC()
		if h.SourceCommitTime.IsZero() {
			return nil, d.failAt(at, "zero commit time flagged as present")
		}
	}
	if hf&hdrOrigin != 0 {
		if h.Origin, err = d.str(); err != nil {
			return nil, err
		}
	}
	if hf&hdrIdem != 0 {
		if h.Idempotency, err = d.idempotency(); err != nil {
			return nil, err
		}
	}
	if hf&hdrIdemAt != 0 {
		at := d.off
		if hf&hdrIdem == 0 {
			return nil, d.failAt(at, "idempotency append time without a mark")
		}
		if h.Idempotency.AppendedAt, err = d.varint(); err != nil {
			return nil, err
		}
		if h.Idempotency.AppendedAt == 0 {
			return nil, d.failAt(at, "zero idempotency append time flagged as present")
		}
	}
	if hf&hdrSnapshot != 0 {
		at := d.off
		b, err := d.byte()
		if err != nil {
			return nil, err
		}
		if b == 0 || b&^snapshotKnown != 0 {
			return nil, d.failAt(at, "snapshot position %#02x: want known bits, not none", b)
		}
		h.Snapshot = SnapshotPos(b)
	}
	h.InRequest = hf&hdrInRequest != 0
	return h, nil
}

func (d *decoder) idempotency() (*IdempotencyMark, error) {
	at := d.off
	m := new(IdempotencyMark)
	var err error
	if m.Key, err = d.str(); err != nil {
		return nil, err
	}
	if len(d.b)-d.off < len(m.Hash) {
		return nil, d.fail("unexpected end of record in idempotency hash")
	}
	d.off += copy(m.Hash[:], d.b[d.off:])
	var start, count uint64
	if start, err = d.uvarint(); err != nil {
		return nil, err
	}
	if count, err = d.uvarint(); err != nil {
		return nil, err
	}
	if count > 1<<32-1 || start >= count {
		return nil, d.failAt(at, "idempotency mark start %d, count %d", start, count)
	}
	m.Start, m.Count = uint32(start), uint32(count)
	return m, nil
}

func (d *decoder) row() (Row, error) {
	n, err := d.count("column", 2) // name length + kind
	if err != nil {
		return nil, err
	}
	r := make(Row, n)
	for i := range r {
		if r[i].Name, err = d.str(); err != nil {
			return nil, err
		}
		if r[i].Value, err = d.value(0); err != nil {
			return nil, err
		}
	}
	return r, nil
}

func (d *decoder) types() ([]ColumnType, error) {
	n, err := d.count("type", 2)
	if err != nil {
		return nil, err
	}
	ts := make([]ColumnType, n)
	for i := range ts {
		if ts[i].Name, err = d.str(); err != nil {
			return nil, err
		}
		if ts[i].Type, err = d.str(); err != nil {
			return nil, err
		}
	}
	return ts, nil
}

func (d *decoder) message() (*LogicalMessage, error) {
	at := d.off
	mf, err := d.byte()
	if err != nil {
		return nil, err
	}
	if mf&^msgKnown != 0 {
		return nil, d.failAt(at, "unknown message flags %#02x", mf&^msgKnown)
	}
	m := &LogicalMessage{Transactional: mf&msgTransactional != 0}
	if m.Prefix, err = d.str(); err != nil {
		return nil, err
	}
	start, end, err := d.span()
	if err != nil {
		return nil, err
	}
	if end > start {
		m.Content = slices.Clone(d.b[start:end])
	}
	return m, nil
}

// value decodes a value inside depth arrays.
func (d *decoder) value(depth int) (Value, error) {
	at := d.off
	k, err := d.byte()
	if err != nil {
		return Value{}, err
	}
	v := Value{kind: Kind(k)}
	switch v.kind {
	case KindNull:
	case KindBool:
		b, err := d.byte()
		if err != nil {
			return Value{}, err
		}
		if b > 1 {
			return Value{}, d.failAt(at+1, "bool byte %#02x", b)
		}
		v.num = uint64(b)
	case KindInt:
		i, err := d.varint()
		if err != nil {
			return Value{}, err
		}
		v.num = uint64(i)
	case KindFloat:
		if len(d.b)-d.off < 8 {
			return Value{}, d.fail("unexpected end of record in float")
		}
		v.num = binary.LittleEndian.Uint64(d.b[d.off:])
		d.off += 8
		if v.num&0x7ff0000000000000 == 0x7ff0000000000000 && v.num&(1<<52-1) != 0 {
			v.num = canonicalNaN
		}
	case KindNumeric, KindText, KindBytes:
		if v.str, err = d.str(); err != nil {
			return Value{}, err
		}
		if v.kind == KindNumeric && !isNumeric(v.str) {
			return Value{}, d.failAt(at, "invalid numeric %q", v.str)
		}
	case KindJSON:
		start, end, err := d.span()
		if err != nil {
			return Value{}, err
		}
		raw := d.b[start:end]
		if !utf8.Valid(raw) || !validJSON(raw) || !isCompact(raw) {
			return Value{}, d.failAt(at, "JSON value is not valid, compact JSON in UTF-8")
		}
		v.str = d.s[start:end]
	case KindTimestamp:
		sec, err := d.varint()
		if err != nil {
			return Value{}, err
		}
		nsec, err := d.uvarint()
		if err != nil {
			return Value{}, err
		}
		if nsec >= 1e9 || sec < minUnix || sec >= maxUnix {
			return Value{}, d.failAt(at, "timestamp %d.%09d out of range", sec, nsec)
		}
		v.num, v.nsec = uint64(sec), int32(nsec)
	case KindArray:
		if depth >= MaxNesting {
			return Value{}, d.failAt(at, "arrays nested more than %d deep", MaxNesting)
		}
		n, err := d.count("array element", 1)
		if err != nil {
			return Value{}, err
		}
		v.arr = make([]Value, n)
		for i := range v.arr {
			if v.arr[i], err = d.value(depth + 1); err != nil {
				return Value{}, err
			}
		}
	case KindUnknown:
		if v.typ, err = d.str(); err != nil {
			return Value{}, err
		}
		if v.str, err = d.str(); err != nil {
			return Value{}, err
		}
	default:
		return Value{}, d.failAt(at, "unknown value kind %d", k)
	}
	return v, nil
}
