package change

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// DefaultSchema is the schema of a table named without one.
const DefaultSchema = "public"

// Table names a table: a schema and a name.
//
// Identifiers are case-sensitive exactly as written: unlike SQL, an unquoted
// identifier is not folded to lower case. Quotes are needed only for
// identifiers that contain something other than letters, digits, '_' and '$'
// (a '.', a space, a quote, ...) and for the empty identifier, which is never
// valid.
type Table struct {
	Schema string
	Name   string
}

// ParseTable parses "schema.name" or a bare "name" (schema DefaultSchema).
// Either part may be double-quoted, with "" standing for one quote inside,
// as in SQL: `"my schema"."T.x"` is {Schema: "my schema", Name: "T.x"}.
// Errors are *InvalidError and say what is wrong.
func ParseTable(s string) (Table, error) {
	fail := func(why string) (Table, error) {
		return Table{}, &InvalidError{Reason: fmt.Sprintf("invalid table name %q: %s", s, why)}
	}
	if s == "" {
		return fail("empty")
	}
	if !utf8.ValidString(s) {
		return fail("invalid UTF-8")
	}
	var parts []string
	rest := s
	for {
		var part string
		if strings.HasPrefix(rest, `"`) {
			var b strings.Builder
			i := 1
			closed := false
			for i < len(rest) {
				if rest[i] == '"' {
					if i+1 < len(rest) && rest[i+1] == '"' {
						b.WriteByte('"')
						i += 2
						continue
					}
					closed = true
					i++
					break
				}
				b.WriteByte(rest[i])
				i++
			}
			if !closed {
				return fail("unterminated quoted identifier")
			}
			part = b.String()
			if part == "" {
				return fail("empty quoted identifier")
			}
			rest = rest[i:]
		} else {
			i := 0
			for i < len(rest) && rest[i] != '.' {
				r, size := utf8.DecodeRuneInString(rest[i:])
				if !isIdentRune(r) {
					return fail(fmt.Sprintf("unquoted identifier contains %q; quote it with double quotes", r))
				}
				i += size
			}
			if i == 0 {
				return fail("empty identifier")
			}
			part, rest = rest[:i], rest[i:]
		}
		parts = append(parts, part)
		if rest == "" {
			break
		}
		if rest[0] != '.' {
			return fail(fmt.Sprintf("unexpected %q after quoted identifier", rest[0]))
		}
		rest = rest[1:]
		if len(parts) == 2 {
			return fail("more than two dot-separated parts")
		}
		if rest == "" {
			return fail("empty identifier after '.'")
		}
	}
	if len(parts) == 1 {
		return Table{Schema: DefaultSchema, Name: parts[0]}, nil
	}
	return Table{Schema: parts[0], Name: parts[1]}, nil
}

func isIdentRune(r rune) bool {
	return r == '_' || r == '$' || unicode.IsLetter(r) || unicode.IsDigit(r)
}

// IsZero reports whether t is the zero Table (no table: a logical message).
func (t Table) IsZero() bool { return t.Schema == "" && t.Name == "" }

// String returns the canonical form "schema.name", quoting a part that
// ParseTable would not read back unquoted; ParseTable(t.String()) == t for
// every t with non-empty parts. The zero Table gives "".
func (t Table) String() string {
	if t.IsZero() {
		return ""
	}
	return quoteIdent(t.Schema) + "." + quoteIdent(t.Name)
}

func quoteIdent(s string) string {
	plain := s != ""
	for _, r := range s {
		if !isIdentRune(r) {
			plain = false
			break
		}
	}
	if plain {
		return s
	}
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}
