package kafkatest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/walship/walship/change"
)

// CheckSchemaPayload checks a record key or value in Kafka Connect's
// JsonConverter form with schemas ({"schema":...,"payload":...}): walking
// schema and payload together, every payload member is a field of its
// struct, every required field is present and not null, a null appears
// only where the schema is optional, and every value has its schema's type
// (semantic types included: io.debezium.time.MicroTimestamp an int64,
// io.debezium.time.Date an int32, io.debezium.time.ZonedTimestamp an
// RFC 3339 string, io.debezium.data.Json a JSON text).
func CheckSchemaPayload(rec []byte) error {
	d := json.NewDecoder(bytes.NewReader(rec))
	d.UseNumber()
	var w struct {
		Schema  map[string]any
		Payload any
	}
	var all map[string]json.RawMessage
	if err := json.Unmarshal(rec, &all); err != nil {
		return err
	}
	if len(all) != 2 || all["schema"] == nil || all["payload"] == nil {
		return fmt.Errorf("want exactly schema and payload members, have %d", len(all))
	}
	if err := d.Decode(&w); err != nil {
		return err
	}
	return checkValue(w.Schema, w.Payload, "$")
}

func checkValue(schema map[string]any, v any, path string) error {
	if schema == nil {
		return fmt.Errorf("%s: no schema", path)
	}
	if v == nil {
		if schema["optional"] != true {
			return fmt.Errorf("%s: null for a required %v", path, schema["type"])
		}
		return nil
	}
	typ, _ := schema["type"].(string)
	name, _ := schema["name"].(string)
	bad := func() error { return fmt.Errorf("%s: %T %v is not a %s %s", path, v, v, typ, name) }
	switch typ {
	case "struct":
		obj, ok := v.(map[string]any)
		if !ok {
			return bad()
		}
		fields, _ := schema["fields"].([]any)
		seen := map[string]bool{}
		for _, f := range fields {
			fs, _ := f.(map[string]any)
			fname, _ := fs["field"].(string)
			if seen[fname] {
				return fmt.Errorf("%s: field %q twice", path, fname)
			}
			seen[fname] = true
			fv, present := obj[fname]
			if !present && fs["optional"] != true {
				return fmt.Errorf("%s: required field %q missing", path, fname)
			}
			if present {
				if err := checkValue(fs, fv, path+"."+fname); err != nil {
					return err
				}
			}
		}
		for k := range obj {
			if !seen[k] {
				return fmt.Errorf("%s: member %q is no field of the schema", path, k)
			}
		}
		return nil
	case "array":
		arr, ok := v.([]any)
		if !ok {
			return bad()
		}
		items, _ := schema["items"].(map[string]any)
		for i, el := range arr {
			if err := checkValue(items, el, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		return nil
	case "map":
		obj, ok := v.(map[string]any)
		if !ok {
			return bad()
		}
		values, _ := schema["values"].(map[string]any)
		for k, el := range obj {
			if err := checkValue(values, el, path+"["+strconv.Quote(k)+"]"); err != nil {
				return err
			}
		}
		return nil
	case "int8", "int16", "int32", "int64":
		n, ok := v.(json.Number)
		if !ok {
			return bad()
		}
		bits := map[string]int{"int8": 8, "int16": 16, "int32": 32, "int64": 64}[typ]
		if _, err := strconv.ParseInt(string(n), 10, bits); err != nil {
			return bad()
		}
		return nil
	case "float32", "float64":
		switch x := v.(type) {
		case json.Number:
			if _, err := strconv.ParseFloat(string(x), 64); err != nil {
				return bad()
			}
		case string: // the JsonConverter writes NaN and the infinities as strings
			if x != "NaN" && x != "Infinity" && x != "-Infinity" {
				return bad()
			}
		default:
			return bad()
		}
		return nil
	case "boolean":
		if _, ok := v.(bool); !ok {
			return bad()
		}
		return nil
	case "bytes":
		s, ok := v.(string)
		if !ok {
			return bad()
		}
		if _, err := base64.StdEncoding.DecodeString(s); err != nil {
			return bad()
		}
		return nil
	case "string":
		s, ok := v.(string)
		if !ok {
			return bad()
		}
		switch name {
		case "io.debezium.time.ZonedTimestamp":
			if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
				return bad()
			}
		case "io.debezium.data.Json":
			if !json.Valid([]byte(s)) {
				return bad()
			}
		}
		return nil
	}
	return fmt.Errorf("%s: unknown schema type %q", path, typ)
}

// Every is the table of EveryTypeTxns.
var Every = change.Table{Schema: "public", Name: "every"}

// EveryTypes are the columns of public.every with their PostgreSQL types:
// one of each type walship maps to a Kafka Connect type of its own.
var EveryTypes = []change.ColumnType{
	{Name: "id", Type: "int8"}, {Name: "i2", Type: "int2"}, {Name: "i4", Type: "int4"}, {Name: "f4", Type: "float4"},
	{Name: "f8", Type: "float8"}, {Name: "b", Type: "bool"}, {Name: "t", Type: "text"}, {Name: "vc", Type: "varchar"},
	{Name: "by", Type: "bytea"}, {Name: "ts", Type: "timestamp"}, {Name: "tz", Type: "timestamptz"},
	{Name: "d", Type: "date"}, {Name: "n", Type: "numeric"}, {Name: "j", Type: "json"}, {Name: "jb", Type: "jsonb"},
	{Name: "u", Type: "uuid"}, {Name: "iv", Type: "interval"}, {Name: "ai", Type: "int4[]"},
	{Name: "at", Type: "text[]"}, {Name: "ats", Type: "timestamp[]"}, {Name: "ad", Type: "date[]"},
	{Name: "m2", Type: "int4[]"}, {Name: "inf", Type: "timestamp"},
}

// EveryRow returns a row of public.every: every column of EveryTypes with
// a value varied by v, or null in every other row for most of them.
func EveryRow(id, v int64) change.Row {
	ts := time.Date(2024, 2, 29, 23, 59, 58, int(v%1000)*1000, time.UTC).Add(time.Duration(v) * time.Hour)
	tz := ts.Add(time.Duration(v%1000) + 1) // nanoseconds: not a MicroTimestamp
	day := time.Date(1969, 12, 31, 0, 0, 0, 0, time.UTC).AddDate(0, 0, int(v))
	r := row(
		"id", change.IntValue(id),
		"i2", change.IntValue(-32768+v%65536),
		"i4", change.IntValue(math.MaxInt32-v),
		"f4", change.FloatValue([]float64{0.5, math.NaN(), math.Inf(-1)}[v%3]),
		"f8", change.FloatValue([]float64{1e300, -0.25, math.Inf(1)}[v%3]),
		"b", change.BoolValue(v%2 == 0),
		"t", change.TextValue(fmt.Sprintf("t \"%d\"\n✓", v)),
		"vc", change.TextValue("vc"),
		"by", change.BytesValue([]byte{0, byte(v), 0xff}),
		"ts", must(change.TimestampValue(ts)),
		"tz", must(change.TimestampValue(tz)),
		"d", must(change.TimestampValue(day)),
		"n", must(change.NumericValue([]string{"1.50", "-0.000001", "NaN", "123456789012345678901234567890"}[v%4])),
		"j", must(change.JSONValue([]byte(fmt.Sprintf(`{"v":%d,"a":[null]}`, v)))),
		"jb", must(change.JSONValue([]byte(`[1,"x"]`))),
		"u", change.TextValue(fmt.Sprintf("a0eebc99-9c0b-4ef8-bb6d-6bb9bd38%04d", v%10000)),
		"iv", change.TextValue(fmt.Sprintf("%d days", v)),
		"ai", change.ArrayValue(change.IntValue(v), change.NullValue()),
		"at", change.ArrayValue(change.TextValue("a,b"), change.TextValue("")),
		"ats", change.ArrayValue(must(change.TimestampValue(ts)), change.NullValue()),
		"ad", change.ArrayValue(must(change.TimestampValue(day))),
		"m2", change.ArrayValue(change.ArrayValue(change.IntValue(1), change.IntValue(2)), change.ArrayValue(change.IntValue(3), change.NullValue())),
		// infinity: not a timestamp walship can hold, kept as its text.
		"inf", change.UnknownValue("timestamp", "infinity"),
	)
	if v%2 == 1 {
		for i := 1; i < len(r); i++ {
			if i%3 != 0 {
				r[i].Value = change.NullValue()
			}
		}
	}
	return r
}

// EveryTypeTxns returns transactions over public.every (inserts, updates
// with and without the old row, key-changing updates, deletes, a
// truncate) and logical messages, with Types set.
func EveryTypeTxns(n int) []change.Txn {
	var out []change.Txn
	key := func(id int64) change.Row { return row("id", change.IntValue(id)) }
	for i := range int64(n) {
		id := i + 1
		t := change.Txn{Header: change.TxHeader{XID: uint64(100 + i), SourceLSN: uint64(i+1) << 24, SourceCommitTime: time.Unix(1700000000+i, 0).UTC()}}
		ins := change.Change{Table: Every, Op: change.Insert, Key: key(id), After: EveryRow(id, i), Types: EveryTypes}
		upd := change.Change{Table: Every, Op: change.Update, Key: key(id), After: EveryRow(id, i+1), Types: EveryTypes}
		if i%2 == 0 {
			upd.Before = EveryRow(id, i) // REPLICA IDENTITY FULL
		}
		t.Changes = append(t.Changes, ins, upd)
		switch i % 4 {
		case 1: // the key changes: before is the key image
			t.Changes = append(t.Changes, change.Change{Table: Every, Op: change.Update, Key: key(id), After: EveryRow(id+1000, i), Types: EveryTypes})
		case 2:
			t.Changes = append(t.Changes, change.Change{Table: Every, Op: change.Delete, Key: key(id), Types: EveryTypes})
		case 3:
			t.Changes = append(t.Changes, change.Change{Op: change.Message, Message: &change.LogicalMessage{Prefix: "p", Content: []byte{0, 1}, Transactional: true}})
		}
		if i == int64(n)-1 {
			t.Changes = append(t.Changes, change.Change{Table: Every, Op: change.Truncate, Types: EveryTypes})
		}
		out = append(out, t)
	}
	return out
}
