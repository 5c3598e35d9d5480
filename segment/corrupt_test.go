package segment_test

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/walship/walship/groupcommit"
	"github.com/walship/walship/segment"
	"github.com/walship/walship/vfs"
)

const corruptDir = "/wal"

// corruptLog is an intact log to damage: several sealed segments and a
// newest segment holding several writes.
type corruptLog struct {
	files  map[string][]byte
	names  []string
	frames map[string][]frameInfo
	all    []txn
}

func (cl *corruptLog) newest() string { return cl.names[len(cl.names)-1] }

// lastWrite returns the write offset of the newest segment's last write.
func (cl *corruptLog) lastWrite() int64 {
	fr := cl.frames[cl.newest()]
	return fr[len(fr)-1].writeOffset
}

func buildCorruptLog(t *testing.T) *corruptLog {
	t.Helper()
	fs := vfs.NewCrashFS()
	opts := segment.Options{FS: fs, SegmentSize: 8 << 10, Logger: quiet}
	l, _ := open(t, corruptDir, opts)
	c := newCommitter(t, l, groupcommit.Options{MaxBatchBytes: 300})
	rng := rand.New(rand.NewPCG(7, 7))
	ctx := context.Background()
	var all []txn
	appendGroup := func(n int) {
		var tks []groupcommit.Ticket
		var recs [][][]byte
		for range n {
			i := len(all) + len(tks)
			var rs [][]byte
			for k := range 1 + rng.IntN(3) {
				rs = append(rs, payload(fmt.Sprintf("c%d", i), k, 5+rng.IntN(150), rng))
			}
			tk, err := c.AppendAsync(ctx, rs, time0.Add(time.Duration(i)*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			tks, recs = append(tks, tk), append(recs, rs)
		}
		if err := c.Wait(ctx, tks[len(tks)-1].Last); err != nil {
			t.Fatal(err)
		}
		for i, tk := range tks {
			all = append(all, txn{first: tk.First, last: tk.Last, recs: recs[i], commitTime: tk.CommitTime})
		}
	}
	for len(l.Segments()) < 4 {
		appendGroup(1 + rng.IntN(8))
	}
	// Make sure the newest segment holds several writes of several frames.
	for {
		appendGroup(3)
		b, err := fs.ReadFile(vfs.Join(corruptDir, l.Segments()[len(l.Segments())-1].Name))
		if err != nil {
			t.Fatal(err)
		}
		writes := map[int64]bool{}
		var lastWrite int64
		for _, f := range walkFrames(b) {
			writes[f.writeOffset] = true
			lastWrite = max(lastWrite, f.writeOffset)
		}
		// Several sectors of synced data before the last write.
		if len(writes) >= 4 && len(walkFrames(b)) >= 8 && lastWrite >= 4*vfs.SectorSize {
			break
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	cl := &corruptLog{files: map[string][]byte{}, frames: map[string][]frameInfo{}, all: all}
	for _, n := range segFiles(t, fs, corruptDir) {
		b, err := fs.ReadFile(vfs.Join(corruptDir, n))
		if err != nil {
			t.Fatal(err)
		}
		cl.files[n] = b
		cl.names = append(cl.names, n)
		cl.frames[n] = walkFrames(b)
	}
	return cl
}

// damage is one change to one segment file and where the error must point.
type damage struct {
	what   string
	seg    string
	apply  func(b []byte)
	lo, hi int64 // the error's offset must be in [lo, hi)
}

// run loads the damaged log into a fresh CrashFS and checks Verify, Open
// and readers: corruption is reported, typed, named and never skipped.
// openFails says whether Open itself must fail: Open scans only the newest
// segment and reads only the headers of the others (docs/FORMAT.md §4), so
// damage inside a sealed segment is found by Verify and by any reader that
// reaches it, never by Open.
func (cl *corruptLog) run(t *testing.T, d damage, openFails bool) {
	t.Helper()
	files := maps.Clone(cl.files)
	b := slices.Clone(files[d.seg])
	d.apply(b)
	files[d.seg] = b
	fs := loadCrashFS(t, corruptDir, files)

	_, err := segment.Verify(fs, corruptDir)
	wantCorrupt(t, d.what+": Verify", err, d.seg, d.lo, d.hi)

	l, rep, err := segment.Open(corruptDir, segment.Options{FS: fs, SegmentSize: 8 << 10, Logger: quiet})
	if openFails {
		wantCorrupt(t, d.what+": Open", err, d.seg, d.lo, d.hi)
		return
	}
	if err != nil {
		t.Fatalf("%s: Open: %v", d.what, err)
	}
	defer l.Close()
	if !rep.Clean() {
		t.Fatalf("%s: Open repaired damage in a sealed segment: %v", d.what, rep)
	}
	got, err := tryReadTxns(l, l.FirstLSN())
	wantCorrupt(t, d.what+": reader", err, d.seg, d.lo, d.hi)
	// Everything before the damage reads back; nothing after it does.
	checkTxns(t, got, cl.all[:len(got)])
	if len(got) == len(cl.all) {
		t.Fatalf("%s: reader returned every transaction despite the damage", d.what)
	}
}

// positionClass picks a byte of one kind in a segment: the segment header,
// a frame header, a payload or padding. frameOK restricts the frames.
func (cl *corruptLog) pick(rng *rand.Rand, seg, class string, frameOK func(frameInfo) bool) (pos int64, f frameInfo, ok bool) {
	if class == "segment header" {
		return rng.Int64N(segment.HeaderSize), frameInfo{off: 0, end: segment.HeaderSize}, true
	}
	var cands []frameInfo
	for _, f := range cl.frames[seg] {
		if frameOK(f) && (class != "padding" || f.payloadEnd < f.end) {
			cands = append(cands, f)
		}
	}
	if len(cands) == 0 {
		return 0, f, false
	}
	f = cands[rng.IntN(len(cands))]
	switch class {
	case "frame header":
		return f.off + rng.Int64N(segment.FrameHeaderSize), f, true
	case "payload":
		return f.off + segment.FrameHeaderSize + rng.Int64N(f.payloadEnd-f.off-segment.FrameHeaderSize), f, true
	default:
		return f.payloadEnd + rng.Int64N(f.end-f.payloadEnd), f, true
	}
}

var classes = []string{"segment header", "frame header", "payload", "padding"}

// TestBitFlipIsCorruption flips one bit at random positions of every kind
// and checks it is reported as corruption, never repaired as a torn tail
// and never skipped (docs/DESIGN.md §4.3): in a sealed segment, and in a frame
// of the newest segment that a later write follows.
func TestBitFlipIsCorruption(t *testing.T) {
	cl := buildCorruptLog(t)
	t.Logf("segments %v, newest has %d frames, last write at %d", cl.names, len(cl.frames[cl.newest()]), cl.lastWrite())
	for seed := range uint64(6) {
		rng := rand.New(rand.NewPCG(seed, 99))
		for _, class := range classes {
			// (a) a sealed segment: the first, or one in the middle.
			sealed := cl.names[rng.IntN(len(cl.names)-1)]
			pos, f, ok := cl.pick(rng, sealed, class, func(frameInfo) bool { return true })
			if !ok {
				t.Fatalf("no %s in %s", class, sealed)
			}
			bit := byte(1) << rng.IntN(8)
			d := damage{what: fmt.Sprintf("seed %d: flip %#x at %s offset %d (%s)", seed, bit, sealed, pos, class),
				seg: sealed, apply: func(b []byte) { b[pos] ^= bit }, lo: f.off, hi: f.end}
			t.Run(fmt.Sprintf("sealed/%s/%d", class, seed), func(t *testing.T) {
				cl.run(t, d, class == "segment header")
			})

			// (b) the newest segment, before its last write.
			newest := cl.newest()
			pos, f, ok = cl.pick(rng, newest, class, func(f frameInfo) bool { return f.writeOffset < cl.lastWrite() })
			if !ok {
				t.Fatalf("no %s before the last write of %s", class, newest)
			}
			d = damage{what: fmt.Sprintf("seed %d: flip %#x at %s offset %d (%s)", seed, bit, newest, pos, class),
				seg: newest, apply: func(b []byte) { b[pos] ^= bit }, lo: f.off, hi: f.end}
			t.Run(fmt.Sprintf("newest/%s/%d", class, seed), func(t *testing.T) {
				cl.run(t, d, true)
			})
		}
	}
}

// TestZeroedSectorIsCorruption zeroes a 512-byte sector, or one frame
// header, in the middle of a sealed segment and of the newest segment's
// synced data: a disk that lost a sector is corruption, not a torn tail,
// wherever a later write proves the sector was once durable.
func TestZeroedSectorIsCorruption(t *testing.T) {
	cl := buildCorruptLog(t)
	containing := func(seg string, off int64) frameInfo {
		for _, f := range cl.frames[seg] {
			if off >= f.off && off < f.end {
				return f
			}
		}
		t.Fatalf("no frame of %s holds offset %d", seg, off)
		return frameInfo{}
	}
	for _, seg := range []string{cl.names[1], cl.newest()} {
		frames := cl.frames[seg]
		end := frames[len(frames)-1].end
		if seg == cl.newest() {
			end = cl.lastWrite()
		}
		var sectors []int64
		for s := int64(vfs.SectorSize); s+vfs.SectorSize <= end; s += vfs.SectorSize {
			sectors = append(sectors, s)
		}
		if len(sectors) == 0 {
			t.Fatalf("%s: no whole sector before offset %d", seg, end)
		}
		for i, s := range []int64{sectors[len(sectors)/2], sectors[0], sectors[len(sectors)-1]} {
			f := containing(seg, s)
			d := damage{what: fmt.Sprintf("zero sector %d..%d of %s", s, s+vfs.SectorSize, seg), seg: seg,
				apply: func(b []byte) { clear(b[s : s+vfs.SectorSize]) }, lo: f.off, hi: s + vfs.SectorSize}
			t.Run(fmt.Sprintf("%s/sector%d", seg, i), func(t *testing.T) { cl.run(t, d, seg == cl.newest()) })
		}
		// A whole frame header zeroed reads like the unwritten end of the
		// data; the frames after it say otherwise.
		var before []frameInfo
		for _, f := range frames[1:] {
			if f.end < end {
				before = append(before, f)
			}
		}
		mid := before[len(before)/2]
		d := damage{what: fmt.Sprintf("zero frame header at %d of %s", mid.off, seg), seg: seg,
			apply: func(b []byte) { clear(b[mid.off : mid.off+segment.FrameHeaderSize]) }, lo: mid.off, hi: mid.off + 1}
		t.Run(seg+"/header", func(t *testing.T) { cl.run(t, d, seg == cl.newest()) })
	}
}

// TestCorruptionFoundPastZeroBytes damages the first frame of a segment
// whose later writes hold records with zero bytes at every phase. The
// search for a later write (docs/FORMAT.md §4, item 2) must stay on the 8-byte
// frame grid whatever zero bytes it skips: it once drifted off the grid at
// a zero byte followed by a nonzero one, missed every later frame, and
// "repaired" an acknowledged write as a torn tail, truncating it.
func TestCorruptionFoundPastZeroBytes(t *testing.T) {
	pat := bytes.Repeat([]byte{0, 1, 1, 1, 1, 1, 1, 1}, 64)
	for phase := range 8 {
		t.Run(fmt.Sprint(phase), func(t *testing.T) {
			fs := vfs.NewCrashFS()
			l, _ := open(t, corruptDir, segment.Options{FS: fs, SegmentSize: 64 << 10})
			c := newCommitter(t, l, groupcommit.Options{})
			for i := range 3 {
				appendTxn(t, c, [][]byte{append(bytes.Repeat([]byte{1}, phase), pat...), []byte(fmt.Sprint(i))})
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			name := segFiles(t, fs, corruptDir)[0]
			b, err := fs.ReadFile(vfs.Join(corruptDir, name))
			if err != nil {
				t.Fatal(err)
			}
			f := walkFrames(b)[0]
			b[f.off+100] ^= 4
			if err := fs.WriteFile(vfs.Join(corruptDir, name), b, true); err != nil {
				t.Fatal(err)
			}
			_, err = segment.Verify(fs, corruptDir)
			wantCorrupt(t, "Verify", err, name, f.off, f.end)
			_, rep, err := segment.Open(corruptDir, segment.Options{FS: fs, SegmentSize: 8 << 10, Logger: quiet})
			if err == nil {
				t.Fatalf("Open repaired corruption: %v", rep)
			}
			wantCorrupt(t, "Open", err, name, f.off, f.end)
		})
	}
}
