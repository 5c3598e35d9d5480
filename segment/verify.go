package segment

import (
	"fmt"
	"io/fs"
	"log/slog"
	"math"

	"github.com/walship/walship/vfs"
)

// VerifyReport is the result of Verify: what an intact log holds, and a
// torn tail or unfinished transaction that Open would repair.
type VerifyReport struct {
	Segments   []SegmentSummary
	FirstLSN   uint64 // first retained LSN
	LastLSN    uint64 // last LSN of a committed transaction
	Records    uint64
	Aborted    int // transactions ended by an abort record (their records count in Records)
	Frames     int
	Bytes      int64
	LastTime   int64 // commit time of the last committed transaction (Unix ns), 0 if none
	Torn       *TornTail
	Unfinished *DiscardedTxn // records of a transaction with no durable commit
	// TornCreation names a newest segment whose header was never written.
	TornCreation string
	// Watermark is the acknowledgement watermark found (docs/FORMAT.md
	// §1), nil for a log without one: a torn tail or unfinished
	// transaction is then beyond it (damage at or below it is corruption).
	Watermark *Watermark
}

// Watermark is an acknowledgement watermark: every transaction up to LSN
// was acknowledged, and Segment was durable up to Offset.
type Watermark struct {
	LSN     uint64
	Segment string
	Offset  int64
}

// SegmentSummary describes one verified segment.
type SegmentSummary struct {
	Name     string
	Lineage  uint32
	ID       ID
	FirstLSN uint64
	NextLSN  uint64
	Frames   int
	DataEnd  int64
}

// Verify checks the whole log in dir without changing it: every segment
// header, every frame's checksums, the density of LSNs within and across
// segments, transaction boundaries and commit-time order, and that nothing
// but zeros follows the data of a sealed segment. Corruption is a
// *walerr.CorruptionError (errors.Is walerr.ErrCorruption); a torn tail of the newest segment
// is not corruption and is described in the report. Other errors mean the
// log could not be read.
func Verify(fsys vfs.FS, dir string) (*VerifyReport, error) {
	if fsys == nil {
		fsys = vfs.Default
	}
	// Read before the segments are listed, as by a read-only open: beside
	// a live writer everything it names is durable by then.
	acked, ackedOK, err := readAck(fsys, dir)
	if err != nil {
		return nil, err
	}
	names, _, err := listSegments(fsys, dir)
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		if err := ackLossFiles(acked, ackedOK, nil, ""); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("segment: no segment files in %s: %w", dir, fs.ErrNotExist)
	}
	segs, torn, err := loadHeaders(fsys, dir, names)
	if err != nil {
		return nil, err
	}
	ackedOK = trustAck(acked, ackedOK, segs, slog.New(slog.DiscardHandler), dir)
	if err := ackLossFiles(acked, ackedOK, segs, torn); err != nil {
		return nil, err
	}
	rep := &VerifyReport{TornCreation: torn}
	if ackedOK {
		rep.Watermark = &Watermark{LSN: acked.lsn, Segment: SegmentName(acked.base), Offset: acked.end}
	}
	if len(segs) == 0 {
		return rep, nil
	}
	rep.FirstLSN = segs[0].hdr.base
	expect := segs[0].hdr.base
	var open uint64
	// Where the open transaction began, to reject one Open could not cut
	// off (it begins mid-frame), as Open does.
	var openSeg string
	var openOff int64
	var openMid bool
	lastTime := int64(math.MinInt64)
	var lastEnd int64 // end of the newest segment's intact frames
	for i, s := range segs {
		if s.hdr.base != expect {
			return nil, corruptf(s.name, hdrBaseOff, "segment starts at LSN %d but the previous one ends before LSN %d (gap)", s.hdr.base, expect)
		}
		f, err := openListed(fsys.Open, dir, s.name)
		if err != nil {
			return nil, err
		}
		if i == 0 {
			open = firstTxnStart(f, &s.hdr)
		}
		last := i == len(segs)-1
		scan := scanSegment
		if last {
			scan = scanLive // a writer may be appending as we read
		}
		res, err := scan(f, s.name, &s.hdr, expect, open, lastTime, last)
		if err != nil {
			f.Close()
			return nil, err
		}
		size, _ := f.Size()
		if res.bad != nil && !res.torn {
			f.Close()
			return nil, corruptf(s.name, res.bad.off, "%s", res.bad.reason)
		}
		if res.bad != nil {
			rep.Torn = &TornTail{Segment: s.name, Offset: res.bad.off, Bytes: dataExtent(f, res.bad.off, size) - res.bad.off, Reason: res.bad.reason}
		} else if ext := dataExtent(f, res.end, size); ext > res.end {
			if !last {
				f.Close()
				return nil, corruptf(s.name, res.end, "%d bytes of data after the end of the segment's frames", ext-res.end)
			}
			rep.Torn = &TornTail{Segment: s.name, Offset: res.end, Bytes: ext - res.end, Reason: "unreadable data after the last frame"}
		}
		f.Close()
		lastEnd = res.end
		rep.Segments = append(rep.Segments, SegmentSummary{Name: s.name, Lineage: s.hdr.lineage, ID: s.hdr.id,
			FirstLSN: s.hdr.base, NextLSN: res.nextLSN, Frames: res.frames, DataEnd: res.end})
		rep.Frames += res.frames
		rep.Aborted += res.aborted
		rep.Bytes += res.end
		rep.Records += res.nextLSN - expect
		if res.openTxn != 0 && res.openTxnOff >= 0 {
			openSeg, openOff, openMid = s.name, res.openTxnOff, res.openTxnMid
		}
		expect, open, lastTime = res.nextLSN, res.openTxn, res.commitTime
		if res.lastCommit != 0 {
			rep.LastLSN, rep.LastTime = res.lastCommit, res.commitTime
		}
	}
	if open != 0 && open < rep.FirstLSN {
		return nil, corruptf(segs[0].name, HeaderSize, "unfinished transaction at LSN %d begins before the oldest segment", open)
	}
	if open != 0 && openMid {
		return nil, corruptf(openSeg, openOff, "unfinished transaction at LSN %d begins mid-frame", open)
	}
	if open != 0 {
		rep.Unfinished = &DiscardedTxn{FirstLSN: open, Records: expect - open}
		rep.Records -= expect - open
	}
	if rep.LastLSN == 0 {
		rep.LastLSN = rep.FirstLSN - 1
	}
	if ackedOK {
		// What Open would keep must hold everything acknowledged.
		cut := ackCut{seg: segs[len(segs)-1], end: lastEnd, retained: rep.LastLSN, badOff: -1}
		if t := rep.Torn; t != nil {
			cut.badOff, cut.reason = t.Offset, t.Reason
		}
		if err := cut.check(acked); err != nil {
			return nil, err
		}
	}
	return rep, nil
}
