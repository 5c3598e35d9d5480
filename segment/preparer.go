package segment

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/walship/walship/vfs"
)

// preparer does the slow file work of rotation off the commit path (as
// etcd's filePipeline does): it creates and preallocates the next segment
// before it is needed, and trims the preallocated tail of sealed segments.
type preparer struct {
	fs       vfs.FS
	path     string
	size     int64
	prealloc bool
	zeroFill bool

	// hurry asks a running zero fill to stop and hand the file over: set
	// by take (until it has the file) and by stop; wake interrupts its
	// pacing sleep.
	hurry    atomic.Bool
	stopping atomic.Bool // set by stop: a fill in progress is discarded
	wake     chan struct{}
	// written is the active segment's write offset, set by the log: the
	// fill paces itself by it (zeroFillLead).
	written atomic.Int64

	reqs  chan sealReq
	ready chan prepared
	wg    sync.WaitGroup
}

type sealReq struct {
	f   vfs.File // sealed segment to trim and close; nil to only prepare
	end int64
}

type prepared struct {
	f   vfs.File
	err error
}

// startPreparer starts preparing the next segment of a log whose active
// segment has written bytes.
func startPreparer(fsys vfs.FS, dir string, size int64, prealloc, zeroFill bool, written int64) *preparer {
	p := &preparer{fs: fsys, path: vfs.Join(dir, PreparedName), size: size, prealloc: prealloc, zeroFill: zeroFill && prealloc,
		reqs: make(chan sealReq, 4), ready: make(chan prepared, 1), wake: make(chan struct{}, 1)}
	p.written.Store(written)
	p.wg.Add(1)
	go p.loop()
	p.reqs <- sealReq{}
	return p
}

func (p *preparer) loop() {
	defer p.wg.Done()
	for r := range p.reqs {
		if r.f != nil {
			// The tail past end is preallocated zeros; trimming it is an
			// optimization, so its failure only costs disk space.
			if err := r.f.Truncate(r.end); err == nil {
				_ = r.f.Sync()
			}
			r.f.Close()
			continue
		}
		p.ready <- p.create()
	}
}

func (p *preparer) create() prepared {
	f, err := p.fs.Create(p.path)
	if err != nil {
		return prepared{err: err}
	}
	if p.prealloc {
		if err := f.Preallocate(p.size); err != nil {
			f.Close()
			return prepared{err: err}
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return prepared{err: err}
		}
	}
	if p.zeroFill {
		if err := p.zero(f); err != nil {
			f.Close()
			return prepared{err: err}
		}
	}
	return prepared{f: f}
}

// zeroFillRate bounds the background zero fill of the next segment, so
// that a log writing fast is not slowed by it: such a log takes the next
// segment before it is all zeroed (hurry), and the rest of it stays
// merely preallocated, which costs little with its large batches.
const zeroFillRate = 64 << 20 // bytes per second

// A slower log gets a slower fill: the fill stays at most zeroFillLead
// times the active segment's written bytes ahead (so it is done by the
// time the active segment is half full), but always progresses at
// zeroFillFloor. A log committing one small transaction at a time then
// does not share the disk with 64 MiB/s of zeros (with a single appender,
// they made its slowest fdatasyncs much slower; bench/README.md); an idle log's next segment is ready after
// its size at 4 MiB/s (16 s for 64 MiB).
const (
	zeroFillLead  = 2
	zeroFillFloor = 4 << 20 // bytes per second
	// zeroFillPoll is how often a fill waiting for the writer looks at
	// the active segment's progress.
	zeroFillPoll = 10 * time.Millisecond
)

// zeroWriteChunk is the size of one write of zeros. After each, the fill
// starts the chunk's writeback (vfs.Writebacker), so the disk receives the
// zeros in small pieces spread over time: left to the page cache, they
// went out in bursts of zeroSyncEvery at the fill's fdatasyncs, and the
// log's own fdatasyncs queued behind each burst (with many appenders, the
// tail of append latency was several times longer; bench/README.md).
const zeroWriteChunk = 128 << 10

// zeroSyncEvery is how many bytes of zeros the fill writes between its
// fdatasyncs, which journal the extent conversions: a fill stopped by a
// rotation then has at most this much left to sync while the writer
// waits for the segment.
const zeroSyncEvery = 4 << 20

// zero writes zeros over the prepared file, paced by zeroPause and
// stopping early when hurried, and syncs them, so that the extent
// conversions are journaled here and not by the writer's fdatasyncs
// (Options.ZeroFill). When the log is closing, the file will be discarded
// and is not synced.
func (p *preparer) zero(f vfs.File) error {
	start := time.Now()
	wb, _ := f.(vfs.Writebacker)
	for off := int64(0); off < p.size && !p.hurry.Load(); {
		last := time.Now()
		n, err := writeZeros(f, off, min(p.size, off+zeroWriteChunk))
		if err != nil {
			return err
		}
		if wb != nil {
			// Only a hint to the kernel: a failure costs the smoothing,
			// and the Sync below reports any write error.
			_ = wb.StartWriteback(off, n)
		}
		off += n
		if off%zeroSyncEvery == 0 && off < p.size {
			if err := f.Sync(); err != nil {
				return err
			}
		}
		for !p.hurry.Load() {
			d := p.zeroPause(off, n, start, last)
			if d <= 0 {
				break
			}
			t := time.NewTimer(d)
			select {
			case <-p.wake:
			case <-t.C:
			}
			t.Stop()
		}
	}
	if p.stopping.Load() {
		return nil
	}
	return f.Sync()
}

// zeroPause returns how long a fill that has zeroed off bytes since
// start, the last n of them written at last, must wait before it writes
// more (zero or less: not at all). The rate bound spaces the chunks
// evenly: a fill held back by the writer never catches up in a burst.
func (p *preparer) zeroPause(off, n int64, start, last time.Time) time.Duration {
	d := time.Duration(float64(n)/zeroFillRate*float64(time.Second)) - time.Since(last)
	if off >= zeroFillLead*p.written.Load() {
		floor := time.Duration(float64(off)/zeroFillFloor*float64(time.Second)) - time.Since(start)
		d = max(d, min(floor, zeroFillPoll))
	}
	return d
}

var zeroChunk [1 << 20]byte

// writeZeros writes one chunk of zeros (at most len(zeroChunk) bytes) at
// off, stopping at end, and returns how many bytes it wrote.
func writeZeros(f vfs.File, off, end int64) (int64, error) {
	n := min(int64(len(zeroChunk)), end-off)
	_, err := f.WriteAt(zeroChunk[:n], off)
	return n, err
}

// take returns the prepared next segment, waiting for it if it is still
// being made. The caller renames it away and then calls seal, which asks
// for the next one (not before: creating it would truncate the file just
// taken while it still has the temporary name).
func (p *preparer) take() (vfs.File, error) {
	p.hurry.Store(true)
	select {
	case p.wake <- struct{}{}:
	default:
	}
	r := <-p.ready
	p.hurry.Store(false)
	select { // a wake the zero fill did not consume
	case <-p.wake:
	default:
	}
	return r.f, r.err
}

// seal hands a sealed segment's file over for trimming and closing, and
// asks for the next segment to be prepared.
func (p *preparer) seal(f vfs.File, end int64) {
	p.reqs <- sealReq{f: f, end: end}
	p.reqs <- sealReq{}
}

// stop waits for pending work and closes an unused prepared file.
func (p *preparer) stop() {
	p.stopping.Store(true)
	p.hurry.Store(true)
	select {
	case p.wake <- struct{}{}:
	default:
	}
	close(p.reqs)
	go func() { // drain so loop can finish a pending create
		for r := range p.ready {
			if r.f != nil {
				r.f.Close()
			}
		}
	}()
	p.wg.Wait()
	close(p.ready)
}
