// Package secret keeps credentials out of logs, errors and pages
// (docs/OBSERVABILITY.md, "Secrets": secrets never appear in logs, errors
// or /status).
//
// Tools, from strongest to weakest:
//
//   - Secret, a string type that prints as "REDACTED" through fmt, JSON,
//     text marshalling and log/slog. Hold passwords and tokens in it and
//     call Reveal only where the value is used.
//   - DSN (and URL), for a value known to be a connection string or URL:
//     it parses the value the way the PostgreSQL driver does and replaces
//     exactly the secret values; what does not parse is hidden from the
//     first secret-looking word on. DSNError restates an error about a
//     connection string (the driver's parse errors quote it) so that no
//     piece of its secrets shows.
//   - ReplaceAttr, an slog.HandlerOptions.ReplaceAttr that blanks attributes
//     whose name says they are secret (IsSecretName), redacts attributes
//     named like a DSN or URL with DSN, and scrubs every other string,
//     error, Stringer and struct value with Text.
//   - Text, which scrubs credentials from free text by structure only:
//     URLs, secret-named key=value pairs, JSON members and %+v fields, and
//     Authorization header values. It never rewrites a word by itself.
//
// Guarantee: DSN and Text are idempotent and only ever replace the secret
// parts (or, for what does not parse, everything after a secret word);
// the user name, host, port and path of a URL stay readable so an
// operator can still tell which server an error is about.
//
// Limits: a secret written into free text without a recognisable
// structure (no "://user:", no "password=", a bare "Bearer x" outside an
// Authorization header) cannot be recognised; keep such values in a
// Secret, and pass connection strings through DSN before they reach text.
package secret

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
)

// Redacted is what every redacted value prints as.
const Redacted = "REDACTED"

// Secret is a string that never prints. Its zero value is the empty
// secret, which prints as "" so that "unset" stays visible.
type Secret string

// Reveal returns the secret value. Call it only where the value is used
// (an Authorization header, a DSN handed to the driver), never to print.
func (s Secret) Reveal() string { return string(s) }

func (s Secret) mask() string {
	if s == "" {
		return ""
	}
	return Redacted
}

// String implements fmt.Stringer (and so %s and %v).
func (s Secret) String() string { return s.mask() }

// GoString implements fmt.GoStringer (%#v).
func (s Secret) GoString() string { return `secret.Secret("` + s.mask() + `")` }

// MarshalJSON implements json.Marshaler.
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(s.mask()) }

// MarshalText implements encoding.TextMarshaler (YAML, text encoders).
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.mask()), nil }

// UnmarshalText implements encoding.TextUnmarshaler so a Secret can be
// read from config and JSON.
func (s *Secret) UnmarshalText(b []byte) error { *s = Secret(b); return nil }

// LogValue implements slog.LogValuer.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.mask()) }

// secretWords are name parts that mark an attribute or parameter as
// secret. A bare "key" is deliberately absent: walship logs row keys and
// archive object keys under "key"; secret keys must be qualified
// (secret_key, access_key, api_key, private_key, encryption_key, ...).
var secretWords = []string{
	"password", "passwd", "passphrase", "pwd", "secret", "token", "credential",
	"authorization", "apikey", "api_key", "accesskey", "access_key", "privatekey",
	"private_key", "encryptionkey", "encryption_key", "sessionkey", "session_key",
	"signature", "cookie",
}

// IsSecretName reports whether an attribute, field, header or parameter
// name marks a secret value: it contains (case-insensitively, with '-' and
// '.' taken as '_') one of password, passwd, passphrase, pwd, secret,
// token, credential, authorization, api_key, access_key, private_key,
// encryption_key, session_key, signature or cookie.
func IsSecretName(name string) bool {
	n := strings.ToLower(name)
	n = strings.NewReplacer("-", "_", ".", "_").Replace(n)
	for _, w := range secretWords {
		if strings.Contains(n, w) {
			return true
		}
	}
	return false
}

// Text scrubs credentials from free text (error messages, log messages,
// rendered pages). It changes only values it can tell are secrets by
// their structure, never words by themselves ("the bearer token crosses
// the network" is left alone):
//
//   - every URL (scheme://...) up to the next space, or, when a quote or
//     backquote opens it, up to the last matching quote before that space,
//     redacted as DSN redacts a URL (the password, secret query
//     parameters; the closing quote stays);
//   - key=value and key = value where key is a secret name (IsSecretName):
//     libpq pairs, environment variables; the value is parsed as libpq
//     does (quotes with backslash escapes, an unterminated quote runs to
//     the end of the text);
//   - JSON members "key": "value" and Go %+v fields Key:value (no space
//     after the colon) with a secret key;
//   - the credentials of an Authorization header value ("Authorization:
//     Bearer x").
//
// "key: value" with a space after the colon is prose ("listener.token:
// too short"), not an assignment, and is left alone.
func Text(s string) string {
	if s == "" {
		return s
	}
	var sp []span
	var urls []span
	for i := 0; ; {
		j := strings.Index(s[i:], "://")
		if j < 0 {
			break
		}
		j += i
		start := j
		for start > i && (isLetter(s[start-1]) || isDigit(s[start-1]) || strings.IndexByte("+.-", s[start-1]) >= 0) {
			start--
		}
		for start < j && !isLetter(s[start]) {
			start++
		}
		end := j + 3
		for end < len(s) && !isSpace(s[end]) {
			end++
		}
		if start > 0 && strings.IndexByte("`\"'", s[start-1]) >= 0 {
			// A URL quoted by the text around it ("…", `…`, '…') ends at
			// the last closing quote before the space: the quote is not
			// part of its password or query value, and must not be
			// redacted with them.
			// Only punctuation may follow that quote: a letter, digit,
			// '@' or '%' after it means the quote is inside the URL (a
			// password or query value holding one), and cutting there
			// would show the rest.
			if q := strings.LastIndexByte(s[j+3:end], s[start-1]); q >= 0 && onlyTrailingPunct(s[j+3+q+1:end]) {
				end = j + 3 + q
			}
		}
		if start < j {
			urls = append(urls, span{start, end})
			sp = append(sp, urlSpans(s, start, end)...)
		}
		i = end
	}
	inURL := func(k int) bool {
		for _, u := range urls {
			if k >= u.start && k < u.end {
				return true
			}
		}
		return false
	}
	for k := 0; k < len(s); k++ {
		c := s[k]
		if (c != '=' && c != ':') || inURL(k) {
			continue
		}
		if c == '=' && (k+1 < len(s) && s[k+1] == '=' || k > 0 && strings.IndexByte("=!<>", s[k-1]) >= 0) {
			continue
		}
		// The key before the separator.
		e := k
		if c == '=' {
			for e > 0 && isSpace(s[e-1]) {
				e--
			}
		}
		quotedKey := false
		b := e
		if c == ':' && e > 0 && s[e-1] == '"' {
			// A JSON member: "key": value.
			q := strings.LastIndexByte(s[:e-1], '"')
			if q < 0 {
				continue
			}
			b, e, quotedKey = q+1, e-1, true
			if strings.IndexFunc(s[b:e], func(r rune) bool {
				return !(r < 128 && (isLetter(byte(r)) || isDigit(byte(r)) || strings.ContainsRune("_.-", r)))
			}) >= 0 {
				continue // a quoted phrase before a colon, not a JSON key
			}
		} else {
			for b > 0 && (isLetter(s[b-1]) || isDigit(s[b-1]) || strings.IndexByte("_.-", s[b-1]) >= 0) {
				b--
			}
		}
		key := s[b:e]
		if key == "" || !IsSecretName(key) {
			continue
		}
		v := k + 1
		if c == ':' && !quotedKey {
			// Go's %+v: Key:value, no space; with a space it is prose,
			// unless the key is an Authorization header.
			if v < len(s) && isSpace(s[v]) && !strings.EqualFold(key, "authorization") {
				continue
			}
		}
		for v < len(s) && isSpace(s[v]) {
			v++
		}
		if strings.EqualFold(key, "authorization") {
			// "Bearer x", "Basic x": the scheme stays readable.
			w := v
			for w < len(s) && isLetter(s[w]) {
				w++
			}
			if w > v && w < len(s) && s[w] == ' ' {
				for w < len(s) && isSpace(s[w]) {
					w++
				}
				v = w
			}
		}
		if ve := valueEnd(s, v, c == ':' && !quotedKey); ve > v {
			sp = append(sp, span{v, ve})
		}
	}
	return apply(s, merge(sp))
}

// onlyTrailingPunct reports whether t holds nothing but the punctuation
// that prose puts after a quoted value (":", ",", ".", ")", ...).
func onlyTrailingPunct(t string) bool {
	for i := 0; i < len(t); i++ {
		if strings.IndexByte(":;,.!?)]}>", t[i]) < 0 {
			return false
		}
	}
	return true
}

// valueEnd returns where the value starting at s[v] ends: a quoted value
// at its closing quote (an unterminated one at the end of s), any other
// at the next unescaped space as libpq reads it (and a Go %+v field also
// at '}', ']' or ','). A quote or backquote right after the value is
// taken with it: the text around may have quoted the value, or the value
// may hold it, and only the second matters.
func valueEnd(s string, v int, goField bool) int {
	if v >= len(s) {
		return v
	}
	if q := s[v]; q == '\'' || q == '"' {
		i := v + 1
		for i < len(s) && s[i] != q {
			if s[i] == '\\' {
				i++
			}
			i++
		}
		return min(i+1, len(s))
	}
	stop := spaces
	if goField {
		stop += "}],"
	}
	i := v
	for i < len(s) && strings.IndexByte(stop, s[i]) < 0 {
		if s[i] == '\\' {
			i++
		}
		i++
	}
	return min(i, len(s))
}

// Error returns err with its message scrubbed by Text. errors.Is and
// errors.As still see the original chain; only Error() changes. A nil
// err gives nil.
func Error(err error) error {
	if err == nil {
		return nil
	}
	return &redactedError{err: err}
}

type redactedError struct{ err error }

func (e *redactedError) Error() string { return Text(e.err.Error()) }
func (e *redactedError) Unwrap() error { return e.err }

// ReplaceAttr is an slog.HandlerOptions.ReplaceAttr: attributes whose key
// is a secret name print as "REDACTED"; string, error and Stringer values
// (and the message) are scrubbed by Text. Values are resolved first, so a
// Secret or other LogValuer is already its safe form here.
func ReplaceAttr(_ []string, a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	if k := strings.ToLower(a.Key); v.Kind() == slog.KindString && (strings.HasSuffix(k, "dsn") || strings.HasSuffix(k, "url")) {
		if t := DSN(v.String()); t != v.String() {
			return slog.String(a.Key, t)
		}
	}
	if a.Key != slog.MessageKey && a.Key != slog.LevelKey && a.Key != slog.TimeKey && IsSecretName(a.Key) {
		if v.Kind() == slog.KindString && v.String() == "" {
			return a
		}
		return slog.String(a.Key, Redacted)
	}
	switch v.Kind() {
	case slog.KindString:
		if t := Text(v.String()); t != v.String() {
			return slog.String(a.Key, t)
		}
	case slog.KindAny:
		switch x := v.Any().(type) {
		case error:
			return slog.String(a.Key, Text(x.Error()))
		case interface{ String() string }:
			return slog.String(a.Key, Text(x.String()))
		case nil, []byte:
		default:
			// A struct or map: check both renderings a handler may use
			// (text: %+v, JSON: its tags); only when either shows a secret
			// is the value replaced by its redacted text form.
			if t := fmt.Sprintf("%+v", x); Text(t) != t {
				return slog.String(a.Key, Text(t))
			}
			if b, err := json.Marshal(x); err == nil {
				if t := string(b); Text(t) != t {
					return slog.String(a.Key, Text(t))
				}
			}
		}
	}
	a.Value = v
	return a
}
