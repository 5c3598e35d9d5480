package replica

import (
	"strings"

	"github.com/walship/walship/change"
)

// class is how a column's values are stored and canonicalised, derived
// from its source type name (or, without one, from the kind of its first
// value).
type class uint8

const (
	classText class = iota // text and every type walship does not model (enums, interval, uuid, ...)
	classInt
	classFloat
	classNumeric
	classBool
	classBytes
	classTimestamp // timestamptz and timestamp: instants in UTC
	classDate      // date: a Timestamp at midnight UTC, or the source's text
	classJSON
	classArray
)

// typeInfo describes a source type name.
type typeInfo struct {
	name  string // normalised source type name, e.g. "int4", "_int4", "myenum"
	class class
	elem  *typeInfo // classArray: the element type
	pg    string    // the Postgres type a replica column gets
}

// collatable reports whether a key of type t compares under a collation:
// the character types, which the checks compare by bytes (COLLATE "C").
// Other types of the text class refuse a collation (uuid, inet, enums):
// uuid compares by its 16 bytes, as its lower-case hex text compares by
// bytes in SQLite.
func (t *typeInfo) collatable() bool {
	switch t.name {
	case "text", "varchar", "bpchar", "name":
		return true
	}
	return false
}

// pgKnown maps source type names (pg_type.typname) to the class of their
// values. Types not listed are enums, domains or types walship does not
// model: text in SQLite and in Postgres.
var pgKnown = map[string]class{
	"int2": classInt, "int4": classInt, "int8": classInt, "oid": classInt,
	"float4": classFloat, "float8": classFloat,
	"numeric": classNumeric, "money": classText,
	"bool":        classBool,
	"bytea":       classBytes,
	"timestamptz": classTimestamp, "timestamp": classTimestamp,
	"json": classJSON, "jsonb": classJSON,
	"text": classText, "varchar": classText, "bpchar": classText, "name": classText, "char": classText,
	"date": classDate, "time": classText, "timetz": classText, "interval": classText,
	"uuid": classText, "inet": classText, "cidr": classText, "macaddr": classText, "macaddr8": classText,
	"xml": classText, "bit": classText, "varbit": classText, "tsvector": classText, "tsquery": classText,
	"point": classText, "line": classText, "lseg": classText, "box": classText, "path": classText,
	"polygon": classText, "circle": classText, "int4range": classText, "int8range": classText,
	"numrange": classText, "tsrange": classText, "tstzrange": classText, "daterange": classText,
}

// pgAliases maps SQL spellings to typnames.
var pgAliases = map[string]string{
	"integer": "int4", "int": "int4", "smallint": "int2", "bigint": "int8",
	"real": "float4", "double precision": "float8", "decimal": "numeric",
	"boolean": "bool", "character varying": "varchar", "character": "bpchar",
	"timestamp with time zone": "timestamptz", "timestamp without time zone": "timestamp",
	"time without time zone": "time", "time with time zone": "timetz",
}

// parseType normalises a source type name: lower case, modifiers such as
// "(10,2)" dropped, "x[]" read as "_x", aliases resolved.
func parseType(name string) *typeInfo {
	n := strings.ToLower(strings.TrimSpace(name))
	if i := strings.IndexByte(n, '('); i >= 0 {
		if j := strings.IndexByte(n[i:], ')'); j >= 0 {
			n = strings.TrimSpace(n[:i] + n[i+j+1:])
		}
	}
	n = strings.TrimPrefix(n, "pg_catalog.")
	dims := 0
	for strings.HasSuffix(n, "[]") {
		n, dims = strings.TrimSpace(n[:len(n)-2]), dims+1
	}
	if dims == 0 && strings.HasPrefix(n, "_") && len(n) > 1 {
		n, dims = n[1:], 1
	}
	if a, ok := pgAliases[n]; ok {
		n = a
	}
	t := scalarType(n)
	if dims > 0 {
		return &typeInfo{name: "_" + t.name, class: classArray, elem: t, pg: t.pg + "[]"}
	}
	return t
}

func scalarType(n string) *typeInfo {
	c, ok := pgKnown[n]
	if !ok || n == "money" {
		// An enum or a type the replica cannot know: keep the values as
		// the source's text.
		return &typeInfo{name: n, class: classText, pg: "text"}
	}
	return &typeInfo{name: n, class: c, pg: quotePGType(n)}
}

func quotePGType(n string) string {
	if n == "char" {
		return `"char"`
	}
	return n
}

// inferType picks a source type for a column that has none from the kind
// of a value (the HTTP source sends no types).
func inferType(v change.Value) *typeInfo {
	switch v.Kind() {
	case change.KindBool:
		return parseType("bool")
	case change.KindInt:
		return parseType("int8")
	case change.KindFloat:
		return parseType("float8")
	case change.KindNumeric:
		return parseType("numeric")
	case change.KindBytes:
		return parseType("bytea")
	case change.KindTimestamp:
		return parseType("timestamptz")
	case change.KindJSON:
		return parseType("jsonb")
	case change.KindArray:
		elems, _ := v.Array()
		for _, e := range elems {
			if !e.IsNull() {
				et := inferType(e)
				if et.class == classArray {
					return et // a nested array has the type of its innermost elements
				}
				return parseType("_" + et.name)
			}
		}
		return parseType("_text")
	case change.KindUnknown:
		typ, _, _ := v.Unknown()
		t := parseType(typ)
		if t.class != classText {
			// The source did not give the value in the type's usual form.
			return parseType("text")
		}
		return t
	}
	return parseType("text")
}

// column is a column of a replica table.
type column struct {
	name string
	typ  *typeInfo
}

// tableSchema is the cached shape of a replica table.
type tableSchema struct {
	src  change.Table
	cols []column
	key  []string // primary-key columns, in key order; empty: no primary key
}

func (t *tableSchema) index(name string) int {
	for i := range t.cols {
		if t.cols[i].name == name {
			return i
		}
	}
	return -1
}

func (t *tableSchema) isKey(name string) bool {
	for _, k := range t.key {
		if k == name {
			return true
		}
	}
	return false
}

// sqliteTableName is the SQLite name of a source table: schema public
// keeps the bare name, other schemas give "<schema>.<table>" (docs/DESIGN.md §5.3).
func sqliteTableName(t change.Table) string {
	if t.Schema == change.DefaultSchema {
		return t.Name
	}
	return t.Schema + "." + t.Name
}

// quoteIdent quotes an SQL identifier (SQLite and Postgres alike).
func quoteIdent(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// isInternal reports whether a replica table is walship's bookkeeping.
func isInternal(name string) bool { return strings.HasPrefix(name, "walship_") }
