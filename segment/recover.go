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
		f, err := openListed(fsys.Open, dir, name)
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
			return nil, "", corruptf(name, hdrBaseOff, "header base LSN %d does not match the file name", h.base)
		}
		if len(segs) > 0 && h.logID != segs[0].hdr.logID {
			return nil, "", corruptf(name, hdrLogIDOff, "segment belongs to another log (log id %s, want %s)", h.logID, segs[0].hdr.logID)
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

// recover is Open's recovery: it settles which files make up the log,
// then either starts a new log or repairs the newest segment's end, and
// installs the result. Each step says what it repaired in the report.
func (l *Log) recover() (*RecoveryReport, error) {
	rep := &RecoveryReport{}
	// The watermark is read before the segments are listed: beside a live
	// writer (a read-only open) everything it names is durable by then.
	var err error
	if l.acked, l.ackedFound, err = readAck(l.fs, l.dir); err != nil {
		return nil, err
	}
	l.ackedOK = l.ackedFound
	segs, tornName, err := l.recoverFiles(rep)
	if err != nil {
		return nil, err
	}
	if len(segs) == 0 {
		return l.recoverEmpty(rep, tornName)
	}
	return l.recoverTail(rep, segs)
}

// recoverFiles lists the segment files, removes leftover temporary files,
// checks every segment's header and removes a torn creation (a writer
// only: a read-only open changes nothing). It returns the segments whose
// headers are intact, oldest first, and the torn creation's name, if any.
func (l *Log) recoverFiles(rep *RecoveryReport) (segs []*segInfo, tornName string, err error) {
	names, tmps, err := listSegments(l.fs, l.dir)
	if err != nil {
		return nil, "", err
	}
	if err := l.removeFiles(rep, tmps); err != nil {
		return nil, "", err
	}
	if segs, tornName, err = loadHeaders(l.fs, l.dir, names); err != nil {
		return nil, "", err
	}
	l.ackedOK = trustAck(l.acked, l.ackedOK, segs, l.log, l.dir)
	if err := ackLossFiles(l.acked, l.ackedOK, segs, tornName); err != nil {
		return nil, "", err
	}
	if tornName != "" {
		if err := l.removeFiles(rep, []string{tornName}); err != nil {
			return nil, "", err
		}
	}
	if len(rep.Removed) > 0 {
		if err := l.fs.SyncDir(l.dir); err != nil {
			return nil, "", err
		}
	}
	return segs, tornName, nil
}

// removeFiles removes the named files of the log directory and lists them
// in the report; a read-only open leaves them. The caller syncs the
// directory.
func (l *Log) removeFiles(rep *RecoveryReport, names []string) error {
	if l.opts.ReadOnly {
		return nil
	}
	for _, name := range names {
		if err := l.fs.Remove(l.path(name)); err != nil {
			return err
		}
		rep.Removed = append(rep.Removed, name)
	}
	return nil
}

// recoverEmpty starts a new log in a directory with no segment: its first
// segment begins at Options.FirstLSN, or where a removed torn creation
// began (nothing in it was acknowledged, so its LSNs were never given
// out). A read-only open of such a directory finds no log.
func (l *Log) recoverEmpty(rep *RecoveryReport, tornName string) (*RecoveryReport, error) {
	if l.opts.ReadOnly {
		return nil, fmt.Errorf("segment: no log in %s: %w", l.dir, fs.ErrNotExist)
	}
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

// recoveryTail is the state recoverTail's steps hand on: the segment that
// becomes the active one, its open file, its scan and where it is cut.
type recoveryTail struct {
	segs    []*segInfo // the log's segments after recovery
	idx     int        // index in segs of the segment that becomes active
	f       vfs.File   // segs[idx], open (read-write unless read-only)
	res     scanResult // the scan of segs[idx]
	truncAt int64      // where segs[idx] ends after recovery
	nextLSN uint64     // LSN the next record gets
}

// recoverTail repairs the end of an existing log: it scans the newest
// segment, cuts a torn tail, drops an unfinished transaction and installs
// the result. On any error the segment file it holds is closed.
func (l *Log) recoverTail(rep *RecoveryReport, segs []*segInfo) (_ *RecoveryReport, err error) {
	t := &recoveryTail{segs: segs, idx: len(segs) - 1}
	defer func() {
		if err != nil && t.f != nil {
			t.f.Close()
		}
	}()
	if err = l.scanNewest(t); err != nil {
		return nil, err
	}
	// Before anything is cut: what would be cut must hold nothing at or
	// below the acknowledgement watermark.
	if l.ackedOK {
		cut := ackCut{seg: t.segs[t.idx], end: t.res.end, retained: t.res.nextLSN - 1, badOff: -1}
		if t.res.openTxn != 0 {
			cut.retained = t.res.openTxn - 1
		}
		if bad := t.res.bad; bad != nil {
			cut.badOff, cut.reason = bad.off, bad.reason
		} else if size, err := t.f.Size(); err == nil {
			if ext := dataExtent(t.f, t.res.end, size); ext > t.res.end {
				cut.badOff, cut.reason = t.res.end, "unreadable data after the last frame"
			}
		}
		if err := cut.check(l.acked); err != nil {
			return nil, err
		}
	}
	l.findTornTail(t, rep)
	t.nextLSN = t.res.nextLSN
	if t.res.openTxn != 0 {
		if err = l.dropUnfinished(t, rep); err != nil {
			return nil, err
		}
	}
	if err = l.cutTail(t); err != nil {
		return nil, err
	}
	if err = l.installTail(t); err != nil {
		return nil, err
	}
	rep.Segments, rep.FirstLSN, rep.NextLSN = len(t.segs), t.segs[0].hdr.base, t.nextLSN
	return rep, nil
}

// scanNewest opens and scans the newest segment into t.
func (l *Log) scanNewest(t *recoveryTail) error {
	segs, last := t.segs, t.idx
	res, f, err := l.scanFile(segs[last], segs[last].hdr.base, 0, true, true)
	if err != nil {
		return err
	}
	t.res, t.f = res, f
	if res.frames == 0 && res.openTxn == 0 && last > 0 {
		// No intact frame in the newest segment, so its first frame cannot
		// say whether the previous segment ends inside a transaction: a crash
		// can leave a new segment's header without its first (continuation)
		// frame. Without this the records of that unfinished transaction in
		// the previous segment stayed visible. Scanning the previous segment
		// costs one segment, only in this case.
		prev, pf, err := l.scanFile(segs[last-1], segs[last-1].hdr.base, 0, true, false)
		if err != nil {
			return err
		}
		pf.Close()
		if prev.nextLSN != segs[last].hdr.base {
			return corruptf(segs[last].name, hdrBaseOff, "segment starts at LSN %d but the previous one ends before LSN %d (gap)", segs[last].hdr.base, prev.nextLSN)
		}
		if prev.openTxn != 0 {
			t.res.openTxn, t.res.openTxnOff, t.res.openTxnMid = prev.openTxn, -1, false
		}
	}
	return nil
}

// findTornTail reports a torn tail of the newest segment: the bad frame
// its scan stopped at, or, with no bad frame, data after the last intact
// frame that no frame header describes. The segment is cut at the end of
// its last intact frame.
func (l *Log) findTornTail(t *recoveryTail, rep *RecoveryReport) {
	name := t.segs[t.idx].name
	t.truncAt = t.res.end
	size, _ := t.f.Size()
	if bad := t.res.bad; bad != nil {
		rep.Torn = &TornTail{Segment: name, Offset: bad.off, Bytes: dataExtent(t.f, bad.off, size) - bad.off, Reason: bad.reason}
		l.log.Warn("wal torn tail truncated", "segment", name, "offset", bad.off, "reason", bad.reason)
		return
	}
	if ext := dataExtent(t.f, t.res.end, size); ext > t.res.end {
		rep.Torn = &TornTail{Segment: name, Offset: t.res.end, Bytes: ext - t.res.end, Reason: "unreadable data after the last frame"}
		t.res.bad = &badFrame{t.res.end, rep.Torn.Reason} // forces the truncation in cutTail
	}
}

// dropUnfinished cuts off the newest transaction, which has no durable
// commit: it was never acknowledged, and readers must never see part of
// it.
func (l *Log) dropUnfinished(t *recoveryTail, rep *RecoveryReport) error {
	res := &t.res
	rep.Discarded = &DiscardedTxn{FirstLSN: res.openTxn, Records: res.nextLSN - res.openTxn}
	t.nextLSN = res.openTxn
	if res.openTxnMid {
		return corruptf(t.segs[t.idx].name, res.openTxnOff, "unfinished transaction at LSN %d begins mid-frame", res.openTxn)
	}
	if res.openTxnOff >= 0 {
		t.truncAt = res.openTxnOff
	} else if err := l.dropUnfinishedSegments(t, rep); err != nil {
		return err
	}
	l.log.Warn("wal unfinished transaction discarded", "first_lsn", rep.Discarded.FirstLSN, "records", rep.Discarded.Records)
	return nil
}

// dropUnfinishedSegments handles an unfinished transaction that began in
// an earlier segment than the newest: it drops the segments after the one
// where it began (a read-only open only hides them) and makes that one the
// active segment, cut at the transaction's first frame.
func (l *Log) dropUnfinishedSegments(t *recoveryTail, rep *RecoveryReport) error {
	open := t.res.openTxn
	t.f.Close()
	t.f = nil
	if t.idx == 0 {
		// Its beginning is not in the log at all (only a crafted or
		// damaged log gets here; this used to index segs[-1]).
		return corruptf(t.segs[0].name, HeaderSize, "unfinished transaction at LSN %d begins before the oldest segment", open)
	}
	idx := t.idx - 1
	for idx > 0 && t.segs[idx].hdr.base > open {
		idx--
	}
	seg := t.segs[idx]
	res, f, err := l.scanFile(seg, seg.hdr.base, 0, true, false)
	if err != nil {
		return err
	}
	t.f = f
	switch {
	case res.bad != nil:
		return corruptf(seg.name, res.bad.off, "%s", res.bad.reason)
	case res.openTxn != open || res.openTxnOff < 0:
		return corruptf(seg.name, HeaderSize, "unfinished transaction at LSN %d does not begin in this segment", open)
	case res.openTxnMid:
		// As for the newest segment: cutting at that frame would drop the
		// committed records before it in the frame.
		return corruptf(seg.name, res.openTxnOff, "unfinished transaction at LSN %d begins mid-frame", open)
	}
	later := t.segs[idx+1:]
	if l.opts.ReadOnly {
		for _, s := range later {
			s.sealed = false // beyond the visible end
		}
	} else {
		names := make([]string, len(later))
		for i, s := range later {
			names[i] = s.name
		}
		if err := l.removeFiles(rep, names); err != nil {
			return err
		}
		if err := l.fs.SyncDir(l.dir); err != nil {
			return err
		}
		t.segs = t.segs[:idx+1]
	}
	t.idx, t.res, t.truncAt = idx, res, res.openTxnOff
	return nil
}

// cutTail makes the active segment end at t.truncAt, durably, with its
// preallocation restored. A read-only open changes nothing.
func (l *Log) cutTail(t *recoveryTail) error {
	if l.opts.ReadOnly {
		return nil
	}
	if t.truncAt != t.res.end || t.res.bad != nil {
		if err := t.f.Truncate(t.truncAt); err != nil {
			return err
		}
	}
	if !l.opts.NoPreallocate {
		if err := t.f.Preallocate(max(l.opts.SegmentSize, t.truncAt)); err != nil {
			return err
		}
	}
	return t.f.Sync()
}

// installTail makes t the log's state: the active segment, the next LSN,
// the last commit and the segments readers see.
func (l *Log) installTail(t *recoveryTail) (err error) {
	seg := t.segs[t.idx]
	seg.sealed, seg.dataEnd, seg.durableOff = false, -1, t.truncAt // synced by cutTail (read-only: as found)
	seg.index, seg.indexed = trimIndex(t.res.index, t.nextLSN), true
	l.act = active{seg: seg, f: t.f, off: t.truncAt}
	l.writeStart = t.truncAt
	l.nextLSN = t.nextLSN
	// Commit times never decrease: continue from the last durable one.
	l.lastCommit, l.lastCommitTime = t.nextLSN-1, t.res.commitTime
	if t.res.lastCommit == 0 {
		if l.lastCommitTime, err = l.commitTimeBefore(t.segs, t.idx); err != nil {
			return err
		}
	}
	l.installLocked(t.segs, t.nextLSN-1)
	return nil
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
	f, err := openListed(open, l.dir, seg.name)
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
