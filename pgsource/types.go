package pgsource

import (
	"context"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/walship/walship/change"
)

// kind says how a column's text form becomes a change.Value
// (docs/POSTGRES.md, "Type mapping").
type kind uint8

const (
	kUnknown kind = iota // change.UnknownValue(type name, text)
	kBool
	kInt
	kFloat
	kNumeric
	kText // text, varchar, char, name, uuid, time, timetz, interval, enums, ...
	kBytea
	kTimestamp   // timestamp without time zone: read as UTC
	kTimestamptz // sessions run with TimeZone=UTC
	kDate        // midnight UTC
	kJSON
	kArray
)

// typeInfo describes one Postgres type as walship maps it.
type typeInfo struct {
	oid   uint32
	name  string // ColumnType.Type: typname, "elem[]" for arrays, domain name for domains
	kind  kind
	elem  *typeInfo // arrays
	delim byte      // arrays: element delimiter (',' except box)
}

// builtin kinds by type name (pg_type.typname of pg_catalog types).
var builtinKinds = map[string]kind{
	"bool": kBool, "int2": kInt, "int4": kInt, "int8": kInt, "oid": kInt, "xid": kInt,
	"float4": kFloat, "float8": kFloat, "numeric": kNumeric,
	"text": kText, "varchar": kText, "bpchar": kText, "name": kText, "char": kText, "uuid": kText,
	"time": kText, "timetz": kText, "interval": kText, "citext": kText, "inet": kText, "cidr": kText,
	"macaddr": kText, "bit": kText, "varbit": kText, "money": kText, "xml": kText,
	"bytea":     kBytea,
	"timestamp": kTimestamp, "timestamptz": kTimestamptz, "date": kDate,
	"json": kJSON, "jsonb": kJSON,
}

// typeCache resolves type OIDs through pg_type, once per OID.
type typeCache struct {
	m map[uint32]*typeInfo
}

func newTypeCache() *typeCache { return &typeCache{m: map[uint32]*typeInfo{}} }

// resolve returns the info for oid, querying pg_type on conn if needed. A
// type that cannot be found (dropped since) maps to Unknown "oid:N".
func (tc *typeCache) resolve(ctx context.Context, conn *pgx.Conn, oid uint32) (*typeInfo, error) {
	if ti, ok := tc.m[oid]; ok {
		return ti, nil
	}
	var (
		name, typtype, nsp string
		elem, base         uint32
		delim              string
	)
	err := conn.QueryRow(ctx, `SELECT t.typname, t.typtype, t.typelem, t.typbasetype, t.typdelim::text, n.nspname
		FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE t.oid = $1`, oid).
		Scan(&name, &typtype, &elem, &base, &delim, &nsp)
	if err == pgx.ErrNoRows {
		ti := &typeInfo{oid: oid, name: fmt.Sprintf("oid:%d", oid), kind: kUnknown}
		tc.m[oid] = ti
		return ti, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up type %d: %w", oid, err)
	}
	ti := &typeInfo{oid: oid, name: name}
	switch {
	case typtype == "d": // domain: values are the base type's
		b, err := tc.resolve(ctx, conn, base)
		if err != nil {
			return nil, err
		}
		ti.kind, ti.elem, ti.delim = b.kind, b.elem, b.delim
	case elem != 0 && strings.HasPrefix(name, "_"):
		e, err := tc.resolve(ctx, conn, elem)
		if err != nil {
			return nil, err
		}
		ti.kind, ti.elem, ti.name = kArray, e, e.name+"[]"
		ti.delim = ','
		if e.delim != 0 {
			ti.delim = e.delim
		}
	case typtype == "e":
		ti.kind = kText
	case nsp == "pg_catalog" || name == "citext":
		ti.kind = builtinKinds[name] // kUnknown if not listed
	}
	if delim != "" && ti.kind != kArray {
		ti.delim = delim[0]
	}
	tc.m[oid] = ti
	return ti, nil
}

// decodeText converts a value in Postgres text output format (pgoutput 't'
// tuple data, COPY text after unescaping) into a change.Value. It never
// loses information: a value it cannot represent exactly (infinite
// timestamps, years beyond 9999, odd arrays) becomes Unknown with the text.
func decodeText(ti *typeInfo, s string) change.Value {
	switch ti.kind {
	case kBool:
		switch s {
		case "t":
			return change.BoolValue(true)
		case "f":
			return change.BoolValue(false)
		}
	case kInt:
		if i, err := strconv.ParseInt(s, 10, 64); err == nil {
			return change.IntValue(i)
		}
		// xid/oid beyond int64 are impossible; anything else: Unknown.
	case kFloat:
		// extra_float_digits >= 1 (the default) makes the text exact.
		// ParseFloat also reads NaN, Infinity and -Infinity.
		if f, err := strconv.ParseFloat(s, 64); err == nil {
			return change.FloatValue(f)
		}
	case kNumeric:
		if v, err := change.NumericValue(s); err == nil {
			return v
		}
	case kText:
		return change.TextValue(s)
	case kBytea:
		if strings.HasPrefix(s, `\x`) {
			if b, err := hex.DecodeString(s[2:]); err == nil {
				return change.BytesValue(b)
			}
		}
	case kTimestamp, kTimestamptz:
		if t, ok := parseTimestamp(s, ti.kind == kTimestamptz); ok {
			if v, err := change.TimestampValue(t); err == nil {
				return v
			}
		}
	case kDate:
		if t, err := time.Parse("2006-01-02", s); err == nil {
			if v, err := change.TimestampValue(t); err == nil {
				return v
			}
		}
	case kJSON:
		if v, err := change.JSONValue([]byte(s)); err == nil {
			return v
		}
	case kArray:
		if v, ok := parseArray(ti, s); ok {
			return v
		}
	}
	return change.UnknownValue(ti.name, s)
}

// parseTimestamp reads ISO DateStyle output: "2006-01-02 15:04:05[.ffffff][+hh[:mm[:ss]]]".
func parseTimestamp(s string, tz bool) (time.Time, bool) {
	if len(s) < 19 || s[4] != '-' || s[10] != ' ' {
		return time.Time{}, false // infinity, BC dates, years > 9999
	}
	if !tz {
		t, err := time.Parse("2006-01-02 15:04:05.999999999", s)
		return t.UTC(), err == nil
	}
	// Find the zone: the last '+' or '-' after the time.
	i := strings.LastIndexAny(s[19:], "+-")
	if i < 0 {
		return time.Time{}, false
	}
	zone := s[19+i:]
	layout := "2006-01-02 15:04:05.999999999"
	switch len(zone) {
	case 3:
		layout += "-07"
	case 6:
		layout += "-07:00"
	case 9:
		layout += "-07:00:00"
	default:
		return time.Time{}, false
	}
	t, err := time.Parse(layout, s)
	return t.UTC(), err == nil
}

// parseArray parses array text output ({a,"b c",NULL,{1,2}}) into nested
// ArrayValues of decoded elements. Arrays with explicit bounds
// ("[0:1]={...}") are not parsed (ok false: the caller keeps the text).
func parseArray(ti *typeInfo, s string) (change.Value, bool) {
	p := arrayParser{s: s, elem: ti.elem, delim: ti.delim}
	v, ok := p.parse()
	if !ok || p.i != len(s) {
		return change.Value{}, false
	}
	return v, true
}

type arrayParser struct {
	s     string
	i     int
	elem  *typeInfo
	delim byte
	depth int
}

func (p *arrayParser) parse() (change.Value, bool) {
	if p.i >= len(p.s) || p.s[p.i] != '{' || p.depth > 6 {
		return change.Value{}, false
	}
	p.depth++
	defer func() { p.depth-- }()
	p.i++
	var elems []change.Value
	if p.i < len(p.s) && p.s[p.i] == '}' {
		p.i++
		return change.ArrayValue(), true
	}
	for {
		if p.i >= len(p.s) {
			return change.Value{}, false
		}
		switch c := p.s[p.i]; {
		case c == '{':
			v, ok := p.parse()
			if !ok {
				return change.Value{}, false
			}
			elems = append(elems, v)
		case c == '"':
			var b strings.Builder
			p.i++
			for {
				if p.i >= len(p.s) {
					return change.Value{}, false
				}
				c := p.s[p.i]
				p.i++
				if c == '"' {
					break
				}
				if c == '\\' {
					if p.i >= len(p.s) {
						return change.Value{}, false
					}
					c = p.s[p.i]
					p.i++
				}
				b.WriteByte(c)
			}
			elems = append(elems, decodeText(p.elem, b.String()))
		default:
			start := p.i
			for p.i < len(p.s) && p.s[p.i] != p.delim && p.s[p.i] != '}' {
				p.i++
			}
			tok := p.s[start:p.i]
			if tok == "NULL" {
				elems = append(elems, change.NullValue())
			} else {
				elems = append(elems, decodeText(p.elem, strings.TrimSpace(tok)))
			}
		}
		if p.i >= len(p.s) {
			return change.Value{}, false
		}
		switch p.s[p.i] {
		case p.delim:
			p.i++
		case '}':
			p.i++
			return change.ArrayValue(elems...), true
		default:
			return change.Value{}, false
		}
	}
}

// sqlLiteral quotes s as a standard-conforming SQL string literal.
func sqlLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
