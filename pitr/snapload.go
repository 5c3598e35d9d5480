package pitr

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/walship/walship/change"
	"github.com/walship/walship/replica"
)

// snapshotLoadPrefix is the logical-message prefix of the first change of
// a snapshot load transaction (replicas store no messages; it only makes
// the transaction non-empty when the snapshot has no rows).
const snapshotLoadPrefix = "walship.snapshot_load"

// snapshotTxn reads a SQLite snapshot file (a replica) and returns one
// transaction that recreates its content in another replica: every row of
// every table as a snapshot-read (op r) change, with the source column
// types the replica recorded (walship_columns) and its primary key, and
// the snapshot's position as commit LSN and time. Values are rebuilt from
// SQLite's storage by the column's type class, the inverse of the
// replica's SQLite mapping (docs/REPLICA.md). It holds the whole snapshot
// in memory.
func snapshotTxn(ctx context.Context, file string) (change.Committed, error) {
	st, err := replica.ReadState(ctx, "sqlite://"+file)
	if err != nil {
		return change.Committed{}, fmt.Errorf("pitr: snapshot position: %w", err)
	}
	db, err := sql.Open("sqlite", "file:"+file+"?mode=ro")
	if err != nil {
		return change.Committed{}, err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	fail := func(err error) (change.Committed, error) {
		return change.Committed{}, fmt.Errorf("pitr: read snapshot %s: %w", file, err)
	}

	types := map[string]map[string]string{} // table -> column -> source type
	rows, err := db.QueryContext(ctx, `SELECT tbl, col, type FROM walship_columns`)
	if err != nil {
		return fail(err)
	}
	for rows.Next() {
		var tbl, col, typ string
		if err := rows.Scan(&tbl, &col, &typ); err != nil {
			rows.Close()
			return fail(err)
		}
		if types[tbl] == nil {
			types[tbl] = map[string]string{}
		}
		types[tbl][col] = typ
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fail(err)
	}
	tables, err := snapshotTables(ctx, db)
	if err != nil {
		return fail(err)
	}
	txn := change.Committed{FirstLSN: st.LSN, CommitLSN: st.LSN, CommitTime: st.CommitTime}
	txn.Changes = append(txn.Changes, change.Change{Op: change.Message,
		Message: &change.LogicalMessage{Prefix: snapshotLoadPrefix, Content: []byte(strconv.FormatUint(st.LSN, 10))}})
	for _, t := range tables {
		cs, err := tableChanges(ctx, db, t.name, t.src, types[t.name], true)
		if err != nil {
			return fail(fmt.Errorf("table %s: %w", t.name, err))
		}
		txn.Changes = append(txn.Changes, cs...)
	}
	return txn, nil
}

// snapshotNames returns one change per table of a SQLite snapshot file,
// with its source name and its columns' names (Types) and no rows: what a
// restore checks for names that would clash in its destination before it
// opens it.
func snapshotNames(ctx context.Context, file string) ([]change.Committed, error) {
	db, err := sql.Open("sqlite", "file:"+file+"?mode=ro")
	if err != nil {
		return nil, err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	tables, err := snapshotTables(ctx, db)
	if err != nil {
		return nil, fmt.Errorf("pitr: read snapshot %s: %w", file, err)
	}
	var txn change.Committed
	for _, t := range tables {
		cs, err := tableChanges(ctx, db, t.name, t.src, nil, false)
		if err != nil {
			return nil, fmt.Errorf("pitr: read snapshot %s: table %s: %w", file, t.name, err)
		}
		txn.Changes = append(txn.Changes, cs...)
	}
	return []change.Committed{txn}, nil
}

// snapTable is a table of a SQLite snapshot: its name there and its source
// table.
type snapTable struct {
	name string
	src  change.Table
}

// snapshotTables lists the tables of a SQLite snapshot (a replica) with
// their source tables: a table that walship_names records has the source
// name recorded there (docs/REPLICA.md, Names); any other bare name is
// schema public, and "<schema>.<table>" splits at the first dot.
func snapshotTables(ctx context.Context, db *sql.DB) ([]snapTable, error) {
	recorded := map[string]string{}
	var hasNames bool
	if err := db.QueryRowContext(ctx, `SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'walship_names'`).Scan(&hasNames); err != nil {
		return nil, err
	}
	if hasNames { // snapshots taken before walship_names existed have none
		rows, err := db.QueryContext(ctx, `SELECT target, source FROM walship_names WHERE kind = 'table'`)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var tgt, src string
			if err := rows.Scan(&tgt, &src); err != nil {
				rows.Close()
				return nil, err
			}
			recorded[tgt] = src
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	var tables []snapTable
	rows, err := db.QueryContext(ctx, `SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'walship\_%' ESCAPE '\' AND name NOT LIKE 'sqlite\_%' ESCAPE '\' ORDER BY name`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		t := snapTable{name: n, src: sqliteTable(n)}
		if src, ok := recorded[n]; ok {
			if t.src, err = change.ParseTable(src); err != nil {
				return nil, fmt.Errorf("walship_names: table %s: %w", n, err)
			}
		}
		tables = append(tables, t)
	}
	return tables, rows.Err()
}

// sqliteTable reads a SQLite replica's table name that walship_names does
// not record as its source table: bare names are schema public, others
// "<schema>.<table>".
func sqliteTable(name string) change.Table {
	if s, n, ok := strings.Cut(name, "."); ok {
		return change.Table{Schema: s, Name: n}
	}
	return change.Table{Schema: change.DefaultSchema, Name: name}
}

// tableChanges returns the rows of the snapshot table name as snapshot
// reads of source table table; without withRows, one change with the
// columns (Types) and no row.
func tableChanges(ctx context.Context, db *sql.DB, name string, table change.Table, types map[string]string, withRows bool) ([]change.Change, error) {
	type col struct {
		name, decl, typ string
		pk              int
	}
	var cols []col
	rows, err := db.QueryContext(ctx, `SELECT name, type, pk FROM pragma_table_info(?) ORDER BY cid`, name)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var c col
		if err := rows.Scan(&c.name, &c.decl, &c.pk); err != nil {
			rows.Close()
			return nil, err
		}
		c.typ = types[c.name]
		if c.typ == "" {
			c.typ = fallbackType(c.decl)
		}
		cols = append(cols, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var colTypes []change.ColumnType
	var pkIdx []int
	for i, c := range cols {
		colTypes = append(colTypes, change.ColumnType{Name: c.name, Type: c.typ})
		if c.pk > 0 {
			pkIdx = append(pkIdx, i)
		}
	}
	sort.Slice(pkIdx, func(a, b int) bool { return cols[pkIdx[a]].pk < cols[pkIdx[b]].pk })
	if !withRows {
		return []change.Change{{Table: table, Op: change.Read, Types: colTypes}}, nil
	}
	var b strings.Builder
	b.WriteString("SELECT ")
	for i, c := range cols {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(quoteIdent(c.name))
	}
	b.WriteString(" FROM " + quoteIdent(name))
	rows, err = db.QueryContext(ctx, b.String())
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []change.Change
	vals := make([]any, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		after := make(change.Row, len(cols))
		for i, c := range cols {
			v, err := valueOf(vals[i], c.typ)
			if err != nil {
				return nil, fmt.Errorf("column %s: %w", c.name, err)
			}
			after[i] = change.Column{Name: c.name, Value: v}
		}
		ch := change.Change{Table: table, Op: change.Read, After: after, Types: colTypes}
		for _, i := range pkIdx {
			ch.Key = append(ch.Key, after[i])
		}
		out = append(out, ch)
	}
	return out, rows.Err()
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// fallbackType is the source type of a column without a walship_columns
// row, from its declared SQLite type.
func fallbackType(decl string) string {
	d := strings.ToUpper(decl)
	switch {
	case strings.Contains(d, "INT"):
		return "int8"
	case strings.Contains(d, "BOOL"):
		return "bool"
	case strings.Contains(d, "REAL"), strings.Contains(d, "FLOA"), strings.Contains(d, "DOUB"):
		return "float8"
	case strings.Contains(d, "BLOB"):
		return "bytea"
	}
	return "text"
}

// typeClass classifies a normalised source type name as the replica does
// (docs/REPLICA.md): "_x" is an array of x.
func typeClass(typ string) string {
	t := strings.ToLower(typ)
	if strings.HasPrefix(t, "_") || strings.HasSuffix(t, "[]") {
		return "array"
	}
	switch t {
	case "int2", "int4", "int8", "oid", "smallint", "integer", "int", "bigint":
		return "int"
	case "float4", "float8", "real", "double precision":
		return "float"
	case "numeric", "decimal":
		return "numeric"
	case "bool", "boolean":
		return "bool"
	case "bytea":
		return "bytes"
	case "timestamptz", "timestamp", "timestamp with time zone", "timestamp without time zone":
		return "timestamp"
	case "json", "jsonb":
		return "json"
	}
	return "text" // text, date and every type kept as the source's text
}

// valueOf rebuilds a change.Value from what SQLite returned for a column of
// source type typ.
func valueOf(v any, typ string) (change.Value, error) {
	if v == nil {
		return change.NullValue(), nil
	}
	str := func() string {
		switch x := v.(type) {
		case string:
			return x
		case []byte:
			return string(x)
		case int64:
			return strconv.FormatInt(x, 10)
		case float64:
			return strconv.FormatFloat(x, 'g', -1, 64)
		case time.Time:
			return x.UTC().Format(time.RFC3339Nano)
		}
		return fmt.Sprint(v)
	}
	switch typeClass(typ) {
	case "int":
		if i, ok := v.(int64); ok {
			return change.IntValue(i), nil
		}
		i, err := strconv.ParseInt(str(), 10, 64)
		if err != nil {
			return change.Value{}, fmt.Errorf("integer column holds %q", str())
		}
		return change.IntValue(i), nil
	case "float":
		switch x := v.(type) {
		case float64:
			return change.FloatValue(x), nil
		case int64:
			return change.FloatValue(float64(x)), nil
		}
		switch s := str(); s {
		case "NaN":
			return change.FloatValue(math.NaN()), nil
		case "Infinity":
			return change.FloatValue(math.Inf(1)), nil
		case "-Infinity":
			return change.FloatValue(math.Inf(-1)), nil
		default:
			f, err := strconv.ParseFloat(s, 64)
			if err != nil {
				return change.Value{}, fmt.Errorf("float column holds %q", s)
			}
			return change.FloatValue(f), nil
		}
	case "numeric":
		return change.NumericValue(str())
	case "bool":
		if b, ok := v.(bool); ok {
			return change.BoolValue(b), nil
		}
		if i, ok := v.(int64); ok {
			return change.BoolValue(i != 0), nil
		}
		b, err := strconv.ParseBool(str())
		if err != nil {
			return change.Value{}, fmt.Errorf("boolean column holds %q", str())
		}
		return change.BoolValue(b), nil
	case "bytes":
		if b, ok := v.([]byte); ok {
			return change.BytesValue(bytes.Clone(b)), nil
		}
		return change.BytesValue([]byte(str())), nil
	case "timestamp":
		if t, ok := v.(time.Time); ok {
			return change.TimestampValue(t)
		}
		t, err := time.Parse(time.RFC3339Nano, str())
		if err != nil {
			return change.Value{}, fmt.Errorf("timestamp column holds %q", str())
		}
		return change.TimestampValue(t)
	case "json":
		return change.JSONValue([]byte(str()))
	case "array":
		lit, err := pgArrayFromJSON([]byte(str()))
		if err != nil {
			return change.Value{}, fmt.Errorf("array column holds %q: %w", str(), err)
		}
		return change.UnknownValue(typ, lit), nil
	}
	return change.TextValue(str()), nil
}

// pgArrayFromJSON turns the JSON form in which a SQLite replica stores an
// array into a Postgres array literal: every element quoted, NULL bare.
func pgArrayFromJSON(js []byte) (string, error) {
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return "", err
	}
	var b strings.Builder
	var walk func(v any) error
	walk = func(v any) error {
		arr, ok := v.([]any)
		if !ok {
			return fmt.Errorf("not an array")
		}
		b.WriteByte('{')
		for i, e := range arr {
			if i > 0 {
				b.WriteByte(',')
			}
			switch x := e.(type) {
			case nil:
				b.WriteString("NULL")
			case []any:
				if err := walk(x); err != nil {
					return err
				}
			default:
				var s string
				switch y := x.(type) {
				case string:
					s = y
				case json.Number:
					s = y.String()
				case bool:
					s = strconv.FormatBool(y)
				default: // an embedded JSON object
					raw, _ := json.Marshal(y)
					s = string(raw)
				}
				b.WriteByte('"')
				b.WriteString(strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s))
				b.WriteByte('"')
			}
		}
		b.WriteByte('}')
		return nil
	}
	if err := walk(v); err != nil {
		return "", err
	}
	return b.String(), nil
}
