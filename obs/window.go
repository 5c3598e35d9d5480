package obs

import (
	"math"
	"math/bits"
	"time"
)

// Histogram layout of a Window: values are microseconds. Values below
// 2*subBuckets have one bucket each (exact); above, every power-of-two
// range [2^e, 2^(e+1)) is split into subBuckets equal buckets, so a bucket
// is never wider than 1/subBuckets of its lower bound. Values at or above
// 2^maxExp µs (about 12.7 days) are clamped.
const (
	subBucketBits = 9
	subBuckets    = 1 << subBucketBits // 512
	maxExp        = 40
	numBuckets    = 2*subBuckets + (maxExp-subBucketBits-1)*subBuckets
	// RelativeError bounds how far a Window percentile can be above the
	// exact nearest-rank percentile: reported/exact - 1 < RelativeError.
	// Reported values are never below the exact value.
	RelativeError = 1.0 / subBuckets
)

func bucketOf(us uint64) int {
	if us >= 1<<maxExp {
		us = 1<<maxExp - 1
	}
	if us < 2*subBuckets {
		return int(us)
	}
	e := bits.Len64(us) - 1 // us in [2^e, 2^(e+1))
	shift := e - subBucketBits
	sub := int(us >> shift) // in [subBuckets, 2*subBuckets)
	return 2*subBuckets + (shift-1)*subBuckets + (sub - subBuckets)
}

// bucketHigh is the largest value that falls in bucket i.
func bucketHigh(i int) uint64 {
	if i < 2*subBuckets {
		return uint64(i)
	}
	shift := (i-2*subBuckets)/subBuckets + 1
	sub := uint64((i-2*subBuckets)%subBuckets + subBuckets)
	return (sub+1)<<shift - 1
}

// Window is the distribution of lag samples over a sliding time window,
// from which nearest-rank percentiles are read with a bounded error.
//
// The window is split into slots of Window/slots; samples leave it a whole
// slot at a time, so a percentile covers the samples of the last
// [window-slot, window] of time. Memory is fixed: one dense histogram for
// the whole window plus a sparse one per slot (to subtract when it
// expires). Not safe for concurrent use; the Tracker locks around it.
type Window struct {
	slot  time.Duration
	slots []windowSlot
	total []uint64 // per bucket, over the live slots
	count uint64
}

type windowSlot struct {
	id     int64 // time / slot; -1 when empty
	counts map[int]uint64
	n      uint64
	max    time.Duration
}

// NewWindow returns a window of the given length split into n slots
// (window/n is the expiry granularity).
func NewWindow(window time.Duration, n int) *Window {
	if n < 1 {
		n = 1
	}
	w := &Window{slot: window / time.Duration(n), slots: make([]windowSlot, n), total: make([]uint64, numBuckets)}
	if w.slot <= 0 {
		w.slot = 1
	}
	for i := range w.slots {
		w.slots[i].id = -1
	}
	return w
}

// expire drops slots that left the window as of slot id now.
func (w *Window) expire(now int64) {
	n := int64(len(w.slots))
	for i := range w.slots {
		s := &w.slots[i]
		if s.id >= 0 && s.id <= now-n {
			w.drop(s)
		}
	}
}

func (w *Window) drop(s *windowSlot) {
	for b, c := range s.counts {
		w.total[b] -= c
	}
	w.count -= s.n
	s.id, s.n, s.max = -1, 0, 0
	clear(s.counts)
}

// Add records one sample at time t, truncated to whole microseconds.
// Negative lags count as zero. Samples older than the window are ignored.
func (w *Window) Add(t time.Time, lag time.Duration) {
	if lag < 0 {
		lag = 0
	}
	lag = lag.Truncate(time.Microsecond)
	id := t.UnixNano() / int64(w.slot)
	s := &w.slots[int(uint64(id)%uint64(len(w.slots)))]
	if s.id != id {
		if s.id > id {
			return // older than the window
		}
		if s.id >= 0 {
			w.drop(s)
		}
		s.id = id
		if s.counts == nil {
			s.counts = map[int]uint64{}
		}
	}
	b := bucketOf(uint64(lag / time.Microsecond))
	s.counts[b]++
	s.n++
	s.max = max(s.max, lag)
	w.total[b]++
	w.count++
}

// Count returns the number of samples in the window as of now.
func (w *Window) Count(now time.Time) uint64 {
	w.expire(now.UnixNano() / int64(w.slot))
	return w.count
}

// Quantiles returns, for each q in qs (0 < q <= 1), the nearest-rank
// percentile of the samples in the window as of now: the ceil(q*n)-th
// smallest. The value reported is the upper edge of its histogram bucket,
// capped by the largest sample, so it is exact for values below 1.024 ms
// and for the maximum, and otherwise at most RelativeError above the
// exact value (of the samples truncated to microseconds). ok is false if the window is
// empty.
func (w *Window) Quantiles(now time.Time, qs []float64) (out []time.Duration, ok bool) {
	w.expire(now.UnixNano() / int64(w.slot))
	if w.count == 0 {
		return nil, false
	}
	var maxLag time.Duration
	for i := range w.slots {
		if w.slots[i].id >= 0 {
			maxLag = max(maxLag, w.slots[i].max)
		}
	}
	out = make([]time.Duration, len(qs))
	for i, q := range qs {
		rank := uint64(math.Ceil(q * float64(w.count)))
		rank = min(max(rank, 1), w.count)
		var cum uint64
		for b, c := range w.total {
			cum += c
			if cum >= rank {
				out[i] = min(time.Duration(bucketHigh(b))*time.Microsecond, maxLag)
				break
			}
		}
	}
	return out, true
}
