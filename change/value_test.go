package change

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

func TestValueJSONRoundTrip(t *testing.T) {
	for _, tc := range sampleValues(t) {
		t.Run(tc.name, func(t *testing.T) {
			out := tc.v.AppendJSON(nil)
			if !json.Valid(out) {
				t.Fatalf("AppendJSON = %s: not valid JSON", out)
			}
			got, err := ParseValue(out)
			if err != nil {
				t.Fatalf("ParseValue(%s): %v", out, err)
			}
			if !got.Equal(tc.v) {
				t.Errorf("ParseValue(%s) = %v (%v), want %v (%v)", out, got, got.Kind(), tc.v, tc.v.Kind())
			}
			// encoding/json sees the same through MarshalJSON/UnmarshalJSON.
			b, err := json.Marshal(struct{ V Value }{tc.v})
			if err != nil {
				t.Fatal(err)
			}
			var back struct{ V Value }
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatalf("json.Unmarshal(%s): %v", b, err)
			}
			if !back.V.Equal(tc.v) {
				t.Errorf("json round trip of %s = %v, want %v", b, back.V, tc.v)
			}
		})
	}
}

func TestValueOutputJSON(t *testing.T) {
	tests := []struct {
		v    Value
		want string
	}{
		{NullValue(), `null`},
		{BoolValue(true), `true`},
		{IntValue(-42), `-42`},
		{FloatValue(1.5), `{"$type":"float","value":1.5}`},
		{FloatValue(math.Copysign(0, -1)), `{"$type":"float","value":-0}`},
		{FloatValue(1e21), `{"$type":"float","value":1e+21}`},
		{FloatValue(math.NaN()), `{"$type":"float","value":"NaN"}`},
		{FloatValue(math.Inf(-1)), `{"$type":"float","value":"-Infinity"}`},
		{mustNumeric(t, "12.30"), `12.30`},
		{mustNumeric(t, "123456789012345678901234567890.000000001"), `123456789012345678901234567890.000000001`},
		{mustNumeric(t, "99999999999999999999"), `99999999999999999999`},
		{mustNumeric(t, "123"), `{"$type":"numeric","value":"123"}`},
		{mustNumeric(t, "-0"), `{"$type":"numeric","value":"-0"}`},
		{mustNumeric(t, "NaN"), `{"$type":"numeric","value":"NaN"}`},
		{TextValue("a\"\\\n\x01\u2028é"), `"a\"\\\n\u0001\u2028é"`},
		{TextValue("bad\xffutf8"), `"bad\ufffdutf8"`},
		{BytesValue([]byte{0, 1, 2}), `{"$type":"bytes","value":"AAEC"}`},
		{BytesValue(nil), `{"$type":"bytes","value":""}`},
		{mustTimestamp(t, "2024-05-01T14:00:00.000000001+02:00"), `{"$type":"timestamp","value":"2024-05-01T12:00:00.000000001Z"}`},
		{mustJSON(t, `{ "b" : 1 , "a" : [ 1 ] }`), `{"b":1,"a":[1]}`},
		{mustJSON(t, `[1]`), `{"$type":"json","value":[1]}`},
		{mustJSON(t, `{"$type":"x"}`), `{"$type":"json","value":{"$type":"x"}}`},
		{mustJSON(t, `{"a":{"$type":"x"}}`), `{"a":{"$type":"x"}}`},
		{ArrayValue(IntValue(1), ArrayValue(TextValue("x")), BytesValue([]byte{0})), `[1,["x"],{"$type":"bytes","value":"AA=="}]`},
		{UnknownValue("tsvector", "'a'"), `{"$type":"unknown","type":"tsvector","value":"'a'"}`},
	}
	for _, tc := range tests {
		if got := string(tc.v.AppendJSON(nil)); got != tc.want {
			t.Errorf("AppendJSON(%v kind) = %s, want %s", tc.v.Kind(), got, tc.want)
		}
	}
}

func TestParseValue(t *testing.T) {
	tests := []struct {
		in   string
		want Value
	}{
		{`null`, NullValue()},
		{` true `, BoolValue(true)},
		{`false`, BoolValue(false)},
		{`1`, IntValue(1)},
		{`-0`, IntValue(0)},
		{`-9223372036854775808`, IntValue(math.MinInt64)},
		{`9223372036854775808`, mustNumeric(t, "9223372036854775808")},
		{`1.0`, mustNumeric(t, "1.0")},
		{`1e5`, mustNumeric(t, "1e5")},
		{`12.30`, mustNumeric(t, "12.30")},
		{`123456789012345678901234567890.000000001`, mustNumeric(t, "123456789012345678901234567890.000000001")},
		{`"x\u00e9\n"`, TextValue("xé\n")},
		{`""`, TextValue("")},
		{`[1, "a", [null]]`, ArrayValue(IntValue(1), TextValue("a"), ArrayValue(NullValue()))},
		{`[]`, ArrayValue()},
		{`{"b":1, "a":2, "b":3}`, mustJSON(t, `{"b":1,"a":2,"b":3}`)},
		{`{"$type":"null"}`, NullValue()},
		{`{"$type":"null","value":null}`, NullValue()},
		{`{"$type":"bool","value":true}`, BoolValue(true)},
		{`{"$type":"int","value":42}`, IntValue(42)},
		{`{"$type":"int","value":"-42"}`, IntValue(-42)},
		{`{"value":1.5,"$type":"float"}`, FloatValue(1.5)},
		{`{"$type":"float","value":1}`, FloatValue(1)},
		{`{"$type":"float","value":"NaN"}`, FloatValue(math.NaN())},
		{`{"$type":"float","value":"Infinity"}`, FloatValue(math.Inf(1))},
		{`{"$type":"float","value":-0}`, FloatValue(math.Copysign(0, -1))},
		{`{"$type":"numeric","value":"12.30"}`, mustNumeric(t, "12.30")},
		{`{"$type":"numeric","value":7}`, mustNumeric(t, "7")},
		{`{"$type":"text","value":"{}"}`, TextValue("{}")},
		{`{"$type":"bytes","value":"AAEC"}`, BytesValue([]byte{0, 1, 2})},
		{`{"$type":"timestamp","value":"2024-05-01T14:00:00.5+02:00"}`, mustTimestamp(t, "2024-05-01T12:00:00.5Z")},
		{`{"$type":"json","value":[1, {"$type":"x"}]}`, mustJSON(t, `[1,{"$type":"x"}]`)},
		{`{"$type":"json","value":"s"}`, mustJSON(t, `"s"`)},
		{`{"$type":"array","value":[1,{"$type":"bytes","value":""}]}`, ArrayValue(IntValue(1), BytesValue(nil))},
		{`{"$type":"unknown","type":"interval","value":"1 day"}`, UnknownValue("interval", "1 day")},
		{`{"\u0024type":"int","value":5}`, IntValue(5)},
		{`{"a":{"$type":"int","value":5}}`, mustJSON(t, `{"a":{"$type":"int","value":5}}`)},
	}
	for _, tc := range tests {
		got, err := ParseValue([]byte(tc.in))
		if err != nil {
			t.Errorf("ParseValue(%s): %v", tc.in, err)
			continue
		}
		if !got.Equal(tc.want) {
			t.Errorf("ParseValue(%s) = %v (%v), want %v (%v)", tc.in, got, got.Kind(), tc.want, tc.want.Kind())
		}
	}
}

func TestParseValueErrors(t *testing.T) {
	deep := strings.Repeat("[", MaxNesting+1) + strings.Repeat("]", MaxNesting+1)
	tests := []struct {
		in, want string
	}{
		{``, `empty input`},
		{`  `, `empty input`},
		{"\"\xff\"", `invalid UTF-8 at offset 1`},
		{`[1,`, `[1]: unexpected end of JSON input`},
		{`{"a":1`, `unexpected end of JSON input`},
		{`"\x"`, `invalid JSON at offset 2: unexpected 'x', expected an escape character`},
		{`"\ud800"`, `invalid JSON at offset 1: lone UTF-16 surrogate \ud800`},
		{`"\udc00x"`, `invalid JSON at offset 1: lone UTF-16 surrogate \udc00`},
		{"\"a\tb\"", `invalid JSON at offset 2: unescaped control character '\t' in a string`},
		{`01`, `unexpected data after the JSON value at offset 1`},
		{`-`, `unexpected end of JSON input`},
		{`1.`, `unexpected end of JSON input`},
		{`1.e5`, `invalid JSON at offset 2: unexpected 'e', expected a digit after '.'`},
		{`nul`, `unexpected end of JSON input`},
		{`[1 2]`, `invalid JSON at offset 3: unexpected '2', expected ',' or ']'`},
		{`{"a" 1}`, `invalid JSON at offset 5: unexpected '1', expected ':'`},
		{`{"a":{"b":1 "c":2}}`, `invalid JSON at offset 12: unexpected '"', expected ',' or '}'`},
		{`1 2`, `unexpected data after the JSON value at offset 2`},
		{`[1,]`, `[1]: invalid JSON at offset 3: unexpected ']', expected a value`},
		{`{"$type":"nope"}`, `unknown $type "nope" (want one of null, bool, int, float, numeric, text, bytes, timestamp, json, array, unknown)`},
		{`{"$type":1}`, `$type must be a string`},
		{`{"$type":"bytes"}`, `$type "bytes": missing "value"`},
		{`{"$type":"bytes","value":"!!"}`, `value: $type "bytes": invalid base64: illegal base64 data at input byte 0`},
		{`{"$type":"bytes","value":"AA"}`, `value: $type "bytes": invalid base64: illegal base64 data at input byte 0`},
		{`{"$type":"bytes","value":5}`, `value: $type "bytes": expected a base64 string`},
		{`{"$type":"int","value":1.5}`, `value: $type "int": expected an integer in the int64 range`},
		{`{"$type":"int","value":9223372036854775808}`, `value: $type "int": expected an integer in the int64 range`},
		{`{"$type":"float","value":1e400}`, `value: $type "float": 1e400 is out of the float64 range`},
		{`{"$type":"float","value":"nan"}`, `value: $type "float": expected a number or "NaN", "Infinity", "-Infinity"`},
		{`{"$type":"numeric","value":"1,5"}`, `value: $type "numeric": invalid numeric "1,5"`},
		{`{"$type":"numeric","value":"01"}`, `value: $type "numeric": invalid numeric "01"`},
		{`{"$type":"timestamp","value":"yesterday"}`, `value: $type "timestamp": invalid RFC 3339 time "yesterday"`},
		{`{"$type":"timestamp","value":"2024-05-01 12:00:00"}`, `value: $type "timestamp": invalid RFC 3339 time "2024-05-01 12:00:00"`},
		{`{"$type":"bool","value":"true"}`, `value: $type "bool": expected true or false`},
		{`{"$type":"text","value":1}`, `value: $type "text": expected a string`},
		{`{"$type":"array","value":{}}`, `value: $type "array": expected an array`},
		{`{"$type":"array","value":[1,{"$type":"int","value":"x"}]}`, `value[1].value: $type "int": expected an integer in the int64 range`},
		{`{"$type":"null","value":1}`, `$type "null": "value" must be null or absent`},
		{`{"$type":"text","value":"x","extra":1}`, `unknown field "extra" in $type object`},
		{`{"$type":"text","value":"x","value":"y"}`, `duplicate field "value" in $type object`},
		{`{"$type":"unknown","value":"x"}`, `$type "unknown": missing or empty "type" (the source type name)`},
		{`{"$type":"int","type":"int8","value":1}`, `field "type" not allowed with $type "int"`},
		{`[1,[2,{"$type":"x"}]]`, `[1][1]: unknown $type "x" (want one of null, bool, int, float, numeric, text, bytes, timestamp, json, array, unknown)`},
		{deep, strings.Repeat("[0]", MaxNesting) + `: arrays nested more than 64 deep`},
	}
	for _, tc := range tests {
		_, err := ParseValue([]byte(tc.in))
		if err == nil {
			t.Errorf("ParseValue(%s): no error, want %q", tc.in, tc.want)
			continue
		}
		if got := err.Error(); got != tc.want {
			t.Errorf("ParseValue(%s) error:\n got %q\nwant %q", tc.in, got, tc.want)
		}
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseValue(%s) error %v is not ErrInvalid", tc.in, err)
		}
	}
}

func TestValueConstructors(t *testing.T) {
	for _, s := range []string{"", "1.", ".5", "+1", "1e", "1e+", "0x10", "1_000", "nan", "inf", " 1", "--1", "00"} {
		if _, err := NumericValue(s); !errors.Is(err, ErrInvalid) {
			t.Errorf("NumericValue(%q) error = %v, want ErrInvalid", s, err)
		}
	}
	for _, s := range []string{"0", "-0", "1.5", "1E+10", "-0.0e-0", "NaN", "Infinity", "-Infinity"} {
		if _, err := NumericValue(s); err != nil {
			t.Errorf("NumericValue(%q): %v", s, err)
		}
	}
	for _, tm := range []time.Time{
		time.Date(-1, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
	} {
		if _, err := TimestampValue(tm); !errors.Is(err, ErrInvalid) {
			t.Errorf("TimestampValue(%v) error = %v, want ErrInvalid", tm, err)
		}
	}
	loc := time.FixedZone("X", 3600)
	v, err := TimestampValue(time.Date(2024, 1, 1, 1, 0, 0, 7, loc))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := v.Timestamp(); got.Location() != time.UTC || !got.Equal(time.Date(2024, 1, 1, 0, 0, 0, 7, time.UTC)) {
		t.Errorf("Timestamp() = %v, want 2024-01-01T00:00:00.000000007Z", got)
	}
	for _, s := range []string{``, `{`, `{"a":}`, "\"\xff\"", `"\ud800"`, `1 2`, `[1,]`} {
		if _, err := JSONValue([]byte(s)); !errors.Is(err, ErrInvalid) {
			t.Errorf("JSONValue(%q) error = %v, want ErrInvalid", s, err)
		}
	}
	b := []byte{1, 2}
	bv := BytesValue(b)
	b[0] = 9
	if got, _ := bv.Bytes(); got[0] != 1 {
		t.Errorf("BytesValue does not copy its argument")
	}
}

func TestValueEqual(t *testing.T) {
	nan1 := math.Float64frombits(0x7ff8000000000001)
	nan2 := math.Float64frombits(0xfff0000000000042)
	tests := []struct {
		a, b Value
		want bool
	}{
		{FloatValue(nan1), FloatValue(nan2), true},
		{FloatValue(0), FloatValue(math.Copysign(0, -1)), false},
		{mustNumeric(t, "1.0"), mustNumeric(t, "1"), false},
		{mustNumeric(t, "1"), IntValue(1), false},
		{TextValue(""), NullValue(), false},
		{TextValue("a"), BytesValue([]byte("a")), false},
		{ArrayValue(), ArrayValue(NullValue()), false},
		{ArrayValue(IntValue(1)), ArrayValue(IntValue(1)), true},
		{mustJSON(t, `{"a": 1}`), mustJSON(t, `{"a":1}`), true},
		{mustJSON(t, `{"a":1.0}`), mustJSON(t, `{"a":1}`), false},
		{mustTimestamp(t, "2024-01-01T01:00:00+01:00"), mustTimestamp(t, "2024-01-01T00:00:00Z"), true},
		{UnknownValue("a", "x"), UnknownValue("b", "x"), false},
		{Value{}, NullValue(), true},
	}
	for i, tc := range tests {
		if got := tc.a.Equal(tc.b); got != tc.want {
			t.Errorf("%d: %v.Equal(%v) = %v, want %v", i, tc.a, tc.b, got, tc.want)
		}
	}
}

func TestValueAccessors(t *testing.T) {
	if _, ok := IntValue(1).Text(); ok {
		t.Error("Int.Text() ok")
	}
	if i, ok := IntValue(-3).Int(); !ok || i != -3 {
		t.Errorf("Int() = %d, %v", i, ok)
	}
	if f, ok := FloatValue(2.5).Float(); !ok || f != 2.5 {
		t.Errorf("Float() = %v, %v", f, ok)
	}
	if b, ok := BoolValue(true).Bool(); !ok || !b {
		t.Errorf("Bool() = %v, %v", b, ok)
	}
	if s, ok := mustNumeric(t, "1.50").Numeric(); !ok || s != "1.50" {
		t.Errorf("Numeric() = %q, %v", s, ok)
	}
	if j, ok := mustJSON(t, `[ 1 ]`).JSON(); !ok || string(j) != "[1]" {
		t.Errorf("JSON() = %s, %v", j, ok)
	}
	if a, ok := ArrayValue(IntValue(1)).Array(); !ok || len(a) != 1 {
		t.Errorf("Array() = %v, %v", a, ok)
	}
	if typ, text, ok := UnknownValue("money", "$1.00").Unknown(); !ok || typ != "money" || text != "$1.00" {
		t.Errorf("Unknown() = %q, %q, %v", typ, text, ok)
	}
	if !NullValue().IsNull() || IntValue(0).IsNull() {
		t.Error("IsNull wrong")
	}
	if got := KindTimestamp.String(); got != "timestamp" {
		t.Errorf("KindTimestamp.String() = %q", got)
	}
}

func TestValueAppendJSONAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under the race detector")
	}
	vals := sampleValues(t)
	buf := make([]byte, 0, 1<<20)
	allocs := testing.AllocsPerRun(20, func() {
		buf = buf[:0]
		for _, nv := range vals {
			buf = nv.v.AppendJSON(buf)
		}
	})
	if allocs != 0 {
		t.Errorf("AppendJSON allocates %v times per run, want 0", allocs)
	}
}
