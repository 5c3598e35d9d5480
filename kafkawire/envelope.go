package kafkawire

import (
	"encoding/base64"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/walship/walship/change"
	"github.com/walship/walship/walerr"
)

// Header keys carried by every record (values are decimal text, except the
// lineage). Consumers deduplicate by HeaderLSN.
const (
	HeaderLSN         = "walship.lsn"           // the change's own LSN
	HeaderCommitLSN   = "walship.commit_lsn"    // the last LSN of its transaction
	HeaderTxnFirstLSN = "walship.txn_first_lsn" // the first LSN of its transaction
	HeaderLineage     = "walship.lineage"
	// HeaderAborted ("true") marks an aborted-range marker: a record of the
	// ordered topic with no key and a null value that stands for the LSNs
	// HeaderLSN (== HeaderTxnFirstLSN) through HeaderCommitLSN of a
	// transaction the log aborted midway, so that the topic accounts for
	// every LSN (docs/KAFKA.md, "Aborted ranges").
	HeaderAborted = "walship.aborted"
)

// IsAbortedMarker reports whether r is an aborted-range marker: a null
// value with HeaderAborted "true". It looks at the headers only for a
// null value.
func IsAbortedMarker(r *kgo.Record) bool {
	if r.Value != nil {
		return false
	}
	for _, h := range r.Headers {
		if h.Key == HeaderAborted {
			return string(h.Value) == "true"
		}
	}
	return false
}

// headerTxnFirstLSNOld is how earlier builds spelled HeaderTxnFirstLSN on
// the wire, against their own documentation. Writers
// no longer emit it; DecodeHeaders still reads it, because topics written
// by those builds stay readable for as long as Kafka keeps them
// (docs/KAFKA.md "Headers").
const headerTxnFirstLSNOld = "walship.Txn_first_lsn"

// Version is source.version in the envelope.
const Version = "walship-1"

// ErrMalformed is wrapped by every error of Decode. It is a kind of
// corruption: errors.Is(err, walerr.ErrCorruption) holds for those errors
// too.
var ErrMalformed = walerr.Kind("kafkawire: malformed record")

// Encoder builds the key and value of records. It is not safe for
// concurrent use; its buffers are reused only through the slices it returns
// being copied by the caller (AppendKey and AppendValue append to dst).
type Encoder struct {
	Database string // source.db
	Name     string // source.name
	Lineage  string
	// Now is the processing time written as ts_ms; default time.Now.
	Now func() time.Time

	// The parts of the envelope that are the same for every change of a
	// transaction, formatted for the last transaction encoded.
	tc txnCache
	// NowMS, if set, is ts_ms in Unix milliseconds, and Now is not
	// called: the sink reads the clock once per batch of changes it
	// encodes together.
	NowMS int64
	// Scratch buffers for the kinds object and a row's part of it.
	kinds, desc []byte
	// img holds a key image while it is written (appendKeyImage).
	img change.Row

	// Format is the record format: FormatJSON (the default, "") or
	// FormatJSONSchemas (schemas.go).
	Format string
	// plans, in FormatJSONSchemas, are the columns of the change being
	// encoded with their Kafka Connect schema and how their values are
	// written (nil in FormatJSON: every value in its natural form).
	plans   *colPlans
	planBuf *colPlans
}

// txnCache holds the per-transaction parts of the envelope and what they
// were formatted from: a transaction's changes (one to a few, typically)
// repeat them.
type txnCache struct {
	valid                bool
	firstLSN, commitLSN  uint64
	commitTime           time.Time
	header               change.TxHeader
	lineage              string
	srcTS, seqHead       []byte // source.ts_ms..ts_ns; the sequence's first element
	ids, txID, walshipTx []byte // source.txId..op's quote; transaction.id; walship.commit_lsn..origin
}

// txnParts returns the formatted per-transaction parts for t, formatting
// them only when t differs from the last transaction in any field they
// come from.
func (e *Encoder) txnParts(t *change.Committed) *txnCache {
	c := &e.tc
	h := &t.Header
	if c.valid && c.firstLSN == t.FirstLSN && c.commitLSN == t.CommitLSN && c.commitTime.Equal(t.CommitTime) &&
		c.header.Equal(*h) && c.lineage == e.Lineage {
		return c
	}
	c.valid, c.firstLSN, c.commitLSN, c.commitTime, c.header, c.lineage = true, t.FirstLSN, t.CommitLSN, t.CommitTime, *h, e.Lineage

	srcTime := t.CommitTime
	if !h.SourceCommitTime.IsZero() {
		srcTime = h.SourceCommitTime
	}
	b := append(c.srcTS[:0], `,"ts_ms":`...)
	b = strconv.AppendInt(b, srcTime.UnixMilli(), 10)
	b = append(b, `,"ts_us":`...)
	b = strconv.AppendInt(b, srcTime.UnixMicro(), 10)
	b = append(b, `,"ts_ns":`...)
	c.srcTS = strconv.AppendInt(b, srcTime.UnixNano(), 10)

	// sequence: Debezium's ["lastCommitLsn","currentLsn"] as a string; here
	// the source commit LSN (or null) and walship's LSN of the change.
	b = c.seqHead[:0]
	if h.SourceLSN != 0 {
		b = append(b, `\"`...)
		b = strconv.AppendUint(b, h.SourceLSN, 10)
		b = append(b, `\"`...)
	} else {
		b = append(b, "null"...)
	}
	c.seqHead = b

	b = append(c.ids[:0], `,"txId":`...)
	b = appendUintOrNull(b, h.XID)
	b = append(b, `,"lsn":`...)
	b = appendUintOrNull(b, h.SourceLSN)
	c.ids = append(b, `,"xmin":null},"op":"`...)

	b = append(c.txID[:0], `,"transaction":{"id":`...)
	c.txID = appendTxnID(b, t)

	b = append(c.walshipTx[:0], `,"commit_lsn":`...)
	b = strconv.AppendUint(b, t.CommitLSN, 10)
	b = append(b, `,"first_lsn":`...)
	b = strconv.AppendUint(b, t.FirstLSN, 10)
	b = append(b, `,"commit_time":"`...)
	b = t.CommitTime.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","lineage":`...)
	b = appendString(b, e.Lineage)
	b = append(b, `,"xid":`...)
	b = strconv.AppendUint(b, h.XID, 10)
	if h.SourceLSN != 0 {
		b = append(b, `,"source_lsn":"`...)
		b = change.AppendSourceLSN(b, h.SourceLSN)
		b = append(b, '"')
	}
	if !h.SourceCommitTime.IsZero() {
		b = append(b, `,"source_commit_time":"`...)
		b = h.SourceCommitTime.UTC().AppendFormat(b, time.RFC3339Nano)
		b = append(b, '"')
	}
	if h.Origin != "" {
		b = append(b, `,"origin":`...)
		b = appendString(b, h.Origin)
	}
	if h.Snapshot != 0 {
		b = append(b, `,"snapshot":`...)
		b = strconv.AppendUint(b, uint64(h.Snapshot), 10)
	}
	c.walshipTx = b
	return c
}

// Position says which change of a transaction a record carries.
type Position struct {
	Txn          *change.Committed
	Index        int // in Txn.Changes
	TableOrdinal int // 1-based among the changes of the same table in Txn
}

func (p Position) lsn() uint64 { return p.Txn.FirstLSN + uint64(p.Index) }

// AppendKey appends the record key of c: the key columns as a JSON object
// ({"prefix":...} for a logical message), or nothing (a null key) when c has
// no key. ok reports whether a key was written.
func (e *Encoder) AppendKey(dst []byte, c *change.Change) (out []byte, ok bool) {
	if e.Format == FormatJSONSchemas {
		return e.appendKeySchemas(dst, c)
	}
	if c.Op == change.Message && c.Message != nil {
		dst = append(dst, `{"prefix":`...)
		dst = appendString(dst, c.Message.Prefix)
		return append(dst, '}'), true
	}
	if c.Key == nil {
		return dst, false
	}
	var desc []byte
	dst, desc = appendRow(dst, e.desc[:0], c.Key, e.plans)
	e.desc = desc[:0]
	return dst, true
}

// AppendValue appends the JSON envelope of change p (see docs/KAFKA.md),
// in FormatJSONSchemas wrapped with its schema.
func (e *Encoder) AppendValue(dst []byte, p Position) []byte {
	if e.Format == FormatJSONSchemas {
		return e.appendValueSchemas(dst, p)
	}
	return e.appendEnvelope(dst, p)
}

// appendEnvelope appends the envelope of change p, its values as e.plans
// says.
func (e *Encoder) appendEnvelope(dst []byte, p Position) []byte {
	t := p.Txn
	c := &t.Changes[p.Index]
	kinds := e.kinds[:0] // the "kinds" object's members, if any
	dst = append(dst, `{"before":`...)
	beforeFromKey := keyImage(c)
	if beforeFromKey {
		dst, kinds = e.appendKeyImage(dst, kinds, c)
	} else {
		dst, kinds = e.appendRowKinds(dst, kinds, "before", c.Before)
	}
	dst = append(dst, `,"after":`...)
	dst, kinds = e.appendRowKinds(dst, kinds, "after", c.After)

	tc := e.txnParts(t)
	dst = append(dst, `,"source":{"version":"`+Version+`","connector":"postgresql","name":`...)
	dst = appendString(dst, e.Name)
	dst = append(dst, tc.srcTS...)
	dst = append(dst, `,"snapshot":"`...)
	dst = append(dst, snapshotMarker(p)...)
	dst = append(dst, '"')
	dst = append(dst, `,"db":`...)
	dst = appendString(dst, e.Database)
	dst = append(dst, `,"sequence":"[`...)
	dst = append(dst, tc.seqHead...)
	dst = append(dst, `,\"`...)
	dst = strconv.AppendUint(dst, p.lsn(), 10)
	dst = append(dst, `\"]","schema":`...)
	dst = appendString(dst, c.Table.Schema)
	dst = append(dst, `,"table":`...)
	dst = appendString(dst, c.Table.Name)
	dst = append(dst, tc.ids...)
	dst = append(dst, byte(c.Op))
	dst = append(dst, `","ts_ms":`...)
	ms := e.NowMS
	if ms == 0 {
		now := time.Now
		if e.Now != nil {
			now = e.Now
		}
		ms = now().UnixMilli()
	}
	dst = strconv.AppendInt(dst, ms, 10)
	dst = append(dst, tc.txID...)
	dst = append(dst, `,"total_order":`...)
	dst = strconv.AppendInt(dst, int64(p.Index+1), 10)
	dst = append(dst, `,"data_collection_order":`...)
	dst = strconv.AppendInt(dst, int64(p.TableOrdinal), 10)
	dst = append(dst, '}')
	if m := c.Message; m != nil {
		dst = append(dst, `,"message":{"prefix":`...)
		dst = appendString(dst, m.Prefix)
		dst = append(dst, `,"content":"`...)
		dst = base64.StdEncoding.AppendEncode(dst, m.Content)
		dst = append(dst, `","transactional":`...)
		dst = strconv.AppendBool(dst, m.Transactional)
		dst = append(dst, '}')
	}

	// The walship extension: what a Debezium consumer ignores and
	// walship's own consumer needs to rebuild the transaction exactly.
	dst = append(dst, `,"walship":{"lsn":`...)
	dst = strconv.AppendUint(dst, p.lsn(), 10)
	dst = append(dst, tc.walshipTx...)
	if c.Key != nil {
		dst = append(dst, `,"key":`...)
		dst, kinds = e.appendRowKinds(dst, kinds, "key", c.Key)
	}
	if beforeFromKey {
		dst = append(dst, `,"before_from_key":true`...)
	}
	e.kinds = kinds[:0]
	if len(kinds) > 0 {
		dst = append(dst, `,"kinds":{`...)
		dst = append(dst, kinds...)
		dst = append(dst, '}')
	}
	if len(c.Types) > 0 {
		dst = append(dst, `,"types":{`...)
		for i, ct := range c.Types {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendString(dst, ct.Name)
			dst = append(dst, ':')
			dst = appendString(dst, ct.Type)
		}
		dst = append(dst, '}')
	}
	return append(dst, "}}"...)
}

// snapshotBits are the bits of a snapshot position.
const snapshotBits = change.SnapshotTableFirst | change.SnapshotTableLast | change.SnapshotFirstTable | change.SnapshotLastTable |
	change.SnapshotIncremental

// snapshotMarker returns source.snapshot for change p as Debezium sets it:
// "false" for a streamed change; for a snapshot read "last" (the last row
// of the snapshot), "first" (its first row), "last_in_data_collection" and
// "first_in_data_collection" (a table's last and first row), else "true",
// checked in that order. Where a row lies comes from the transaction's
// snapshot position (a chunk holds rows of one table); reads without one
// (logs written before it was recorded, other sources) are "true". A read
// of an incremental snapshot chunk is "incremental".
func snapshotMarker(p Position) string {
	t := p.Txn
	if t.Changes[p.Index].Op != change.Read {
		return "false"
	}
	pos := t.Header.Snapshot
	if pos&change.SnapshotIncremental != 0 {
		return "incremental"
	}
	first := pos&change.SnapshotTableFirst != 0 && p.Index == 0
	last := pos&change.SnapshotTableLast != 0 && p.Index == len(t.Changes)-1
	switch {
	case last && pos&change.SnapshotLastTable != 0:
		return "last"
	case first && pos&change.SnapshotFirstTable != 0:
		return "first"
	case last:
		return "last_in_data_collection"
	case first:
		return "first_in_data_collection"
	}
	return "true"
}

// keyImage reports whether the envelope's before of c is the key image
// Debezium writes where PostgreSQL sent only the old key (REPLICA IDENTITY
// DEFAULT or USING INDEX): a delete, or an update that changed the key,
// with a key and no old row. An update that kept its key has no before,
// as PostgreSQL sends no old tuple for it.
func keyImage(c *change.Change) bool {
	if c.Before != nil || c.Key == nil {
		return false
	}
	switch c.Op {
	case change.Delete:
		return true
	case change.Update:
		for _, k := range c.Key {
			if v, ok := c.After.Get(k.Name); !ok || !v.Equal(k.Value) {
				return true
			}
		}
	}
	return false
}

// appendKeyImage appends the key image of c as before: every column of
// the table (c.Types, in order) with the key's value for a key column and
// null for the others, as Debezium builds it from PostgreSQL's old-key
// tuple; the key alone when c.Types does not name every key column (a
// change from another source). Its kinds go to kinds as "before".
func (e *Encoder) appendKeyImage(dst, kinds []byte, c *change.Change) ([]byte, []byte) {
	covered := len(c.Types) > 0
	for _, k := range c.Key {
		if _, ok := c.TypeOf(k.Name); !ok {
			covered = false
			break
		}
	}
	if !covered {
		return e.appendRowKinds(dst, kinds, "before", c.Key)
	}
	img := e.img[:0]
	for _, t := range c.Types {
		v, _ := c.Key.Get(t.Name) // the zero Value is null
		img = append(img, change.Column{Name: t.Name, Value: v})
	}
	dst, kinds = e.appendRowKinds(dst, kinds, "before", img)
	clear(img)
	e.img = img[:0]
	return dst, kinds
}

// appendTxnID writes transaction.id: Debezium's "<txId>:<lsn>" when the
// source gave both, else "walship:<commit LSN>" (unique within a lineage).
func appendTxnID(dst []byte, t *change.Committed) []byte {
	dst = append(dst, '"')
	if t.Header.XID != 0 && t.Header.SourceLSN != 0 {
		dst = strconv.AppendUint(dst, t.Header.XID, 10)
		dst = append(dst, ':')
		dst = strconv.AppendUint(dst, t.Header.SourceLSN, 10)
	} else {
		dst = append(dst, "walship:"...)
		dst = strconv.AppendUint(dst, t.CommitLSN, 10)
	}
	return append(dst, '"')
}

func appendUintOrNull(dst []byte, v uint64) []byte {
	if v == 0 {
		return append(dst, "null"...)
	}
	return strconv.AppendUint(dst, v, 10)
}

// appendRowKinds appends row r (null if absent) and, if any column is not
// in its natural JSON kind, the member `"name":{col:desc,...}` to kinds.
func (e *Encoder) appendRowKinds(dst, kinds []byte, name string, r change.Row) ([]byte, []byte) {
	if r == nil {
		return append(dst, "null"...), kinds
	}
	var desc []byte
	dst, desc = appendRow(dst, e.desc[:0], r, e.plans)
	e.desc = desc[:0] // desc is copied to kinds below, before its next use
	if len(desc) > 0 {
		if len(kinds) > 0 {
			kinds = append(kinds, ',')
		}
		kinds = append(kinds, '"')
		kinds = append(kinds, name...)
		kinds = append(kinds, `":{`...)
		kinds = append(kinds, desc...)
		kinds = append(kinds, '}')
	}
	return dst, kinds
}

// appendRow appends r as a JSON object and the members of its kinds object
// to desc; plans (nil: none) say how to write each column's values.
func appendRow(dst, desc []byte, r change.Row, plans *colPlans) ([]byte, []byte) {
	dst = append(dst, '{')
	for i, col := range r {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, col.Name)
		dst = append(dst, ':')
		mark := len(desc)
		if mark > 0 {
			desc = append(desc, ',')
		}
		desc = appendString(desc, col.Name)
		desc = append(desc, ':')
		var natural bool
		if plans == nil {
			dst, desc, natural = appendValue(dst, desc, col.Value, convNone)
			if natural {
				desc = desc[:mark]
			}
			continue
		}
		d := len(desc)
		dst, desc, natural = appendValue(dst, desc, col.Value, plans.conv(i, col.Name))
		switch {
		case natural:
			desc = desc[:mark]
		case desc[d] == '[':
			// An array's descriptor, as a string: a Kafka Connect map
			// holds values of one type.
			plans.scratch = append(plans.scratch[:0], desc[d:]...)
			desc = appendString(desc[:d], string(plans.scratch))
		}
	}
	return append(dst, '}'), desc
}

// appendValue appends v in its Debezium-like JSON form to dst and its kind
// descriptor to desc; natural reports that v needs none (null, bool, int,
// text, and arrays of those), in which case what was appended to desc is
// garbage for the caller to cut.
//
// conv says how a timestamp is written: as RFC 3339 text (convNone), or as
// the integer Kafka Connect's semantic type holds (convMicros, convDays;
// the caller checked that the value is exact in it).
func appendValue(dst, desc []byte, v change.Value, conv convMode) (_, _ []byte, natural bool) {
	switch v.Kind() {
	case change.KindNull:
		return append(dst, "null"...), desc, true
	case change.KindBool:
		b, _ := v.Bool()
		return strconv.AppendBool(dst, b), desc, true
	case change.KindInt:
		i, _ := v.Int()
		return strconv.AppendInt(dst, i, 10), desc, true
	case change.KindText:
		s, _ := v.Text()
		return appendString(dst, s), desc, true
	case change.KindFloat:
		f, _ := v.Float()
		switch {
		case math.IsNaN(f):
			dst = append(dst, `"NaN"`...)
		case math.IsInf(f, 1):
			dst = append(dst, `"Infinity"`...)
		case math.IsInf(f, -1):
			dst = append(dst, `"-Infinity"`...)
		default:
			dst = strconv.AppendFloat(dst, f, 'g', -1, 64)
		}
		return dst, append(desc, `"float"`...), false
	case change.KindNumeric:
		s, _ := v.Numeric()
		return appendString(dst, s), append(desc, `"numeric"`...), false
	case change.KindBytes:
		b, _ := v.Bytes()
		dst = append(dst, '"')
		dst = base64.StdEncoding.AppendEncode(dst, b)
		return append(dst, '"'), append(desc, `"bytes"`...), false
	case change.KindTimestamp:
		t, _ := v.Timestamp()
		switch conv {
		case convMicros:
			return strconv.AppendInt(dst, t.UnixMicro(), 10), append(desc, `"micros"`...), false
		case convDays:
			return strconv.AppendInt(dst, t.Unix()/secondsPerDay, 10), append(desc, `"days"`...), false
		}
		dst = append(dst, '"')
		dst = t.UTC().AppendFormat(dst, time.RFC3339Nano)
		return append(dst, '"'), append(desc, `"timestamp"`...), false
	case change.KindJSON:
		raw, _ := v.JSON()
		return appendString(dst, string(raw)), append(desc, `"json"`...), false
	case change.KindUnknown:
		typ, text, _ := v.Unknown()
		return appendString(dst, text), appendString(desc, "unknown:"+typ), false
	case change.KindArray:
		elems, _ := v.Array()
		dst = append(dst, '[')
		mark := len(desc)
		desc = append(desc, '[')
		allNatural := true
		for i, el := range elems {
			if i > 0 {
				dst = append(dst, ',')
				desc = append(desc, ',')
			}
			em := len(desc)
			var nat bool
			dst, desc, nat = appendValue(dst, desc, el, conv)
			if nat {
				desc = append(desc[:em], "null"...)
			} else {
				allNatural = false
			}
		}
		dst = append(dst, ']')
		if allNatural {
			return dst, desc[:mark], true
		}
		return dst, append(desc, ']'), false
	}
	panic(fmt.Sprintf("kafkawire: unknown value kind %v", v.Kind()))
}

// appendString appends s as a JSON string (change's escaping: invalid
// UTF-8 becomes U+FFFD; change.Validate forbids it in everything but bytes
// and message content, which are base64 here).
func appendString(dst []byte, s string) []byte { return change.AppendJSONString(dst, s) }

// ---- Decoding ----

// Event is one decoded record of a walship topic.
type Event struct {
	LSN, CommitLSN, FirstLSN uint64
	CommitTime               time.Time
	Lineage                  string
	// Tombstone: the null-value record that follows a delete; Header and
	// Change are empty.
	Tombstone bool
	// Aborted: an aborted-range marker (IsAbortedMarker) for the LSNs
	// FirstLSN (== LSN) through CommitLSN, which hold nothing to apply;
	// CommitTime is the record's timestamp (the abort's time, to the
	// millisecond); Header and Change are empty.
	Aborted bool
	Header  change.TxHeader
	Change  change.Change
}

// headerUint returns the decimal header key of r (or, if key is
// HeaderTxnFirstLSN, of its old spelling headerTxnFirstLSNOld).
func headerUint(r *kgo.Record, key string) (uint64, bool, error) {
	for _, h := range r.Headers {
		if h.Key == key || key == HeaderTxnFirstLSN && h.Key == headerTxnFirstLSNOld {
			v, err := strconv.ParseUint(string(h.Value), 10, 64)
			if err != nil {
				return 0, true, fmt.Errorf("%w: header %s: %q is not a decimal LSN", ErrMalformed, key, h.Value)
			}
			return v, true, nil
		}
	}
	return 0, false, nil
}

// DecodeHeaders reads the position headers of r: its LSN, commit LSN, first
// LSN of its transaction and lineage. The first LSN is read from
// HeaderTxnFirstLSN or, in a record written by an earlier build, from its
// old spelling "walship.Txn_first_lsn".
func DecodeHeaders(r *kgo.Record) (lsn, commitLSN, firstLSN uint64, lineage string, err error) {
	var ok bool
	for _, k := range []struct {
		key string
		dst *uint64
	}{{HeaderLSN, &lsn}, {HeaderCommitLSN, &commitLSN}, {HeaderTxnFirstLSN, &firstLSN}} {
		*k.dst, ok, err = headerUint(r, k.key)
		if err != nil {
			return
		}
		if !ok {
			err = fmt.Errorf("%w: header %s missing", ErrMalformed, k.key)
			return
		}
	}
	for _, h := range r.Headers {
		if h.Key == HeaderLineage {
			lineage = string(h.Value)
		}
	}
	if !(firstLSN <= lsn && lsn <= commitLSN) {
		err = fmt.Errorf("%w: headers: want txn_first_lsn %d <= lsn %d <= commit_lsn %d", ErrMalformed, firstLSN, lsn, commitLSN)
	}
	return
}

// Decode decodes a record written by the Sink back into the change it
// carries, exactly (change.Change.Equal to what was in the WAL). Errors
// wrap ErrMalformed and say what is wrong; Decode never panics.
func Decode(r *kgo.Record) (Event, error) {
	var ev Event
	var err error
	ev.LSN, ev.CommitLSN, ev.FirstLSN, ev.Lineage, err = DecodeHeaders(r)
	if err != nil {
		return ev, err
	}
	if r.Value == nil {
		if IsAbortedMarker(r) {
			if ev.LSN != ev.FirstLSN || ev.CommitLSN == ev.LSN {
				return ev, fmt.Errorf("%w: aborted-range marker at lsn %d: want lsn == txn_first_lsn < commit_lsn %d", ErrMalformed, ev.LSN, ev.CommitLSN)
			}
			ev.Aborted, ev.CommitTime = true, r.Timestamp.UTC()
			return ev, nil
		}
		ev.Tombstone = true
		return ev, nil
	}
	fail := func(format string, args ...any) (Event, error) {
		return ev, fmt.Errorf("%w: lsn %d: %s", ErrMalformed, ev.LSN, fmt.Sprintf(format, args...))
	}
	value, err := unwrapSchemas(r.Value)
	if err != nil {
		return fail("value: %v", err)
	}
	var (
		rawBefore, rawAfter, rawKey, rawTypes []byte
		op, schema, table                     string
		msg                                   *change.LogicalMessage
		haveWalship                           bool
		wLSN, wCommit, wFirst                 uint64
		kinds                                 = map[string]rawKinds{}
		sourceLSN                             string
		beforeFromKey                         bool
	)
	s := &scanner{b: value}
	err = s.object(func(k string) error {
		var err error
		switch k {
		case "before":
			rawBefore, err = s.skip(0)
		case "after":
			rawAfter, err = s.skip(0)
		case "op":
			op, err = s.str()
		case "source":
			err = s.object(func(k string) error {
				var err error
				switch k {
				case "schema":
					schema, err = s.str()
				case "table":
					table, err = s.str()
				default:
					_, err = s.skip(0)
				}
				return err
			})
		case "message":
			if s.isNull() {
				return nil
			}
			msg = &change.LogicalMessage{}
			err = s.object(func(k string) error {
				var err error
				switch k {
				case "prefix":
					msg.Prefix, err = s.str()
				case "content":
					var c string
					if c, err = s.str(); err == nil {
						if msg.Content, err = base64.StdEncoding.DecodeString(c); err != nil {
							err = fmt.Errorf("message.content: %v", err)
						}
					}
				case "transactional":
					msg.Transactional, err = s.boolean()
				default:
					_, err = s.skip(0)
				}
				return err
			})
		case "walship":
			haveWalship = true
			err = s.object(func(k string) error {
				var err error
				switch k {
				case "lsn":
					wLSN, err = s.uint()
				case "commit_lsn":
					wCommit, err = s.uint()
				case "first_lsn":
					wFirst, err = s.uint()
				case "commit_time":
					ev.CommitTime, err = s.timestamp()
				case "xid":
					ev.Header.XID, err = s.uint()
				case "source_lsn":
					sourceLSN, err = s.str()
				case "source_commit_time":
					ev.Header.SourceCommitTime, err = s.timestamp()
				case "origin":
					ev.Header.Origin, err = s.str()
				case "snapshot":
					var v uint64
					if v, err = s.uint(); err == nil {
						ev.Header.Snapshot = change.SnapshotPos(v)
						if v == 0 || v&^uint64(snapshotBits) != 0 {
							err = fmt.Errorf("snapshot position %d: want a set of the bits %d", v, snapshotBits)
						}
					}
				case "key":
					rawKey, err = s.skip(0)
				case "before_from_key":
					beforeFromKey, err = s.boolean()
				case "kinds":
					err = s.object(func(k string) error {
						var err error
						kinds[k], err = s.kinds()
						return err
					})
				case "types":
					rawTypes, err = s.skip(0)
				default:
					_, err = s.skip(0)
				}
				if err != nil {
					return fmt.Errorf("walship.%s: %w", k, err)
				}
				return nil
			})
		default:
			_, err = s.skip(0)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
		return nil
	})
	if err == nil && (s.peek() != 0 || s.pos != len(s.b)) {
		err = s.fail("data after the envelope")
	}
	if err != nil {
		return fail("value: %v", err)
	}
	if !haveWalship {
		return fail(`no "walship" object`)
	}
	if wLSN != ev.LSN || wCommit != ev.CommitLSN || wFirst != ev.FirstLSN {
		return fail("walship.lsn/commit_lsn/first_lsn %d/%d/%d differ from the headers", wLSN, wCommit, wFirst)
	}
	if sourceLSN != "" {
		if ev.Header.SourceLSN, err = change.ParseSourceLSN(sourceLSN); err != nil {
			return fail("walship.source_lsn: %v", err)
		}
	}
	if err := decodeTxnHeaders(r, &ev.Header); err != nil {
		return ev, fmt.Errorf("lsn %d: %w", ev.LSN, err)
	}
	c := &ev.Change
	if c.Op, err = change.ParseOp(op); err != nil {
		return fail("op: %v", err)
	}
	if c.Op != change.Message || table != "" {
		c.Table = change.Table{Schema: schema, Name: table}
	}
	for _, part := range []struct {
		name string
		raw  []byte
		dst  *change.Row
	}{{"walship.key", rawKey, &c.Key}, {"before", rawBefore, &c.Before}, {"after", rawAfter, &c.After}} {
		if part.raw == nil {
			continue
		}
		k := kinds[part.name]
		if part.name == "walship.key" {
			k = kinds["key"]
		}
		if *part.dst, err = (&scanner{b: part.raw}).row(k); err != nil {
			return fail("%s: %v", part.name, err)
		}
	}
	if beforeFromKey {
		if c.Key == nil {
			return fail("walship.before_from_key without walship.key")
		}
		// before is the key image the envelope shows Debezium consumers;
		// the change itself has no old row (its key is walship.key).
		c.Before = nil
	}
	if rawTypes != nil {
		ts := &scanner{b: rawTypes}
		if !ts.isNull() {
			err := ts.object(func(name string) error {
				typ, err := ts.str()
				c.Types = append(c.Types, change.ColumnType{Name: name, Type: typ})
				return err
			})
			if err != nil {
				return fail("walship.types: %v", err)
			}
		}
	}
	c.Message = msg
	return ev, nil
}

func cutPrefix(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && s[:len(prefix)] == prefix {
		return s[len(prefix):], true
	}
	return "", false
}

// OrderedRecords returns the records the Sink sends for t in ordered mode
// (topic OrderedTopic(prefix), partition 0, tombstones after deletes if
// asked): the same keys, values and headers. The bench gives them to a bare
// producer as the reference.
func (e *Encoder) OrderedRecords(t *change.Committed, prefix string, tombstones bool) []*kgo.Record {
	topic := OrderedTopic(prefix)
	commit := []byte(strconv.FormatUint(t.CommitLSN, 10))
	first := []byte(strconv.FormatUint(t.FirstLSN, 10))
	if t.Aborted {
		return []*kgo.Record{{Topic: topic, Headers: AbortedMarkerHeaders(nil, first, commit, []byte(e.Lineage)), Timestamp: t.CommitTime}}
	}
	ordinals := map[change.Table]int{}
	var out []*kgo.Record
	for i := range t.Changes {
		c := &t.Changes[i]
		ordinals[c.Table]++
		key, hasKey := e.AppendKey(nil, c)
		if !hasKey {
			key = nil
		}
		headers := []kgo.RecordHeader{
			{Key: HeaderLSN, Value: []byte(strconv.FormatUint(t.FirstLSN+uint64(i), 10))},
			{Key: HeaderCommitLSN, Value: commit},
			{Key: HeaderTxnFirstLSN, Value: first},
			{Key: HeaderLineage, Value: []byte(e.Lineage)},
		}
		if i == 0 {
			headers = AppendTxnHeaders(headers, &t.Header)
		}
		value := e.AppendValue(nil, Position{Txn: t, Index: i, TableOrdinal: ordinals[c.Table]})
		out = append(out, &kgo.Record{Topic: topic, Key: key, Value: value, Headers: headers, Timestamp: t.CommitTime})
		if tombstones && c.Op == change.Delete && hasKey {
			out = append(out, &kgo.Record{Topic: topic, Key: key, Headers: headers, Timestamp: t.CommitTime})
		}
	}
	return out
}

// AbortedMarkerHeaders appends the headers of the aborted-range marker for
// the LSNs first..last (decimal text) to dst: HeaderLSN first (the
// producer reads the LSN back from the first header), HeaderCommitLSN,
// HeaderTxnFirstLSN, HeaderLineage and HeaderAborted. The marker itself
// has no key and a null value, in the ordered topic only.
func AbortedMarkerHeaders(dst []kgo.RecordHeader, first, last, lineage []byte) []kgo.RecordHeader {
	return append(dst,
		kgo.RecordHeader{Key: HeaderLSN, Value: first},
		kgo.RecordHeader{Key: HeaderCommitLSN, Value: last},
		kgo.RecordHeader{Key: HeaderTxnFirstLSN, Value: first},
		kgo.RecordHeader{Key: HeaderLineage, Value: lineage},
		kgo.RecordHeader{Key: HeaderAborted, Value: abortedTrue},
	)
}

var abortedTrue = []byte("true")
