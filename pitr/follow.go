package pitr

import (
	"context"
	"errors"
	"time"

	"github.com/walship/walship/archive"
	"github.com/walship/walship/walerr"
)

// FollowOptions configure Follow.
type FollowOptions struct {
	Options
	// Lineage to follow; "" means the archive's only lineage.
	Lineage string
	// Interval between polls of the catalog; default 5 s.
	Interval time.Duration
	// OnApply, if set, is called after each round that applied something.
	OnApply func(*Result)
}

// Follow keeps app up to date with the archive, as a standby: it polls the
// catalog every opts.Interval, plans the objects after app's position and
// applies them (each round verified before it is applied, as Verify). It
// returns when ctx ends (with ctx's error) or on an error retrying cannot
// fix: a missing or corrupt object or manifest (in an encrypted archive,
// one that is not sealed and bound to its key: archive.SealError), or an
// encrypted archive read without its key. A catalog that cannot be read, or a
// hole (objects after a missing range, which an archiver uploading in
// parallel may still fill), is logged and polled again; the end of the
// archive is never confused with a failure.
func Follow(ctx context.Context, src Source, app Applier, opts FollowOptions) error {
	if opts.Interval <= 0 {
		opts.Interval = 5 * time.Second
	}
	o := opts.Options.withDefaults()
	log := o.Logger
	for {
		pos, err := app.Position(ctx)
		if err != nil {
			return err
		}
		plan, err := PlanRestore(ctx, src, Target{Kind: Latest}, PlanOptions{Lineage: opts.Lineage, FromLSN: pos + 1})
		switch {
		case err == nil && len(plan.Segments) > 0:
			v, err := Verify(ctx, src, plan, o)
			if err != nil {
				return err
			}
			res, err := v.Apply(ctx, app)
			v.Close()
			if err != nil {
				return err
			}
			if opts.OnApply != nil {
				opts.OnApply(res)
			}
			continue // there may be more already
		case err == nil:
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, walerr.ErrCorruption), errors.Is(err, archive.ErrEncrypted):
			return err
		case errors.Is(err, ErrHole):
			log.Warn("pitr: follow: waiting for a hole in the archive to be filled", "err", err)
		case errors.Is(err, ErrOutOfRange) && pos == 0:
			log.Info("pitr: follow: waiting for the archive's first objects", "err", err)
		default:
			log.Warn("pitr: follow: cannot plan, retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(opts.Interval):
		}
	}
}
