package ha

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/walship/walship/change"
	"github.com/walship/walship/kafkawire"
	"github.com/walship/walship/wal"
)

var (
	// ErrDiverged is wrapped by a Follower's (or an ArchiveFollower's)
	// error when the local log is not a prefix of the group's history (the
	// topic, or the archive): its last transaction differs from the
	// history's transaction at the same LSNs, or (CatchUp) the local log
	// ends beyond the history's end. The error names the LSN. The local
	// tail was never shipped (a deposed leader's): the log must be moved
	// aside and rebuilt (TopicStart, ArchiveStart).
	ErrDiverged = errors.New("ha: the local log is not a prefix of the group's history")
	// ErrLineage is wrapped by a Follower's error for a record of another
	// lineage than FollowOptions.Lineage (another pipeline's topic).
	ErrLineage = errors.New("ha: record of another lineage")
)

// FollowOptions configure a Follower and TopicStart.
type FollowOptions struct {
	// Topic is the ordered topic the leader ships to:
	// kafkawire.OrderedTopic(prefix), one partition. Required.
	Topic string
	// Lineage is the pipeline's lineage: every record must carry it.
	// Required.
	Lineage string
	// Client holds the Kafka client's connection options (seeds, TLS,
	// SASL: kafkawire.ClientOptions). The follower adds read_committed.
	Client []kgo.Opt
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Validate checks the options and fills in the defaults.
func (o *FollowOptions) Validate() error {
	var errs []error
	if o.Topic == "" {
		errs = append(errs, errors.New("ha: follower: no topic"))
	}
	if o.Lineage == "" {
		errs = append(errs, errors.New("ha: follower: no lineage"))
	}
	if len(o.Client) == 0 {
		errs = append(errs, errors.New("ha: follower: no Kafka client options (seed brokers)"))
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return errors.Join(errs...)
}

// clientOptions are o.Client reading only committed records.
func (o *FollowOptions) clientOptions(more ...kgo.Opt) []kgo.Opt {
	opts := append(slices.Clip(o.Client), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	return append(opts, more...)
}

// Follower copies the ordered topic into a local log (see the package
// doc). Run and CatchUp may not run at the same time; the Follower must be
// the log's only appender while either runs.
type Follower struct {
	w    *wal.WAL
	o    FollowOptions
	log  *slog.Logger
	busy sync.Mutex // held by Run or CatchUp
}

// NewFollower returns a follower appending to w. It does no I/O.
func NewFollower(w *wal.WAL, o FollowOptions) (*Follower, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	return &Follower{w: w, o: o, log: o.Logger.With("component", "ha.follower", "topic", o.Topic)}, nil
}

// Position returns the last LSN appended and durable (the log's Durable).
func (f *Follower) Position() uint64 { return f.w.Durable() }

// Run tails the topic from the log's next LSN, appending each whole
// transaction as it is committed there, until ctx ends (it then returns
// nil) or an error stops it: ErrDiverged, ErrLineage, a gap
// (kafkawire.ErrGap), a malformed record, an error of the log or one the
// Kafka client cannot cure. Broker outages are retried by the client.
func (f *Follower) Run(ctx context.Context) error {
	err := f.follow(ctx, false)
	if ctx.Err() != nil && (err == nil || errors.Is(err, ctx.Err())) {
		return nil
	}
	return err
}

// CatchUp appends every transaction committed in the topic when it is
// called — below the partition's last stable offset then — and returns
// once they are durable. It fails with ErrDiverged if the local log's last
// transaction is not the topic's, or if the log ends beyond the topic's
// end. A transaction whose records are only partly committed in the topic
// yet is not appended. A new leader calls it (after fencing the old
// leader's producer) so that its log ends exactly where the group's history
// does.
func (f *Follower) CatchUp(ctx context.Context) error { return f.follow(ctx, true) }

// follow is Run (catchUp false: until ctx ends) and CatchUp.
func (f *Follower) follow(ctx context.Context, catchUp bool) (err error) {
	if !f.busy.TryLock() {
		return errors.New("ha: the follower is already running (Run or CatchUp)")
	}
	defer f.busy.Unlock()
	topic := f.o.Topic
	lo, end, err := offsetRange(ctx, &f.o)
	if err != nil {
		return err
	}
	last, err := lastTxn(ctx, f.w)
	if err != nil {
		return err
	}
	// done is what the topic must be read after: the transaction before the
	// log's last, so that the topic's transaction at the LSNs of the log's
	// last comes first, to be compared with it.
	next := f.w.NextLSN()
	done := next - 1
	if last != nil {
		done = last.FirstLSN - 1
		if lo >= end && lo > 0 {
			return fmt.Errorf("%w: the local log's last transaction (LSNs %d-%d) cannot be checked: %s holds no committed record (its records before offset %d were removed by retention); rebuild the log from the topic",
				kafkawire.ErrGap, last.FirstLSN, last.CommitLSN, topic, lo)
		}
	}
	off, err := startOffset(ctx, &f.o, done, lo, end)
	if err != nil {
		return err
	}
	f.log.Info("following", "offset", off, "next_lsn", next, "catch_up", catchUp, "end_offset", end)

	rd, err := kgo.NewClient(f.o.clientOptions(
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().At(off)}}),
		// Transaction markers too: CatchUp sees that it reached the last
		// stable offset even when only markers precede it.
		kgo.KeepControlRecords(),
		kgo.FetchMaxWait(500*time.Millisecond))...)
	if err != nil {
		return fmt.Errorf("ha: %w", err)
	}
	defer rd.Close()

	asm := kafkawire.NewAssembler(done)
	var warned time.Time // the last fetch error logged: at most one every 10s
	verified := last == nil
	pos := off // the next offset to read
	var queued uint64
	defer func() {
		// Appends queued are written even if ctx ended: wait until they are
		// durable, so that whoever reads the log next (CatchUp, after a
		// Run stopped for a takeover) sees them all.
		if queued > 0 {
			if werr := f.w.Wait(context.WithoutCancel(ctx), queued); werr != nil && err == nil {
				err = fmt.Errorf("ha: waiting for LSN %d to be durable: %w", queued, werr)
			}
		}
	}()
	for !catchUp || pos < end {
		fs := rd.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return err
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) {
			if ferr == nil && (kafkawire.IsFatal(err) || errors.Is(err, context.Canceled)) {
				ferr = fmt.Errorf("ha: read %s partition %d: %w", t, p, err)
			} else if time.Since(warned) >= 10*time.Second {
				warned = time.Now()
				f.log.Warn("reading the topic failed; retrying", "partition", p, "err", err)
			}
		})
		if ferr != nil {
			return ferr
		}
		for _, r := range fs.Records() {
			if r.Topic != topic || r.Partition != 0 || r.Offset < pos || catchUp && r.Offset >= end {
				continue
			}
			pos = r.Offset + 1
			if r.Attrs.IsControl() {
				continue
			}
			txn, complete, err := f.assemble(asm, r)
			if err != nil || !complete {
				if err != nil {
					return err
				}
				continue
			}
			if !verified {
				if err := compareTxn(last, &txn, fmt.Sprintf("%s offset %d", topic, r.Offset), "the topic"); err != nil {
					return err
				}
				verified = true
				continue
			}
			t, err := f.w.AppendReplicaAsync(ctx, &txn)
			if errors.Is(err, wal.ErrNotNext) {
				if next := f.w.NextLSN(); txn.FirstLSN > next {
					return fmt.Errorf("%w: %s offset %d: the log needs LSN %d next, the topic's next transaction begins at LSN %d",
						kafkawire.ErrGap, topic, r.Offset, next, txn.FirstLSN)
				}
				// The topic's transaction overlaps the log's end (a
				// local tail, e.g. of an aborted stream).
				return fmt.Errorf("%w: %s offset %d: %w", ErrDiverged, topic, r.Offset, err)
			}
			if err != nil {
				return fmt.Errorf("ha: append the transaction at LSNs %d-%d (%s offset %d): %w", txn.FirstLSN, txn.CommitLSN, topic, r.Offset, err)
			}
			queued = t.Last
		}
		if queued > 0 {
			if err := f.w.Wait(ctx, queued); err != nil {
				return fmt.Errorf("ha: waiting for LSN %d to be durable: %w", queued, err)
			}
		}
	}
	if !verified {
		return fmt.Errorf("%w: the local log ends at LSN %d (its last transaction begins at LSN %d) but %s ends, at its last stable offset %d, with the transaction ending at LSN %d",
			ErrDiverged, last.CommitLSN, last.FirstLSN, topic, end, asm.Done())
	}
	return nil
}

// assemble decodes r and gives it to asm.
func (f *Follower) assemble(asm *kafkawire.Assembler, r *kgo.Record) (change.Committed, bool, error) {
	ev, err := kafkawire.Decode(r)
	if err != nil {
		return change.Committed{}, false, fmt.Errorf("ha: %s offset %d: %w", f.o.Topic, r.Offset, err)
	}
	if ev.Lineage != f.o.Lineage {
		return change.Committed{}, false, fmt.Errorf("%w: %s offset %d (LSN %d) is of lineage %q, this group's is %q",
			ErrLineage, f.o.Topic, r.Offset, ev.LSN, ev.Lineage, f.o.Lineage)
	}
	txn, complete, err := asm.Add(&ev)
	if err != nil {
		return txn, false, fmt.Errorf("ha: %s offset %d: %w", f.o.Topic, r.Offset, err)
	}
	return txn, complete, nil
}

// lastTxn returns w's last committed transaction (or aborted range), or
// nil if it has none.
func lastTxn(ctx context.Context, w *wal.WAL) (*change.Committed, error) {
	d := w.Durable()
	if d == 0 || d < w.FirstLSN() {
		return nil, nil
	}
	rd, err := w.NewReader(d, false)
	if err != nil {
		return nil, fmt.Errorf("ha: read the log's last transaction: %w", err)
	}
	defer rd.Close()
	// The log may end with an aborted range: it is compared with the
	// topic's marker like a transaction.
	rd.ReportAborted()
	t, err := rd.Next(ctx)
	if err != nil {
		return nil, fmt.Errorf("ha: read the log's last transaction (commit LSN %d): %w", d, err)
	}
	if t.CommitLSN != d {
		return nil, fmt.Errorf("ha: the log's last transaction read back ends at LSN %d, not at its last commit %d", t.CommitLSN, d)
	}
	return t, nil
}

// compareTxn checks that remote, the history's first transaction after
// the one before local (read at where, in history: "the topic" or "the
// archive"), is local, field by field.
func compareTxn(local, remote *change.Committed, where, history string) error {
	var what string
	kind := func(t *change.Committed) string {
		if t.Aborted {
			return "an aborted range"
		}
		return "a transaction"
	}
	switch {
	case remote.FirstLSN != local.FirstLSN || remote.CommitLSN != local.CommitLSN || remote.Aborted != local.Aborted:
		what = fmt.Sprintf("%s has %s there, spanning LSNs %d-%d, the local log %s spanning %d-%d", history, kind(remote), remote.FirstLSN, remote.CommitLSN, kind(local), local.FirstLSN, local.CommitLSN)
	case local.Aborted:
		return nil // the abort's time is not part of the log's content
	case !remote.CommitTime.Equal(local.CommitTime):
		what = fmt.Sprintf("commit time %s in %s, %s locally", remote.CommitTime.UTC().Format(time.RFC3339Nano), history, local.CommitTime.UTC().Format(time.RFC3339Nano))
	case !remote.Header.Equal(local.Header):
		what = fmt.Sprintf("transaction header %+v in %s, %+v locally", remote.Header, history, local.Header)
	default:
		for i := range local.Changes {
			if !local.Changes[i].Equal(&remote.Changes[i]) {
				what = "the change at LSN " + strconv.FormatUint(local.FirstLSN+uint64(i), 10) + " differs"
				break
			}
		}
		if what == "" {
			return nil
		}
	}
	return fmt.Errorf("%w: at LSN %d (%s): %s; rebuild the log from %s", ErrDiverged, local.FirstLSN, where, what, history)
}

// TopicStart returns the first LSN of the first whole transaction the
// topic holds — where a fresh log copying it starts (wal.Options.FirstLSN)
// when retention removed the topic's head — and whether it holds no
// committed record at all.
func TopicStart(ctx context.Context, o FollowOptions) (firstLSN uint64, empty bool, err error) {
	if err := o.Validate(); err != nil {
		return 0, false, err
	}
	lo, end, err := offsetRange(ctx, &o)
	if err != nil {
		return 0, false, err
	}
	// A topic whose records were all removed by retention does not say
	// where the group's history ends: a log started at 1 would reuse LSNs.
	removed := func() error {
		return fmt.Errorf("%w: %s holds no committed record, but retention removed records before offset %d: where the group's history ends is unknown here; start this member with the log of another member (a copy of its wal.dir)",
			kafkawire.ErrGap, o.Topic, lo)
	}
	if lo >= end {
		if lo > 0 {
			return 0, false, removed()
		}
		return 0, true, nil
	}
	r, err := probe(ctx, &o, lo, end)
	if err != nil {
		return 0, false, err
	}
	if r == nil {
		if lo > 0 {
			return 0, false, removed()
		}
		return 0, true, nil
	}
	lsn, commit, first, lineage, err := kafkawire.DecodeHeaders(r)
	if err != nil {
		return 0, false, fmt.Errorf("ha: %s offset %d: %w", o.Topic, r.Offset, err)
	}
	if lineage != o.Lineage {
		return 0, false, fmt.Errorf("%w: %s offset %d (LSN %d) is of lineage %q, this group's is %q", ErrLineage, o.Topic, r.Offset, lsn, lineage, o.Lineage)
	}
	if lsn == first && (r.Value != nil || kafkawire.IsAbortedMarker(r)) {
		return first, false, nil
	}
	// Retention cut the head transaction: the next one is the first whole.
	return commit + 1, false, nil
}

// offsetRange returns partition 0's start offset and last stable offset.
func offsetRange(ctx context.Context, o *FollowOptions) (start, end int64, err error) {
	cl, err := kgo.NewClient(o.clientOptions()...)
	if err != nil {
		return 0, 0, fmt.Errorf("ha: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	starts, err := adm.ListStartOffsets(ctx, o.Topic)
	if err == nil {
		err = starts.Error()
	}
	if errors.Is(err, kerr.UnknownTopicOrPartition) {
		return 0, 0, nil // not created yet: the leader's sink creates it
	}
	if err != nil {
		return 0, 0, fmt.Errorf("ha: list the start offsets of %s: %w", o.Topic, err)
	}
	s, ok := starts.Lookup(o.Topic, 0)
	if !ok {
		return 0, 0, fmt.Errorf("ha: %s has no partition 0", o.Topic)
	}
	e, err := lastStableOffset(ctx, cl, o.Topic)
	if err != nil {
		return 0, 0, err
	}
	return s.Offset, e, nil
}

// startOffset finds where to read the topic from so that every record of
// every LSN above done is read (the way package consumer does): a binary
// search on the walship.lsn header of the records in [lo, end). A topic
// whose first record is past done+1 (retention) is an error wrapping
// kafkawire.ErrGap.
func startOffset(ctx context.Context, o *FollowOptions, done uint64, lo, end int64) (int64, error) {
	if lo >= end {
		return lo, nil
	}
	// safe says whether reading from r delivers every record above done:
	// done is a commit LSN, so done+1 starts the next transaction, and its
	// first record is the change itself (its tombstone comes after it).
	safe := func(r *kgo.Record) (bool, uint64, error) {
		lsn, _, _, _, err := kafkawire.DecodeHeaders(r)
		if err != nil {
			return false, 0, fmt.Errorf("ha: %s offset %d: %w", o.Topic, r.Offset, err)
		}
		return lsn <= done || lsn == done+1 && (r.Value != nil || kafkawire.IsAbortedMarker(r)), lsn, nil
	}
	r, err := probe(ctx, o, lo, end)
	if err != nil || r == nil {
		return lo, err
	}
	ok, lsn, err := safe(r)
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, fmt.Errorf("%w: the log needs %s from LSN %d on, but its first committed record (offset %d) has LSN %d: records removed by Kafka retention; rebuild the log from the topic (TopicStart)",
			kafkawire.ErrGap, o.Topic, done+1, r.Offset, lsn)
	}
	lo, hi := r.Offset, end
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		r, err := probe(ctx, o, mid, hi)
		if err != nil {
			return 0, err
		}
		ok := false
		if r != nil {
			if ok, _, err = safe(r); err != nil {
				return 0, err
			}
		}
		if !ok {
			hi = mid
			continue
		}
		lo = r.Offset
	}
	return lo, nil
}

// probe returns the first committed data record at or after offset at and
// below end, or nil if there is none. Transaction markers are read (and
// skipped), so that a range holding only markers and aborted records is
// told at once, not waited on.
func probe(ctx context.Context, o *FollowOptions, at, end int64) (*kgo.Record, error) {
	cl, err := kgo.NewClient(o.clientOptions(
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{o.Topic: {0: kgo.NewOffset().At(at)}}),
		kgo.KeepControlRecords(), kgo.FetchMaxWait(100*time.Millisecond), kgo.FetchMaxPartitionBytes(1<<16))...)
	if err != nil {
		return nil, fmt.Errorf("ha: %w", err)
	}
	defer cl.Close()
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		fs := cl.PollFetches(pctx)
		if err := pctx.Err(); err != nil {
			return nil, fmt.Errorf("ha: read %s at offset %d: %w", o.Topic, at, err)
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) {
			if ferr == nil && kafkawire.IsFatal(err) {
				ferr = fmt.Errorf("ha: read %s at offset %d: %w", o.Topic, at, err)
			}
		})
		if ferr != nil {
			return nil, ferr
		}
		for _, r := range fs.Records() {
			switch {
			case r.Offset < at:
			case r.Offset >= end:
				return nil, nil
			case !r.Attrs.IsControl():
				return r, nil
			case r.Offset+1 >= end:
				// A marker ends the range: nothing after it is below end
				// (and nothing after it may come soon, to be waited for).
				return nil, nil
			}
		}
	}
}
