package wal

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
)

// Level is a replication level: how far a transaction must have gone
// before it is acknowledged (an HTTP answer) or confirmed (to PostgreSQL).
// Each level implies the ones below it.
type Level uint8

const (
	// LevelOff does not wait for the log's fsync: an acknowledgement may
	// precede the write (with SyncLocal) or follow it (with SyncOff); a
	// crash can lose what was acknowledged.
	LevelOff Level = iota
	// LevelLocal waits until the transaction is durable in the local log
	// (fsynced with SyncLocal). The default.
	LevelLocal
	// LevelShipped waits, after LevelLocal, until every counted sink has
	// durably stored the transaction elsewhere (Levels.Report): Kafka has
	// acknowledged it with acks=all, the archive has stored its object and
	// manifest. Losing this host then loses nothing acknowledged.
	LevelShipped
)

// ParseLevel parses the config and header spelling: "off", "local" (or
// "") and "shipped".
func ParseLevel(s string) (Level, error) {
	switch s {
	case "off":
		return LevelOff, nil
	case "", "local":
		return LevelLocal, nil
	case "shipped":
		return LevelShipped, nil
	}
	return 0, fmt.Errorf("wal: unknown replication level %q (want off, local or shipped)", s)
}

func (l Level) String() string {
	switch l {
	case LevelOff:
		return "off"
	case LevelLocal:
		return "local"
	case LevelShipped:
		return "shipped"
	}
	return fmt.Sprintf("Level(%d)", uint8(l))
}

// ErrLevelUnavailable is returned by Levels.Wait for a level this log can
// never reach: LevelLocal or above on a log that does not fsync (SyncOff),
// LevelShipped with no sink counted.
var ErrLevelUnavailable = errors.New("wal: replication level not available")

// ErrLevelsClosed is returned by Levels.Wait once Levels.Close was called
// and the level was not reached.
var ErrLevelsClosed = errors.New("wal: stopped waiting for the replication level")

// Levels tracks how far each replication level has reached in a log, and
// lets sources wait for one. The local level is the log's own durable
// position; the shipped level is the lowest of the positions the counted
// sinks report (each a commit LSN below which the sink has stored
// everything), so it never passes a transaction one of them lacks.
// Positions only grow.
type Levels struct {
	w     *WAL
	level Level

	mu      sync.Mutex
	sinks   map[string]uint64 // each counted sink's reported position
	shipped uint64            // their minimum
	changed chan struct{}     // closed and replaced when shipped grows
	closed  bool
}

// NewLevels returns the tracker of w's levels. level is the configured
// one (Levels.Level); shippedBy names the sinks whose positions count for
// LevelShipped (at least one if level is LevelShipped). Every named sink
// starts at position 0 until it reports.
func NewLevels(w *WAL, level Level, shippedBy []string) (*Levels, error) {
	if level > LevelShipped {
		return nil, fmt.Errorf("wal: unknown replication level %d", level)
	}
	if level >= LevelLocal && w.sync == SyncOff {
		return nil, fmt.Errorf("%w: %s needs a log that fsyncs, and this one does not (sync off)", ErrLevelUnavailable, level)
	}
	if level == LevelShipped && len(shippedBy) == 0 {
		return nil, fmt.Errorf("%w: shipped needs at least one sink to count", ErrLevelUnavailable)
	}
	l := &Levels{w: w, level: level, sinks: map[string]uint64{}, changed: make(chan struct{})}
	for _, s := range shippedBy {
		l.sinks[s] = 0
	}
	return l, nil
}

// Level returns the configured level.
func (l *Levels) Level() Level { return l.level }

// Sinks returns the names of the sinks that count for LevelShipped, sorted.
func (l *Levels) Sinks() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for s := range l.sinks {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

// Report records that sink has durably stored every transaction up to
// and including commit LSN pos. Reports of sinks that do not count, and
// positions lower than one already reported, change nothing. It is cheap
// and safe to call from any goroutine, for every acknowledgement.
func (l *Levels) Report(sink string, pos uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	cur, ok := l.sinks[sink]
	if !ok || pos <= cur {
		return
	}
	l.sinks[sink] = pos
	low := pos
	for _, p := range l.sinks {
		low = min(low, p)
	}
	if low > l.shipped {
		l.shipped = low
		close(l.changed)
		l.changed = make(chan struct{})
	}
}

// Position returns the highest LSN the level has reached: for LevelOff
// and LevelLocal the log's durable position (written, with SyncOff), for
// LevelShipped the lowest counted sink's position, never above the local
// one (0 with no sink counted).
func (l *Levels) Position(lv Level) uint64 {
	d := l.w.Durable()
	if lv < LevelShipped {
		return d
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.sinks) == 0 {
		return 0
	}
	return min(l.shipped, d)
}

// Wait blocks until the transaction whose commit LSN is lsn has reached
// level lv, ctx ends (its error), the log fails (its error, as WAL.Wait),
// or Close is called (ErrLevelsClosed). A level the log can never reach
// is ErrLevelUnavailable at once. Only LevelOff returns before the fsync,
// and only with a log that fsyncs: with SyncOff it waits for the write.
func (l *Levels) Wait(ctx context.Context, lv Level, lsn uint64) error {
	if err := l.Check(lv); err != nil {
		return err
	}
	if lv == LevelOff && l.w.sync != SyncOff {
		return nil
	}
	if err := l.w.Wait(ctx, lsn); err != nil || lv < LevelShipped {
		return err
	}
	for {
		l.mu.Lock()
		reached, closed, ch := l.shipped >= lsn, l.closed, l.changed
		l.mu.Unlock()
		switch {
		case reached:
			return nil
		case closed:
			return ErrLevelsClosed
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Check reports whether lv can be reached by this log: nil, or an error
// wrapping ErrLevelUnavailable that says why.
func (l *Levels) Check(lv Level) error {
	switch {
	case lv > LevelShipped:
		return fmt.Errorf("wal: unknown replication level %d", lv)
	case lv >= LevelLocal && l.w.sync == SyncOff:
		return fmt.Errorf("%w: %s needs a log that fsyncs, and this one does not (sync off)", ErrLevelUnavailable, lv)
	case lv == LevelShipped:
		l.mu.Lock()
		n := len(l.sinks)
		l.mu.Unlock()
		if n == 0 {
			return fmt.Errorf("%w: shipped needs a sink, and none is configured", ErrLevelUnavailable)
		}
	}
	return nil
}

// Close ends every Wait for LevelShipped that has not been satisfied,
// with ErrLevelsClosed: for a shutdown that cannot wait for the sinks.
func (l *Levels) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed {
		l.closed = true
		close(l.changed)
		l.changed = make(chan struct{})
	}
}
