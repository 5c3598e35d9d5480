package segment

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"

	"github.com/walship/walship/vfs"
)

// Reader iterates over the log's records in LSN order. It sees only
// records up to the last durable commit (docs/DESIGN.md §4.2): never a record
// that is not yet durable, never part of an unfinished transaction. A
// Reader is not safe for concurrent use; use one per goroutine.
type Reader struct {
	l      *Log
	follow bool

	from   uint64 // skip records below this LSN
	expect uint64 // LSN of the next frame's first record
	seg    *segInfo
	f      vfs.File
	fr     *frameReader
	it     recordIter
	// frameOff is the offset of the frame it iterates, for errors.
	frameOff int64
	closed   bool
}

// NewReader returns a reader positioned at LSN from. If follow is set, Next
// waits for new durable data at the end of the log instead of returning
// io.EOF. Positioning uses the segment list and each segment's sparse
// index, so it reads at most indexEvery bytes before from (plus a one-time
// index build for a segment written by an earlier process).
func (l *Log) NewReader(from uint64, follow bool) (*Reader, error) {
	r := &Reader{l: l, follow: follow, from: from}
	if err := r.position(from); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *Reader) position(from uint64) error {
	l := r.l
	l.mu.Lock()
	if l.mu.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	segs := l.mu.segs
	if from < segs[0].hdr.base {
		l.mu.Unlock()
		return fmt.Errorf("%w: LSN %d requested, oldest retained is %d", ErrRemoved, from, segs[0].hdr.base)
	}
	i := sort.Search(len(segs), func(i int) bool { return segs[i].hdr.base > from }) - 1
	seg := segs[i]
	indexed := seg.indexed
	l.mu.Unlock()

	f, err := openListed(l.fs.Open, l.dir, seg.name)
	if err != nil {
		return err
	}
	if !indexed {
		if err := buildIndex(l, seg, f); err != nil {
			f.Close()
			return err
		}
	}
	l.mu.Lock()
	ix := seg.index
	l.mu.Unlock()
	off, lsn := int64(HeaderSize), seg.hdr.base
	if j := sort.Search(len(ix), func(j int) bool { return ix[j].lsn > from }) - 1; j >= 0 {
		off, lsn = ix[j].off, ix[j].lsn
	}
	if r.f != nil {
		r.f.Close()
	}
	r.seg, r.f, r.expect = seg, f, lsn
	r.fr = newFrameReader(f, seg.name, seg.hdr.salt(), off)
	r.it = recordIter{}
	return nil
}

// buildIndex scans a sealed segment written by an earlier process to build
// its sparse index. A bad frame ends the index there without an error: the
// index only speeds up positioning, and a reader positioned anywhere before
// the damage must still return every record before it (what dump salvages)
// and then stop at the bad frame with a *walerr.CorruptionError, as a
// reader positioned after it does when it reads on from the last index
// entry. Nothing is skipped either way.
func buildIndex(l *Log, seg *segInfo, f vfs.File) error {
	fr := newFrameReader(f, seg.name, seg.hdr.salt(), HeaderSize)
	var ix []indexEntry
	last := int64(-indexEvery)
	for {
		off := fr.off
		h, _, err := fr.next()
		if err == errEnd {
			break
		}
		var bf *badFrame
		if errors.As(err, &bf) {
			break
		}
		if err != nil {
			return err
		}
		if off-last >= indexEvery {
			ix = append(ix, indexEntry{h.firstLSN, off})
			last = off
		}
	}
	l.mu.Lock()
	if !seg.indexed {
		seg.index, seg.indexed = ix, true
	}
	l.mu.Unlock()
	return nil
}

// view is a snapshot of what readers may see.
type view struct {
	lsn    uint64
	seg    *segInfo
	off    int64
	notify chan struct{}
	next   *segInfo // segment after the reader's, if any
	sealed bool     // reader's segment is sealed
	end    int64    // its data end if known, else -1
}

func (r *Reader) view() (view, error) {
	l := r.l
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.mu.closed || r.closed {
		return view{}, ErrClosed
	}
	if l.mu.err != nil {
		return view{}, l.mu.err
	}
	v := view{lsn: l.mu.visibleLSN, seg: l.mu.visibleSeg, off: l.mu.visibleOff, notify: l.mu.notify,
		sealed: r.seg.sealed, end: r.seg.dataEnd}
	for i, s := range l.mu.segs {
		if s == r.seg && i+1 < len(l.mu.segs) {
			v.next = l.mu.segs[i+1]
		}
	}
	return v, nil
}

// Next returns the next record. Its Data is valid until the next call. At
// the end of the visible log it returns io.EOF, or, for a following reader,
// waits until more is durable or ctx is done. A bad frame is a
// *walerr.CorruptionError naming segment and offset; a gap between segments too.
func (r *Reader) Next(ctx context.Context) (Record, error) {
	for {
		v, err := r.view()
		if err != nil {
			return Record{}, err
		}
		if r.it.left > 0 {
			if r.it.lsn > v.lsn {
				if err := r.wait(ctx, v); err != nil {
					return Record{}, err
				}
				continue
			}
			rec, ok, reason := r.it.next()
			if reason != "" {
				return Record{}, corruptf(r.seg.name, r.frameOff, "record %d: %s", r.it.lsn, reason)
			}
			if ok && rec.LSN >= r.from {
				return rec, nil
			}
			continue
		}
		switch {
		case r.seg == v.seg:
			r.fr.limit = v.off
		case v.sealed:
			r.fr.limit = v.end
		default:
			// Newer than anything published: nothing visible here yet.
			if err := r.wait(ctx, v); err != nil {
				return Record{}, err
			}
			continue
		}
		if r.expect > v.lsn && r.seg == v.seg {
			if err := r.wait(ctx, v); err != nil {
				return Record{}, err
			}
			continue
		}
		h, raw, err := r.fr.next()
		if err == errEnd {
			if r.seg == v.seg || v.next == nil {
				if err := r.wait(ctx, v); err != nil {
					return Record{}, err
				}
				continue
			}
			if v.next.hdr.base != r.expect {
				// The data of this segment ends early (a zeroed frame
				// header reads like its unwritten end): name the place
				// where records are missing, not the next segment.
				return Record{}, corruptf(r.seg.name, r.fr.off, "segment data ends before LSN %d but the next segment %s starts at LSN %d",
					r.expect, v.next.name, v.next.hdr.base)
			}
			if err := r.position(r.expect); err != nil {
				return Record{}, err
			}
			continue
		}
		var bf *badFrame
		if errors.As(err, &bf) {
			return Record{}, corruptf(r.seg.name, bf.off, "%s", bf.reason)
		}
		if err != nil {
			return Record{}, err
		}
		r.frameOff = r.fr.off - h.frameSize()
		if h.firstLSN != r.expect {
			return Record{}, corruptf(r.seg.name, r.frameOff, "frame LSN %d, want %d", h.firstLSN, r.expect)
		}
		r.expect = h.lastLSN() + 1
		r.it.reset(&h, raw)
	}
}

func (r *Reader) wait(ctx context.Context, v view) error {
	if !r.follow {
		return io.EOF
	}
	select {
	case <-v.notify:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close releases the reader's file. It is idempotent. Like Next it must not
// be called concurrently with another call on the reader: to stop a
// following reader, cancel the context passed to Next.
func (r *Reader) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	if r.f != nil {
		return r.f.Close()
	}
	return nil
}
