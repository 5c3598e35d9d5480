// Package secret keeps credentials out of logs, errors and pages
// (docs/OBSERVABILITY.md, "Secrets": secrets never appear in logs, errors
// or /status).
//
// Three tools, from strongest to weakest:
//
//   - Secret, a string type that prints as "REDACTED" through fmt, JSON,
//     text marshalling and log/slog. Hold passwords and tokens in it and
//     call Reveal only where the value is used.
//   - ReplaceAttr, an slog.HandlerOptions.ReplaceAttr that blanks attributes
//     whose name says they are secret (IsSecretName) and scrubs credentials
//     out of every other string, error, Stringer and struct value (Text).
//   - Text and URL, which scrub credentials from free text: the password of
//     a URL or DSN (postgres://u:pw@h), libpq key=value passwords
//     (password=pw), S3/AWS secret keys, SASL passwords, bearer tokens and
//     presigned-URL signatures.
//
// Guarantee: Text is idempotent and only ever shortens or replaces the
// secret parts; the user name, host, port and path of a URL stay readable
// so an operator can still tell which server an error is about.
//
// Limits: a secret written into free text without a recognisable marker
// (no "://user:", no "password=" and the like) cannot be recognised; keep
// such values in a Secret.
package secret

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"regexp"
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

var (
	// scheme://user:password@ — the password runs to the last '@' before
	// the host, so passwords containing '@' or ':' are covered.
	urlPassword = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@"'<>]*:)([^\s"'<>]*)@`)
	// key=value and key: value pairs whose key names a secret; the value is
	// quoted or runs to a separator. Covers libpq DSNs, query strings,
	// JSON ("password":"x") and Go %+v struct dumps (Password:x).
	kvSecret = regexp.MustCompile(`(?i)((?:[A-Za-z0-9_.\-]*(?:password|passwd|passphrase|pwd|secret|token|credential|api_?key|access_?key|private_?key|encryption_?key|session_?key|signature)[A-Za-z0-9_\-]*)["']?\s*[=:]\s*)("(?:[^"\\]|\\.)*"|'[^']*'|[^\s&,;"'}\])]+)`)
	// Authorization: Bearer xxx / Basic xxx.
	bearer = regexp.MustCompile(`(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=\-]{4,}`)
)

// Text scrubs credentials from free text (error messages, log messages,
// rendered pages). See the package doc for what it recognises.
func Text(s string) string {
	if s == "" {
		return s
	}
	s = urlPassword.ReplaceAllString(s, "${1}"+Redacted+"@")
	s = kvSecret.ReplaceAllStringFunc(s, func(m string) string {
		sub := kvSecret.FindStringSubmatch(m)
		v := sub[2]
		switch {
		case v == Redacted || v == `"`+Redacted+`"` || v == `'`+Redacted+`'`:
			return m
		case strings.HasPrefix(v, `"`):
			return sub[1] + `"` + Redacted + `"`
		case strings.HasPrefix(v, `'`):
			return sub[1] + `'` + Redacted + `'`
		}
		return sub[1] + Redacted
	})
	s = bearer.ReplaceAllString(s, "${1}${2}"+Redacted)
	return s
}

// URL scrubs a single URL or DSN; it is Text under a name that says what
// the caller holds.
func URL(u string) string { return Text(u) }

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
