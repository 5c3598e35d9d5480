package change

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

func TestValidate(t *testing.T) {
	pub := Table{"public", "t"}
	id := Row{{"id", IntValue(1)}}
	deep := IntValue(0)
	for range MaxNesting + 1 {
		deep = ArrayValue(deep)
	}
	tests := []struct {
		name string
		c    Change
		want string // "" for valid
	}{
		{"insert", Change{Table: pub, Op: Insert, After: id}, ""},
		{"insert with key", Change{Table: pub, Op: Insert, Key: id, After: id}, ""},
		{"insert no after", Change{Table: pub, Op: Insert}, `after: required for op "c" (insert)`},
		{"insert with before", Change{Table: pub, Op: Insert, Before: id, After: id}, `before: not allowed for op "c" (insert)`},
		{"read no after", Change{Table: pub, Op: Read, Key: id}, `after: required for op "r" (read)`},
		{"update key", Change{Table: pub, Op: Update, Key: id, After: id}, ""},
		{"update before", Change{Table: pub, Op: Update, Before: id, After: id}, ""},
		{"update no after", Change{Table: pub, Op: Update, Key: id}, `after: required for op "u" (update)`},
		{"update no key", Change{Table: pub, Op: Update, After: id}, `key: op "u" (update) needs key or before`},
		{"delete key", Change{Table: pub, Op: Delete, Key: id}, ""},
		{"delete neither", Change{Table: pub, Op: Delete}, `key: op "d" (delete) needs key or before`},
		{"delete after", Change{Table: pub, Op: Delete, Key: id, After: id}, `after: not allowed for op "d" (delete)`},
		{"truncate", Change{Table: pub, Op: Truncate}, ""},
		{"truncate key", Change{Table: pub, Op: Truncate, Key: id}, `key: not allowed for op "t" (truncate)`},
		{"truncate empty after", Change{Table: pub, Op: Truncate, After: Row{}}, `after: not allowed for op "t" (truncate)`},
		{"message", Change{Op: Message, Message: &LogicalMessage{Prefix: "p"}}, ""},
		{"message table", Change{Op: Message, Table: pub, Message: &LogicalMessage{}}, ""},
		{"message none", Change{Op: Message}, `message: required for op "m" (message)`},
		{"message rows", Change{Op: Message, After: id, Message: &LogicalMessage{}}, `after: not allowed for op "m" (message)`},
		{"message on insert", Change{Table: pub, Op: Insert, After: id, Message: &LogicalMessage{}}, `message: not allowed for op "c" (insert); only for op "m"`},
		{"message prefix utf8", Change{Op: Message, Message: &LogicalMessage{Prefix: "\xff"}}, `message.prefix: invalid UTF-8`},
		{"no op", Change{Table: pub}, `op: missing`},
		{"bad op", Change{Table: pub, Op: 'x'}, `op: unknown op "x" (want one of c, u, d, t, r, m)`},
		{"no table", Change{Op: Truncate}, `table: missing`},
		{"no schema", Change{Table: Table{Name: "t"}, Op: Truncate}, `table: empty schema`},
		{"no name", Change{Table: Table{Schema: "s"}, Op: Truncate}, `table: empty name`},
		{"table utf8", Change{Table: Table{"s", "\xff"}, Op: Truncate}, `table: invalid UTF-8`},
		{"empty column", Change{Table: pub, Op: Insert, After: Row{{"a", IntValue(1)}, {"", IntValue(1)}}}, `after[1]: empty column name`},
		{"dup column", Change{Table: pub, Op: Insert, After: Row{{"a", IntValue(1)}, {"a", IntValue(2)}}}, `after.a: duplicate column`},
		{"dup column quoted", Change{Table: pub, Op: Insert, After: Row{{"a b", IntValue(1)}, {"a b", IntValue(2)}}}, `after["a b"]: duplicate column`},
		{"column utf8", Change{Table: pub, Op: Insert, After: Row{{"\xfe", IntValue(1)}}}, `after[0]: column name is not valid UTF-8`},
		{"text utf8", Change{Table: pub, Op: Update, Key: id, After: Row{{"v", TextValue("ok\xff")}}}, `after.v: text is not valid UTF-8`},
		{"nested text utf8", Change{Table: pub, Op: Delete, Before: Row{{"v", ArrayValue(NullValue(), ArrayValue(TextValue("\xff")))}}}, `before.v[1][0]: text is not valid UTF-8`},
		{"unknown no type", Change{Table: pub, Op: Delete, Key: Row{{"v", UnknownValue("", "x")}}}, `key.v: unknown-type value with an empty type name`},
		{"too deep", Change{Table: pub, Op: Insert, After: Row{{"v", deep}}}, `after.v` + strings.Repeat("[0]", MaxNesting) + `: arrays nested more than 64 deep`},
		{"types", Change{Table: pub, Op: Insert, After: id, Types: []ColumnType{{"id", "int8"}}}, ""},
		{"types dup", Change{Table: pub, Op: Insert, After: id, Types: []ColumnType{{"id", "int8"}, {"id", "int4"}}}, `types.id: duplicate column`},
		{"types empty type", Change{Table: pub, Op: Insert, After: id, Types: []ColumnType{{"id", ""}}}, `types.id: empty type name`},
		{"types empty name", Change{Table: pub, Op: Insert, After: id, Types: []ColumnType{{"", "x"}}}, `types[0]: empty column name`},
	}
	for _, tc := range tests {
		err := tc.c.Validate()
		got := ""
		if err != nil {
			got = err.Error()
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("%s: error %v is not ErrInvalid", tc.name, err)
			}
		}
		if got != tc.want {
			t.Errorf("%s: Validate() = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestValidateManyColumns(t *testing.T) {
	var r Row
	for i := range 100 {
		r = append(r, Column{Name: strings.Repeat("c", i+1), Value: IntValue(int64(i))})
	}
	c := Change{Table: Table{"s", "t"}, Op: Insert, After: r}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	c.After = append(c.After, Column{Name: "ccc"})
	if err := c.Validate(); err == nil || err.Error() != "after.ccc: duplicate column" {
		t.Errorf("Validate() = %v, want after.ccc: duplicate column", err)
	}
}

func TestTxnValidate(t *testing.T) {
	ok := Change{Table: Table{"s", "t"}, Op: Truncate}
	tests := []struct {
		txn  Txn
		want string
	}{
		{Txn{Changes: []Change{ok}}, ""},
		{Txn{}, "changes: empty transaction"},
		{Txn{Changes: []Change{ok, ok, {Table: Table{"s", "t"}, Op: Insert}}}, `changes[2].after: required for op "c" (insert)`},
		{Txn{Header: TxHeader{Origin: "\xff"}, Changes: []Change{ok}}, "origin: invalid UTF-8"},
		{Txn{Header: TxHeader{SourceCommitTime: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}, Changes: []Change{ok}}, "commit_time: outside years 0000-9999"},
	}
	for i, tc := range tests {
		err := tc.txn.Validate()
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != tc.want {
			t.Errorf("%d: Validate() = %q, want %q", i, got, tc.want)
		}
	}
}

func TestSourceLSN(t *testing.T) {
	tests := []struct {
		s    string
		lsn  uint64
		back string
	}{
		{"16/B374D848", 0x16B374D848, "16/B374D848"},
		{"0/0", 0, "0/0"},
		{"0/1", 1, "0/1"},
		{"ffffffff/ffffffff", 1<<64 - 1, "FFFFFFFF/FFFFFFFF"},
		{"00000016/0B374D84", 0x160B374D84, "16/B374D84"},
	}
	for _, tc := range tests {
		got, err := ParseSourceLSN(tc.s)
		if err != nil || got != tc.lsn {
			t.Errorf("ParseSourceLSN(%q) = %#x, %v; want %#x", tc.s, got, err, tc.lsn)
		}
		if s := FormatSourceLSN(tc.lsn); s != tc.back {
			t.Errorf("FormatSourceLSN(%#x) = %q, want %q", tc.lsn, s, tc.back)
		}
	}
	for _, s := range []string{"", "16", "16/", "/1", "1/2/3", "g/1", "123456789/0", "+1/2", "-1/2", " 1/2", "0x1/2"} {
		if _, err := ParseSourceLSN(s); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseSourceLSN(%q) error = %v, want ErrInvalid", s, err)
		}
	}
	if _, err := ParseSourceLSN("x"); err == nil || err.Error() != `invalid source LSN "x" (want X/Y, hex)` {
		t.Errorf("ParseSourceLSN(x) error = %v", err)
	}
}

func TestRowLookup(t *testing.T) {
	r := Row{{"b", IntValue(2)}, {"a", IntValue(1)}}
	if v, ok := r.Get("a"); !ok || !v.Equal(IntValue(1)) {
		t.Errorf("Get(a) = %v, %v", v, ok)
	}
	if _, ok := r.Get("c"); ok {
		t.Error("Get(c) ok")
	}
	if i := r.Index("b"); i != 0 {
		t.Errorf("Index(b) = %d", i)
	}
	if Row(nil).Equal(Row{}) {
		t.Error("absent row equals empty row")
	}
	var back Row
	if err := back.UnmarshalJSON([]byte(`{"z":1,"a":{"$type":"bytes","value":"AA=="}}`)); err != nil {
		t.Fatal(err)
	}
	want := Row{{"z", IntValue(1)}, {"a", BytesValue([]byte{0})}}
	if !back.Equal(want) {
		t.Errorf("UnmarshalJSON = %v, want %v", back, want)
	}
	if b, _ := want.MarshalJSON(); string(b) != `{"z":1,"a":{"$type":"bytes","value":"AA=="}}` {
		t.Errorf("MarshalJSON = %s", b)
	}
	if err := back.UnmarshalJSON([]byte(`{"a":1,"a":2}`)); err == nil || err.Error() != "a: duplicate column" {
		t.Errorf("UnmarshalJSON dup = %v", err)
	}
	c := Change{Types: []ColumnType{{"id", "int8"}}}
	if typ, ok := c.TypeOf("id"); !ok || typ != "int8" {
		t.Errorf("TypeOf(id) = %q, %v", typ, ok)
	}
}

func TestAppendSourceLSNMatchesFormat(t *testing.T) {
	for _, lsn := range []uint64{0, 1, 0xf, 0x10, 0x16B3748, 0x1_0000_0000, 0xABCDEF01_23456789, math.MaxUint64} {
		if got, want := string(AppendSourceLSN([]byte("x"), lsn)), "x"+FormatSourceLSN(lsn); got != want {
			t.Errorf("AppendSourceLSN(%#x) = %q, want %q", lsn, got, want)
		}
	}
}
