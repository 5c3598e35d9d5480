package change

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/walship/walship/walerr"
)

// FuzzDecodeRecord checks that DecodeRecord never panics, reports only
// *DecodeError with an offset inside the input, and that whatever it
// accepts re-encodes to a record that decodes Equal; for a valid change the
// dump form must read back Equal too.
func FuzzDecodeRecord(f *testing.F) {
	for _, s := range sampleChanges(f) {
		if s.name == "insert-all-kinds" {
			continue // the corpus files hold a smaller all-kinds record
		}
		f.Add(AppendRecord(nil, s.hdr, &s.c))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		hdr, c, err := DecodeRecord(b)
		if err != nil {
			var de *DecodeError
			if !errors.As(err, &de) || !(errors.Is(err, walerr.ErrCorruption) || errors.Is(err, ErrUnsupportedVersion)) {
				t.Fatalf("DecodeRecord error %#v: want a *DecodeError wrapping walerr.ErrCorruption or ErrUnsupportedVersion", err)
			}
			if de.Offset < 0 || de.Offset > len(b) {
				t.Fatalf("DecodeRecord error offset %d outside the %d-byte input", de.Offset, len(b))
			}
			return
		}
		re := AppendRecord(nil, hdr, &c)
		if len(re) != RecordSize(hdr, &c) {
			t.Fatalf("len(AppendRecord) = %d, RecordSize = %d", len(re), RecordSize(hdr, &c))
		}
		hdr2, c2, err := DecodeRecord(re)
		if err != nil {
			t.Fatalf("re-encoded record does not decode: %v\nrecord % x", err, re)
		}
		if (hdr == nil) != (hdr2 == nil) || hdr != nil && !hdr.Equal(*hdr2) {
			t.Fatalf("header %+v became %+v", hdr, hdr2)
		}
		if !c.Equal(&c2) {
			t.Fatalf("change %+v became %+v", c, c2)
		}
		if c.Validate() != nil || hdr != nil && hdr.Validate() != nil {
			return
		}
		d := DumpLine{LSN: 1, CommitLSN: 2, CommitTime: time.Unix(0, 1), Change: &c}
		if hdr != nil {
			d.Header = *hdr
		}
		line := AppendDumpJSON(nil, d)
		back, err := ParseDumpLine(line)
		if err != nil {
			t.Fatalf("ParseDumpLine(%s): %v", line, err)
		}
		// The dump does not carry the idempotency mark or the in-request
		// flag (they serve the HTTP source's retries, not readers).
		want := d.Header
		want.Idempotency, want.InRequest = nil, false
		if !back.Header.Equal(want) || !back.Change.Equal(&c) {
			t.Fatalf("dump round trip of %s:\n got %+v %+v\nwant %+v %+v", line, back.Header, *back.Change, want, c)
		}
	})
}

// FuzzParseTxnLine checks that ParseTxnLine never panics, reports only
// *InvalidError, and that what it accepts is valid, survives the binary
// encoding and the dump form, and that every value's output form reads
// back Equal.
func FuzzParseTxnLine(f *testing.F) {
	f.Add([]byte(`{"table":"public.t","op":"c","key":{"id":1},"after":{"id":1,"v":"x"}}`))
	f.Add([]byte(`{"changes":[{"table":"t","op":"u","key":{"id":1},"after":{"id":1,"n":1.50,"b":{"$type":"bytes","value":"AAE="}}}],"xid":7,"source_lsn":"16/B374D848","commit_time":"2024-05-01T12:00:00Z"}`))
	f.Add([]byte(`{"op":"m","message":{"prefix":"p","content":"hi","transactional":true}}`))
	f.Add([]byte(`{"table":"t","op":"c","after":{"v":1,"v":2}}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		txn, err := ParseTxnLine(line)
		if err != nil {
			var ie *InvalidError
			if !errors.As(err, &ie) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("ParseTxnLine error %#v: want an *InvalidError", err)
			}
			return
		}
		if err := txn.Validate(); err != nil {
			t.Fatalf("ParseTxnLine accepted an invalid transaction: %v", err)
		}
		for i := range txn.Changes {
			c := &txn.Changes[i]
			var hdr *TxHeader
			if i == 0 {
				hdr = &txn.Header
			}
			gotHdr, got, err := DecodeRecord(AppendRecord(nil, hdr, c))
			if err != nil {
				t.Fatalf("change %d: DecodeRecord: %v", i, err)
			}
			if (gotHdr == nil) != (hdr == nil) || hdr != nil && !gotHdr.Equal(*hdr) || !got.Equal(c) {
				t.Fatalf("change %d: binary round trip: got %+v %+v, want %+v %+v", i, gotHdr, got, hdr, *c)
			}
			d := DumpLine{LSN: 5, CommitLSN: 6, CommitTime: time.Unix(7, 8), Header: txn.Header, Change: c}
			line := AppendDumpJSON(nil, d)
			back, err := ParseDumpLine(line)
			if err != nil {
				t.Fatalf("change %d: ParseDumpLine(%s): %v", i, line, err)
			}
			if !back.Header.Equal(d.Header) || !back.Change.Equal(c) {
				t.Fatalf("change %d: dump round trip of %s: got %+v", i, line, *back.Change)
			}
			for _, r := range []Row{c.Key, c.Before, c.After} {
				for _, col := range r {
					out := col.Value.AppendJSON(nil)
					v, err := ParseValue(out)
					if err != nil || !v.Equal(col.Value) {
						t.Fatalf("change %d column %q: ParseValue(%s) = %v, %v; want %v", i, col.Name, out, v, err, col.Value)
					}
				}
			}
		}
	})
}

// FuzzParseValue checks the JSON reader against encoding/json and the
// output form of every value it accepts.
func FuzzParseValue(f *testing.F) {
	f.Add([]byte(`[1, "x", {"a": [true, null]}, {"$type":"bytes","value":"AAE="}, 12.30, -0, 1e400]`))
	f.Add([]byte(`{"$type":"timestamp","value":"2024-05-01T12:00:00.000000001Z"}`))
	f.Add([]byte(`"\u00e9\ud83d\ude00\n"`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if !utf8.Valid(b) {
			return
		}
		valid := validJSON(b)
		if valid && !json.Valid(b) {
			t.Fatalf("validJSON accepts %q, encoding/json does not", b)
		}
		if !valid && json.Valid(b) && !bytes.Contains(b, []byte(`\u`)) && bytes.Count(b, []byte("["))+bytes.Count(b, []byte("{")) < maxJSONDepth {
			t.Fatalf("validJSON rejects %q, encoding/json accepts it", b)
		}
		v, err := ParseValue(b)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("ParseValue error %#v is not ErrInvalid", err)
			}
			return
		}
		if !valid {
			t.Fatalf("ParseValue accepts %q, validJSON does not", b)
		}
		if reason, _ := validateValue(v, 0); reason != "" {
			t.Fatalf("ParseValue(%q) = %v, which is invalid: %s", b, v, reason)
		}
		out := v.AppendJSON(nil)
		back, err := ParseValue(out)
		if err != nil || !back.Equal(v) {
			t.Fatalf("ParseValue(%s) = %v, %v; want %v", out, back, err, v)
		}
	})
}

// TestFuzzSeeds checks that the seed corpus files are what their names
// say: "valid-*" seeds are accepted, "invalid-*" seeds rejected.
func TestFuzzSeeds(t *testing.T) {
	check := map[string]func([]byte) error{
		"FuzzDecodeRecord": func(b []byte) error { _, _, err := DecodeRecord(b); return err },
		"FuzzParseTxnLine": func(b []byte) error { _, err := ParseTxnLine(b); return err },
		"FuzzParseValue":   func(b []byte) error { _, err := ParseValue(b); return err },
	}
	for fuzz, fn := range check {
		files, err := filepath.Glob(filepath.Join("testdata", "fuzz", fuzz, "*"))
		if err != nil || len(files) < 5 {
			t.Fatalf("%s: %d seed files, %v", fuzz, len(files), err)
		}
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			header, arg, ok := strings.Cut(strings.TrimSpace(string(data)), "\n")
			if !ok || header != "go test fuzz v1" || !strings.HasPrefix(arg, "[]byte(") || !strings.HasSuffix(arg, ")") {
				t.Fatalf("%s: not a go test fuzz v1 file of one []byte", f)
			}
			b, err := strconv.Unquote(arg[len("[]byte(") : len(arg)-1])
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			err = fn([]byte(b))
			switch name := filepath.Base(f); {
			case strings.HasPrefix(name, "valid-") && err != nil:
				t.Errorf("%s: %v", f, err)
			case strings.HasPrefix(name, "invalid-") && err == nil:
				t.Errorf("%s: accepted", f)
			}
		}
	}
}
