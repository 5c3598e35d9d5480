package change

import (
	"bytes"
	"encoding/json"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func sampleDumpLines(t testing.TB) []DumpLine {
	ct := time.Date(2024, 5, 1, 12, 0, 0, 1, time.UTC)
	var out []DumpLine
	for i, s := range sampleChanges(t) {
		d := DumpLine{LSN: uint64(100 + i), CommitLSN: uint64(100 + i + 1), CommitTime: ct.Add(time.Duration(i) * time.Second), Change: &s.c}
		if s.hdr != nil {
			d.Header = *s.hdr
		}
		out = append(out, d)
	}
	return out
}

func checkDumpEqual(t *testing.T, got, want DumpLine) {
	t.Helper()
	if got.LSN != want.LSN || got.CommitLSN != want.CommitLSN || !got.CommitTime.Equal(want.CommitTime) ||
		!got.Header.Equal(want.Header) || !got.Change.Equal(want.Change) {
		t.Errorf("ParseDumpLine =\n%+v %+v\nwant\n%+v %+v", got, *got.Change, want, *want.Change)
	}
}

func TestDumpRoundTrip(t *testing.T) {
	for _, d := range sampleDumpLines(t) {
		line := AppendDumpJSON(nil, d)
		if !json.Valid(line) || bytes.ContainsAny(line, "\n\r") {
			t.Fatalf("AppendDumpJSON = %s: not one line of valid JSON", line)
		}
		got, err := ParseDumpLine(line)
		if err != nil {
			t.Fatalf("ParseDumpLine(%s): %v", line, err)
		}
		checkDumpEqual(t, got, d)
	}
}

func TestDumpGolden(t *testing.T) {
	var out strings.Builder
	for _, d := range sampleDumpLines(t) {
		if d.Change.After.Index("jsonBig") >= 0 {
			continue // too big to be a readable fixture
		}
		out.Write(AppendDumpJSON(nil, d))
		out.WriteByte('\n')
	}
	// One line with every value kind except the big JSON.
	all := sampleChanges(t)[2]
	all.c.After = slices.DeleteFunc(slices.Clone(all.c.After), func(c Column) bool { return c.Name == "jsonBig" })
	out.Write(AppendDumpJSON(nil, DumpLine{LSN: 1 << 40, CommitLSN: 1<<40 + 5, CommitTime: time.Unix(1714564800, 0), Header: *all.hdr, Change: &all.c}))
	out.WriteByte('\n')
	golden(t, filepath.Join("testdata", "dump.golden"), out.String())
}

// TestDumpKeyOrder checks the keys and their order, which scripts rely on.
func TestDumpKeyOrder(t *testing.T) {
	tests := []struct {
		d    DumpLine
		want []string
	}{
		{DumpLine{Change: &Change{Table: Table{"s", "t"}, Op: Truncate}},
			[]string{"lsn", "commit_lsn", "commit_time", "xid", "table", "op", "key", "before", "after"}},
		{DumpLine{Header: TxHeader{XID: 1, SourceLSN: 2, SourceCommitTime: time.Unix(1, 0), Origin: "o"},
			Change: &Change{Op: Message, Types: []ColumnType{{"a", "b"}}, Message: &LogicalMessage{}}},
			[]string{"lsn", "commit_lsn", "commit_time", "xid", "source_lsn", "source_commit_time", "origin", "table", "op", "key", "before", "after", "types", "message"}},
	}
	for _, tc := range tests {
		line := AppendDumpJSON(nil, tc.d)
		dec := json.NewDecoder(bytes.NewReader(line))
		var keys []string
		dec.Token() // {
		for dec.More() {
			k, _ := dec.Token()
			keys = append(keys, k.(string))
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				t.Fatal(err)
			}
		}
		if !slices.Equal(keys, tc.want) {
			t.Errorf("keys of %s =\n%v\nwant\n%v", line, keys, tc.want)
		}
	}
}

func TestAppendDumpJSON(t *testing.T) {
	d := DumpLine{
		LSN: 7, CommitLSN: 9, CommitTime: time.Date(2024, 5, 1, 14, 0, 0, 500, time.FixedZone("CEST", 7200)),
		Header: TxHeader{XID: 42, SourceLSN: 0x16B374D848},
		Change: &Change{Table: Table{"public", "t"}, Op: Update, Key: Row{{"id", IntValue(1)}}, After: Row{{"id", IntValue(1)}, {"v", TextValue("x")}}},
	}
	want := `{"lsn":7,"commit_lsn":9,"commit_time":"2024-05-01T12:00:00.0000005Z","xid":42,"source_lsn":"16/B374D848","table":"public.t","op":"u","key":{"id":1},"before":null,"after":{"id":1,"v":"x"}}`
	if got := string(AppendDumpJSON([]byte(nil), d)); got != want {
		t.Errorf("AppendDumpJSON =\n%s\nwant\n%s", got, want)
	}
	d.Change = &Change{Table: Table{`my "s"`, "t.x"}, Op: Message, Message: &LogicalMessage{Prefix: "p", Content: []byte{0xff}}}
	d.Header = TxHeader{}
	want = `{"lsn":7,"commit_lsn":9,"commit_time":"2024-05-01T12:00:00.0000005Z","xid":0,"table":"\"my \"\"s\"\"\".\"t.x\"","op":"m","key":null,"before":null,"after":null,"message":{"prefix":"p","content":{"$type":"bytes","value":"/w=="},"transactional":false}}`
	if got := string(AppendDumpJSON(nil, d)); got != want {
		t.Errorf("AppendDumpJSON =\n%s\nwant\n%s", got, want)
	}
	got, err := ParseDumpLine([]byte(want))
	if err != nil {
		t.Fatal(err)
	}
	checkDumpEqual(t, got, d)
}

func TestAppendDumpJSONAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under the race detector")
	}
	lines := sampleDumpLines(t)
	buf := make([]byte, 0, 1<<20)
	allocs := testing.AllocsPerRun(20, func() {
		for _, d := range lines {
			buf = AppendDumpJSON(buf[:0], d)
		}
	})
	if allocs != 0 {
		t.Errorf("AppendDumpJSON allocates %v times per run, want 0", allocs)
	}
}

func TestParseDumpLineErrors(t *testing.T) {
	const base = `"lsn":1,"commit_lsn":1,"commit_time":"2024-01-01T00:00:00Z","xid":0,"table":"public.t","op":"t","key":null,"before":null,"after":null`
	tests := []struct{ in, want string }{
		{`{` + base + `}`, ""},
		{`{` + base + `,"extra":1}`, `unknown field "extra"`},
		{`{` + base + `,"lsn":2}`, `duplicate field "lsn"`},
		{`{` + strings.Replace(base, `"lsn":1,`, ``, 1) + `}`, `missing field "lsn"`},
		{`{` + strings.Replace(base, `,"after":null`, ``, 1) + `}`, `missing field "after"`},
		{`{` + strings.Replace(base, `"lsn":1`, `"lsn":-1`, 1) + `}`, `lsn: expected an unsigned 64-bit integer, got -1`},
		{`{` + strings.Replace(base, `"2024-01-01T00:00:00Z"`, `"x"`, 1) + `}`, `commit_time: invalid RFC 3339 time "x"`},
	}
	for _, tc := range tests {
		_, err := ParseDumpLine([]byte(tc.in))
		got := ""
		if err != nil {
			got = err.Error()
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("ParseDumpLine(%s) error %v is not ErrInvalid", tc.in, err)
			}
		}
		if got != tc.want {
			t.Errorf("ParseDumpLine(%s) error = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestBinaryThenDump is the path of `walship dump`: a change decoded from
// its record and printed reads back Equal, value by value.
func TestBinaryThenDump(t *testing.T) {
	for _, s := range sampleChanges(t) {
		hdr, c, err := DecodeRecord(AppendRecord(nil, s.hdr, &s.c))
		if err != nil {
			t.Fatal(err)
		}
		d := DumpLine{LSN: 1, CommitLSN: 2, CommitTime: time.Unix(3, 4), Change: &c}
		if hdr != nil {
			d.Header = *hdr
		}
		got, err := ParseDumpLine(AppendDumpJSON(nil, d))
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		checkDumpEqual(t, got, d)
		for _, col := range c.After {
			v, err := ParseValue(col.Value.AppendJSON(nil))
			if err != nil || !v.Equal(col.Value) {
				t.Errorf("%s: column %s: ParseValue(AppendJSON) = %v, %v; want %v", s.name, col.Name, v, err, col.Value)
			}
		}
	}
}
