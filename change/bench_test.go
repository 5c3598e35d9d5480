package change

import (
	"testing"
	"time"
)

// benchChange is a typical row change: a handful of columns of common
// kinds.
func benchChange(b *testing.B) (*TxHeader, *Change) {
	hdr := &TxHeader{XID: 123456, SourceLSN: 0x16B374D848, SourceCommitTime: time.Date(2024, 5, 1, 12, 0, 0, 123456000, time.UTC)}
	c := &Change{
		Table: Table{"public", "accounts"},
		Op:    Update,
		Key:   Row{{"id", IntValue(987654321)}},
		Before: Row{
			{"id", IntValue(987654321)}, {"owner", TextValue("alice@example.com")}, {"balance", mustNumeric(b, "1024.50")},
			{"updated_at", mustTimestamp(b, "2024-05-01T11:59:59.123456Z")}, {"flags", mustJSON(b, `{"vip":true,"tags":["a","b"]}`)},
		},
		After: Row{
			{"id", IntValue(987654321)}, {"owner", TextValue("alice@example.com")}, {"balance", mustNumeric(b, "1000.25")},
			{"updated_at", mustTimestamp(b, "2024-05-01T12:00:00.123456Z")}, {"flags", mustJSON(b, `{"vip":true,"tags":["a","b"]}`)},
		},
	}
	return hdr, c
}

func BenchmarkAppendRecord(b *testing.B) {
	hdr, c := benchChange(b)
	buf := make([]byte, 0, 4096)
	b.SetBytes(int64(RecordSize(hdr, c)))
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendRecord(buf[:0], hdr, c)
	}
}

func BenchmarkDecodeRecord(b *testing.B) {
	hdr, c := benchChange(b)
	rec := AppendRecord(nil, hdr, c)
	b.SetBytes(int64(len(rec)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := DecodeRecord(rec); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendDumpJSON(b *testing.B) {
	hdr, c := benchChange(b)
	d := DumpLine{LSN: 1 << 30, CommitLSN: 1<<30 + 3, CommitTime: time.Now(), Header: *hdr, Change: c}
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendDumpJSON(buf[:0], d)
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkParseTxnLine(b *testing.B) {
	hdr, c := benchChange(b)
	line := AppendDumpJSON(nil, DumpLine{Header: *hdr, Change: c})
	// Turn the dump line into an input line: keep table, op and rows.
	txn := []byte(`{"table":"public.accounts","op":"u",` + string(line[indexOf(line, `"key"`):]))
	if _, err := ParseTxnLine(txn); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(txn)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseTxnLine(txn); err != nil {
			b.Fatal(err)
		}
	}
}

func indexOf(b []byte, s string) int {
	for i := range len(b) - len(s) {
		if string(b[i:i+len(s)]) == s {
			return i
		}
	}
	return -1
}

func BenchmarkValidate(b *testing.B) {
	_, c := benchChange(b)
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Validate(); err != nil {
			b.Fatal(err)
		}
	}
}
