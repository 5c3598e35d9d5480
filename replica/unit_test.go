package replica

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/walship/walship/change"
)

func TestNormalizeNumeric(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"1.50", "1.50"}, {"0", "0"}, {"-0", "0"}, {"-0.00", "0.00"}, {"007", "7"}, {"-12", "-12"},
		{"1e-7", "0.0000001"}, {"1.5e3", "1500"}, {"1.50e2", "150"}, {"1.234e1", "12.34"}, {"-2.5E-2", "-0.025"},
		{"123456789012345678901234567890.000000001", "123456789012345678901234567890.000000001"},
		{"NaN", "NaN"}, {"Infinity", "Infinity"}, {"-Infinity", "-Infinity"}, {"1e0", "1"}, {"0e5", "0"},
	} {
		if got := normalizeNumeric(tc.in); got != tc.want {
			t.Errorf("normalizeNumeric(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestParsePGArray(t *testing.T) {
	s := func(x string) *string { return &x }
	for _, tc := range []struct {
		in   string
		want []any
	}{
		{`{}`, []any{}},
		{`{1,NULL,"NULL","a \"b\" \\c",{x,y}}`, []any{s("1"), nil, s("NULL"), s(`a "b" \c`), []any{s("x"), s("y")}}},
		{`[0:1]={7,8}`, []any{s("7"), s("8")}},
	} {
		got, err := parsePGArray(tc.in)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parsePGArray(%q) = %v, %v", tc.in, got, err)
		}
	}
	for _, bad := range []string{``, `{`, `{1`, `{"a}`, `{1}x`, `{1,2}}`} {
		if _, err := parsePGArray(bad); err == nil {
			t.Errorf("parsePGArray(%q) accepted", bad)
		}
	}
}

func TestParseType(t *testing.T) {
	for _, tc := range []struct{ in, name, pg string }{
		{"int4", "int4", "int4"}, {"integer", "int4", "int4"}, {"numeric(10,2)", "numeric", "numeric"},
		{"_int4", "_int4", "int4[]"}, {"int4[]", "_int4", "int4[]"}, {"character varying(20)", "varchar", "varchar"},
		{"mood", "mood", "text"}, {"mood[]", "_mood", "text[]"}, {"timestamp with time zone", "timestamptz", "timestamptz"},
		{"char", "char", `"char"`},
	} {
		got := parseType(tc.in)
		if got.name != tc.name || got.pg != tc.pg {
			t.Errorf("parseType(%q) = %q/%q, want %q/%q", tc.in, got.name, got.pg, tc.name, tc.pg)
		}
	}
}

// TestCheckKeyTypes: checks compare character keys COLLATE "C" and no
// other type (PostgreSQL refuses a collation on uuid, inet, "char" and
// enums); uuid keys are supported because their lower-case hex text, as
// a SQLite replica holds it, orders by bytes as uuid orders by its 16
// bytes. char(n) keys are not: a SQLite replica holds them padded.
func TestCheckKeyTypes(t *testing.T) {
	for _, tc := range []struct {
		typ                   string
		collatable, supported bool
	}{
		{"text", true, true}, {"varchar", true, true}, {"character varying(8)", true, true},
		{"bpchar", true, false}, {"name", true, false},
		{"uuid", false, true}, {"int4", false, true}, {"int8", false, true},
		{"inet", false, false}, {"char", false, false}, {"mood", false, false}, {"numeric", false, false},
	} {
		if got := parseType(tc.typ).collatable(); got != tc.collatable {
			t.Errorf("%s: collatable %v, want %v", tc.typ, got, tc.collatable)
		}
		if got := KeySupported(tc.typ); got != tc.supported {
			t.Errorf("%s: KeySupported %v, want %v", tc.typ, got, tc.supported)
		}
	}
	// uuid order: byte order of the value is byte order of its text.
	us := []string{"00000000-0000-0000-0000-000000000000", "0000000a-0000-0000-0000-000000000000",
		"9fffffff-ffff-ffff-ffff-ffffffffffff", "a0000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-fffffffffff0"}
	for i := 1; i < len(us); i++ {
		a, _ := hex.DecodeString(strings.ReplaceAll(us[i-1], "-", ""))
		b, _ := hex.DecodeString(strings.ReplaceAll(us[i], "-", ""))
		if bytes.Compare(a, b) >= 0 || us[i-1] >= us[i] {
			t.Errorf("%s, %s: bytes and text order disagree", us[i-1], us[i])
		}
	}
}

// TestNanoseconds: SQLite keeps a timestamp's nanoseconds, Postgres rounds
// them to its microseconds (documented).
func TestNanoseconds(t *testing.T) {
	v := ts(time.Date(2026, 3, 4, 5, 6, 7, 123456789, time.UTC))
	want := map[string]string{"sqlite": "2026-03-04T05:06:07.123456789Z", "postgres": "2026-03-04T05:06:07.123457Z"}
	backends(t, func(t *testing.T, url string) {
		a := open(t, url, Options{})
		apply(t, a, txn(1, ins("t", []string{"id"}, row("id", 1, "at", v))))
		kind, _, _ := ParseURL(url)
		if got, w := dump(t, url)["t"][0], fmt.Sprintf(`{"at":%q,"id":"1"}`, want[kind]); got != w {
			t.Errorf("got %s, want %s", got, w)
		}
	})
}

// TestConcurrentAppliers: two appliers on one replica (a consumer started
// twice by mistake) apply every txn exactly once between them.
func TestConcurrentAppliers(t *testing.T) {
	backends(t, func(t *testing.T, url string) {
		var txns []change.Committed
		for i := 1; i <= 300; i++ {
			txns = append(txns, txn(uint64(i), ins("t", []string{"id"}, row("id", i)), upd("c", row("id", 0), row("id", 0, "n", i))))
		}
		apps := []Applier{open(t, url, Options{MaxBatchTxns: 7}), open(t, url, Options{MaxBatchTxns: 5})}
		var wg sync.WaitGroup
		for _, a := range apps {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < len(txns); i += 10 {
					if err := a.Apply(context.Background(), txns[i:min(i+10, len(txns))]); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		s0, s1 := apps[0].Stats(), apps[1].Stats()
		if s0.Applied+s1.Applied != 300 || s0.Applied+s0.Skipped != 300 || s1.Applied+s1.Skipped != 300 {
			t.Errorf("stats %+v and %+v: want 300 applied between them, each seeing all 300", s0, s1)
		}
		wantState(t, url, 300, 300, 600)
		if d := dump(t, url); len(d["t"]) != 300 || d["c"][0] != `{"id":"0","n":"300"}` {
			t.Errorf("%d rows, counter %v", len(d["t"]), d["c"])
		}
	})
}

// TestUntypedValues: changes without types (the HTTP source) get column
// types from their values, and both replicas dump alike.
func TestUntypedValues(t *testing.T) {
	r := row("id", 1, "b", true, "f", change.FloatValue(-2.5), "n", num("3.14159265358979323846"), "by", change.BytesValue([]byte("\x00x")),
		"ts", ts(time.Date(2020, 5, 6, 7, 8, 9, 10000, time.UTC)), "j", js(`{"k":[1,"2",null]}`),
		"ai", change.ArrayValue(change.IntValue(1), change.NullValue()), "aa", change.ArrayValue(change.ArrayValue(change.TextValue("x,y")), change.ArrayValue(change.TextValue("{z}"))),
		"ae", change.ArrayValue(), "iv", unk("interval", "01:00:00"), "odd", unk("tsvector", "'a' 'b'"), "nul", nil)
	var dumps []Tables
	backends(t, func(t *testing.T, url string) {
		a := open(t, url, Options{})
		apply(t, a, txn(1, ins("h", []string{"id"}, r)),
			// Missing key columns: an update keeps the old key, an insert fails.
			txn(2, upd("h", row("id", 1), row("b", false))))
		if err := a.Apply(context.Background(), []change.Committed{txn(3, ins("h", []string{"id"}, row("b", true)))}); err == nil || !strings.Contains(err.Error(), `key column "id" is missing`) {
			t.Errorf("insert without its key: %v", err)
		}
		dumps = append(dumps, dump(t, url))
	})
	if len(dumps) == 2 {
		if d := Diff(dumps[0], dumps[1]); d != "" {
			t.Errorf("SQLite and Postgres replicas differ:\n%s", d)
		}
		want := `{"aa":[["x,y"],["{z}"]],"ae":[],"ai":["1",null],"b":"f","by":"\\x0078","f":"-2.5","id":"1","iv":"01:00:00","j":"{\"k\":[1,\"2\",null]}","n":"3.14159265358979323846","nul":null,"odd":"'a' 'b'","ts":"2020-05-06T07:08:09.000010Z"}`
		if got := dumps[0]["h"]; len(got) != 1 || got[0] != want {
			t.Errorf("got %v\nwant %s", got, want)
		}
	}
}
