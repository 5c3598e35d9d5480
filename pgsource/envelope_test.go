package pgsource

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/walship/walship/change"
	"github.com/walship/walship/internal/pgtest"
	"github.com/walship/walship/kafkawire"
)

// customersDDL is the table of Debezium's PostgreSQL connector
// documentation (its change event examples), under each replica identity.
const customersDDL = `(id SERIAL, first_name VARCHAR(255) NOT NULL, last_name VARCHAR(255) NOT NULL, email VARCHAR(255) NOT NULL, PRIMARY KEY(id))`

// envelopes encodes every change of the log on table as the sink does
// and returns the envelopes parsed, with their record keys.
// envelope is the part of a record's value the golden tests compare; rows
// stay raw, so that the column order is compared too.
type envelope struct {
	Before, After json.RawMessage
	Op            string
	Source        map[string]any
}

func envelopes(t *testing.T, txns []change.Committed, table string) (vals []envelope, keys []string) {
	t.Helper()
	enc := &kafkawire.Encoder{Database: "postgres", Name: "PostgreSQL_server", Lineage: "L"}
	for i := range txns {
		for j := range txns[i].Changes {
			c := &txns[i].Changes[j]
			if c.Table.Name != table {
				continue
			}
			var v envelope
			if err := json.Unmarshal(enc.AppendValue(nil, kafkawire.Position{Txn: &txns[i], Index: j, TableOrdinal: 1}), &v); err != nil {
				t.Fatal(err)
			}
			k, _ := enc.AppendKey(nil, c)
			vals, keys = append(vals, v), append(keys, string(k))
		}
	}
	return vals, keys
}

// TestEnvelopeGoldenReplicaIdentity runs the create, update and delete
// examples of Debezium's PostgreSQL connector documentation against
// PostgreSQL under each replica identity and compares the envelopes field
// by field (not the ts fields) with what Debezium emits: before per
// replica identity (docs/KAFKA.md, "before"), after, op, source.
func TestEnvelopeGoldenReplicaIdentity(t *testing.T) {
	e := newEnv(t, pgtest.WithoutFsync())
	e.exec(`CREATE TABLE customers `+customersDDL,
		`CREATE TABLE customers_full `+customersDDL, `ALTER TABLE customers_full REPLICA IDENTITY FULL`,
		`CREATE TABLE customers_index `+customersDDL, `CREATE UNIQUE INDEX customers_index_email ON customers_index (email)`,
		`ALTER TABLE customers_index REPLICA IDENTITY USING INDEX customers_index_email`,
		`CREATE TABLE customers_nothing `+customersDDL, `ALTER TABLE customers_nothing REPLICA IDENTITY NOTHING`)
	r := e.run(testConfig(e.dsn))
	e.waitSlot("walship")
	for _, tab := range []string{"customers", "customers_full", "customers_index"} {
		e.exec(`INSERT INTO `+tab+` (first_name, last_name, email) VALUES ('Anne', 'Kretchmar', 'annek@noanswer.org')`,
			`UPDATE `+tab+` SET first_name = 'Anne Marie' WHERE id = 1`)
		if tab == "customers_index" {
			e.exec(`UPDATE ` + tab + ` SET email = 'anne@noanswer.org' WHERE id = 1`) // the identity changes
		} else {
			e.exec(`UPDATE ` + tab + ` SET id = 2 WHERE id = 1`) // the key changes
		}
		e.exec(`DELETE FROM ` + tab)
	}
	// NOTHING: PostgreSQL refuses updates and deletes while a publication
	// publishes them, so only inserts exist (before null).
	e.exec(`INSERT INTO customers_nothing (first_name, last_name, email) VALUES ('Anne', 'Kretchmar', 'annek@noanswer.org')`)
	c := e.conn()
	if _, err := c.Exec(t.Context(), `UPDATE customers_nothing SET first_name = 'x'`); err == nil || !strings.Contains(err.Error(), "does not have a replica identity") {
		t.Errorf("update under REPLICA IDENTITY NOTHING: %v, want PostgreSQL's refusal", err)
	}
	e.catchUp(r, 60*time.Second)
	r.stop()
	txns := readLog(t, e.w)

	const (
		anne   = `{"id":1,"first_name":"Anne","last_name":"Kretchmar","email":"annek@noanswer.org"}`
		marie  = `{"id":1,"first_name":"Anne Marie","last_name":"Kretchmar","email":"annek@noanswer.org"}`
		marie2 = `{"id":2,"first_name":"Anne Marie","last_name":"Kretchmar","email":"annek@noanswer.org"}`
		marieE = `{"id":1,"first_name":"Anne Marie","last_name":"Kretchmar","email":"anne@noanswer.org"}`
	)
	type event struct{ op, key, before, after string }
	for _, tc := range []struct {
		table string
		want  []event
	}{
		{"customers", []event{ // DEFAULT: the old key only, where PostgreSQL sends it
			{"c", `{"id":1}`, `null`, anne},
			{"u", `{"id":1}`, `null`, marie},
			{"u", `{"id":1}`, `{"id":1,"first_name":null,"last_name":null,"email":null}`, marie2},
			{"d", `{"id":2}`, `{"id":2,"first_name":null,"last_name":null,"email":null}`, `null`},
		}},
		{"customers_full", []event{ // FULL: the whole old row
			{"c", `{"id":1}`, `null`, anne},
			{"u", `{"id":1}`, anne, marie},
			{"u", `{"id":1}`, marie, marie2},
			{"d", `{"id":2}`, marie2, `null`},
		}},
		{"customers_index", []event{ // USING INDEX: the index's columns
			{"c", `{"email":"annek@noanswer.org"}`, `null`, anne},
			{"u", `{"email":"annek@noanswer.org"}`, `null`, marie},
			{"u", `{"email":"annek@noanswer.org"}`, `{"id":null,"first_name":null,"last_name":null,"email":"annek@noanswer.org"}`, marieE},
			{"d", `{"email":"anne@noanswer.org"}`, `{"id":null,"first_name":null,"last_name":null,"email":"anne@noanswer.org"}`, `null`},
		}},
		{"customers_nothing", []event{{"c", `{"id":1}`, `null`, anne}}},
	} {
		vals, keys := envelopes(t, txns, tc.table)
		if len(vals) != len(tc.want) {
			t.Errorf("%s: %d events, want %d", tc.table, len(vals), len(tc.want))
			continue
		}
		for i, w := range tc.want {
			v := vals[i]
			got := event{v.Op, keys[i], string(v.Before), string(v.After)}
			if got != w {
				t.Errorf("%s event %d:\n got %+v\nwant %+v", tc.table, i, got, w)
			}
			src := v.Source
			for k, want := range map[string]any{"connector": "postgresql", "name": "PostgreSQL_server", "db": "postgres",
				"schema": "public", "table": tc.table, "snapshot": "false"} {
				if src[k] != want {
					t.Errorf("%s event %d: source.%s %v, want %v", tc.table, i, k, src[k], want)
				}
			}
			for _, k := range []string{"txId", "lsn"} {
				if n, ok := src[k].(float64); !ok || n <= 0 {
					t.Errorf("%s event %d: source.%s %v, want a positive number", tc.table, i, k, src[k])
				}
			}
			if src["xmin"] != nil {
				t.Errorf("%s event %d: source.xmin %v, want null", tc.table, i, src["xmin"])
			}
		}
	}
}

// TestEnvelopeSnapshotMarkers: the initial snapshot's reads carry
// source.snapshot as Debezium sets it, over tables copied in chunks (one
// ending exactly at a chunk's end) with empty tables between and after
// them; a change streamed after it is "false".
func TestEnvelopeSnapshotMarkers(t *testing.T) {
	e := newEnv(t, pgtest.WithoutFsync())
	e.exec(`CREATE TABLE a (id int PRIMARY KEY)`, `INSERT INTO a SELECT generate_series(1, 3)`,
		`CREATE TABLE b (id int PRIMARY KEY)`,
		`CREATE TABLE c (id int PRIMARY KEY)`, `INSERT INTO c VALUES (1)`,
		`CREATE TABLE d (id int PRIMARY KEY)`, `INSERT INTO d SELECT generate_series(1, 4)`,
		`CREATE TABLE e (v int)`)
	cfg := testConfig(e.dsn)
	cfg.SnapshotChunkRows = 2
	r := e.run(cfg)
	e.waitSlot("walship")
	e.exec(`INSERT INTO a VALUES (4)`)
	e.catchUp(r, 60*time.Second)
	r.stop()
	var got []string
	for _, tab := range []string{"a", "b", "c", "d", "e"} {
		vals, _ := envelopes(t, readLog(t, e.w), tab)
		for _, v := range vals {
			got = append(got, tab+":"+v.Op+":"+v.Source["snapshot"].(string))
		}
	}
	want := "a:r:first a:r:true a:r:last_in_data_collection a:c:false c:r:last_in_data_collection " +
		"d:r:first_in_data_collection d:r:true d:r:true d:r:last"
	if g := strings.Join(got, " "); g != want {
		t.Errorf("events\n got %s\nwant %s", g, want)
	}
}
