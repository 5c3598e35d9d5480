package replica

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"modernc.org/sqlite"

	"github.com/walship/walship/change"
)

// The SQL each backend generates for every statement shape, pinned byte
// for byte: the two backends share one builder, and a change to it must
// not change what either dialect sends.

// sqlOp is one dbTxn call; the schemas are fresh for each dialect.
type sqlOp struct {
	name   string
	pgOnly bool // SQLite tables have columns
	run    func(ctx context.Context, tx dbTxn, keyed, keyless *tableSchema) error
}

func sqlOps() []sqlOp {
	row := func(kv ...any) change.Row {
		var r change.Row
		for i := 0; i < len(kv); i += 2 {
			r = append(r, change.Column{Name: kv[i].(string), Value: kv[i+1].(change.Value)})
		}
		return r
	}
	id, v := change.IntValue(1), change.TextValue("x")
	return []sqlOp{
		{"create keyed", false, func(ctx context.Context, tx dbTxn, k, _ *tableSchema) error { return tx.createTable(ctx, k) }},
		{"create keyless", false, func(ctx context.Context, tx dbTxn, _, n *tableSchema) error { return tx.createTable(ctx, n) }},
		{"add column", false, func(ctx context.Context, tx dbTxn, k, _ *tableSchema) error {
			return tx.addColumn(ctx, k, column{name: "n", typ: parseType("numeric")})
		}},
		{"retype column", false, func(ctx context.Context, tx dbTxn, k, _ *tableSchema) error {
			return tx.retypeColumn(ctx, k, column{name: "n", typ: parseType("int8")})
		}},
		{"drop column", false, func(ctx context.Context, tx dbTxn, k, _ *tableSchema) error { return tx.dropColumn(ctx, k, "n") }},
		{"upsert keyed", false, func(ctx context.Context, tx dbTxn, k, _ *tableSchema) error {
			return tx.upsert(ctx, k, row("id", id, "v", v, "my \"col\"", change.IntValue(2)))
		}},
		{"upsert key only", false, func(ctx context.Context, tx dbTxn, k, _ *tableSchema) error { return tx.upsert(ctx, k, row("id", id)) }},
		{"upsert keyless", false, func(ctx context.Context, tx dbTxn, _, n *tableSchema) error {
			return tx.upsert(ctx, n, row("a", id, "p", change.TextValue("(1,2)")))
		}},
		{"update keyed", false, func(ctx context.Context, tx dbTxn, k, _ *tableSchema) error {
			return tx.update(ctx, k, row("v", v, "my \"col\"", change.IntValue(3)), row("id", id))
		}},
		{"update keyless", false, func(ctx context.Context, tx dbTxn, _, n *tableSchema) error {
			return tx.update(ctx, n, row("a", change.IntValue(2)), row("a", id, "p", change.TextValue("(1,2)")))
		}},
		{"delete keyed", false, func(ctx context.Context, tx dbTxn, k, _ *tableSchema) error { return tx.delete(ctx, k, row("id", id)) }},
		{"delete keyless", false, func(ctx context.Context, tx dbTxn, _, n *tableSchema) error {
			return tx.delete(ctx, n, row("a", id, "p", change.TextValue("(1,2)")))
		}},
		{"upsert no columns", true, func(ctx context.Context, tx dbTxn, k, _ *tableSchema) error { return tx.upsert(ctx, k, nil) }},
		{"truncate", false, func(ctx context.Context, tx dbTxn, k, _ *tableSchema) error {
			return tx.truncate(ctx, []*tableSchema{k}, 0)
		}},
		{"truncate options", false, func(ctx context.Context, tx dbTxn, k, n *tableSchema) error {
			return tx.truncate(ctx, []*tableSchema{k, n}, change.TruncateCascade|change.TruncateRestartIdentity)
		}},
		{"save state", false, func(ctx context.Context, tx dbTxn, _, _ *tableSchema) error {
			return tx.saveState(ctx, State{LSN: 9, CommitTime: time.Unix(1, 0), Txns: 2, Changes: 3, Lineage: "main"})
		}},
	}
}

func sqlSchemas() (keyed, keyless *tableSchema) {
	keyed = &tableSchema{src: change.Table{Schema: "public", Name: "t"}, key: []string{"id"},
		cols: []column{{"id", parseType("int8")}, {"v", parseType("text")}, {"my \"col\"", parseType("int4")}}}
	keyless = &tableSchema{src: change.Table{Schema: "s", Name: "k"},
		cols: []column{{"a", parseType("int8")}, {"p", parseType("point")}}}
	return keyed, keyless
}

var wantSQL = map[string]map[string][]string{
	"postgres": {
		"create keyed": {`CREATE TABLE "public"."t" ("id" int8, "v" text, "my ""col""" int4, PRIMARY KEY ("id"))`,
			`INSERT INTO walship_columns (tbl, col, type) VALUES ($1, $2, $3) ON CONFLICT (tbl, col) DO UPDATE SET type = excluded.type`,
			`INSERT INTO walship_columns (tbl, col, type) VALUES ($1, $2, $3) ON CONFLICT (tbl, col) DO UPDATE SET type = excluded.type`,
			`INSERT INTO walship_columns (tbl, col, type) VALUES ($1, $2, $3) ON CONFLICT (tbl, col) DO UPDATE SET type = excluded.type`},
		"create keyless": {`CREATE SCHEMA IF NOT EXISTS "s"`,
			`CREATE TABLE "s"."k" ("a" int8, "p" point)`,
			`INSERT INTO walship_columns (tbl, col, type) VALUES ($1, $2, $3) ON CONFLICT (tbl, col) DO UPDATE SET type = excluded.type`,
			`INSERT INTO walship_columns (tbl, col, type) VALUES ($1, $2, $3) ON CONFLICT (tbl, col) DO UPDATE SET type = excluded.type`},
		"add column": {`ALTER TABLE "public"."t" ADD COLUMN "n" numeric`,
			`INSERT INTO walship_columns (tbl, col, type) VALUES ($1, $2, $3) ON CONFLICT (tbl, col) DO UPDATE SET type = excluded.type`},
		"retype column": {`ALTER TABLE "public"."t" ALTER COLUMN "n" TYPE int8 USING "n"::text::int8`,
			`INSERT INTO walship_columns (tbl, col, type) VALUES ($1, $2, $3) ON CONFLICT (tbl, col) DO UPDATE SET type = excluded.type`},
		"drop column": {`ALTER TABLE "public"."t" DROP COLUMN "n"`,
			`DELETE FROM walship_columns WHERE tbl = $1 AND col = $2`},
		"upsert keyed":      {`INSERT INTO "public"."t" ("id", "v", "my ""col""") VALUES ($1::text::int8, $2::text::text, $3::text::int4) ON CONFLICT ("id") DO UPDATE SET "v" = EXCLUDED."v", "my ""col""" = EXCLUDED."my ""col"""`},
		"upsert key only":   {`INSERT INTO "public"."t" ("id") VALUES ($1::text::int8) ON CONFLICT ("id") DO NOTHING`},
		"upsert keyless":    {`INSERT INTO "s"."k" ("a", "p") VALUES ($1::text::int8, $2::text::point)`},
		"update keyed":      {`UPDATE "public"."t" SET "v" = $1::text::text, "my ""col""" = $2::text::int4 WHERE "id" = $3::text::int8`},
		"update keyless":    {`WITH u AS (UPDATE "s"."k" SET "a" = $1::text::int8 WHERE ctid = (SELECT ctid FROM "s"."k" WHERE "a" IS NOT DISTINCT FROM $2::text::int8 AND "p"::text IS NOT DISTINCT FROM $3::text::point::text LIMIT 1) RETURNING 1) INSERT INTO "s"."k" ("a") SELECT $1::text::int8 WHERE NOT EXISTS (SELECT 1 FROM u)`},
		"delete keyed":      {`DELETE FROM "public"."t" WHERE "id" = $1::text::int8`},
		"delete keyless":    {`DELETE FROM "s"."k" WHERE ctid = (SELECT ctid FROM "s"."k" WHERE "a" IS NOT DISTINCT FROM $1::text::int8 AND "p"::text IS NOT DISTINCT FROM $2::text::point::text LIMIT 1)`},
		"upsert no columns": {`INSERT INTO "public"."t" DEFAULT VALUES`},
		"truncate":          {`TRUNCATE "public"."t"`},
		"truncate options":  {`TRUNCATE "public"."t", "s"."k" RESTART IDENTITY CASCADE`},
		"save state":        {`UPDATE walship_applied SET lsn = $1, commit_time = $2, txns = $3, changes = $4, lineage = $5 WHERE id = 1`},
	},
	"sqlite": {
		"create keyed": {`CREATE TABLE "t" ("id" INTEGER NOT NULL, "v" TEXT, "my ""col""" INTEGER, PRIMARY KEY ("id"))`,
			`INSERT INTO walship_columns (tbl, col, type) VALUES (?, ?, ?) ON CONFLICT (tbl, col) DO UPDATE SET type = excluded.type`,
			`INSERT INTO walship_columns (tbl, col, type) VALUES (?, ?, ?) ON CONFLICT (tbl, col) DO UPDATE SET type = excluded.type`,
			`INSERT INTO walship_columns (tbl, col, type) VALUES (?, ?, ?) ON CONFLICT (tbl, col) DO UPDATE SET type = excluded.type`},
		"create keyless": {`CREATE TABLE "s.k" ("a" INTEGER, "p" TEXT)`,
			`INSERT INTO walship_columns (tbl, col, type) VALUES (?, ?, ?) ON CONFLICT (tbl, col) DO UPDATE SET type = excluded.type`,
			`INSERT INTO walship_columns (tbl, col, type) VALUES (?, ?, ?) ON CONFLICT (tbl, col) DO UPDATE SET type = excluded.type`},
		"add column": {`ALTER TABLE "t" ADD COLUMN "n" TEXT`,
			`INSERT INTO walship_columns (tbl, col, type) VALUES (?, ?, ?) ON CONFLICT (tbl, col) DO UPDATE SET type = excluded.type`},
		"retype column": {`INSERT INTO walship_columns (tbl, col, type) VALUES (?, ?, ?) ON CONFLICT (tbl, col) DO UPDATE SET type = excluded.type`},
		"drop column": {`ALTER TABLE "t" DROP COLUMN "n"`,
			`DELETE FROM walship_columns WHERE tbl = ? AND col = ?`},
		"upsert keyed":    {`INSERT INTO "t" ("id", "v", "my ""col""") VALUES (?, ?, ?) ON CONFLICT ("id") DO UPDATE SET "v" = excluded."v", "my ""col""" = excluded."my ""col"""`},
		"upsert key only": {`INSERT INTO "t" ("id") VALUES (?) ON CONFLICT ("id") DO NOTHING`},
		"upsert keyless":  {`INSERT INTO "s.k" ("a", "p") VALUES (?, ?)`},
		"update keyed":    {`UPDATE "t" SET "v" = ?, "my ""col""" = ? WHERE "id" IS ?`},
		"update keyless": {`UPDATE "s.k" SET "a" = ? WHERE rowid = (SELECT rowid FROM "s.k" WHERE "a" IS ? AND "p" IS ? LIMIT 1)`,
			`INSERT INTO "s.k" ("a") SELECT ? WHERE changes() = 0`},
		"delete keyed":   {`DELETE FROM "t" WHERE "id" IS ?`},
		"delete keyless": {`DELETE FROM "s.k" WHERE rowid = (SELECT rowid FROM "s.k" WHERE "a" IS ? AND "p" IS ? LIMIT 1)`},
		"truncate":       {`DELETE FROM "t"`},
		"truncate options": {`DELETE FROM "t"`, `DELETE FROM "s.k"`,
			`SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_sequence'`},
		"save state": {`UPDATE walship_applied SET lsn = ?, commit_time = ?, txns = ?, changes = ?, lineage = ? WHERE id = 1`},
	},
}

// pgRecorder is a pgx.Tx that records what is executed on it.
type pgRecorder struct {
	pgx.Tx
	sqls []string
}

func (r *pgRecorder) Exec(_ context.Context, sql string, _ ...any) (pgconn.CommandTag, error) {
	r.sqls = append(r.sqls, sql)
	return pgconn.CommandTag{}, nil
}

func pgSQL(t *testing.T, op sqlOp) []string {
	rec := &pgRecorder{}
	tx := &pgTxn{tx: rec, batch: &pgx.Batch{}}
	keyed, keyless := sqlSchemas()
	if err := op.run(t.Context(), tx, keyed, keyless); err != nil {
		t.Fatalf("postgres %s: %v", op.name, err)
	}
	got := rec.sqls
	for _, q := range tx.batch.QueuedQueries {
		got = append(got, q.SQL)
	}
	return got
}

// sqliteTrace records every statement prepared through the "sqlite-trace"
// driver (which has no Execer, so database/sql prepares everything).
var (
	sqliteTrace     []string
	sqliteTraceOnce sync.Once
)

type traceDriver struct{ d driver.Driver }

func (d traceDriver) Open(name string) (driver.Conn, error) {
	c, err := d.d.Open(name)
	if err != nil {
		return nil, err
	}
	return traceConn{c}, nil
}

type traceConn struct{ driver.Conn }

func (c traceConn) Prepare(q string) (driver.Stmt, error) {
	sqliteTrace = append(sqliteTrace, q)
	return c.Conn.Prepare(q)
}

func (c traceConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	return c.Conn.(driver.ConnBeginTx).BeginTx(ctx, opts)
}

func sqliteSQL(t *testing.T, ops []sqlOp) map[string][]string {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "r.db")
	b, err := openSQLite(ctx, path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.init(ctx); err != nil {
		t.Fatal(err)
	}
	b.close()
	sqliteTraceOnce.Do(func() { sql.Register("sqlite-trace", traceDriver{&sqlite.Driver{}}) })
	db, err := sql.Open("sqlite-trace", sqliteDSN(path, time.Second, false, false))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	tb := &sqliteBackend{db: db, path: path}
	keyed, keyless := sqlSchemas()
	out := map[string][]string{}
	for _, op := range ops {
		if op.pgOnly {
			continue
		}
		tx, err := tb.begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		sqliteTrace = nil
		if err := op.run(ctx, tx, keyed, keyless); err != nil {
			t.Fatalf("sqlite %s: %v", op.name, err)
		}
		out[op.name] = sqliteTrace
		if err := tx.commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func TestGeneratedSQL(t *testing.T) {
	ops := sqlOps()
	got := map[string]map[string][]string{"postgres": {}, "sqlite": sqliteSQL(t, ops)}
	for _, op := range ops {
		got["postgres"][op.name] = pgSQL(t, op)
	}
	if os.Getenv("WALSHIP_PRINT_SQL") != "" { // to pin a deliberate change
		for _, d := range []string{"postgres", "sqlite"} {
			fmt.Printf("\t%q: {\n", d)
			for _, op := range ops {
				if !op.pgOnly || d == "postgres" {
					fmt.Printf("\t\t%q: {%s},\n", op.name, printSQL(got[d][op.name]))
				}
			}
			fmt.Printf("\t},\n")
		}
	}
	for _, d := range []string{"postgres", "sqlite"} {
		for _, op := range ops {
			if op.pgOnly && d == "sqlite" {
				continue
			}
			if g, w := strings.Join(got[d][op.name], "\n"), strings.Join(wantSQL[d][op.name], "\n"); g != w {
				t.Errorf("%s %s:\n got: %q\nwant: %q", d, op.name, got[d][op.name], wantSQL[d][op.name])
			}
		}
	}
}

func printSQL(qs []string) string {
	var b strings.Builder
	for i, q := range qs {
		if i > 0 {
			b.WriteString(",\n\t\t\t")
		}
		b.WriteString("`" + q + "`")
	}
	return b.String()
}
