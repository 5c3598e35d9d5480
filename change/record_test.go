package change

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/walship/walship/walerr"
)

func TestRecordRoundTrip(t *testing.T) {
	for _, s := range sampleChanges(t) {
		t.Run(s.name, func(t *testing.T) {
			if err := s.c.Validate(); err != nil {
				t.Fatalf("sample is invalid: %v", err)
			}
			prefix := []byte("prefix")
			b := AppendRecord(prefix, s.hdr, &s.c)
			if !bytes.Equal(b[:len(prefix)], prefix) {
				t.Fatal("AppendRecord clobbered dst")
			}
			rec := b[len(prefix):]
			if got, want := len(rec), RecordSize(s.hdr, &s.c); got != want {
				t.Errorf("len(record) = %d, RecordSize = %d", got, want)
			}
			hdr, c, err := DecodeRecord(rec)
			if err != nil {
				t.Fatalf("DecodeRecord: %v", err)
			}
			checkHeader(t, hdr, s.hdr)
			if !c.Equal(&s.c) {
				t.Errorf("DecodeRecord = %+v\nwant %+v", c, s.c)
			}
			// The decoded change does not alias the record.
			for i := range rec {
				rec[i] = 0xAA
			}
			if !c.Equal(&s.c) {
				t.Errorf("decoded change changed when the record was overwritten")
			}
		})
	}
}

func checkHeader(t *testing.T, got, want *TxHeader) {
	t.Helper()
	switch {
	case (got == nil) != (want == nil):
		t.Errorf("header = %+v, want %+v", got, want)
	case got != nil && !got.Equal(*want):
		t.Errorf("header = %+v, want %+v", *got, *want)
	}
}

// TestRecordGolden pins the byte layout: a change here means old logs are
// no longer readable. Regenerate with -update only for a new format version.
func TestRecordGolden(t *testing.T) {
	var out strings.Builder
	for _, s := range sampleChanges(t) {
		if s.name == "insert-all-kinds" {
			continue // too big to be a readable fixture; covered by the round trip
		}
		fmt.Fprintf(&out, "%s\n%s\n", s.name, hex.EncodeToString(AppendRecord(nil, s.hdr, &s.c)))
	}
	golden(t, filepath.Join("testdata", "records.golden"), out.String())
}

func golden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (run go test -update if the change is intended):\n got:\n%s\nwant:\n%s", path, got, want)
	}
}

// TestRecordDocExample checks the example in the package doc.
func TestRecordDocExample(t *testing.T) {
	c := Change{Table: Table{"public", "t"}, Op: Insert, After: Row{{"id", IntValue(1)}}}
	got := AppendRecord(nil, nil, &c)
	want := []byte("\x01\x08\x63\x06public\x01t\x01\x02id\x02\x02")
	if !bytes.Equal(got, want) {
		t.Errorf("record = % x, want % x", got, want)
	}
}

func TestDecodeRecordTruncated(t *testing.T) {
	for _, s := range sampleChanges(t) {
		rec := AppendRecord(nil, s.hdr, &s.c)
		step := max(1, len(rec)/500) // keep big records quick: ~500 prefixes
		for n := 0; n < len(rec); n += step {
			_, _, err := DecodeRecord(rec[:n])
			var de *DecodeError
			if !errors.As(err, &de) || !errors.Is(err, walerr.ErrCorruption) {
				t.Fatalf("%s: DecodeRecord(first %d of %d bytes) = %v, want a *DecodeError wrapping walerr.ErrCorruption", s.name, n, len(rec), err)
			}
			if de.Offset < 0 || de.Offset > n {
				t.Fatalf("%s: offset %d outside the %d-byte input", s.name, de.Offset, n)
			}
		}
	}
}

func TestDecodeRecordCorrupt(t *testing.T) {
	// Hand-made corrupt records, in hex with spaces between fields.
	tests := []struct {
		name   string
		hex    string
		offset int
		reason string
		err    error
	}{
		{"empty", "", 0, "empty record", walerr.ErrCorruption},
		{"version 0", "00 00", 0, "format version 0", walerr.ErrCorruption},
		{"version 2", "02 00 74 00 00", 0, "format version 2 (this build reads 1)", ErrUnsupportedVersion},
		{"no flags", "01", 1, "unexpected end of record", walerr.ErrCorruption},
		{"unknown flags", "01 80 74 00 00", 1, "unknown flags 0x80", walerr.ErrCorruption},
		{"zero truncate options", "01 40 74 00 00 00", 5, "invalid truncate options 0x00", walerr.ErrCorruption},
		{"unknown truncate options", "01 40 74 00 00 04", 5, "invalid truncate options 0x04", walerr.ErrCorruption},
		{"unknown header flags", "01 01 80 00 74 00 00", 2, "unknown header flags 0x80", walerr.ErrCorruption},
		{"zero snapshot position", "01 01 40 00 00 74 00 00", 4, "snapshot position 0x00: want known bits, not none", walerr.ErrCorruption},
		{"unknown snapshot position", "01 01 40 00 20 74 00 00", 4, "snapshot position 0x20: want known bits, not none", walerr.ErrCorruption},
		{"varint overflow", "01 01 00 ffffffffffffffffffff01", 3, "varint overflows 64 bits", walerr.ErrCorruption},
		{"commit nsec", "01 01 02 00 02 80a8d6b907 74 00 00", 4, "commit time nanoseconds 2000000000 out of range", walerr.ErrCorruption},
		{"zero commit time", "01 01 02 00 ffdb8ff9ce03 00 74 00 00", 4, "zero commit time flagged as present", walerr.ErrCorruption},
		{"string too long", "01 00 74 05 61 62", 3, "length 5 exceeds the 2 remaining bytes", walerr.ErrCorruption},
		{"huge string", "01 00 74 ffffffffffffffffff01", 3, "length 18446744073709551615 exceeds the 0 remaining bytes", walerr.ErrCorruption},
		{"huge column count", "01 08 63 00 00 ffffffff0f", 5, "column count 4294967295 exceeds what the 0 remaining bytes can hold", walerr.ErrCorruption},
		{"huge array", "01 08 63 00 00 01 01 61 09 ffffffff0f 00 00", 9, "array element count 4294967295 exceeds what the 2 remaining bytes can hold", walerr.ErrCorruption},
		{"unknown kind", "01 08 63 00 00 01 01 61 0b", 8, "unknown value kind 11", walerr.ErrCorruption},
		{"bool byte", "01 08 63 00 00 01 01 61 01 02", 9, "bool byte 0x02", walerr.ErrCorruption},
		{"short float", "01 08 63 00 00 01 01 61 03 00000000", 9, "unexpected end of record in float", walerr.ErrCorruption},
		{"bad numeric", "01 08 63 00 00 01 01 61 04 02 2e35", 8, `invalid numeric ".5"`, walerr.ErrCorruption},
		{"json not compact", "01 08 63 00 00 01 01 61 08 04 5b 31 20 5d", 8, "JSON value is not valid, compact JSON in UTF-8", walerr.ErrCorruption},
		{"json lone surrogate", "01 08 63 00 00 01 01 61 08 08 22 5c 75 64 38 30 30 22", 8, "JSON value is not valid, compact JSON in UTF-8", walerr.ErrCorruption},
		{"json invalid", "01 08 63 00 00 01 01 61 08 02 5b 31", 8, "JSON value is not valid, compact JSON in UTF-8", walerr.ErrCorruption},
		{"timestamp nsec", "01 08 63 00 00 01 01 61 07 00 80a8d6b907", 8, "timestamp 0.2000000000 out of range", walerr.ErrCorruption},
		{"timestamp year", "01 08 63 00 00 01 01 61 07 8086a2ffdf0e 00", 8, "timestamp 253402300800.000000000 out of range", walerr.ErrCorruption},
		{"unknown message flags", "01 20 6d 00 00 02 00 00", 5, "unknown message flags 0x02", walerr.ErrCorruption},
		{"trailing", "01 00 74 00 00 00", 5, "1 trailing bytes", walerr.ErrCorruption},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := hex.DecodeString(strings.ReplaceAll(tc.hex, " ", ""))
			if err != nil {
				t.Fatal(err)
			}
			_, _, err = DecodeRecord(b)
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("DecodeRecord = %v, want a *DecodeError", err)
			}
			if de.Offset != tc.offset || de.Reason != tc.reason {
				t.Errorf("DecodeRecord error = offset %d %q, want offset %d %q", de.Offset, de.Reason, tc.offset, tc.reason)
			}
			if !errors.Is(err, tc.err) {
				t.Errorf("DecodeRecord error %v is not %v", err, tc.err)
			}
		})
	}
	_, _, err := DecodeRecord([]byte{1, 0, 't', 0, 0, 0})
	if got, want := err.Error(), "change: corrupt record at offset 5: 1 trailing bytes"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

// TestDecodeRecordNesting checks the depth limit and that it matches
// Validate: the deepest valid value decodes, one level more does not.
func TestDecodeRecordNesting(t *testing.T) {
	for _, depth := range []int{MaxNesting, MaxNesting + 1} {
		v := IntValue(0)
		for range depth {
			v = ArrayValue(v)
		}
		c := Change{Table: Table{"s", "t"}, Op: Insert, After: Row{{"v", v}}}
		_, _, err := DecodeRecord(AppendRecord(nil, nil, &c))
		if (err == nil) != (c.Validate() == nil) {
			t.Errorf("depth %d: DecodeRecord error %v, Validate error %v", depth, err, c.Validate())
		}
	}
}

// TestDecodeRecordLenient checks that a change failing Validate still
// round-trips: nothing written is unreadable because of its content.
func TestDecodeRecordLenient(t *testing.T) {
	c := Change{Op: 'x', Table: Table{"", "\xff"}, Key: Row{{"", TextValue("\xfe")}, {"", UnknownValue("", "")}}, Types: []ColumnType{{"", ""}}}
	hdr := &TxHeader{Origin: "\xff"}
	gotHdr, got, err := DecodeRecord(AppendRecord(nil, hdr, &c))
	if err != nil {
		t.Fatal(err)
	}
	checkHeader(t, gotHdr, hdr)
	if !got.Equal(&c) {
		t.Errorf("DecodeRecord = %+v, want %+v", got, c)
	}
}

func TestAppendRecordAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under the race detector")
	}
	for _, s := range sampleChanges(t) {
		buf := make([]byte, 0, 1<<20)
		allocs := testing.AllocsPerRun(50, func() {
			buf = AppendRecord(buf[:0], s.hdr, &s.c)
		})
		if allocs != 0 {
			t.Errorf("%s: AppendRecord allocates %v times, want 0", s.name, allocs)
		}
		// Growing from nil allocates exactly once: RecordSize is exact.
		allocs = testing.AllocsPerRun(50, func() {
			buf = AppendRecord(nil, s.hdr, &s.c)
		})
		if allocs != 1 {
			t.Errorf("%s: AppendRecord(nil, ...) allocates %v times, want 1", s.name, allocs)
		}
	}
}

// TestRecordSnapshotPosition: a header's snapshot position round-trips
// with the other fields, flagged by header bit 6 (records without it keep
// their bytes); unknown position bits are invalid.
func TestRecordSnapshotPosition(t *testing.T) {
	c := Change{Op: Read, Table: Table{Schema: "public", Name: "t"}, After: Row{{Name: "id", Value: IntValue(1)}}}
	for _, h := range []*TxHeader{
		{Origin: "pg", Snapshot: SnapshotTableFirst | SnapshotFirstTable},
		{XID: 3, SourceLSN: 9, Snapshot: SnapshotTableLast | SnapshotLastTable | SnapshotTableFirst | SnapshotFirstTable},
		{Origin: "pg", Snapshot: SnapshotTableLast, Idempotency: &IdempotencyMark{Key: "k", Count: 1, AppendedAt: 5}},
	} {
		rec := AppendRecord(nil, h, &c)
		if got, want := len(rec), RecordSize(h, &c); got != want {
			t.Errorf("%+v: len(record) = %d, RecordSize = %d", h, got, want)
		}
		hdr, _, err := DecodeRecord(rec)
		if err != nil || !hdr.Equal(*h) || hdr.Snapshot != h.Snapshot {
			t.Errorf("%+v: decoded %+v, %v", h, hdr, err)
		}
		if plain := (TxHeader{Origin: h.Origin, XID: h.XID, SourceLSN: h.SourceLSN}); plain.Equal(*h) {
			t.Error("headers differing in snapshot position are equal")
		}
	}
	if rec := AppendRecord(nil, &TxHeader{Origin: "pg"}, &c); rec[2]&hdrSnapshot != 0 {
		t.Error("a header without a snapshot position sets its flag")
	}
	if err := (&TxHeader{Snapshot: 1 << 5}).Validate(); !errors.Is(err, ErrInvalid) {
		t.Errorf("unknown position bits: err %v, want ErrInvalid", err)
	}
}

// TestRecordIdempotencyMark: a header's idempotency mark round-trips, is
// flagged by header bit 3 (so records without it keep their bytes), and a
// mark whose start is not below its count is corruption.
func TestRecordIdempotencyMark(t *testing.T) {
	c := Change{Op: Insert, Table: Table{Schema: "public", Name: "t"}, After: Row{{Name: "id", Value: IntValue(1)}}}
	plain := &TxHeader{XID: 7, Origin: "app"}
	marked := &TxHeader{XID: 7, Origin: "app", Idempotency: &IdempotencyMark{Key: "req-1", Start: 1, Count: 3}}
	marked.Idempotency.Hash[0], marked.Idempotency.Hash[31] = 0xAB, 0xCD
	if err := marked.Validate(); err != nil {
		t.Fatal(err)
	}
	rec := AppendRecord(nil, marked, &c)
	if got, want := len(rec), RecordSize(marked, &c); got != want {
		t.Errorf("len(record) = %d, RecordSize = %d", got, want)
	}
	hdr, _, err := DecodeRecord(rec)
	if err != nil {
		t.Fatal(err)
	}
	checkHeader(t, hdr, marked)
	if hdr.Equal(*plain) {
		t.Error("a marked header equals an unmarked one")
	}
	old := AppendRecord(nil, plain, &c)
	if old[2]&hdrIdem != 0 {
		t.Error("an unmarked header sets the idempotency flag")
	}
	if hdr, _, err := DecodeRecord(old); err != nil || hdr.Idempotency != nil {
		t.Errorf("unmarked record: header %+v, err %v", hdr, err)
	}
	in := AppendRecord(nil, plain, &c)
	if !SetInRequest(in) {
		t.Fatal("SetInRequest refused a first record")
	}
	if hdr, _, err := DecodeRecord(in); err != nil || !hdr.InRequest || hdr.Idempotency != nil {
		t.Errorf("record set in a request: header %+v, err %v", hdr, err)
	}
	if SetInRequest(AppendRecord(nil, nil, &c)) {
		t.Error("SetInRequest took a record without a header")
	}
	// The append time is flagged by header bit 5, only with a mark.
	stamped := *marked
	stamped.Idempotency = &IdempotencyMark{Key: "req-1", Count: 1, AppendedAt: 1_700_000_000_123_456_789}
	rec = AppendRecord(nil, &stamped, &c)
	if got, want := len(rec), RecordSize(&stamped, &c); got != want {
		t.Errorf("stamped: len(record) = %d, RecordSize = %d", got, want)
	}
	if hdr, _, err := DecodeRecord(rec); err != nil || !hdr.Equal(stamped) || hdr.Idempotency.AppendedAt != stamped.Idempotency.AppendedAt {
		t.Errorf("stamped mark: header %+v, err %v", hdr, err)
	}
	forged := AppendRecord(nil, plain, &c)
	forged[2] |= hdrIdemAt
	if _, _, err := DecodeRecord(forged); !errors.Is(err, walerr.ErrCorruption) {
		t.Errorf("append time without a mark: err %v, want corruption", err)
	}
	bad := *marked.Idempotency
	bad.Start = bad.Count
	_, _, err = DecodeRecord(AppendRecord(nil, &TxHeader{Idempotency: &bad}, &c))
	if !errors.Is(err, walerr.ErrCorruption) {
		t.Errorf("start == count: err %v, want corruption", err)
	}
	for _, k := range []string{"", "has space", strings.Repeat("k", MaxIdempotencyKey+1), "é"} {
		if err := ValidateIdempotencyKey(k); !errors.Is(err, ErrInvalid) {
			t.Errorf("key %q: err %v, want ErrInvalid", k, err)
		}
	}
}
