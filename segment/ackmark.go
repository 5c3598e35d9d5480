package segment

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"sync"
	"time"

	"github.com/walship/walship/vfs"
)

// The acknowledgement watermark (docs/FORMAT.md §1, §4). A torn tail can
// only hold what was never acknowledged, so recovery must know what was:
// the file AckedName holds the highest commit LSN made durable by a sync
// (hence acknowledged) and where it lives. It is written off the commit
// path, by a goroutine that the flusher only signals, so commit latency
// does not grow; it lags the log by at most one write and sync of this
// file plus Options.AckInterval. Its value is never above what is durable
// (it is taken after the log's fdatasync returned), so a read-only open
// beside a live writer can trust it: read it before listing segments, and
// everything it names is already on disk.

// ack is one watermark.
type ack struct {
	seq   uint64 // increases with every write; the slot with the higher valid seq wins
	logID ID
	lsn   uint64 // highest acknowledged (durable) commit LSN; 0: none
	base  uint64 // base LSN of the segment that was active when lsn became durable
	end   int64  // durable end of frames in that segment
}

// newer reports whether a is ahead of b in the log.
func (a ack) newer(b ack) bool {
	if a.lsn != b.lsn {
		return a.lsn > b.lsn
	}
	if a.base != b.base {
		return a.base > b.base
	}
	return a.end > b.end
}

func (a ack) encode() []byte {
	b := make([]byte, ackSlotSize)
	copy(b[ackMagicOff:], ackMagic)
	binary.LittleEndian.PutUint16(b[ackVersionOff:], ackVersion)
	binary.LittleEndian.PutUint16(b[ackSizeOff:], ackSlotSize)
	binary.LittleEndian.PutUint32(b[ackReservedOff:], 0)
	binary.LittleEndian.PutUint64(b[ackSeqOff:], a.seq)
	copy(b[ackLogIDOff:ackLSNOff], a.logID[:])
	binary.LittleEndian.PutUint64(b[ackLSNOff:], a.lsn)
	binary.LittleEndian.PutUint64(b[ackBaseOff:], a.base)
	binary.LittleEndian.PutUint64(b[ackEndOff:], uint64(a.end))
	binary.LittleEndian.PutUint32(b[ackCRCOff:], crc(b[:ackCRCOff]))
	return b
}

func decodeAck(b []byte) (ack, bool) {
	if len(b) < ackSlotSize || string(b[:len(ackMagic)]) != ackMagic ||
		binary.LittleEndian.Uint32(b[ackCRCOff:]) != crc(b[:ackCRCOff]) ||
		binary.LittleEndian.Uint16(b[ackVersionOff:]) != ackVersion ||
		binary.LittleEndian.Uint16(b[ackSizeOff:]) != ackSlotSize {
		return ack{}, false
	}
	a := ack{
		seq:  binary.LittleEndian.Uint64(b[ackSeqOff:]),
		lsn:  binary.LittleEndian.Uint64(b[ackLSNOff:]),
		base: binary.LittleEndian.Uint64(b[ackBaseOff:]),
		end:  int64(binary.LittleEndian.Uint64(b[ackEndOff:])),
	}
	copy(a.logID[:], b[ackLogIDOff:ackLSNOff])
	return a, true
}

// readAck reads the watermark of the log in dir. ok is false when there
// is none: no file (a log written before the watermark existed), or no
// slot that checks out (a file whose creation was interrupted). Then
// recovery applies the rule of logs without one.
func readAck(fsys vfs.FS, dir string) (a ack, ok bool, err error) {
	f, err := fsys.Open(vfs.Join(dir, AckedName))
	if errors.Is(err, fs.ErrNotExist) {
		return ack{}, false, nil
	}
	if err != nil {
		return ack{}, false, err
	}
	defer f.Close()
	b := make([]byte, ackFileSize)
	n, err := readFull(f, b, 0)
	if err != nil && n == 0 && !isEOF(err) {
		return ack{}, false, fmt.Errorf("segment: read %s: %w", AckedName, err)
	}
	b = b[:n]
	for i := range 2 {
		off := i * ackSlotStride
		if off+ackSlotSize > len(b) {
			break
		}
		if s, valid := decodeAck(b[off : off+ackSlotSize]); valid && (!ok || s.seq > a.seq) {
			a, ok = s, true
		}
	}
	return a, ok, nil
}

// ackWriter keeps the watermark file of a writer up to date in the
// background. note never blocks: the flusher calls it after each fdatasync.
type ackWriter struct {
	f        vfs.File
	log      *slog.Logger
	interval time.Duration
	kick     chan struct{} // capacity 1: notes coalesce
	stop     chan struct{}
	done     chan struct{}

	lastErr error // the final flush's, set by run before done is closed

	mu      sync.Mutex
	want    ack // the newest durable position noted
	written ack // the last one written and synced
	failing bool
}

// openAckWriter makes AckedName hold cur, durably, and starts the
// background writer. prev is the watermark read at recovery, if any (its
// seq continues, so that cur wins even over one of another log).
func openAckWriter(fsys vfs.FS, dir string, cur ack, prev ack, hadPrev bool, interval time.Duration, log *slog.Logger) (*ackWriter, error) {
	path := vfs.Join(dir, AckedName)
	f, err := fsys.OpenReadWrite(path)
	created := false
	if errors.Is(err, fs.ErrNotExist) {
		f, err = fsys.Create(path)
		created = true
	}
	if err != nil {
		return nil, fmt.Errorf("segment: open %s: %w", AckedName, err)
	}
	if hadPrev {
		cur.seq = prev.seq
	}
	w := &ackWriter{f: f, log: log, interval: interval, kick: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{}), want: cur, written: cur}
	if created {
		// Both slots, so the file has its full size from the start.
		if _, err := f.WriteAt(make([]byte, ackFileSize), 0); err != nil {
			f.Close()
			return nil, fmt.Errorf("segment: write %s: %w", AckedName, err)
		}
	}
	if err := w.write(cur); err != nil {
		f.Close()
		return nil, err
	}
	if created {
		if err := fsys.SyncDir(dir); err != nil {
			f.Close()
			return nil, err
		}
	}
	go w.run()
	return w, nil
}

// write stores a in the slot after the last one written and syncs it.
func (w *ackWriter) write(a ack) error {
	// A failed write is retried into the same slot, so the other one keeps
	// the last good watermark.
	w.mu.Lock()
	a.seq = w.written.seq + 1
	w.mu.Unlock()
	off := int64(a.seq%2) * ackSlotStride
	if _, err := w.f.WriteAt(a.encode(), off); err != nil {
		return fmt.Errorf("segment: write %s: %w", AckedName, err)
	}
	if err := w.f.Sync(); err != nil {
		return fmt.Errorf("segment: sync %s: %w", AckedName, err)
	}
	w.mu.Lock()
	w.written = a
	w.mu.Unlock()
	return nil
}

// note records that everything up to a is durable. It never blocks.
func (w *ackWriter) note(a ack) {
	w.mu.Lock()
	if a.newer(w.want) {
		w.want = a
	}
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

func (w *ackWriter) run() {
	defer close(w.done)
	var pace *time.Timer
	for {
		select {
		case <-w.kick:
		case <-w.stop:
			w.lastErr = w.flush()
			return
		}
		w.flush()
		if w.interval > 0 {
			if pace == nil {
				pace = time.NewTimer(w.interval)
			} else {
				pace.Reset(w.interval)
			}
			select {
			case <-pace.C:
			case <-w.stop:
				pace.Stop()
				w.lastErr = w.flush()
				return
			}
		}
	}
}

// flush writes the newest noted watermark if it is not written yet. A
// failure leaves the older watermark in place, which stays true (it is
// below what is durable); the next note tries again. It returns the
// write's error.
func (w *ackWriter) flush() error {
	w.mu.Lock()
	a, pending := w.want, w.want.newer(w.written)
	w.mu.Unlock()
	if !pending {
		return nil
	}
	err := w.write(a)
	w.mu.Lock()
	first := err != nil && !w.failing
	w.failing = err != nil
	w.mu.Unlock()
	if first {
		w.log.Warn("wal acknowledgement watermark not updated; recovery treats damage to newer acknowledged writes as a torn tail until it is", "err", err)
	}
	return err
}

// close writes the newest noted watermark and stops the writer; it
// returns the last write's error, so that a log closed without an exact
// watermark does not say it closed cleanly.
func (w *ackWriter) close() error {
	close(w.stop)
	<-w.done
	return errors.Join(w.lastErr, w.f.Close())
}

func isEOF(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// trustAck reports whether the watermark a (found: ok) belongs to the log
// whose segments are segs: one from another log is ignored (and replaced
// by a writer), and the log is recovered by the rule of logs without one.
func trustAck(a ack, ok bool, segs []*segInfo, log *slog.Logger, dir string) bool {
	if !ok || len(segs) == 0 || a.logID == segs[0].hdr.logID {
		return ok
	}
	log.Warn("wal acknowledgement watermark belongs to another log; ignored", "dir", dir, "file", AckedName,
		"log_id", segs[0].hdr.logID, "watermark_log_id", a.logID)
	return false
}

// ackLossFiles checks the segment files against the watermark before any
// is removed: a missing log, or a newest segment removed as a torn
// creation although the watermark shows it was durable, loses
// acknowledged data.
func ackLossFiles(a ack, ok bool, segs []*segInfo, tornName string) error {
	if !ok {
		return nil
	}
	if tornName != "" {
		if base, _ := ParseSegmentName(tornName); a.base >= base {
			return ackLoss(a, tornName, 0, base, "segment header is damaged or missing, but the segment was durable")
		}
	}
	if len(segs) == 0 && a.lsn > 0 {
		return ackLoss(a, SegmentName(a.base), 0, a.base, "no segment file is left")
	}
	return nil
}

// ackCut is how recovery would end the log: the newest segment seg, cut
// after its last intact frame (end, keeping LSNs up to retained), with
// damage at badOff (-1: none) for reason.
type ackCut struct {
	seg      *segInfo
	end      int64
	retained uint64
	badOff   int64
	reason   string
}

// check returns the corruption that cutting the log so would hide: it
// removes acknowledged transactions (the watermark's LSN is beyond what
// is kept), the newest segment the watermark names is missing, or the
// damage lies in bytes the watermark shows were durable.
func (c ackCut) check(a ack) error {
	name, base := c.seg.name, c.seg.hdr.base
	switch {
	case a.base > base && a.lsn > c.retained:
		// (A newer segment the watermark names may go without loss: one
		// that held only frames of a transaction that never committed,
		// removed by a recovery that crashed before it rewrote ACKED.)
		return ackLoss(a, SegmentName(a.base), 0, c.retained+1, "segment file is missing")
	case a.lsn > c.retained:
		off, reason := c.end, "the log ends here"
		if c.badOff >= 0 {
			off, reason = c.badOff, c.reason
		}
		return ackLoss(a, name, off, c.retained+1, reason)
	case c.badOff >= 0 && a.base == base && c.badOff < a.end:
		return corruptf(name, c.badOff, "%s; the acknowledgement watermark shows the segment durable up to offset %d: damage, not a torn write", c.reason, a.end)
	}
	return nil
}

// ackLoss is the corruption of acknowledged data: what recovery would
// remove from LSN first on includes transactions acknowledged up to the
// watermark's LSN.
func ackLoss(a ack, seg string, off int64, first uint64, reason string) error {
	e := corruptf(seg, off, "%s", reason)
	if a.lsn >= first {
		e.LSN = first
		e.Reason += fmt.Sprintf("; acknowledged transactions at LSN %d..%d (the acknowledgement watermark in %s) would be lost: damage, not a torn write", first, a.lsn, AckedName)
	} else {
		e.Reason += fmt.Sprintf("; the acknowledgement watermark in %s shows it durable: damage, not a torn write", AckedName)
	}
	return e
}
