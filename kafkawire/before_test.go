package kafkawire

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/walship/walship/change"
)

// TestBeforeImage checks the envelope's before for each way PostgreSQL
// gives the old row (docs/KAFKA.md, "before"), and that the decoder gives
// back the change as the log holds it.
func TestBeforeImage(t *testing.T) {
	tab := change.Table{Schema: "public", Name: "customers"}
	types := []change.ColumnType{{Name: "id", Type: "int4"}, {Name: "first_name", Type: "varchar"}, {Name: "email", Type: "varchar"}}
	row := func(id int64, name string) change.Row {
		return change.Row{{Name: "id", Value: change.IntValue(id)}, {Name: "first_name", Value: change.TextValue(name)},
			{Name: "email", Value: change.TextValue(name + "@x")}}
	}
	key := func(id int64) change.Row { return change.Row{{Name: "id", Value: change.IntValue(id)}} }
	for _, tc := range []struct {
		name string
		c    change.Change
		want string
	}{
		{"delete, old key (DEFAULT, USING INDEX)", change.Change{Table: tab, Op: change.Delete, Key: key(1), Types: types},
			`{"id":1,"first_name":null,"email":null}`},
		{"update keeping the key (DEFAULT)", change.Change{Table: tab, Op: change.Update, Key: key(1), After: row(1, "b"), Types: types},
			`null`},
		{"update changing the key (DEFAULT)", change.Change{Table: tab, Op: change.Update, Key: key(1), After: row(2, "a"), Types: types},
			`{"id":1,"first_name":null,"email":null}`},
		{"delete, old row (FULL)", change.Change{Table: tab, Op: change.Delete, Key: key(1), Before: row(1, "a"), Types: types},
			`{"id":1,"first_name":"a","email":"a@x"}`},
		{"update, old row (FULL)", change.Change{Table: tab, Op: change.Update, Key: key(1), Before: row(1, "a"), After: row(1, "b"), Types: types},
			`{"id":1,"first_name":"a","email":"a@x"}`},
		{"delete without types (another source)", change.Change{Table: tab, Op: change.Delete, Key: key(1)},
			`{"id":1}`},
		{"insert", change.Change{Table: tab, Op: change.Insert, Key: key(1), After: row(1, "a"), Types: types}, `null`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			enc := &Encoder{Database: "db", Name: "n", Lineage: "L"}
			txn := change.Committed{FirstLSN: 1, CommitLSN: 1, Txn: change.Txn{Changes: []change.Change{tc.c}}}
			r := &kgo.Record{Value: enc.AppendValue(nil, Position{Txn: &txn, TableOrdinal: 1}), Headers: []kgo.RecordHeader{
				{Key: HeaderLSN, Value: []byte("1")}, {Key: HeaderCommitLSN, Value: []byte("1")}, {Key: HeaderTxnFirstLSN, Value: []byte("1")}}}
			var v struct{ Before json.RawMessage }
			if err := json.Unmarshal(r.Value, &v); err != nil {
				t.Fatal(err)
			}
			if string(v.Before) != tc.want {
				t.Errorf("before %s, want %s", v.Before, tc.want)
			}
			ev, err := Decode(r)
			if err != nil {
				t.Fatal(err)
			}
			if !ev.Change.Equal(&tc.c) {
				t.Errorf("decoded %+v\nwant %+v", ev.Change, tc.c)
			}
		})
	}
}

// TestBeforeOfOlderRecords: a record written before key images (a delete
// with a null before) and one with the whole old row decode as before.
func TestBeforeOfOlderRecords(t *testing.T) {
	h := []kgo.RecordHeader{{Key: HeaderLSN, Value: []byte("5")}, {Key: HeaderCommitLSN, Value: []byte("5")}, {Key: HeaderTxnFirstLSN, Value: []byte("5")}}
	for _, tc := range []struct {
		value  string
		before change.Row
	}{
		{`{"before":null,"after":null,"source":{"schema":"public","table":"t"},"op":"d","walship":{"lsn":5,"commit_lsn":5,"first_lsn":5,"commit_time":"2024-05-01T12:00:00Z","xid":0,"key":{"id":1}}}`, nil},
		{`{"before":{"id":1,"v":"x"},"after":null,"source":{"schema":"public","table":"t"},"op":"d","walship":{"lsn":5,"commit_lsn":5,"first_lsn":5,"commit_time":"2024-05-01T12:00:00Z","xid":0,"key":{"id":1}}}`,
			change.Row{{Name: "id", Value: change.IntValue(1)}, {Name: "v", Value: change.TextValue("x")}}},
	} {
		ev, err := Decode(&kgo.Record{Value: []byte(tc.value), Headers: h})
		if err != nil {
			t.Fatal(err)
		}
		if !ev.Change.Before.Equal(tc.before) || !reflect.DeepEqual(ev.Change.Key, change.Row{{Name: "id", Value: change.IntValue(1)}}) {
			t.Errorf("%s: decoded %+v", tc.value, ev.Change)
		}
	}
	bad := `{"before":{"id":1},"after":null,"source":{"schema":"public","table":"t"},"op":"d","walship":{"lsn":5,"commit_lsn":5,"first_lsn":5,"commit_time":"2024-05-01T12:00:00Z","xid":0,"before_from_key":true}}`
	if _, err := Decode(&kgo.Record{Value: []byte(bad), Headers: h}); err == nil {
		t.Error("before_from_key without a key decoded")
	}
}

// TestSnapshotMarkers: source.snapshot of the reads of snapshot chunks, by
// where the chunk lies, as Debezium sets it; the position travels in the
// walship object, so the decoded header equals the log's.
func TestSnapshotMarkers(t *testing.T) {
	tab := change.Table{Schema: "public", Name: "t"}
	read := func(id int64) change.Change {
		return change.Change{Table: tab, Op: change.Read, Key: change.Row{{Name: "id", Value: change.IntValue(id)}},
			After: change.Row{{Name: "id", Value: change.IntValue(id)}}}
	}
	const (
		tf, tl, ft, lt = change.SnapshotTableFirst, change.SnapshotTableLast, change.SnapshotFirstTable, change.SnapshotLastTable
	)
	for _, tc := range []struct {
		pos  change.SnapshotPos
		rows int
		want string
	}{
		{tf | ft, 3, "first true true"},                            // first chunk of the first table
		{tf | tl | ft, 3, "first true last_in_data_collection"},    // the whole first table
		{tf, 3, "first_in_data_collection true true"},              // a later table's first chunk
		{tl, 2, "true last_in_data_collection"},                    // its last chunk
		{tl | lt, 2, "true last"},                                  // the last table's last chunk
		{tf | tl | ft | lt, 2, "first last"},                       // the only table
		{tf | tl | ft | lt, 1, "last"},                             // a one-row snapshot
		{tf | tl, 1, "last_in_data_collection"},                    // a one-row table
		{ft | lt, 2, "true true"},                                  // a middle chunk
		{0, 2, "true true"},                                        // no position (older logs)
		{change.SnapshotIncremental, 2, "incremental incremental"}, // an incremental snapshot chunk
	} {
		txn := change.Committed{FirstLSN: 1, CommitLSN: uint64(tc.rows), Txn: change.Txn{Header: change.TxHeader{Origin: "pg", Snapshot: tc.pos}}}
		for i := range tc.rows {
			txn.Changes = append(txn.Changes, read(int64(i)))
		}
		enc := &Encoder{Database: "db", Name: "n", Lineage: "L"}
		var got []string
		for i := range txn.Changes {
			r := &kgo.Record{Value: enc.AppendValue(nil, Position{Txn: &txn, Index: i, TableOrdinal: i + 1}), Headers: []kgo.RecordHeader{
				{Key: HeaderLSN, Value: []byte(itoa(uint64(i + 1)))}, {Key: HeaderCommitLSN, Value: []byte(itoa(txn.CommitLSN))}, {Key: HeaderTxnFirstLSN, Value: []byte("1")}}}
			var v struct{ Source struct{ Snapshot string } }
			if err := json.Unmarshal(r.Value, &v); err != nil {
				t.Fatal(err)
			}
			got = append(got, v.Source.Snapshot)
			ev, err := Decode(r)
			if err != nil || !ev.Header.Equal(txn.Header) {
				t.Errorf("position %d: decoded header %+v, %v; want %+v", tc.pos, ev.Header, err, txn.Header)
			}
		}
		if g := strings.Join(got, " "); g != tc.want {
			t.Errorf("position %d, %d rows: snapshot %s, want %s", tc.pos, tc.rows, g, tc.want)
		}
	}
	// A streamed change is "false"; a bad position is malformed.
	c := read(1)
	c.Op = change.Insert
	txn := change.Committed{FirstLSN: 1, CommitLSN: 1, Txn: change.Txn{Changes: []change.Change{c}}}
	if v := (&Encoder{}).AppendValue(nil, Position{Txn: &txn}); !strings.Contains(string(v), `"snapshot":"false"`) {
		t.Errorf("insert: %s", v)
	}
	bad := `{"before":null,"after":{"id":1},"source":{"schema":"public","table":"t"},"op":"r","walship":{"lsn":5,"commit_lsn":5,"first_lsn":5,"commit_time":"2024-05-01T12:00:00Z","xid":0,"snapshot":32}}`
	h := []kgo.RecordHeader{{Key: HeaderLSN, Value: []byte("5")}, {Key: HeaderCommitLSN, Value: []byte("5")}, {Key: HeaderTxnFirstLSN, Value: []byte("5")}}
	if _, err := Decode(&kgo.Record{Value: []byte(bad), Headers: h}); err == nil {
		t.Error("snapshot position 32 decoded")
	}
}
