package wal

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode"
)

// Quorum is the rule of the replication level applied, written as
// PostgreSQL writes synchronous_standby_names:
//
//	FIRST n (a, b, c)   the first n of the listed replicas that have
//	                    reported, in list order (priority), must all have
//	                    applied a transaction
//	ANY n (a, b, c)     any n of them must have
//	n (a, b, c)         the same as FIRST n (...)
//	a, b, c             the same as FIRST 1 (a, b, c)
//
// Keywords are case-insensitive; a name is letters, digits, '_', '-' and
// '.', or any text in double quotes ("" for a quote).
type Quorum struct {
	Any   bool
	N     int
	Names []string
}

// ErrQuorumSyntax is wrapped by ParseQuorum's errors.
var ErrQuorumSyntax = errors.New("wal: bad quorum")

// ParseQuorum parses a quorum (see Quorum). Errors wrap ErrQuorumSyntax and
// say what is wrong where.
func ParseQuorum(s string) (*Quorum, error) {
	p := &quorumParser{s: s}
	q, err := p.parse()
	if err != nil {
		return nil, fmt.Errorf("%w %q: %s", ErrQuorumSyntax, s, err)
	}
	return q, nil
}

type quorumParser struct {
	s   string
	pos int
}

func (p *quorumParser) skipSpace() {
	for p.pos < len(p.s) && unicode.IsSpace(rune(p.s[p.pos])) {
		p.pos++
	}
}

func isNameByte(c byte) bool {
	return c == '_' || c == '-' || c == '.' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// word returns the next bare word (name, keyword or number), or "".
func (p *quorumParser) word() string {
	p.skipSpace()
	start := p.pos
	for p.pos < len(p.s) && isNameByte(p.s[p.pos]) {
		p.pos++
	}
	return p.s[start:p.pos]
}

func (p *quorumParser) name() (string, error) {
	p.skipSpace()
	if p.pos < len(p.s) && p.s[p.pos] == '"' {
		var b strings.Builder
		for i := p.pos + 1; i < len(p.s); i++ {
			if p.s[i] != '"' {
				b.WriteByte(p.s[i])
				continue
			}
			if i+1 < len(p.s) && p.s[i+1] == '"' {
				b.WriteByte('"')
				i++
				continue
			}
			p.pos = i + 1
			if b.Len() == 0 {
				return "", errors.New("empty quoted name")
			}
			return b.String(), nil
		}
		return "", fmt.Errorf("unterminated quoted name at offset %d", p.pos)
	}
	start := p.pos
	if w := p.word(); w != "" {
		return w, nil
	}
	if p.pos >= len(p.s) {
		return "", errors.New("a replica name is missing at the end")
	}
	return "", fmt.Errorf("unexpected %q at offset %d: want a replica name", p.s[start:start+1], start)
}

// names parses "a, b, c" up to end (')' or the end of the text).
func (p *quorumParser) names(closing bool) ([]string, error) {
	var out []string
	for {
		n, err := p.name()
		if err != nil {
			return nil, err
		}
		if slices.Contains(out, n) {
			return nil, fmt.Errorf("replica %q is listed twice", n)
		}
		out = append(out, n)
		p.skipSpace()
		switch {
		case p.pos < len(p.s) && p.s[p.pos] == ',':
			p.pos++
		case closing && p.pos < len(p.s) && p.s[p.pos] == ')':
			p.pos++
			return out, nil
		case closing:
			return nil, fmt.Errorf("want ',' or ')' at offset %d", p.pos)
		case p.pos == len(p.s):
			return out, nil
		default:
			return nil, fmt.Errorf("unexpected %q at offset %d: want ','", p.s[p.pos:p.pos+1], p.pos)
		}
	}
}

func (p *quorumParser) parse() (*Quorum, error) {
	p.skipSpace()
	if p.pos == len(p.s) {
		return nil, errors.New("empty")
	}
	q := &Quorum{N: 1}
	start := p.pos
	w := p.word()
	switch up := strings.ToUpper(w); {
	case up == "FIRST" || up == "ANY":
		q.Any = up == "ANY"
		nw := p.word()
		n, err := strconv.Atoi(nw)
		if err != nil {
			return nil, fmt.Errorf("want a number after %s at offset %d", up, p.pos-len(nw))
		}
		q.N = n
	case w != "" && strings.Trim(w, "0123456789") == "":
		p.skipSpace()
		if p.pos < len(p.s) && p.s[p.pos] == '(' {
			q.N, _ = strconv.Atoi(w)
		} else {
			p.pos = start // a list whose first name is a number
		}
	default:
		p.pos = start
	}
	p.skipSpace()
	var err error
	if p.pos < len(p.s) && p.s[p.pos] == '(' {
		p.pos++
		if q.Names, err = p.names(true); err != nil {
			return nil, err
		}
		p.skipSpace()
		if p.pos != len(p.s) {
			return nil, fmt.Errorf("unexpected %q at offset %d after ')'", p.s[p.pos:], p.pos)
		}
	} else if p.pos > start {
		return nil, fmt.Errorf("want '(' at offset %d", p.pos)
	} else if q.Names, err = p.names(false); err != nil {
		return nil, err
	}
	if q.N < 1 || q.N > len(q.Names) {
		return nil, fmt.Errorf("%d of %d replicas: want 1 to %d", q.N, len(q.Names), len(q.Names))
	}
	return q, nil
}

// String returns the quorum in its canonical form.
func (q *Quorum) String() string {
	kind := "FIRST"
	if q.Any {
		kind = "ANY"
	}
	quoted := make([]string, len(q.Names))
	for i, n := range q.Names {
		quoted[i] = n
		if strings.IndexFunc(n, func(r rune) bool { return r > 127 || !isNameByte(byte(r)) }) >= 0 {
			quoted[i] = `"` + strings.ReplaceAll(n, `"`, `""`) + `"`
		}
	}
	return fmt.Sprintf("%s %d (%s)", kind, q.N, strings.Join(quoted, ", "))
}

// Position returns the highest LSN the quorum has applied, given each
// replica's reported applied position (replicas absent from the map have
// not reported): with ANY n, the n-th highest position among the listed
// replicas (0 counting for one that has not reported); with FIRST n, the
// lowest position among the first n listed replicas that have reported, or
// 0 while fewer than n have.
func (q *Quorum) Position(applied map[string]uint64) uint64 {
	if q.Any {
		var ps []uint64
		for _, n := range q.Names {
			ps = append(ps, applied[n])
		}
		slices.Sort(ps)
		return ps[len(ps)-q.N]
	}
	var low uint64
	k := 0
	for _, n := range q.Names {
		p, ok := applied[n]
		if !ok {
			continue
		}
		if k == 0 || p < low {
			low = p
		}
		if k++; k == q.N {
			return low
		}
	}
	return 0
}
