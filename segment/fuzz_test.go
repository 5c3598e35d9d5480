package segment_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/walship/walship/groupcommit"
	"github.com/walship/walship/segment"
	"github.com/walship/walship/vfs"
	"github.com/walship/walship/walerr"
)

var update = flag.Bool("update", false, "rewrite the fuzz fixtures and seed corpora under testdata/ (go test -run TestFuzzFixtures -update)")

// The recovery fuzzer's fixture (testdata/recover/): a sealed segment
// ending inside a transaction T, and the header of the newest segment, the
// next one, whose first frame continues T. The fuzzer supplies the newest
// segment's bytes after its header. Segment ids are random, so the frames
// of the seeds (whose salt comes from the id) only fit this saved header:
// the fixture and the seeds are regenerated together.
const (
	fixtureDir    = "testdata/recover"
	sealedFixture = "sealed.seg"
	newestFixture = "newest.hdr"
)

type recoverFixture struct {
	sealedName string
	sealed     []byte
	newestName string
	header     []byte
}

func loadRecoverFixture(t testing.TB) *recoverFixture {
	t.Helper()
	sealed, err := os.ReadFile(filepath.Join(fixtureDir, sealedFixture))
	if err != nil {
		t.Fatal(err)
	}
	hdr, err := os.ReadFile(filepath.Join(fixtureDir, newestFixture))
	if err != nil {
		t.Fatal(err)
	}
	if len(sealed) < segment.HeaderSize || len(hdr) != segment.HeaderSize {
		t.Fatalf("bad fixture: %d and %d bytes", len(sealed), len(hdr))
	}
	return &recoverFixture{sealedName: segment.SegmentName(leUint64(sealed[16:])), sealed: sealed,
		newestName: segment.SegmentName(leUint64(hdr[16:])), header: hdr}
}

func leUint64(b []byte) uint64 {
	var v uint64
	for i := 7; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v
}

// Modes of FuzzSegmentRecover.
const (
	recoverAfterSealed = iota // the fixture's sealed segment, then the data
	recoverSingle             // the data's segment alone
	recoverFixed              // alone, with every frame's checksums fixed
	recoverModes
)

// FuzzSegmentRecover writes arbitrary bytes after a valid segment header as
// the newest segment of a log and opens it. Open never panics; it either
// fails with a *walerr.CorruptionError, and then Verify agrees, or it succeeds,
// and then the log reads back as whole committed transactions with dense
// LSNs, Verify finds it clean, and an append survives a reopen. In mode
// recoverFixed the checksums of every frame are made right first, so the
// fuzzer reaches the LSN, transaction, flag and commit-time checks.
func FuzzSegmentRecover(f *testing.F) {
	fx := loadRecoverFixture(f)
	// No writer runs beside these reads: damage need not be watched for
	// 300 ms to tell it from a writer's moving end, which would make every
	// damaged input cost that long and starve the fuzzer.
	segment.SetLiveScanSettle(f, time.Millisecond)
	f.Add(byte(recoverAfterSealed), []byte{})
	f.Add(byte(recoverSingle), []byte{})
	f.Fuzz(func(t *testing.T, mode byte, data []byte) {
		mode %= recoverModes
		if mode == recoverFixed {
			data = fixFrameChecksums(data)
		}
		fs := vfs.NewCrashFS()
		if err := fs.MkdirAll(crashDir); err != nil {
			t.Fatal(err)
		}
		if mode == recoverAfterSealed {
			if err := fs.WriteFile(vfs.Join(crashDir, fx.sealedName), fx.sealed, true); err != nil {
				t.Fatal(err)
			}
		}
		if err := fs.WriteFile(vfs.Join(crashDir, fx.newestName), append(bytes.Clone(fx.header), data...), true); err != nil {
			t.Fatal(err)
		}
		checkRecover(t, fs)
	})
}

// fixFrameChecksums walks data as frames from its start (a segment's
// first frame offset) and makes each frame's checksums right, stopping at
// a zero header or the end.
func fixFrameChecksums(data []byte) []byte {
	data = bytes.Clone(data)
	for p := 0; p+segment.FrameHeaderSize <= len(data); {
		h := data[p : p+segment.FrameHeaderSize]
		if bytes.Count(h, []byte{0}) == len(h) {
			break
		}
		n := int(binary.LittleEndian.Uint32(h[8:]))
		end := p + segment.FrameHeaderSize + n
		if n >= 0 && end <= len(data) && end >= p {
			binary.LittleEndian.PutUint32(h[4:], crc32.Checksum(data[p+segment.FrameHeaderSize:end], castagnoli))
		}
		binary.LittleEndian.PutUint32(h[0:], crc32.Checksum(h[4:], castagnoli))
		if end > len(data) || end < p {
			break
		}
		p += (segment.FrameHeaderSize + n + 7) &^ 7
	}
	return data
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func checkRecover(t *testing.T, fs *vfs.CrashFS) {
	vrep, verr := segment.Verify(fs, crashDir)
	if verr != nil && !errors.Is(verr, walerr.ErrCorruption) {
		t.Fatalf("Verify: %v, want nil or corruption", verr)
	}
	opts := segment.Options{FS: fs, SegmentSize: 64 << 10, NoPreallocate: true, Logger: quiet}
	l, rep, err := segment.Open(crashDir, opts)
	if err != nil {
		var ce *walerr.CorruptionError
		if !errors.As(err, &ce) || !errors.Is(err, walerr.ErrCorruption) {
			t.Fatalf("Open: %v (%T), want a *walerr.CorruptionError", err, err)
		}
		if verr == nil {
			t.Fatalf("Open: %v, but Verify found nothing wrong: %+v", err, vrep)
		}
		return
	}
	if verr != nil {
		l.Close()
		t.Fatalf("Open succeeded (%v) but Verify: %v", rep, verr)
	}
	before, err := tryReadTxns(l, l.FirstLSN())
	if err != nil {
		l.Close()
		t.Fatalf("after Open (%v): %v", rep, err)
	}
	c, err := groupcommit.New(l, groupcommit.Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	after := appendTxn(t, c, [][]byte{[]byte("appended after recovery"), []byte("2")})
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	vrep, err = segment.Verify(fs, crashDir)
	if err != nil || vrep.Torn != nil || vrep.Unfinished != nil || vrep.TornCreation != "" {
		t.Fatalf("Verify after recovery (%v) and an append: %+v, %v", rep, vrep, err)
	}
	l, rep2, err := segment.Open(crashDir, opts)
	if err != nil {
		t.Fatalf("reopen after recovery (%v): %v", rep, err)
	}
	defer l.Close()
	if !rep2.Clean() {
		t.Fatalf("reopen after recovery (%v) not clean: %v", rep, rep2)
	}
	got, err := tryReadTxns(l, l.FirstLSN())
	if err != nil {
		t.Fatal(err)
	}
	checkTxns(t, got, append(before, after))
}

// TestFuzzFixtures checks the fixture and the seed corpora: the intact seed
// recovers cleanly. With -update it first writes a new fixture and new
// seeds, made from the frames of a freshly written log.
func TestFuzzFixtures(t *testing.T) {
	if *update {
		writeFuzzFixtures(t)
	}
	fx := loadRecoverFixture(t)
	seed, err := os.ReadFile(filepath.Join("testdata/fuzz/FuzzSegmentRecover", "intact"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(seed)), "\n")
	data, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[2], "[]byte("), ")"))
	if err != nil {
		t.Fatal(err)
	}
	fs := loadCrashFS(t, crashDir, map[string][]byte{fx.sealedName: fx.sealed, fx.newestName: append(bytes.Clone(fx.header), data...)})
	l, rep := open(t, crashDir, segment.Options{FS: fs, SegmentSize: 8 << 10})
	defer l.Close()
	if !rep.Clean() || rep.Segments != 2 {
		t.Fatalf("intact seed: %v", rep)
	}
	if len(readTxns(t, l)) < 8 {
		t.Fatalf("intact seed holds too few transactions")
	}
}

func writeFuzzFixtures(t *testing.T) {
	fs := vfs.NewCrashFS()
	ts := time0.UnixNano()
	opts := segment.Options{FS: fs, SegmentSize: 4096, Logger: quiet}
	l, _ := open(t, crashDir, opts)
	lsn := l.NextLSN()
	write := func(bs ...segment.Batch) {
		t.Helper()
		if err := l.Write(bs); err != nil {
			t.Fatal(err)
		}
		if err := l.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	commit := func(tag string, n, size int) segment.Batch {
		ts++
		b := batch(lsn, lsn, recsOf(tag, n, size), true, ts)
		lsn += uint64(n)
		return b
	}
	reopen := func(o segment.Options) {
		t.Helper()
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		l, _ = open(t, crashDir, o)
	}
	// The sealed segment: three transactions, then T begins; T's last
	// frame does not fit and starts the next segment.
	for i := range 3 {
		write(commit(fmt.Sprintf("s%d", i), 2, 400))
	}
	tStart := lsn
	write(batch(lsn, tStart, recsOf("T0", 2, 400), false, 0))
	lsn += 2
	ts++
	write(batch(lsn, tStart, recsOf("T1", 1, 900), true, ts))
	lsn++
	// Larger segments from here on, and other codecs.
	reopen(segment.Options{FS: fs, SegmentSize: 64 << 10, Logger: quiet})
	write(commit("a", 1, 10), commit("b", 3, 30), commit("c", 2, 5)) // one write, three frames
	reopen(segment.Options{FS: fs, SegmentSize: 64 << 10, Codec: segment.CodecS2, Logger: quiet})
	write(commit("s2", 3, 300))
	reopen(segment.Options{FS: fs, SegmentSize: 64 << 10, Codec: segment.CodecZstd, Logger: quiet})
	write(commit("zstd", 2, 400))
	reopen(segment.Options{FS: fs, SegmentSize: 64 << 10, Logger: quiet})
	uStart := lsn
	write(batch(lsn, uStart, recsOf("U0", 2, 40), false, 0))
	lsn += 2
	ts++
	write(batch(lsn, uStart, recsOf("U1", 2, 40), true, ts))
	lsn += 2
	write(commit("last", 1, 17))
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	names := segFiles(t, fs, crashDir)
	if len(names) != 2 {
		t.Fatalf("fixture log has segments %v, want 2", names)
	}
	sealed, _ := fs.ReadFile(vfs.Join(crashDir, names[0]))
	newest, _ := fs.ReadFile(vfs.Join(crashDir, names[1]))
	frames := walkFrames(newest)
	dataEnd := frames[len(frames)-1].end
	data := newest[segment.HeaderSize:dataEnd]
	if err := os.MkdirAll(fixtureDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{sealedFixture: sealed[:walkFrames(sealed)[len(walkFrames(sealed))-1].end], newestFixture: newest[:segment.HeaderSize]} {
		if err := os.WriteFile(filepath.Join(fixtureDir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	rel := func(off int64) int64 { return off - segment.HeaderSize }
	mutate := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(data)) }
	last := frames[len(frames)-1]
	sealedM, single, fixed := byte(recoverAfterSealed), byte(recoverSingle), byte(recoverFixed)
	recoverSeeds := map[string][]any{
		"intact":              {sealedM, data},
		"intact-single":       {single, data},
		"intact-fixed":        {fixed, data},
		"empty":               {sealedM, []byte{}},
		"torn-last-frame":     {sealedM, data[:rel(last.off)+30]},
		"torn-last-payload":   {sealedM, mutate(func(b []byte) []byte { b[rel(last.payloadEnd)-1] ^= 1; return b })},
		"flipped-first-frame": {sealedM, mutate(func(b []byte) []byte { b[rel(frames[0].off)+60] ^= 0x10; return b })},
		"flipped-padding":     {sealedM, mutate(func(b []byte) []byte { b[rel(frames[1].end)-1] ^= 1; return b })},
		"continuation-torn":   {sealedM, data[:20]},
		"continuation-single": {single, data[:20]},
		"unfinished":          {sealedM, data[:rel(frames[len(frames)-2].off)]},
		"unfinished-fixed":    {fixed, data[rel(frames[1].off):rel(frames[len(frames)-2].off)]},
		"lsn-gap-fixed":       {fixed, mutate(func(b []byte) []byte { b[rel(frames[2].off)+16]++; return b })},
		"zeroed-sector":       {sealedM, mutate(func(b []byte) []byte { clear(b[1024-64 : 1536-64]); return b })},
		"garbage-after":       {sealedM, append(bytes.Clone(data), []byte("\x00\x00\x00\x00\x00\x00\x00\x00garbage")...)},
	}
	// The first frame (T's continuation) with its commit taken out: a lone
	// segment whose unfinished transaction began before it. Recovery once
	// indexed segs[-1] here.
	{
		f0 := frames[0]
		p := bytes.Clone(newest[f0.off+segment.FrameHeaderSize : f0.payloadEnd])
		tag, k := binary.Uvarint(p)
		_, m := binary.Varint(p[k+int(tag>>1):])
		p = append(binary.AppendUvarint(nil, tag&^1), p[k:len(p)-m]...)
		h := bytes.Clone(newest[f0.off : f0.off+segment.FrameHeaderSize])
		binary.LittleEndian.PutUint32(h[8:], uint32(len(p)))
		binary.LittleEndian.PutUint32(h[12:], uint32(len(p)))
		h[45] = 0
		fr := append(append(h, p...), make([]byte, 7)...)
		recoverSeeds["continuation-uncommitted-fixed"] = []any{fixed, fr[:(len(h)+len(p)+7)&^7]}
	}
	writeCorpus(t, "FuzzSegmentRecover", recoverSeeds)

	frameSeeds := map[string][]any{}
	for i, f := range frames {
		frameSeeds[fmt.Sprintf("frame%d-codec%d", i, newest[f.off+44])] = []any{newest[f.off:f.end]}
	}
	frameSeeds["sealed-last"] = []any{sealed[walkFrames(sealed)[len(walkFrames(sealed))-1].off:]}
	frameSeeds["truncated"] = []any{newest[frames[2].off : frames[2].end-9]}
	writeCorpus(t, "FuzzFrameDecode", frameSeeds)

	reserved := bytes.Clone(newest[:segment.HeaderSize])
	reserved[57] = 1
	binary.LittleEndian.PutUint32(reserved[60:], crc32.Checksum(reserved[:60], castagnoli))
	writeCorpus(t, "FuzzSegmentHeader", map[string][]any{
		"reserved-set": {reserved},
		"newest":       {newest[:segment.HeaderSize]},
		"sealed":       {sealed[:segment.HeaderSize+200]},
		"zero":         {make([]byte, segment.HeaderSize)},
		"short":        {sealed[:40]},
		"with-data":    {newest[:dataEnd]},
	})
}

// writeCorpus replaces testdata/fuzz/<target>/ with the given seeds, in the
// "go test fuzz v1" format.
func writeCorpus(t *testing.T, target string, seeds map[string][]any) {
	t.Helper()
	dir := filepath.Join("testdata/fuzz", target)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, args := range seeds {
		var b strings.Builder
		b.WriteString("go test fuzz v1\n")
		for _, a := range args {
			switch v := a.(type) {
			case byte:
				fmt.Fprintf(&b, "byte(%q)\n", v)
			case []byte:
				fmt.Fprintf(&b, "[]byte(%s)\n", strconv.Quote(string(v)))
			default:
				t.Fatalf("seed argument %T", a)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
