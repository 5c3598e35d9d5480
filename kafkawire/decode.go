package kafkawire

import (
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/walship/walship/change"
)

// scanner is a small JSON reader for the envelope: Decode runs once per
// record on the consumer's hot path, where encoding/json cost more than
// applying the change. It validates what it reads, never panics and never
// reads past its input; values of fields it does not need are skipped
// (and checked for well-formedness).
type scanner struct {
	b   []byte
	pos int
}

var errSyntax = errors.New("invalid JSON")

func (s *scanner) fail(what string) error {
	return fmt.Errorf("%w at byte %d: %s", errSyntax, s.pos, what)
}

func (s *scanner) ws() {
	for s.pos < len(s.b) {
		switch s.b[s.pos] {
		case ' ', '\t', '\r', '\n':
			s.pos++
		default:
			return
		}
	}
}

func (s *scanner) peek() byte {
	s.ws()
	if s.pos < len(s.b) {
		return s.b[s.pos]
	}
	return 0
}

func (s *scanner) expect(c byte) error {
	if s.peek() != c {
		return s.fail(fmt.Sprintf("want %q", c))
	}
	s.pos++
	return nil
}

// object calls fn for each member of an object; fn must consume the value.
func (s *scanner) object(fn func(key string) error) error {
	if err := s.expect('{'); err != nil {
		return err
	}
	if s.peek() == '}' {
		s.pos++
		return nil
	}
	for {
		k, err := s.str()
		if err != nil {
			return err
		}
		if err := s.expect(':'); err != nil {
			return err
		}
		if err := fn(k); err != nil {
			return err
		}
		switch s.peek() {
		case ',':
			s.pos++
		case '}':
			s.pos++
			return nil
		default:
			return s.fail("want ',' or '}'")
		}
	}
}

// array calls fn for each element; fn must consume it.
func (s *scanner) array(fn func() error) error {
	if err := s.expect('['); err != nil {
		return err
	}
	if s.peek() == ']' {
		s.pos++
		return nil
	}
	for {
		if err := fn(); err != nil {
			return err
		}
		switch s.peek() {
		case ',':
			s.pos++
		case ']':
			s.pos++
			return nil
		default:
			return s.fail("want ',' or ']'")
		}
	}
}

func (s *scanner) isNull() bool {
	if s.peek() == 'n' && s.pos+4 <= len(s.b) && string(s.b[s.pos:s.pos+4]) == "null" {
		s.pos += 4
		return true
	}
	return false
}

// str reads a string, unescaping it.
func (s *scanner) str() (string, error) {
	if s.peek() != '"' {
		return "", s.fail("want a string")
	}
	s.pos++
	start := s.pos
	for s.pos < len(s.b) {
		c := s.b[s.pos]
		switch {
		case c == '"':
			out := string(s.b[start:s.pos])
			s.pos++
			return out, nil
		case c == '\\':
			return s.strSlow(start)
		case c < 0x20:
			return "", s.fail("control character in string")
		}
		s.pos++
	}
	return "", s.fail("unterminated string")
}

func (s *scanner) strSlow(start int) (string, error) {
	out := append([]byte(nil), s.b[start:s.pos]...)
	for s.pos < len(s.b) {
		c := s.b[s.pos]
		switch {
		case c == '"':
			s.pos++
			return string(out), nil
		case c < 0x20:
			return "", s.fail("control character in string")
		case c != '\\':
			out = append(out, c)
			s.pos++
			continue
		}
		if s.pos+1 >= len(s.b) {
			break
		}
		e := s.b[s.pos+1]
		s.pos += 2
		switch e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, ok := s.hex4()
			if !ok {
				return "", s.fail("bad \\u escape")
			}
			if utf16.IsSurrogate(r) {
				r2 := rune(-1)
				if s.pos+1 < len(s.b) && s.b[s.pos] == '\\' && s.b[s.pos+1] == 'u' {
					s.pos += 2
					if r2, ok = s.hex4(); !ok {
						return "", s.fail("bad \\u escape")
					}
				}
				if r = utf16.DecodeRune(r, r2); r == utf8.RuneError {
					return "", s.fail("lone surrogate in \\u escape")
				}
			}
			out = utf8.AppendRune(out, r)
		default:
			return "", s.fail("bad escape")
		}
	}
	return "", s.fail("unterminated string")
}

func (s *scanner) hex4() (rune, bool) {
	if s.pos+4 > len(s.b) {
		return 0, false
	}
	v, err := strconv.ParseUint(string(s.b[s.pos:s.pos+4]), 16, 32)
	if err != nil {
		return 0, false
	}
	s.pos += 4
	return rune(v), true
}

// number returns the text of a JSON number.
func (s *scanner) number() ([]byte, error) {
	s.ws()
	start := s.pos
	if s.pos < len(s.b) && s.b[s.pos] == '-' {
		s.pos++
	}
	digits := func() int {
		n := 0
		for s.pos < len(s.b) && s.b[s.pos] >= '0' && s.b[s.pos] <= '9' {
			s.pos++
			n++
		}
		return n
	}
	if n := digits(); n == 0 || (n > 1 && s.b[s.pos-n] == '0') {
		return nil, s.fail("bad number")
	}
	if s.pos < len(s.b) && s.b[s.pos] == '.' {
		s.pos++
		if digits() == 0 {
			return nil, s.fail("bad number")
		}
	}
	if s.pos < len(s.b) && (s.b[s.pos] == 'e' || s.b[s.pos] == 'E') {
		s.pos++
		if s.pos < len(s.b) && (s.b[s.pos] == '+' || s.b[s.pos] == '-') {
			s.pos++
		}
		if digits() == 0 {
			return nil, s.fail("bad number")
		}
	}
	return s.b[start:s.pos], nil
}

func (s *scanner) uint() (uint64, error) {
	n, err := s.number()
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseUint(string(n), 10, 64)
	if err != nil {
		return 0, s.fail("want an unsigned integer")
	}
	return v, nil
}

func (s *scanner) boolean() (bool, error) {
	switch {
	case s.peek() == 't' && s.pos+4 <= len(s.b) && string(s.b[s.pos:s.pos+4]) == "true":
		s.pos += 4
		return true, nil
	case s.peek() == 'f' && s.pos+5 <= len(s.b) && string(s.b[s.pos:s.pos+5]) == "false":
		s.pos += 5
		return false, nil
	}
	return false, s.fail("want true or false")
}

func (s *scanner) timestamp() (time.Time, error) {
	str, err := s.str()
	if err != nil {
		return time.Time{}, err
	}
	t, err := time.Parse(time.RFC3339Nano, str)
	if err != nil {
		return time.Time{}, s.fail(err.Error())
	}
	return t, nil
}

// skip consumes one value of any type, checking it, and returns its text.
func (s *scanner) skip(depth int) ([]byte, error) {
	if depth > change.MaxNesting+8 {
		return nil, s.fail("nested too deep")
	}
	s.ws()
	start := s.pos
	var err error
	switch s.peek() {
	case '{':
		err = s.object(func(string) error { _, err := s.skip(depth + 1); return err })
	case '[':
		err = s.array(func() error { _, err := s.skip(depth + 1); return err })
	case '"':
		_, err = s.str()
	case 't', 'f':
		_, err = s.boolean()
	case 'n':
		if !s.isNull() {
			err = s.fail("bad literal")
		}
	default:
		_, err = s.number()
	}
	return s.b[start:s.pos], err
}

// rawKinds maps a column to the text of its kind descriptor.
type rawKinds map[string][]byte

func (s *scanner) kinds() (rawKinds, error) {
	k := rawKinds{}
	err := s.object(func(col string) error {
		d, err := s.skip(0)
		k[col] = d
		return err
	})
	return k, err
}

// row decodes a row (nil for null) given its kind descriptors.
func (s *scanner) row(kinds rawKinds) (change.Row, error) {
	if s.isNull() {
		return nil, nil
	}
	row := change.Row{}
	err := s.object(func(col string) error {
		v, err := s.value(kinds[col], 0)
		if err != nil {
			return fmt.Errorf("%q: %w", col, err)
		}
		row = append(row, change.Column{Name: col, Value: v})
		return nil
	})
	return row, err
}

// value decodes one value with its kind descriptor (nil: natural).
func (s *scanner) value(desc []byte, depth int) (change.Value, error) {
	if depth > change.MaxNesting {
		return change.Value{}, s.fail("arrays nested too deep")
	}
	if len(desc) == 0 || string(desc) == "null" {
		switch c := s.peek(); {
		case c == 'n':
			if s.isNull() {
				return change.NullValue(), nil
			}
			return change.Value{}, s.fail("bad literal")
		case c == 't' || c == 'f':
			b, err := s.boolean()
			return change.BoolValue(b), err
		case c == '"':
			str, err := s.str()
			return change.TextValue(str), err
		case c == '[':
			var elems []change.Value
			err := s.array(func() error {
				v, err := s.value(nil, depth+1)
				elems = append(elems, v)
				return err
			})
			return change.ArrayValue(elems...), err
		case c == '{':
			return change.Value{}, s.fail("an object needs a kind descriptor")
		default:
			n, err := s.number()
			if err != nil {
				return change.Value{}, err
			}
			i, err := strconv.ParseInt(string(n), 10, 64)
			if err != nil {
				return change.Value{}, s.fail("a number without a kind descriptor must be an int64")
			}
			return change.IntValue(i), nil
		}
	}
	if desc[0] == '[' {
		ds := &scanner{b: desc}
		var elems []change.Value
		err := s.array(func() error {
			if len(elems) == 0 {
				if err := ds.expect('['); err != nil {
					return err
				}
			} else if err := ds.expect(','); err != nil {
				return fmt.Errorf("kind descriptor: fewer elements than the array: %w", err)
			}
			d, err := ds.skip(0)
			if err != nil {
				return err
			}
			v, err := s.value(d, depth+1)
			elems = append(elems, v)
			return err
		})
		if err != nil {
			return change.Value{}, err
		}
		if len(elems) == 0 {
			err = ds.expect('[')
		}
		if err == nil {
			err = ds.expect(']')
		}
		if err != nil {
			return change.Value{}, fmt.Errorf("kind descriptor %s does not match the array: %w", desc, err)
		}
		return change.ArrayValue(elems...), nil
	}
	kind, err := (&scanner{b: desc}).str()
	if err != nil {
		return change.Value{}, fmt.Errorf("kind descriptor %s: %w", desc, err)
	}
	if len(kind) > 0 && kind[0] == '[' {
		// An array's descriptor as a string (FormatJSONSchemas).
		return s.value([]byte(kind), depth)
	}
	if kind == "micros" || kind == "days" {
		// A timestamp as its Kafka Connect semantic type's integer.
		n, err := s.number()
		if err != nil {
			return change.Value{}, err
		}
		i, err := strconv.ParseInt(string(n), 10, 64)
		if err != nil {
			return change.Value{}, s.fail(kind + ": want an integer")
		}
		var t time.Time
		if kind == "micros" {
			t = time.UnixMicro(i).UTC()
		} else if i > -maxDays && i < maxDays {
			t = time.Unix(i*secondsPerDay, 0).UTC()
		} else {
			return change.Value{}, fmt.Errorf("days: %d out of range", i)
		}
		return change.TimestampValue(t)
	}
	if kind == "float" && s.peek() != '"' {
		n, err := s.number()
		if err != nil {
			return change.Value{}, err
		}
		f, err := strconv.ParseFloat(string(n), 64)
		if err != nil {
			return change.Value{}, s.fail("float: " + err.Error())
		}
		return change.FloatValue(f), nil
	}
	str, err := s.str()
	if err != nil {
		return change.Value{}, err
	}
	switch kind {
	case "float":
		switch str {
		case "NaN":
			return change.FloatValue(math.NaN()), nil
		case "Infinity":
			return change.FloatValue(math.Inf(1)), nil
		case "-Infinity":
			return change.FloatValue(math.Inf(-1)), nil
		}
		return change.Value{}, fmt.Errorf("float: %q", str)
	case "numeric":
		return change.NumericValue(str)
	case "bytes":
		b, err := base64.StdEncoding.DecodeString(str)
		if err != nil {
			return change.Value{}, fmt.Errorf("bytes: %v", err)
		}
		return change.BytesValue(b), nil
	case "timestamp":
		t, err := time.Parse(time.RFC3339Nano, str)
		if err != nil {
			return change.Value{}, fmt.Errorf("timestamp: %v", err)
		}
		return change.TimestampValue(t)
	case "json":
		return change.JSONValue([]byte(str))
	}
	if typ, ok := cutPrefix(kind, "unknown:"); ok && typ != "" {
		return change.UnknownValue(typ, str), nil
	}
	return change.Value{}, fmt.Errorf("unknown kind descriptor %q", kind)
}

// maxDays bounds a date's days since the epoch well past the years
// change.TimestampValue accepts, so that days*secondsPerDay cannot
// overflow.
const maxDays = 1 << 32

// unwrapSchemas returns the payload of a FormatJSONSchemas value
// ({"schema":...,"payload":...}, in either order, the schema checked for
// well-formedness only), or v itself if v is not such a wrapper: a
// FormatJSON envelope has neither member.
func unwrapSchemas(v []byte) ([]byte, error) {
	s := &scanner{b: v}
	if s.expect('{') != nil {
		return v, nil
	}
	if k, err := s.str(); err != nil || (k != "schema" && k != "payload") {
		return v, nil
	}
	s = &scanner{b: v}
	var payload []byte
	var schema bool
	err := s.object(func(k string) error {
		var err error
		switch k {
		case "schema":
			schema = true
			_, err = s.skip(0)
		case "payload":
			payload, err = s.skip(0)
		default:
			err = fmt.Errorf("member %q beside schema and payload", k)
		}
		return err
	})
	if err == nil && (s.peek() != 0 || s.pos != len(s.b)) {
		err = s.fail("data after the value")
	}
	if err == nil && (!schema || payload == nil) {
		err = errors.New(`want both "schema" and "payload"`)
	}
	if err != nil {
		return nil, fmt.Errorf("schema wrapper: %w", err)
	}
	return payload, nil
}
