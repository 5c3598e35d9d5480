package segment_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/walship/walship/segment"
	"github.com/walship/walship/vfs"
	"github.com/walship/walship/walerr"
)

// abortBatch is the abort frame that ends the transaction begun at
// txnStart, at LSN lsn.
func abortBatch(lsn, txnStart uint64, ct int64) segment.Batch {
	return segment.Batch{Raw: segment.AppendRecord(nil, nil, true, ct), Count: 1, FirstLSN: lsn, TxnStart: txnStart,
		EndsTxn: true, Aborted: true, LastCommit: lsn, LastCommitTime: ct}
}

// TestAbortFrame writes a transaction spanning frames and segments, ends it
// with an abort frame, and checks what readers, Verify and recovery make of
// it: the abort record is flagged, LSNs stay dense, the log is intact.
func TestAbortFrame(t *testing.T) {
	fs := vfs.NewCrashFS()
	opts := segment.Options{FS: fs, SegmentSize: 4096, Logger: quiet}
	l, _ := open(t, crashDir, opts)
	write := func(b segment.Batch) {
		t.Helper()
		if err := l.Write([]segment.Batch{b}); err != nil {
			t.Fatal(err)
		}
		if err := l.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	write(batch(1, 1, recsOf("a", 2, 100), true, 10))
	// The aborted transaction: 3 frames over several segments.
	for i := range 3 {
		write(batch(3+uint64(3*i), 3, recsOf("x", 3, 1400), false, 0))
	}
	if got := l.Visible(); got != 2 {
		t.Fatalf("visible %d while the transaction is open, want 2", got)
	}
	write(abortBatch(12, 3, 10))
	write(batch(13, 13, recsOf("b", 2, 100), true, 20))

	check := func(stage string, l *segment.Log) {
		t.Helper()
		recs, err := readRecords(l, 1)
		if err != nil {
			t.Fatalf("%s: %v", stage, err)
		}
		if len(recs) != 14 {
			t.Fatalf("%s: %d records, want 14", stage, len(recs))
		}
		for i, r := range recs {
			if r.LSN != uint64(i+1) {
				t.Fatalf("%s: record %d has LSN %d", stage, i, r.LSN)
			}
			if r.Aborted != (r.LSN == 12) || (r.Aborted && (!r.Commit || len(r.Data) != 0 || r.TxnStart != 3 || r.CommitTime != 10)) {
				t.Fatalf("%s: record %+v", stage, r)
			}
		}
		rep, err := segment.Verify(fs, crashDir)
		if err != nil {
			t.Fatalf("%s: verify: %v", stage, err)
		}
		if rep.Aborted != 1 || rep.Unfinished != nil || rep.LastLSN != 14 || rep.Records != 14 {
			t.Fatalf("%s: verify report %+v", stage, rep)
		}
	}
	check("written", l)
	l.Close()
	l, rep := open(t, crashDir, opts)
	defer l.Close()
	if !rep.Clean() || rep.NextLSN != 15 {
		t.Fatalf("recovery: %v", rep)
	}
	check("reopened", l)

	// An abort batch of more than one record is refused, failing the log.
	bad := abortBatch(15, 15, 30)
	bad.Count, bad.Raw = 2, append(bad.Raw, bad.Raw...)
	if err := l.Write([]segment.Batch{bad}); err == nil || !strings.Contains(err.Error(), "abort batch") {
		t.Fatalf("Write of a two-record abort batch: %v", err)
	}
}

// TestAbortFrameWithDataIsCorrupt: an abort frame whose record carries
// data, followed by a later durable write, is corruption naming the frame.
func TestAbortFrameWithDataIsCorrupt(t *testing.T) {
	fs := vfs.NewCrashFS()
	opts := segment.Options{FS: fs, SegmentSize: 1 << 20, Logger: quiet}
	l, _ := open(t, crashDir, opts)
	for _, b := range []segment.Batch{
		batch(1, 1, recsOf("x", 2, 50), false, 0),
		{Raw: segment.AppendRecord(nil, []byte("data"), true, 5), Count: 1, FirstLSN: 3, TxnStart: 1, EndsTxn: true, Aborted: true, LastCommit: 3, LastCommitTime: 5},
		batch(4, 4, recsOf("b", 1, 50), true, 6),
	} {
		if err := l.Write([]segment.Batch{b}); err != nil {
			t.Fatal(err)
		}
		if err := l.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := readRecords(l, 1); !errors.Is(err, walerr.ErrCorruption) || !strings.Contains(err.Error(), "abort record") {
		t.Fatalf("reader: %v, want corruption naming the abort record", err)
	}
	l.Close()
	var ce *walerr.CorruptionError
	if _, err := segment.Verify(fs, crashDir); !errors.As(err, &ce) || !strings.Contains(err.Error(), "abort record") {
		t.Fatalf("verify: %v, want a CorruptionError naming the abort record", err)
	}
	if _, _, err := segment.Open(crashDir, opts); !errors.As(err, &ce) {
		t.Fatalf("open: %v, want a CorruptionError", err)
	}
}
