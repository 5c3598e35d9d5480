package secret

import (
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// span is a byte range [start, end) of a string that holds a secret.
type span struct{ start, end int }

// DSN returns a connection string with its secrets replaced by Redacted.
// It parses s the way the PostgreSQL driver does: a string that starts with
// scheme:// is a URL, anything else a libpq keyword/value string.
//
// Keyword/value: keys may have spaces around '='; a value is either
// single-quoted (with \' and \\ escapes) or runs to the next unescaped
// space. The value of every key whose name marks a secret (password,
// sslpassword, ... see IsSecretName) is replaced, quotes included. When
// the string does not parse (an unterminated quote, a word without '='),
// everything after the first secret-looking word is replaced: a string the
// driver rejects has no reliable boundaries, so less of it is shown.
//
// URL: the password runs from the ':' after the user name to the last '@'
// of the string, so a password holding an unencoded '@', ':', '/', '?' or
// '%' is covered whole (when a later part of the URL holds an '@' as well,
// more than the password is hidden, never less). The value of every query
// parameter whose name marks a secret (password=, sslpassword=, presigned
// X-Amz-Signature=) is replaced.
//
// The user name, host, port, database and other parameters stay readable.
// DSN is idempotent.
func DSN(s string) string { return apply(s, dsnSpans(s)) }

// URL is DSN under a name that says what the caller holds.
func URL(u string) string { return DSN(u) }

// Addr returns a network address (host:port, a broker or listener
// address) with any user information before its last '@' redacted: such
// a value is no valid address, but a user who pastes user:password@host
// into it must not see the password echoed. "user:pw@h:1" gives
// "user:REDACTED@h:1"; "tok@h:1" gives "REDACTED@h:1" (a lone word may be
// a token). A value that holds a URL is redacted as DSN does. Addr is
// idempotent.
func Addr(s string) string {
	if schemeEnd(s, 0) >= 0 {
		return DSN(s)
	}
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		return s
	}
	user := s[:at]
	if c := strings.IndexByte(user, ':'); c >= 0 {
		if user[c+1:] == Redacted {
			return s
		}
		return user[:c+1] + Redacted + s[at:]
	}
	if user == Redacted {
		return s
	}
	return Redacted + s[at:]
}

// dsnSpans returns the secret parts of a connection string, merged and in
// order.
func dsnSpans(s string) []span {
	if schemeEnd(s, 0) >= 0 {
		return merge(urlSpans(s, 0, len(s)))
	}
	sp, ok := kvSpans(s)
	if !ok {
		sp = append(sp, fallbackSpans(s, 0, len(s))...)
	}
	return merge(sp)
}

const spaces = " \t\n\r\v\f"

func isSpace(c byte) bool { return strings.IndexByte(spaces, c) >= 0 }

// schemeEnd returns the index just past "scheme://" when s[at:] starts
// with a URL scheme, else -1.
func schemeEnd(s string, at int) int {
	i := at
	for i < len(s) && isSpace(s[i]) {
		i++
	}
	if i >= len(s) || !isLetter(s[i]) {
		return -1
	}
	for i < len(s) && (isLetter(s[i]) || isDigit(s[i]) || s[i] == '+' || s[i] == '.' || s[i] == '-') {
		i++
	}
	if strings.HasPrefix(s[i:], "://") {
		return i + 3
	}
	return -1
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isDigit(c byte) bool  { return c >= '0' && c <= '9' }

// kvSpans parses s as pgconn's parseKeywordValueSettings does and returns
// the values of secret keys; ok is false where the driver would fail.
func kvSpans(s string) (sp []span, ok bool) {
	if strings.IndexByte(s, 0) >= 0 {
		return nil, false
	}
	n, i := len(s), 0
	skip := func() {
		for i < n && isSpace(s[i]) {
			i++
		}
	}
	skip()
	for i < n {
		eq := strings.IndexByte(s[i:], '=')
		if eq < 0 {
			return sp, false
		}
		key := strings.Trim(s[i:i+eq], spaces)
		if key == "" || strings.ContainsAny(key, spaces) {
			return sp, false
		}
		i += eq + 1
		skip()
		vs := i
		if i < n && s[i] == '\'' {
			i++
			for i < n && s[i] != '\'' {
				if s[i] == '\\' {
					i++
				}
				i++
			}
			if i >= n {
				if IsSecretName(key) {
					sp = append(sp, span{vs, n})
				}
				return sp, false
			}
			i++
		} else {
			for i < n && !isSpace(s[i]) {
				if s[i] == '\\' {
					i++
				}
				i++
			}
			if i > n {
				i = n
			}
		}
		if IsSecretName(key) && i > vs {
			sp = append(sp, span{vs, i})
		}
		skip()
	}
	return sp, true
}

// fallbackSpans covers s[from:to] from just after the first secret word
// (and a following '=' or ':') to the end: what is left to do when the
// boundaries of a value cannot be known.
func fallbackSpans(s string, from, to int) []span {
	low := strings.ToLower(s[from:to])
	best := -1
	for _, w := range secretWords {
		if i := strings.Index(low, w); i >= 0 && (best < 0 || i+len(w) < best) {
			best = i + len(w)
		}
	}
	if best < 0 {
		return nil
	}
	i := from + best
	for i < to && (isLetter(s[i]) || isDigit(s[i]) || s[i] == '_') {
		i++
	}
	for i < to && isSpace(s[i]) {
		i++
	}
	if i < to && (s[i] == '=' || s[i] == ':') {
		i++
	}
	for i < to && isSpace(s[i]) {
		i++
	}
	if i >= to {
		return nil
	}
	return []span{{i, to}}
}

// urlSpans returns the secret parts of the URL s[from:to] (from is where
// the scheme starts).
func urlSpans(s string, from, to int) []span {
	start := schemeEnd(s[:to], from)
	rest := s[start:to]
	var sp []span
	firstAt := strings.IndexByte(rest, '@')
	colon := strings.IndexByte(rest, ':')
	if firstAt >= 0 && colon >= 0 && colon < firstAt {
		// libpq ends the user information at the first '@' before a '/';
		// a password with an unencoded '@' or '/' would then leak into the
		// host or path, so the password runs to the last '@'.
		if lastAt := strings.LastIndexByte(rest, '@'); colon+1 < lastAt {
			sp = append(sp, span{start + colon + 1, start + lastAt})
		}
	}
	// The query: '&'-separated key=value pairs after the first '?', looked
	// for everywhere (a '?' inside a raw password starts no query, but
	// looking there too hides more, never less).
	q := strings.IndexByte(rest, '?')
	if q < 0 {
		return sp
	}
	at := start + q + 1
	for at <= to {
		end := strings.IndexByte(s[at:to], '&')
		if end < 0 {
			end = to
		} else {
			end += at
		}
		eq := strings.IndexByte(s[at:end], '=')
		if eq < 0 || strings.IndexByte(s[at+eq+1:end], '=') >= 0 {
			// Not a key=value pair: the driver refuses it; hide the rest
			// of the query from the first secret-looking word on.
			sp = append(sp, fallbackSpans(s, at, to)...)
			break
		}
		key := s[at : at+eq]
		if dk, err := url.QueryUnescape(key); err == nil {
			key = dk
		}
		if IsSecretName(key) && at+eq+1 < end {
			sp = append(sp, span{at + eq + 1, end})
		}
		at = end + 1
	}
	return sp
}

// merge sorts spans and joins overlapping ones.
func merge(sp []span) []span {
	if len(sp) < 2 {
		return sp
	}
	sort.Slice(sp, func(i, j int) bool { return sp[i].start < sp[j].start })
	out := sp[:1]
	for _, x := range sp[1:] {
		last := &out[len(out)-1]
		if x.start <= last.end {
			last.end = max(last.end, x.end)
			continue
		}
		out = append(out, x)
	}
	return out
}

// apply replaces each span of s by Redacted, keeping the quotes of a
// quoted value so that the result still reads as what it was.
func apply(s string, sp []span) string {
	if len(sp) == 0 {
		return s
	}
	var b strings.Builder
	prev := 0
	for _, x := range sp {
		b.WriteString(s[prev:x.start])
		v := s[x.start:x.end]
		switch {
		case strings.HasPrefix(v, "'"):
			b.WriteString("'" + Redacted + "'")
		case strings.HasPrefix(v, `"`):
			b.WriteString(`"` + Redacted + `"`)
		default:
			b.WriteString(Redacted)
		}
		prev = x.end
	}
	b.WriteString(s[prev:])
	return b.String()
}

// DSNError returns err, an error about the connection string dsn, with a
// message that cannot show dsn's secrets: the driver's parse errors
// (which quote the connection string with only a best-effort mask) are
// restated with DSN(dsn), and every piece of the secret parts of dsn
// (its words, as raw, unescaped and percent-decoded text) is removed from
// the message, so an error that echoes part of a password, such as a
// host name made of a password's tail after an unencoded '@', shows
// Redacted instead. errors.Is and errors.As still see err. A nil err
// gives nil.
func DSNError(dsn string, err error) error {
	if err == nil {
		return nil
	}
	return &dsnError{dsn: dsn, err: err}
}

type dsnError struct {
	dsn string
	err error
}

func (e *dsnError) Unwrap() error { return e.err }

func (e *dsnError) Error() string {
	msg := e.err.Error()
	var pce *pgconn.ParseConfigError
	if errors.As(e.err, &pce) {
		// pgconn's text is "cannot parse `<masked dsn>`: why (cause)";
		// keep only the why.
		why := msg
		if i := strings.LastIndex(msg, "`: "); i >= 0 {
			why = msg[i+3:]
		}
		// The connection string is already redacted: Text would take a
		// quote after a trailing password for part of it.
		return fmt.Sprintf("cannot parse %q: %s", DSN(e.dsn), Text(scrub(why, pieces(e.dsn))))
	}
	return Text(scrub(msg, pieces(e.dsn)))
}

// pieces returns the words of dsn's secret parts, longest first: the
// text an error may echo. Words shorter than three bytes are left out:
// hiding every "a" in a message would make it unreadable and show no more.
func pieces(dsn string) []string {
	seen := map[string]bool{}
	var out []string
	add := func(v string) {
		for _, w := range strings.FieldsFunc(v, func(r rune) bool { return strings.ContainsRune(" \t\n\r\v\f'\"\\@:/?%&=,;`", r) }) {
			if len(w) >= 3 && !seen[w] && !strings.Contains(Redacted, w) {
				seen[w] = true
				out = append(out, w)
			}
		}
		if len(v) >= 3 && !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	for _, x := range dsnSpans(dsn) {
		raw := dsn[x.start:x.end]
		add(raw)
		add(strings.Trim(unescape(raw), "'"))
		if d, err := url.PathUnescape(raw); err == nil {
			add(d)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// unescape drops libpq's backslash escapes.
func unescape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' {
			i++
			if i == len(s) {
				break
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func scrub(msg string, words []string) string {
	for _, w := range words {
		msg = strings.ReplaceAll(msg, w, Redacted)
	}
	return msg
}
