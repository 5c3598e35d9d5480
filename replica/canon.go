package replica

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Canonical values: Dump turns every stored value into a canonical form
// that does not depend on where it is stored (a Postgres source, a
// Postgres replica, a SQLite replica): nil for NULL, a string for a scalar,
// a []any for an array. The canonical string of each class:
//
//	int        decimal                         "42"
//	float      shortest exact, NaN, ±Infinity   "1.5", "1e+100", "-Infinity"
//	numeric    Postgres's numeric output        "1.50", "0.0000001"
//	bool       "t" or "f"
//	bytes      "\x" and lower-case hex          "\x00ff"
//	timestamp  UTC, microseconds (nanoseconds if any), Z
//	                                            "2024-01-02T03:04:05.123456Z"
//	date       "2024-01-02"
//	json       compact, object keys sorted      {"a":1,"b":[true]}
//	text       as stored (enums, uuid, interval, date, ... in Postgres's output form)

// canonText canonicalises a scalar given as text (Postgres's output, or
// text stored in SQLite) for class c.
func canonText(c class, s string) string {
	switch c {
	case classFloat:
		switch s {
		case "NaN", "Infinity", "-Infinity":
			return s
		}
		if f, err := strconv.ParseFloat(s, 64); err == nil {
			return canonFloat(f)
		}
	case classNumeric:
		return normalizeNumeric(s)
	case classBool:
		switch strings.ToLower(s) {
		case "t", "true", "1":
			return "t"
		case "f", "false", "0":
			return "f"
		}
	case classTimestamp:
		if t, ok := parsePGTime(s); ok {
			return canonTime(t)
		}
	case classDate:
		if t, err := time.Parse("2006-01-02", s); err == nil {
			return t.Format("2006-01-02")
		}
		if t, ok := parsePGTime(s); ok {
			return t.Format("2006-01-02")
		}
	case classJSON:
		if j, ok := canonJSON([]byte(s)); ok {
			return j
		}
	case classBytes:
		return strings.ToLower(s)
	}
	return s
}

// parsePGTime reads Postgres's ISO output of timestamptz (in UTC) or
// timestamp, and RFC 3339.
func parsePGTime(s string) (time.Time, bool) {
	for _, layout := range []string{
		"2006-01-02 15:04:05.999999999Z07",
		"2006-01-02 15:04:05.999999999Z07:00",
		"2006-01-02 15:04:05.999999999Z07:00:00",
		"2006-01-02 15:04:05.999999999",
		time.RFC3339Nano,
		"2006-01-02T15:04:05.999999999",
	} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), true
		}
	}
	return time.Time{}, false
}

// canonJSON compacts JSON text with object keys sorted (jsonb order and
// key deduplication differ from json's), numbers kept as written.
func canonJSON(raw []byte) (string, bool) {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return "", false
	}
	b, err := json.Marshal(v)
	if err != nil {
		return "", false
	}
	return string(b), true
}

// canonJSONElem canonicalises one decoded element of an array stored as
// JSON in SQLite, as an element of class c.
func canonJSONElem(c class, v any) any {
	switch x := v.(type) {
	case nil:
		return nil
	case []any:
		if c == classJSON {
			b, _ := json.Marshal(x)
			return string(b)
		}
		out := make([]any, len(x))
		for i := range x {
			out[i] = canonJSONElem(c, x[i])
		}
		return out
	case json.Number:
		if c == classJSON {
			return x.String()
		}
		return canonText(c, x.String())
	case bool:
		if c == classJSON {
			return strconv.FormatBool(x)
		}
		if x {
			return "t"
		}
		return "f"
	case string:
		if c == classJSON {
			b, _ := json.Marshal(x)
			return string(b)
		}
		return canonText(c, x)
	default:
		b, _ := json.Marshal(x)
		return string(b)
	}
}

// canonSQLite canonicalises a value read from a SQLite replica column of
// type t.
func canonSQLite(t *typeInfo, v any) (any, error) {
	switch x := v.(type) {
	case nil:
		return nil, nil
	case int64:
		switch t.class {
		case classBool:
			if x == 0 {
				return "f", nil
			}
			return "t", nil
		case classFloat:
			return canonFloat(float64(x)), nil
		}
		return strconv.FormatInt(x, 10), nil
	case float64:
		if t.class == classInt && x == math.Trunc(x) && math.Abs(x) < 1<<63 {
			return strconv.FormatInt(int64(x), 10), nil
		}
		return canonFloat(x), nil
	case []byte:
		if t.class == classBytes {
			return `\x` + hex.EncodeToString(x), nil
		}
		return canonSQLite(t, string(x))
	case string:
		if t.class == classArray {
			d := json.NewDecoder(strings.NewReader(x))
			d.UseNumber()
			var arr []any
			if err := d.Decode(&arr); err != nil {
				return nil, fmt.Errorf("array column holds %q: %w", x, err)
			}
			return canonJSONElem(t.elem.class, arr), nil
		}
		if t.name == "bpchar" {
			// char(n) pads with spaces that PostgreSQL ignores (its text
			// output, bpchar::text, drops them); SQLite keeps the padded
			// text the stream carried.
			x = strings.TrimRight(x, " ")
		}
		return canonText(t.class, x), nil
	case bool:
		if x {
			return "t", nil
		}
		return "f", nil
	case time.Time:
		return canonTime(x), nil
	}
	return nil, fmt.Errorf("unexpected SQLite value %T", v)
}

// canonPG canonicalises a value read as text (col::text) from a Postgres
// column of type t; nil is NULL.
func canonPG(t *typeInfo, s *string) (any, error) {
	if s == nil {
		return nil, nil
	}
	if t.class != classArray {
		return canonText(t.class, *s), nil
	}
	arr, err := parsePGArray(*s)
	if err != nil {
		return nil, err
	}
	return canonPGElems(t.elem.class, arr), nil
}

func canonPGElems(c class, arr []any) []any {
	out := make([]any, len(arr))
	for i, e := range arr {
		switch x := e.(type) {
		case []any:
			out[i] = canonPGElems(c, x)
		case *string:
			if c == classJSON {
				out[i], _ = canonJSON([]byte(*x))
			} else {
				out[i] = canonText(c, *x)
			}
		default:
			out[i] = nil
		}
	}
	return out
}

// parsePGArray parses a Postgres array literal ("{1,NULL,\"a b\"}",
// nested for several dimensions, an optional "[lo:hi]=" prefix) into
// []any of *string (nil for NULL) and nested []any.
func parsePGArray(s string) ([]any, error) {
	if strings.HasPrefix(s, "[") {
		if i := strings.Index(s, "="); i >= 0 {
			s = s[i+1:]
		}
	}
	p := &arrayParser{s: s}
	v, err := p.array()
	if err != nil {
		return nil, fmt.Errorf("array literal %q: %w", s, err)
	}
	if p.i != len(p.s) {
		return nil, fmt.Errorf("array literal %q: trailing text at %d", s, p.i)
	}
	return v, nil
}

type arrayParser struct {
	s string
	i int
}

func (p *arrayParser) array() ([]any, error) {
	if p.i >= len(p.s) || p.s[p.i] != '{' {
		return nil, fmt.Errorf("want '{' at %d", p.i)
	}
	p.i++
	out := []any{}
	if p.i < len(p.s) && p.s[p.i] == '}' {
		p.i++
		return out, nil
	}
	for {
		if p.i >= len(p.s) {
			return nil, fmt.Errorf("unterminated")
		}
		switch p.s[p.i] {
		case '{':
			sub, err := p.array()
			if err != nil {
				return nil, err
			}
			out = append(out, sub)
		case '"':
			p.i++
			var b strings.Builder
			for {
				if p.i >= len(p.s) {
					return nil, fmt.Errorf("unterminated quoted element")
				}
				c := p.s[p.i]
				p.i++
				if c == '\\' && p.i < len(p.s) {
					b.WriteByte(p.s[p.i])
					p.i++
					continue
				}
				if c == '"' {
					break
				}
				b.WriteByte(c)
			}
			s := b.String()
			out = append(out, &s)
		default:
			j := p.i
			for p.i < len(p.s) && p.s[p.i] != ',' && p.s[p.i] != '}' {
				p.i++
			}
			s := strings.TrimSpace(p.s[j:p.i])
			if strings.EqualFold(s, "NULL") {
				out = append(out, nil)
			} else {
				out = append(out, &s)
			}
		}
		if p.i >= len(p.s) {
			return nil, fmt.Errorf("unterminated")
		}
		switch p.s[p.i] {
		case ',':
			p.i++
		case '}':
			p.i++
			return out, nil
		default:
			return nil, fmt.Errorf("unexpected %q at %d", p.s[p.i], p.i)
		}
	}
}
