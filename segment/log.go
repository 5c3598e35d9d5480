package segment

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/walship/walship/vfs"
)

// Options configure a Log. The zero value is valid: defaults are noted.
type Options struct {
	// FS is the filesystem; default vfs.Default.
	FS vfs.FS
	// SegmentSize is the size at which the active segment is sealed and a
	// new one started; default 64 MiB, minimum 4 KiB. A frame larger than
	// the size gets a segment of its own.
	SegmentSize int64
	// Codec compresses frame payloads; default CodecNone. A frame whose
	// compressed form is not smaller is stored uncompressed.
	Codec Codec
	// NoPreallocate disables fallocate of new segments. Preallocation
	// keeps fdatasync from having to persist a growing file size.
	NoPreallocate bool
	// ZeroFill writes zeros over new segments' preallocated space before
	// they are used (ignored with NoPreallocate). On ext4 and XFS the first
	// write into a preallocated (unwritten) extent converts it, and the
	// fdatasync covering that write must also commit the conversion to the
	// journal: on this project's machine an fdatasync after a write into
	// fallocated space took markedly longer than one over written zeros,
	// and zero fill shortened the group committer's fdatasyncs
	// (bench/README.md has the numbers). PostgreSQL zero-fills its WAL
	// segments for the same reason (wal_init_zero). The first segment of a
	// new log is zeroed when Open creates it (a write of SegmentSize bytes);
	// later ones in the background, paced by the active segment's progress
	// (done when it is half full; 4 to 64 MiB/s), written back 128 KiB at
	// a time as they are written (so the zeros never reach the disk in a
	// burst that the writer's fdatasyncs would queue behind) and synced
	// every 4 MiB; a log writing faster than 64 MiB/s takes its next
	// segment partly zeroed, waiting at rotation for the sync of at most 4
	// MiB. The active segment of a reopened log is not zeroed further.
	ZeroFill bool
	// Lineage and FirstLSN apply when Open creates a new log: the lineage
	// (timeline) recorded in segment headers (default 1) and the LSN of the
	// first record (default 1).
	Lineage  uint32
	FirstLSN uint64
	// Logger receives recovery and retention events; default slog.Default().
	Logger *slog.Logger
	// AckInterval is the least time between two writes of the
	// acknowledgement watermark (docs/FORMAT.md §1), which a background
	// goroutine keeps after the log's fdatasyncs, off the commit path: it
	// bounds the extra fdatasyncs of that small file and, with the time
	// they take, the acknowledged writes that recovery cannot tell from a
	// torn tail after a crash (docs/FORMAT.md §4). Default
	// DefaultAckInterval; negative: no pause between writes.
	AckInterval time.Duration
	// ReadOnly opens the log for reading only, as it is durably on disk,
	// without repairing anything and without the directory lock: for
	// operator tools that may run beside a live writer. A torn tail or an
	// unfinished transaction is only hidden from readers. Write fails.
	ReadOnly bool
}

// DefaultAckInterval is the default Options.AckInterval.
const DefaultAckInterval = 10 * time.Millisecond

// DefaultSegmentSize is the default Options.SegmentSize.
const DefaultSegmentSize = 64 << 20

// Validate checks the options.
func (o *Options) Validate() error {
	if o.SegmentSize != 0 && o.SegmentSize < 4096 {
		return fmt.Errorf("segment: segment size %d is below the minimum 4096", o.SegmentSize)
	}
	if o.SegmentSize > math.MaxUint32 {
		return fmt.Errorf("segment: segment size %d is above the maximum 4 GiB", o.SegmentSize)
	}
	if o.Codec > CodecZstd {
		return fmt.Errorf("segment: unknown codec %d", o.Codec)
	}
	return nil
}

func (o Options) withDefaults() Options {
	if o.FS == nil {
		o.FS = vfs.Default
	}
	if o.SegmentSize == 0 {
		o.SegmentSize = DefaultSegmentSize
	}
	if o.Lineage == 0 {
		o.Lineage = 1
	}
	if o.FirstLSN == 0 {
		o.FirstLSN = 1
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.AckInterval == 0 {
		o.AckInterval = DefaultAckInterval
	}
	return o
}

// segInfo describes one segment file. Its mutable fields are guarded by
// Log.mu.
type segInfo struct {
	name string
	hdr  segmentHeader
	// sealed: no more frames will be written; dataEnd is then the offset
	// after its last frame (or -1 if unknown: sealed by an earlier process).
	sealed  bool
	dataEnd int64
	// index is a sparse map from frame first LSN to offset, ascending.
	// indexed reports it covers the whole segment.
	index   []indexEntry
	indexed bool
	// durableOff is the offset up to which the segment is known durable
	// (synced): the write offset recorded in the frames of the next write.
	durableOff int64
}

// Batch is a run of encoded records that Write stores as one frame.
type Batch struct {
	// Raw holds Count records encoded with AppendRecord. Write does not
	// retain it.
	Raw   []byte
	Count int
	// FirstLSN must equal the Log's NextLSN when the batch is written.
	FirstLSN uint64
	// TxnStart is the LSN of the first record of the transaction the
	// batch's first record belongs to: FirstLSN unless the batch continues
	// a transaction begun in an earlier batch. A transaction that spans
	// batches must begin a batch (so recovery can drop it by truncation).
	TxnStart uint64
	// EndsTxn reports that the last record is a commit record.
	EndsTxn bool
	// Aborted makes the batch an abort frame: Count is 1, EndsTxn is set
	// and Raw is one empty commit record (AppendRecord(nil, nil, true, t));
	// it ends the transaction begun at TxnStart as aborted, and readers
	// skip that transaction's records. See doc.go.
	Aborted bool
	// AbortedRange makes an abort batch cover a whole transaction aborted
	// in another log this one copies (a standby's): Count is the number of
	// LSNs it covers (at least 2), TxnStart == FirstLSN, Aborted and
	// EndsTxn are set and Raw is the one abort record, which takes the last
	// LSN; the records before it are absent (docs/FORMAT.md §3).
	AbortedRange bool
	// LastCommit is the LSN of the batch's last commit record, 0 if none,
	// and LastCommitTime its commit time.
	LastCommit     uint64
	LastCommitTime int64
	// Framed reports that Raw begins with FrameHeaderSize bytes reserved
	// for the frame header, the records following them. Without
	// compression Write then encodes the header there and writes the frame
	// from Raw itself, appending its zero padding within Raw's capacity,
	// instead of copying it into its write buffer (which it still does when
	// the capacity has no room for the padding).
	Framed bool
}

// active is the segment being written; owned by the writer.
type active struct {
	seg *segInfo
	f   vfs.File
	off int64 // end of written frames
}

// Log is a segmented append-only log in one directory.
//
// Write, Mark, Sync and Publish form the writer side and must be called by
// one goroutine at a time (the group committer); everything else, SyncTo
// included, is safe for concurrent use.
type Log struct {
	dir  string
	opts Options
	fs   vfs.FS
	log  *slog.Logger

	// Writer-owned state.
	act            active
	nextLSN        uint64
	writeStart     int64 // offset where the pending write buffer begins
	wbuf           []byte
	lastCommit     uint64
	lastCommitTime int64
	newIndex       []indexEntry
	lastIndexed    int64

	prep *preparer
	lock io.Closer

	// acked is the acknowledgement watermark found at Open (ackedFound:
	// there is one; ackedOK: and it belongs to this log); ack keeps it up
	// to date (writer only).
	acked      ack
	ackedFound bool
	ackedOK    bool
	ack        *ackWriter

	// failed is the sticky write or sync error (also in mu.err), read
	// without the lock on the write path.
	failed atomic.Pointer[error]

	// syncMu is read-held by SyncTo over its fdatasync and write-held by
	// rotate, so the active segment is not sealed, nor its sync handles
	// closed, under a running sync.
	syncMu sync.RWMutex
	// handles are extra descriptors of the active segment for SyncTo: each
	// concurrent fdatasync uses its own open file, so a writeback error is
	// reported to every one of them (Linux reports it once per open file).
	// They are opened when the segment becomes active, before anything is
	// written to it, so no error of its writes can predate them.
	handles chan vfs.File

	mu struct {
		sync.Mutex
		segs       []*segInfo // ascending by base LSN
		visibleLSN uint64     // last durable commit: readers see up to here
		visibleSeg *segInfo
		visibleOff int64 // durable end of frames in visibleSeg
		notify     chan struct{}
		err        error // sticky failure, reported to readers
		closed     bool
	}
}

// Open opens the log in dir, creating it if it has no segments, and
// recovers it: a torn tail of the newest segment is truncated, as is a
// transaction whose commit never became durable; both are described in the
// report. Corruption anywhere else is a *walerr.CorruptionError and the log is not
// opened: nothing is ever skipped. So is a torn tail, truncation or
// missing newest segment that would remove transactions at or below the
// acknowledgement watermark (docs/FORMAT.md §4). A writer writes the
// watermark for what it recovered before Open returns.
func Open(dir string, opts Options) (*Log, *RecoveryReport, error) {
	if err := opts.Validate(); err != nil {
		return nil, nil, err
	}
	opts = opts.withDefaults()
	l := &Log{dir: dir, opts: opts, fs: opts.FS, log: opts.Logger, lastIndexed: -indexEvery}
	l.mu.notify = make(chan struct{})
	l.handles = make(chan vfs.File, syncHandles)
	if !opts.ReadOnly {
		if err := l.fs.MkdirAll(dir); err != nil {
			return nil, nil, err
		}
		lock, err := l.fs.LockDir(dir)
		if err != nil {
			return nil, nil, fmt.Errorf("segment: open log for writing: %w", err)
		}
		l.lock = lock
	}
	rep, err := l.recover()
	if err != nil {
		if l.act.f != nil {
			l.act.f.Close()
		}
		if l.lock != nil {
			l.lock.Close()
		}
		return nil, nil, err
	}
	if !opts.ReadOnly {
		if err := l.openHandles(); err != nil {
			l.act.f.Close()
			l.lock.Close()
			return nil, nil, err
		}
		// Everything recovery kept is durable now (cutTail synced the active
		// segment; sealed ones were synced at rotation): it is the
		// watermark a log without one starts from.
		cur := ack{logID: l.LogID(), lsn: l.mu.visibleLSN, base: l.act.seg.hdr.base, end: l.act.off}
		if l.ack, err = openAckWriter(l.fs, dir, cur, l.acked, l.ackedFound, opts.AckInterval, l.log); err != nil {
			l.closeHandles()
			l.act.f.Close()
			l.lock.Close()
			return nil, nil, err
		}
		l.prep = startPreparer(l.fs, dir, opts.SegmentSize, !opts.NoPreallocate, opts.ZeroFill, l.act.off)
	}
	return l, rep, nil
}

// path returns the path of a file in the log directory.
func (l *Log) path(name string) string { return vfs.Join(l.dir, name) }

// listSegments returns the segment names in dir by ascending base, and
// the names of leftover temporary files.
func listSegments(fsys vfs.FS, dir string) (segs []string, tmps []string, err error) {
	names, err := fsys.List(dir)
	if err != nil {
		return nil, nil, err
	}
	for _, n := range names {
		if _, ok := ParseSegmentName(n); ok {
			segs = append(segs, n)
		} else if n == PreparedName {
			tmps = append(tmps, n)
		}
	}
	slices.Sort(segs) // fixed-width hex sorts by LSN
	return segs, tmps, nil
}

// readHeader returns the header bytes, fewer for a short file. An I/O
// error is returned, never taken for a short (torn) header: recovery removes
// a newest segment whose header was never written, and must not remove one
// it merely failed to read.
func readHeader(f vfs.File) ([]byte, error) {
	b := make([]byte, HeaderSize)
	n, err := readFull(f, b, 0)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, err
	}
	return b[:n], nil
}

// createSegment writes a new segment file with the given base, through the
// prepared-file path when one is available, and makes its name durable.
// With zero (a new log's first segment, Options.ZeroFill) a file it
// creates is zero-filled; the caller syncs it.
func (l *Log) createSegment(f vfs.File, hdr segmentHeader, zero bool) (*segInfo, vfs.File, error) {
	name := SegmentName(hdr.base)
	var err error
	if f == nil {
		if f, err = l.fs.Create(l.path(PreparedName)); err != nil {
			return nil, nil, err
		}
		if !l.opts.NoPreallocate {
			if err := f.Preallocate(l.opts.SegmentSize); err != nil {
				f.Close()
				return nil, nil, err
			}
			for off := int64(0); zero && off < l.opts.SegmentSize; {
				n, err := writeZeros(f, off, l.opts.SegmentSize)
				if err != nil {
					f.Close()
					return nil, nil, err
				}
				off += n
			}
		}
	}
	// The header becomes durable with the first frame's sync; a crash before
	// that leaves a zeroed header that recovery removes as a torn creation.
	if _, err := f.WriteAt(hdr.encode(), 0); err != nil {
		f.Close()
		return nil, nil, err
	}
	if err := l.fs.Rename(l.path(PreparedName), l.path(name)); err != nil {
		f.Close()
		return nil, nil, err
	}
	if err := l.fs.SyncDir(l.dir); err != nil {
		f.Close()
		return nil, nil, err
	}
	return &segInfo{name: name, hdr: hdr, dataEnd: -1, indexed: true, durableOff: HeaderSize}, f, nil
}

// NextLSN returns the LSN the next written record gets. Writer side.
func (l *Log) NextLSN() uint64 { return l.nextLSN }

// LastCommitTime returns the commit time of the last written commit
// record (Unix ns), or math.MinInt64 if the log has none. Writer side.
func (l *Log) LastCommitTime() int64 { return l.lastCommitTime }

// Dir returns the log's directory.
func (l *Log) Dir() string { return l.dir }

// LogID returns the random id shared by all segments of this log.
func (l *Log) LogID() ID { return l.act.seg.hdr.logID }

// Lineage returns the lineage recorded in the active segment.
func (l *Log) Lineage() uint32 { return l.act.seg.hdr.lineage }

// Write encodes each batch as a frame and writes the frames, starting a new
// segment when the active one is full. Data written is neither durable nor
// visible to readers until Sync (or Publish) returns. After any error the
// log is failed: every later Write and Sync returns the same error.
//
// Each frame records as its write offset the offset up to which the
// segment was known durable when the write began (where the write began,
// when every write is synced before the next): recovery takes a valid frame
// with a write offset above a damaged spot as proof that the spot was
// durable (doc.go). Write may run while SyncTo syncs earlier writes.
func (l *Log) Write(batches []Batch) error {
	if err := l.failure(); err != nil {
		return err
	}
	if l.opts.ReadOnly {
		return errReadOnly
	}
	l.mu.Lock()
	durable := l.act.seg.durableOff
	l.mu.Unlock()
	l.writeStart = l.act.off
	l.wbuf = l.wbuf[:0]
	for i := range batches {
		b := &batches[i]
		if b.FirstLSN != l.nextLSN || b.Count <= 0 || b.TxnStart == 0 || b.TxnStart > b.FirstLSN {
			return l.fail(fmt.Errorf("segment: batch LSN %d (txn %d, %d records) does not follow next LSN %d",
				b.FirstLSN, b.TxnStart, b.Count, l.nextLSN))
		}
		if b.AbortedRange && (!b.Aborted || !b.EndsTxn || b.Count < 2 || b.TxnStart != b.FirstLSN || b.Count > math.MaxUint32) {
			return l.fail(fmt.Errorf("segment: aborted-range batch at LSN %d must be an abort batch covering a whole transaction of 2 to 2^32-1 LSNs", b.FirstLSN))
		}
		if b.Aborted && !b.AbortedRange && (b.Count != 1 || !b.EndsTxn) {
			return l.fail(fmt.Errorf("segment: abort batch at LSN %d must be one transaction-ending record", b.FirstLSN))
		}
		raw := b.Raw
		if b.Framed {
			if len(raw) < FrameHeaderSize {
				return l.fail(fmt.Errorf("segment: framed batch at LSN %d shorter than a frame header", b.FirstLSN))
			}
			raw = raw[FrameHeaderSize:]
		}
		if len(raw) > MaxFramePayload {
			return l.fail(fmt.Errorf("segment: batch of %d bytes exceeds the frame limit %d", len(raw), MaxFramePayload))
		}
		if b.Framed && l.opts.Codec == CodecNone && cap(b.Raw)-len(b.Raw) >= frameAlign {
			var err error
			if durable, err = l.writeFramed(b, raw, durable); err != nil {
				return err
			}
			continue
		}
		start := len(l.wbuf)
		l.wbuf = grow(l.wbuf, FrameHeaderSize)
		codec := l.opts.Codec
		if codec != CodecNone {
			l.wbuf = compress(l.wbuf, codec, raw)
			if len(l.wbuf)-start-FrameHeaderSize >= len(raw) {
				codec = CodecNone
				l.wbuf = l.wbuf[:start+FrameHeaderSize]
			}
		}
		if codec == CodecNone {
			l.wbuf = append(l.wbuf, raw...)
		}
		stored := l.wbuf[start+FrameHeaderSize:]
		h := frameHeader{
			payloadCRC: crc(stored),
			storedLen:  uint32(len(stored)),
			rawLen:     uint32(len(raw)),
			firstLSN:   b.FirstLSN,
			txnStart:   b.TxnStart,
			count:      uint32(b.Count),
			salt:       l.act.seg.hdr.salt(),
			codec:      codec,
		}
		if b.EndsTxn {
			h.flags |= flagEndsTxn
		}
		if b.Aborted {
			h.flags |= flagAbort
		}
		if b.AbortedRange {
			h.flags |= flagAbortedRange
		}
		size := h.frameSize()
		// Rotate before a frame that would overflow a non-empty segment.
		if l.writeStart+int64(start)+size > l.opts.SegmentSize && l.writeStart+int64(start) > HeaderSize {
			frame := slices.Clone(l.wbuf[start:])
			l.wbuf = l.wbuf[:start]
			if err := l.flush(); err != nil {
				return err
			}
			if err := l.rotate(); err != nil {
				return err
			}
			l.wbuf = append(l.wbuf[:0], frame...)
			start = 0
			h.salt = l.act.seg.hdr.salt()
			durable = HeaderSize
		}
		h.writeOffset = uint32(min(l.writeStart, durable))
		h.encode(l.wbuf[start:])
		for pad := size - FrameHeaderSize - int64(h.storedLen); pad > 0; pad-- {
			l.wbuf = append(l.wbuf, 0)
		}
		off := l.writeStart + int64(start)
		if off-l.lastIndexed >= indexEvery {
			l.newIndex = append(l.newIndex, indexEntry{b.FirstLSN, off})
			l.lastIndexed = off
		}
		l.nextLSN += uint64(b.Count)
		if b.LastCommit != 0 {
			l.lastCommit, l.lastCommitTime = b.LastCommit, b.LastCommitTime
		}
	}
	if err := l.flush(); err != nil {
		return err
	}
	if len(l.newIndex) > 0 {
		// Entries may point at frames not yet visible: readers never read
		// past the visible end whatever their starting offset.
		l.mu.Lock()
		l.act.seg.index = append(l.act.seg.index, l.newIndex...)
		l.mu.Unlock()
		l.newIndex = l.newIndex[:0]
	}
	return nil
}

// writeFramed writes the uncompressed frame of a Framed batch from the
// batch's own buffer (after the frames buffered before it), rotating first
// if it would overflow the segment. durable is the segment's durable
// watermark, returned updated after a rotation.
func (l *Log) writeFramed(b *Batch, raw []byte, durable int64) (int64, error) {
	h := frameHeader{
		payloadCRC: crc(raw),
		storedLen:  uint32(len(raw)),
		rawLen:     uint32(len(raw)),
		firstLSN:   b.FirstLSN,
		txnStart:   b.TxnStart,
		count:      uint32(b.Count),
		codec:      CodecNone,
	}
	if b.EndsTxn {
		h.flags |= flagEndsTxn
	}
	if b.Aborted {
		h.flags |= flagAbort
	}
	if b.AbortedRange {
		h.flags |= flagAbortedRange
	}
	size := h.frameSize()
	if err := l.flush(); err != nil {
		return durable, err
	}
	if l.writeStart+size > l.opts.SegmentSize && l.writeStart > HeaderSize {
		if err := l.rotate(); err != nil {
			return durable, err
		}
		durable = HeaderSize
	}
	off := l.writeStart
	h.salt = l.act.seg.hdr.salt()
	h.writeOffset = uint32(min(off, durable))
	h.encode(b.Raw[:FrameHeaderSize])
	frame := b.Raw[:FrameHeaderSize+len(raw)]
	frame = append(frame, zeroPad[:size-int64(len(frame))]...) // within capacity: Write checked
	if _, err := l.act.f.WriteAt(frame, off); err != nil {
		return durable, l.fail(err)
	}
	l.act.off = off + size
	l.writeStart = l.act.off
	l.prep.written.Store(l.act.off)
	if off-l.lastIndexed >= indexEvery {
		l.newIndex = append(l.newIndex, indexEntry{b.FirstLSN, off})
		l.lastIndexed = off
	}
	l.nextLSN += uint64(b.Count)
	if b.LastCommit != 0 {
		l.lastCommit, l.lastCommitTime = b.LastCommit, b.LastCommitTime
	}
	return durable, nil
}

var zeroPad [frameAlign]byte

// flush writes the pending frames at writeStart.
func (l *Log) flush() error {
	if len(l.wbuf) == 0 {
		return nil
	}
	if _, err := l.act.f.WriteAt(l.wbuf, l.writeStart); err != nil {
		return l.fail(err)
	}
	l.act.off = l.writeStart + int64(len(l.wbuf))
	l.writeStart = l.act.off
	l.prep.written.Store(l.act.off)
	l.wbuf = l.wbuf[:0]
	return nil
}

// fail makes err the log's sticky failure, unless it already failed, and
// returns the sticky error. Safe for concurrent use.
func (l *Log) fail(err error) error {
	l.mu.Lock()
	if l.mu.err != nil {
		e := l.mu.err
		l.mu.Unlock()
		return e
	}
	e := sticky(err)
	l.mu.err = e
	l.failed.Store(&e)
	l.wakeLocked()
	l.mu.Unlock()
	l.log.Error("wal failed; every later append fails", "dir", l.dir, "err", err)
	return e
}

// failure returns the sticky error, if any.
func (l *Log) failure() error {
	if p := l.failed.Load(); p != nil {
		return *p
	}
	return nil
}

// rotate seals the active segment and continues in a new one. The active
// segment is synced first, so only the newest segment can ever have a torn
// tail.
func (l *Log) rotate() error {
	// Wait for running SyncTo calls: they use the active segment's handles.
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	if err := l.act.f.Sync(); err != nil {
		return l.fail(err)
	}
	l.closeHandles()
	f, err := l.prep.take()
	if err != nil {
		l.log.Warn("preparing next segment failed; creating it inline", "err", err)
		f = nil
	}
	hdr := segmentHeader{lineage: l.act.seg.hdr.lineage, base: l.nextLSN, id: newID(), logID: l.act.seg.hdr.logID}
	seg, nf, err := l.createSegment(f, hdr, false)
	if err != nil {
		return l.fail(err)
	}
	old := l.act
	l.mu.Lock()
	old.seg.sealed, old.seg.dataEnd, old.seg.durableOff = true, old.off, old.off
	old.seg.index = append(old.seg.index, l.newIndex...)
	l.mu.segs = append(l.mu.segs, seg)
	l.mu.Unlock()
	l.newIndex, l.lastIndexed = l.newIndex[:0], -indexEvery
	l.act = active{seg: seg, f: nf, off: HeaderSize}
	l.writeStart = HeaderSize
	l.prep.written.Store(HeaderSize) // before seal starts the next fill
	l.prep.seal(old.f, old.off)
	if err := l.openHandles(); err != nil {
		return l.fail(err)
	}
	return nil
}

// Sync makes everything written durable (fdatasync) and then visible to
// readers up to the last commit record. A failed sync is sticky: the log
// never retries it (docs/DESIGN.md §4.1). Writer side.
func (l *Log) Sync() error {
	if err := l.failure(); err != nil {
		return err
	}
	p := l.Mark()
	if err := l.act.f.Sync(); err != nil {
		return l.fail(err)
	}
	l.publish(p, true)
	return nil
}

// Publish makes everything written visible to readers without syncing:
// sync mode "off". Writer side.
func (l *Log) Publish() {
	if l.failure() != nil {
		return
	}
	l.publish(l.Mark(), false)
}

// SyncPoint is a position in the log taken by Mark: what SyncTo makes
// durable and visible.
type SyncPoint struct {
	seg        *segInfo
	off        int64  // end of the frames written before Mark
	lastCommit uint64 // last commit record written before Mark
}

// LastCommit returns the LSN of the last commit record written before the
// point was taken (0 if none since the log was opened empty): what becomes
// visible when SyncTo(p) returns.
func (p SyncPoint) LastCommit() uint64 { return p.lastCommit }

// Mark returns the point covering everything written so far, for SyncTo.
// Writer side.
func (l *Log) Mark() SyncPoint {
	return SyncPoint{seg: l.act.seg, off: l.act.off, lastCommit: l.lastCommit}
}

// SyncTo makes everything written before Mark returned p durable
// (fdatasync) and then visible to readers up to p's last commit. Unlike
// Sync it may run concurrently with Write and with other SyncTo calls, so a
// writer may write the next batch, and start its fdatasync, while an
// earlier fdatasync is running (the group committer does not: one flush at
// a time measured faster). fdatasync waits for every page of
// the file under writeback, so when a later SyncTo returns, earlier points
// are durable too, and visibility only ever moves forward. Each concurrent
// call syncs through its own open file of the segment, so a writeback error
// reaches all of them. A failed sync is sticky, as for Sync.
func (l *Log) SyncTo(p SyncPoint) error {
	l.syncMu.RLock()
	defer l.syncMu.RUnlock()
	if err := l.failure(); err != nil {
		return err
	}
	l.mu.Lock()
	sealed := p.seg.sealed // rotate synced it whole
	l.mu.Unlock()
	if !sealed {
		// Not sealed, so p.seg is the active segment: rotate holds syncMu
		// while it switches segments and handles.
		f := <-l.handles
		err := f.Sync()
		l.handles <- f
		if err != nil {
			return l.fail(err)
		}
	}
	if err := l.failure(); err != nil {
		// Another sync failed meanwhile: nothing is published any more.
		return err
	}
	l.publish(p, true)
	return nil
}

// syncHandles is the number of SyncTo calls that can sync at once; more
// wait for a handle.
const syncHandles = 2

// openHandles opens the sync handles of the active segment. Writer side,
// with no SyncTo running.
func (l *Log) openHandles() error {
	for range syncHandles {
		f, err := l.fs.OpenReadWrite(l.path(l.act.seg.name))
		if err != nil {
			l.closeHandles()
			return err
		}
		l.handles <- f
	}
	return nil
}

// closeHandles closes the sync handles; no SyncTo may be running.
func (l *Log) closeHandles() {
	for {
		select {
		case f := <-l.handles:
			f.Close()
		default:
			return
		}
	}
}

// publish makes p visible; points published out of order (concurrent
// SyncTo calls) only ever move visibility forward. With synced, p is
// durable: the acknowledgement watermark may move to it (in the
// background; this never waits for it).
func (l *Log) publish(p SyncPoint, synced bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.mu.err != nil {
		return
	}
	if synced && l.ack != nil {
		l.ack.note(ack{logID: p.seg.hdr.logID, lsn: p.lastCommit, base: p.seg.hdr.base, end: p.off})
	}
	l.mu.visibleLSN = max(l.mu.visibleLSN, p.lastCommit)
	switch {
	case p.seg == l.mu.visibleSeg:
		l.mu.visibleOff = max(l.mu.visibleOff, p.off)
	case p.seg.hdr.base > l.mu.visibleSeg.hdr.base:
		l.mu.visibleSeg, l.mu.visibleOff = p.seg, p.off
	}
	p.seg.durableOff = max(p.seg.durableOff, p.off)
	l.wakeLocked()
}

func (l *Log) wakeLocked() {
	close(l.mu.notify)
	l.mu.notify = make(chan struct{})
}

// Visible returns the LSN of the last durable commit record: readers see
// the log up to and including it.
func (l *Log) Visible() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mu.visibleLSN
}

// FirstLSN returns the LSN of the first record still retained.
func (l *Log) FirstLSN() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mu.segs[0].hdr.base
}

// SegmentInfo describes one segment file for operators and retention.
type SegmentInfo struct {
	Name    string
	BaseLSN uint64
	Lineage uint32
	ID      ID
	Sealed  bool
}

// Segments lists the retained segments, oldest first.
func (l *Log) Segments() []SegmentInfo {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]SegmentInfo, len(l.mu.segs))
	for i, s := range l.mu.segs {
		out[i] = SegmentInfo{Name: s.name, BaseLSN: s.hdr.base, Lineage: s.hdr.lineage, ID: s.hdr.id, Sealed: s.sealed}
	}
	return out
}

// RemoveBefore removes whole sealed segments all of whose records have
// LSNs below lsn: the retention primitive (docs/DESIGN.md §4.5). The caller
// decides lsn from checkpoints. The active segment is never removed. It
// returns the names removed.
func (l *Log) RemoveBefore(lsn uint64) ([]string, error) {
	l.mu.Lock()
	var victims []*segInfo
	for len(l.mu.segs) > 1 && l.mu.segs[1].hdr.base <= lsn && l.mu.segs[0].sealed {
		victims = append(victims, l.mu.segs[0])
		l.mu.segs = l.mu.segs[1:]
	}
	l.mu.Unlock()
	var names []string
	for _, s := range victims {
		if err := l.fs.Remove(l.path(s.name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return names, err
		}
		names = append(names, s.name)
	}
	if len(names) > 0 {
		if err := l.fs.SyncDir(l.dir); err != nil {
			return names, err
		}
		l.log.Info("wal segments removed by retention", "dir", l.dir, "count", len(names), "below_lsn", lsn)
	}
	return names, nil
}

// Close stops the background preparer and closes the active segment.
// Readers then return ErrClosed. Close is idempotent; it does not sync the
// log, but writes and syncs the newest acknowledgement watermark noted
// (what earlier syncs made durable).
func (l *Log) Close() error {
	l.mu.Lock()
	if l.mu.closed {
		l.mu.Unlock()
		return nil
	}
	l.mu.closed = true
	l.wakeLocked()
	l.mu.Unlock()
	if l.prep != nil {
		l.prep.stop()
	}
	var ackErr error
	if l.ack != nil {
		// Writes the newest durable position first: a log closed cleanly
		// leaves an exact watermark.
		ackErr = l.ack.close()
	}
	l.closeHandles()
	err := l.act.f.Close()
	if err == nil {
		err = ackErr
	}
	if l.lock != nil {
		if lerr := l.lock.Close(); err == nil {
			err = lerr
		}
	}
	return err
}
