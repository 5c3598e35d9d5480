package segment

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"math"
	"runtime"
	"testing"

	"github.com/walship/walship/vfs"
	"github.com/walship/walship/walerr"
)

// memFile is a read-only vfs.File over a byte slice: decoders under fuzz
// read through it, and Go's bounds checks catch any read past the input.
type memFile []byte

var _ vfs.File = memFile(nil)

func (m memFile) ReadAt(b []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	if off >= int64(len(m)) {
		return 0, io.EOF
	}
	n := copy(b, m[off:])
	if n < len(b) {
		return n, io.EOF
	}
	return n, nil
}
func (m memFile) WriteAt([]byte, int64) (int, error) { return 0, errors.New("read-only") }
func (m memFile) Close() error                       { return nil }
func (m memFile) Sync() error                        { return nil }
func (m memFile) Truncate(int64) error               { return errors.New("read-only") }
func (m memFile) Preallocate(int64) error            { return errors.New("read-only") }
func (m memFile) Size() (int64, error)               { return int64(len(m)), nil }
func (m memFile) Name() string                       { return "mem" }

// fixChecksums returns a copy of a frame's bytes with both checksums made
// to match, so that the fuzzer gets past them to the length checks, the
// decompressors and the record decoder.
func fixChecksums(b []byte) []byte {
	b = bytes.Clone(b)
	if len(b) < FrameHeaderSize {
		return b
	}
	if n := int64(binary.LittleEndian.Uint32(b[8:])); FrameHeaderSize+n <= int64(len(b)) {
		binary.LittleEndian.PutUint32(b[4:], crc(b[FrameHeaderSize:FrameHeaderSize+n]))
	}
	binary.LittleEndian.PutUint32(b[0:], crc(b[4:FrameHeaderSize]))
	return b
}

// FuzzFrameDecode decodes arbitrary bytes as the first frame of a segment,
// as they are and with their checksums fixed: the header decoder, the
// frame reader (lengths, payload checksum, padding, decompression), the
// record iterator and the segment scan never panic nor read past the
// input; and a frame that decodes, written again through Log.Write,
// decodes to the same records.
func FuzzFrameDecode(f *testing.F) {
	f.Add([]byte{})
	f.Add(make([]byte, FrameHeaderSize))
	f.Add(abortFrameSeed())
	f.Add(abortedRangeSeed())
	f.Fuzz(func(t *testing.T, b []byte) {
		checkFrameBytes(t, b)
		checkFrameBytes(t, fixChecksums(b))
	})
}

// abortFrameSeed is an abort frame (doc.go) ending the transaction begun at
// LSN 1.
func abortFrameSeed() []byte {
	payload := AppendRecord(nil, nil, true, 5)
	h := frameHeader{payloadCRC: crc(payload), storedLen: uint32(len(payload)), rawLen: uint32(len(payload)),
		firstLSN: 3, txnStart: 1, count: 1, writeOffset: HeaderSize, flags: flagEndsTxn | flagAbort}
	b := make([]byte, FrameHeaderSize, h.frameSize())
	h.encode(b)
	b = append(b, payload...)
	return append(b, make([]byte, h.frameSize()-int64(len(b)))...)
}

// abortedRangeSeed is an aborted-range frame (doc.go) covering LSNs 3 to
// 9, its abort record at 9.
func abortedRangeSeed() []byte {
	payload := AppendRecord(nil, nil, true, 5)
	h := frameHeader{payloadCRC: crc(payload), storedLen: uint32(len(payload)), rawLen: uint32(len(payload)),
		firstLSN: 3, txnStart: 3, count: 7, writeOffset: HeaderSize, flags: flagEndsTxn | flagAbort | flagAbortedRange}
	b := make([]byte, FrameHeaderSize, h.frameSize())
	h.encode(b)
	b = append(b, payload...)
	return append(b, make([]byte, h.frameSize()-int64(len(b)))...)
}

type fuzzRecord struct {
	lsn        uint64
	data       []byte
	commit     bool
	commitTime int64
	txnStart   uint64
}

func checkFrameBytes(t *testing.T, b []byte) {
	h, reason := decodeFrameHeader(b)
	base := uint64(1)
	if reason == "" {
		base = h.firstLSN
	}
	var id ID
	binary.LittleEndian.PutUint32(id[:4], h.salt)
	hdr := segmentHeader{lineage: 1, base: base, id: id, logID: ID{1}}
	file := memFile(append(hdr.encode(), b...))
	open := uint64(0)
	if reason == "" && h.txnStart < h.firstLSN {
		open = h.txnStart
	}
	res, err := scanSegment(file, "fuzz.seg", &hdr, base, open, math.MinInt64, true)
	if err != nil {
		t.Fatalf("scan: %v", err)
	}
	if reason != "" {
		if res.frames != 0 {
			t.Fatalf("scan accepted a frame whose header does not decode (%s)", reason)
		}
		return
	}
	fr := newFrameReader(file, "fuzz.seg", h.salt, HeaderSize)
	fh, raw, err := fr.next()
	if err != nil {
		if res.frames != 0 {
			t.Fatalf("scan accepted a frame the frame reader rejects: %v", err)
		}
		return
	}
	var it recordIter
	it.reset(&fh, raw)
	var recs []fuzzRecord
	var lastCommit bool
	for {
		rec, ok, reason := it.next()
		if reason != "" {
			if res.frames != 0 {
				t.Fatalf("scan accepted a frame with a bad record: %s", reason)
			}
			return
		}
		if !ok {
			break
		}
		recs = append(recs, fuzzRecord{rec.LSN, bytes.Clone(rec.Data), rec.Commit, rec.CommitTime, rec.TxnStart})
		lastCommit = rec.Commit
	}
	if uint32(len(recs)) != fh.storedRecords() {
		t.Fatalf("%d records in a frame of %d (count %d)", len(recs), fh.storedRecords(), fh.count)
	}
	if n := len(recs); n > 0 && recs[n-1].lsn != fh.lastLSN() {
		t.Fatalf("last record at LSN %d in a frame ending at %d", recs[n-1].lsn, fh.lastLSN())
	}
	if lastCommit != (fh.flags&flagEndsTxn != 0) {
		if res.frames != 0 {
			t.Fatal("scan accepted a frame whose end-of-transaction flag is wrong")
		}
		return
	}
	if res.frames == 0 {
		// Only cross-record checks (commit times) may reject it now.
		if res.bad == nil || res.bad.off != HeaderSize {
			t.Fatalf("scan rejected a valid first frame: %+v", res.bad)
		}
		return
	}
	reencodeFrame(t, &fh, recs)
}

// reencodeFrame writes recs again through Log.Write and decodes the frame
// it wrote: the same records must come back.
func reencodeFrame(t *testing.T, fh *frameHeader, recs []fuzzRecord) {
	fs := vfs.NewCrashFS()
	l, _, err := Open("/wal", Options{FS: fs, FirstLSN: fh.firstLSN, Codec: fh.codec, NoPreallocate: true, Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	bt := Batch{Count: int(fh.count), FirstLSN: fh.firstLSN, TxnStart: fh.txnStart, EndsTxn: fh.flags&flagEndsTxn != 0,
		Aborted: fh.flags&flagAbort != 0, AbortedRange: fh.flags&flagAbortedRange != 0}
	for _, r := range recs {
		bt.Raw = AppendRecord(bt.Raw, r.data, r.commit, r.commitTime)
		if r.commit {
			bt.LastCommit, bt.LastCommitTime = r.lsn, r.commitTime
		}
	}
	if err := l.Write([]Batch{bt}); err != nil {
		t.Fatal(err)
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	b, err := fs.ReadFile(vfs.Join("/wal", SegmentName(fh.firstLSN)))
	if err != nil {
		t.Fatal(err)
	}
	fr := newFrameReader(memFile(b), "re", l.act.seg.hdr.salt(), HeaderSize)
	h2, raw, err := fr.next()
	if err != nil {
		t.Fatalf("re-encoded frame: %v", err)
	}
	if h2.firstLSN != fh.firstLSN || h2.txnStart != fh.txnStart || h2.count != fh.count || h2.flags != fh.flags {
		t.Fatalf("re-encoded header %+v, want %+v", h2, *fh)
	}
	var it recordIter
	it.reset(&h2, raw)
	for i := range recs {
		rec, ok, reason := it.next()
		if !ok || reason != "" {
			t.Fatalf("re-encoded record %d: %v %s", i, ok, reason)
		}
		r := recs[i]
		if rec.LSN != r.lsn || !bytes.Equal(rec.Data, r.data) || rec.Commit != r.commit || rec.CommitTime != r.commitTime || rec.TxnStart != r.txnStart {
			t.Fatalf("re-encoded record %d: %+v, want %+v", i, rec, r)
		}
	}
	if _, ok, reason := it.next(); ok || reason != "" {
		t.Fatalf("re-encoded frame has more: %v %s", ok, reason)
	}
}

// FuzzSegmentHeader decodes arbitrary bytes as a segment header and as the
// only segment file of a log: decoding never panics; a header that decodes
// encodes to the same bytes; Verify and Open either succeed or report a
// *walerr.CorruptionError.
func FuzzSegmentHeader(f *testing.F) {
	f.Add([]byte{})
	f.Add((&segmentHeader{lineage: 1, base: 1, id: ID{1}, logID: ID{2}}).encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		h, reason := decodeSegmentHeader(b)
		name := SegmentName(1)
		if reason == "" {
			enc := h.encode()
			if !bytes.Equal(enc, b[:HeaderSize]) {
				t.Fatalf("header %x decodes and encodes to %x", b[:HeaderSize], enc)
			}
			if h2, r2 := decodeSegmentHeader(enc); r2 != "" || h2 != h {
				t.Fatalf("re-decoded %+v (%s), want %+v", h2, r2, h)
			}
			name = SegmentName(h.base)
		}
		fs := vfs.NewCrashFS()
		if err := fs.MkdirAll("/wal"); err != nil {
			t.Fatal(err)
		}
		if err := fs.WriteFile(vfs.Join("/wal", name), b, true); err != nil {
			t.Fatal(err)
		}
		segs, torn, err := loadHeaders(fs, "/wal", []string{name})
		switch {
		case err != nil:
			wantCorruption(t, "loadHeaders", err)
		case reason == "" && (len(segs) != 1 || torn != ""):
			t.Fatalf("valid header: segments %d, torn %q", len(segs), torn)
		case reason != "" && torn == "":
			t.Fatalf("invalid header (%s) accepted", reason)
		}
		if _, err := Verify(fs, "/wal"); err != nil {
			wantCorruption(t, "Verify", err)
		}
		l, _, err := Open("/wal", Options{FS: fs, SegmentSize: 4096, NoPreallocate: true, Logger: discard})
		if err != nil {
			wantCorruption(t, "Open", err)
			return
		}
		l.Close()
	})
}

func wantCorruption(t *testing.T, what string, err error) {
	t.Helper()
	var ce *walerr.CorruptionError
	if !errors.As(err, &ce) || !errors.Is(err, walerr.ErrCorruption) {
		t.Fatalf("%s: %v (%T), want a *walerr.CorruptionError", what, err, err)
	}
}

var discard = slog.New(slog.DiscardHandler)

// TestFrameLengthNotTrusted reads a frame whose header claims the largest
// payload in a file that holds a few bytes of it: the reader reports a
// truncated payload without allocating for the claimed length.
func TestFrameLengthNotTrusted(t *testing.T) {
	h := frameHeader{storedLen: MaxFramePayload, rawLen: MaxFramePayload, firstLSN: 1, txnStart: 1, count: 1, salt: 7}
	b := make([]byte, HeaderSize+FrameHeaderSize+100)
	h.encode(b[HeaderSize:])
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fr := newFrameReader(memFile(b), "x", 7, HeaderSize)
	_, _, err := fr.next()
	runtime.ReadMemStats(&after)
	var bf *badFrame
	if !errors.As(err, &bf) || bf.reason != "truncated frame payload" {
		t.Fatalf("next: %v, want a truncated payload", err)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 4*windowSize {
		t.Fatalf("allocated %d bytes for a %d-byte file", n, len(b))
	}
}
