package kafkawire

import (
	"strings"

	"github.com/walship/walship/change"
)

// Record formats (kafka.format).
const (
	// FormatJSON: the key and the envelope as plain JSON, as Kafka
	// Connect's JsonConverter writes them with schemas.enable=false.
	FormatJSON = "json"
	// FormatJSONSchemas: the key and the value are each
	// {"schema":...,"payload":...}, as the JsonConverter writes them with
	// schemas.enable=true. The payload is the FormatJSON key or envelope,
	// except that values of columns whose schema is Debezium's
	// io.debezium.time.MicroTimestamp (timestamp) or io.debezium.time.Date
	// (date) are the integers those types hold; the schema is a Kafka
	// Connect struct schema that describes exactly that payload
	// (docs/KAFKA.md, "Formats"). Decode reads both formats.
	FormatJSONSchemas = "json-schemas"
)

const secondsPerDay = 86400

// convMode says how a timestamp value is written (appendValue).
type convMode uint8

const (
	convNone   convMode = iota // RFC 3339 text
	convMicros                 // int64 microseconds since the epoch
	convDays                   // int32 days since the epoch
)

// Semantic type names of Debezium and Kafka Connect.
const (
	semMicroTimestamp = "io.debezium.time.MicroTimestamp"
	semZonedTimestamp = "io.debezium.time.ZonedTimestamp"
	semDate           = "io.debezium.time.Date"
	semJSON           = "io.debezium.data.Json"
	semUUID           = "io.debezium.data.Uuid"
)

// connectType is a Kafka Connect schema of a column value: a primitive
// type with an optional semantic name, or an array of items.
type connectType struct {
	typ   string // int16, int32, int64, float32, float64, boolean, string, bytes, array
	name  string // semantic type, "" for none
	conv  convMode
	items *connectType // arrays
}

var (
	ctBoolean = &connectType{typ: "boolean"}
	ctInt16   = &connectType{typ: "int16"}
	ctInt32   = &connectType{typ: "int32"}
	ctInt64   = &connectType{typ: "int64"}
	ctFloat32 = &connectType{typ: "float32"}
	ctFloat64 = &connectType{typ: "float64"}
	ctString  = &connectType{typ: "string"}
	ctBytes   = &connectType{typ: "bytes"}
	ctMicros  = &connectType{typ: "int64", name: semMicroTimestamp, conv: convMicros}
	ctZoned   = &connectType{typ: "string", name: semZonedTimestamp}
	ctDate    = &connectType{typ: "int32", name: semDate, conv: convDays}
	ctJSON    = &connectType{typ: "string", name: semJSON}
	ctUUID    = &connectType{typ: "string", name: semUUID}
)

// pgTypes maps a PostgreSQL type name (change.ColumnType.Type) to its
// Kafka Connect type. numeric is a string: walship keeps a numeric's exact
// text, as Debezium does with decimal.handling.mode=string. Names not
// listed (time, interval, enums, domains, ...) take the type of their
// values (typeOfValue).
var pgTypes = map[string]*connectType{
	"bool": ctBoolean, "int2": ctInt16, "int4": ctInt32, "int8": ctInt64, "oid": ctInt64, "xid": ctInt64,
	"float4": ctFloat32, "float8": ctFloat64, "numeric": ctString,
	"text": ctString, "varchar": ctString, "bpchar": ctString, "name": ctString, "char": ctString, "citext": ctString,
	"bytea": ctBytes, "timestamp": ctMicros, "timestamptz": ctZoned, "date": ctDate,
	"json": ctJSON, "jsonb": ctJSON, "uuid": ctUUID,
}

// typeOfName returns the Kafka Connect type of a PostgreSQL type name,
// nil if the name does not say.
func typeOfName(name string) *connectType {
	if elem, ok := strings.CutSuffix(name, "[]"); ok {
		if it := typeOfName(elem); it != nil {
			return &connectType{typ: "array", items: it}
		}
		return nil
	}
	return pgTypes[name]
}

// typeOfValue returns the Kafka Connect type that holds v as FormatJSON
// writes it; nil for a null (or an array of only nulls: items unknown).
func typeOfValue(v change.Value) *connectType {
	switch v.Kind() {
	case change.KindBool:
		return ctBoolean
	case change.KindInt:
		return ctInt64
	case change.KindFloat:
		return ctFloat64
	case change.KindBytes:
		return ctBytes
	case change.KindTimestamp:
		return ctZoned
	case change.KindJSON:
		return ctJSON
	case change.KindArray:
		elems, _ := v.Array()
		for _, el := range elems {
			if it := typeOfValue(el); it != nil {
				return &connectType{typ: "array", items: it}
			}
		}
		return &connectType{typ: "array", items: ctString}
	case change.KindNull:
		return nil
	}
	return ctString // text, numeric, unknown
}

// fits reports whether ct holds v: the payload written for v under ct is
// of ct's type. Nulls fit (fields and items are optional).
func (ct *connectType) fits(v change.Value) bool {
	switch v.Kind() {
	case change.KindNull:
		return true
	case change.KindBool:
		return ct.typ == "boolean"
	case change.KindInt:
		i, _ := v.Int()
		switch ct.typ {
		case "int16":
			return i >= -1<<15 && i < 1<<15
		case "int32":
			return i >= -1<<31 && i < 1<<31 && ct.conv == convNone
		case "int64":
			return ct.conv == convNone
		}
		return false
	case change.KindFloat:
		return ct.typ == "float32" || ct.typ == "float64"
	case change.KindBytes:
		return ct.typ == "bytes"
	case change.KindTimestamp:
		t, _ := v.Timestamp()
		switch ct.conv {
		case convMicros:
			return t.Nanosecond()%1000 == 0
		case convDays:
			return t.Unix()%secondsPerDay == 0
		}
		return ct.typ == "string"
	case change.KindArray:
		if ct.typ != "array" {
			return false
		}
		elems, _ := v.Array()
		for _, el := range elems {
			if !ct.items.fits(el) {
				return false
			}
		}
		return true
	}
	// text, numeric, JSON, unknown: written as strings.
	return ct.typ == "string" && ct.conv == convNone
}

// appendSchema appends ct as a field schema (field "" for array items).
func (ct *connectType) appendSchema(dst []byte, optional bool, field string) []byte {
	dst = append(dst, `{"type":"`...)
	dst = append(dst, ct.typ...)
	dst = append(dst, '"')
	if ct.items != nil {
		dst = append(dst, `,"items":`...)
		dst = ct.items.appendSchema(dst, true, "")
	}
	dst = append(dst, `,"optional":`...)
	dst = appendBool(dst, optional)
	if ct.name != "" {
		dst = append(dst, `,"name":"`...)
		dst = append(dst, ct.name...)
		dst = append(dst, `","version":1`...)
	}
	if field != "" {
		dst = append(dst, `,"field":`...)
		dst = appendString(dst, field)
	}
	return append(dst, '}')
}

func appendBool(dst []byte, b bool) []byte {
	if b {
		return append(dst, "true"...)
	}
	return append(dst, "false"...)
}

// colPlan is one column of a change in FormatJSONSchemas: its Kafka
// Connect type, and whether it is required (a key column, never null).
type colPlan struct {
	name     string
	ct       *connectType
	key      bool
	required bool
	misfit   bool // a value does not fit ct (or ct is nil and a value is not null)
}

// colPlans are the columns of the change being encoded, in the order of
// its Types, then of their first appearance in its rows.
type colPlans struct {
	cols    []colPlan
	scratch []byte
	arrays  map[string]*connectType // typeOfName of array type names
}

// conv returns how the values of column name, the i-th of its row, are
// written.
func (p *colPlans) conv(i int, name string) convMode {
	if k := p.index(i, name); k >= 0 {
		return p.cols[k].ct.leafConv()
	}
	return convNone
}

func (ct *connectType) leafConv() convMode {
	for ct.items != nil {
		ct = ct.items
	}
	return ct.conv
}

func (p *colPlans) find(name string) int {
	for k := range p.cols {
		if p.cols[k].name == name {
			return k
		}
	}
	return -1
}

// plan sets p to the columns of c. A column's type is the one its type
// name maps to (with as many array levels as its values have) if every
// value of it in c fits that type, else the one its values have.
func (p *colPlans) plan(c *change.Change) {
	clear(p.cols)
	p.cols = p.cols[:0]
	for _, t := range c.Types {
		p.cols = append(p.cols, colPlan{name: t.Name, ct: p.typeOfName(t.Type)})
	}
	// One pass over the values: rows usually list their columns in the
	// order of Types, so the i-th column is tried first.
	rows := [...]change.Row{c.Key, c.Before, c.After}
	for ri, r := range rows {
		for i, col := range r {
			k := p.index(i, col.Name)
			if k < 0 {
				k = len(p.cols)
				p.cols = append(p.cols, colPlan{name: col.Name})
			}
			cp := &p.cols[k]
			if ri == 0 && !cp.key {
				cp.key, cp.required = true, true
			}
			v := col.Value
			if v.IsNull() {
				cp.required = false
			} else if cp.ct == nil || !cp.ct.fits(v) {
				cp.misfit = true
			}
		}
	}
	for k := range p.cols {
		switch cp := &p.cols[k]; {
		case cp.misfit:
			cp.ct = refit(cp.ct, cp.name, &rows)
		case cp.ct == nil:
			cp.ct = ctString // no type name, only nulls
		}
	}
}

// refit returns the type of column name when its values in rows do not
// all fit ct (nil: no type name): ct with more array levels (a
// multidimensional array), else the type of its first non-null value.
func refit(ct *connectType, name string, rows *[3]change.Row) *connectType {
	fitsAll := func(ct *connectType) bool {
		for _, r := range rows {
			if v, ok := r.Get(name); ok && !ct.fits(v) {
				return false
			}
		}
		return true
	}
	for d := 0; ct != nil && ct.typ == "array" && d < change.MaxNesting; d++ {
		if ct = deeper(ct); fitsAll(ct) {
			return ct
		}
	}
	for _, r := range rows {
		if v, ok := r.Get(name); ok && !v.IsNull() {
			return typeOfValue(v)
		}
	}
	return ctString
}

// index returns the index of column name, trying i first; -1 if absent.
func (p *colPlans) index(i int, name string) int {
	if i < len(p.cols) && p.cols[i].name == name {
		return i
	}
	return p.find(name)
}

// typeOfName is the package's typeOfName, remembering array types.
func (p *colPlans) typeOfName(name string) *connectType {
	if ct, ok := pgTypes[name]; ok {
		return ct
	}
	if ct, ok := p.arrays[name]; ok {
		return ct
	}
	ct := typeOfName(name)
	if len(p.arrays) >= 1024 {
		clear(p.arrays) // bounded: type names come from the source
	}
	if p.arrays == nil {
		p.arrays = map[string]*connectType{}
	}
	p.arrays[name] = ct
	return ct
}

// deeper returns ct with one more array level around its leaf.
func deeper(ct *connectType) *connectType {
	if ct.items == nil {
		return &connectType{typ: "array", items: ct}
	}
	return &connectType{typ: "array", items: deeper(ct.items)}
}

// appendStruct appends the struct schema of the plans' columns (key
// columns only if keys) named name, as field field ("" for a top-level
// schema).
func (p *colPlans) appendStruct(dst []byte, keys bool, name, field string, optional bool) []byte {
	dst = append(dst, `{"type":"struct","fields":[`...)
	n := 0
	for _, cp := range p.cols {
		if keys && !cp.key {
			continue
		}
		if n > 0 {
			dst = append(dst, ',')
		}
		n++
		dst = cp.ct.appendSchema(dst, !cp.required, cp.name)
	}
	dst = append(dst, `],"optional":`...)
	dst = appendBool(dst, optional)
	if name != "" {
		dst = append(dst, `,"name":`...)
		dst = appendString(dst, name)
	}
	if field != "" {
		dst = append(dst, `,"field":"`...)
		dst = append(dst, field...)
		dst = append(dst, '"')
	}
	return append(dst, '}')
}

// schemaName returns "<name>.<schema>.<table>.<suffix>", Debezium's naming
// of a table's schemas.
func (e *Encoder) schemaName(t change.Table, suffix string) string {
	return e.Name + "." + t.Schema + "." + t.Name + "." + suffix
}

// Schema names of logical messages (Debezium's).
const (
	messageKeyName   = "io.debezium.connector.postgresql.MessageKey"
	messageValueName = "io.debezium.connector.postgresql.MessageValue"
)

// appendKeySchemas appends the key of c in FormatJSONSchemas.
func (e *Encoder) appendKeySchemas(dst []byte, c *change.Change) ([]byte, bool) {
	if c.Op == change.Message && c.Message != nil {
		dst = append(dst, `{"schema":{"type":"struct","fields":[{"type":"string","optional":false,"field":"prefix"}],"optional":false,"name":"`+messageKeyName+`"},"payload":{"prefix":`...)
		dst = appendString(dst, c.Message.Prefix)
		return append(dst, "}}"...), true
	}
	if c.Key == nil {
		return dst, false
	}
	p := e.planFor(c)
	dst = append(dst, `{"schema":`...)
	dst = p.appendStruct(dst, true, e.schemaName(c.Table, "Key"), "", false)
	dst = append(dst, `,"payload":`...)
	var desc []byte
	dst, desc = appendRow(dst, e.desc[:0], c.Key, p)
	e.desc = desc[:0]
	e.plans = nil
	return append(dst, '}'), true
}

// planFor plans the columns of c (e.plans stays set until the caller
// clears it).
func (e *Encoder) planFor(c *change.Change) *colPlans {
	if e.planBuf == nil {
		e.planBuf = &colPlans{}
	}
	e.planBuf.plan(c)
	e.plans = e.planBuf
	return e.planBuf
}

// appendValueSchemas appends the envelope of change p in
// FormatJSONSchemas: its schema, then the envelope as payload.
func (e *Encoder) appendValueSchemas(dst []byte, p Position) []byte {
	c := &p.Txn.Changes[p.Index]
	plans := e.planFor(c)
	dst = append(dst, `{"schema":{"type":"struct","fields":[`...)
	name := messageValueName
	if c.Op == change.Message && c.Table.IsZero() {
		dst = append(dst, `{"type":"struct","fields":[],"optional":true,"field":"before"},{"type":"struct","fields":[],"optional":true,"field":"after"}`...)
	} else {
		valueName := e.schemaName(c.Table, "Value")
		dst = plans.appendStruct(dst, false, valueName, "before", true)
		dst = append(dst, ',')
		dst = plans.appendStruct(dst, false, valueName, "after", true)
		if c.Op != change.Message {
			name = e.schemaName(c.Table, "Envelope")
		}
	}
	dst = append(dst, envelopeMiddleSchema...)
	if c.Message != nil {
		dst = append(dst, messageSchema...)
	}
	dst = append(dst, walshipHeadSchema...)
	if c.Key != nil {
		dst = append(dst, ',')
		dst = plans.appendStruct(dst, true, e.schemaName(c.Table, "Key"), "key", true)
	}
	dst = append(dst, walshipTailSchema...)
	dst = appendString(dst, name)
	dst = append(dst, `,"version":1},"payload":`...)
	dst = e.appendEnvelope(dst, p)
	e.plans = nil
	return append(dst, '}')
}

// The fixed parts of the envelope's schema, in the order of the payload's
// fields (appendEnvelope).
const (
	envelopeMiddleSchema = `,{"type":"struct","fields":[` +
		`{"type":"string","optional":false,"field":"version"},` +
		`{"type":"string","optional":false,"field":"connector"},` +
		`{"type":"string","optional":false,"field":"name"},` +
		`{"type":"int64","optional":false,"field":"ts_ms"},` +
		`{"type":"int64","optional":true,"field":"ts_us"},` +
		`{"type":"int64","optional":true,"field":"ts_ns"},` +
		`{"type":"string","optional":true,"name":"io.debezium.data.Enum","version":1,"parameters":{"allowed":"true,first,first_in_data_collection,last_in_data_collection,last,false,incremental"},"default":"false","field":"snapshot"},` +
		`{"type":"string","optional":false,"field":"db"},` +
		`{"type":"string","optional":true,"field":"sequence"},` +
		`{"type":"string","optional":false,"field":"schema"},` +
		`{"type":"string","optional":false,"field":"table"},` +
		`{"type":"int64","optional":true,"field":"txId"},` +
		`{"type":"int64","optional":true,"field":"lsn"},` +
		`{"type":"int64","optional":true,"field":"xmin"}` +
		`],"optional":false,"name":"io.debezium.connector.postgresql.Source","field":"source"},` +
		`{"type":"string","optional":false,"field":"op"},` +
		`{"type":"int64","optional":true,"field":"ts_ms"},` +
		`{"type":"struct","fields":[` +
		`{"type":"string","optional":false,"field":"id"},` +
		`{"type":"int64","optional":false,"field":"total_order"},` +
		`{"type":"int64","optional":false,"field":"data_collection_order"}` +
		`],"optional":true,"name":"event.block","version":1,"field":"transaction"}`
	messageSchema = `,{"type":"struct","fields":[` +
		`{"type":"string","optional":false,"field":"prefix"},` +
		`{"type":"bytes","optional":true,"field":"content"},` +
		`{"type":"boolean","optional":false,"field":"transactional"}` +
		`],"optional":true,"name":"io.debezium.connector.postgresql.Message","field":"message"}`
	// The walship extension; its key is the table's Key struct. kinds
	// maps before/after/key to a map of column to kind descriptor (an
	// array's descriptor as its JSON text).
	walshipHeadSchema = `,{"type":"struct","fields":[` +
		`{"type":"int64","optional":false,"field":"lsn"},` +
		`{"type":"int64","optional":false,"field":"commit_lsn"},` +
		`{"type":"int64","optional":false,"field":"first_lsn"},` +
		`{"type":"string","optional":false,"name":"` + semZonedTimestamp + `","version":1,"field":"commit_time"},` +
		`{"type":"string","optional":false,"field":"lineage"},` +
		`{"type":"int64","optional":false,"field":"xid"},` +
		`{"type":"string","optional":true,"field":"source_lsn"},` +
		`{"type":"string","optional":true,"name":"` + semZonedTimestamp + `","version":1,"field":"source_commit_time"},` +
		`{"type":"string","optional":true,"field":"origin"},` +
		`{"type":"int64","optional":true,"field":"snapshot"}`
	walshipTailSchema = `,{"type":"boolean","optional":true,"field":"before_from_key"},` +
		`{"type":"map","keys":{"type":"string","optional":false},"values":{"type":"map","keys":{"type":"string","optional":false},"values":{"type":"string","optional":false},"optional":false},"optional":true,"field":"kinds"},` +
		`{"type":"map","keys":{"type":"string","optional":false},"values":{"type":"string","optional":false},"optional":true,"field":"types"}` +
		`],"optional":false,"name":"walship.Extension","version":1,"field":"walship"}` +
		`],"optional":false,"name":`
)
