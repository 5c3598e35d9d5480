package segment

import (
	"fmt"
	"io/fs"
	"math"
	"strings"

	"github.com/walship/walship/vfs"
)

// RecoveryReport says what Open found and repaired. Recovery never drops a
// record that was acknowledged: a torn tail is by definition not yet
// durable, and a transaction without a durable commit was never
// acknowledged.
type RecoveryReport struct {
	Segments int    // segments retained
	FirstLSN uint64 // first retained LSN
	NextLSN  uint64 // LSN the next record gets
	// Torn describes a torn (incompletely written) tail that was truncated.
	Torn *TornTail
	// Discarded describes the records of a transaction whose commit never
	// became durable, which were truncated.
	Discarded *DiscardedTxn
	// Removed lists files removed: a newest segment whose header was never
	// written, segments holding only a discarded transaction, and leftover
	// temporary files.
	Removed []string
}

// TornTail is a truncated incomplete write at the end of the newest segment.
type TornTail struct {
	Segment string
	Offset  int64 // where the bad frame began; the segment now ends here
	Bytes   int64 // bytes that were discarded (up to the end of written data)
	Reason  string
}

// DiscardedTxn is an unfinished transaction removed by recovery.
type DiscardedTxn struct {
	FirstLSN uint64
	Records  uint64
}

// Clean reports that recovery found nothing to repair.
func (r *RecoveryReport) Clean() bool { return r.Torn == nil && r.Discarded == nil }

func (r *RecoveryReport) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d segments, LSN %d..%d", r.Segments, r.FirstLSN, r.NextLSN-1)
	if r.Torn != nil {
		fmt.Fprintf(&b, "; torn tail in %s at offset %d truncated (%d bytes: %s)", r.Torn.Segment, r.Torn.Offset, r.Torn.Bytes, r.Torn.Reason)
	}
	if r.Discarded != nil {
		fmt.Fprintf(&b, "; unfinished transaction at LSN %d discarded (%d records)", r.Discarded.FirstLSN, r.Discarded.Records)
	}
	if len(r.Removed) > 0 {
		fmt.Fprintf(&b, "; removed %s", strings.Join(r.Removed, ", "))
	}
	return b.String()
}

// loadHeaders opens every segment and checks its header. A newest segment
// whose header never became durable is a torn creation (see tornCreation):
// it is returned in torn for the caller to remove.
func loadHeaders(fsys vfs.FS, dir string, names []string) (segs []*segInfo, torn string, err error) {
	for i, name := range names {
		f, err := fsys.Open(vfs.Join(dir, name))
		if err != nil {
			return nil, "", err
		}
		b, err := readHeader(f)
		if err != nil {
			f.Close()
			return nil, "", err
		}
		h, reason := decodeSegmentHeader(b)
		if reason != "" && i == len(names)-1 && tornCreation(f, b) {
			f.Close()
			return segs, name, nil
		}
		f.Close()
		if reason != "" {
			return nil, "", corruptf(name, 0, "%s", reason)
		}
		base, _ := ParseSegmentName(name)
		if h.base != base {
			return nil, "", corruptf(name, 16, "header base LSN %d does not match the file name", h.base)
		}
		if len(segs) > 0 && h.logID != segs[0].hdr.logID {
			return nil, "", corruptf(name, 40, "segment belongs to another log (log id %s, want %s)", h.logID, segs[0].hdr.logID)
		}
		segs = append(segs, &segInfo{name: name, hdr: h, sealed: true, dataEnd: -1})
	}
	return segs, "", nil
}

// tornCreation reports whether the newest segment, whose header hdr does
// not decode, is a creation that never became durable, so that nothing in
// it was ever acknowledged. The header is written before the segment's
// first write and becomes durable with that write's fsync; a crash before
// it may keep any subset of the unsynced sectors (a disk persists sectors
// in any order), so the header sector can be lost while later sectors of
// the first write survive. The segment is a torn creation when
//   - nothing but zeros follows the header bytes (no data at all), or
//   - the header is zeros or short (never written: a sector is written
//     whole, so a header damaged after it was written is not zero) and no
//     frame of a later write than the first (write offset > HeaderSize)
//     exists, which would prove an fsync after the header was written.
//
// A nonzero, invalid header in front of data is corruption.
func tornCreation(f vfs.File, hdr []byte) bool {
	if restIsZero(f, hdr) {
		return true
	}
	if len(hdr) == HeaderSize && !allZero(hdr) {
		return false
	}
	return !findLaterWrite(f, nil, HeaderSize)
}

// restIsZero reports whether a segment file with an unreadable header holds
// nothing but zeros after the header bytes (a segment created, renamed and
// never written durably).
func restIsZero(f vfs.File, hdr []byte) bool {
	size, err := f.Size()
	if err != nil {
		return false
	}
	fr := newFrameReader(f, "", 0, 0)
	for off := int64(len(hdr)); off < size; off += windowSize {
		b, err := fr.bytesAt(off, windowSize)
		if err != nil {
			return false
		}
		if !allZero(b) {
			return false
		}
	}
	return true
}

func (l *Log) recover() (*RecoveryReport, error) {
	rep := &RecoveryReport{}
	names, tmps, err := listSegments(l.fs, l.dir)
	if err != nil {
		return nil, err
	}
	ro := l.opts.ReadOnly
	for _, t := range tmps {
		if ro {
			break
		}
		if err := l.fs.Remove(l.path(t)); err != nil {
			return nil, err
		}
		rep.Removed = append(rep.Removed, t)
	}
	segs, tornName, err := loadHeaders(l.fs, l.dir, names)
	if err != nil {
		return nil, err
	}
	if tornName != "" && !ro {
		if err := l.fs.Remove(l.path(tornName)); err != nil {
			return nil, err
		}
		rep.Removed = append(rep.Removed, tornName)
	}
	if len(rep.Removed) > 0 {
		if err := l.fs.SyncDir(l.dir); err != nil {
			return nil, err
		}
	}
	if len(segs) == 0 && ro {
		return nil, fmt.Errorf("segment: no log in %s: %w", l.dir, fs.ErrNotExist)
	}
	if len(segs) == 0 {
		base := l.opts.FirstLSN
		if tornName != "" {
			base, _ = ParseSegmentName(tornName)
		}
		hdr := segmentHeader{lineage: l.opts.Lineage, base: base, id: newID(), logID: newID()}
		seg, f, err := l.createSegment(nil, hdr, l.opts.ZeroFill)
		if err != nil {
			return nil, err
		}
		// Make the header durable now so the new log is recognisable even
		// before its first append.
		if err := f.Sync(); err != nil {
			f.Close()
			return nil, err
		}
		l.act = active{seg: seg, f: f, off: HeaderSize}
		l.nextLSN, l.lastCommitTime = base, math.MinInt64
		l.installLocked([]*segInfo{seg}, base-1)
		rep.Segments, rep.FirstLSN, rep.NextLSN = 1, base, base
		return rep, nil
	}

	last := len(segs) - 1
	res, f, err := l.scanFile(segs[last], segs[last].hdr.base, 0, true, true)
	if err != nil {
		return nil, err
	}
	if res.frames == 0 && res.openTxn == 0 && last > 0 {
		// No intact frame in the newest segment, so its first frame cannot
		// say whether the previous segment ends inside a transaction: a crash
		// can leave a new segment's header without its first (continuation)
		// frame. Without this the records of that unfinished transaction in
		// the previous segment stayed visible. Scanning the previous segment
		// costs one segment, only in this case.
		prev, pf, err := l.scanFile(segs[last-1], segs[last-1].hdr.base, 0, true, false)
		if err != nil {
			f.Close()
			return nil, err
		}
		pf.Close()
		if prev.nextLSN != segs[last].hdr.base {
			f.Close()
			return nil, corruptf(segs[last].name, 16, "segment starts at LSN %d but the previous one ends before LSN %d (gap)", segs[last].hdr.base, prev.nextLSN)
		}
		if prev.openTxn != 0 {
			res.openTxn, res.openTxnOff, res.openTxnMid = prev.openTxn, -1, false
		}
	}
	activeIdx := last
	truncAt := res.end
	if res.bad != nil {
		size, _ := f.Size()
		rep.Torn = &TornTail{Segment: segs[last].name, Offset: res.bad.off, Bytes: dataExtent(f, res.bad.off, size) - res.bad.off, Reason: res.bad.reason}
		l.log.Warn("wal torn tail truncated", "segment", segs[last].name, "offset", res.bad.off, "reason", res.bad.reason)
	}
	if size, _ := f.Size(); res.bad == nil {
		if ext := dataExtent(f, res.end, size); ext > res.end {
			rep.Torn = &TornTail{Segment: segs[last].name, Offset: res.end, Bytes: ext - res.end, Reason: "unreadable data after the last frame"}
			truncAt = res.end
			res.bad = &badFrame{res.end, rep.Torn.Reason} // forces the truncation below
		}
	}
	nextLSN := res.nextLSN
	if res.openTxn != 0 {
		// The newest transaction has no durable commit: it was never
		// acknowledged, and readers must never see part of it.
		rep.Discarded = &DiscardedTxn{FirstLSN: res.openTxn, Records: res.nextLSN - res.openTxn}
		nextLSN = res.openTxn
		if res.openTxnMid {
			f.Close()
			return nil, corruptf(segs[last].name, res.openTxnOff, "unfinished transaction at LSN %d begins mid-frame", res.openTxn)
		}
		if res.openTxnOff >= 0 {
			truncAt = res.openTxnOff
		} else {
			// It began in an earlier segment: drop the segments after the one
			// where it began and cut that one at its first frame.
			f.Close()
			f = nil
			if last == 0 {
				// Its beginning is not in the log at all (only a crafted or
				// damaged log gets here; this used to index segs[-1]).
				return nil, corruptf(segs[0].name, HeaderSize, "unfinished transaction at LSN %d begins before the oldest segment", res.openTxn)
			}
			activeIdx = last - 1
			for activeIdx > 0 && segs[activeIdx].hdr.base > res.openTxn {
				activeIdx--
			}
			var r2 scanResult
			r2, f, err = l.scanFile(segs[activeIdx], segs[activeIdx].hdr.base, 0, true, false)
			if err != nil {
				return nil, err
			}
			if r2.bad != nil {
				f.Close()
				return nil, corruptf(segs[activeIdx].name, r2.bad.off, "%s", r2.bad.reason)
			}
			if r2.openTxn != res.openTxn || r2.openTxnOff < 0 {
				f.Close()
				return nil, corruptf(segs[activeIdx].name, HeaderSize, "unfinished transaction at LSN %d does not begin in this segment", res.openTxn)
			}
			if r2.openTxnMid {
				// As for the newest segment above: cutting at that frame
				// would drop the committed records before it in the frame.
				f.Close()
				return nil, corruptf(segs[activeIdx].name, r2.openTxnOff, "unfinished transaction at LSN %d begins mid-frame", res.openTxn)
			}
			truncAt = r2.openTxnOff
			for _, s := range segs[activeIdx+1:] {
				if ro {
					s.sealed = false // beyond the visible end
					continue
				}
				if err := l.fs.Remove(l.path(s.name)); err != nil {
					f.Close()
					return nil, err
				}
				rep.Removed = append(rep.Removed, s.name)
			}
			if !ro {
				if err := l.fs.SyncDir(l.dir); err != nil {
					f.Close()
					return nil, err
				}
				segs = segs[:activeIdx+1]
			}
			res = r2
		}
		l.log.Warn("wal unfinished transaction discarded", "first_lsn", rep.Discarded.FirstLSN, "records", rep.Discarded.Records)
	}
	if (truncAt != res.end || res.bad != nil) && !ro {
		if err := f.Truncate(truncAt); err != nil {
			f.Close()
			return nil, err
		}
	}
	if !l.opts.NoPreallocate && !ro {
		if err := f.Preallocate(max(l.opts.SegmentSize, truncAt)); err != nil {
			f.Close()
			return nil, err
		}
	}
	if !ro {
		if err := f.Sync(); err != nil {
			f.Close()
			return nil, err
		}
	}
	seg := segs[activeIdx]
	seg.sealed, seg.dataEnd, seg.durableOff = false, -1, truncAt // synced above (read-only: as found)
	seg.index, seg.indexed = trimIndex(res.index, nextLSN), true
	l.act = active{seg: seg, f: f, off: truncAt}
	l.writeStart = truncAt
	l.nextLSN = nextLSN
	// Commit times never decrease: continue from the last durable one.
	l.lastCommit, l.lastCommitTime = nextLSN-1, res.commitTime
	if res.lastCommit == 0 {
		if l.lastCommitTime, err = l.commitTimeBefore(segs, activeIdx); err != nil {
			f.Close()
			return nil, err
		}
	}
	l.installLocked(segs, nextLSN-1)
	rep.Segments, rep.FirstLSN, rep.NextLSN = len(segs), segs[0].hdr.base, nextLSN
	return rep, nil
}

// trimIndex drops index entries at or past next (truncated frames).
func trimIndex(ix []indexEntry, next uint64) []indexEntry {
	for len(ix) > 0 && ix[len(ix)-1].lsn >= next {
		ix = ix[:len(ix)-1]
	}
	return ix
}

// dataExtent returns the offset after the last nonzero byte at or after
// from (the extent of what a torn write left behind), for the report.
func dataExtent(f vfs.File, from, size int64) int64 {
	fr := newFrameReader(f, "", 0, 0)
	end := from
	for off := from; off < size; off += windowSize {
		b, err := fr.bytesAt(off, windowSize)
		if err != nil {
			return end
		}
		for i := len(b) - 1; i >= 0; i-- {
			if b[i] != 0 {
				end = off + int64(i) + 1
				break
			}
		}
	}
	return end
}

// scanFile opens a segment read-write and scans it. The first frame's
// transaction start is trusted (it may continue a transaction from the
// previous segment, which is not scanned).
func (l *Log) scanFile(seg *segInfo, expect uint64, lastTime int64, trustFirst, last bool) (scanResult, vfs.File, error) {
	open := l.fs.OpenReadWrite
	if l.opts.ReadOnly {
		open = l.fs.Open
	}
	f, err := open(l.path(seg.name))
	if err != nil {
		return scanResult{}, nil, err
	}
	openTxn := uint64(0)
	if trustFirst {
		openTxn = firstTxnStart(f, &seg.hdr)
	}
	scan := scanSegment
	if last && l.opts.ReadOnly {
		scan = scanLive // a writer may be appending as we read
	}
	res, err := scan(f, seg.name, &seg.hdr, expect, openTxn, math.MinInt64, last)
	if err != nil {
		f.Close()
		return res, nil, err
	}
	if res.bad != nil && !res.torn {
		f.Close()
		return res, nil, corruptf(seg.name, res.bad.off, "%s", res.bad.reason)
	}
	return res, f, nil
}

// firstTxnStart returns the transaction start recorded in the segment's
// first frame if that frame continues a transaction from an earlier
// segment, else 0.
func firstTxnStart(f vfs.File, h *segmentHeader) uint64 {
	b := make([]byte, FrameHeaderSize)
	if _, err := readFull(f, b, HeaderSize); err != nil {
		return 0
	}
	fh, reason := decodeFrameHeader(b)
	if reason != "" || fh.firstLSN != h.base || fh.txnStart >= fh.firstLSN {
		return 0
	}
	return fh.txnStart
}

// commitTimeBefore returns the commit time of the last commit record in the
// segments before segs[i], or math.MinInt64. A segment it scans that is
// corrupt is an error: restarting commit times from math.MinInt64 instead
// would let them go backwards.
func (l *Log) commitTimeBefore(segs []*segInfo, i int) (int64, error) {
	for j := i - 1; j >= 0; j-- {
		res, f, err := l.scanFile(segs[j], segs[j].hdr.base, 0, true, false)
		if err != nil {
			return math.MinInt64, err
		}
		f.Close()
		if res.lastCommit != 0 {
			return res.commitTime, nil
		}
	}
	return math.MinInt64, nil
}

func (l *Log) installLocked(segs []*segInfo, visible uint64) {
	l.mu.segs = segs
	l.mu.visibleLSN = visible
	l.mu.visibleSeg = l.act.seg
	l.mu.visibleOff = l.act.off
}
