package change

import (
	"strconv"
	"strings"
)

// pathSeg is one step of a JSON path: an object key or, if idx >= 0, an
// array index.
type pathSeg struct {
	key string
	idx int
}

func pkey(k string) pathSeg { return pathSeg{key: k, idx: -1} }
func pidx(i int) pathSeg    { return pathSeg{idx: i} }

// renderPath renders prefix followed by segs, e.g. `changes[2].after.v` or
// `after["my col"]`. Keys that are not plain identifiers are quoted.
func renderPath(prefix []pathSeg, segs ...pathSeg) string {
	var b strings.Builder
	for i, s := range append(prefix[:len(prefix):len(prefix)], segs...) {
		switch {
		case s.idx >= 0:
			b.WriteByte('[')
			b.WriteString(strconv.Itoa(s.idx))
			b.WriteByte(']')
		case isPlainKey(s.key):
			if i > 0 {
				b.WriteByte('.')
			}
			b.WriteString(s.key)
		default:
			b.WriteByte('[')
			b.WriteString(strconv.Quote(s.key))
			b.WriteByte(']')
		}
	}
	return b.String()
}

func isPlainKey(s string) bool {
	if s == "" || isDigit(s[0]) {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || c == '$' || isDigit(c) || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}
