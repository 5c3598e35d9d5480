package change

import (
	"flag"
	"math"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func mustNumeric(t testing.TB, s string) Value {
	t.Helper()
	v, err := NumericValue(s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func mustTimestamp(t testing.TB, s string) Value {
	t.Helper()
	tm, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatal(err)
	}
	v, err := TimestampValue(tm)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func mustJSON(t testing.TB, s string) Value {
	t.Helper()
	v, err := JSONValue([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// bigJSON returns a large JSON object with nesting, escapes and unicode.
func bigJSON() string {
	var b strings.Builder
	b.WriteString(`{"items":[`)
	for i := 0; i < 2000; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"id":`)
		b.WriteString(strings.Repeat("9", i%30+1))
		b.WriteString(`,"name":"n\u00e9\"\\ 世界","tags":["a","b",{"deep":[1.5e10,-0,null,true]}]}`)
	}
	b.WriteString(`],"$not_type":1,"dup":1,"dup":2}`)
	return b.String()
}

type namedValue struct {
	name string
	v    Value
}

// sampleValues has at least one value of every kind, with the edge cases.
func sampleValues(t testing.TB) []namedValue {
	allBytes := make([]byte, 256)
	for i := range allBytes {
		allBytes[i] = byte(i)
	}
	return []namedValue{
		{"null", NullValue()},
		{"true", BoolValue(true)},
		{"false", BoolValue(false)},
		{"int0", IntValue(0)},
		{"int-1", IntValue(-1)},
		{"intmax", IntValue(math.MaxInt64)},
		{"intmin", IntValue(math.MinInt64)},
		{"float1.5", FloatValue(1.5)},
		{"float-0", FloatValue(math.Copysign(0, -1))},
		{"float+0", FloatValue(0)},
		{"floatNaN", FloatValue(math.NaN())},
		{"float+Inf", FloatValue(math.Inf(1))},
		{"float-Inf", FloatValue(math.Inf(-1))},
		{"floatTiny", FloatValue(5e-324)},
		{"floatBig", FloatValue(1e300)},
		{"float0.1", FloatValue(0.1)},
		{"numericBig", mustNumeric(t, "123456789012345678901234567890.000000001")},
		{"numeric12.30", mustNumeric(t, "12.30")},
		{"numeric-0", mustNumeric(t, "-0")},
		{"numericInt", mustNumeric(t, "123")},
		{"numericExp", mustNumeric(t, "1e-7")},
		{"numericNaN", mustNumeric(t, "NaN")},
		{"numericInf", mustNumeric(t, "Infinity")},
		{"numeric-Inf", mustNumeric(t, "-Infinity")},
		{"numericHuge", mustNumeric(t, "99999999999999999999")},
		{"textEmpty", TextValue("")},
		{"textUnicode", TextValue("héllo 世界 🎉")},
		{"textEscapes", TextValue("q\"b\\n\n\t\r\x00\x1f\x7f\u2028\u2029</script>")},
		{"bytesEmpty", BytesValue(nil)},
		{"bytesZeros", BytesValue([]byte{0, 0, 0})},
		{"bytesAll", BytesValue(allBytes)},
		{"tsEpoch", mustTimestamp(t, "1970-01-01T00:00:00Z")},
		{"tsNano", mustTimestamp(t, "2024-05-01T12:00:00.000000001Z")},
		{"tsOffset", mustTimestamp(t, "2024-05-01T14:00:00.5+02:00")},
		{"tsYear0", mustTimestamp(t, "0000-01-01T00:00:00Z")},
		{"tsYear9999", mustTimestamp(t, "9999-12-31T23:59:59.999999999Z")},
		{"tsPre1970", mustTimestamp(t, "1900-02-28T23:59:59.25Z")},
		{"jsonObject", mustJSON(t, `{"b":1, "a":[1, 2.50, "x"]}`)},
		{"jsonArray", mustJSON(t, `[1,2]`)},
		{"jsonString", mustJSON(t, `"s"`)},
		{"jsonNull", mustJSON(t, `null`)},
		{"jsonNumber", mustJSON(t, `1.0e3`)},
		{"jsonTypeKey", mustJSON(t, `{"$type":"bytes","value":"AAE="}`)},
		{"jsonEscapedTypeKey", mustJSON(t, `{"\u0024type":"int"}`)},
		{"jsonBig", mustJSON(t, bigJSON())},
		{"arrayEmpty", ArrayValue()},
		{"arrayNested", ArrayValue(IntValue(1), ArrayValue(IntValue(2), ArrayValue(IntValue(3), ArrayValue())))},
		{"arrayMixed", ArrayValue(NullValue(), TextValue("x"), BytesValue([]byte{0}), mustJSON(t, `{"k":"v"}`), FloatValue(math.NaN()), mustNumeric(t, "1.10"))},
		{"unknown", UnknownValue("tsvector", "'a':1 'b':2")},
		{"unknownEmptyText", UnknownValue("interval", "")},
	}
}

type sample struct {
	name string
	hdr  *TxHeader
	c    Change
}

// sampleChanges covers every op, every optional part and every value kind.
func sampleChanges(t testing.TB) []sample {
	var all Row
	for _, nv := range sampleValues(t) {
		all = append(all, Column{Name: nv.name, Value: nv.v})
	}
	pub := Table{Schema: "public", Name: "t"}
	ct := time.Date(2024, 5, 1, 12, 0, 0, 123456789, time.UTC)
	return []sample{
		{"insert-minimal", nil, Change{Table: pub, Op: Insert, After: Row{{"id", IntValue(1)}}}},
		{"insert-header", &TxHeader{XID: 42}, Change{Table: pub, Op: Insert, Key: Row{{"id", IntValue(1)}}, After: Row{{"id", IntValue(1)}, {"v", TextValue("x")}}}},
		{"insert-all-kinds", &TxHeader{XID: 1<<64 - 1, SourceLSN: 0x16B374D848, SourceCommitTime: ct, Origin: "app-1"}, Change{
			Table: Table{Schema: "my schema", Name: `T."x"`}, Op: Insert, Key: Row{{"intmax", IntValue(math.MaxInt64)}}, After: all,
			Types: []ColumnType{{"intmax", "int8"}, {"textUnicode", "text"}, {"unknown", "tsvector"}},
		}},
		{"update", nil, Change{Table: pub, Op: Update, Key: Row{{"id", IntValue(1)}}, Before: Row{{"id", IntValue(1)}, {"v", TextValue("x")}}, After: Row{{"id", IntValue(1)}, {"v", NullValue()}}}},
		{"update-empty-rows", nil, Change{Table: Table{"s", "zero_columns"}, Op: Update, Before: Row{}, After: Row{}}},
		{"delete-key", nil, Change{Table: pub, Op: Delete, Key: Row{{"id", IntValue(-7)}}}},
		{"delete-before", &TxHeader{XID: 9, SourceLSN: 1}, Change{Table: pub, Op: Delete, Before: Row{{"id", IntValue(7)}, {"ts", mustTimestamp(t, "2000-01-01T00:00:00Z")}}}},
		{"truncate", nil, Change{Table: Table{"audit", "log"}, Op: Truncate}},
		{"read", nil, Change{Table: pub, Op: Read, After: Row{{"id", IntValue(3)}, {"n", mustNumeric(t, "3.14159265358979323846264338327950288")}}}},
		{"message-text", &TxHeader{XID: 3, SourceCommitTime: time.Date(1999, 12, 31, 23, 59, 59, 0, time.UTC)}, Change{Op: Message, Message: &LogicalMessage{Prefix: "walship", Content: []byte("hello"), Transactional: true}}},
		{"message-binary", nil, Change{Op: Message, Table: pub, Message: &LogicalMessage{Prefix: "", Content: []byte{0xff, 0, 1}}}},
		{"message-empty", nil, Change{Op: Message, Message: &LogicalMessage{Prefix: "p"}}},
		{"unicode-names", nil, Change{Table: Table{"схема", "таблица"}, Op: Insert, After: Row{{"имя", TextValue("значение")}, {"a b", IntValue(1)}, {`q"`, IntValue(2)}}}},
		{"truncate-options", nil, Change{Table: Table{"audit", "log"}, Op: Truncate, TruncateOpts: TruncateCascade | TruncateRestartIdentity}},
	}
}
