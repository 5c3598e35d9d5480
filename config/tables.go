package config

import (
	"fmt"
	"slices"
	"strings"

	"github.com/walship/walship/change"
)

// validatePostgresTables checks source.postgres.tables and fills in
// mask_string's default. What needs the database (columns exist, key
// columns neither hashed nor masked nor left out, partitions not listed
// with their root) is checked by the source when it starts.
func validatePostgresTables(v *validator, p *Postgres) {
	if p.MaskString == "" {
		p.MaskString = "****"
	}
	seen := map[change.Table]int{}
	for i, t := range p.Tables {
		key := fmt.Sprintf("source.postgres.tables[%d]", i)
		if t.Table == "" {
			v.fail(key+".table", "required: the table as schema.table")
			continue
		}
		tb, err := change.ParseTable(t.Table)
		if err != nil {
			v.fail(key, "%v", err)
			continue
		}
		if j, dup := seen[tb]; dup {
			v.fail(key, "%s is already listed as source.postgres.tables[%d]", tb, j)
		}
		seen[tb] = i
		if t.Where != "" && strings.TrimSpace(t.Where) == "" {
			v.fail(key+".where", "blank: leave it out to capture every row")
		}
		if t.Columns != nil && len(t.Columns) == 0 {
			v.fail(key+".columns", "empty: leave it out to capture every column")
		}
		hashed := map[string]bool{}
		for _, l := range []struct {
			field string
			cols  []string
		}{{"columns", t.Columns}, {"hash", t.Hash}, {"mask", t.Mask}} {
			named := map[string]bool{}
			for j, c := range l.cols {
				ckey := fmt.Sprintf("%s.%s[%d]", key, l.field, j)
				switch {
				case c == "":
					v.fail(ckey, "empty column name")
				case named[c]:
					v.fail(ckey, "column %q is named twice", c)
				case l.field == "mask" && hashed[c]:
					v.fail(ckey, "column %q is also hashed: hash or mask, not both", c)
				case l.field != "columns" && t.Columns != nil && !slices.Contains(t.Columns, c):
					v.fail(ckey, "column %q is not in %s.columns, so it is not captured", c, key)
				}
				named[c] = true
				if l.field == "hash" {
					hashed[c] = true
				}
			}
		}
		if len(t.Hash) > 0 && p.HashSalt == "" {
			v.fail(key+".hash", "hashing needs source.postgres.hash_salt (a secret, for example \"${WALSHIP_HASH_SALT}\"): an unsalted hash of a short value is easily reversed")
		}
	}
}
