package change

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

func TestParseTxnLine(t *testing.T) {
	pub := Table{"public", "t"}
	tests := []struct {
		name string
		in   string
		want Txn
	}{
		{"single", `{"table":"public.t","op":"c","key":{"id":1},"after":{"id":1,"v":"x"}}`,
			Txn{Changes: []Change{{Table: pub, Op: Insert, Key: Row{{"id", IntValue(1)}}, After: Row{{"id", IntValue(1)}, {"v", TextValue("x")}}}}}},
		{"key order kept", `{"op":"c","after":{"z":1,"a":2,"m":3},"table":"t"}`,
			Txn{Changes: []Change{{Table: pub, Op: Insert, After: Row{{"z", IntValue(1)}, {"a", IntValue(2)}, {"m", IntValue(3)}}}}}},
		{"whitespace and nulls", " \t{ \"table\" : \"t\", \"op\" : \"d\", \"key\" : { \"id\" : 1 }, \"before\": null, \"after\": null }\r\n",
			Txn{Changes: []Change{{Table: pub, Op: Delete, Key: Row{{"id", IntValue(1)}}}}}},
		{"changes with header", `{"xid":7,"source_lsn":"16/B374D848","commit_time":"2024-05-01T14:00:00.5+02:00","origin":"app","changes":[` +
			`{"table":"s.a","op":"u","key":{"id":1},"before":{"id":1,"n":1.50},"after":{"id":1,"n":{"$type":"numeric","value":"2"}},"types":{"id":"int8","n":"numeric"}},` +
			`{"table":"\"S\".\"b c\"","op":"t"},` +
			`{"op":"m","message":{"prefix":"p","content":"hi","transactional":true}},` +
			`{"op":"m","table":"t","message":{"content":{"$type":"bytes","value":"/wA="}}}]}`,
			Txn{
				Header: TxHeader{XID: 7, SourceLSN: 0x16B374D848, SourceCommitTime: time.Date(2024, 5, 1, 12, 0, 0, 5e8, time.UTC), Origin: "app"},
				Changes: []Change{
					{Table: Table{"s", "a"}, Op: Update, Key: Row{{"id", IntValue(1)}}, Before: Row{{"id", IntValue(1)}, {"n", mustNumeric(t, "1.50")}}, After: Row{{"id", IntValue(1)}, {"n", mustNumeric(t, "2")}}, Types: []ColumnType{{"id", "int8"}, {"n", "numeric"}}},
					{Table: Table{"S", "b c"}, Op: Truncate},
					{Op: Message, Message: &LogicalMessage{Prefix: "p", Content: []byte("hi"), Transactional: true}},
					{Op: Message, Table: pub, Message: &LogicalMessage{Content: []byte{0xff, 0}}},
				},
			}},
		{"header on single", `{"xid":1,"table":"t","op":"t"}`, Txn{Header: TxHeader{XID: 1}, Changes: []Change{{Table: pub, Op: Truncate}}}},
		{"empty rows", `{"table":"t","op":"u","before":{},"after":{}}`, Txn{Changes: []Change{{Table: pub, Op: Update, Before: Row{}, After: Row{}}}}},
		{"all value kinds", `{"table":"t","op":"r","after":{"n":null,"b":true,"i":-5,"f":{"$type":"float","value":-0},"num":123456789012345678901234567890.000000001,` +
			`"s":"é\u0000","by":{"$type":"bytes","value":"AAAA"},"ts":{"$type":"timestamp","value":"2024-01-01T00:00:00.000000001Z"},"j":{"a":[1, 2]},"arr":[[1],[]],"u":{"$type":"unknown","type":"money","value":"$1"}}}`,
			Txn{Changes: []Change{{Table: pub, Op: Read, After: Row{
				{"n", NullValue()}, {"b", BoolValue(true)}, {"i", IntValue(-5)}, {"f", FloatValue(negZero())},
				{"num", mustNumeric(t, "123456789012345678901234567890.000000001")}, {"s", TextValue("é\x00")},
				{"by", BytesValue([]byte{0, 0, 0})}, {"ts", mustTimestamp(t, "2024-01-01T00:00:00.000000001Z")},
				{"j", mustJSON(t, `{"a":[1,2]}`)}, {"arr", ArrayValue(ArrayValue(IntValue(1)), ArrayValue())}, {"u", UnknownValue("money", "$1")},
			}}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseTxnLine([]byte(tc.in))
			if err != nil {
				t.Fatalf("ParseTxnLine: %v", err)
			}
			if !got.Equal(&tc.want) {
				t.Errorf("ParseTxnLine =\n%+v\nwant\n%+v", got, tc.want)
			}
		})
	}
}

func negZero() float64 { var z float64; return -z }

func TestParseTxnLineErrors(t *testing.T) {
	const ok = `{"table":"t","op":"c","after":{"id":1}}`
	tests := []struct{ in, want string }{
		{``, `empty input`},
		{"\t\r", `empty input`},
		{`[]`, `expected a JSON object, got an array`},
		{`"x"`, `expected a JSON object, got a string`},
		{"{\"table\":\"t\xff\"}", `invalid UTF-8 at offset 11`},
		{`{"table":"t","op":"c","after":{"id":1}`, `unexpected end of JSON input`},
		{`{"table":"t","op":"c","after":{"id":1}}}`, `unexpected data after the JSON value at offset 39`},
		{ok + ` {}`, `unexpected data after the JSON value at offset 40`},
		{`{"table":"t","op":"c","after":{"id":1}} x`, `unexpected data after the JSON value at offset 40`},
		{`{"table":"t","op":"c","after":{"id":1},}`, `invalid JSON at offset 39: unexpected '}', expected an object key`},
		{`{"table":"t","op":"c","after":{"id":1},"bogus":1}`, `unknown field "bogus"`},
		{`{"table":"t","op":"c","op":"c","after":{"id":1}}`, `duplicate field "op"`},
		{`{"xid":1}`, `expected a change ("table", "op", ...) or "changes"`},
		{`{}`, `expected a change ("table", "op", ...) or "changes"`},
		{`{"changes":[]}`, `changes: empty transaction`},
		{`{"changes":null}`, `changes: expected an array of changes, got null`},
		{`{"changes":[1]}`, `changes[0]: expected a change object, got a number`},
		{`{"changes":[` + ok + `],"table":"t"}`, `table: not allowed together with "changes"`},
		{`{"changes":[` + ok + `,{"table":"t","op":"x"}]}`, `changes[1].op: unknown op "x" (want one of c, u, d, t, r, m)`},
		{`{"changes":[` + ok + `,{"table":"t","op":"c","after":{"id":1},"xid":1}]}`, `changes[1]: unknown field "xid"`},
		{`{"changes":[` + ok + `,` + ok + `,{"table":"t","op":"c","after":{"id":1,"v":tru}}]}`, `changes[2].after.v: invalid JSON at offset 137: unexpected '}', expected 'e' (in literal true)`},
		{`{"changes":[` + ok + `,` + ok + `,{"table":"t","op":"c","after":{"id":1,"v":{"$type":"bytes","value":"!"}}}]}`, `changes[2].after.v.value: $type "bytes": invalid base64: illegal base64 data at input byte 0`},
		{`{"changes":[` + ok + `,{"table":"t","op":"c"}]}`, `changes[1].after: required for op "c" (insert)`},
		{`{"table":"t","op":"c","after":{"a b":{"$type":"timestamp","value":"now"}}}`, `after["a b"].value: $type "timestamp": invalid RFC 3339 time "now"`},
		{`{"table":"t","op":"c"}`, `after: required for op "c" (insert)`},
		{`{"table":"t","op":"c","before":{"id":1},"after":{"id":1}}`, `before: not allowed for op "c" (insert)`},
		{`{"table":"t","op":"u","after":{"id":1}}`, `key: op "u" (update) needs key or before`},
		{`{"table":"t","op":"d"}`, `key: op "d" (delete) needs key or before`},
		{`{"table":"t","op":"d","key":{"id":1},"after":{"id":1}}`, `after: not allowed for op "d" (delete)`},
		{`{"table":"t","op":"t","key":{"id":1}}`, `key: not allowed for op "t" (truncate)`},
		{`{"op":"c","after":{"id":1}}`, `table: missing`},
		{`{"table":null,"op":"c","after":{"id":1}}`, `table: missing`},
		{`{"table":"t","after":{"id":1}}`, `op: missing`},
		{`{"table":"a.b.c","op":"t"}`, `table: invalid table name "a.b.c": more than two dot-separated parts`},
		{`{"table":"my table","op":"t"}`, `table: invalid table name "my table": unquoted identifier contains ' '; quote it with double quotes`},
		{`{"table":5,"op":"t"}`, `table: expected a string, got a number`},
		{`{"table":"t","op":"C"}`, `op: unknown op "C" (want one of c, u, d, t, r, m)`},
		{`{"table":"t","op":"c","after":[1]}`, `after: expected an object of columns or null, got an array`},
		{`{"table":"t","op":"c","after":{"v":1,"v":2}}`, `after.v: duplicate column`},
		{`{"table":"t","op":"c","after":{"":1}}`, `after[0]: empty column name`},
		{`{"table":"t","op":"c","after":{"id":1},"types":{"id":5}}`, `types.id: expected a string, got a number`},
		{`{"table":"t","op":"c","after":{"id":1},"types":{"id":"int8","id":"int4"}}`, `types.id: duplicate column`},
		{`{"table":"t","op":"c","after":{"id":1},"types":[]}`, `types: expected an object of type names or null, got an array`},
		{`{"op":"m"}`, `message: required for op "m" (message)`},
		{`{"op":"m","message":{"prefix":"p","content":5}}`, `message.content: expected a string or a {"$type":"bytes",...} object, got int`},
		{`{"op":"m","message":{"prefix":"p","extra":1}}`, `message: unknown field "extra"`},
		{`{"op":"m","message":{"transactional":"yes"}}`, `message.transactional: expected a boolean, got a string`},
		{`{"table":"t","op":"c","after":{"id":1},"message":{"prefix":"p"}}`, `message: not allowed for op "c" (insert); only for op "m"`},
		{`{"xid":-1,"table":"t","op":"t"}`, `xid: expected an unsigned 64-bit integer, got -1`},
		{`{"xid":"1","table":"t","op":"t"}`, `xid: expected an unsigned 64-bit integer, got a string`},
		{`{"source_lsn":"16-B3","table":"t","op":"t"}`, `source_lsn: invalid source LSN "16-B3" (want X/Y, hex)`},
		{`{"commit_time":"2024-13-01T00:00:00Z","table":"t","op":"t"}`, `commit_time: invalid RFC 3339 time "2024-13-01T00:00:00Z"`},
		{`{"origin":1,"table":"t","op":"t"}`, `origin: expected a string, got a number`},
	}
	for _, tc := range tests {
		_, err := ParseTxnLine([]byte(tc.in))
		if err == nil {
			t.Errorf("ParseTxnLine(%s): no error, want %q", tc.in, tc.want)
			continue
		}
		if got := err.Error(); got != tc.want {
			t.Errorf("ParseTxnLine(%s) error:\n got %q\nwant %q", tc.in, got, tc.want)
		}
		var ie *InvalidError
		if !errors.As(err, &ie) || !errors.Is(err, ErrInvalid) || ie.Line != 0 {
			t.Errorf("ParseTxnLine(%s) error %#v: want an *InvalidError wrapping ErrInvalid, Line 0", tc.in, err)
		}
	}
}

func TestParseTxnLineDoesNotAlias(t *testing.T) {
	line := []byte(`{"table":"t","op":"c","after":{"v":"text","j":{"a":1},"n":1.5}}`)
	txn, err := ParseTxnLine(line)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := ParseTxnLine(line)
	for i := range line {
		line[i] = 'X'
	}
	if !txn.Equal(&want) {
		t.Errorf("parsed transaction changed when its line was overwritten")
	}
}

type decoded struct {
	line int
	txn  Txn
	err  string
}

func decodeAll(t *testing.T, d *Decoder) []decoded {
	t.Helper()
	var out []decoded
	for range 100 {
		line, txn, err := d.Next()
		if err == io.EOF {
			return out
		}
		r := decoded{line: line, txn: txn}
		if err != nil {
			r.err = err.Error()
		}
		out = append(out, r)
		if err != nil && !errors.Is(err, ErrInvalid) {
			return out
		}
	}
	t.Fatal("Decoder did not stop")
	return nil
}

func TestDecoder(t *testing.T) {
	in := "\n" +
		`{"table":"t","op":"t"}` + "\r\n" +
		"   \t\n" +
		`{"table":"t","op":"x"}` + "\n" +
		`{"changes":[{"table":"a","op":"t"},{"table":"b","op":"t"}]}` + "\n" +
		"\n" +
		`{"table":"c","op":"t"}` // no final newline
	got := decodeAll(t, NewDecoder(strings.NewReader(in)))
	trunc := func(name string) Change { return Change{Table: Table{"public", name}, Op: Truncate} }
	want := []decoded{
		{line: 2, txn: Txn{Changes: []Change{trunc("t")}}},
		{line: 4, err: `line 4: op: unknown op "x" (want one of c, u, d, t, r, m)`},
		{line: 5, txn: Txn{Changes: []Change{trunc("a"), trunc("b")}}},
		{line: 7, txn: Txn{Changes: []Change{trunc("c")}}},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d results %+v, want %d", len(got), got, len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.line != w.line || g.err != w.err || (w.err == "" && !g.txn.Equal(&w.txn)) {
			t.Errorf("result %d = %+v, want %+v", i, g, w)
		}
	}
}

func TestDecoderLongLine(t *testing.T) {
	long := `{"table":"t","op":"c","after":{"v":"` + strings.Repeat("x", 100) + `"}}`
	in := `{"table":"t","op":"t"}` + "\n" + long + "\n" + `{"table":"t","op":"t"}` + "\n"
	d := newDecoderSize(strings.NewReader(in), 64)
	if _, _, err := d.Next(); err != nil {
		t.Fatal(err)
	}
	for range 2 { // sticky
		line, _, err := d.Next()
		if line != 2 || err == nil || err.Error() != "line 2: line longer than 64 bytes" || !errors.Is(err, ErrInvalid) {
			t.Fatalf("Next() = %d, %v; want line 2: line longer than 64 bytes", line, err)
		}
	}
	// A line of exactly the maximum is fine, with either terminator or none.
	exact := `{"table":"t","op":"c","after":{"v":"` + strings.Repeat("x", 64-39) + `"}}`
	if len(exact) != 64 {
		t.Fatalf("len(exact) = %d", len(exact))
	}
	for _, in := range []string{exact + "\n", exact + "\r\n", exact} {
		d := newDecoderSize(strings.NewReader(in), 64)
		if _, _, err := d.Next(); err != nil {
			t.Errorf("Next() on a %d-byte line: %v", len(exact), err)
		}
		if _, _, err := d.Next(); err != io.EOF {
			t.Errorf("second Next() = %v, want io.EOF", err)
		}
	}
	// 64 MiB lines fit the default.
	if NewDecoder(strings.NewReader("")).maxLine != 64<<20 {
		t.Error("default maximum line is not 64 MiB")
	}
}

func TestDecoderReadError(t *testing.T) {
	boom := errors.New("boom")
	r := io.MultiReader(strings.NewReader(`{"table":"t","op":"t"}`+"\n"), iotest.ErrReader(boom))
	d := NewDecoder(r)
	if _, _, err := d.Next(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		line, _, err := d.Next()
		if !errors.Is(err, boom) || line != 2 || err.Error() != "change: reading line 2: boom" {
			t.Errorf("Next() = %d, %v; want line 2 wrapping boom", line, err)
		}
	}
}
