package segment_test

import (
	"bytes"
	"fmt"
	"slices"
	"testing"

	"github.com/walship/walship/groupcommit"
	"github.com/walship/walship/segment"
	"github.com/walship/walship/vfs"
)

// batch encodes recs as one segment.Batch starting at LSN first, in the
// transaction that began at txnStart; ends commits the transaction.
func batch(first, txnStart uint64, recs [][]byte, ends bool, ct int64) segment.Batch {
	b := segment.Batch{Count: len(recs), FirstLSN: first, TxnStart: txnStart, EndsTxn: ends}
	for i, r := range recs {
		commit := ends && i == len(recs)-1
		b.Raw = segment.AppendRecord(b.Raw, r, commit, ct)
	}
	if ends {
		b.LastCommit, b.LastCommitTime = first+uint64(len(recs))-1, ct
	}
	return b
}

func recsOf(tag string, n, size int) [][]byte {
	var out [][]byte
	for i := range n {
		r := []byte(fmt.Sprintf("%s-%d-", tag, i))
		out = append(out, append(r, bytes.Repeat([]byte{byte('a' + i%26)}, max(0, size-len(r)))...))
	}
	return out
}

// TestUnfinishedTransactionIsDiscarded writes, through segment.Log itself,
// committed transactions and then one whose commit never comes, spanning
// several frames, several segments, or cut at its continuation frame's
// header. Verify reports it as unfinished; Open removes it and reports it;
// readers never see it, before or after the reopen; the next append reuses
// its LSNs.
func TestUnfinishedTransactionIsDiscarded(t *testing.T) {
	cases := []struct {
		name string
		// parts of the unfinished transaction, one batch each, written
		// with one Write call each.
		parts, size int
		// cut, if set, shortens the newest segment to cut bytes after
		// everything was synced: what a crash (KeepRandomPrefix) leaves of
		// a new segment's first, unsynced write.
		cut int64
		// wantSegs is the number of segments after recovery.
		wantSegs int
	}{
		{name: "frames", parts: 3, size: 100, wantSegs: 2},
		{name: "segments", parts: 6, size: 1400, wantSegs: 2},
		{name: "continuation-header-torn", parts: 3, size: 1400, cut: segment.HeaderSize + 20, wantSegs: 2},
		{name: "continuation-payload-torn", parts: 3, size: 1400, cut: segment.HeaderSize + 100, wantSegs: 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fs := vfs.NewCrashFS()
			opts := segment.Options{FS: fs, SegmentSize: 4096, Logger: quiet}
			l, _ := open(t, crashDir, opts)
			var committed []txn
			lsn := l.NextLSN()
			// restore puts the watermark back as it was before the first
			// write into the newest segment: the cut cases make that write
			// one a crash interrupted, never acknowledged.
			var restore func()
			write := func(b segment.Batch) {
				t.Helper()
				before, n := ackSnapshot(t, fs, crashDir), len(segFiles(t, fs, crashDir))
				if err := l.Write([]segment.Batch{b}); err != nil {
					t.Fatal(err)
				}
				if err := l.Sync(); err != nil {
					t.Fatal(err)
				}
				if len(segFiles(t, fs, crashDir)) != n {
					restore = before
				}
				lsn += uint64(b.Count)
			}
			// Committed transactions filling the first segment and
			// starting the second.
			for i := range 4 {
				recs := recsOf(fmt.Sprintf("c%d", i), 2, 500)
				ct := time0.UnixNano() + int64(i)
				committed = append(committed, txn{first: lsn, last: lsn + 1, recs: recs, commitTime: ct})
				write(batch(lsn, lsn, recs, true, ct))
			}
			unfinished := lsn
			var count uint64
			for p := range tc.parts {
				recs := recsOf(fmt.Sprintf("u%d", p), 2, tc.size/2)
				count += 2
				write(batch(lsn, unfinished, recs, false, 0))
				if l.Visible() != committed[len(committed)-1].last {
					t.Fatalf("visible %d while the transaction at %d is unfinished", l.Visible(), unfinished)
				}
			}
			checkTxns(t, readTxns(t, l), committed)
			segsBefore := segFiles(t, fs, crashDir)
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			if tc.cut > 0 {
				newest := vfs.Join(crashDir, segsBefore[len(segsBefore)-1])
				b, err := fs.ReadFile(newest)
				if err != nil {
					t.Fatal(err)
				}
				if f := walkFrames(b)[0]; f.txnStart != unfinished || f.firstLSN == unfinished {
					t.Fatalf("newest segment does not begin with a continuation frame: %+v", f)
				}
				// Only what a crash could leave of the first write into it.
				if err := fs.WriteFile(newest, b[:tc.cut], true); err != nil {
					t.Fatal(err)
				}
				restore()
				count -= 2 // the continuation frame is gone
			}
			t.Logf("segments before recovery %v", segsBefore)

			vrep, err := segment.Verify(fs, crashDir)
			if err != nil {
				t.Fatal(err)
			}
			want := &segment.DiscardedTxn{FirstLSN: unfinished, Records: count}
			if fmt.Sprint(vrep.Unfinished) != fmt.Sprint(want) {
				t.Fatalf("Verify: unfinished %+v, want %+v", vrep.Unfinished, want)
			}
			if vrep.LastLSN != unfinished-1 {
				t.Fatalf("Verify: last committed LSN %d, want %d", vrep.LastLSN, unfinished-1)
			}

			l, rep := open(t, crashDir, opts)
			if fmt.Sprint(rep.Discarded) != fmt.Sprint(want) {
				t.Fatalf("Open: report %v, want discarded %+v", rep, want)
			}
			if rep.NextLSN != unfinished || l.NextLSN() != unfinished {
				t.Fatalf("next LSN %d (report %d), want %d", l.NextLSN(), rep.NextLSN, unfinished)
			}
			segsAfter := segFiles(t, fs, crashDir)
			if len(segsAfter) != tc.wantSegs || rep.Segments != tc.wantSegs {
				t.Fatalf("segments after recovery %v (report %d), want %d", segsAfter, rep.Segments, tc.wantSegs)
			}
			for _, s := range segsBefore[len(segsAfter):] {
				if !slices.Contains(rep.Removed, s) {
					t.Fatalf("report %v does not list removed segment %s", rep, s)
				}
			}
			checkTxns(t, readTxns(t, l), committed)
			for lsn := unfinished - 3; lsn <= unfinished+count; lsn++ {
				// No reader, wherever it starts, sees a discarded record.
				got, err := readRecords(l, lsn)
				if err != nil {
					t.Fatalf("reader from %d: %v", lsn, err)
				}
				if len(got) > 0 && got[len(got)-1].LSN >= unfinished {
					t.Fatalf("reader from %d saw LSN %d", lsn, got[len(got)-1].LSN)
				}
			}

			c := newCommitter(t, l, groupcommit.Options{Logger: quiet})
			after := appendTxn(t, c, recsOf("after", 3, 700))
			if after.first != unfinished {
				t.Fatalf("append after recovery at LSN %d, want the discarded %d", after.first, unfinished)
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			l, rep = open(t, crashDir, opts)
			defer l.Close()
			if !rep.Clean() {
				t.Fatalf("second open not clean: %v", rep)
			}
			checkTxns(t, readTxns(t, l), append(committed, after))
			if vrep, err := segment.Verify(fs, crashDir); err != nil || vrep.Unfinished != nil || vrep.Torn != nil {
				t.Fatalf("Verify after recovery: %+v, %v", vrep, err)
			}
		})
	}
}
