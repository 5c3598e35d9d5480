package obs

import "time"

// Point is one sample of a component's history.
type Point struct {
	T time.Time
	// Lag is the largest lag reported during the interval ending at T (the
	// last known lag if nothing was reported).
	Lag time.Duration
	// Rate is records per second over the interval (WAL: records made
	// durable; sinks and consumers: LSN advance).
	Rate float64
	// ByteRate is bytes per second over the interval (WAL only).
	ByteRate float64
}

// Series is the history of one component, oldest point first.
type Series struct {
	Component string
	Points    []Point
}

// ring is a fixed-capacity circular buffer of points.
type ring struct {
	buf  []Point
	head int // index of the next write
	n    int
}

func newRing(capacity int) *ring { return &ring{buf: make([]Point, capacity)} }

func (r *ring) push(p Point) {
	r.buf[r.head] = p
	r.head = (r.head + 1) % len(r.buf)
	if r.n < len(r.buf) {
		r.n++
	}
}

// points returns a copy, oldest first.
func (r *ring) points() []Point {
	out := make([]Point, 0, r.n)
	start := (r.head - r.n + len(r.buf)) % len(r.buf)
	for i := 0; i < r.n; i++ {
		out = append(out, r.buf[(start+i)%len(r.buf)])
	}
	return out
}

// history accumulates one component's reports between two ticks.
type history struct {
	ring       *ring
	lsn        uint64 // last reported position
	tickLSN    uint64 // position at the last tick
	records    uint64 // cumulative records (WAL)
	tickRecs   uint64
	bytes      uint64
	tickBytes  uint64
	maxLag     time.Duration // since the last tick
	lastLag    time.Duration
	reported   bool // a report since the last tick
	lastTick   time.Time
	hasLSN     bool
	hasCounter bool
}

func (h *history) tick(now time.Time) {
	p := Point{T: now, Lag: h.lastLag}
	if h.reported {
		p.Lag = h.maxLag
	}
	if !h.lastTick.IsZero() {
		dt := now.Sub(h.lastTick).Seconds()
		if dt > 0 {
			if h.hasLSN && h.lsn >= h.tickLSN {
				p.Rate = float64(h.lsn-h.tickLSN) / dt
			}
			if h.hasCounter {
				p.Rate = float64(h.records-h.tickRecs) / dt
				p.ByteRate = float64(h.bytes-h.tickBytes) / dt
			}
		}
	}
	h.ring.push(p)
	h.lastTick, h.tickLSN, h.tickRecs, h.tickBytes = now, h.lsn, h.records, h.bytes
	h.maxLag, h.reported = 0, false
}
