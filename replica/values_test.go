package replica

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/walship/walship/change"
)

// The source table of the value tests, with one column per type family,
// and the changes a capture of its rows produces (values as the Postgres
// source maps them: walship-modelled kinds, the rest as Unknown text).
const valuesSourceDDL = `
CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE DOMAIN posint AS int4 CHECK (VALUE > 0);
CREATE SCHEMA app;
CREATE TABLE app.vals (
	id int4 PRIMARY KEY, i2 int2, i8 int8, f8 float8, f4 float4, n numeric, n2 numeric(10,2),
	t text, vc varchar(10), b bool, by bytea, ts timestamptz, tsn timestamp, d date, tm time,
	iv interval, u uuid, j json, jb jsonb, ai int4[], at text[], an numeric[], ats timestamptz[],
	ab bytea[], e mood, ad date[], dm posint);
INSERT INTO app.vals VALUES
 (1, -32768, 9223372036854775807, 1.5, 0.1, '1.50', 12.30,
  E'h\u00e9llo "q" ,{}\\ \t', 'abc', true, '\x0001ff', '2024-02-29 12:34:56.123456+00', '2024-01-02 03:04:05.5', '2024-01-02', '13:14:15.5',
  '1 day 02:03:04', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"b":1, "a":[1,2]}', '{"a":1,"b":"x"}', '{1,NULL,3}', '{"a b","NULL","x\"y",NULL}', '{1.50,2}', '{"2024-02-29 12:34:56.123456+00"}',
  '{"\\x00ff"}', 'happy', '{2024-01-02,NULL}', 7),
 (2, NULL, NULL, 'NaN', '-Infinity', 'NaN', NULL, '', NULL, false, '\x', 'infinity', NULL, NULL, NULL,
  NULL, NULL, NULL, 'null', '{}', '{}', NULL, NULL, NULL, NULL, NULL, NULL),
 (3, 0, -1, 1e300, 'Infinity', '123456789012345678901234567890.000000001', -0.5, 'NULL', '', NULL, NULL, '0001-01-01 00:00:00+00', '9999-12-31 23:59:59.999999', NULL, NULL,
  NULL, NULL, '[]', '[1.0, {"z":null}]', '{{1,2},{3,4}}', NULL, '{-0.5}', NULL, NULL, 'sad', '{}', 1);`

var valuesTypes = types(
	"id", "int4", "i2", "int2", "i8", "int8", "f8", "float8", "f4", "float4", "n", "numeric", "n2", "numeric", "t", "text", "vc", "varchar", "b", "bool", "by", "bytea", "ts", "timestamptz", "tsn", "timestamp", "d", "date", "tm", "time", "iv", "interval", "u", "uuid", "j", "json", "jb", "jsonb", "ai", "int4[]", "at", "text[]", "an", "numeric[]", "ats", "timestamptz[]", "ab", "bytea[]", "e", "mood", "ad", "date[]", "dm", "posint",
)

// types builds column types from name, type pairs.
func types(nt ...string) []change.ColumnType {
	var out []change.ColumnType
	for i := 0; i < len(nt); i += 2 {
		out = append(out, change.ColumnType{Name: nt[i], Type: nt[i+1]})
	}
	return out
}

func num(s string) change.Value      { return mustVal(change.NumericValue(s)) }
func ts(t time.Time) change.Value    { return mustVal(change.TimestampValue(t)) }
func js(s string) change.Value       { return mustVal(change.JSONValue([]byte(s))) }
func unk(typ, s string) change.Value { return change.UnknownValue(typ, s) }

var null = change.NullValue()

func valuesChanges() []change.Change {
	arr := change.ArrayValue
	i := func(n int64) change.Value { return change.IntValue(n) }
	f := change.FloatValue
	txt := change.TextValue
	tsA := time.Date(2024, 2, 29, 12, 34, 56, 123456000, time.UTC)
	rows := []change.Row{
		row("id", 1, "i2", i(-32768), "i8", i(math.MaxInt64), "f8", f(1.5), "f4", f(0.1), "n", num("1.50"), "n2", num("12.30"),
			"t", txt("h\u00e9llo \"q\" ,{}\\ \t"), "vc", txt("abc"), "b", true, "by", change.BytesValue([]byte{0, 1, 255}),
			"ts", ts(tsA), "tsn", ts(time.Date(2024, 1, 2, 3, 4, 5, 500000000, time.UTC)), "d", ts(time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC)), "tm", unk("time", "13:14:15.5"),
			"iv", unk("interval", "1 day 02:03:04"), "u", unk("uuid", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"), "j", js(`{"b":1, "a":[1,2]}`), "jb", js(`{"a": 1, "b": "x"}`),
			"ai", arr(i(1), null, i(3)), "at", arr(txt("a b"), txt("NULL"), txt(`x"y`), null), "an", arr(num("1.50"), num("2")), "ats", arr(ts(tsA)),
			"ab", arr(change.BytesValue([]byte{0, 255})), "e", txt("happy"),
			"ad", arr(ts(time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC)), null), "dm", i(7)),
		row("id", 2, "i2", nil, "i8", nil, "f8", f(math.NaN()), "f4", f(math.Inf(-1)), "n", num("NaN"), "n2", nil,
			"t", txt(""), "vc", nil, "b", false, "by", change.BytesValue(nil), "ts", unk("timestamptz", "infinity"), "tsn", nil, "d", nil, "tm", nil,
			"iv", nil, "u", nil, "j", nil, "jb", js("null"), "ai", arr(), "at", arr(), "an", nil, "ats", nil, "ab", nil, "e", nil, "ad", nil, "dm", nil),
		row("id", 3, "i2", i(0), "i8", i(-1), "f8", f(1e300), "f4", f(math.Inf(1)), "n", num("123456789012345678901234567890.000000001"), "n2", num("-0.50"),
			"t", txt("NULL"), "vc", txt(""), "b", nil, "by", nil, "ts", ts(time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)),
			"tsn", ts(time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC)), "d", nil, "tm", nil,
			"iv", nil, "u", nil, "j", js("[]"), "jb", js(`[1.0, {"z": null}]`), "ai", arr(arr(i(1), i(2)), arr(i(3), i(4))), "at", nil,
			"an", arr(num("-0.5")), "ats", nil, "ab", nil, "e", txt("sad"), "ad", arr(), "dm", i(1)),
	}
	var out []change.Change
	for _, r := range rows {
		out = append(out, change.Change{Table: tbl("app.vals"), Op: change.Insert, Key: r[:1], After: r, Types: valuesTypes})
	}
	return out
}

// TestValuesExact applies every value kind to both replicas and checks
// that their dumps equal the dump of a Postgres source holding the same
// rows: values are kept exactly and Dump canonicalises them alike.
func TestValuesExact(t *testing.T) {
	ctx := context.Background()
	src := pgURL(t)
	conn, err := connectPostgres(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, valuesSourceDDL); err != nil {
		t.Fatalf("source: %v", err)
	}
	conn.Close(ctx)
	want := dump(t, src)
	if len(want["app.vals"]) != 3 {
		t.Fatalf("source dump: %v", want)
	}
	backends(t, func(t *testing.T, url string) {
		a := open(t, url, Options{})
		apply(t, a, txn(1, valuesChanges()...))
		d, err := Compare(context.Background(), src, url)
		if err != nil {
			t.Fatal(err)
		}
		if d != "" {
			t.Errorf("replica differs from the source:\n%s", d)
		}
	})
	t.Logf("source rows:\n%s\n%s\n%s", want["app.vals"][0], want["app.vals"][1], want["app.vals"][2])
}
