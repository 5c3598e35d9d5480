package change

import (
	"bytes"
	"fmt"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// parser is a small JSON reader over one input held in memory. It keeps
// object keys in order, reports errors with the JSON path it is at and the
// exact byte offset, and captures raw JSON values without re-encoding them.
// It accepts exactly RFC 8259 JSON, except that it rejects lone UTF-16
// surrogates in \u escapes rather than replacing them.
type parser struct {
	data []byte // the whole input, valid UTF-8
	pos  int
	path []pathSeg
	// charge, if set, is told the memory the decoded values take, in
	// steps of chargeStep bytes (pending holds the rest): its error ends
	// the parse.
	charge  func(n int) error
	pending int
}

// chargeStep is how many bytes of decoded memory the parser counts before
// it calls charge.
const chargeStep = 64 << 10

// use counts n bytes of decoded memory.
func (p *parser) use(n int) error {
	if p.charge == nil {
		return nil
	}
	p.pending += n
	if p.pending < chargeStep {
		return nil
	}
	n, p.pending = p.pending, 0
	return p.charge(n)
}

// maxJSONDepth bounds the nesting of JSON objects and arrays (as
// encoding/json does).
const maxJSONDepth = 10000

func newParser(data []byte) (*parser, error) {
	if !utf8.Valid(data) {
		i := 0
		for i < len(data) {
			r, size := utf8.DecodeRune(data[i:])
			if r == utf8.RuneError && size == 1 {
				break
			}
			i += size
		}
		return nil, &InvalidError{Reason: fmt.Sprintf("invalid UTF-8 at offset %d", i)}
	}
	p := &parser{data: data}
	p.ws()
	if p.pos == len(data) {
		return nil, &InvalidError{Reason: "empty input"}
	}
	return p, nil
}

func (p *parser) push(s pathSeg) { p.path = append(p.path, s) }
func (p *parser) pop()           { p.path = p.path[:len(p.path)-1] }

func (p *parser) fail(reason string) error {
	return &InvalidError{Path: renderPath(p.path), Reason: reason}
}

// syntaxErr reports a syntax error at the current position.
func (p *parser) syntaxErr(expected string) error {
	return p.syntaxErrAt(p.pos, expected)
}

func (p *parser) syntaxErrAt(pos int, expected string) error {
	if pos >= len(p.data) {
		return p.fail("unexpected end of JSON input")
	}
	r, _ := utf8.DecodeRune(p.data[pos:])
	return p.fail(fmt.Sprintf("invalid JSON at offset %d: unexpected %s, expected %s", pos, strconv.QuoteRune(r), expected))
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

func (p *parser) ws() {
	for p.pos < len(p.data) && isSpace(p.data[p.pos]) {
		p.pos++
	}
}

// peek skips whitespace and returns the next byte, or 0 at the end.
func (p *parser) peek() byte {
	p.ws()
	if p.pos < len(p.data) {
		return p.data[p.pos]
	}
	return 0
}

// describe names the JSON type of the value starting with c, or "" if no
// value starts with c.
func describe(c byte) string {
	switch {
	case c == '{':
		return "an object"
	case c == '[':
		return "an array"
	case c == '"':
		return "a string"
	case c == 't' || c == 'f':
		return "a boolean"
	case c == 'n':
		return "null"
	case c == '-' || isDigit(c):
		return "a number"
	}
	return ""
}

// typeErr reports that the value at the current position is not what was
// expected, or a syntax error if there is no value there.
func (p *parser) typeErr(expected string) error {
	got := describe(p.peek())
	if got == "" {
		return p.syntaxErr("a value")
	}
	return p.fail("expected " + expected + ", got " + got)
}

// end checks that only whitespace remains.
func (p *parser) end() error {
	if p.peek(); p.pos != len(p.data) {
		return &InvalidError{Reason: fmt.Sprintf("unexpected data after the JSON value at offset %d", p.pos)}
	}
	return nil
}

// open consumes c ('{' or '[') or reports a type error naming what.
func (p *parser) open(c byte, what string) error {
	if p.peek() != c {
		return p.typeErr(what)
	}
	p.pos++
	return nil
}

// more reports whether the object or array being read (closed by end) has
// another member, consuming the ',' before it or the closing end. first
// says whether no member has been read yet.
func (p *parser) more(end byte, first bool) (bool, error) {
	c := p.peek()
	if c == end && p.pos < len(p.data) {
		p.pos++
		return false, nil
	}
	if first {
		return true, nil
	}
	if c != ',' || p.pos >= len(p.data) {
		return false, p.syntaxErr(fmt.Sprintf("',' or '%c'", end))
	}
	p.pos++
	return true, nil
}

// key reads an object key and its ':', checking it against the keys seen
// so far in the object (nil seen: no check).
func (p *parser) key(seen *[]string) (string, error) {
	if p.peek() != '"' {
		return "", p.syntaxErr("an object key")
	}
	k, err := p.string()
	if err != nil {
		return "", err
	}
	if p.peek() != ':' {
		return "", p.syntaxErr("':'")
	}
	p.pos++
	if seen != nil {
		for _, s := range *seen {
			if s == k {
				return "", p.fail(fmt.Sprintf("duplicate field %q", k))
			}
		}
		*seen = append(*seen, k)
	}
	return k, nil
}

// scanString checks the string literal at p.pos (at its opening quote) and
// returns the offset just past its closing quote and whether it has escapes.
func (p *parser) scanString() (end int, escaped bool, err error) {
	i := p.pos + 1
	for {
		j := bytes.IndexAny(p.data[i:], "\"\\")
		if j < 0 {
			// find the first control character, if any, for the error
			for k := i; k < len(p.data); k++ {
				if p.data[k] < 0x20 {
					return 0, false, p.controlErr(k)
				}
			}
			return 0, false, p.fail("unexpected end of JSON input")
		}
		for k := i; k < i+j; k++ {
			if p.data[k] < 0x20 {
				return 0, false, p.controlErr(k)
			}
		}
		i += j
		if p.data[i] == '"' {
			return i + 1, escaped, nil
		}
		escaped = true
		i++ // past '\'
		if i >= len(p.data) {
			return 0, false, p.fail("unexpected end of JSON input")
		}
		switch p.data[i] {
		case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			i++
		case 'u':
			r, ok := hex4(p.data, i+1)
			if !ok {
				return 0, false, p.syntaxErrAt(min(i+1, len(p.data)), `4 hex digits after \u`)
			}
			i += 5
			switch {
			case utf16.IsSurrogate(r) && r < 0xdc00: // high: a low must follow
				if i+1 < len(p.data) && p.data[i] == '\\' && p.data[i+1] == 'u' {
					if r2, ok := hex4(p.data, i+2); ok && r2 >= 0xdc00 && r2 <= 0xdfff {
						i += 6
						continue
					}
				}
				return 0, false, p.fail(fmt.Sprintf(`invalid JSON at offset %d: lone UTF-16 surrogate \u%04x`, i-6, r))
			case utf16.IsSurrogate(r):
				return 0, false, p.fail(fmt.Sprintf(`invalid JSON at offset %d: lone UTF-16 surrogate \u%04x`, i-6, r))
			}
		default:
			return 0, false, p.syntaxErrAt(i, "an escape character")
		}
	}
}

func (p *parser) controlErr(pos int) error {
	return p.fail(fmt.Sprintf("invalid JSON at offset %d: unescaped control character %s in a string", pos, strconv.QuoteRune(rune(p.data[pos]))))
}

func hex4(b []byte, i int) (rune, bool) {
	if i+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[i : i+4] {
		switch {
		case isDigit(c):
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}

// string reads the string literal at p.pos.
func (p *parser) string() (string, error) {
	if p.peek() != '"' {
		return "", p.typeErr("a string")
	}
	end, escaped, err := p.scanString()
	if err != nil {
		return "", err
	}
	body := p.data[p.pos+1 : end-1]
	p.pos = end
	if !escaped {
		return string(body), nil
	}
	return unescape(body), nil
}

// unescape decodes the body of a string literal that scanString accepted.
func unescape(body []byte) string {
	out := make([]byte, 0, len(body))
	for i := 0; i < len(body); {
		c := body[i]
		if c != '\\' {
			out = append(out, c)
			i++
			continue
		}
		i++
		switch body[i] {
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
			r, _ := hex4(body, i+1)
			i += 4
			if utf16.IsSurrogate(r) {
				r2, _ := hex4(body, i+3)
				r = utf16.DecodeRune(r, r2)
				i += 6
			}
			out = utf8.AppendRune(out, r)
		default: // '"', '\\', '/'
			out = append(out, body[i])
		}
		i++
	}
	return string(out)
}

// number reads a number literal and returns its text.
func (p *parser) number() (string, error) {
	p.ws()
	start, i := p.pos, p.pos
	d := p.data
	digits := func() bool {
		j := i
		for i < len(d) && isDigit(d[i]) {
			i++
		}
		return i > j
	}
	if i < len(d) && d[i] == '-' {
		i++
	}
	switch {
	case i < len(d) && d[i] == '0':
		i++
	case i < len(d) && isDigit(d[i]):
		digits()
	default:
		return "", p.syntaxErrAt(i, "a digit")
	}
	if i < len(d) && d[i] == '.' {
		i++
		if !digits() {
			return "", p.syntaxErrAt(i, "a digit after '.'")
		}
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		if !digits() {
			return "", p.syntaxErrAt(i, "a digit in the exponent")
		}
	}
	p.pos = i
	return string(d[start:i]), nil
}

// literal reads true, false or null.
func (p *parser) literal() (byte, error) {
	p.ws()
	var want string
	switch p.data[p.pos] {
	case 't':
		want = "true"
	case 'f':
		want = "false"
	default:
		want = "null"
	}
	for i := 0; i < len(want); i++ {
		if p.pos+i >= len(p.data) || p.data[p.pos+i] != want[i] {
			return 0, p.syntaxErrAt(p.pos+i, fmt.Sprintf("%q (in literal %s)", want[i], want))
		}
	}
	p.pos += len(want)
	return want[0], nil
}

// skipValue checks the JSON value at p.pos and moves past it, returning its
// bounds.
func (p *parser) skipValue() (start, end int, err error) {
	p.ws()
	start = p.pos
	var stack []byte // closers of the open containers
	for {
		// A value is expected here.
		switch c := p.peek(); c {
		case '{', '[':
			if len(stack) >= maxJSONDepth {
				return 0, 0, p.fail(fmt.Sprintf("invalid JSON at offset %d: nested more than %d deep", p.pos, maxJSONDepth))
			}
			p.pos++
			closer := byte(']')
			if c == '{' {
				closer = '}'
			}
			if p.peek() == closer && p.pos < len(p.data) {
				p.pos++
				break // an empty container is a complete value
			}
			stack = append(stack, closer)
			if c == '{' {
				if _, err := p.key(nil); err != nil {
					return 0, 0, err
				}
			}
			continue
		case '"':
			e, _, err := p.scanString()
			if err != nil {
				return 0, 0, err
			}
			p.pos = e
		case 't', 'f', 'n':
			if _, err := p.literal(); err != nil {
				return 0, 0, err
			}
		default:
			if describe(c) == "" || p.pos >= len(p.data) {
				return 0, 0, p.syntaxErr("a value")
			}
			if _, err := p.number(); err != nil {
				return 0, 0, err
			}
		}
		// A value is complete: close containers until one has a next member.
		for {
			if len(stack) == 0 {
				return start, p.pos, nil
			}
			closer := stack[len(stack)-1]
			c := p.peek()
			if c == closer && p.pos < len(p.data) {
				p.pos++
				stack = stack[:len(stack)-1]
				continue
			}
			if c != ',' || p.pos >= len(p.data) {
				return 0, 0, p.syntaxErr(fmt.Sprintf("',' or '%c'", closer))
			}
			p.pos++
			if closer == '}' {
				if _, err := p.key(nil); err != nil {
					return 0, 0, err
				}
			}
			break
		}
	}
}

// validJSON reports whether b, valid UTF-8, is exactly one JSON value the
// parser accepts (optionally surrounded by whitespace).
func validJSON(b []byte) bool {
	p := parser{data: b}
	if _, _, err := p.skipValue(); err != nil {
		return false
	}
	return p.end() == nil
}
