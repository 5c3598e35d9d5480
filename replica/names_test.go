package replica

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/walship/walship/change"
)

// Long source names: the two tables share their first 63 bytes (what
// PostgreSQL keeps of an identifier), and so do the two columns; the
// multibyte ones put a two-byte character across the 54th byte, where a
// mapped name is cut.
var (
	longA   = strings.Repeat("t", 63) + "_alpha"
	longB   = strings.Repeat("t", 63) + "_beta"
	longCol = strings.Repeat("c", 63)
	colX    = longCol + "_x"
	colY    = longCol + "_y"
	utfA    = strings.Repeat("u", 53) + "é" + strings.Repeat("ü", 10) + "1"
	utfB    = strings.Repeat("u", 53) + "é" + strings.Repeat("ü", 10) + "2"
	longSch = strings.Repeat("s", 70)
)

// wantIdent is the documented mapping (docs/REPLICA.md), computed here
// independently of MapIdent.
func wantIdent(name string) string {
	if len(name) <= 63 {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	prefix := name[:54]
	for !utf8.ValidString(prefix) {
		prefix = prefix[:len(prefix)-1]
	}
	return prefix + "_" + hex.EncodeToString(sum[:])[:8]
}

func TestMapIdent(t *testing.T) {
	for _, n := range []string{"orders", strings.Repeat("x", 63), longA, longB, colX, utfA, utfB, strings.Repeat("é", 40)} {
		got := MapIdent(n, 63)
		if got != wantIdent(n) || len(got) > 63 || !utf8.ValidString(got) {
			t.Errorf("MapIdent(%q) = %q (%d bytes), want %q", n, got, len(got), wantIdent(n))
		}
		if MapIdent(n, 0) != n {
			t.Errorf("MapIdent(%q, 0) changed the name", n)
		}
	}
	// The example of docs/REPLICA.md.
	if got := MapIdent("orders_by_customer_and_region_and_quarter_and_product_category_2024", 63); got != "orders_by_customer_and_region_and_quarter_and_product__0a4244ad" {
		t.Errorf("the documented example maps to %q", got)
	}
	if MapIdent(longA, 63) == MapIdent(longB, 63) || MapIdent(utfA, 63) == MapIdent(utfB, 63) {
		t.Error("names sharing a prefix map alike")
	}
	if got := MapIdent(utfA, 63); !strings.HasSuffix(got[:53], "u") || got[53] != '_' {
		t.Errorf("MapIdent(%q) = %q: not cut before the two-byte character", utfA, got)
	}
}

// longNameTxns writes same-key rows into tables whose names PostgreSQL
// would cut alike, with long column names, in a schema with a long name,
// then updates and deletes through them.
func longNameTxns() []change.Committed {
	return []change.Committed{
		txn(1,
			ins(`"`+longA+`"`, []string{"id"}, row("id", 1, "v", "a1", colX, "ax", colY, "ay")),
			ins(`"`+longB+`"`, []string{"id"}, row("id", 1, "v", "b1", colX, "bx", colY, "by")),
			ins(`"`+utfA+`"`, []string{"id"}, row("id", 1, "v", "u1")),
			ins(`"`+utfB+`"`, []string{"id"}, row("id", 1, "v", "u2")),
			ins(`"`+longSch+`"."`+longA+`"`, []string{"id"}, row("id", 1, utfA, "s1", utfB, "s2")),
		),
		txn(2,
			ins(`"`+longA+`"`, []string{"id"}, row("id", 2, "v", "a2", colX, "ax2", colY, "ay2")),
			ins(`"`+longB+`"`, []string{"id"}, row("id", 2, "v", "b2", colX, "bx2", colY, "by2")),
		),
	}
}

func longNameLater() []change.Committed {
	return []change.Committed{
		txn(3,
			upd(`"`+longA+`"`, row("id", 1), row("id", 1, "v", "a1'", colY, "ay'")),
			del(`"`+longB+`"`, row("id", 2)),
			upd(`"`+longSch+`"."`+longA+`"`, row("id", 1), row("id", 1, utfA, "s1'", utfB, "s2")),
		),
	}
}

func longNameWant() Tables {
	return Tables{
		longA:                 {`{"` + colX + `":"ax","` + colY + `":"ay'","id":"1","v":"a1'"}`, `{"` + colX + `":"ax2","` + colY + `":"ay2","id":"2","v":"a2"}`},
		longB:                 {`{"` + colX + `":"bx","` + colY + `":"by","id":"1","v":"b1"}`},
		utfA:                  {`{"id":"1","v":"u1"}`},
		utfB:                  {`{"id":"1","v":"u2"}`},
		longSch + "." + longA: {`{"id":"1","` + utfA + `":"s1'","` + utfB + `":"s2"}`},
	}
}

func TestLongNamesStayDistinct(t *testing.T) {
	backends(t, func(t *testing.T, url string) {
		a := open(t, url, Options{})
		apply(t, a, longNameTxns()...)
		// A fresh applier reads the shapes (and the names) back from the
		// replica.
		a.Close()
		a = open(t, url, Options{})
		apply(t, a, longNameLater()...)
		if d := Diff(longNameWant(), dump(t, url)); d != "" {
			t.Fatalf("replica differs:\n%s", d)
		}
		if strings.HasPrefix(url, "postgres") {
			got := pgTables(t, url)
			want := []string{
				"public." + wantIdent(longA) + ": " + strings.Join([]string{"id", "v", wantIdent(colX), wantIdent(colY)}, ","),
				"public." + wantIdent(longB) + ": " + strings.Join([]string{"id", "v", wantIdent(colX), wantIdent(colY)}, ","),
				"public." + wantIdent(utfA) + ": id,v",
				"public." + wantIdent(utfB) + ": id,v",
				wantIdent(longSch) + "." + wantIdent(longA) + ": id," + wantIdent(utfA) + "," + wantIdent(utfB),
			}
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("PostgreSQL tables:\n got %q\nwant %q", got, want)
			}
		}
	})
}

// pgTables lists the user tables of a PostgreSQL replica with their
// columns, sorted.
func pgTables(t *testing.T, url string) []string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `
SELECT n.nspname || '.' || c.relname || ': ' || string_agg(a.attname, ',' ORDER BY a.attnum)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND c.relname NOT LIKE 'walship\_%'
GROUP BY n.nspname, c.relname ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestNearCollidingNamesAreRefused: a short source name equal to the
// replica name of a long one is refused with both names, whichever comes
// first and whether or not they come in one Apply, and nothing of the
// refused transaction is written.
func TestNearCollidingNamesAreRefused(t *testing.T) {
	type clash struct {
		name        string
		only        string // the backend where the names clash; on the other both are kept
		first, next change.Change
		kind        string
		a, b        string // the two source names
	}
	short := MapIdent(longA, 63)
	shortCol := MapIdent(colX, 63)
	clashes := []clash{
		{"table, short first", "postgres",
			ins(`"`+short+`"`, []string{"id"}, row("id", 1)), ins(`"`+longA+`"`, []string{"id"}, row("id", 1)),
			"table", tbl(`"` + short + `"`).String(), tbl(`"` + longA + `"`).String()},
		{"table, long first", "postgres",
			ins(`"`+longA+`"`, []string{"id"}, row("id", 1)), ins(`"`+short+`"`, []string{"id"}, row("id", 1)),
			"table", tbl(`"` + longA + `"`).String(), tbl(`"` + short + `"`).String()},
		{"column, short first", "postgres",
			ins("t", []string{"id"}, row("id", 1, shortCol, "s")), ins("t", []string{"id"}, row("id", 2, colX, "l")),
			"column", shortCol, colX},
		{"column, long first", "postgres",
			ins("t", []string{"id"}, row("id", 1, colX, "l")), ins("t", []string{"id"}, row("id", 2, shortCol, "s")),
			"column", colX, shortCol},
		{"schema", "postgres",
			ins(`"`+short+`".t`, []string{"id"}, row("id", 1)), ins(`"`+longA+`".u`, []string{"id"}, row("id", 1)),
			"schema", short, longA},
		{"flattened schema", "sqlite",
			ins(`"a.b"`, []string{"id"}, row("id", 1)), ins(`a.b`, []string{"id"}, row("id", 1)),
			"table", `public."a.b"`, `a.b`},
	}
	for _, c := range clashes {
		t.Run(c.name, func(t *testing.T) {
			backends(t, func(t *testing.T, url string) {
				if !strings.HasPrefix(url, c.only) {
					a := open(t, url, Options{})
					apply(t, a, txn(1, c.first), txn(2, c.next))
					return
				}
				check := func(err error, wantPos uint64, a Applier, want Tables) {
					t.Helper()
					var nc *NameConflictError
					if !errors.As(err, &nc) {
						t.Fatalf("Apply: %v, want a NameConflictError", err)
					}
					if nc.Kind != c.kind || !slices.Equal([]string{nc.Other, nc.Name}, []string{c.a, c.b}) {
						t.Fatalf("conflict %s %q and %q, want %s %q and %q", nc.Kind, nc.Other, nc.Name, c.kind, c.a, c.b)
					}
					if !strings.Contains(err.Error(), c.a) || !strings.Contains(err.Error(), c.b) {
						t.Fatalf("error %q does not name both source names", err)
					}
					if pos, err := a.Position(context.Background()); err != nil || pos != wantPos {
						t.Fatalf("position %d (%v), want %d", pos, err, wantPos)
					}
					if d := Diff(want, dump(t, url)); d != "" {
						t.Fatalf("the refused transaction wrote:\n%s", d)
					}
				}
				// One Apply: refused before anything is written.
				a := open(t, url, Options{})
				check(a.Apply(context.Background(), []change.Committed{txn(1, c.first), txn(2, c.next)}), 0, a, Tables{})
				// The first in the replica already: the second is refused.
				apply(t, a, txn(1, c.first))
				want := dump(t, url)
				a.Close()
				a = open(t, url, Options{})
				check(a.Apply(context.Background(), []change.Committed{txn(2, c.next)}), 1, a, want)
			})
		})
	}
}

func TestFlattenedAmbiguous(t *testing.T) {
	for _, tb := range []change.Table{{Schema: "public", Name: "a.b"}, {Schema: "a.b", Name: "c"}, {Schema: "a", Name: "b.c"}, {Schema: "public", Name: "t"}, {Schema: "s", Name: "t"}} {
		want := sqliteTable(sqliteTableName(tb)) != tb
		if got := flattenedAmbiguous(tb); got != want {
			t.Errorf("flattenedAmbiguous(%s) = %v, want %v", tb, got, want)
		}
	}
}
