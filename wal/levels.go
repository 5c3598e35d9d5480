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
	// LevelApplied waits, after LevelLocal, until the replicas of the
	// quorum (Quorum) have applied the transaction, as they report it
	// (Levels.ReportApplied). Replicas read Kafka, so it is in Kafka too.
	LevelApplied
)

// ParseLevel parses the config and header spelling: "off", "local" (or
// ""), "shipped" and "applied".
func ParseLevel(s string) (Level, error) {
	switch s {
	case "off":
		return LevelOff, nil
	case "", "local":
		return LevelLocal, nil
	case "shipped":
		return LevelShipped, nil
	case "applied":
		return LevelApplied, nil
	}
	return 0, fmt.Errorf("wal: unknown replication level %q (want off, local, shipped or applied)", s)
}

func (l Level) String() string {
	switch l {
	case LevelOff:
		return "off"
	case LevelLocal:
		return "local"
	case LevelShipped:
		return "shipped"
	case LevelApplied:
		return "applied"
	}
	return fmt.Sprintf("Level(%d)", uint8(l))
}

// ErrLevelUnavailable is returned by Levels.Wait for a level this log can
// never reach: LevelLocal or above on a log that does not fsync (SyncOff),
// LevelShipped with no sink counted, LevelApplied with no quorum.
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
	quorum  *Quorum
	replica map[string]uint64 // each replica's reported applied position
	applied uint64            // the quorum's position
	changed chan struct{}     // closed and replaced when shipped or applied grows
	closed  bool
}

// NewLevels returns the tracker of w's levels. level is the configured
// one (Levels.Level); shippedBy names the sinks whose positions count for
// LevelShipped (at least one if level is LevelShipped). Every named sink
// starts at position 0 until it reports. quorum is the rule of
// LevelApplied (required if level is LevelApplied; nil: applied is not
// available).
func NewLevels(w *WAL, level Level, shippedBy []string, quorum *Quorum) (*Levels, error) {
	if level > LevelApplied {
		return nil, fmt.Errorf("wal: unknown replication level %d", level)
	}
	if level >= LevelLocal && w.sync == SyncOff {
		return nil, fmt.Errorf("%w: %s needs a log that fsyncs, and this one does not (sync off)", ErrLevelUnavailable, level)
	}
	if level == LevelShipped && len(shippedBy) == 0 {
		return nil, fmt.Errorf("%w: shipped needs at least one sink to count", ErrLevelUnavailable)
	}
	if level == LevelApplied && quorum == nil {
		return nil, fmt.Errorf("%w: applied needs a quorum of replicas", ErrLevelUnavailable)
	}
	l := &Levels{w: w, level: level, sinks: map[string]uint64{}, quorum: quorum, replica: map[string]uint64{}, changed: make(chan struct{})}
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

// ReportApplied records that replica has applied every transaction up to
// and including commit LSN pos. Positions lower than one already reported
// change nothing; replicas outside the quorum are kept but do not count.
func (l *Levels) ReportApplied(replica string, pos uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if cur, ok := l.replica[replica]; ok && pos <= cur {
		return
	}
	l.replica[replica] = pos
	if l.quorum == nil {
		return
	}
	if q := l.quorum.Position(l.replica); q > l.applied {
		l.applied = q
		close(l.changed)
		l.changed = make(chan struct{})
	}
}

// Quorum returns the rule of LevelApplied, nil if there is none.
func (l *Levels) Quorum() *Quorum { return l.quorum }

// Position returns the highest LSN the level has reached: for LevelOff
// and LevelLocal the log's durable position (written, with SyncOff), for
// LevelShipped the lowest counted sink's position (0 with no sink
// counted), for LevelApplied the quorum's (0 without one); never above the
// local one.
func (l *Levels) Position(lv Level) uint64 {
	d := l.w.Durable()
	if lv < LevelShipped {
		return d
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if lv == LevelApplied {
		return min(l.applied, d)
	}
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
		pos := l.shipped
		if lv == LevelApplied {
			pos = l.applied
		}
		reached, closed, ch := pos >= lsn, l.closed, l.changed
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
	case lv > LevelApplied:
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
	case lv == LevelApplied && l.quorum == nil:
		return fmt.Errorf("%w: applied needs a quorum of replicas, and none is configured", ErrLevelUnavailable)
	}
	return nil
}

// Close ends every Wait for LevelShipped or LevelApplied not yet satisfied,
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
