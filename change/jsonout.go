package change

import (
	"encoding/base64"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
	"unsafe"
)

// AppendJSON appends v's output JSON form to dst. The form round-trips:
// ParseValue of it returns a Value Equal to v, for every v that passes
// validation (valid UTF-8 text). Null, Bool, Int, Text, Array and JSON
// objects print naturally; what would read back differently prints in the
// "$type" form:
//
//	Null                      null
//	Bool                      true
//	Int                       -42
//	Text                      "x"
//	Array                     [1,"x",null]
//	JSON, an object           {"a":[1,2]} (unless it has a top-level "$type" key)
//	JSON, anything else       {"$type":"json","value":[1,2]}
//	Numeric, not an integer   12.30 (a bare JSON number; "NaN" etc. and integers as below)
//	Numeric, otherwise        {"$type":"numeric","value":"123"}
//	Float                     {"$type":"float","value":1.5} ("NaN", "Infinity", "-Infinity" as strings)
//	Bytes                     {"$type":"bytes","value":"AAEC"} (standard base64, padded)
//	Timestamp                 {"$type":"timestamp","value":"2024-05-01T12:00:00.000000001Z"}
//	Unknown                   {"$type":"unknown","type":"tsvector","value":"'a':1"}
//
// Invalid UTF-8 in text is replaced by U+FFFD. AppendJSON allocates nothing
// beyond growing dst.
func (v Value) AppendJSON(dst []byte) []byte {
	switch v.kind {
	case KindNull:
		return append(dst, "null"...)
	case KindBool:
		if v.num != 0 {
			return append(dst, "true"...)
		}
		return append(dst, "false"...)
	case KindInt:
		return strconv.AppendInt(dst, int64(v.num), 10)
	case KindFloat:
		dst = append(dst, `{"$type":"float","value":`...)
		f := math.Float64frombits(v.num)
		switch {
		case f != f:
			dst = append(dst, `"NaN"`...)
		case math.IsInf(f, 1):
			dst = append(dst, `"Infinity"`...)
		case math.IsInf(f, -1):
			dst = append(dst, `"-Infinity"`...)
		default:
			dst = strconv.AppendFloat(dst, f, 'g', -1, 64)
		}
		return append(dst, '}')
	case KindNumeric:
		if numericIsPlain(v.str) {
			return append(dst, v.str...)
		}
		dst = append(dst, `{"$type":"numeric","value":"`...)
		dst = append(dst, v.str...) // digits, '.', 'e', sign, NaN, Infinity: no escaping needed
		return append(dst, `"}`...)
	case KindText:
		return appendJSONString(dst, v.str)
	case KindBytes:
		dst = append(dst, `{"$type":"bytes","value":"`...)
		dst = appendBase64(dst, v.str)
		return append(dst, `"}`...)
	case KindTimestamp:
		dst = append(dst, `{"$type":"timestamp","value":"`...)
		dst = time.Unix(int64(v.num), int64(v.nsec)).UTC().AppendFormat(dst, time.RFC3339Nano)
		return append(dst, `"}`...)
	case KindJSON:
		if len(v.str) > 0 && v.str[0] == '{' && !hasTypeKey(v.str) {
			return append(dst, v.str...)
		}
		dst = append(dst, `{"$type":"json","value":`...)
		dst = append(dst, v.str...)
		return append(dst, '}')
	case KindArray:
		dst = append(dst, '[')
		for i := range v.arr {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = v.arr[i].AppendJSON(dst)
		}
		return append(dst, ']')
	case KindUnknown:
		dst = append(dst, `{"$type":"unknown","type":`...)
		dst = appendJSONString(dst, v.typ)
		dst = append(dst, `,"value":`...)
		dst = appendJSONString(dst, v.str)
		return append(dst, '}')
	}
	return append(dst, "null"...) // unreachable: kinds are checked on construction
}

// appendBase64 appends the standard, padded base64 of s without converting
// s to a []byte.
func appendBase64(dst []byte, s string) []byte {
	var chunk [48]byte // a multiple of 3: no padding between chunks
	for len(s) > 0 {
		n := copy(chunk[:], s)
		dst = base64.StdEncoding.AppendEncode(dst, chunk[:n])
		s = s[n:]
	}
	return dst
}

const hexDigits = "0123456789abcdef"

// AppendJSONString appends s as a JSON string, escaping '"', '\\', control
// characters, U+2028 and U+2029, and replacing invalid UTF-8 by U+FFFD.
func AppendJSONString(dst []byte, s string) []byte { return appendJSONString(dst, s) }

func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	dst = appendJSONStringBody(dst, s)
	return append(dst, '"')
}

// appendJSONStringBody is appendJSONString without the quotes.
func appendJSONStringBody(dst []byte, s string) []byte {
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	return append(dst, s[start:]...)
}

// appendRowJSON appends r as a JSON object, or null if r is absent.
func appendRowJSON(dst []byte, r Row) []byte {
	if r == nil {
		return append(dst, "null"...)
	}
	dst = append(dst, '{')
	for i := range r {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendJSONString(dst, r[i].Name)
		dst = append(dst, ':')
		dst = r[i].Value.AppendJSON(dst)
	}
	return append(dst, '}')
}

// DumpLine is one line of `walship dump`: one change with its position and
// its transaction's header.
type DumpLine struct {
	LSN        uint64    // the change's own LSN
	CommitLSN  uint64    // the LSN of the last record of its transaction
	CommitTime time.Time // the log's commit time of the transaction
	Header     TxHeader  // the transaction's header (repeated on every line)
	Change     *Change   // must not be nil
}

// AppendDumpJSON appends d as one JSON object, without a trailing newline,
// keys in this order:
//
//	lsn, commit_lsn         numbers
//	commit_time             RFC 3339 with nanoseconds, UTC
//	xid                     number
//	source_lsn              "X/Y", only if Header.SourceLSN != 0
//	source_commit_time      like commit_time, only if Header.SourceCommitTime is set
//	origin                  string, only if Header.Origin != ""
//	snapshot                number, only if Header.Snapshot != 0 (its bits)
//	table                   "schema.name" (Table.String), null for none
//	op                      one letter
//	key, before, after      objects (see Value.AppendJSON), null when absent
//	types                   {"col":"type",...}, only if Change.Types is not empty
//	message                 {"prefix":"...","content":...,"transactional":bool},
//	                        only if Change.Message != nil (op "m"); content is a
//	                        string if it is valid UTF-8, else a $type bytes object
//	truncate                {"cascade":bool,"restart_identity":bool}, only if
//	                        Change.TruncateOpts != 0 (op "t")
//
// ParseDumpLine reads it back; for a change that passes Validate the result
// Equals d. AppendDumpJSON allocates nothing beyond growing dst.
func AppendDumpJSON(dst []byte, d DumpLine) []byte {
	c := d.Change
	if c == nil {
		c = &Change{}
	}
	dst = append(dst, `{"lsn":`...)
	dst = strconv.AppendUint(dst, d.LSN, 10)
	dst = append(dst, `,"commit_lsn":`...)
	dst = strconv.AppendUint(dst, d.CommitLSN, 10)
	dst = append(dst, `,"commit_time":"`...)
	dst = d.CommitTime.UTC().AppendFormat(dst, time.RFC3339Nano)
	dst = append(dst, `","xid":`...)
	dst = strconv.AppendUint(dst, d.Header.XID, 10)
	if lsn := d.Header.SourceLSN; lsn != 0 {
		dst = append(dst, `,"source_lsn":"`...)
		dst = AppendSourceLSN(dst, lsn)
		dst = append(dst, '"')
	}
	if t := d.Header.SourceCommitTime; !t.IsZero() {
		dst = append(dst, `,"source_commit_time":"`...)
		dst = t.UTC().AppendFormat(dst, time.RFC3339Nano)
		dst = append(dst, '"')
	}
	if d.Header.Origin != "" {
		dst = append(dst, `,"origin":`...)
		dst = appendJSONString(dst, d.Header.Origin)
	}
	if d.Header.Snapshot != 0 {
		dst = append(dst, `,"snapshot":`...)
		dst = strconv.AppendUint(dst, uint64(d.Header.Snapshot), 10)
	}
	dst = append(dst, `,"table":`...)
	if c.Table.IsZero() {
		dst = append(dst, "null"...)
	} else {
		dst = append(dst, '"')
		dst = appendQuotedIdent(dst, c.Table.Schema)
		dst = append(dst, '.')
		dst = appendQuotedIdent(dst, c.Table.Name)
		dst = append(dst, '"')
	}
	dst = append(dst, `,"op":`...)
	dst = appendJSONString(dst, string(rune(c.Op)))
	dst = append(dst, `,"key":`...)
	dst = appendRowJSON(dst, c.Key)
	dst = append(dst, `,"before":`...)
	dst = appendRowJSON(dst, c.Before)
	dst = append(dst, `,"after":`...)
	dst = appendRowJSON(dst, c.After)
	if len(c.Types) > 0 {
		dst = append(dst, `,"types":{`...)
		for i, t := range c.Types {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendJSONString(dst, t.Name)
			dst = append(dst, ':')
			dst = appendJSONString(dst, t.Type)
		}
		dst = append(dst, '}')
	}
	if m := c.Message; m != nil {
		dst = append(dst, `,"message":{"prefix":`...)
		dst = appendJSONString(dst, m.Prefix)
		dst = append(dst, `,"content":`...)
		if utf8.Valid(m.Content) {
			dst = appendJSONString(dst, bytesAsString(m.Content))
		} else {
			dst = append(dst, `{"$type":"bytes","value":"`...)
			dst = base64.StdEncoding.AppendEncode(dst, m.Content)
			dst = append(dst, `"}`...)
		}
		dst = append(dst, `,"transactional":`...)
		dst = strconv.AppendBool(dst, m.Transactional)
		dst = append(dst, '}')
	}
	if o := c.TruncateOpts; o != 0 {
		dst = append(dst, `,"truncate":{"cascade":`...)
		dst = strconv.AppendBool(dst, o&TruncateCascade != 0)
		dst = append(dst, `,"restart_identity":`...)
		dst = strconv.AppendBool(dst, o&TruncateRestartIdentity != 0)
		dst = append(dst, '}')
	}
	return append(dst, '}')
}

// appendQuotedIdent appends the JSON-escaped text of quoteIdent(s) (the
// form Table.String uses) without allocating.
func appendQuotedIdent(dst []byte, s string) []byte {
	plain := s != ""
	for _, r := range s {
		if !isIdentRune(r) {
			plain = false
			break
		}
	}
	if plain {
		return appendJSONStringBody(dst, s)
	}
	// '"' + s with each '"' doubled + '"', then JSON-escaped.
	dst = append(dst, '\\', '"')
	for {
		i := strings.IndexByte(s, '"')
		if i < 0 {
			break
		}
		dst = appendJSONStringBody(dst, s[:i])
		dst = append(dst, '\\', '"', '\\', '"')
		s = s[i+1:]
	}
	dst = appendJSONStringBody(dst, s)
	return append(dst, '\\', '"')
}

// bytesAsString returns b as a string without copying. The caller must not
// retain the string beyond a call that does not modify b.
func bytesAsString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// appendHexUpper appends x in upper-case hex without leading zeros.
func appendHexUpper(dst []byte, x uint64) []byte {
	const digits = "0123456789ABCDEF"
	var buf [16]byte
	i := len(buf)
	for {
		i--
		buf[i] = digits[x&0xf]
		x >>= 4
		if x == 0 {
			break
		}
	}
	return append(dst, buf[i:]...)
}
