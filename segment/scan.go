package segment

import (
	"encoding/binary"
	"errors"
	"io"
	"sync/atomic"
	"time"

	"github.com/walship/walship/vfs"
)

// frameReader reads frames of one segment file sequentially through a
// window buffer, so small frames cost no system call each.
type frameReader struct {
	f     vfs.File
	name  string
	salt  uint32
	off   int64 // offset of the next frame
	limit int64 // frames must end at or before limit; -1: no limit

	win    []byte // window of the file starting at winOff
	winOff int64
	raw    []byte // decompression buffer
}

const windowSize = 256 << 10

func newFrameReader(f vfs.File, name string, salt uint32, off int64) *frameReader {
	return &frameReader{f: f, name: name, salt: salt, off: off, limit: -1}
}

// bytesAt returns n bytes at off, or fewer at end of file.
func (fr *frameReader) bytesAt(off int64, n int) ([]byte, error) {
	if off >= fr.winOff && off+int64(n) <= fr.winOff+int64(len(fr.win)) {
		s := off - fr.winOff
		return fr.win[s : s+int64(n)], nil
	}
	if n > windowSize {
		// n may be a length read from the file: never allocate for bytes
		// past its end (a corrupt length must not make us allocate). A short result is the caller's
		// "truncated" case.
		if sz, err := fr.f.Size(); err == nil && off+int64(n) > sz {
			n = int(max(0, sz-off))
		}
	}
	size := max(n, windowSize)
	if fr.limit >= 0 {
		// Never cache bytes past the durable end: they may still change.
		size = int(max(int64(n), min(int64(size), fr.limit-off)))
	}
	if cap(fr.win) < size {
		fr.win = make([]byte, size)
	}
	fr.win = fr.win[:size]
	m, err := readFull(fr.f, fr.win, off)
	fr.win, fr.winOff = fr.win[:m], off
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, err
	}
	return fr.win[:min(m, n)], nil
}

// errEnd is returned by next at the end of the segment's data: end of file,
// the limit, or a zeroed frame header (the preallocated, never written part).
var errEnd = errors.New("end of segment data")

// badFrame is a frame that failed a check; whether it is corruption or a
// torn tail is for the caller to decide.
type badFrame struct {
	off    int64
	reason string
}

func (b *badFrame) Error() string { return b.reason }

// next reads and checks the frame at fr.off and advances past it. It
// returns the header and the raw (decompressed) payload, which aliases an
// internal buffer valid until the next call. Errors: errEnd, *badFrame, or
// an I/O error.
func (fr *frameReader) next() (frameHeader, []byte, error) {
	off := fr.off
	if fr.limit >= 0 && off >= fr.limit {
		return frameHeader{}, nil, errEnd
	}
	hb, err := fr.bytesAt(off, FrameHeaderSize)
	if err != nil {
		return frameHeader{}, nil, err
	}
	if len(hb) == 0 {
		return frameHeader{}, nil, fr.endAt(off)
	}
	if len(hb) < FrameHeaderSize {
		if allZero(hb) {
			return frameHeader{}, nil, fr.endAt(off)
		}
		return frameHeader{}, nil, &badFrame{off, "truncated frame header"}
	}
	h, reason := decodeFrameHeader(hb)
	if reason != "" {
		if allZero(hb) {
			return h, nil, fr.endAt(off)
		}
		return h, nil, &badFrame{off, reason}
	}
	if h.salt != fr.salt {
		return h, nil, &badFrame{off, "frame belongs to another segment (salt mismatch)"}
	}
	frameEnd := off + h.frameSize()
	if fr.limit >= 0 && frameEnd > fr.limit {
		return h, nil, &badFrame{off, "frame extends past the durable end"}
	}
	// Payload and padding in one read: a second read could refill the
	// window that stored aliases.
	body, err := fr.bytesAt(off+FrameHeaderSize, int(frameEnd-off-FrameHeaderSize))
	if err != nil {
		return h, nil, err
	}
	if len(body) < int(h.storedLen) {
		return h, nil, &badFrame{off, "truncated frame payload"}
	}
	stored := body[:h.storedLen]
	if crc(stored) != h.payloadCRC {
		return h, nil, &badFrame{off, "frame payload checksum mismatch"}
	}
	// Padding is not covered by a checksum but is written as zeros with the
	// frame: a nonzero byte there is damage to written data, as in a
	// checksummed byte (it may sit in the same sector as one). A file cut
	// inside the padding leaves the frame whole; the missing bytes read as
	// zeros once recovery extends the file again.
	if !allZero(body[h.storedLen:]) {
		return h, nil, &badFrame{off, "nonzero frame padding"}
	}
	raw, reason := decompress(fr.raw, &h, stored)
	if reason != "" {
		return h, nil, &badFrame{off, reason}
	}
	if h.codec != CodecNone {
		fr.raw = raw
	}
	fr.off = frameEnd
	return h, raw, nil
}

// endAt is next's result where the data ends at off (end of file or a
// zeroed header). Before a known durable end (limit) the data cannot end:
// bytes there are missing or zeroed, and a reader must not stop as if the
// segment were complete.
func (fr *frameReader) endAt(off int64) error {
	if fr.limit >= 0 {
		return &badFrame{off, "zeroed or missing data before the durable end"}
	}
	return errEnd
}

func allZero(b []byte) bool {
	for len(b) >= 8 {
		if b[0]|b[1]|b[2]|b[3]|b[4]|b[5]|b[6]|b[7] != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// recordIter walks the records of one decoded frame payload.
type recordIter struct {
	raw      []byte
	pos      int
	lsn      uint64 // LSN of the next record
	txnStart uint64
	left     uint32
	abort    bool // the frame is an abort frame (one abort record)
}

func (it *recordIter) reset(h *frameHeader, raw []byte) {
	*it = recordIter{raw: raw, lsn: h.firstLSN, txnStart: h.txnStart, left: h.count, abort: h.flags&flagAbort != 0}
	if h.flags&flagAbortedRange != 0 {
		// Only the abort record is stored, at the frame's last LSN.
		it.lsn, it.left = h.lastLSN(), 1
	}
}

// next returns the next record; ok is false when the frame is exhausted.
func (it *recordIter) next() (rec Record, ok bool, reason string) {
	if it.left == 0 {
		if it.pos != len(it.raw) {
			return rec, false, "trailing bytes after the frame's last record"
		}
		return rec, false, ""
	}
	data, commit, ct, n, reason := decodeRecord(it.raw[it.pos:])
	if reason != "" {
		return rec, false, reason
	}
	if it.abort && (!commit || len(data) != 0) {
		return rec, false, "abort record with data or without the commit bit"
	}
	rec = Record{LSN: it.lsn, Data: data, Commit: commit, CommitTime: ct, TxnStart: it.txnStart, Aborted: it.abort}
	it.pos += n
	it.lsn++
	it.left--
	if commit {
		it.txnStart = it.lsn
	}
	return rec, true, ""
}

// scanResult summarizes one segment's frames as scanned from its header to
// the end of its data.
type scanResult struct {
	nextLSN     uint64 // LSN after the last good record
	end         int64  // offset after the last good frame
	frames      int
	openTxn     uint64 // first LSN of a transaction still open at the end, 0 if none
	openTxnOff  int64  // offset of the frame where openTxn began, if in this segment
	openTxnMid  bool   // openTxn began after the first record of that frame
	lastCommit  uint64 // LSN of the last commit record, 0 if none
	commitTime  int64  // commit time of lastCommit
	firstCommit int64  // commit time of the first commit record, 0 if none
	aborted     int    // transactions ended by an abort record
	index       []indexEntry

	bad  *badFrame // first bad frame, if any
	torn bool      // bad is a torn tail (only for the last segment)
}

// indexEntry maps the first LSN of a frame to its offset.
type indexEntry struct {
	lsn uint64
	off int64
}

// indexEvery is the spacing in bytes of the sparse in-memory index.
const indexEvery = 32 << 10

// scanSegment reads every frame of a segment and checks the records' LSNs,
// transaction boundaries and commit times against the state carried from
// the previous segment (expectLSN, openTxn, lastTime). For the newest
// segment (last) a bad frame is classified as a torn tail when no later
// write survived after it; see doc.go.
func scanSegment(f vfs.File, name string, h *segmentHeader, expectLSN, openTxn uint64, lastTime int64, last bool) (scanResult, error) {
	res := scanResult{nextLSN: expectLSN, end: HeaderSize, openTxn: openTxn, openTxnOff: -1, commitTime: lastTime}
	salt := h.salt()
	fr := newFrameReader(f, name, salt, HeaderSize)
	var it recordIter
	lastIndexed := int64(-indexEvery)
	for {
		off := fr.off
		fh, raw, err := fr.next()
		if err == errEnd {
			if last && findLaterWrite(f, &salt, off) {
				// A zeroed frame header with durable frames after it: a
				// zeroed sector, not the end of the data.
				res.bad = &badFrame{off, "zeroed data before later frames"}
			}
			break
		}
		var bf *badFrame
		if errors.As(err, &bf) {
			res.bad = bf
			break
		}
		if err != nil {
			return res, err
		}
		// Cross-frame checks: density and transaction continuity.
		if fh.firstLSN != res.nextLSN {
			res.bad = &badFrame{off, "frame LSN does not follow the previous record"}
			break
		}
		wantStart := fh.firstLSN
		if res.openTxn != 0 {
			wantStart = res.openTxn
		}
		if fh.txnStart != wantStart {
			res.bad = &badFrame{off, "frame transaction start does not match the open transaction"}
			break
		}
		if res.openTxn == 0 {
			res.openTxn, res.openTxnOff = fh.firstLSN, off
		}
		it.reset(&fh, raw)
		var reason string
		var rec Record
		ok := true
		var lastRec Record
		for {
			rec, ok, reason = it.next()
			if !ok {
				break
			}
			lastRec = rec
			if rec.Commit {
				if rec.CommitTime < res.commitTime {
					reason = "commit time goes backwards"
					break
				}
				if res.lastCommit == 0 {
					res.firstCommit = rec.CommitTime
				}
				res.lastCommit, res.commitTime = rec.LSN, rec.CommitTime
				res.openTxn, res.openTxnOff, res.openTxnMid = 0, -1, false
				if rec.Aborted {
					res.aborted++
				}
			} else if res.openTxn == 0 {
				res.openTxn, res.openTxnOff, res.openTxnMid = rec.LSN, off, rec.LSN != fh.firstLSN
			}
		}
		if reason == "" && lastRec.Commit != (fh.flags&flagEndsTxn != 0) {
			reason = "frame end-of-transaction flag does not match its last record"
		}
		if reason != "" {
			res.bad = &badFrame{off, "record: " + reason}
			break
		}
		if off-lastIndexed >= indexEvery {
			res.index = append(res.index, indexEntry{fh.firstLSN, off})
			lastIndexed = off
		}
		res.nextLSN = fh.lastLSN() + 1
		res.end = fr.off
		res.frames++
	}
	if res.bad != nil && last {
		res.torn = !findLaterWrite(f, &salt, res.bad.off)
	}
	return res, nil
}

// findLaterWrite reports whether a valid frame written by a later write
// call than the one that wrote offset bad exists after bad. Writes are
// followed by fsync before the next write begins, so such a frame proves the
// bytes at bad were once durable: damage there is corruption, not a torn
// write. Frames are 8-byte aligned; the search skips zeroed regions quickly.
// With a nil salt it accepts a frame of any salt (for a segment whose
// header, hence salt, is unreadable).
func findLaterWrite(f vfs.File, salt *uint32, bad int64) bool {
	size, err := f.Size()
	if err != nil {
		return true // cannot prove it torn: treat as corruption
	}
	fr := newFrameReader(f, "", 0, 0)
	// Every candidate header offset is a multiple of frameAlign. The search
	// must stay on that grid: it used to resume at "first nonzero byte + 8",
	// which a zero byte followed by a nonzero one pushes off the grid, after
	// which no later frame was ever found and corruption was "repaired" as a
	// torn tail, truncating acknowledged writes.
	off := alignUp(bad + 1)
	for off+FrameHeaderSize <= size {
		// Skip zeroed runs a window at a time: a header starts at most
		// FrameHeaderSize-1 bytes before its first nonzero byte.
		b, err := fr.bytesAt(off, windowSize)
		if err != nil {
			return true
		}
		nz := firstNonZero(b)
		if nz < 0 {
			if len(b) < frameAlign {
				return false
			}
			off += int64(len(b)) &^ (frameAlign - 1)
			continue
		}
		p := off + int64(nz) // first nonzero byte: candidates are (p-48, p]
		start := max(off, (p-FrameHeaderSize+1)&^(frameAlign-1))
		for c := start; c <= p && c+FrameHeaderSize <= size; c += frameAlign {
			hb, err := fr.bytesAt(c, FrameHeaderSize)
			if err != nil {
				return true
			}
			h, reason := decodeFrameHeader(hb)
			if reason != "" || (salt != nil && h.salt != *salt) || int64(h.writeOffset) <= bad {
				continue
			}
			fr.off, fr.salt = c, h.salt
			if _, _, err := fr.next(); err == nil {
				return true
			}
		}
		off = p&^(frameAlign-1) + frameAlign
	}
	return false
}

// firstNonZero returns the index of the first nonzero byte of b, or -1.
func firstNonZero(b []byte) int {
	i := 0
	for ; i+8 <= len(b); i += 8 {
		if binary.LittleEndian.Uint64(b[i:]) != 0 {
			break
		}
	}
	for ; i < len(b); i++ {
		if b[i] != 0 {
			return i
		}
	}
	return -1
}

// Live scans: a read-only open or Verify may run beside a writer, and then
// a frame being written, or a later frame written after the scan read an
// earlier region, looks exactly like damage. Corruption is reported only
// when scans over at least liveScanSettle fail at the same place; while the
// bad spot keeps moving forward a writer is appending, and the data from
// the bad spot on is its unfinished, not yet durable, end.
const (
	liveScanTries = 30
	liveScanPause = 10 * time.Millisecond
)

// liveScanSettle is longer than any single write. A variable only so that
// the fuzz tests, which have no writer, need not wait for it on every
// damaged input.
var liveScanSettle atomic.Int64

func init() { liveScanSettle.Store(int64(300 * time.Millisecond)) }

// scanLive is scanSegment for the newest segment of a log that a writer may
// be appending to.
func scanLive(f vfs.File, name string, h *segmentHeader, expectLSN, openTxn uint64, lastTime int64, last bool) (scanResult, error) {
	res, err := scanSegment(f, name, h, expectLSN, openTxn, lastTime, last)
	var stableFor time.Duration
	settle := time.Duration(liveScanSettle.Load())
	pause := min(liveScanPause, settle)
	for try := 0; err == nil && res.bad != nil && !res.torn; try++ {
		if try == liveScanTries {
			res.torn = true // still moving: a live writer's unfinished end
			break
		}
		time.Sleep(pause)
		again, err := scanSegment(f, name, h, expectLSN, openTxn, lastTime, last)
		if err != nil {
			return again, err
		}
		if again.bad != nil && again.bad.off == res.bad.off && again.bad.reason == res.bad.reason {
			stableFor += pause
			if stableFor >= settle {
				return again, nil // stable: real damage
			}
			pause = min(2*pause, settle)
		} else {
			stableFor, pause = 0, min(liveScanPause, settle)
		}
		res = again
	}
	return res, err
}
