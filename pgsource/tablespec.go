package pgsource

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/walship/walship/change"
)

// TableSpec is one published table and what of it is captured.
//
// Where and Columns become the publication's row filter and column list
// (PostgreSQL 15: FOR TABLE s.t (a, b) WHERE (...)): PostgreSQL itself
// decides which rows and columns are sent, and the initial snapshot copies
// exactly the same. Hash and Mask are applied by walship to every row
// before it enters the log (snapshot rows, new rows, old rows and keys):
// the original value is never written.
type TableSpec struct {
	// Name is "schema.table". A partitioned table is named by its root;
	// its partitions are published as the root.
	Name string
	// Where is a row filter, a boolean SQL expression over the table's
	// columns (PostgreSQL's publication WHERE clause); "" captures every
	// row. An update that moves a row out of the filter is captured as a
	// delete, into it as an insert (as PostgreSQL publishes them).
	Where string
	// Columns is the publication column list; nil captures every column.
	// It must include the primary key.
	Columns []string
	// Hash lists columns whose values are replaced by the lower-case hex
	// SHA-256 of Options.HashSalt followed by the value's text
	// (docs/POSTGRES.md, "Per-table options"); a null stays null. Not a
	// key column.
	Hash []string
	// Mask lists columns whose values are replaced by Options.MaskString;
	// a null stays null. Not a key column.
	Mask []string
}

// Table returns the parsed name.
func (t TableSpec) Table() change.Table {
	tb, _ := change.ParseTable(t.Name)
	return tb
}

// validateTables checks the table list: names parse, no table twice, the
// column lists name no column twice, hashed and masked columns are
// distinct and within the column list, and hashing has a salt.
func validateTables(tables []TableSpec, haveSalt bool) []error {
	var errs []error
	seen := map[change.Table]int{}
	for i, t := range tables {
		key := fmt.Sprintf("tables[%d]", i)
		tb, err := change.ParseTable(t.Name)
		if err != nil {
			errs = append(errs, cfgErr(key, "%q: %v", t.Name, err))
			continue
		}
		if j, dup := seen[tb]; dup {
			errs = append(errs, cfgErr(key, "%s is already listed as tables[%d]", tb, j))
		}
		seen[tb] = i
		if t.Where != "" && strings.TrimSpace(t.Where) == "" {
			errs = append(errs, cfgErr(key+".where", "blank: leave it out to capture every row"))
		}
		if t.Columns != nil && len(t.Columns) == 0 {
			errs = append(errs, cfgErr(key+".columns", "empty: leave it out to capture every column"))
		}
		names := map[string]string{}
		for _, l := range []struct {
			field string
			cols  []string
		}{{"columns", t.Columns}, {"hash", t.Hash}, {"mask", t.Mask}} {
			dup := map[string]bool{}
			for j, c := range l.cols {
				ckey := fmt.Sprintf("%s.%s[%d]", key, l.field, j)
				switch {
				case c == "":
					errs = append(errs, cfgErr(ckey, "empty column name"))
				case dup[c]:
					errs = append(errs, cfgErr(ckey, "column %q is named twice", c))
				case l.field != "columns" && names[c] != "" && names[c] != "columns":
					errs = append(errs, cfgErr(ckey, "column %q is also in %s.%s: hash or mask, not both", c, key, names[c]))
				case l.field != "columns" && t.Columns != nil && !slices.Contains(t.Columns, c):
					errs = append(errs, cfgErr(ckey, "column %q is not in %s.columns, so it is not captured", c, key))
				}
				dup[c] = true
				if names[c] == "" || l.field != "columns" {
					names[c] = l.field
				}
			}
		}
		if len(t.Hash) > 0 && !haveSalt {
			errs = append(errs, cfgErr(key+".hash", "hashing needs source.postgres.hash_salt (a secret, for example \"${WALSHIP_HASH_SALT}\"): an unsalted hash of a short value is easily reversed"))
		}
	}
	return errs
}

// pubTableSQL renders a table of a publication's table list:
// s.t (a, b) WHERE (expr).
func pubTableSQL(t TableSpec) string {
	sql := quoteTable(t.Table())
	if t.Columns != nil {
		cols := make([]string, len(t.Columns))
		for i, c := range t.Columns {
			cols[i] = pgx.Identifier{c}.Sanitize()
		}
		sql += " (" + strings.Join(cols, ", ") + ")"
	}
	if t.Where != "" {
		sql += " WHERE (" + t.Where + ")"
	}
	return sql
}

// protection is what is replaced in one table's rows: column name to
// hashed (true) or masked (false).
type protection map[string]bool

// protections indexes the tables' Hash and Mask lists; nil if none.
func protections(tables []TableSpec) map[change.Table]protection {
	var m map[change.Table]protection
	for _, t := range tables {
		if len(t.Hash)+len(t.Mask) == 0 {
			continue
		}
		if m == nil {
			m = map[change.Table]protection{}
		}
		p := protection{}
		for _, c := range t.Hash {
			p[c] = true
		}
		for _, c := range t.Mask {
			p[c] = false
		}
		m[t.Table()] = p
	}
	return m
}

// protect replaces the hashed and masked values of c (after image, old
// image, key) before it enters the log. Rows are copied, never changed
// in place: the TOAST cache may hold them. Their types become text.
func (s *Source) protect(c *change.Change) {
	p := s.protected[c.Table]
	if p == nil {
		return
	}
	c.After = s.protectRow(p, c.After)
	c.Before = s.protectRow(p, c.Before)
	c.Key = s.protectRow(p, c.Key) // key columns are refused by check; kept for safety
	if len(c.Types) > 0 {
		types := slices.Clone(c.Types)
		for i := range types {
			if _, ok := p[types[i].Name]; ok {
				types[i].Type = "text"
			}
		}
		c.Types = types
	}
}

func (s *Source) protectRow(p protection, row change.Row) change.Row {
	if row == nil {
		return nil
	}
	var out change.Row
	for i, col := range row {
		hash, ok := p[col.Name]
		if !ok || col.Value.IsNull() {
			continue
		}
		if out == nil {
			out = slices.Clone(row)
		}
		if hash {
			out[i].Value = change.TextValue(hashValue(s.cfg.HashSalt.Reveal(), col.Value))
		} else {
			out[i].Value = change.TextValue(s.cfg.MaskString)
		}
	}
	if out == nil {
		return row
	}
	return out
}

// hashValue is the hex SHA-256 of salt followed by the value's text
// (valueText).
func hashValue(salt string, v change.Value) string {
	h := sha256.New()
	h.Write([]byte(salt))
	h.Write([]byte(valueText(v)))
	return hex.EncodeToString(h.Sum(nil))
}

// valueText is the text a value is hashed as: a string, a numeric's
// digits, an unknown type's text as they are; bytes as lower-case hex; a
// timestamp in RFC 3339 (UTC, nanoseconds as needed); anything else (a
// number, a bool, JSON, an array) as its JSON form in the log.
func valueText(v change.Value) string {
	if s, ok := v.Text(); ok {
		return s
	}
	if s, ok := v.Numeric(); ok {
		return s
	}
	if _, s, ok := v.Unknown(); ok {
		return s
	}
	if b, ok := v.Bytes(); ok {
		return hex.EncodeToString(b)
	}
	if t, ok := v.Timestamp(); ok {
		return t.UTC().Format(time.RFC3339Nano)
	}
	if j, ok := v.JSON(); ok {
		return string(j)
	}
	return v.String()
}
