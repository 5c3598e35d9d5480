package replica

import (
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/walship/walship/change"
)

// canonTime formats an instant in UTC with microseconds, and with the
// nanoseconds when there are any below the microsecond:
// 2024-01-02T03:04:05.123456Z. Fixed width for microsecond values, so text
// order is time order within a column.
func canonTime(t time.Time) string {
	t = t.UTC()
	if t.Nanosecond()%1000 != 0 {
		return t.Format("2006-01-02T15:04:05.000000000Z")
	}
	return t.Format("2006-01-02T15:04:05.000000Z")
}

// canonFloat formats a float like Postgres's float8 output, with the
// shortest text that reads back exactly.
func canonFloat(f float64) string {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

// normalizeNumeric rewrites an exact decimal as Postgres's numeric type
// prints it: no exponent, scale max(0, fraction digits - exponent),
// no negative zero. "1.5e3" → "1500", "1e-7" → "0.0000001". Text that is
// not a decimal number ("NaN", "Infinity") is returned as is.
func normalizeNumeric(s string) string {
	neg := strings.HasPrefix(s, "-")
	body := strings.TrimPrefix(s, "-")
	mant, exp := body, 0
	if i := strings.IndexAny(body, "eE"); i >= 0 {
		e, err := strconv.Atoi(body[i+1:])
		if err != nil || e > 100000 || e < -100000 {
			return s
		}
		mant, exp = body[:i], e
	} else if !strings.ContainsAny(body, ".") {
		// An integer: only a negative zero or leading zeros to fix.
		if body == "" || strings.Trim(body, "0123456789") != "" {
			return s
		}
		t := strings.TrimLeft(body, "0")
		if t == "" {
			return "0"
		}
		if neg {
			return "-" + t
		}
		return t
	}
	intPart, frac := mant, ""
	if i := strings.IndexByte(mant, '.'); i >= 0 {
		intPart, frac = mant[:i], mant[i+1:]
	}
	if intPart == "" && frac == "" || strings.Trim(intPart+frac, "0123456789") != "" {
		return s
	}
	digits := intPart + frac
	point := len(intPart) + exp // position of the decimal point in digits
	scale := max(0, len(frac)-exp)
	for point <= 0 {
		digits = "0" + digits
		point++
	}
	for len(digits) < point+scale {
		digits += "0"
	}
	digits = digits[:point+scale] // only zeros are cut: scale covers every significant fraction digit
	ip := strings.TrimLeft(digits[:point], "0")
	if ip == "" {
		ip = "0"
	}
	out := ip
	if scale > 0 {
		out += "." + digits[point:]
	}
	if neg && strings.Trim(out, "0.") != "" {
		out = "-" + out
	}
	return out
}

// forColumn adapts a value to its column: a Timestamp in a date column
// (the Postgres source sends dates as midnight UTC) is stored as the date.
func forColumn(ts *tableSchema, name string, v change.Value) change.Value {
	if v.Kind() != change.KindTimestamp {
		return v
	}
	if i := ts.index(name); i >= 0 && ts.cols[i].typ.class == classDate {
		t, _ := v.Timestamp()
		if t.Equal(t.Truncate(24 * time.Hour)) {
			return change.UnknownValue("date", t.Format("2006-01-02"))
		}
	}
	return v
}

// sqliteValue returns what a SQLite replica stores for v (docs/REPLICA.md).
func sqliteValue(v change.Value) (any, error) {
	switch v.Kind() {
	case change.KindNull:
		return nil, nil
	case change.KindBool:
		b, _ := v.Bool()
		if b {
			return int64(1), nil
		}
		return int64(0), nil
	case change.KindInt:
		i, _ := v.Int()
		return i, nil
	case change.KindFloat:
		f, _ := v.Float()
		if math.IsNaN(f) {
			return "NaN", nil // SQLite turns a NaN REAL into NULL
		}
		return f, nil
	case change.KindNumeric:
		s, _ := v.Numeric()
		return normalizeNumeric(s), nil
	case change.KindText:
		s, _ := v.Text()
		return s, nil
	case change.KindBytes:
		b, _ := v.Bytes()
		return b, nil
	case change.KindTimestamp:
		t, _ := v.Timestamp()
		return canonTime(t), nil
	case change.KindJSON:
		j, _ := v.JSON()
		return string(j), nil
	case change.KindArray:
		b, err := appendJSONArray(nil, v)
		return string(b), err
	case change.KindUnknown:
		_, s, _ := v.Unknown()
		return s, nil
	}
	return nil, fmt.Errorf("unsupported value kind %s", v.Kind())
}

// appendJSONArray appends the JSON form of an Array value as a SQLite
// replica stores it: numbers as JSON numbers (exact text), text, bytes
// ("\\x…" hex), timestamps (canonTime) and NaN/Infinity as strings,
// booleans, null, JSON elements embedded.
func appendJSONArray(dst []byte, v change.Value) ([]byte, error) {
	elems, _ := v.Array()
	dst = append(dst, '[')
	for i, e := range elems {
		if i > 0 {
			dst = append(dst, ',')
		}
		switch e.Kind() {
		case change.KindNull:
			dst = append(dst, "null"...)
		case change.KindBool:
			b, _ := e.Bool()
			dst = strconv.AppendBool(dst, b)
		case change.KindInt:
			n, _ := e.Int()
			dst = strconv.AppendInt(dst, n, 10)
		case change.KindFloat:
			f, _ := e.Float()
			if math.IsNaN(f) || math.IsInf(f, 0) {
				dst = strconv.AppendQuote(dst, canonFloat(f))
			} else {
				dst = strconv.AppendFloat(dst, f, 'g', -1, 64)
			}
		case change.KindNumeric:
			s, _ := e.Numeric()
			n := normalizeNumeric(s)
			if n == "NaN" || strings.HasSuffix(n, "Infinity") {
				dst = appendJSONString(dst, n)
			} else {
				dst = append(dst, n...)
			}
		case change.KindText:
			s, _ := e.Text()
			dst = appendJSONString(dst, s)
		case change.KindBytes:
			b, _ := e.Bytes()
			dst = appendJSONString(dst, `\x`+hex.EncodeToString(b))
		case change.KindTimestamp:
			t, _ := e.Timestamp()
			dst = appendJSONString(dst, canonTime(t))
		case change.KindJSON:
			j, _ := e.JSON()
			dst = append(dst, j...)
		case change.KindArray:
			var err error
			if dst, err = appendJSONArray(dst, e); err != nil {
				return nil, err
			}
		case change.KindUnknown:
			_, s, _ := e.Unknown()
			dst = appendJSONString(dst, s)
		default:
			return nil, fmt.Errorf("unsupported array element kind %s", e.Kind())
		}
	}
	return append(dst, ']'), nil
}

func appendJSONString(dst []byte, s string) []byte {
	const hexd = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hexd[c>>4], hexd[c&15])
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}

// pgText returns the Postgres text input form of v; ok is false for NULL.
func pgText(v change.Value) (s string, ok bool, err error) {
	switch v.Kind() {
	case change.KindNull:
		return "", false, nil
	case change.KindBool:
		b, _ := v.Bool()
		if b {
			return "t", true, nil
		}
		return "f", true, nil
	case change.KindInt:
		i, _ := v.Int()
		return strconv.FormatInt(i, 10), true, nil
	case change.KindFloat:
		f, _ := v.Float()
		return canonFloat(f), true, nil
	case change.KindNumeric:
		s, _ := v.Numeric()
		return s, true, nil
	case change.KindText:
		s, _ := v.Text()
		if strings.IndexByte(s, 0) >= 0 {
			return "", false, errors.New("text with a NUL byte cannot be stored in PostgreSQL")
		}
		return s, true, nil
	case change.KindBytes:
		b, _ := v.Bytes()
		return `\x` + hex.EncodeToString(b), true, nil
	case change.KindTimestamp:
		t, _ := v.Timestamp()
		return canonTime(t), true, nil
	case change.KindJSON:
		j, _ := v.JSON()
		return string(j), true, nil
	case change.KindArray:
		b, err := appendPGArray(nil, v)
		return string(b), true, err
	case change.KindUnknown:
		_, s, _ := v.Unknown()
		return s, true, nil
	}
	return "", false, fmt.Errorf("unsupported value kind %s", v.Kind())
}

// appendPGArray appends a Postgres array literal: every element quoted
// (so text like NULL or with commas stays text), NULL bare.
func appendPGArray(dst []byte, v change.Value) ([]byte, error) {
	elems, _ := v.Array()
	dst = append(dst, '{')
	for i, e := range elems {
		if i > 0 {
			dst = append(dst, ',')
		}
		if e.Kind() == change.KindArray {
			var err error
			if dst, err = appendPGArray(dst, e); err != nil {
				return nil, err
			}
			continue
		}
		s, ok, err := pgText(e)
		if err != nil {
			return nil, err
		}
		if !ok {
			dst = append(dst, "NULL"...)
			continue
		}
		dst = append(dst, '"')
		for j := 0; j < len(s); j++ {
			if s[j] == '"' || s[j] == '\\' {
				dst = append(dst, '\\')
			}
			dst = append(dst, s[j])
		}
		dst = append(dst, '"')
	}
	return append(dst, '}'), nil
}
