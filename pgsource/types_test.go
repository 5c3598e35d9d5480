package pgsource

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/walship/walship/change"
	"github.com/walship/walship/internal/pgtest"
)

func mustTS(s string) change.Value {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	v, err := change.TimestampValue(t)
	if err != nil {
		panic(err)
	}
	return v
}

func mustNum(s string) change.Value {
	v, err := change.NumericValue(s)
	if err != nil {
		panic(err)
	}
	return v
}

func mustJSON(s string) change.Value {
	v, err := change.JSONValue([]byte(s))
	if err != nil {
		panic(err)
	}
	return v
}

const allTypesDDL = `CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE DOMAIN posint AS int4 CHECK (VALUE > 0);
CREATE TABLE alltypes (id int8 PRIMARY KEY, i2 int2, i4 int4, pi posint, n numeric, n2 numeric(10,2), f8 float8, f4 float4,
  t text, vc varchar(10), ch char(3), b bool, by bytea, ts timestamp, tstz timestamptz, d date, tm time, iv interval,
  u uuid, j json, jb jsonb, ai int4[], at text[], ai2 int4[][], m mood, am mood[], x inet, nul text, tsinf timestamp)`

const allTypesValues = `(%d, -32768, 2147483647, 7, 12345678901234567890.123456789012345, -0.50, 0.1, 1.5,
  E'tab\there\nnew "q" \'s\' back\\slash é', 'abc', 'ab', true, '\x00ff7f', '2024-02-29 12:34:56.789012',
  '2024-02-29 12:34:56.789012+05:30', '1999-12-31', '13:45:00.5', '1 year 2 mons 3 days 04:05:06',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"b": [1, 2.50], "a": null}', '{"b": 1, "a": "x"}',
  '{1,NULL,3}', '{"a,b","c\"d",NULL,""}', '{{1,2},{3,4}}', 'happy', '{sad,happy}', '192.168.0.1/24', NULL, 'infinity')`

func wantAllTypes(id int64) change.Row {
	return change.Row{
		{Name: "id", Value: change.IntValue(id)},
		{Name: "i2", Value: change.IntValue(-32768)},
		{Name: "i4", Value: change.IntValue(math.MaxInt32)},
		{Name: "pi", Value: change.IntValue(7)},
		{Name: "n", Value: mustNum("12345678901234567890.123456789012345")},
		{Name: "n2", Value: mustNum("-0.50")},
		{Name: "f8", Value: change.FloatValue(0.1)},
		{Name: "f4", Value: change.FloatValue(1.5)},
		{Name: "t", Value: change.TextValue("tab\there\nnew \"q\" 's' back\\slash é")},
		{Name: "vc", Value: change.TextValue("abc")},
		{Name: "ch", Value: change.TextValue("ab ")},
		{Name: "b", Value: change.BoolValue(true)},
		{Name: "by", Value: change.BytesValue([]byte{0, 0xff, 0x7f})},
		{Name: "ts", Value: mustTS("2024-02-29T12:34:56.789012Z")},
		{Name: "tstz", Value: mustTS("2024-02-29T07:04:56.789012Z")},
		{Name: "d", Value: mustTS("1999-12-31T00:00:00Z")},
		{Name: "tm", Value: change.TextValue("13:45:00.5")},
		{Name: "iv", Value: change.TextValue("1 year 2 mons 3 days 04:05:06")},
		{Name: "u", Value: change.TextValue("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")},
		{Name: "j", Value: mustJSON(`{"b": [1, 2.50], "a": null}`)},
		{Name: "jb", Value: mustJSON(`{"a": "x", "b": 1}`)},
		{Name: "ai", Value: change.ArrayValue(change.IntValue(1), change.NullValue(), change.IntValue(3))},
		{Name: "at", Value: change.ArrayValue(change.TextValue("a,b"), change.TextValue(`c"d`), change.NullValue(), change.TextValue(""))},
		{Name: "ai2", Value: change.ArrayValue(change.ArrayValue(change.IntValue(1), change.IntValue(2)),
			change.ArrayValue(change.IntValue(3), change.IntValue(4)))},
		{Name: "m", Value: change.TextValue("happy")},
		{Name: "am", Value: change.ArrayValue(change.TextValue("sad"), change.TextValue("happy"))},
		{Name: "x", Value: change.TextValue("192.168.0.1/24")},
		{Name: "nul", Value: change.NullValue()},
		{Name: "tsinf", Value: change.UnknownValue("timestamp", "infinity")},
	}
}

var wantAllTypesTypes = []change.ColumnType{{Name: "id", Type: "int8"}, {Name: "i2", Type: "int2"}, {Name: "i4", Type: "int4"}, {Name: "pi", Type: "posint"},
	{Name: "n", Type: "numeric"}, {Name: "n2", Type: "numeric"}, {Name: "f8", Type: "float8"}, {Name: "f4", Type: "float4"}, {Name: "t", Type: "text"}, {Name: "vc", Type: "varchar"},
	{Name: "ch", Type: "bpchar"}, {Name: "b", Type: "bool"}, {Name: "by", Type: "bytea"}, {Name: "ts", Type: "timestamp"}, {Name: "tstz", Type: "timestamptz"}, {Name: "d", Type: "date"},
	{Name: "tm", Type: "time"}, {Name: "iv", Type: "interval"}, {Name: "u", Type: "uuid"}, {Name: "j", Type: "json"}, {Name: "jb", Type: "jsonb"}, {Name: "ai", Type: "int4[]"},
	{Name: "at", Type: "text[]"}, {Name: "ai2", Type: "int4[]"}, {Name: "m", Type: "mood"}, {Name: "am", Type: "mood[]"}, {Name: "x", Type: "inet"}, {Name: "nul", Type: "text"},
	{Name: "tsinf", Type: "timestamp"}}

// TestTypeMappingSnapshotAndStream checks every mapped type, value by
// value, through both paths: the snapshot (COPY) and the stream (pgoutput).
func TestTypeMappingSnapshotAndStream(t *testing.T) {
	e := newEnv(t, pgtest.WithoutFsync())
	e.exec(allTypesDDL, "INSERT INTO alltypes VALUES "+strings.Replace(allTypesValues, "%d", "1", 1))
	r := e.run(testConfig(e.dsn))
	e.waitSlot("walship")
	e.exec("INSERT INTO alltypes VALUES " + strings.Replace(allTypesValues, "%d", "2", 1))
	e.catchUp(r, 30*time.Second)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	txns := readLog(t, e.w)
	var got []change.Change
	for _, txn := range txns {
		got = append(got, txn.Changes...)
	}
	if len(got) != 2 {
		t.Fatalf("log has %d changes, want 2: %+v", len(got), got)
	}
	for i, c := range got {
		wantOp := []change.Op{change.Read, change.Insert}[i]
		if c.Op != wantOp || c.Table.String() != "public.alltypes" {
			t.Errorf("change %d: %c on %s, want %c on public.alltypes", i, c.Op, c.Table, wantOp)
		}
		want := wantAllTypes(int64(i + 1))
		if len(c.After) != len(want) {
			t.Fatalf("change %d: %d columns, want %d: %v", i, len(c.After), len(want), c.After)
		}
		for j, col := range want {
			if c.After[j].Name != col.Name || !c.After[j].Value.Equal(col.Value) {
				t.Errorf("change %d (%c) column %s: got %s=%s, want %s", i, c.Op, col.Name, c.After[j].Name, c.After[j].Value, col.Value)
			}
		}
		for j, ct := range wantAllTypesTypes {
			if j >= len(c.Types) || c.Types[j] != ct {
				t.Errorf("change %d: Types[%d] = %v, want %v", i, j, c.Types[j:j+1], ct)
			}
		}
		if !c.Key.Equal(change.Row{{Name: "id", Value: change.IntValue(int64(i + 1))}}) {
			t.Errorf("change %d: key %v", i, c.Key)
		}
	}
	if h := txns[len(txns)-1].Header; h.XID == 0 || h.SourceLSN == 0 || h.SourceCommitTime.IsZero() || h.Origin != "pg/walship" {
		t.Errorf("streamed txn header %+v: want xid, source LSN, commit time and origin pg/walship", h)
	}
}

func TestDecodeTextEdgeCases(t *testing.T) {
	text := &typeInfo{name: "text", kind: kText}
	for _, tc := range []struct {
		ti   *typeInfo
		in   string
		want change.Value
	}{
		{&typeInfo{name: "float8", kind: kFloat}, "NaN", change.FloatValue(math.NaN())},
		{&typeInfo{name: "float8", kind: kFloat}, "-Infinity", change.FloatValue(math.Inf(-1))},
		{&typeInfo{name: "numeric", kind: kNumeric}, "NaN", mustNum("NaN")},
		{&typeInfo{name: "timestamptz", kind: kTimestamptz}, "2024-01-01 00:00:00+00", mustTS("2024-01-01T00:00:00Z")},
		{&typeInfo{name: "timestamptz", kind: kTimestamptz}, "2024-01-01 00:00:00-03:30", mustTS("2024-01-01T03:30:00Z")},
		{&typeInfo{name: "timestamptz", kind: kTimestamptz}, "0044-03-15 00:00:00+00 BC", change.UnknownValue("timestamptz", "0044-03-15 00:00:00+00 BC")},
		{&typeInfo{name: "date", kind: kDate}, "infinity", change.UnknownValue("date", "infinity")},
		{&typeInfo{name: "bytea", kind: kBytea}, `\x`, change.BytesValue(nil)},
		{&typeInfo{name: "text[]", kind: kArray, elem: text, delim: ','}, `{}`, change.ArrayValue()},
		{&typeInfo{name: "text[]", kind: kArray, elem: text, delim: ','}, `[0:1]={a,b}`, change.UnknownValue("text[]", `[0:1]={a,b}`)},
		{&typeInfo{name: "text[]", kind: kArray, elem: text, delim: ','}, `{"a\\b", x y }`, change.ArrayValue(change.TextValue(`a\b`), change.TextValue("x y"))},
		{&typeInfo{name: "point", kind: kUnknown}, "(1,2)", change.UnknownValue("point", "(1,2)")},
	} {
		if got := decodeText(tc.ti, tc.in); !got.Equal(tc.want) {
			t.Errorf("decodeText(%s, %q) = %s, want %s", tc.ti.name, tc.in, got, tc.want)
		}
	}
	for in, want := range map[string]string{`a\tb`: "a\tb", `\\`: `\`, `\101\x41\n`: "AA\n", `plain`: "plain", `x\`: `x\`} {
		if got := unescapeCopy([]byte(in)); got != want {
			t.Errorf("unescapeCopy(%q) = %q, want %q", in, got, want)
		}
	}
}
