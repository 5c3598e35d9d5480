package replica

import (
	"strconv"
	"strings"

	"github.com/walship/walship/change"
)

// dialect is what the SQL of the two backends differs in; sqlBuilder
// writes every statement from it, so both backends state each statement
// shape once.
type dialect struct {
	// maxIdent is the longest identifier the target keeps, in bytes (0:
	// no limit); longer source names are mapped (names.go).
	maxIdent int
	// schemas: a source schema is a schema of the target (PostgreSQL);
	// otherwise it is flattened into the table name (SQLite).
	schemas bool
	// colType is a column's type in CREATE TABLE and ADD COLUMN.
	colType func(c column) string
	// keyNotNull declares key columns NOT NULL (SQLite would otherwise
	// let a key column hold NULL).
	keyNotNull bool
	// param appends the placeholder of parameter n, the value of column
	// col of ts.
	param func(b *strings.Builder, ts *tableSchema, col string, n int)
	// match appends the condition that column col of ts equals parameter
	// n, NULL matching NULL where a table without a key needs it.
	match func(b *strings.Builder, ts *tableSchema, col string, n int)
	// placeholder is parameter n of a bookkeeping statement.
	placeholder func(n int) string
	// excluded names the proposed row in ON CONFLICT DO UPDATE.
	excluded string
	// rowID is the row identity that picks one row of a table without a
	// key.
	rowID string
	// truncate empties a table, before its name.
	truncate string
	// cte: an UPDATE ... RETURNING can feed an INSERT in one statement
	// (PostgreSQL); otherwise the insert follows, on changes() = 0.
	cte bool
}

var pgDialect = dialect{
	maxIdent: pgMaxIdent,
	schemas:  true,
	colType:  func(c column) string { return c.typ.pg },
	param: func(b *strings.Builder, ts *tableSchema, col string, n int) {
		pgParam(b, n, pgColType(ts, col))
	},
	match: func(b *strings.Builder, ts *tableSchema, col string, n int) {
		typ := pgColType(ts, col)
		i := ts.index(col)
		ident := quoteIdent(mapIdent(col, pgMaxIdent))
		switch {
		case len(ts.key) > 0:
			b.WriteString(ident + " = ")
			pgParam(b, n, typ)
		case i >= 0 && noEquality[ts.cols[i].typ.name]:
			b.WriteString(ident + "::text IS NOT DISTINCT FROM $" + strconv.Itoa(n) + "::text::" + typ + "::text")
		default:
			b.WriteString(ident + " IS NOT DISTINCT FROM ")
			pgParam(b, n, typ)
		}
	},
	placeholder: func(n int) string { return "$" + strconv.Itoa(n) },
	excluded:    "EXCLUDED",
	rowID:       "ctid",
	truncate:    "TRUNCATE ",
	cte:         true,
}

var sqliteDialect = dialect{
	colType:     func(c column) string { return sqliteDeclType(c.typ.class) },
	keyNotNull:  true,
	param:       func(b *strings.Builder, _ *tableSchema, _ string, _ int) { b.WriteString("?") },
	match:       func(b *strings.Builder, _ *tableSchema, col string, _ int) { b.WriteString(quoteIdent(col) + " IS ?") },
	placeholder: func(int) string { return "?" },
	excluded:    "excluded",
	rowID:       "rowid",
	truncate:    "DELETE FROM ",
}

// recordName stores (kind, tbl, target, source) in walship_names.
func (d *dialect) recordName() string {
	return "INSERT INTO walship_names (kind, tbl, target, source) VALUES (" + d.placeholder(1) + ", " + d.placeholder(2) + ", " +
		d.placeholder(3) + ", " + d.placeholder(4) + ") ON CONFLICT (kind, tbl, target) DO UPDATE SET source = excluded.source"
}

// lookupName reads the source of (kind, tbl, target) from walship_names.
func (d *dialect) lookupName() string {
	return "SELECT source FROM walship_names WHERE kind = " + d.placeholder(1) + " AND tbl = " + d.placeholder(2) + " AND target = " + d.placeholder(3)
}

// forgetName deletes the walship_names row of (kind, tbl, target).
func (d *dialect) forgetName() string {
	return "DELETE FROM walship_names WHERE kind = " + d.placeholder(1) + " AND tbl = " + d.placeholder(2) + " AND target = " + d.placeholder(3)
}

// columnNames reads the source names of the columns of table tbl whose
// replica names are not their own.
func (d *dialect) columnNames() string {
	return "SELECT target, source FROM walship_names WHERE kind = 'column' AND tbl = " + d.placeholder(1)
}

// pgParam appends parameter n sent as text and cast to typ.
func pgParam(b *strings.Builder, n int, typ string) {
	b.WriteString("$" + strconv.Itoa(n) + "::text::" + typ)
}

// pgColType returns the Postgres type a value of column name is cast to.
func pgColType(ts *tableSchema, name string) string {
	if i := ts.index(name); i >= 0 {
		return ts.cols[i].typ.pg
	}
	return "text"
}

// noEquality lists types without an equality operator: compared as text.
var noEquality = map[string]bool{"json": true, "xml": true, "point": true, "line": true, "lseg": true, "box": true, "path": true, "polygon": true, "circle": true}

// writeIdents appends the quoted replica names of the source columns
// names, comma-separated.
func (d *dialect) writeIdents(b *strings.Builder, names []string) {
	for i, n := range names {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(d.ident(n))
	}
}

func (d *dialect) createTable(ts *tableSchema) string {
	var b strings.Builder
	b.WriteString("CREATE TABLE " + d.table(ts.src) + " (")
	for i, c := range ts.cols {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(d.ident(c.name) + " " + d.colType(c))
		if d.keyNotNull && ts.isKey(c.name) {
			b.WriteString(" NOT NULL")
		}
	}
	if len(ts.key) > 0 {
		b.WriteString(", PRIMARY KEY (")
		d.writeIdents(&b, ts.key)
		b.WriteString(")")
	}
	b.WriteString(")")
	return b.String()
}

func (d *dialect) addColumn(ts *tableSchema, c column) string {
	return "ALTER TABLE " + d.table(ts.src) + " ADD COLUMN " + d.ident(c.name) + " " + d.colType(c)
}

func (d *dialect) dropColumn(ts *tableSchema, name string) string {
	return "ALTER TABLE " + d.table(ts.src) + " DROP COLUMN " + d.ident(name)
}

// recordType stores (tbl, col, type) in walship_columns.
func (d *dialect) recordType() string {
	return "INSERT INTO walship_columns (tbl, col, type) VALUES (" + d.placeholder(1) + ", " + d.placeholder(2) + ", " +
		d.placeholder(3) + ") ON CONFLICT (tbl, col) DO UPDATE SET type = excluded.type"
}

// forgetColumn deletes the walship_columns row of (tbl, col).
func (d *dialect) forgetColumn() string {
	return "DELETE FROM walship_columns WHERE tbl = " + d.placeholder(1) + " AND col = " + d.placeholder(2)
}

// saveState sets the bookkeeping row to (lsn, commit_time, txns, changes,
// lineage).
func (d *dialect) saveState() string {
	return "UPDATE walship_applied SET lsn = " + d.placeholder(1) + ", commit_time = " + d.placeholder(2) + ", txns = " +
		d.placeholder(3) + ", changes = " + d.placeholder(4) + ", lineage = " + d.placeholder(5) + " WHERE id = 1"
}

// upsert inserts row (parameters 1..len(row)), or for a table with a key
// updates the row's other columns in the row with the same key.
func (d *dialect) upsert(ts *tableSchema, row change.Row) string {
	var b strings.Builder
	b.WriteString("INSERT INTO " + d.table(ts.src) + " (")
	for i, c := range row {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(d.ident(c.Name))
	}
	b.WriteString(") VALUES (")
	for i, c := range row {
		if i > 0 {
			b.WriteString(", ")
		}
		d.param(&b, ts, c.Name, i+1)
	}
	b.WriteString(")")
	if len(ts.key) > 0 {
		b.WriteString(" ON CONFLICT (")
		d.writeIdents(&b, ts.key)
		b.WriteString(") DO ")
		n := 0
		for _, c := range row {
			if ts.isKey(c.Name) {
				continue
			}
			if n == 0 {
				b.WriteString("UPDATE SET ")
			} else {
				b.WriteString(", ")
			}
			n++
			b.WriteString(d.ident(c.Name) + " = " + d.excluded + "." + d.ident(c.Name))
		}
		if n == 0 {
			b.WriteString("NOTHING")
		}
	}
	return b.String()
}

// where appends the condition finding the row of where (parameters from
// first on): key equality, or for a table without a key the first row
// equal on every column.
func (d *dialect) where(b *strings.Builder, ts *tableSchema, where change.Row, first int) {
	if len(ts.key) == 0 {
		b.WriteString(" WHERE " + d.rowID + " = (SELECT " + d.rowID + " FROM " + d.table(ts.src) + " WHERE ")
	} else {
		b.WriteString(" WHERE ")
	}
	for i, c := range where {
		if i > 0 {
			b.WriteString(" AND ")
		}
		d.match(b, ts, c.Name, first+i)
	}
	if len(ts.key) == 0 {
		b.WriteString(" LIMIT 1)")
	}
}

// update sets the columns of set (parameters 1..len(set)) in the row of
// where (the parameters after them).
func (d *dialect) update(ts *tableSchema, set, where change.Row) string {
	var b strings.Builder
	b.WriteString("UPDATE " + d.table(ts.src) + " SET ")
	for i, c := range set {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(d.ident(c.Name) + " = ")
		d.param(&b, ts, c.Name, i+1)
	}
	d.where(&b, ts, where, len(set)+1)
	return b.String()
}

// updateKeyless is update for a table without a key: it also inserts set
// (parameters 1..len(set)) when no row equals where — a row that a resumed
// snapshot left out because the source had updated it meanwhile (see
// docs/POSTGRES.md); as for a table with a key, a missing row is inserted.
// Without cte, insertMissed is the second statement.
func (d *dialect) updateKeyless(ts *tableSchema, set, where change.Row) string {
	if !d.cte {
		return d.update(ts, set, where)
	}
	return "WITH u AS (" + d.update(ts, set, where) + " RETURNING 1) " + d.insertMissed(ts, set, "NOT EXISTS (SELECT 1 FROM u)")
}

// insertMissed inserts set (parameters 1..len(set)) if cond holds.
func (d *dialect) insertMissed(ts *tableSchema, set change.Row, cond string) string {
	var b strings.Builder
	b.WriteString("INSERT INTO " + d.table(ts.src) + " (")
	d.writeIdents(&b, columnNames(set))
	b.WriteString(") SELECT ")
	for i, c := range set {
		if i > 0 {
			b.WriteString(", ")
		}
		d.param(&b, ts, c.Name, i+1)
	}
	b.WriteString(" WHERE " + cond)
	return b.String()
}

func columnNames(r change.Row) []string {
	names := make([]string, len(r))
	for i, c := range r {
		names[i] = c.Name
	}
	return names
}

// delete deletes the row of where (parameters 1..len(where)).
func (d *dialect) delete(ts *tableSchema, where change.Row) string {
	var b strings.Builder
	b.WriteString("DELETE FROM " + d.table(ts.src))
	d.where(&b, ts, where, 1)
	return b.String()
}

// truncateTables empties the tables ts in one statement: TRUNCATE a, b
// [RESTART IDENTITY] [CASCADE] (PostgreSQL), DELETE FROM a (SQLite, one
// table, no options).
func (d *dialect) truncateTables(ts []*tableSchema, opts change.TruncateOptions) string {
	var b strings.Builder
	b.WriteString(d.truncate)
	for i, t := range ts {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(d.table(t.src))
	}
	if opts&change.TruncateRestartIdentity != 0 {
		b.WriteString(" RESTART IDENTITY")
	}
	if opts&change.TruncateCascade != 0 {
		b.WriteString(" CASCADE")
	}
	return b.String()
}
