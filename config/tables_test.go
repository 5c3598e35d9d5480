package config

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/walship/walship/internal/secret"
)

// TestPostgresTablesShapes: a table is a plain string or a mapping with
// its options; ${VAR} expands in both; the salt is a secret that never
// prints.
func TestPostgresTablesShapes(t *testing.T) {
	const y = `
source:
  postgres:
    dsn: postgres://u@db/app
    hash_salt: "${SALT}"
    tables:
      - public.plain
      - "${SCHEMA}.env"
      - table: sales.orders
        where: "amount > 100 AND region = 'eu'"
        columns: [id, amount, region, email, phone]
        hash: [email]
        mask: [phone]
`
	c, err := Parse([]byte(y), env(map[string]string{"SALT": "pepper-123", "SCHEMA": "ops"}))
	if err != nil {
		t.Fatal(err)
	}
	p := c.Source.Postgres
	want := []PostgresTable{{Table: "public.plain"}, {Table: "ops.env"}, {Table: "sales.orders",
		Where: "amount > 100 AND region = 'eu'", Columns: []string{"id", "amount", "region", "email", "phone"},
		Hash: []string{"email"}, Mask: []string{"phone"}}}
	if !reflect.DeepEqual(p.Tables, want) {
		t.Errorf("tables = %+v\nwant     %+v", p.Tables, want)
	}
	if p.HashSalt.Reveal() != "pepper-123" || p.MaskString != "****" {
		t.Errorf("hash_salt %q, mask_string %q", p.HashSalt.Reveal(), p.MaskString)
	}
	for _, out := range []string{fmt.Sprintf("%v", p), fmt.Sprintf("%+v", *p), fmt.Sprintf("%#v", *p)} {
		if strings.Contains(out, "pepper") || !strings.Contains(out, secret.Redacted) {
			t.Errorf("the config printed shows the salt or hides that it is set: %s", out)
		}
	}
}

// TestPostgresTablesErrors: every bad table entry names its key with the
// index.
func TestPostgresTablesErrors(t *testing.T) {
	const head = "source:\n  postgres:\n    dsn: postgres://u@db/app\n"
	for _, tc := range []struct{ tables, want string }{
		{"[a.b, {table: a.c, wher: x}]", `source.postgres.tables[1].wher (line 4): unknown key; did you mean "where"?`},
		{"[a.b, {where: x}]", "source.postgres.tables[1].table (line 4): required"},
		{"[a.b, {table: a.b}]", "source.postgres.tables[1] (line 4): a.b is already listed as source.postgres.tables[0]"},
		{"[{table: a.b, where: ' '}]", "source.postgres.tables[0].where (line 4): blank"},
		{"[{table: a.b, columns: []}]", "source.postgres.tables[0].columns (line 4): empty"},
		{"[{table: a.b, columns: [id, x, x]}]", `source.postgres.tables[0].columns[2] (line 4): column "x" is named twice`},
		{"[{table: a.b, columns: [id], mask: [x]}]", `source.postgres.tables[0].mask[0] (line 4): column "x" is not in source.postgres.tables[0].columns`},
		{"[a.b, x.y, {table: a.c, hash: [e]}]", "source.postgres.tables[2].hash (line 4): hashing needs source.postgres.hash_salt"},
		{"[{table: a.c, hash: [e], mask: [e]}]\n    hash_salt: s", `source.postgres.tables[0].mask[0] (line 4): column "e" is also hashed`},
		{"[{table: a.c, hash: e}]", "source.postgres.tables[0].hash (line 4): want a list"},
		{`['"unterminated']`, "source.postgres.tables[0] (line 4)"},
	} {
		_, err := Parse([]byte(head+"    tables: "+tc.tables+"\n"), env(nil))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("tables %s: %v, want %q", tc.tables, err, tc.want)
		}
	}
}
