package replica

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/walship/walship/change"
)

// dumpPostgres reads every user table of a Postgres database (a source or
// a replica) in one repeatable-read snapshot, each value as its text
// output in UTC and ISO styles, canonicalised by the column's type.
func dumpPostgres(ctx context.Context, rawURL string) (Tables, error) {
	conn, err := connectPostgres(ctx, rawURL)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, `SET LOCAL TimeZone = 'UTC'; SET LOCAL DateStyle = 'ISO, YMD'; SET LOCAL IntervalStyle = 'postgres'; SET LOCAL bytea_output = 'hex'; SET LOCAL extra_float_digits = 1`, pgx.QueryExecModeSimpleProtocol); err != nil {
		return nil, err
	}
	rows, err := tx.Query(ctx, `
SELECT n.nspname, c.relname, a.attname, ty.typname
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_type ty ON ty.oid = a.atttypid
WHERE (c.relkind = 'p' OR c.relkind = 'r' AND NOT c.relispartition)
  AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\_%'
ORDER BY n.nspname, c.relname, a.attnum`)
	if err != nil {
		return nil, err
	}
	type tableCols struct {
		schema, name string
		cols         []column
	}
	var tables []*tableCols
	for rows.Next() {
		var schema, name, col, typ string
		if err := rows.Scan(&schema, &name, &col, &typ); err != nil {
			rows.Close()
			return nil, err
		}
		if len(tables) == 0 || tables[len(tables)-1].schema != schema || tables[len(tables)-1].name != name {
			tables = append(tables, &tableCols{schema: schema, name: name})
		}
		t := tables[len(tables)-1]
		t.cols = append(t.cols, column{name: col, typ: parseType(typ)})
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	names, err := pgSourceNames(ctx, tx)
	if err != nil {
		return nil, err
	}
	out := Tables{}
	for _, t := range tables {
		if isInternal(t.name) {
			continue
		}
		dst := target{schema: t.schema, name: t.name}
		src := pgDialect.ownSource(dst)
		if s, ok := names[[2]string{kindTable, dst.key()}]; ok {
			if src, err = change.ParseTable(s); err != nil {
				return nil, fmt.Errorf("walship_names: table %s: %w", dst.key(), err)
			}
		}
		key := src.Name
		if src.Schema != change.DefaultSchema {
			key = src.Schema + "." + src.Name
		}
		var sel strings.Builder
		sel.WriteString("SELECT ")
		for i, c := range t.cols {
			if i > 0 {
				sel.WriteString(", ")
			}
			sel.WriteString(quoteIdent(c.name) + "::text")
		}
		sel.WriteString(" FROM " + quoteIdent(t.schema) + "." + quoteIdent(t.name))
		list, err := func() ([]string, error) {
			rows, err := tx.Query(ctx, sel.String())
			if err != nil {
				return nil, err
			}
			defer rows.Close()
			vals := make([]*string, len(t.cols))
			ptrs := make([]any, len(t.cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			list := []string{}
			for rows.Next() {
				if err := rows.Scan(ptrs...); err != nil {
					return nil, err
				}
				row := make(map[string]any, len(t.cols))
				for i, c := range t.cols {
					v, err := canonPG(c.typ, vals[i])
					if err != nil {
						return nil, fmt.Errorf("column %s: %w", c.name, err)
					}
					name := c.name
					if s, ok := names[[2]string{dst.key(), c.name}]; ok {
						name = s
					}
					row[name] = v
				}
				b, err := json.Marshal(row)
				if err != nil {
					return nil, err
				}
				list = append(list, string(b))
			}
			return list, rows.Err()
		}()
		if err != nil {
			return nil, fmt.Errorf("table %s: %w", key, err)
		}
		sort.Strings(list)
		out[key] = list
	}
	return out, nil
}

// pgSourceNames reads a replica's walship_names (none in a database that
// is not a replica): by {"table", replica table} and by {replica table,
// replica column}, the source name.
func pgSourceNames(ctx context.Context, tx pgx.Tx) (map[[2]string]string, error) {
	out := map[[2]string]string{}
	var exists bool
	if err := tx.QueryRow(ctx, `SELECT to_regclass('walship_names') IS NOT NULL`).Scan(&exists); err != nil || !exists {
		return out, err
	}
	rows, err := tx.Query(ctx, `SELECT kind, tbl, target, source FROM walship_names WHERE kind IN ('table', 'column')`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var kind, tbl, tgt, src string
		if err := rows.Scan(&kind, &tbl, &tgt, &src); err != nil {
			return nil, err
		}
		if kind == kindTable {
			out[[2]string{kindTable, tgt}] = src
		} else {
			out[[2]string{tbl, tgt}] = src
		}
	}
	return out, rows.Err()
}
