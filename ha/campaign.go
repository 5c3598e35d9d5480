package ha

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"
)

// contest is what a campaign needs of a lease, in Kafka (Lease) or in the
// archive (ArchiveLease): both campaign by the same steps and differ only
// in how they read the lease and write a renewal.
type contest interface {
	// refresh reads the lease to its current end (the topic's last stable
	// offset; a listing of the archive's renewals).
	refresh(ctx context.Context) error
	// expiry is when the newest renewal read lapses, by this member's
	// monotonic clock.
	expiry() time.Time
	// renewedCh is closed when a newer renewal is read.
	renewedCh() <-chan struct{}
	// tryLead writes this member's first renewal and waits until the
	// previous term is surely over; an error means the contest was lost.
	tryLead(ctx context.Context, lapse time.Time) (*Term, error)
}

// campaign is Lease.Campaign and ArchiveLease.Campaign: it waits until the
// lease has lapsed by this member's clock, waits a random jitter of up to
// lease/4 so that members that saw the lapse together do not all contend,
// checks again, and tries to lead; it retries read errors and lost
// contests until ctx or the lease's runCtx ends. where names the lease's
// store in log lines.
func campaign(ctx, runCtx context.Context, c contest, member string, lease time.Duration, log *slog.Logger, where string) (*Term, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(runCtx, cancel)()
	failed := func(err error) (*Term, error) {
		return nil, fmt.Errorf("ha: campaign of %s: %w", member, err)
	}
	for {
		lapse, err := awaitLapse(ctx, c, lease, func(err error) {
			log.Warn("ha: campaign: reading "+where, "member", member, "err", err)
		})
		if err != nil {
			return failed(err)
		}
		select {
		case <-ctx.Done():
			return failed(ctx.Err())
		case <-time.After(rand.N(lease/4 + 1)):
		}
		ok, err := lapsed(ctx, c)
		if err != nil {
			if ctx.Err() != nil {
				return failed(ctx.Err())
			}
			log.Warn("ha: campaign: reading "+where, "member", member, "err", err)
			continue
		}
		if !ok {
			continue
		}
		t, err := c.tryLead(ctx, lapse)
		if err == nil {
			return t, nil
		}
		if ctx.Err() != nil {
			return failed(ctx.Err())
		}
		log.Info("ha: campaign lost, observing again", "member", member, "err", err)
	}
}

// awaitLapse waits until the lease has lapsed, and returns when it saw
// the lapse. Read errors are reported to warn and retried every lease/4.
func awaitLapse(ctx context.Context, c contest, lease time.Duration, warn func(error)) (time.Time, error) {
	for {
		renewed := c.renewedCh()
		ok, err := lapsed(ctx, c)
		if ctx.Err() != nil {
			return time.Time{}, ctx.Err()
		}
		if err != nil {
			warn(err)
		}
		if ok {
			return time.Now(), nil
		}
		wait := lease / 4
		if err == nil {
			wait = time.Until(c.expiry())
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-renewed:
		case <-time.After(wait):
		}
	}
}

// lapsed reads the lease to its current end and reports whether it has
// lapsed by this member's clock.
func lapsed(ctx context.Context, c contest) (bool, error) {
	if err := c.refresh(ctx); err != nil {
		return false, err
	}
	return !time.Now().Before(c.expiry()), nil
}
