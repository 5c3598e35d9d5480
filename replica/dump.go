package replica

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"

	"github.com/walship/walship/internal/secret"
)

// Tables is the canonical content of a database: for each table (named as
// in a SQLite replica: bare for schema public, "<schema>.<table>"
// otherwise) its rows, each a JSON object of column name to canonical
// value (see canon.go), sorted. Equal data in a Postgres source, a
// Postgres replica and a SQLite replica give equal Tables.
type Tables map[string][]string

// Diff describes the first differences between want and got, "" if they
// are equal. It names tables and shows a few rows.
func Diff(want, got Tables) string {
	var b strings.Builder
	names := map[string]bool{}
	for n := range want {
		names[n] = true
	}
	for n := range got {
		names[n] = true
	}
	sorted := make([]string, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	sort.Strings(sorted)
	for _, n := range sorted {
		w, wok := want[n]
		g, gok := got[n]
		switch {
		case !wok:
			fmt.Fprintf(&b, "table %s: unexpected (%d rows)\n", n, len(g))
			continue
		case !gok:
			fmt.Fprintf(&b, "table %s: missing (want %d rows)\n", n, len(w))
			continue
		}
		if slices.Equal(w, g) {
			continue
		}
		fmt.Fprintf(&b, "table %s: %d rows, want %d\n", n, len(g), len(w))
		shown := 0
		for _, r := range w {
			if _, found := slices.BinarySearch(g, r); !found && shown < 5 {
				fmt.Fprintf(&b, "  missing    %s\n", r)
				shown++
			}
		}
		shown = 0
		for _, r := range g {
			if _, found := slices.BinarySearch(w, r); !found && shown < 5 {
				fmt.Fprintf(&b, "  unexpected %s\n", r)
				shown++
			}
		}
	}
	return b.String()
}

// Dump reads the canonical content of every table of a database by URL:
// a SQLite replica (sqlite:///abs/path.db or a bare absolute path) or any
// PostgreSQL database (postgres://..., a source or a replica: tables of
// every schema but the system ones). walship_* tables are left out. Dump
// reads in one read-only transaction, so the result is consistent.
func Dump(ctx context.Context, rawURL string) (Tables, error) {
	if strings.HasPrefix(rawURL, "/") {
		rawURL = "sqlite://" + rawURL
	}
	kind, path, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	var t Tables
	if kind == "sqlite" {
		t, err = dumpSQLite(ctx, path)
	} else {
		t, err = dumpPostgres(ctx, rawURL)
	}
	if err != nil {
		return nil, fmt.Errorf("dump of %s: %w", secret.URL(rawURL), secret.DSNError(rawURL, err))
	}
	return t, nil
}

// ReadState returns the bookkeeping row of a replica by URL.
func ReadState(ctx context.Context, rawURL string) (State, error) {
	if strings.HasPrefix(rawURL, "/") {
		rawURL = "sqlite://" + rawURL
	}
	kind, path, err := ParseURL(rawURL)
	if err != nil {
		return State{}, err
	}
	var st State
	if kind == "sqlite" {
		st, err = func() (State, error) {
			db, err := openSQLiteRead(ctx, path)
			if err != nil {
				return State{}, err
			}
			defer db.Close()
			return readSQLiteState(ctx, db)
		}()
	} else {
		st, err = readPostgresState(ctx, rawURL)
	}
	if err != nil {
		return State{}, fmt.Errorf("replica %s: %w", secret.URL(rawURL), secret.DSNError(rawURL, err))
	}
	return st, nil
}

func openSQLiteRead(ctx context.Context, path string) (*sql.DB, error) {
	return openSQLiteExisting(ctx, path, true)
}

// openSQLiteExisting opens an existing database file.
func openSQLiteExisting(ctx context.Context, path string, readOnly bool) (*sql.DB, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, err // never create a database by reading it
	}
	db, err := sql.Open("sqlite", sqliteDSN(path, defaultBusy, readOnly, false))
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

func dumpSQLite(ctx context.Context, path string) (Tables, error) {
	db, err := openSQLiteRead(ctx, path)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	tx, err := db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	var names []string
	rows, err := tx.QueryContext(ctx, `SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\_%' ESCAPE '\' ORDER BY name`)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return nil, err
		}
		if !isInternal(n) {
			names = append(names, n)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	hasTypes := false
	if err := tx.QueryRowContext(ctx, `SELECT count(*) > 0 FROM sqlite_schema WHERE name = 'walship_columns'`).Scan(&hasTypes); err != nil {
		return nil, err
	}
	out := Tables{}
	for _, name := range names {
		ts, err := loadSQLiteTable(ctx, tx, name, hasTypes)
		if err != nil {
			return nil, fmt.Errorf("table %s: %w", name, err)
		}
		var sel strings.Builder
		sel.WriteString("SELECT ")
		for i, c := range ts.cols {
			if i > 0 {
				sel.WriteString(", ")
			}
			sel.WriteString(quoteIdent(c.name))
		}
		sel.WriteString(" FROM " + quoteIdent(name))
		rows, err := tx.QueryContext(ctx, sel.String())
		if err != nil {
			return nil, fmt.Errorf("table %s: %w", name, err)
		}
		vals := make([]any, len(ts.cols))
		ptrs := make([]any, len(ts.cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		list := []string{}
		for rows.Next() {
			if err := rows.Scan(ptrs...); err != nil {
				rows.Close()
				return nil, err
			}
			row := make(map[string]any, len(ts.cols))
			for i, c := range ts.cols {
				cv, err := canonSQLite(c.typ, vals[i])
				if err != nil {
					rows.Close()
					return nil, fmt.Errorf("table %s, column %s: %w", name, c.name, err)
				}
				row[c.name] = cv
			}
			b, err := json.Marshal(row)
			if err != nil {
				rows.Close()
				return nil, err
			}
			list = append(list, string(b))
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("table %s: %w", name, err)
		}
		sort.Strings(list)
		out[name] = list
	}
	return out, nil
}

// Compare dumps the databases at wantURL (e.g. a Postgres source) and
// gotURL (a replica) and returns their Diff: "" if they hold the same
// data.
func Compare(ctx context.Context, wantURL, gotURL string) (string, error) {
	want, err := Dump(ctx, wantURL)
	if err != nil {
		return "", err
	}
	got, err := Dump(ctx, gotURL)
	if err != nil {
		return "", err
	}
	return Diff(want, got), nil
}
