package replica

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/walship/walship/change"
)

// Replica names (docs/REPLICA.md, Names). Every replica, whichever path
// writes it (restore, consume, base snapshots), names a source schema,
// table or column by the one function mapIdent:
//
//   - a name that fits the target's identifier limit (PostgreSQL: 63
//     bytes, NAMEDATALEN-1; SQLite: none) is its own replica name;
//   - a longer name becomes its longest prefix of at most 54 bytes that
//     ends on a UTF-8 character boundary, then "_", then the first 8 hex
//     digits (lower case) of the SHA-256 of the whole name: at most 63
//     bytes, and never cut by PostgreSQL.
//
// A SQLite replica keeps its flattened table names: the bare name for
// schema public, "<schema>.<table>" otherwise.
//
// Mapping is collision-free: before a table or column is used, the
// applier checks that no other source name holds its replica name (a short
// name that equals the mapped form of a long one, two hashes alike, or in
// SQLite public."a.b" and a.b) and fails with a *NameConflictError naming
// both, before anything of the transaction is written. Names that are not
// their own replica name are recorded in walship_names, which is how the
// check and the readers (Dump, the restore of a base snapshot) find the
// source name of a replica table or column.

// pgMaxIdent is the longest PostgreSQL identifier in bytes (NAMEDATALEN-1);
// PostgreSQL silently cuts longer ones.
const pgMaxIdent = 63

// hashDigits is how many hex digits of the SHA-256 of a long name end its
// replica name.
const hashDigits = 8

// MapIdent returns the replica identifier of the source identifier name
// (a schema, table or column name) for a target that keeps at most limit
// bytes of an identifier (0: no limit): name itself if it fits, else its
// longest prefix that ends on a UTF-8 boundary and leaves room for "_" and
// 8 hex digits of the SHA-256 of name. PostgreSQL's limit is 63.
func MapIdent(name string, limit int) string { return mapIdent(name, limit) }

func mapIdent(name string, limit int) string {
	if limit <= 0 || len(name) <= limit {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	suffix := "_" + hex.EncodeToString(sum[:])[:hashDigits]
	cut := limit - len(suffix)
	for cut > 0 && !utf8.RuneStart(name[cut]) {
		cut--
	}
	return name[:cut] + suffix
}

// Kinds of name, as walship_names.kind and NameConflictError.Kind.
const (
	kindSchema = "schema"
	kindTable  = "table"
	kindColumn = "column"
)

// namesTable records every source name whose replica name is not its own:
// kind, the replica table of a column ("" for schemas and tables), the
// replica name (a table: "schema"."table" quoted in PostgreSQL, its name
// in SQLite), and the source name (a table: change.Table.String()).
const namesTable = `
CREATE TABLE IF NOT EXISTS walship_names (
	kind   text NOT NULL,
	tbl    text NOT NULL,
	target text NOT NULL,
	source text NOT NULL,
	PRIMARY KEY (kind, tbl, target)
);`

// target is the place of a source table in a replica.
type target struct {
	schema string // PostgreSQL: the schema's identifier; SQLite: ""
	name   string
}

// sql is the quoted name of the table in statements.
func (t target) sql() string {
	if t.schema == "" {
		return quoteIdent(t.name)
	}
	return quoteIdent(t.schema) + "." + quoteIdent(t.name)
}

// key is how walship_names names the table (its target, or for a
// column its tbl).
func (t target) key() string {
	if t.schema == "" {
		return t.name
	}
	return t.sql()
}

// target returns where the source table src lives in the replica.
func (d *dialect) target(src change.Table) target {
	if d.schemas {
		return target{schema: mapIdent(src.Schema, d.maxIdent), name: mapIdent(src.Name, d.maxIdent)}
	}
	return target{name: sqliteTableName(src)}
}

// table is the quoted replica name of the source table src.
func (d *dialect) table(src change.Table) string { return d.target(src).sql() }

// column is the replica name of the source column name.
func (d *dialect) column(name string) string { return mapIdent(name, d.maxIdent) }

// ident is the quoted replica name of the source column name.
func (d *dialect) ident(name string) string { return quoteIdent(d.column(name)) }

// ownSource is the source table whose replica name t is, when no
// walship_names row says otherwise.
func (d *dialect) ownSource(t target) change.Table {
	if d.schemas {
		return change.Table{Schema: t.schema, Name: t.name}
	}
	return sqliteTable(t.name)
}

// flattenedAmbiguous reports whether the flattened SQLite name of t reads
// back as another table (sqliteTable): a dot in the name of a table of
// schema public, or in a schema name.
func flattenedAmbiguous(t change.Table) bool {
	return strings.Contains(t.Schema, ".") || t.Schema == change.DefaultSchema && strings.Contains(t.Name, ".")
}

// sqliteTable reads a SQLite replica table name as its own source table:
// a bare name is schema public, "<schema>.<table>" splits at the first dot.
func sqliteTable(name string) change.Table {
	if s, n, ok := strings.Cut(name, "."); ok {
		return change.Table{Schema: s, Name: n}
	}
	return change.Table{Schema: change.DefaultSchema, Name: name}
}

// NameConflictError is returned by Apply when two different source names
// would share one replica name (see MapIdent): nothing of the
// transaction that brings the second one is written. Rename one of them at
// the source.
type NameConflictError struct {
	Kind   string       // "schema", "table" or "column"
	Table  change.Table // a column's source table
	Name   string       // the source name being placed (a table: Table.String())
	Other  string       // the source name that holds or claims Target
	Target string       // the replica name both map to
}

func (e *NameConflictError) Error() string {
	name, other, in := e.Name, e.Other, ""
	if e.Kind != kindTable {
		name, other = quoteIdent(name), quoteIdent(other)
	}
	if e.Kind == kindColumn {
		in = " of table " + e.Table.String()
	}
	return fmt.Sprintf("source %ss %s and %s%s both map to the replica %s name %s (a name longer than the target allows is cut and hashed, see docs/REPLICA.md): rename one of them at the source",
		e.Kind, other, name, in, e.Kind, e.Target)
}

// nameSet holds the replica names of the source names seen so far, to find
// two that share one before anything is written.
type nameSet struct {
	d       *dialect
	schemas map[string]string            // replica schema -> source schema
	tables  map[target]change.Table      // replica table -> source table
	cols    map[target]map[string]string // replica table -> replica column -> source column
}

func newNameSet(d *dialect) *nameSet {
	return &nameSet{d: d, schemas: map[string]string{}, tables: map[target]change.Table{}, cols: map[target]map[string]string{}}
}

// planNames checks, before anything of txns is applied, that no two source
// names of txns share a replica name. Names already in the replica are
// checked as each table is first used (batch.claimTable, claimColumn).
func (d *dialect) planNames(txns []change.Committed) error {
	// Only a name that is not its own replica name can collide: look for
	// one first, so the common case costs a length check per name.
	if !d.anyMapped(txns) {
		return nil
	}
	return newNameSet(d).add(txns)
}

// anyMapped reports whether a source name of txns is not its own replica
// name.
func (d *dialect) anyMapped(txns []change.Committed) bool {
	long := func(s string) bool { return d.maxIdent > 0 && len(s) > d.maxIdent }
	for i := range txns {
		for j := range txns[i].Changes {
			c := &txns[i].Changes[j]
			if c.Table.IsZero() {
				continue
			}
			if d.schemas && (long(c.Table.Schema) || long(c.Table.Name)) || !d.schemas && flattenedAmbiguous(c.Table) {
				return true
			}
			if d.maxIdent == 0 {
				continue
			}
			for _, r := range []change.Row{c.After, c.Before, c.Key} {
				for _, col := range r {
					if long(col.Name) {
						return true
					}
				}
			}
			for _, t := range c.Types {
				if long(t.Name) {
					return true
				}
			}
		}
	}
	return false
}

// add adds the names of txns, failing at the first that shares a replica
// name with another.
func (s *nameSet) add(txns []change.Committed) error {
	d := s.d
	for i := range txns {
		for j := range txns[i].Changes {
			c := &txns[i].Changes[j]
			if c.Table.IsZero() {
				continue
			}
			dst := d.target(c.Table)
			m := s.cols[dst]
			if m == nil {
				if d.schemas {
					if prev, ok := s.schemas[dst.schema]; ok && prev != c.Table.Schema {
						return &NameConflictError{Kind: kindSchema, Name: c.Table.Schema, Other: prev, Target: quoteIdent(dst.schema)}
					}
					s.schemas[dst.schema] = c.Table.Schema
				}
				m = map[string]string{}
				s.cols[dst] = m
				s.tables[dst] = c.Table
			} else if prev := s.tables[dst]; prev != c.Table {
				return &NameConflictError{Kind: kindTable, Name: c.Table.String(), Other: prev.String(), Target: dst.sql()}
			}
			check := func(name string) error {
				t := d.column(name)
				if prev, ok := m[t]; !ok {
					m[t] = name
				} else if prev != name {
					return &NameConflictError{Kind: kindColumn, Table: c.Table, Name: name, Other: prev, Target: quoteIdent(t)}
				}
				return nil
			}
			for _, r := range []change.Row{c.After, c.Before, c.Key} {
				for _, col := range r {
					if err := check(col.Name); err != nil {
						return err
					}
				}
			}
			for _, t := range c.Types {
				if err := check(t.Name); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// NameCheck finds two source names that would share one replica name in
// a replica of a given kind, across everything added to it: a restore
// adds its whole plan while it verifies it, so such a pair is refused
// before the destination is opened. It is safe for concurrent use.
type NameCheck struct {
	mu sync.Mutex
	s  *nameSet
}

// NewNameCheck returns an empty NameCheck for replicas like the one at
// rawURL (sqlite:// or postgres://).
func NewNameCheck(rawURL string) (*NameCheck, error) {
	kind, _, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	d := &sqliteDialect
	if kind == "postgres" {
		d = &pgDialect
	}
	return &NameCheck{s: newNameSet(d)}, nil
}

// Add adds the source names of txns; a *NameConflictError names the two
// source names that share a replica name.
func (c *NameCheck) Add(txns []change.Committed) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.s.add(txns); err != nil {
		return fmt.Errorf("replica: %w", err)
	}
	return nil
}

// claimTable checks that the replica names of src (its schema and table)
// belong to no other source name, and loads its shape (nil if absent).
func (w *batch) claimTable(ctx context.Context, src change.Table) (*tableSchema, error) {
	d := w.a.d
	dst := d.target(src)
	if d.schemas && dst.schema != src.Schema {
		// A schema whose name is not its own: it must be ours or new.
		owner, ok, err := w.tx.lookupName(ctx, kindSchema, "", dst.schema)
		if err != nil {
			return nil, err
		}
		if !ok {
			exists, err := w.tx.schemaExists(ctx, dst.schema)
			if err != nil {
				return nil, err
			}
			if exists {
				owner, ok = dst.schema, true
			}
		}
		if ok && owner != src.Schema {
			return nil, &NameConflictError{Kind: kindSchema, Name: src.Schema, Other: owner, Target: quoteIdent(dst.schema)}
		}
	} else if d.schemas {
		// A schema that is its own name: no long name may have taken it.
		if owner, ok, err := w.tx.lookupName(ctx, kindSchema, "", dst.schema); err != nil {
			return nil, err
		} else if ok && owner != src.Schema {
			return nil, &NameConflictError{Kind: kindSchema, Name: src.Schema, Other: owner, Target: quoteIdent(dst.schema)}
		}
	}
	owner, registered, err := w.tx.lookupName(ctx, kindTable, "", dst.key())
	if err != nil {
		return nil, err
	}
	ts, err := w.tx.loadTable(ctx, src, dst)
	if err != nil {
		return nil, fmt.Errorf("reading the shape of the table: %w", err)
	}
	switch {
	case registered && owner != src.String():
		return nil, &NameConflictError{Kind: kindTable, Name: src.String(), Other: owner, Target: dst.sql()}
	case !registered && ts != nil && d.ownSource(dst) != src:
		return nil, &NameConflictError{Kind: kindTable, Name: src.String(), Other: d.ownSource(dst).String(), Target: dst.sql()}
	}
	return ts, nil
}

// recordTable records the replica names of a table just created that are
// not its own.
func (w *batch) recordTable(ctx context.Context, ts *tableSchema) error {
	d := w.a.d
	dst := d.target(ts.src)
	if d.schemas && dst.schema != ts.src.Schema {
		if err := w.tx.recordName(ctx, kindSchema, "", dst.schema, ts.src.Schema); err != nil {
			return err
		}
	}
	if d.ownSource(dst) != ts.src {
		if err := w.tx.recordName(ctx, kindTable, "", dst.key(), ts.src.String()); err != nil {
			return err
		}
	}
	for _, c := range ts.cols {
		if err := w.recordColumn(ctx, ts, c.name); err != nil {
			return err
		}
	}
	return nil
}

// recordColumn records the replica name of a column just added if it is
// not its own.
func (w *batch) recordColumn(ctx context.Context, ts *tableSchema, name string) error {
	if t := w.a.d.column(name); t != name {
		return w.tx.recordName(ctx, kindColumn, w.a.d.target(ts.src).key(), t, name)
	}
	return nil
}

// claimColumn checks that the replica name of the new column name of ts
// belongs to none of its columns.
func (w *batch) claimColumn(ts *tableSchema, name string) error {
	t := w.a.d.column(name)
	for _, c := range ts.cols {
		if c.name != name && w.a.d.column(c.name) == t {
			return &NameConflictError{Kind: kindColumn, Table: ts.src, Name: name, Other: c.name, Target: quoteIdent(t)}
		}
	}
	return nil
}
