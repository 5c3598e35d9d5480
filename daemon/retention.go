package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/walship/walship/checkpoint"
	"github.com/walship/walship/config"
	"github.com/walship/walship/wal"
)

// retentionInterval is how often retention runs.
const retentionInterval = 2 * time.Second

// retention removes local segments that every sink has passed, and keeps
// the log under wal.max_bytes according to wal.retention_policy:
//
//   - no sink registered: the oldest segments beyond max_bytes are removed
//     (nothing else needs them); without max_bytes everything is kept.
//   - "keep" (default): a segment a sink still needs is never removed; the
//     log may then exceed max_bytes, which is logged as an error every
//     minute and reported by Stats (and /readyz) until the sink catches up.
//   - "drop": the oldest segments are removed to stay under max_bytes even
//     if a sink still needs them; each removal is logged as an error naming
//     the sink and the LSNs it lost, and that sink then fails with
//     segment.ErrRemoved instead of silently skipping.
//
// The HTTP source's idempotency keys hold back the removal of segments the
// sinks have passed (floor): a key is remembered in the log itself, so the
// transactions of the window stay until their keys expire. wal.max_bytes
// does not wait for them.
type retention struct {
	w     *wal.WAL
	ckpts *checkpoint.Store
	cfg   config.WAL
	log   *slog.Logger
	floor func() (uint64, bool) // lowest LSN to keep, if any

	overLimit  atomic.Bool
	removed    atomic.Uint64 // segments removed
	lastLoud   time.Time
	walBytes   atomic.Int64
	forcedDrop atomic.Uint64 // segments removed that a sink still needed
}

func newRetention(w *wal.WAL, ckpts *checkpoint.Store, cfg config.WAL, log *slog.Logger) *retention {
	return &retention{w: w, ckpts: ckpts, cfg: cfg, log: log}
}

func (r *retention) run(ctx context.Context) error {
	t := time.NewTicker(retentionInterval)
	defer t.Stop()
	for {
		if err := r.once(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// once applies the policy one time.
func (r *retention) once() error {
	l := r.w
	pos, holder, constrained := r.ckpts.Min()
	if constrained && pos > 0 {
		below := pos + 1
		if r.floor != nil {
			if f, ok := r.floor(); ok {
				below = min(below, f)
			}
		}
		names, err := l.RemoveBefore(below)
		r.removed.Add(uint64(len(names)))
		if err != nil {
			return fmt.Errorf("removing segments passed by every sink: %w", err)
		}
		if len(names) > 0 {
			r.log.Debug("retention removed segments", "count", len(names), "below_lsn", below)
		}
	}
	size, err := wal.DiskBytes(r.cfg.Dir)
	if err != nil {
		return err
	}
	r.walBytes.Store(size)
	if r.cfg.MaxBytes == 0 || size <= int64(r.cfg.MaxBytes) {
		r.overLimit.Store(false)
		return nil
	}
	if !constrained || r.cfg.RetentionPolicy == "drop" {
		// Remove the oldest sealed segments until under the bound.
		for size > int64(r.cfg.MaxBytes) {
			segs := l.Segments()
			if len(segs) < 2 || !segs[0].Sealed {
				break
			}
			next := segs[1].BaseLSN
			names, err := l.RemoveBefore(next)
			if err != nil {
				return fmt.Errorf("removing segments over wal.max_bytes: %w", err)
			}
			if len(names) == 0 {
				break
			}
			r.removed.Add(uint64(len(names)))
			if constrained && pos < next-1 {
				r.forcedDrop.Add(uint64(len(names)))
				r.log.Error("wal.max_bytes reached: removed segments a sink still needed (wal.retention_policy: drop)",
					"sink", holder, "sink_position", pos, "lost_lsns", fmt.Sprintf("%d..%d", segs[0].BaseLSN, next-1))
			}
			if size, err = wal.DiskBytes(r.cfg.Dir); err != nil {
				return err
			}
		}
		r.walBytes.Store(size)
		r.overLimit.Store(size > int64(r.cfg.MaxBytes))
		return nil
	}
	r.overLimit.Store(true)
	if time.Since(r.lastLoud) > time.Minute {
		r.lastLoud = time.Now()
		r.log.Error("wal.max_bytes exceeded: a sink is behind and its segments are kept (wal.retention_policy: keep)",
			"wal_bytes", size, "max_bytes", int64(r.cfg.MaxBytes), "sink", holder, "sink_position", pos,
			"durable_lsn", r.w.Durable())
	}
	return nil
}
