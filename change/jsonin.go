package change

import (
	"encoding/base64"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unsafe"
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
//	"truncate" for op "t", optional: {"cascade":false,"restart_identity":false}
//
// Column values follow the input mapping of ParseValue. Unknown and
// duplicate fields are errors, as are duplicate column names and an empty
// "changes". Errors are *InvalidError whose Path is the JSON path of the
// offending element, e.g. `changes[2].after.v`; Line is left 0 for the
// caller to set. The returned Txn does not share memory with line.
func ParseTxnLine(line []byte) (Txn, error) { return parseTxnLine(line, nil) }

// parseTxnLine is ParseTxnLine, telling charge (if not nil) about the
// memory the decoded transaction takes as it is decoded (see
// Decoder.SetCharge).
func parseTxnLine(line []byte, charge func(int) error) (Txn, error) {
	p, err := newParser(line)
	if err != nil {
		return Txn{}, err
	}
	p.charge = charge
	if err := p.open('{', "a JSON object"); err != nil {
		return Txn{}, err
	}
	var (
		txn         Txn
		single      Change
		singleField string // the first change field seen at the top level
		haveChanges bool
		seen        []string
	)
	for first := true; ; first = false {
		more, err := p.more('}', first)
		if err != nil {
			return Txn{}, err
		}
		if !more {
			break
		}
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
	if err := p.end(); err != nil {
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
	if err := p.open('{', "a JSON object"); err != nil {
		return DumpLine{}, err
	}
	var (
		d    DumpLine
		c    Change
		seen []string
	)
	for first := true; ; first = false {
		more, err := p.more('}', first)
		if err != nil {
			return DumpLine{}, err
		}
		if !more {
			break
		}
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
		case "snapshot":
			var n uint64
			if n, err = p.uint64(); err == nil {
				if n > 0xff {
					err = p.fail(fmt.Sprintf("snapshot position %d out of range", n))
				}
				d.Header.Snapshot = SnapshotPos(n)
			}
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
	if err := p.end(); err != nil {
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
	v, err := p.value(0)
	if err != nil {
		return Value{}, err
	}
	if err := p.end(); err != nil {
		return Value{}, err
	}
	return v, nil
}

// The sizes of the decoded forms, for parser.use: a slice's element counts
// twice, for the room append leaves; a column's name, once more for the
// duplicate check of a wide row (Row.validate).
const (
	changeBytes     = int(unsafe.Sizeof(Change{}))
	columnBytes     = int(unsafe.Sizeof(Column{}))
	columnTypeBytes = int(unsafe.Sizeof(ColumnType{}))
	valueBytes      = int(unsafe.Sizeof(Value{}))
	dupCheckBytes   = 48
)

var changeFields = []string{"table", "op", "key", "before", "after", "types", "message", "truncate"}

func isChangeField(k string) bool { return slices.Contains(changeFields, k) }

func (p *parser) uint64() (uint64, error) {
	if describe(p.peek()) != "a number" {
		return 0, p.typeErr("an unsigned 64-bit integer")
	}
	n, err := p.number()
	if err != nil {
		return 0, err
	}
	x, err := strconv.ParseUint(n, 10, 64)
	if err != nil {
		return 0, p.fail("expected an unsigned 64-bit integer, got " + n)
	}
	return x, nil
}

func (p *parser) time() (time.Time, error) {
	s, err := p.string()
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
		if s, err = p.string(); err == nil {
			if h.SourceLSN, err = ParseSourceLSN(s); err != nil {
				err = p.fail(err.(*InvalidError).Reason)
			}
		}
	case "commit_time":
		h.SourceCommitTime, err = p.time()
	case "origin":
		h.Origin, err = p.string()
	}
	return err
}

// changes reads the array of "changes".
func (p *parser) changes() ([]Change, error) {
	if err := p.open('[', "an array of changes"); err != nil {
		return nil, err
	}
	var cs []Change
	for i := 0; ; i++ {
		more, err := p.more(']', i == 0)
		if err != nil {
			return nil, err
		}
		if !more {
			return cs, nil
		}
		p.push(pidx(i))
		if err := p.use(2 * changeBytes); err != nil {
			return nil, err
		}
		if err := p.open('{', "a change object"); err != nil {
			return nil, err
		}
		var (
			c    Change
			seen []string
		)
		for first := true; ; first = false {
			more, err := p.more('}', first)
			if err != nil {
				return nil, err
			}
			if !more {
				break
			}
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
		cs = append(cs, c)
		p.pop()
	}
}

func (p *parser) changeField(c *Change, k string) error {
	var err error
	switch k {
	case "table":
		if p.peek() == 'n' {
			_, err = p.literal()
			c.Table = Table{}
			return err
		}
		var s string
		if s, err = p.string(); err != nil {
			return err
		}
		if c.Table, err = ParseTable(s); err != nil {
			return p.fail(err.(*InvalidError).Reason)
		}
	case "op":
		var s string
		if s, err = p.string(); err != nil {
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
	case "truncate":
		c.TruncateOpts, err = p.truncateOpts()
	}
	return err
}

// truncateOpts reads {"cascade":bool,"restart_identity":bool} or null.
func (p *parser) truncateOpts() (TruncateOptions, error) {
	if null, err := p.isNull(); null || err != nil {
		return 0, err
	}
	if err := p.open('{', "a truncate options object or null"); err != nil {
		return 0, err
	}
	var o TruncateOptions
	var seen []string
	for first := true; ; first = false {
		more, err := p.more('}', first)
		if err != nil {
			return 0, err
		}
		if !more {
			return o, nil
		}
		k, err := p.key(&seen)
		if err != nil {
			return 0, err
		}
		p.push(pkey(k))
		var bit TruncateOptions
		switch k {
		case "cascade":
			bit = TruncateCascade
		case "restart_identity":
			bit = TruncateRestartIdentity
		default:
			p.pop()
			return 0, p.fail(fmt.Sprintf("unknown field %q", k))
		}
		switch p.peek() {
		case 't', 'f':
			var c byte
			if c, err = p.literal(); err != nil {
				return 0, err
			}
			if c == 't' {
				o |= bit
			}
		default:
			return 0, p.typeErr("a boolean")
		}
		p.pop()
	}
}

// isNull consumes a null literal if one is next.
func (p *parser) isNull() (bool, error) {
	if p.peek() != 'n' {
		return false, nil
	}
	_, err := p.literal()
	return err == nil, err
}

// row reads a row object, or null for an absent row.
func (p *parser) row() (Row, error) {
	if null, err := p.isNull(); null || err != nil {
		return nil, err
	}
	if err := p.open('{', "an object of columns or null"); err != nil {
		return nil, err
	}
	r := Row{}
	for first := true; ; first = false {
		more, err := p.more('}', first)
		if err != nil {
			return nil, err
		}
		if !more {
			return r, nil
		}
		name, err := p.key(nil)
		if err != nil {
			return nil, err
		}
		if err := p.use(2*columnBytes + len(name) + dupCheckBytes); err != nil {
			return nil, err
		}
		p.push(pkey(name))
		v, err := p.value(0)
		if err != nil {
			return nil, err
		}
		r = append(r, Column{Name: name, Value: v})
		p.pop()
	}
}

func (p *parser) types() ([]ColumnType, error) {
	if null, err := p.isNull(); null || err != nil {
		return nil, err
	}
	if err := p.open('{', "an object of type names or null"); err != nil {
		return nil, err
	}
	var ts []ColumnType
	for first := true; ; first = false {
		more, err := p.more('}', first)
		if err != nil {
			return nil, err
		}
		if !more {
			return ts, nil
		}
		name, err := p.key(nil)
		if err != nil {
			return nil, err
		}
		p.push(pkey(name))
		typ, err := p.string()
		if err != nil {
			return nil, err
		}
		if err := p.use(2*columnTypeBytes + len(name) + len(typ) + dupCheckBytes); err != nil {
			return nil, err
		}
		ts = append(ts, ColumnType{Name: name, Type: typ})
		p.pop()
	}
}

func (p *parser) message() (*LogicalMessage, error) {
	if null, err := p.isNull(); null || err != nil {
		return nil, err
	}
	if err := p.open('{', "a message object or null"); err != nil {
		return nil, err
	}
	m := &LogicalMessage{}
	var seen []string
	for first := true; ; first = false {
		more, err := p.more('}', first)
		if err != nil {
			return nil, err
		}
		if !more {
			return m, nil
		}
		k, err := p.key(&seen)
		if err != nil {
			return nil, err
		}
		p.push(pkey(k))
		switch k {
		case "prefix":
			m.Prefix, err = p.string()
		case "content":
			var v Value
			if v, err = p.value(0); err != nil {
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
			switch p.peek() {
			case 't', 'f':
				var c byte
				c, err = p.literal()
				m.Transactional = c == 't'
			default:
				err = p.typeErr("a boolean")
			}
		default:
			p.pop()
			return nil, p.fail(fmt.Sprintf("unknown field %q", k))
		}
		if err != nil {
			return nil, err
		}
		p.pop()
	}
}

// value reads a JSON value, inside depth arrays, in the input mapping,
// and counts the memory it takes beyond its Value (parser.use).
func (p *parser) value(depth int) (Value, error) {
	v, err := p.value1(depth)
	if err == nil {
		err = p.use(len(v.str) + len(v.typ))
	}
	return v, err
}

func (p *parser) value1(depth int) (Value, error) {
	switch c := p.peek(); c {
	case 't', 'f', 'n':
		l, err := p.literal()
		switch {
		case err != nil:
			return Value{}, err
		case l == 'n':
			return Value{}, nil
		}
		return BoolValue(l == 't'), nil
	case '"':
		s, err := p.string()
		if err != nil {
			return Value{}, err
		}
		return TextValue(s), nil
	case '[':
		return p.array(depth)
	case '{':
		start, end, err := p.skipValue()
		if err != nil {
			return Value{}, err
		}
		raw := p.data[start:end]
		if !hasTypeKey(bytesAsString(raw)) {
			return Value{kind: KindJSON, str: string(appendCompact(nil, raw))}, nil
		}
		p.pos = start
		v, err := p.typed(depth)
		p.pos = end
		return v, err
	default:
		if describe(c) == "" {
			return Value{}, p.syntaxErr("a value")
		}
		s, err := p.number()
		if err != nil {
			return Value{}, err
		}
		if isInt64Literal(s) {
			i, _ := strconv.ParseInt(s, 10, 64)
			return IntValue(i), nil
		}
		return Value{kind: KindNumeric, str: s}, nil
	}
}

func (p *parser) array(depth int) (Value, error) {
	if depth >= MaxNesting {
		return Value{}, p.fail(fmt.Sprintf("arrays nested more than %d deep", MaxNesting))
	}
	if err := p.open('[', "an array"); err != nil {
		return Value{}, err
	}
	elems := []Value{}
	for i := 0; ; i++ {
		more, err := p.more(']', i == 0)
		if err != nil {
			return Value{}, err
		}
		if !more {
			return Value{kind: KindArray, arr: elems}, nil
		}
		p.push(pidx(i))
		if err := p.use(2 * valueBytes); err != nil {
			return Value{}, err
		}
		v, err := p.value(depth + 1)
		if err != nil {
			return Value{}, err
		}
		p.pop()
		elems = append(elems, v)
	}
}

var typeNames = strings.Join(kindNames[:], ", ")

// typed reads an object with a "$type" key (already checked to be valid
// JSON).
func (p *parser) typed(depth int) (Value, error) {
	p.pos++ // '{'
	var (
		typ, typeName     string
		valStart, valEnd  int
		haveVal, haveName bool // "value" and "type" present
		seen              []string
	)
	for first := true; ; first = false {
		more, err := p.more('}', first)
		if err != nil {
			return Value{}, err
		}
		if !more {
			break
		}
		k, err := p.key(&seen)
		if err != nil {
			return Value{}, p.fail(err.(*InvalidError).Reason + " in $type object")
		}
		switch k {
		case "$type":
			if p.peek() != '"' {
				return Value{}, p.fail("$type must be a string")
			}
			typ, _ = p.string()
		case "value":
			haveVal = true
			valStart, valEnd, _ = p.skipValue()
		case "type":
			if p.peek() != '"' {
				return Value{}, p.fail(`"type" must be a string`)
			}
			typeName, _ = p.string()
			haveName = true
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
	val := p.data[valStart:valEnd]
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
	isNumber := describe(val[0]) == "a number"
	str := func() string { // the string val holds
		p.pos = valStart
		s, _ := p.string()
		return s
	}
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
			s = str()
		}
		if (isString || isNumber) && isDecimalInt(s) {
			if i, err := strconv.ParseInt(s, 10, 64); err == nil {
				return IntValue(i), nil
			}
		}
		return bad("expected an integer in the int64 range")
	case KindFloat:
		if isString {
			switch str() {
			case "NaN":
				return FloatValue(math.NaN()), nil
			case "Infinity":
				return FloatValue(math.Inf(1)), nil
			case "-Infinity":
				return FloatValue(math.Inf(-1)), nil
			}
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
			s = str()
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
		return TextValue(str()), nil
	case KindBytes:
		if !isString {
			return bad("expected a base64 string")
		}
		b, err := base64.StdEncoding.DecodeString(str())
		if err != nil {
			return bad("invalid base64: " + err.Error())
		}
		return Value{kind: KindBytes, str: string(b)}, nil
	case KindTimestamp:
		if !isString {
			return bad("expected an RFC 3339 string")
		}
		s := str()
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
		p.pos = valStart
		return p.array(depth)
	case KindUnknown:
		if !isString {
			return bad("expected a string")
		}
		return UnknownValue(typeName, str()), nil
	}
	return bad("unsupported")
}

// isDecimalInt reports whether s is an optional '-' and decimal digits.
func isDecimalInt(s string) bool {
	s = strings.TrimPrefix(s, "-")
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return true
}
