package change

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Kind is the type of a Value. The numeric values are stored in records: do
// not renumber.
type Kind uint8

// The kinds of Value. The zero Value has KindNull.
const (
	KindNull      Kind = 0
	KindBool      Kind = 1
	KindInt       Kind = 2  // int64
	KindFloat     Kind = 3  // float64, including NaN and ±Inf
	KindNumeric   Kind = 4  // exact decimal, kept as text
	KindText      Kind = 5  // string
	KindBytes     Kind = 6  // byte string
	KindTimestamp Kind = 7  // instant, UTC, nanoseconds, years 0000-9999
	KindJSON      Kind = 8  // raw JSON text, compacted
	KindArray     Kind = 9  // []Value
	KindUnknown   Kind = 10 // a source type walship does not model, as text with its type name
	numKinds      Kind = 11
)

var kindNames = [numKinds]string{"null", "bool", "int", "float", "numeric", "text", "bytes", "timestamp", "json", "array", "unknown"}

// String returns the kind's name, as used in the "$type" JSON form.
func (k Kind) String() string {
	if k < numKinds {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// MaxNesting is the deepest nesting of arrays in a Value: an array holding
// an array holding a scalar has depth 2. Validate, DecodeRecord and the
// JSON parsers reject deeper values (Postgres arrays have at most 6
// dimensions).
const MaxNesting = 64

// Value is a typed column value that keeps its exact representation: a
// Numeric keeps its decimal text, a Timestamp its nanoseconds, a JSON value
// its text (compacted), a Float its bits (every NaN is stored as one
// canonical NaN). The zero Value is Null.
//
// Values are immutable once built: build them with the *Value constructors,
// read them with the accessors, compare them with Equal. Copying a Value is
// cheap and shares its storage.
type Value struct {
	kind Kind
	nsec int32   // Timestamp: nanoseconds within the second
	num  uint64  // Bool (0/1), Int (two's complement), Float (IEEE bits), Timestamp (Unix seconds, two's complement)
	str  string  // Numeric, Text, Bytes, JSON, Unknown (its text)
	typ  string  // Unknown: the source type name
	arr  []Value // Array
}

// canonicalNaN is the bit pattern every NaN is stored as.
const canonicalNaN = 0x7ff8000000000001

// NullValue returns the SQL NULL (the zero Value).
func NullValue() Value { return Value{} }

// BoolValue returns a Bool.
func BoolValue(b bool) Value {
	if b {
		return Value{kind: KindBool, num: 1}
	}
	return Value{kind: KindBool}
}

// IntValue returns an Int.
func IntValue(i int64) Value { return Value{kind: KindInt, num: uint64(i)} }

// FloatValue returns a Float. NaN, +Inf, -Inf and -0 are kept (any NaN
// becomes one canonical NaN, so NaN Equals NaN; -0 does not Equal +0).
func FloatValue(f float64) Value {
	bits := math.Float64bits(f)
	if f != f {
		bits = canonicalNaN
	}
	return Value{kind: KindFloat, num: bits}
}

// NumericValue returns a Numeric holding s exactly. s must be a JSON number
// literal (optional '-', digits without leading zeros, optional fraction,
// optional exponent: "12.30", "-0.5", "1e-7",
// "123456789012345678901234567890.000000001") or one of "NaN", "Infinity",
// "-Infinity".
func NumericValue(s string) (Value, error) {
	if !isNumeric(s) {
		return Value{}, &InvalidError{Reason: fmt.Sprintf("invalid numeric %q", s)}
	}
	return Value{kind: KindNumeric, str: s}, nil
}

// TextValue returns a Text. Validate requires valid UTF-8.
func TextValue(s string) Value { return Value{kind: KindText, str: s} }

// BytesValue returns a Bytes holding a copy of b.
func BytesValue(b []byte) Value { return Value{kind: KindBytes, str: string(b)} }

// TimestampValue returns a Timestamp for the instant t, in UTC, with its
// nanoseconds (the location and monotonic reading are dropped). The year
// must be within 0000-9999, the range of RFC 3339; carry other timestamps
// (and Postgres's infinity) as UnknownValue with their source text.
func TimestampValue(t time.Time) (Value, error) {
	if !timeInRange(t) {
		return Value{}, &InvalidError{Reason: fmt.Sprintf("timestamp %s outside years 0000-9999", t.UTC().Format(time.RFC3339Nano))}
	}
	return Value{kind: KindTimestamp, num: uint64(t.Unix()), nsec: int32(t.Nanosecond())}, nil
}

// Unix seconds of 0000-01-01T00:00:00Z and of 10000-01-01T00:00:00Z.
const (
	minUnix = -62167219200
	maxUnix = 253402300800 // exclusive
)

func timeInRange(t time.Time) bool {
	s := t.Unix()
	return s >= minUnix && s < maxUnix
}

// JSONValue returns a JSON value holding raw, compacted (insignificant
// whitespace removed; keys, their order and duplicates, numbers and string
// escapes are kept as written). raw must be one valid JSON value (RFC 8259,
// without lone UTF-16 surrogates in \u escapes) in valid UTF-8.
func JSONValue(raw []byte) (Value, error) {
	if !utf8.Valid(raw) {
		return Value{}, &InvalidError{Reason: "JSON value is not valid UTF-8"}
	}
	if !validJSON(raw) {
		return Value{}, &InvalidError{Reason: "invalid JSON value"}
	}
	return Value{kind: KindJSON, str: string(appendCompact(nil, raw))}, nil
}

// ArrayValue returns an Array of elems. It takes ownership of elems: do not
// modify the slice afterwards.
func ArrayValue(elems ...Value) Value {
	if elems == nil {
		elems = []Value{}
	}
	return Value{kind: KindArray, arr: elems}
}

// UnknownValue returns a value of a source type that walship does not model
// (e.g. "tsvector", "interval"), as the source's text for it. Validate
// requires a non-empty type name and valid UTF-8.
func UnknownValue(typeName, text string) Value {
	return Value{kind: KindUnknown, typ: typeName, str: text}
}

// Kind returns the kind of v.
func (v Value) Kind() Kind { return v.kind }

// IsNull reports whether v is Null.
func (v Value) IsNull() bool { return v.kind == KindNull }

// Bool returns the boolean of a Bool; ok is false for other kinds.
func (v Value) Bool() (b, ok bool) { return v.num != 0, v.kind == KindBool }

// Int returns the integer of an Int; ok is false for other kinds.
func (v Value) Int() (int64, bool) {
	if v.kind != KindInt {
		return 0, false
	}
	return int64(v.num), true
}

// Float returns the number of a Float; ok is false for other kinds.
func (v Value) Float() (float64, bool) {
	if v.kind != KindFloat {
		return 0, false
	}
	return math.Float64frombits(v.num), true
}

// Numeric returns the decimal text of a Numeric; ok is false for other kinds.
func (v Value) Numeric() (string, bool) { return v.str, v.kind == KindNumeric }

// Text returns the string of a Text; ok is false for other kinds.
func (v Value) Text() (string, bool) {
	if v.kind != KindText {
		return "", false
	}
	return v.str, true
}

// Bytes returns a copy of the bytes of a Bytes; ok is false for other kinds.
func (v Value) Bytes() ([]byte, bool) {
	if v.kind != KindBytes {
		return nil, false
	}
	return []byte(v.str), true
}

// Timestamp returns the instant of a Timestamp, in UTC; ok is false for
// other kinds.
func (v Value) Timestamp() (time.Time, bool) {
	if v.kind != KindTimestamp {
		return time.Time{}, false
	}
	return time.Unix(int64(v.num), int64(v.nsec)).UTC(), true
}

// JSON returns the compacted text of a JSON value (a fresh copy); ok is
// false for other kinds.
func (v Value) JSON() (json.RawMessage, bool) {
	if v.kind != KindJSON {
		return nil, false
	}
	return json.RawMessage(v.str), true
}

// Array returns the elements of an Array; ok is false for other kinds. The
// slice is shared with v: do not modify it.
func (v Value) Array() ([]Value, bool) {
	if v.kind != KindArray {
		return nil, false
	}
	return v.arr, true
}

// Unknown returns the source type name and text of an Unknown; ok is false
// for other kinds.
func (v Value) Unknown() (typeName, text string, ok bool) {
	if v.kind != KindUnknown {
		return "", "", false
	}
	return v.typ, v.str, true
}

// Equal reports whether v and o are the same value: the same kind and the
// same exact representation. Numerics compare as text ("1.0" is not "1"),
// JSON as compacted text, Floats by bits (NaN equals NaN, -0 is not +0),
// Timestamps as instants.
func (v Value) Equal(o Value) bool {
	if v.kind != o.kind || v.num != o.num || v.nsec != o.nsec || v.str != o.str || v.typ != o.typ {
		return false
	}
	if v.kind != KindArray {
		return true
	}
	if len(v.arr) != len(o.arr) {
		return false
	}
	for i := range v.arr {
		if !v.arr[i].Equal(o.arr[i]) {
			return false
		}
	}
	return true
}

// String returns v's output JSON form (see AppendJSON).
func (v Value) String() string { return string(v.AppendJSON(nil)) }

// MarshalJSON returns v's output JSON form (see AppendJSON).
func (v Value) MarshalJSON() ([]byte, error) { return v.AppendJSON(nil), nil }

// UnmarshalJSON sets *v from a JSON value in the input mapping (see
// ParseValue).
func (v *Value) UnmarshalJSON(data []byte) error {
	x, err := ParseValue(data)
	if err != nil {
		return err
	}
	*v = x
	return nil
}

// isNumeric reports whether s is a JSON number literal or NaN, Infinity or
// -Infinity.
func isNumeric(s string) bool {
	switch s {
	case "NaN", "Infinity", "-Infinity":
		return true
	}
	return isJSONNumber(s)
}

// isJSONNumber reports whether s matches the JSON number grammar
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func isJSONNumber(s string) bool {
	i := 0
	if i < len(s) && s[i] == '-' {
		i++
	}
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case i < len(s) && s[i] >= '1' && s[i] <= '9':
		for i < len(s) && isDigit(s[i]) {
			i++
		}
	default:
		return false
	}
	if i < len(s) && s[i] == '.' {
		i++
		j := i
		for i < len(s) && isDigit(s[i]) {
			i++
		}
		if i == j {
			return false
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		j := i
		for i < len(s) && isDigit(s[i]) {
			i++
		}
		if i == j {
			return false
		}
	}
	return i == len(s)
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// numericIsPlain reports whether a Numeric's text can be printed as a bare
// JSON number: it must be a JSON number that the input mapping does not
// read as an Int.
func numericIsPlain(s string) bool {
	return isJSONNumber(s) && !isInt64Literal(s)
}

// isInt64Literal reports whether the JSON number s is an integer literal
// (no fraction, no exponent) within the int64 range: what
// strconv.ParseInt accepts, without its allocation on failure.
func isInt64Literal(s string) bool {
	if strings.ContainsAny(s, ".eE") {
		return false
	}
	limit := "9223372036854775807"
	if s[0] == '-' {
		s, limit = s[1:], "9223372036854775808"
	}
	return len(s) < len(limit) || len(s) == len(limit) && s <= limit
}

// appendCompact appends src, valid JSON, without insignificant whitespace.
func appendCompact(dst, src []byte) []byte {
	inStr, esc := false, false
	start := 0
	for i, c := range src {
		if inStr {
			switch {
			case esc:
				esc = false
			case c == '\\':
				esc = true
			case c == '"':
				inStr = false
			}
			continue
		}
		switch c {
		case '"':
			inStr = true
		case ' ', '\t', '\n', '\r':
			dst = append(dst, src[start:i]...)
			start = i + 1
		}
	}
	return append(dst, src[start:]...)
}

// isCompact reports whether the valid JSON src has no insignificant
// whitespace.
func isCompact(src []byte) bool {
	inStr, esc := false, false
	for _, c := range src {
		if inStr {
			switch {
			case esc:
				esc = false
			case c == '\\':
				esc = true
			case c == '"':
				inStr = false
			}
			continue
		}
		switch c {
		case '"':
			inStr = true
		case ' ', '\t', '\n', '\r':
			return false
		}
	}
	return true
}

// hasTypeKey reports whether the valid JSON text s is an object with a
// top-level key "$type" (after unescaping). Whitespace is allowed.
func hasTypeKey(s string) bool {
	if len(s) == 0 || s[0] != '{' {
		return false
	}
	if !strings.Contains(s, "$type") && !strings.Contains(s, `\u`) {
		return false
	}
	depth := 0
	for i := 0; i < len(s); {
		switch c := s[i]; c {
		case '{', '[':
			depth++
			i++
		case '}', ']':
			depth--
			i++
		case '"':
			j := i + 1
			escaped := false
			for j < len(s) && s[j] != '"' {
				if s[j] == '\\' {
					escaped = true
					j++
				}
				j++
			}
			j++ // past the closing quote
			if depth == 1 {
				k := j
				for k < len(s) && (s[k] == ' ' || s[k] == '\t' || s[k] == '\n' || s[k] == '\r') {
					k++
				}
				if k < len(s) && s[k] == ':' {
					if j <= len(s) && isTypeKey(s[i+1:j-1], escaped) {
						return true
					}
				}
			}
			i = j
		default:
			i++
		}
	}
	return false
}

// isTypeKey reports whether the body of a JSON string (between its quotes)
// stands for "$type". Only \uXXXX escapes can spell its characters.
func isTypeKey(body string, escaped bool) bool {
	const want = "$type"
	if !escaped {
		return body == want
	}
	for i := 0; i < len(want); i++ {
		if len(body) > 0 && body[0] == want[i] {
			body = body[1:]
			continue
		}
		if len(body) < 6 || body[0] != '\\' || body[1] != 'u' {
			return false
		}
		x, err := strconv.ParseUint(body[2:6], 16, 16)
		if err != nil || x != uint64(want[i]) {
			return false
		}
		body = body[6:]
	}
	return body == ""
}
