package kafkawire

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/walship/walship/change"
	"github.com/walship/walship/kafkasink/kafkatest"
)

func mustV(v change.Value, err error) change.Value {
	if err != nil {
		panic(err)
	}
	return v
}

// record encodes change i of txn as the sink does, in format f.
func record(enc *Encoder, txn *change.Committed, i int) *kgo.Record {
	key, ok := enc.AppendKey(nil, &txn.Changes[i])
	if !ok {
		key = nil
	}
	return &kgo.Record{Key: key, Value: enc.AppendValue(nil, Position{Txn: txn, Index: i, TableOrdinal: 1}),
		Headers: []kgo.RecordHeader{
			{Key: HeaderLSN, Value: []byte(itoa(txn.FirstLSN + uint64(i)))},
			{Key: HeaderCommitLSN, Value: []byte(itoa(txn.CommitLSN))},
			{Key: HeaderTxnFirstLSN, Value: []byte(itoa(txn.FirstLSN))},
		}}
}

// TestSchemasGoldenPerType pins, for each column type, the field schema
// of the value's struct and the value's payload in the json-schemas
// format, and decodes the record back to the same change.
func TestSchemasGoldenPerType(t *testing.T) {
	ts := time.Date(2024, 5, 6, 7, 8, 9, 123456000, time.UTC)
	for _, tc := range []struct {
		typ          string
		v            change.Value
		schema, want string
	}{
		{"int2", change.IntValue(-7), `{"type":"int16","optional":true,"field":"c"}`, `-7`},
		{"int4", change.IntValue(1 << 30), `{"type":"int32","optional":true,"field":"c"}`, `1073741824`},
		{"int8", change.IntValue(1 << 40), `{"type":"int64","optional":true,"field":"c"}`, `1099511627776`},
		{"float4", change.FloatValue(0.5), `{"type":"float32","optional":true,"field":"c"}`, `0.5`},
		{"float8", change.FloatValue(math.Inf(-1)), `{"type":"float64","optional":true,"field":"c"}`, `"-Infinity"`},
		{"bool", change.BoolValue(true), `{"type":"boolean","optional":true,"field":"c"}`, `true`},
		{"text", change.TextValue("é\n"), `{"type":"string","optional":true,"field":"c"}`, `"é\n"`},
		{"bytea", change.BytesValue([]byte{0, 0xff}), `{"type":"bytes","optional":true,"field":"c"}`, `"AP8="`},
		{"timestamp", mustV(change.TimestampValue(ts)), `{"type":"int64","optional":true,"name":"io.debezium.time.MicroTimestamp","version":1,"field":"c"}`, `1714979289123456`},
		{"timestamptz", mustV(change.TimestampValue(ts)), `{"type":"string","optional":true,"name":"io.debezium.time.ZonedTimestamp","version":1,"field":"c"}`, `"2024-05-06T07:08:09.123456Z"`},
		{"date", mustV(change.TimestampValue(time.Date(1969, 12, 30, 0, 0, 0, 0, time.UTC))), `{"type":"int32","optional":true,"name":"io.debezium.time.Date","version":1,"field":"c"}`, `-2`},
		{"numeric", mustV(change.NumericValue("-1.50")), `{"type":"string","optional":true,"field":"c"}`, `"-1.50"`},
		{"json", mustV(change.JSONValue([]byte(`{"a":1}`))), `{"type":"string","optional":true,"name":"io.debezium.data.Json","version":1,"field":"c"}`, `"{\"a\":1}"`},
		{"jsonb", mustV(change.JSONValue([]byte(`[]`))), `{"type":"string","optional":true,"name":"io.debezium.data.Json","version":1,"field":"c"}`, `"[]"`},
		{"uuid", change.TextValue("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"), `{"type":"string","optional":true,"name":"io.debezium.data.Uuid","version":1,"field":"c"}`, `"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"`},
		{"interval", change.TextValue("1 day"), `{"type":"string","optional":true,"field":"c"}`, `"1 day"`},
		{"int4[]", change.ArrayValue(change.IntValue(1), change.NullValue()), `{"type":"array","items":{"type":"int32","optional":true},"optional":true,"field":"c"}`, `[1,null]`},
		{"int4[]", change.ArrayValue(change.ArrayValue(change.IntValue(1)), change.ArrayValue(change.IntValue(2))), `{"type":"array","items":{"type":"array","items":{"type":"int32","optional":true},"optional":true},"optional":true,"field":"c"}`, `[[1],[2]]`},
		{"timestamp[]", change.ArrayValue(mustV(change.TimestampValue(ts))), `{"type":"array","items":{"type":"int64","optional":true,"name":"io.debezium.time.MicroTimestamp","version":1},"optional":true,"field":"c"}`, `[1714979289123456]`},
		// Values a type's Kafka Connect type cannot hold take their own:
		// infinity, a timestamp with nanoseconds (from another source).
		{"timestamp", change.UnknownValue("timestamp", "infinity"), `{"type":"string","optional":true,"field":"c"}`, `"infinity"`},
		{"timestamp", mustV(change.TimestampValue(ts.Add(1))), `{"type":"string","optional":true,"name":"io.debezium.time.ZonedTimestamp","version":1,"field":"c"}`, `"2024-05-06T07:08:09.123456001Z"`},
		{"", change.IntValue(3), `{"type":"int64","optional":true,"field":"c"}`, `3`}, // no type name
		{"int8", change.NullValue(), `{"type":"int64","optional":true,"field":"c"}`, `null`},
	} {
		c := change.Change{Table: change.Table{Schema: "s", Name: "t"}, Op: change.Insert,
			Key: change.Row{{Name: "id", Value: change.IntValue(1)}}, After: change.Row{{Name: "id", Value: change.IntValue(1)}, {Name: "c", Value: tc.v}}}
		if tc.typ != "" {
			c.Types = []change.ColumnType{{Name: "id", Type: "int8"}, {Name: "c", Type: tc.typ}}
		}
		txn := change.Committed{FirstLSN: 5, CommitLSN: 5, CommitTime: ts, Txn: change.Txn{Changes: []change.Change{c}}}
		enc := &Encoder{Database: "db", Name: "pre", Lineage: "L", Format: FormatJSONSchemas}
		r := record(enc, &txn, 0)
		var v struct {
			Schema struct {
				Fields []json.RawMessage
				Name   string
			}
			Payload struct{ After map[string]json.RawMessage }
		}
		if err := json.Unmarshal(r.Value, &v); err != nil {
			t.Fatalf("%s: %v\n%s", tc.typ, err, r.Value)
		}
		after := string(v.Schema.Fields[1])
		wantAfter := `{"type":"struct","fields":[{"type":"int64","optional":false,"field":"id"},` + tc.schema + `],"optional":true,"name":"pre.s.t.Value","field":"after"}`
		if after != wantAfter || string(v.Payload.After["c"]) != tc.want || v.Schema.Name != "pre.s.t.Envelope" {
			t.Errorf("%s %v:\n schema %s\n   want %s\npayload %s, want %s (envelope %q)", tc.typ, tc.v, after, wantAfter, v.Payload.After["c"], tc.want, v.Schema.Name)
		}
		if string(r.Key) != `{"schema":{"type":"struct","fields":[{"type":"int64","optional":false,"field":"id"}],"optional":false,"name":"pre.s.t.Key"},"payload":{"id":1}}` {
			t.Errorf("%s: key %s", tc.typ, r.Key)
		}
		for _, b := range [][]byte{r.Key, r.Value} {
			if err := kafkatest.CheckSchemaPayload(b); err != nil {
				t.Errorf("%s: %v\n%s", tc.typ, err, b)
			}
		}
		ev, err := Decode(r)
		if err != nil {
			t.Fatalf("%s: decode: %v\n%s", tc.typ, err, r.Value)
		}
		if !ev.Change.Equal(&c) {
			t.Errorf("%s: round trip\n got %+v\nwant %+v", tc.typ, ev.Change, c)
		}
	}
}

// TestSchemasMatchPayloads checks, over a workload of every supported
// type (and the sink tests' workload of every value kind), that each
// key's and value's schema describes its payload, that the payload is the
// json format's apart from the timestamp and date values (and array kind
// descriptors, as strings), and that every
// record decodes back to its change.
func TestSchemasMatchPayloads(t *testing.T) {
	var txns []change.Txn
	txns = append(txns, kafkatest.EveryTypeTxns(40)...)
	wl := kafkatest.NewWorkload(3)
	for range 200 {
		txns = append(txns, wl.Next())
	}
	enc := &Encoder{Database: "db", Name: "pre", Lineage: "L", Format: FormatJSONSchemas, NowMS: 1}
	plain := &Encoder{Database: "db", Name: "pre", Lineage: "L", NowMS: 1}
	lsn := uint64(1)
	var converted int
	for k := range txns {
		txn := change.Committed{FirstLSN: lsn, CommitLSN: lsn + uint64(len(txns[k].Changes)) - 1, CommitTime: time.Unix(1700000000, 5000).UTC(), Txn: txns[k]}
		lsn = txn.CommitLSN + 1
		for i := range txn.Changes {
			r := record(enc, &txn, i)
			for _, b := range [][]byte{r.Key, r.Value} {
				if b == nil {
					continue
				}
				if err := kafkatest.CheckSchemaPayload(b); err != nil {
					t.Fatalf("%v\n%s", err, b)
				}
			}
			ev, err := Decode(r)
			if err != nil {
				t.Fatalf("decode: %v\n%s", err, r.Value)
			}
			if c := &txn.Changes[i]; !ev.Change.Equal(c) {
				t.Fatalf("round trip\n got %+v\nwant %+v\n%s", ev.Change, *c, r.Value)
			}
			var w struct{ Payload json.RawMessage }
			json.Unmarshal(r.Value, &w)
			pr := record(plain, &txn, i)
			if string(w.Payload) != string(pr.Value) {
				p := string(w.Payload)
				switch {
				case strings.Contains(p, `"micros"`) || strings.Contains(p, `"days"`):
					converted++
				case !strings.Contains(p, `":"[`):
					// Only an array's kind descriptor, as a string.
					t.Fatalf("payload differs from the json format's without a converted timestamp or array descriptor:\n%s\n%s", w.Payload, pr.Value)
				}
			}
		}
	}
	if converted == 0 {
		t.Fatal("no timestamp or date was written as its semantic type's integer")
	}
}

// TestDecodeSchemasWrapper: a wrapper missing its payload, or with other
// members, is malformed; a json value is read as before.
func TestDecodeSchemasWrapper(t *testing.T) {
	hdr := []kgo.RecordHeader{{Key: HeaderLSN, Value: []byte("1")}, {Key: HeaderCommitLSN, Value: []byte("1")}, {Key: HeaderTxnFirstLSN, Value: []byte("1")}}
	for _, v := range []string{`{"schema":{}}`, `{"schema":{},"payload":{},"x":1}`, `{"payload":null,"schema":{}}`, `{"schema":{},"payload":{}} x`} {
		if _, err := Decode(&kgo.Record{Value: []byte(v), Headers: hdr}); err == nil {
			t.Errorf("%s: no error", v)
		}
	}
}

// TestCheckSchemaPayloadCatches: the checker the schema tests rely on
// rejects each kind of mismatch.
func TestCheckSchemaPayloadCatches(t *testing.T) {
	st := func(fields string) string { return `{"type":"struct","fields":[` + fields + `],"optional":false}` }
	ok := `{"schema":` + st(`{"type":"int64","optional":false,"field":"a"},{"type":"string","optional":true,"field":"b"}`) + `,"payload":{"a":1,"b":null}}`
	if err := kafkatest.CheckSchemaPayload([]byte(ok)); err != nil {
		t.Fatalf("a matching record: %v", err)
	}
	for _, bad := range []string{
		`{"schema":` + st(`{"type":"int64","optional":false,"field":"a"}`) + `,"payload":{}}`,                                       // required field missing
		`{"schema":` + st(`{"type":"int64","optional":false,"field":"a"}`) + `,"payload":{"a":null}}`,                               // null for a required field
		`{"schema":` + st(`{"type":"int64","optional":true,"field":"a"}`) + `,"payload":{"a":1,"x":2}}`,                             // member not in the schema
		`{"schema":` + st(`{"type":"int64","optional":true,"field":"a"}`) + `,"payload":{"a":"1"}}`,                                 // string for an int
		`{"schema":` + st(`{"type":"int32","optional":true,"field":"a"}`) + `,"payload":{"a":4294967296}}`,                          // out of int32
		`{"schema":` + st(`{"type":"int16","optional":true,"field":"a"}`) + `,"payload":{"a":1.5}}`,                                 // not an integer
		`{"schema":` + st(`{"type":"bytes","optional":true,"field":"a"}`) + `,"payload":{"a":"!!"}}`,                                // not base64
		`{"schema":` + st(`{"type":"string","optional":true,"name":"io.debezium.data.Json","field":"a"}`) + `,"payload":{"a":"{"}}`, // not JSON
		`{"schema":` + st(`{"type":"array","items":{"type":"int64","optional":false},"optional":true,"field":"a"}`) + `,"payload":{"a":[1,null]}}`,
		`{"schema":` + st(`{"type":"float64","optional":true,"field":"a"}`) + `,"payload":{"a":"nan"}}`,
		`{"schema":` + st(``) + `}`,
	} {
		if err := kafkatest.CheckSchemaPayload([]byte(bad)); err == nil {
			t.Errorf("no error for %s", bad)
		}
	}
}

// TestSchemaChangeVisibleInTheNextRecord: PostgreSQL's logical decoding
// streams no DDL, so a schema change reaches Kafka consumers the way
// Debezium's PostgreSQL connector shows it: the first record written
// after the change describes the new columns, in its schema (json-schemas)
// and in walship.types (json), and the records before it the old ones.
func TestSchemaChangeVisibleInTheNextRecord(t *testing.T) {
	tb := change.Table{Schema: "public", Name: "t"}
	before := []change.ColumnType{{Name: "id", Type: "int8"}, {Name: "a", Type: "text"}}
	after := []change.ColumnType{{Name: "id", Type: "int8"}, {Name: "a", Type: "int4"}, {Name: "b", Type: "date"}}
	txn := change.Committed{FirstLSN: 10, CommitLSN: 11, CommitTime: time.Unix(1700000000, 0).UTC(), Txn: change.Txn{Changes: []change.Change{
		{Table: tb, Op: change.Insert, Key: change.Row{{Name: "id", Value: change.IntValue(1)}}, Types: before,
			After: change.Row{{Name: "id", Value: change.IntValue(1)}, {Name: "a", Value: change.TextValue("x")}}},
		{Table: tb, Op: change.Insert, Key: change.Row{{Name: "id", Value: change.IntValue(2)}}, Types: after,
			After: change.Row{{Name: "id", Value: change.IntValue(2)}, {Name: "a", Value: change.IntValue(7)},
				{Name: "b", Value: mustV(change.TimestampValue(time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC)))}}},
	}}}
	enc := &Encoder{Database: "db", Name: "pre", Lineage: "L", Format: FormatJSONSchemas, NowMS: 1}
	fields := func(i int) string {
		var v struct {
			Schema struct {
				Fields []struct {
					Field  string
					Fields []struct{ Type, Name, Field string }
				}
			}
		}
		if err := json.Unmarshal(record(enc, &txn, i).Value, &v); err != nil {
			t.Fatal(err)
		}
		for _, f := range v.Schema.Fields {
			if f.Field == "after" {
				var out []string
				for _, c := range f.Fields {
					out = append(out, c.Field+":"+c.Type+":"+c.Name)
				}
				return strings.Join(out, " ")
			}
		}
		t.Fatalf("record %d: no after in the schema", i)
		return ""
	}
	if got, want := fields(0), "id:int64: a:string:"; got != want {
		t.Errorf("schema before the change: %q, want %q", got, want)
	}
	if got, want := fields(1), "id:int64: a:int32: b:int32:io.debezium.time.Date"; got != want {
		t.Errorf("schema after the change: %q, want %q", got, want)
	}
	plain := &Encoder{Database: "db", Name: "pre", Lineage: "L", NowMS: 1}
	for i, want := range []string{`"types":{"id":"int8","a":"text"}`, `"types":{"id":"int8","a":"int4","b":"date"}`} {
		if v := string(record(plain, &txn, i).Value); !strings.Contains(v, want) {
			t.Errorf("json record %d lacks %s:\n%s", i, want, v)
		}
	}
}
