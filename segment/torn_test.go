package segment_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/walship/walship/groupcommit"
	"github.com/walship/walship/segment"
	"github.com/walship/walship/vfs"
)

// buildTornLog writes a real log in dir: sealed segments of acknowledged
// transactions of 1-3 records, then one last transaction written alone (so
// its frames are the last write). With spans the last transaction is split
// over two frames by a small MaxBatchBytes. It returns the acknowledged
// transactions before the last one, and the last one.
func buildTornLog(t *testing.T, dir string, codec segment.Codec, spans bool) (acked []txn, last txn) {
	t.Helper()
	opts := segment.Options{SegmentSize: 16 << 10, Codec: codec, Logger: quiet}
	l, _ := open(t, dir, opts)
	c := newCommitter(t, l, groupcommit.Options{MaxBatchBytes: 512})
	rng := rand.New(rand.NewPCG(1, uint64(codec)))
	ctx := context.Background()
	var tickets []groupcommit.Ticket
	var recs [][][]byte
	for i := 0; len(l.Segments()) < 3; i++ {
		var rs [][]byte
		for k := range 1 + rng.IntN(3) {
			rs = append(rs, payload(fmt.Sprintf("t%d", i), k, 10+rng.IntN(120), rng))
		}
		// Pipelined, so several transactions share frames and writes.
		tk, err := c.AppendAsync(ctx, rs, time0.Add(time.Duration(i)*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		tickets, recs = append(tickets, tk), append(recs, rs)
		if i%16 == 15 {
			if err := c.Wait(ctx, tk.Last); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := c.Wait(ctx, tickets[len(tickets)-1].Last); err != nil {
		t.Fatal(err)
	}
	for i, tk := range tickets {
		acked = append(acked, txn{first: tk.First, last: tk.Last, recs: recs[i], commitTime: tk.CommitTime})
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	// The last transaction is small, so that cutting it at every byte stays
	// cheap, and compressible, so that s2 and zstd store it compressed. With
	// spans, a tiny MaxBatchBytes puts its two records in two frames.
	// The last write is never acknowledged as far as recovery can tell:
	// the watermark is put back as it was before it.
	restore := ackSnapshot(t, vfs.Default, dir)
	c = newCommitter(t, l, groupcommit.Options{MaxBatchBytes: 64})
	rs := [][]byte{[]byte("last-0-abcabcabcabcabcabcabcabcabcabc")}
	if spans {
		rs = append(rs, []byte("last-1-abcabcabcabcabcabcabcabcabcabc"))
	}
	last = appendTxn(t, c, rs)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	restore()
	return acked, last
}

// TestTornTailAtEveryByte cuts the last frame of a real log at every byte,
// by truncating the file there and by zeroing from there to the end of the
// frame, and checks that recovery treats it as a torn tail: Open succeeds
// and reports it, every acknowledged transaction reads back exactly once,
// the last transaction is all there or not at all, and the log takes new
// appends that survive a reopen (docs/DESIGN.md §4.3).
func TestTornTailAtEveryByte(t *testing.T) {
	cases := []struct {
		codec segment.Codec
		spans bool
	}{
		{segment.CodecNone, false},
		{segment.CodecNone, true},
		{segment.CodecS2, false},
		{segment.CodecZstd, true},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%s/spans=%v", tc.codec, tc.spans), func(t *testing.T) {
			t.Parallel()
			orig := filepath.Join(t.TempDir(), "orig")
			acked, last := buildTornLog(t, orig, tc.codec, tc.spans)
			segs := segFiles(t, vfs.Default, orig)
			newest := segs[len(segs)-1]
			content, err := os.ReadFile(filepath.Join(orig, newest))
			if err != nil {
				t.Fatal(err)
			}
			frames := walkFrames(content)
			lf := frames[len(frames)-1]
			if lf.firstLSN+uint64(lf.count)-1 != last.last || !lf.endsTxn {
				t.Fatalf("last frame %+v does not end the last transaction %v", lf, last)
			}
			if tc.spans && lf.firstLSN == last.first {
				t.Fatalf("last transaction %v was not split over frames", last)
			}
			if got := segment.Codec(content[lf.off+44]); got != tc.codec {
				t.Fatalf("last frame stored with codec %v, want %v", got, tc.codec)
			}
			t.Logf("%d segments, last frame at %d..%d (payload end %d), last %v", len(segs), lf.off, lf.end, lf.payloadEnd, last)
			work := filepath.Join(t.TempDir(), "work")
			for _, zero := range []bool{false, true} {
				for x := lf.off; x <= lf.end; x++ {
					copyDir(t, orig, work)
					cutAt(t, filepath.Join(work, newest), x, lf.end, zero)
					what := fmt.Sprintf("cut at %d (zero=%v)", x, zero)
					checkTornCut(t, what, work, newest, content, lf, acked, last, x, zero)
				}
			}
		})
	}
}

// cutAt truncates the file at x, or zeroes it from x to end.
func cutAt(t *testing.T, path string, x, end int64, zero bool) {
	t.Helper()
	if !zero {
		if err := os.Truncate(path, x); err != nil {
			t.Fatal(err)
		}
		return
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(make([]byte, end-x), x); err != nil {
		t.Fatal(err)
	}
}

func checkTornCut(t *testing.T, what, dir, newest string, content []byte, lf frameInfo, acked []txn, last txn, x int64, zero bool) {
	t.Helper()
	damaged := x > lf.off && x < lf.payloadEnd
	if n := x - lf.off; damaged && n < segment.FrameHeaderSize && allZeroBytes(content[lf.off:x]) {
		damaged = false // what is left of the header reads as unwritten
	}
	present := x >= lf.payloadEnd
	if zero && x < lf.payloadEnd && allZeroBytes(content[x:lf.payloadEnd]) {
		// Zeroing bytes that were zero already (the compressed payload
		// depends on the commit time, so its last byte is sometimes 0)
		// leaves the frame intact.
		damaged, present = false, true
	}
	// A transaction split over frames loses its earlier frames too when
	// its last frame is gone.
	var wantDiscard *segment.DiscardedTxn
	if !present && lf.firstLSN != last.first {
		wantDiscard = &segment.DiscardedTxn{FirstLSN: last.first, Records: lf.firstLSN - last.first}
	}

	vrep, err := segment.Verify(vfs.Default, dir)
	if err != nil {
		t.Fatalf("%s: Verify: %v", what, err)
	}
	if (vrep.Torn != nil) != damaged {
		t.Fatalf("%s: Verify torn %+v, want damaged=%v", what, vrep.Torn, damaged)
	}
	if fmt.Sprint(vrep.Unfinished) != fmt.Sprint(wantDiscard) {
		t.Fatalf("%s: Verify unfinished %+v, want %+v", what, vrep.Unfinished, wantDiscard)
	}

	opts := segment.Options{SegmentSize: 16 << 10, Logger: quiet}
	l, rep := open(t, dir, opts)
	if damaged {
		if rep.Torn == nil || rep.Torn.Segment != newest || rep.Torn.Offset != lf.off || rep.Torn.Bytes <= 0 {
			t.Fatalf("%s: report %v, want a torn tail in %s at %d", what, rep, newest, lf.off)
		}
	} else if rep.Torn != nil {
		t.Fatalf("%s: report %v, want no torn tail", what, rep)
	}
	if fmt.Sprint(rep.Discarded) != fmt.Sprint(wantDiscard) {
		t.Fatalf("%s: report %v, want discarded %+v", what, rep, wantDiscard)
	}
	want := append([]txn(nil), acked...)
	if present {
		want = append(want, last)
	}
	got := readTxns(t, l)
	checkTxns(t, got, want)
	next := want[len(want)-1].last + 1
	if rep.NextLSN != next || l.NextLSN() != next {
		t.Fatalf("%s: next LSN %d (report %d), want %d", what, l.NextLSN(), rep.NextLSN, next)
	}

	c := newCommitter(t, l, groupcommit.Options{})
	after := appendTxn(t, c, [][]byte{[]byte(what), []byte("second record")})
	if after.first != next {
		t.Fatalf("%s: append after recovery got LSN %d, want %d", what, after.first, next)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l, rep = open(t, dir, opts)
	defer l.Close()
	if !rep.Clean() {
		t.Fatalf("%s: second open not clean: %v", what, rep)
	}
	checkTxns(t, readTxns(t, l), append(want, after))
}

func allZeroBytes(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
