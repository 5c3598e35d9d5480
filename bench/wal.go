package main

// Suite wal: the segmented log and its group committer against the disk's
// own limits. See bench/README.md for what each case measures.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/walship/walship/groupcommit"
	"github.com/walship/walship/segment"
	"github.com/walship/walship/vfs"
)

const (
	// rawPrealloc is the size of the preallocated file the raw fsync loop
	// writes round robin, the default segment size.
	rawPrealloc = segment.DefaultSegmentSize
	// seqChunk is the write size of raw-seqwrite.
	seqChunk = 1 << 20
	// pipelineWaitEvery is how many records the pipelining producer queues
	// between two Waits on the latest LSN.
	pipelineWaitEvery = 64 << 10
	// clockEvery is how many records the pipelining producer appends
	// between two reads of the clock (deadline and commit time).
	clockEvery = 256
	// openRecord is the record size used to build the logs that open/*
	// reopens.
	openRecord = 16 << 10
)

var (
	walRecordSizes = []int{128, 1 << 10, 16 << 10}
	walAppenders   = []int{1, 16, 64, 256}
)

// walParams are the sizes that --quick shrinks.
type walParams struct {
	seqBytes           int64 // raw-seqwrite volume
	openSmall, openBig int64 // open/* log sizes
	openIters          int   // Open+Close timings per repetition (median taken)
}

func walParamsFor(cfg *config) walParams {
	if cfg.quick {
		return walParams{seqBytes: 32 << 20, openSmall: 8 << 20, openBig: 128 << 20, openIters: 3}
	}
	return walParams{seqBytes: 512 << 20, openSmall: 64 << 20, openBig: 1 << 30, openIters: 5}
}

// sizeName formats a byte count the way case names spell it: 128B, 1KiB,
// 16KiB, 64MiB, 1GiB.
func sizeName(n int64) string {
	for _, u := range []struct {
		shift uint
		name  string
	}{{30, "GiB"}, {20, "MiB"}, {10, "KiB"}} {
		if n >= 1<<u.shift && n%(1<<u.shift) == 0 {
			return fmt.Sprintf("%d%s", n>>u.shift, u.name)
		}
	}
	return fmt.Sprintf("%dB", n)
}

func rawFsyncName(size int) string { return "raw-fsync/" + sizeName(int64(size)) }
func walSyncName(n, size int) string {
	return fmt.Sprintf("wal-sync/N=%d/%s", n, sizeName(int64(size)))
}
func pipelineName(size int) string { return "wal-pipeline/" + sizeName(int64(size)) }
func openName(size int64) string   { return "open/" + sizeName(size) }

const (
	rawAppendName  = "raw-fsync-append/128B"
	rawSeqName     = "raw-seqwrite"
	rawStreamName  = "raw-seqwrite-stream"
	targetSmallRec = 128
	targetBigRec   = 16 << 10
	targetManyN    = 256
)

func init() { register("wal", walSuite) }

func walSuite() *suite {
	return &suite{
		name:    "wal",
		summary: "segment log + group commit vs raw fdatasync and sequential-write limits",
		cases:   walCases,
		targets: walTargets,
	}
}

func walCases(cfg *config) []*benchCase {
	p := walParamsFor(cfg)
	var cases []*benchCase
	// 1. Reference limits.
	for _, size := range walRecordSizes {
		cases = append(cases, &benchCase{
			name:    rawFsyncName(size),
			primary: mOpsPerSec,
			run: func(ctx context.Context) (sample, error) {
				return rawFsync(ctx, cfg, size, true)
			},
		})
	}
	cases = append(cases, &benchCase{
		name:    rawAppendName,
		primary: mOpsPerSec,
		compare: []comparison{{metric: mOpsPerSec, base: rawFsyncName(128), baseMetric: mOpsPerSec}},
		run: func(ctx context.Context) (sample, error) {
			return rawFsync(ctx, cfg, 128, false)
		},
	})
	// 2. Concurrent synchronous appenders.
	for _, size := range walRecordSizes {
		for _, n := range walAppenders {
			c := &benchCase{
				name:    walSyncName(n, size),
				primary: mAppendsPerSec,
				extra:   []string{mFlushBusy, mFlushMs, mWriteMs, mSyncMs, mWriteP99Ms, mSyncP99Ms},
				compare: []comparison{
					{metric: mAppendsPerSec, base: rawFsyncName(size), baseMetric: mOpsPerSec},
					{metric: mP99, base: rawFsyncName(size), baseMetric: mP99},
				},
				run: func(ctx context.Context) (sample, error) {
					return walSync(ctx, cfg, n, size)
				},
			}
			if n > 1 {
				c.compare = append(c.compare, comparison{label: "scaling", metric: mAppendsPerSec,
					base: walSyncName(1, size), baseMetric: mAppendsPerSec})
			}
			cases = append(cases, c)
		}
	}
	// 3. One pipelining producer, right after its baseline: on a VM both
	// depend on how fast the page cache gets fresh pages (README.md).
	cases = append(cases, &benchCase{
		name:    rawSeqName,
		primary: mMBps,
		extra:   []string{mWriteMBps, mSyncMBps},
		run: func(ctx context.Context) (sample, error) {
			return rawSeqWrite(ctx, cfg, p.seqBytes)
		},
	})
	cases = append(cases, &benchCase{
		name:    rawStreamName,
		primary: mMBps,
		compare: []comparison{{metric: mMBps, base: rawSeqName, baseMetric: mMBps}},
		run: func(ctx context.Context) (sample, error) {
			return rawSeqStream(ctx, cfg)
		},
	})
	for _, size := range walRecordSizes {
		cases = append(cases, &benchCase{
			name:    pipelineName(size),
			primary: mRecordsPerSec,
			extra:   []string{mFlushBusy, mFlushMs, mWriteMs, mSyncMs},
			compare: []comparison{
				{metric: mMBps, base: rawStreamName, baseMetric: mMBps},
				{label: "vs-burst", metric: mMBps, base: rawSeqName, baseMetric: mMBps},
			},
			run: func(ctx context.Context) (sample, error) {
				return walPipeline(ctx, cfg, size)
			},
		})
	}
	// 4. Open cost against history size.
	small := &openCase{cfg: cfg, bytes: p.openSmall, iters: p.openIters}
	big := &openCase{cfg: cfg, bytes: p.openBig, iters: p.openIters}
	cases = append(cases, small.benchCase(nil), big.benchCase(&comparison{metric: mMillis, base: openName(p.openSmall), baseMetric: mMillis}))
	return cases
}

func walTargets(cfg *config, rs *resultSet) []target {
	p := walParamsFor(cfg)
	var ts []target
	atLeast := func(what string, v float64, ok bool, want float64, measured, wantText string) {
		t := target{what: what, want: wantText, status: "not measured", measured: "-"}
		if ok {
			t.measured = measured
			t.status = map[bool]string{true: "met", false: "missed"}[v >= want]
		}
		ts = append(ts, t)
	}
	atMost := func(what string, v float64, ok bool, want float64, measured, wantText string) {
		t := target{what: what, want: wantText, status: "not measured", measured: "-"}
		if ok {
			t.measured = measured
			t.status = map[bool]string{true: "met", false: "missed"}[v <= want]
		}
		ts = append(ts, t)
	}
	n1, raw := walSyncName(1, targetSmallRec), rawFsyncName(targetSmallRec)
	r, ok := rs.compared(n1, mAppendsPerSec, raw)
	a, _ := rs.value(n1, mAppendsPerSec)
	b, _ := rs.value(raw, mOpsPerSec)
	atLeast("1 sync appender, 128B: appends/s vs raw fsync ops/s", r, ok, 0.9,
		fmt.Sprintf("%s (%s vs %s /s)", formatRatio(r), formatNumber(a), formatNumber(b)), "≥ 0.9x")

	nMany := walSyncName(targetManyN, targetSmallRec)
	r, ok = rs.compared(nMany, mAppendsPerSec, n1)
	a, _ = rs.value(nMany, mAppendsPerSec)
	b, _ = rs.value(n1, mAppendsPerSec)
	atLeast("256 sync appenders, 128B: appends/s vs 1 appender", r, ok, 40,
		fmt.Sprintf("%s (%s vs %s /s)", formatRatio(r), formatNumber(a), formatNumber(b)), "≥ 40x")

	r, ok = rs.compared(nMany, mP99, raw)
	a, _ = rs.value(nMany, mP99)
	b, _ = rs.value(raw, mP99)
	atMost("256 sync appenders, 128B: p99 vs raw fsync p99", r, ok, 3,
		fmt.Sprintf("%s (%s vs %s)", formatRatio(r), formatMicros(a), formatMicros(b)), "≤ 3x")

	a, ok = rs.value(pipelineName(targetSmallRec), mRecordsPerSec)
	atLeast("pipeline, 128B: records/s", a, ok, 1.5e6, formatNumber(a)+" /s", "≥ 1.5M /s")

	// The raw sequential write the target is measured against is the
	// sustained one through 64 MiB preallocated files (README.md: it does
	// the log's file work at the log's fdatasync cadence, for as long);
	// the page-cache burst is shown as context.
	pBig := pipelineName(targetBigRec)
	r, ok = rs.compared(pBig, mMBps, rawStreamName)
	a, _ = rs.value(pBig, mMBps)
	b, _ = rs.value(rawStreamName, mMBps)
	atLeast("pipeline, 16KiB: MB/s vs raw sequential write ("+rawStreamName+")", r, ok, 0.8,
		fmt.Sprintf("%s (%s vs %s MB/s)", formatRatio(r), formatNumber(a), formatNumber(b)), "≥ 0.8x")
	if r, ok := rs.compared(pBig, mMBps, rawSeqName); ok {
		b, _ := rs.value(rawSeqName, mMBps)
		ts = append(ts, target{what: "  context: the same vs a page-cache burst (" + rawSeqName + ")",
			measured: fmt.Sprintf("%s (%s vs %s MB/s)", formatRatio(r), formatNumber(a), formatNumber(b)), want: "-", status: "info"})
	}

	oSmall, oBig := openName(p.openSmall), openName(p.openBig)
	r, ok = rs.compared(oBig, mMillis, oSmall)
	a, _ = rs.value(oBig, mMillis)
	b, _ = rs.value(oSmall, mMillis)
	atMost(fmt.Sprintf("open %s vs open %s", sizeName(p.openBig), sizeName(p.openSmall)), r, ok, 1.5,
		fmt.Sprintf("%s (%s vs %s ms)", formatRatio(r), sig3(a), sig3(b)), "about 1x (≤ 1.5x read as met)")
	return ts
}

// randomRecord returns size incompressible bytes.
func randomRecord(size int) []byte {
	r := rand.New(rand.NewPCG(uint64(size), 2))
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// ---- Reference limits ----

// rawFsync times a loop of pwrite(size bytes) + fdatasync at consecutive
// offsets. With prealloc, the file is first fallocated to rawPrealloc
// bytes and synced (as the log prepares a segment), and the offsets wrap
// round robin inside it; without, every write grows the file, so each
// fdatasync must also persist the new size.
func rawFsync(ctx context.Context, cfg *config, size int, prealloc bool) (sample, error) {
	dir, err := cfg.tempDir("raw-fsync")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	f, err := os.OpenFile(filepath.Join(dir, "data"), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if prealloc {
		if err := fallocate(f, rawPrealloc); err != nil {
			return nil, fmt.Errorf("fallocate: %w", err)
		}
		if err := fdatasync(f); err != nil {
			return nil, err
		}
	}
	buf := randomRecord(size)
	h := new(histogram)
	var off int64
	n := 0
	start := time.Now()
	deadline := start.Add(cfg.duration)
	for {
		t0 := time.Now()
		if !t0.Before(deadline) {
			break
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if _, err := f.WriteAt(buf, off); err != nil {
			return nil, err
		}
		if err := fdatasync(f); err != nil {
			return nil, fmt.Errorf("fdatasync: %w", err)
		}
		h.record(time.Since(t0))
		n++
		off += int64(size)
		if prealloc && off+int64(size) > rawPrealloc {
			off = 0
		}
	}
	secs := time.Since(start).Seconds()
	return sample{
		mOpsPerSec: float64(n) / secs,
		mP50:       h.quantile(0.50),
		mP99:       h.quantile(0.99),
		mMBps:      float64(n) * float64(size) / secs / 1e6,
	}, nil
}

// rawSeqWrite times writing total bytes to a new file in seqChunk writes,
// then one fdatasync: the disk's sequential write bandwidth.
func rawSeqWrite(ctx context.Context, cfg *config, total int64) (sample, error) {
	dir, err := cfg.tempDir("raw-seqwrite")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	f, err := os.OpenFile(filepath.Join(dir, "data"), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := randomRecord(seqChunk)
	start := time.Now()
	for off := int64(0); off < total; off += seqChunk {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if _, err := f.WriteAt(buf, off); err != nil {
			return nil, err
		}
	}
	written := time.Since(start)
	if err := fdatasync(f); err != nil {
		return nil, fmt.Errorf("fdatasync: %w", err)
	}
	took := time.Since(start)
	mb := float64(total) / 1e6
	return sample{
		mMBps:      mb / took.Seconds(),
		mWriteMBps: mb / written.Seconds(),
		mSyncMBps:  mb / (took - written).Seconds(),
	}, nil
}

// rawSeqStream writes 1 MiB pwrites for the duration into a series of
// files each fallocated to rawPrealloc bytes and fdatasynced before use and
// when full, the way the log streams through its segments, and reports
// MB/s including the last fdatasync. A full file is fdatasynced by a
// background goroutine while the next one is written, at most
// rawStreamSyncs at once, as the log's committer syncs a batch while the
// next one gathers. Unlike raw-seqwrite it sustains the write as long
// as wal-pipeline does, so that both see the same page-cache and disk
// state.
func rawSeqStream(ctx context.Context, cfg *config) (sample, error) {
	dir, err := cfg.tempDir("raw-seqwrite-stream")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	buf := randomRecord(seqChunk)
	slots := make(chan struct{}, rawStreamSyncs)
	var wg sync.WaitGroup
	var syncErr atomic.Pointer[error]
	syncAndClose := func(f *os.File) {
		defer wg.Done()
		defer func() { <-slots }()
		err := fdatasync(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			syncErr.CompareAndSwap(nil, &err)
		}
	}
	var f *os.File
	defer func() {
		if f != nil {
			f.Close()
		}
		wg.Wait()
	}()
	var off, total int64
	start := time.Now()
	deadline := start.Add(cfg.duration)
	for files := 0; ; {
		if f == nil {
			if !time.Now().Before(deadline) {
				break
			}
			if f, err = os.OpenFile(filepath.Join(dir, fmt.Sprintf("%08d", files)), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644); err != nil {
				return nil, err
			}
			files++
			// As the log's preparer makes a segment: preallocated and
			// synced before the first write.
			if err := fallocate(f, rawPrealloc); err != nil {
				return nil, fmt.Errorf("fallocate: %w", err)
			}
			if err := fdatasync(f); err != nil {
				return nil, fmt.Errorf("fdatasync: %w", err)
			}
			off = 0
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if _, err := f.WriteAt(buf, off); err != nil {
			return nil, err
		}
		off += seqChunk
		total += seqChunk
		if off+seqChunk > rawPrealloc || !time.Now().Before(deadline) {
			slots <- struct{}{}
			wg.Add(1)
			go syncAndClose(f)
			f = nil
		}
	}
	wg.Wait()
	if e := syncErr.Load(); e != nil {
		return nil, fmt.Errorf("fdatasync: %w", *e)
	}
	return sample{mMBps: float64(total) / 1e6 / time.Since(start).Seconds()}, nil
}

// rawStreamSyncs is how many fdatasyncs raw-seqwrite-stream runs at once:
// as many as the group committer does (one flush at a time).
const rawStreamSyncs = 1

// ---- The log ----

// flushCounter counts the group committer's flushes (Options.Observe) and
// times the log's file writes and syncs.
type flushCounter struct {
	flushes, records, nanos atomic.Int64
	fs                      timingFS
}

func newFlushCounter() *flushCounter {
	return &flushCounter{fs: timingFS{FS: vfs.Default, syncH: new(histogram), writeH: new(histogram)}}
}

func (fc *flushCounter) observe(records, _ int, took time.Duration) {
	fc.flushes.Add(1)
	fc.records.Add(int64(records))
	fc.nanos.Add(int64(took))
}

// timingFS wraps vfs.Default and adds the time the log's active segment
// files spend in WriteAt and Sync to its counters, to split a flush into
// its write and its fdatasync. The preparer's work on the next segment
// (its zero fill and syncs) and the trimming of sealed segments are not
// counted: they are off the commit path.
type timingFS struct {
	vfs.FS
	writeNanos, syncNanos atomic.Int64
	mu                    sync.Mutex
	// each counted Sync's and WriteAt's duration, since resetSyncs
	syncH, writeH *histogram
	prepared      map[string]*fileState // by path, until renamed
}

// resetSyncs empties the histograms of Sync and WriteAt durations.
func (t *timingFS) resetSyncs() {
	t.mu.Lock()
	*t.syncH = histogram{}
	*t.writeH = histogram{}
	t.mu.Unlock()
}

// quantiles returns the q-quantile of Sync and of WriteAt durations since
// resetSyncs, in milliseconds.
func (t *timingFS) quantiles(q float64) (sync, write float64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.syncH.quantile(q) / 1e3, t.writeH.quantile(q) / 1e3
}

var _ vfs.FS = (*timingFS)(nil)

// timingFile counts its calls while active (a segment file, from the
// rename that makes a prepared file the log's newest segment), except the
// Sync after a Truncate: a sealed segment's trim, or recovery's cut of a
// torn tail.
type timingFile struct {
	vfs.File
	fs *timingFS
	st *fileState
}

type fileState struct {
	active, truncated atomic.Bool
}

func (t *timingFS) Create(name string) (vfs.File, error) {
	f, err := t.FS.Create(name)
	if err != nil {
		return nil, err
	}
	st := new(fileState)
	if filepath.Base(name) == segment.PreparedName {
		t.mu.Lock()
		if t.prepared == nil {
			t.prepared = make(map[string]*fileState)
		}
		t.prepared[name] = st
		t.mu.Unlock()
	} else {
		st.active.Store(true)
	}
	return timingFile{File: f, fs: t, st: st}, nil
}

func (t *timingFS) OpenReadWrite(name string) (vfs.File, error) {
	f, err := t.FS.OpenReadWrite(name)
	if err != nil {
		return nil, err
	}
	st := new(fileState)
	st.active.Store(true)
	return timingFile{File: f, fs: t, st: st}, nil
}

func (t *timingFS) Rename(oldname, newname string) error {
	err := t.FS.Rename(oldname, newname)
	if err == nil {
		t.mu.Lock()
		if st := t.prepared[oldname]; st != nil {
			st.active.Store(true)
			delete(t.prepared, oldname)
		}
		t.mu.Unlock()
	}
	return err
}

func (f timingFile) WriteAt(b []byte, off int64) (int, error) {
	f.st.truncated.Store(false)
	if !f.st.active.Load() {
		return f.File.WriteAt(b, off)
	}
	t0 := time.Now()
	n, err := f.File.WriteAt(b, off)
	d := time.Since(t0)
	f.fs.writeNanos.Add(int64(d))
	f.fs.mu.Lock()
	f.fs.writeH.record(d)
	f.fs.mu.Unlock()
	return n, err
}

func (f timingFile) Truncate(size int64) error {
	f.st.truncated.Store(true)
	return f.File.Truncate(size)
}

// StartWriteback forwards vfs.Writebacker.
func (f timingFile) StartWriteback(off, n int64) error {
	if w, ok := f.File.(vfs.Writebacker); ok {
		return w.StartWriteback(off, n)
	}
	return nil
}

func (f timingFile) Sync() error {
	if !f.st.active.Load() || f.st.truncated.Swap(false) {
		return f.File.Sync()
	}
	t0 := time.Now()
	err := f.File.Sync()
	d := time.Since(t0)
	f.fs.syncNanos.Add(int64(d))
	f.fs.mu.Lock()
	f.fs.syncH.record(d)
	f.fs.mu.Unlock()
	return err
}

// openWAL opens a log in dir with a committer in sync mode local.
func openWAL(cfg *config, dir string, fc *flushCounter) (*segment.Log, *groupcommit.Committer, error) {
	// Zero-filled segments, as walship run writes them (wal.zero_fill).
	opts := segment.Options{Logger: cfg.logger, ZeroFill: true}
	if fc != nil {
		opts.FS = &fc.fs
	}
	l, _, err := segment.Open(dir, opts)
	if err != nil {
		return nil, nil, err
	}
	copts := groupcommit.Options{Sync: groupcommit.SyncLocal, Logger: cfg.logger}
	if fc != nil {
		copts.Observe = fc.observe
	}
	c, err := groupcommit.New(l, copts)
	if err != nil {
		l.Close()
		return nil, nil, err
	}
	return l, c, nil
}

// closeWAL closes the committer, then the log.
func closeWAL(l *segment.Log, c *groupcommit.Committer) error {
	err := c.Close()
	if lerr := l.Close(); err == nil {
		err = lerr
	}
	return err
}

// counters is what the measurements read before and after their window.
type counters struct {
	mallocs                uint64
	flushes, flushd, nanos int64
	writeNanos, syncNanos  int64
}

func readCounters(fc *flushCounter) counters {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return counters{mallocs: ms.Mallocs, flushes: fc.flushes.Load(), flushd: fc.records.Load(), nanos: fc.nanos.Load(),
		writeNanos: fc.fs.writeNanos.Load(), syncNanos: fc.fs.syncNanos.Load()}
}

// walSync runs n goroutines that each loop Append(one record of size
// bytes), waiting for durability, until the duration elapses.
func walSync(ctx context.Context, cfg *config, n, size int) (sample, error) {
	dir, err := cfg.tempDir("wal-sync")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	fc := newFlushCounter()
	l, c, err := openWAL(cfg, dir, fc)
	if err != nil {
		return nil, err
	}
	rec := randomRecord(size)

	type worker struct {
		h   histogram
		n   int64
		err error
	}
	workers := make([]*worker, n)
	startCh := make(chan struct{})
	var deadline time.Time // written before startCh is closed
	var wg sync.WaitGroup
	for i := range workers {
		w := new(worker)
		workers[i] = w
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Each appender has its own context, as each request of
			// a server does: one context shared by 256 goroutines
			// parked in Wait contends on its channel's lock.
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			recs := [][]byte{rec}
			<-startCh
			for {
				t0 := time.Now()
				if !t0.Before(deadline) {
					return
				}
				if _, err := c.Append(ctx, recs, t0); err != nil {
					w.err = err
					return
				}
				w.h.record(time.Since(t0))
				w.n++
			}
		}()
	}
	runtime.GC()
	before := readCounters(fc)
	fc.fs.resetSyncs()
	start := time.Now()
	deadline = start.Add(cfg.duration)
	close(startCh)
	wg.Wait()
	secs := time.Since(start).Seconds()
	after := readCounters(fc)
	syncP99, writeP99 := fc.fs.quantiles(0.99)
	if err := closeWAL(l, c); err != nil {
		return nil, err
	}

	h := new(histogram)
	var total int64
	for _, w := range workers {
		if w.err != nil {
			return nil, w.err
		}
		h.merge(&w.h)
		total += w.n
	}
	if total == 0 {
		return nil, fmt.Errorf("no append completed in %v", cfg.duration)
	}
	s := sample{
		mAppendsPerSec: float64(total) / secs,
		mP50:           h.quantile(0.50),
		mP99:           h.quantile(0.99),
		mMBps:          float64(total) * float64(size) / secs / 1e6,
		mAllocsPerApp:  float64(after.mallocs-before.mallocs) / float64(total),
		mSyncP99Ms:     syncP99,
		mWriteP99Ms:    writeP99,
	}
	addFlushStats(s, before, after, secs)
	return s, nil
}

// addFlushStats adds records per flush, the flusher's busy share of secs
// and the mean flush time to s.
func addFlushStats(s sample, before, after counters, secs float64) {
	f := after.flushes - before.flushes
	if f == 0 {
		return
	}
	busy := time.Duration(after.nanos - before.nanos)
	s[mRecsPerFsync] = float64(after.flushd-before.flushd) / float64(f)
	s[mFlushBusy] = 100 * busy.Seconds() / secs
	s[mFlushMs] = busy.Seconds() * 1e3 / float64(f)
	s[mWriteMs] = time.Duration(after.writeNanos-before.writeNanos).Seconds() * 1e3 / float64(f)
	s[mSyncMs] = time.Duration(after.syncNanos-before.syncNanos).Seconds() * 1e3 / float64(f)
}

// produce is the pipelining producer: it calls AppendAsync with one record
// in a loop, Waits on the latest LSN every pipelineWaitEvery records, reads
// the clock every clockEvery records and stops when stop says so, and
// finally waits until everything appended is durable. It returns the
// number of records appended (all durable).
func produce(ctx context.Context, c *groupcommit.Committer, rec []byte, stop func(n int64, now time.Time) bool) (int64, error) {
	recs := [][]byte{rec}
	now := time.Now()
	var n int64
	var last uint64
	for {
		t, err := c.AppendAsync(ctx, recs, now)
		if err != nil {
			return n, err
		}
		last = t.Last
		n++
		if n%pipelineWaitEvery == 0 {
			if err := c.Wait(ctx, last); err != nil {
				return n, err
			}
		}
		if n%clockEvery == 0 {
			now = time.Now()
			if stop(n, now) {
				break
			}
		}
	}
	return n, c.Wait(ctx, last)
}

// walPipeline measures one producer pipelining appends of size bytes.
func walPipeline(ctx context.Context, cfg *config, size int) (sample, error) {
	dir, err := cfg.tempDir("wal-pipeline")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	fc := newFlushCounter()
	l, c, err := openWAL(cfg, dir, fc)
	if err != nil {
		return nil, err
	}
	rec := randomRecord(size)
	runtime.GC()
	before := readCounters(fc)
	start := time.Now()
	deadline := start.Add(cfg.duration)
	n, err := produce(ctx, c, rec, func(_ int64, now time.Time) bool { return !now.Before(deadline) })
	secs := time.Since(start).Seconds()
	after := readCounters(fc)
	if cerr := closeWAL(l, c); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	s := sample{
		mRecordsPerSec: float64(n) / secs,
		mMBps:          float64(n) * float64(size) / secs / 1e6,
		mAllocsPerApp:  float64(after.mallocs-before.mallocs) / float64(n),
	}
	addFlushStats(s, before, after, secs)
	return s, nil
}

// ---- Open cost ----

// openCase times segment.Open + Close of a log holding bytes of 16 KiB
// records, built once in setup with the pipelining producer.
type openCase struct {
	cfg   *config
	bytes int64
	iters int
	dir   string
}

func (o *openCase) benchCase(cmp *comparison) *benchCase {
	c := &benchCase{
		name:    openName(o.bytes),
		primary: mMillis,
		setup:   o.build,
		cleanup: func() {
			if o.dir != "" {
				os.RemoveAll(o.dir)
			}
		},
		run: o.run,
	}
	if cmp != nil {
		c.compare = []comparison{*cmp}
	}
	return c
}

func (o *openCase) build(ctx context.Context) error {
	dir, err := o.cfg.tempDir(openName(o.bytes))
	if err != nil {
		return err
	}
	o.dir = dir
	l, c, err := openWAL(o.cfg, dir, nil)
	if err != nil {
		return err
	}
	want := o.bytes / openRecord
	_, err = produce(ctx, c, randomRecord(openRecord), func(n int64, _ time.Time) bool { return n >= want })
	segs := len(l.Segments())
	if cerr := closeWAL(l, c); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	o.cfg.progressf("built %s: %d records of %s in %d segment(s)", openName(o.bytes), want, sizeName(openRecord), segs)
	return nil
}

// run returns the median of o.iters timings of Open + Close. Close is
// included because Open starts the background preparer, which Close waits
// for.
func (o *openCase) run(ctx context.Context) (sample, error) {
	var ms []float64
	for range o.iters {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		t0 := time.Now()
		l, _, err := segment.Open(o.dir, segment.Options{Logger: o.cfg.logger})
		if err != nil {
			return nil, err
		}
		if err := l.Close(); err != nil {
			return nil, err
		}
		ms = append(ms, float64(time.Since(t0).Microseconds())/1e3)
	}
	return sample{mMillis: median(ms)}, nil
}
