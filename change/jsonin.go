package change

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// ParseTxnLine parses one line of `walship append` input into a
// transaction and validates it (Txn.Validate). The line is either one
// change, a transaction of one change:
//
//	{"table":"public.t","op":"c","key":{"id":1},"after":{"id":1,"v":"x"}}
//
// or a transaction of one or more changes:
//
//	{"changes":[<change>,...],"xid":7,"source_lsn":"16/B374D848","commit_time":"2024-05-01T12:00:00Z","origin":"app"}
//
// The header fields "xid" (unsigned integer), "source_lsn" ("X/Y"),
// "commit_time" (RFC 3339, becomes TxHeader.SourceCommitTime) and "origin"
// (string) are optional and allowed in both forms. A change has the fields
//
//	"table"    "schema.name" or "name" (see ParseTable); optional for op "m"
//	"op"       "c", "u", "d", "t", "r" or "m"
//	"key", "before", "after"
//	           objects of column values, in column order; null or missing when absent
//	"types"    optional {"column":"source type name",...}
//	"message"  for op "m": {"prefix":"...","content":"..."|{"$type":"bytes",...},"transactional":false}
//
// Column values follow the input mapping of ParseValue. Unknown and
// duplicate fields are errors, as are duplicate column names and an empty
// "changes". Errors are *InvalidError whose Path is the JSON path of the
// offending element, e.g. `changes[2].after.v`; Line is left 0 for the
// caller to set. The returned Txn does not share memory with line.
func ParseTxnLine(line []byte) (Txn, error) {
	p, err := newParser(line)
	if err != nil {
		return Txn{}, err
	}
	if err := p.begin('{', "a JSON object"); err != nil {
		return Txn{}, err
	}
	var (
		txn         Txn
		single      Change
		singleField string // the first change field seen at the top level
		haveChanges bool
		seen        []string
	)
	for p.dec.More() {
		k, err := p.key(&seen)
		if err != nil {
			return Txn{}, err
		}
		p.push(pkey(k))
		switch k {
		case "changes":
			haveChanges = true
			txn.Changes, err = p.changes()
		case "xid", "source_lsn", "commit_time", "origin":
			err = p.headerField(&txn.Header, k)
		default:
			if !isChangeField(k) {
				p.pop()
				return Txn{}, p.fail(fmt.Sprintf("unknown field %q", k))
			}
			if singleField == "" {
				singleField = k
			}
			err = p.changeField(&single, k)
		}
		if err != nil {
			return Txn{}, err
		}
		p.pop()
	}
	if err := p.finish(); err != nil {
		return Txn{}, err
	}
	switch {
	case haveChanges && singleField != "":
		return Txn{}, &InvalidError{Path: singleField, Reason: `not allowed together with "changes"`}
	case haveChanges:
		if err := txn.Validate(); err != nil {
			return Txn{}, err
		}
	case singleField != "":
		if err := txn.Header.Validate(); err != nil {
			return Txn{}, err
		}
		if err := single.validate(nil); err != nil {
			return Txn{}, err
		}
		txn.Changes = []Change{single}
	default:
		return Txn{}, &InvalidError{Reason: `expected a change ("table", "op", ...) or "changes"`}
	}
	return txn, nil
}

// ParseDumpLine parses one line written by AppendDumpJSON. The fields lsn,
// commit_lsn, commit_time, xid, table, op, key, before and after are
// required. The change is not validated, so that every line AppendDumpJSON
// writes reads back (except one with an invalid op).
func ParseDumpLine(line []byte) (DumpLine, error) {
	p, err := newParser(line)
	if err != nil {
		return DumpLine{}, err
	}
	if err := p.begin('{', "a JSON object"); err != nil {
		return DumpLine{}, err
	}
	var (
		d    DumpLine
		c    Change
		seen []string
	)
	for p.dec.More() {
		k, err := p.key(&seen)
		if err != nil {
			return DumpLine{}, err
		}
		p.push(pkey(k))
		switch k {
		case "lsn":
			d.LSN, err = p.uint64()
		case "commit_lsn":
			d.CommitLSN, err = p.uint64()
		case "commit_time":
			d.CommitTime, err = p.time()
		case "xid", "source_lsn", "origin":
			err = p.headerField(&d.Header, k)
		case "source_commit_time":
			d.Header.SourceCommitTime, err = p.time()
		default:
			if !isChangeField(k) {
				p.pop()
				return DumpLine{}, p.fail(fmt.Sprintf("unknown field %q", k))
			}
			err = p.changeField(&c, k)
		}
		if err != nil {
			return DumpLine{}, err
		}
		p.pop()
	}
	if err := p.finish(); err != nil {
		return DumpLine{}, err
	}
	for _, k := range []string{"lsn", "commit_lsn", "commit_time", "xid", "table", "op", "key", "before", "after"} {
		if !slices.Contains(seen, k) {
			return DumpLine{}, &InvalidError{Reason: fmt.Sprintf("missing field %q", k)}
		}
	}
	d.Change = &c
	return d, nil
}

// ParseValue parses one JSON value in the input mapping:
//
//	null                     Null
//	true, false              Bool
//	a number                 Int if it is an integer literal (no '.', no exponent)
//	                         that fits int64, else Numeric with the literal text exactly
//	a string                 Text
//	an array                 Array of the elements, each mapped the same way
//	an object                JSON (the object's text, compacted), unless it has a
//	                         "$type" key: then it is a typed value
//
// Typed values ("value" is required except for null):
//
//	{"$type":"null"}
//	{"$type":"bool","value":true}
//	{"$type":"int","value":42}                  or "42"
//	{"$type":"float","value":1.5}               or "NaN", "Infinity", "-Infinity"
//	{"$type":"numeric","value":"12.30"}         or a bare number; see NumericValue
//	{"$type":"text","value":"x"}
//	{"$type":"bytes","value":"AAEC"}            standard base64 with padding
//	{"$type":"timestamp","value":"2024-05-01T12:00:00.123456789Z"}  RFC 3339, any offset; kept in UTC
//	{"$type":"json","value":<any JSON>}         e.g. a JSON array or string, or an object with a "$type" key
//	{"$type":"array","value":[...]}
//	{"$type":"unknown","type":"tsvector","value":"'a':1"}
//
// Errors are *InvalidError.
func ParseValue(data []byte) (Value, error) {
	p, err := newParser(data)
	if err != nil {
		return Value{}, err
	}
	raw, err := p.raw()
	if err != nil {
		return Value{}, err
	}
	if err := p.end(); err != nil {
		return Value{}, err
	}
	return p.value(raw, 0)
}

var changeFields = []string{"table", "op", "key", "before", "after", "types", "message"}

func isChangeField(k string) bool { return slices.Contains(changeFields, k) }

// parser reads JSON input with a json.Decoder, keeping key order, and
// reports errors with the JSON path it is at.
type parser struct {
	dec  *json.Decoder
	path []pathSeg
	buf  json.RawMessage // reused for raw column values
}

func newParser(data []byte) (*parser, error) {
	data = bytes.Trim(data, " \t\r\n")
	if len(data) == 0 {
		return nil, &InvalidError{Reason: "empty input"}
	}
	if !utf8.Valid(data) {
		i := 0
		for i < len(data) {
			r, size := utf8.DecodeRune(data[i:])
			if r == utf8.RuneError && size == 1 {
				break
			}
			i += size
		}
		return nil, &InvalidError{Reason: fmt.Sprintf("invalid UTF-8 at byte %d", i)}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	return &parser{dec: dec}, nil
}

func (p *parser) push(s pathSeg) { p.path = append(p.path, s) }
func (p *parser) pop()           { p.path = p.path[:len(p.path)-1] }

func (p *parser) fail(reason string) error {
	return &InvalidError{Path: renderPath(p.path), Reason: reason}
}

func (p *parser) jsonErr(err error) error {
	var se *json.SyntaxError
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return p.fail("unexpected end of JSON input")
	case errors.As(err, &se):
		return p.fail(fmt.Sprintf("invalid JSON at byte %d: %v", se.Offset, se))
	}
	return p.fail("invalid JSON: " + err.Error())
}

func (p *parser) token() (json.Token, error) {
	t, err := p.dec.Token()
	if err != nil {
		return nil, p.jsonErr(err)
	}
	return t, nil
}

// raw reads the next value as raw JSON; the result is valid until the next
// call.
func (p *parser) raw() (json.RawMessage, error) {
	if err := p.dec.Decode(&p.buf); err != nil {
		return nil, p.jsonErr(err)
	}
	return p.buf, nil
}

func describe(t json.Token) string {
	switch t := t.(type) {
	case json.Delim:
		switch t {
		case '{':
			return "an object"
		case '[':
			return "an array"
		}
		return strconv.Quote(t.String())
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", t)
}

// begin reads the opening delimiter of an object or array.
func (p *parser) begin(d json.Delim, what string) error {
	t, err := p.token()
	if err != nil {
		return err
	}
	if t != d {
		return p.fail(fmt.Sprintf("expected %s, got %s", what, describe(t)))
	}
	return nil
}

// close reads the closing delimiter after More returned false.
func (p *parser) close() error {
	_, err := p.token()
	return err
}

// finish closes the top-level object and checks nothing follows.
func (p *parser) finish() error {
	if err := p.close(); err != nil {
		return err
	}
	return p.end()
}

// end checks that the input holds nothing more.
func (p *parser) end() error {
	if _, err := p.dec.Token(); err != io.EOF {
		return &InvalidError{Reason: fmt.Sprintf("unexpected data after the JSON value at byte %d", p.dec.InputOffset())}
	}
	return nil
}

// key reads an object key and checks it against the keys seen so far in
// the same object.
func (p *parser) key(seen *[]string) (string, error) {
	t, err := p.token()
	if err != nil {
		return "", err
	}
	k := t.(string) // the decoder only returns string tokens in key position
	if slices.Contains(*seen, k) {
		return "", p.fail(fmt.Sprintf("duplicate field %q", k))
	}
	*seen = append(*seen, k)
	return k, nil
}

func (p *parser) str() (string, error) {
	t, err := p.token()
	if err != nil {
		return "", err
	}
	s, ok := t.(string)
	if !ok {
		return "", p.fail("expected a string, got " + describe(t))
	}
	return s, nil
}

func (p *parser) uint64() (uint64, error) {
	t, err := p.token()
	if err != nil {
		return 0, err
	}
	if n, ok := t.(json.Number); ok {
		if x, err := strconv.ParseUint(string(n), 10, 64); err == nil {
			return x, nil
		}
		return 0, p.fail(fmt.Sprintf("expected an unsigned 64-bit integer, got %s", n))
	}
	return 0, p.fail("expected an unsigned 64-bit integer, got " + describe(t))
}

func (p *parser) time() (time.Time, error) {
	s, err := p.str()
	if err != nil {
		return time.Time{}, err
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, p.fail(fmt.Sprintf("invalid RFC 3339 time %q", s))
	}
	return t.UTC(), nil
}

func (p *parser) headerField(h *TxHeader, k string) error {
	var err error
	switch k {
	case "xid":
		h.XID, err = p.uint64()
	case "source_lsn":
		var s string
		if s, err = p.str(); err == nil {
			if h.SourceLSN, err = ParseSourceLSN(s); err != nil {
				err = p.fail(err.(*InvalidError).Reason)
			}
		}
	case "commit_time":
		h.SourceCommitTime, err = p.time()
	case "origin":
		h.Origin, err = p.str()
	}
	return err
}

// changes reads the array of "changes".
func (p *parser) changes() ([]Change, error) {
	if err := p.begin('[', "an array of changes"); err != nil {
		return nil, err
	}
	var cs []Change
	for i := 0; p.dec.More(); i++ {
		p.push(pidx(i))
		if err := p.begin('{', "a change object"); err != nil {
			return nil, err
		}
		var (
			c    Change
			seen []string
		)
		for p.dec.More() {
			k, err := p.key(&seen)
			if err != nil {
				return nil, err
			}
			if !isChangeField(k) {
				return nil, p.fail(fmt.Sprintf("unknown field %q", k))
			}
			p.push(pkey(k))
			if err := p.changeField(&c, k); err != nil {
				return nil, err
			}
			p.pop()
		}
		if err := p.close(); err != nil {
			return nil, err
		}
		cs = append(cs, c)
		p.pop()
	}
	return cs, p.close()
}

func (p *parser) changeField(c *Change, k string) error {
	var err error
	switch k {
	case "table":
		var t json.Token
		if t, err = p.token(); err != nil {
			return err
		}
		switch t := t.(type) {
		case nil:
			c.Table = Table{}
		case string:
			if c.Table, err = ParseTable(t); err != nil {
				return p.fail(err.(*InvalidError).Reason)
			}
		default:
			return p.fail("expected a string, got " + describe(t))
		}
	case "op":
		var s string
		if s, err = p.str(); err != nil {
			return err
		}
		if c.Op, err = ParseOp(s); err != nil {
			return p.fail(err.(*InvalidError).Reason)
		}
	case "key":
		c.Key, err = p.row()
	case "before":
		c.Before, err = p.row()
	case "after":
		c.After, err = p.row()
	case "types":
		c.Types, err = p.types()
	case "message":
		c.Message, err = p.message()
	}
	return err
}

// row reads a row object, or null for an absent row.
func (p *parser) row() (Row, error) {
	t, err := p.token()
	if err != nil {
		return nil, err
	}
	if t == nil {
		return nil, nil
	}
	if t != json.Delim('{') {
		return nil, p.fail("expected an object of columns or null, got " + describe(t))
	}
	r := Row{}
	for p.dec.More() {
		t, err := p.token()
		if err != nil {
			return nil, err
		}
		name := t.(string)
		p.push(pkey(name))
		raw, err := p.raw()
		if err != nil {
			return nil, err
		}
		v, err := p.value(raw, 0)
		if err != nil {
			return nil, err
		}
		r = append(r, Column{Name: name, Value: v})
		p.pop()
	}
	return r, p.close()
}

func (p *parser) types() ([]ColumnType, error) {
	t, err := p.token()
	if err != nil {
		return nil, err
	}
	if t == nil {
		return nil, nil
	}
	if t != json.Delim('{') {
		return nil, p.fail("expected an object of type names or null, got " + describe(t))
	}
	var ts []ColumnType
	for p.dec.More() {
		t, err := p.token()
		if err != nil {
			return nil, err
		}
		name := t.(string)
		p.push(pkey(name))
		typ, err := p.str()
		if err != nil {
			return nil, err
		}
		ts = append(ts, ColumnType{Name: name, Type: typ})
		p.pop()
	}
	return ts, p.close()
}

func (p *parser) message() (*LogicalMessage, error) {
	t, err := p.token()
	if err != nil {
		return nil, err
	}
	if t == nil {
		return nil, nil
	}
	if t != json.Delim('{') {
		return nil, p.fail("expected a message object or null, got " + describe(t))
	}
	m := &LogicalMessage{}
	var seen []string
	for p.dec.More() {
		k, err := p.key(&seen)
		if err != nil {
			return nil, err
		}
		p.push(pkey(k))
		switch k {
		case "prefix":
			m.Prefix, err = p.str()
		case "content":
			var raw json.RawMessage
			if raw, err = p.raw(); err != nil {
				return nil, err
			}
			var v Value
			if v, err = p.value(raw, 0); err != nil {
				return nil, err
			}
			switch v.kind {
			case KindText, KindBytes:
				if v.str != "" {
					m.Content = []byte(v.str)
				}
			default:
				return nil, p.fail(`expected a string or a {"$type":"bytes",...} object, got ` + v.kind.String())
			}
		case "transactional":
			var t json.Token
			if t, err = p.token(); err != nil {
				return nil, err
			}
			b, ok := t.(bool)
			if !ok {
				return nil, p.fail("expected a boolean, got " + describe(t))
			}
			m.Transactional = b
		default:
			p.pop()
			return nil, p.fail(fmt.Sprintf("unknown field %q", k))
		}
		if err != nil {
			return nil, err
		}
		p.pop()
	}
	return m, p.close()
}

// unquote returns the string a valid JSON string literal stands for.
func unquote(raw []byte) string {
	body := raw[1 : len(raw)-1]
	if bytes.IndexByte(body, '\\') < 0 {
		return string(body)
	}
	var s string
	_ = json.Unmarshal(raw, &s) // raw is valid: the decoder checked it
	return s
}

// value maps the valid JSON value raw, inside depth arrays, to a Value.
func (p *parser) value(raw []byte, depth int) (Value, error) {
	switch raw[0] {
	case 'n':
		return Value{}, nil
	case 't':
		return BoolValue(true), nil
	case 'f':
		return BoolValue(false), nil
	case '"':
		return TextValue(unquote(raw)), nil
	case '[':
		return p.array(raw, depth)
	case '{':
		if !hasTypeKey(string(raw)) {
			return Value{kind: KindJSON, str: string(appendCompact(nil, raw))}, nil
		}
		return p.typed(raw, depth)
	}
	s := string(raw)
	if i, err := strconv.ParseInt(s, 10, 64); err == nil {
		return IntValue(i), nil
	}
	return Value{kind: KindNumeric, str: s}, nil
}

// subDecoder returns a decoder over raw, a valid JSON value.
func subDecoder(raw []byte) *json.Decoder {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	return d
}

func (p *parser) array(raw []byte, depth int) (Value, error) {
	if depth >= MaxNesting {
		return Value{}, p.fail(fmt.Sprintf("arrays nested more than %d deep", MaxNesting))
	}
	d := subDecoder(raw)
	if _, err := d.Token(); err != nil { // '['
		return Value{}, p.jsonErr(err)
	}
	elems := []Value{}
	var eraw json.RawMessage
	for i := 0; d.More(); i++ {
		if err := d.Decode(&eraw); err != nil {
			return Value{}, p.jsonErr(err)
		}
		p.push(pidx(i))
		v, err := p.value(eraw, depth+1)
		if err != nil {
			return Value{}, err
		}
		p.pop()
		elems = append(elems, v)
	}
	return Value{kind: KindArray, arr: elems}, nil
}

var typeNames = strings.Join(kindNames[:], ", ")

// typed maps an object with a "$type" key.
func (p *parser) typed(raw []byte, depth int) (Value, error) {
	d := subDecoder(raw)
	if _, err := d.Token(); err != nil { // '{'
		return Value{}, p.jsonErr(err)
	}
	var (
		typ, typeName     string
		val               json.RawMessage
		haveVal, haveName bool // "value" and "type" present
		seen              []string
	)
	for d.More() {
		t, err := d.Token()
		if err != nil {
			return Value{}, p.jsonErr(err)
		}
		k := t.(string)
		if slices.Contains(seen, k) {
			return Value{}, p.fail(fmt.Sprintf("duplicate field %q in $type object", k))
		}
		seen = append(seen, k)
		var r json.RawMessage
		if err := d.Decode(&r); err != nil {
			return Value{}, p.jsonErr(err)
		}
		switch k {
		case "$type":
			if r[0] != '"' {
				return Value{}, p.fail("$type must be a string")
			}
			typ = unquote(r)
		case "value":
			val, haveVal = r, true
		case "type":
			if r[0] != '"' {
				return Value{}, p.fail(`"type" must be a string`)
			}
			typeName, haveName = unquote(r), true
		default:
			return Value{}, p.fail(fmt.Sprintf("unknown field %q in $type object", k))
		}
	}
	kind := Kind(slices.Index(kindNames[:], typ))
	if kind >= numKinds {
		return Value{}, p.fail(fmt.Sprintf("unknown $type %q (want one of %s)", typ, typeNames))
	}
	if haveName && kind != KindUnknown {
		return Value{}, p.fail(fmt.Sprintf(`field "type" not allowed with $type %q`, typ))
	}
	if kind == KindNull {
		if haveVal && string(val) != "null" {
			return Value{}, p.fail(`$type "null": "value" must be null or absent`)
		}
		return Value{}, nil
	}
	if !haveVal {
		return Value{}, p.fail(fmt.Sprintf(`$type %q: missing "value"`, typ))
	}
	if kind == KindUnknown && typeName == "" {
		return Value{}, p.fail(`$type "unknown": missing or empty "type" (the source type name)`)
	}
	p.push(pkey("value"))
	defer p.pop()
	bad := func(why string) (Value, error) {
		return Value{}, p.fail(fmt.Sprintf("$type %q: %s", typ, why))
	}
	isString := val[0] == '"'
	isNumber := val[0] == '-' || isDigit(val[0])
	switch kind {
	case KindBool:
		switch string(val) {
		case "true":
			return BoolValue(true), nil
		case "false":
			return BoolValue(false), nil
		}
		return bad("expected true or false")
	case KindInt:
		s := string(val)
		if isString {
			s = unquote(val)
		}
		if isString || isNumber {
			if i, err := strconv.ParseInt(s, 10, 64); err == nil {
				return IntValue(i), nil
			}
		}
		return bad("expected an integer in the int64 range")
	case KindFloat:
		if isString {
			switch s := unquote(val); s {
			case "NaN":
				return FloatValue(math.NaN()), nil
			case "Infinity":
				return FloatValue(math.Inf(1)), nil
			case "-Infinity":
				return FloatValue(math.Inf(-1)), nil
			}
			return bad(`expected a number or "NaN", "Infinity", "-Infinity"`)
		}
		if !isNumber {
			return bad(`expected a number or "NaN", "Infinity", "-Infinity"`)
		}
		f, err := strconv.ParseFloat(string(val), 64)
		if err != nil {
			return bad(fmt.Sprintf("%s is out of the float64 range", val))
		}
		return FloatValue(f), nil
	case KindNumeric:
		s := string(val)
		if isString {
			s = unquote(val)
		} else if !isNumber {
			return bad("expected a decimal string or a number")
		}
		if !isNumeric(s) {
			return bad(fmt.Sprintf("invalid numeric %q", s))
		}
		return Value{kind: KindNumeric, str: s}, nil
	case KindText:
		if !isString {
			return bad("expected a string")
		}
		return TextValue(unquote(val)), nil
	case KindBytes:
		if !isString {
			return bad("expected a base64 string")
		}
		b, err := base64.StdEncoding.DecodeString(unquote(val))
		if err != nil {
			return bad("invalid base64: " + err.Error())
		}
		return Value{kind: KindBytes, str: string(b)}, nil
	case KindTimestamp:
		if !isString {
			return bad("expected an RFC 3339 string")
		}
		s := unquote(val)
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return bad(fmt.Sprintf("invalid RFC 3339 time %q", s))
		}
		v, err := TimestampValue(t)
		if err != nil {
			return bad(err.(*InvalidError).Reason)
		}
		return v, nil
	case KindJSON:
		return Value{kind: KindJSON, str: string(appendCompact(nil, val))}, nil
	case KindArray:
		if val[0] != '[' {
			return bad("expected an array")
		}
		return p.array(val, depth)
	case KindUnknown:
		if !isString {
			return bad("expected a string")
		}
		return UnknownValue(typeName, unquote(val)), nil
	}
	return bad("unsupported")
}
