package main

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/walship/walship/wal"
)

// TestDumpSalvagesBeforeDamage: with a flipped byte in the middle of a
// sealed segment, dump prints every whole transaction before the damaged
// frame, exactly as acknowledged, including those of the damaged segment,
// then fails with exit 1 naming the segment and the frame's offset. Asked to
// start after the damage, it prints nothing and fails the same way: nothing
// is skipped.
func TestDumpSalvagesBeforeDamage(t *testing.T) {
	t.Parallel()
	base := newFrameLog(t, 1000, 3)
	dir := base.dir
	segs := readSegments(t, dir)
	i := len(segs) / 2
	if i == len(segs)-1 {
		t.Fatal("no sealed segment in the middle")
	}
	s := segs[i]
	if len(s.frames) < 3 {
		t.Fatalf("%s has %d frames, want 3 or more", s.name, len(s.frames))
	}
	f := s.frames[len(s.frames)/2]
	flipByte(t, s.path, f.payloadOff+f.stored/2)

	// The transactions wholly before the damaged frame.
	k := 0
	for k < len(base.acks) && base.acks[k].LSN < f.firstLSN {
		k++
	}
	if k == 0 || base.acks[k-1].LSN < s.base {
		t.Fatalf("no whole transaction of %s lies before the damaged frame at LSN %d", s.name, f.firstLSN)
	}

	d := walship(t, nil, "dump", "--wal", dir)
	if d.code != 1 {
		t.Fatalf("dump of a log with a damaged sealed segment: want exit 1, got\n%v", d)
	}
	if off := reportedOffset(t, d.stderr, s.name); off != f.off {
		t.Errorf("dump names offset %d, want the damaged frame's %d:\n%v", off, f.off, d)
	}
	checkDump(t, parseDump(t, d.stdout), base.txns[:k], base.acks[:k], 1)

	// A later frame of the same segment: positioning in it reads through
	// the damage.
	after := s.frames[len(s.frames)/2+1].firstLSN
	d = walship(t, nil, "dump", "--wal", dir, "--from", strconv.FormatUint(after, 10))
	if d.code != 1 || d.stdout != "" || !strings.Contains(d.stderr, s.name) {
		t.Errorf("dump --from %d, after the damage: want exit 1 naming %s and nothing printed, got\n%v", after, s.name, d)
	}
}

// newFrameLog writes generated transactions with one append each, so that
// each is a frame of its own, into a log of 64 KiB segments: n of them,
// and more in rounds of n while the log has fewer than minSegs segments
// (transactions are of random sizes, so some seeds need more).
func newFrameLog(t *testing.T, n, minSegs int) *baseLog {
	t.Helper()
	g := newGen(seed(t))
	b := &baseLog{dir: t.TempDir()}
	w, _, err := wal.Open(wal.Options{Dir: b.dir, SegmentSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for round := 0; round == 0 || len(readSegments(t, b.dir)) < minSegs; round++ {
		if round == 10 {
			t.Fatalf("log has %d segments after %d rounds of %d transactions, want %d or more", len(readSegments(t, b.dir)), round, n, minSegs)
		}
		in := g.txns(n, uint64(len(b.txns))*10+1)
		txns := parseTxns(t, in)
		for i := range txns {
			tk, err := w.Append(context.Background(), &txns[i])
			if err != nil {
				t.Fatal(err)
			}
			b.acks = append(b.acks, ack{LSN: tk.Last, CommitTime: tk.Time()})
		}
		b.in, b.txns = append(b.in, in...), append(b.txns, txns...)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b
}
