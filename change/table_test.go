package change

import (
	"errors"
	"testing"
)

func TestParseTable(t *testing.T) {
	tests := []struct {
		in   string
		want Table
		str  string // canonical String()
	}{
		{"t", Table{"public", "t"}, "public.t"},
		{"public.t", Table{"public", "t"}, "public.t"},
		{"Sales.Orders", Table{"Sales", "Orders"}, "Sales.Orders"},
		{`"my schema"."T.x"`, Table{"my schema", "T.x"}, `"my schema"."T.x"`},
		{`s."a""b"`, Table{"s", `a"b`}, `s."a""b"`},
		{`"plain".t`, Table{"plain", "t"}, "plain.t"},
		{`"t"`, Table{"public", "t"}, "public.t"},
		{"схема.таблица_1", Table{"схема", "таблица_1"}, "схема.таблица_1"},
		{"s.$x", Table{"s", "$x"}, "s.$x"},
		{"1t", Table{"public", "1t"}, "public.1t"},
		{`"a-b"`, Table{"public", "a-b"}, `public."a-b"`},
	}
	for _, tc := range tests {
		got, err := ParseTable(tc.in)
		if err != nil {
			t.Errorf("ParseTable(%q): %v", tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("ParseTable(%q) = %#v, want %#v", tc.in, got, tc.want)
		}
		if s := got.String(); s != tc.str {
			t.Errorf("ParseTable(%q).String() = %q, want %q", tc.in, s, tc.str)
		}
		if back, err := ParseTable(got.String()); err != nil || back != got {
			t.Errorf("ParseTable(%q) = %#v, %v; want %#v", got.String(), back, err, got)
		}
	}
}

func TestParseTableErrors(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", `invalid table name "": empty`},
		{"a.b.c", `invalid table name "a.b.c": more than two dot-separated parts`},
		{"a.", `invalid table name "a.": empty identifier after '.'`},
		{".a", `invalid table name ".a": empty identifier`},
		{"a..b", `invalid table name "a..b": empty identifier`},
		{`"a`, `invalid table name "\"a": unterminated quoted identifier`},
		{`""`, `invalid table name "\"\"": empty quoted identifier`},
		{`"a"b`, `invalid table name "\"a\"b": unexpected 'b' after quoted identifier`},
		{"my table", `invalid table name "my table": unquoted identifier contains ' '; quote it with double quotes`},
		{"a-b", `invalid table name "a-b": unquoted identifier contains '-'; quote it with double quotes`},
		{"a\xff", `invalid table name "a\xff": invalid UTF-8`},
	}
	for _, tc := range tests {
		_, err := ParseTable(tc.in)
		if err == nil {
			t.Errorf("ParseTable(%q): no error, want %q", tc.in, tc.want)
			continue
		}
		if got := err.Error(); got != tc.want {
			t.Errorf("ParseTable(%q) error:\n got %q\nwant %q", tc.in, got, tc.want)
		}
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseTable(%q) error is not ErrInvalid", tc.in)
		}
	}
}

func TestOp(t *testing.T) {
	for _, op := range []Op{Insert, Update, Delete, Truncate, Read, Message} {
		got, err := ParseOp(op.String())
		if err != nil || got != op {
			t.Errorf("ParseOp(%q) = %v, %v; want %v", op.String(), got, err, op)
		}
	}
	if _, err := ParseOp("insert"); err == nil || err.Error() != `unknown op "insert" (want one of c, u, d, t, r, m)` {
		t.Errorf("ParseOp(insert) error = %v", err)
	}
	if got := Op('x').String(); got != "Op(0x78)" {
		t.Errorf("Op('x').String() = %q", got)
	}
	if got := Update.Name(); got != "update" {
		t.Errorf("Update.Name() = %q", got)
	}
}
