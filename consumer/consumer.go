// Package consumer is walship's replay consumer (`walship consume`): it reads
// the ordered topic written by kafkasink with a franz-go consumer group and
// applies it to a SQLite or PostgreSQL replica through the replica package's
// Applier, exactly once (docs/DESIGN.md §4.7). It reads records in either
// kafka.format, json or json-schemas (kafkawire.Decode tells them apart),
// whatever the consumer's own config says.
//
// # Guarantees
//
//   - Whole transactions: records are assembled into transactions
//     (kafkawire.Assembler); a transaction is applied only once the record
//     with lsn == commit_lsn has arrived, and atomically with its position
//     (the Applier stores the position in the replica's own transaction).
//   - Exactly-once effect: duplicates in the topic (a restarted sink
//     re-sends) and redelivery after a consumer crash are dropped by LSN;
//     the Applier also skips transactions at or below the replica's
//     position.
//   - The replica decides where to start, not Kafka: on every partition
//     assignment the start offset is derived from the replica's Position.
//     A safe start is a record whose LSN is at most Position, or the first
//     record of LSN Position+1, because the sink's restarts overlap (every
//     LSN above a record's LSN appears at a later offset). The tombstone
//     that follows a delete with the delete's LSN is not a safe start for
//     LSN Position+1: the delete is before it. The group's committed
//     offset is tried first, then a binary search over the partition.
//     Group offsets are committed after each applied batch (the offset
//     after its last commit record) for monitoring and as that first guess
//     only.
//   - A gap (the topic lost records the replica has not applied, e.g. to
//     Kafka retention) or a record of another lineage stops Run with an
//     error; nothing is skipped silently. The LSNs of a transaction the
//     log aborted midway are no gap: the topic accounts for them with an
//     aborted-range marker (docs/KAFKA.md), which has nothing to apply; the
//     replica's position passes it with the next transaction applied.
//   - Read-your-writes: WaitHandler answers once the replica's position
//     reaches a given LSN.
//   - Reported positions: with Options.Name, the replica's position is
//     produced to the compacted positions topic after it is committed to
//     the replica, never before, so a primary waiting for the level
//     applied never counts a transaction the replica could still lose.
package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/walship/walship/change"
	"github.com/walship/walship/internal/health"
	"github.com/walship/walship/kafkawire"
	"github.com/walship/walship/replica"
	"github.com/walship/walship/walerr"
)

// Defaults.
const (
	DefaultGroup        = "walship-consume"
	DefaultMaxBatchTxns = 1000
	// maxPollRecords bounds the records taken per poll (memory bound).
	maxPollRecords = 10000
)

// Options configures a Consumer.
type Options struct {
	Brokers []string
	// Topic is the ordered topic; default kafkawire.OrderedTopic(TopicPrefix).
	Topic       string
	TopicPrefix string // default "walship"
	Group       string // default "walship-consume"
	ReplicaURL  string // sqlite:///abs/path.db | postgres://...
	// Lineage, if set, must be the lineage of every record and of the
	// replica (replica.ErrLineage otherwise).
	Lineage string
	// MaxBatchTxns is the most transactions applied in one replica
	// transaction; default 1000.
	MaxBatchTxns int
	// InstanceID, if set, makes the consumer a static group member: a
	// restarted process with the same id takes its partition back at once
	// instead of waiting for the old member's session to expire.
	InstanceID string
	// SessionTimeout of the group membership; default franz-go's (45s).
	SessionTimeout time.Duration
	TLS            kafkawire.TLSOptions
	SASL           kafkawire.SASLOptions
	Logger         *slog.Logger
	// OnApplied, if set, is called after each batch is committed to the
	// replica, with the batch (not to be retained or modified). The bench
	// measures commit-to-apply lag with it.
	OnApplied func(txns []change.Committed)
	// Name, if set (consumer.name), makes the consumer report its applied
	// position on kafkawire.PositionsTopic(TopicPrefix), keyed by Name,
	// after each applied batch (coalesced while a report is in flight),
	// for the replication level applied of the primary.
	Name string
}

// Validate checks c and fills in defaults; errors name the config keys.
func (c *Options) Validate() error {
	var errs []error
	if _, err := kafkawire.ClientOptions(c.Brokers, c.TLS, c.SASL); err != nil {
		errs = append(errs, err)
	}
	if c.TopicPrefix == "" {
		c.TopicPrefix = kafkawire.DefaultTopicPrefix
	}
	if c.Topic == "" {
		c.Topic = kafkawire.OrderedTopic(c.TopicPrefix)
	}
	if c.Group == "" {
		c.Group = DefaultGroup
	}
	if c.ReplicaURL == "" {
		//lint:ignore ST1005 the trailing "..." is part of the example URL
		errs = append(errs, errors.New("replica.url: required: sqlite:///abs/path.db or postgres://..."))
	} else if _, _, err := replica.ParseURL(c.ReplicaURL); err != nil {
		errs = append(errs, fmt.Errorf("replica.url: %w", err))
	}
	if c.MaxBatchTxns < 0 {
		errs = append(errs, fmt.Errorf("replica.max_batch_txns: %d: must not be negative", c.MaxBatchTxns))
	} else if c.MaxBatchTxns == 0 {
		c.MaxBatchTxns = DefaultMaxBatchTxns
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return errors.Join(errs...)
}

// Stats is a snapshot of a Consumer's progress.
type Stats struct {
	// AppliedLSN is the replica's position: the commit LSN of the last
	// applied transaction. AppliedCommitTime is its commit time.
	AppliedLSN        uint64
	AppliedCommitTime time.Time
	// Txns and Changes applied since New; Batches is the number of Apply
	// calls; Skipped counts duplicate records dropped.
	Txns, Changes, Batches, Skipped uint64
	// LagRecords is how many records of the topic are not yet consumed
	// (high watermark - next offset). LagSeconds is the age of the oldest
	// transaction fetched and not yet applied, else, while records are
	// pending in the topic, of the last applied commit (an upper bound);
	// 0 when caught up. It is computed when Stats is called, so it grows
	// while anything waits.
	LagRecords int64
	LagSeconds float64
	// Kafka and Replica are the health of the brokers and of the replica
	// database, as Run sees them (see health.go).
	Kafka, Replica health.State
	// ChecksumsEqual and ChecksumsDifferent count the check attempts
	// (walship.checksum messages) verified since New, by result; a
	// differing attempt that a recheck clears is not a difference
	// (package checksum).
	ChecksumsEqual, ChecksumsDifferent uint64
}

// Consumer applies the ordered topic to a replica.
type Consumer struct {
	cfg     Options
	log     *slog.Logger
	applier replica.Applier
	kopts   []kgo.Opt

	running atomic.Bool
	txns    atomic.Uint64
	changes atomic.Uint64
	batches atomic.Uint64
	skipped atomic.Uint64
	lag     atomic.Int64
	kafka   health.Tracker
	replica health.Tracker

	mu struct {
		sync.Mutex
		applied    uint64
		commitTime time.Time
		advanced   chan struct{} // closed and replaced when applied moves
		// queued are the batches handed to the applier and not yet
		// applied, oldest first (at most three: see Run).
		queued []queuedBatch
	}
}

// New validates cfg and opens the replica (creating its bookkeeping
// table). It does no Kafka I/O. Close releases the replica.
func New(ctx context.Context, cfg Options) (*Consumer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	kopts, _ := kafkawire.ClientOptions(cfg.Brokers, cfg.TLS, cfg.SASL)
	// Only committed records: a transactional producer's aborted records
	// (a fenced leader's) never reach the replica.
	kopts = append(kopts, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	ap, err := replica.Open(ctx, cfg.ReplicaURL, replica.Options{MaxBatchTxns: cfg.MaxBatchTxns, Lineage: cfg.Lineage, Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("consumer: %w", err)
	}
	pos, err := ap.Position(ctx)
	if err != nil {
		ap.Close()
		return nil, fmt.Errorf("consumer: replica position: %w", err)
	}
	c := &Consumer{cfg: cfg, log: cfg.Logger.With("component", "consumer"), applier: ap, kopts: kopts}
	c.mu.applied = pos
	c.mu.advanced = make(chan struct{})
	return c, nil
}

// Close closes the replica. Call it after Run has returned. Idempotent.
func (c *Consumer) Close() error { return c.applier.Close() }

// Stats returns a snapshot; safe to call concurrently with Run.
func (c *Consumer) Stats() Stats {
	c.mu.Lock()
	st := Stats{AppliedLSN: c.mu.applied, AppliedCommitTime: c.mu.commitTime}
	var oldestQueued time.Time
	if len(c.mu.queued) > 0 {
		oldestQueued = c.mu.queued[0].oldest
	}
	c.mu.Unlock()
	st.Txns, st.Changes, st.Batches, st.Skipped = c.txns.Load(), c.changes.Load(), c.batches.Load(), c.skipped.Load()
	st.Kafka, st.Replica = c.kafka.State(), c.replica.State()
	as := c.applier.Stats()
	st.ChecksumsEqual, st.ChecksumsDifferent = as.ChecksumsEqual, as.ChecksumsDifferent
	st.LagRecords = max(c.lag.Load(), 0)
	switch {
	case !oldestQueued.IsZero():
		st.LagSeconds = max(time.Since(oldestQueued).Seconds(), 0)
	case st.LagRecords > 0 && !st.AppliedCommitTime.IsZero():
		st.LagSeconds = max(time.Since(st.AppliedCommitTime).Seconds(), 0)
	}
	return st
}

// Run consumes and applies until ctx ends (returning ctx's error) or an
// error stops it: a malformed record, a gap, another lineage, a replica
// error. It may be called again after it returns (e.g. after a transient
// error); it always restarts from the replica's position.
func (c *Consumer) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("consumer: Run is already running")
	}
	defer c.running.Store(false)
	topic := c.cfg.Topic

	var adjustErr atomic.Pointer[error]
	opts := append([]kgo.Opt{}, c.kopts...)
	opts = append(opts,
		kgo.ConsumerGroup(c.cfg.Group),
		kgo.ConsumeTopics(topic),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.FetchMaxWait(100*time.Millisecond),
		kgo.WithHooks(brokerHooks{c}),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.AdjustFetchOffsetsFn(func(actx context.Context, offs map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
			for t, ps := range offs {
				for p := range ps {
					if t != topic || p != 0 {
						continue
					}
					o, err := c.startOffset(actx, topic)
					if err != nil && actx.Err() != nil && ctx.Err() == nil {
						// The group session ended during the search (a
						// broker lost, a rebalance): the client joins
						// again and asks again; nothing is wrong.
						c.log.Info("start offset search cut short by a group change; it runs again on the next assignment", "err", err)
						return nil, err
					}
					if err != nil {
						adjustErr.Store(&err)
						return nil, err
					}
					ps[p] = kgo.NewOffset().At(o)
				}
			}
			return offs, nil
		}),
	)
	if c.cfg.InstanceID != "" {
		opts = append(opts, kgo.InstanceID(c.cfg.InstanceID))
	}
	if c.cfg.SessionTimeout > 0 {
		opts = append(opts, kgo.SessionTimeout(c.cfg.SessionTimeout), kgo.HeartbeatInterval(c.cfg.SessionTimeout/5))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("consumer: %w", err)
	}
	// Leaving the group revokes the partition, which BlockRebalanceOnPoll
	// would hold up.
	defer cl.CloseAllowingRebalance()
	probeCtx, stopProbe := context.WithCancel(ctx)
	var probeWG sync.WaitGroup
	probeWG.Go(func() { c.probeReplica(probeCtx) })
	if c.cfg.Name != "" {
		probeWG.Go(func() { c.reportPositions(probeCtx, cl) })
	}
	defer probeWG.Wait()
	defer stopProbe()

	// Decoding runs here, applying in its own goroutine: the replica's
	// commit overlaps the next fetch and decode. At most two batches wait.
	type job struct {
		txns         []change.Committed
		commitOffset int64 // offset after the batch's last commit record
	}
	jobs := make(chan job, 2)
	applyErr := make(chan error, 1)
	applierDone := make(chan struct{})
	// A failed apply ends the poll at once: with nothing more to fetch it
	// would wait for ctx.
	pollCtx, stopPoll := context.WithCancel(ctx)
	defer stopPoll()
	go func() {
		defer close(applierDone)
		for j := range jobs {
			if err := c.apply(ctx, j.txns); err != nil {
				applyErr <- err
				stopPoll()
				for range jobs { // let the reader stop
				}
				return
			}
			// Offsets are a hint for the next start (see the package doc).
			commit := map[string]map[int32]kgo.EpochOffset{topic: {0: {Epoch: -1, Offset: j.commitOffset}}}
			cl.CommitOffsetsSync(ctx, commit, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, _ *kmsg.OffsetCommitResponse, err error) {
				if err != nil && ctx.Err() == nil {
					c.log.Warn("kafka offset commit failed (only a hint; ignored)", "err", err)
				}
			})
		}
	}()
	defer func() {
		close(jobs)
		<-applierDone
	}()

	asm := kafkawire.NewAssembler(c.position())
	for {
		fs := cl.PollRecords(pollCtx, maxPollRecords)
		select {
		case err := <-applyErr:
			return err
		default:
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if p := adjustErr.Load(); p != nil {
			return *p
		}
		for _, fe := range fs.Errors() {
			if errors.Is(fe.Err, context.Canceled) && ctx.Err() != nil {
				return ctx.Err()
			}
			if kafkawire.IsFatal(fe.Err) {
				return fmt.Errorf("consumer: %s: %w", topic, fe.Err)
			}
			c.log.Warn("kafka fetch error (retried)", "topic", fe.Topic, "partition", fe.Partition, "err", fe.Err)
		}
		// A new assignment may have found the replica further than the
		// assembler: everything at or below the position is skipped.
		if d := c.position(); d > asm.Done() {
			asm = kafkawire.NewAssembler(d)
		}
		var batch []change.Committed
		var lastCommitOffset int64 = -1
		var hw int64 = -1
		var next int64 = -1
		fs.EachPartition(func(p kgo.FetchTopicPartition) {
			if p.Topic == topic && p.Partition == 0 {
				hw = p.HighWatermark
			}
		})
		var perr error
		fs.EachRecord(func(r *kgo.Record) {
			if perr != nil || r.Topic != topic || r.Partition != 0 {
				return
			}
			next = r.Offset + 1
			ev, err := kafkawire.Decode(r)
			if err != nil {
				perr = fmt.Errorf("consumer: %s offset %d: %w", topic, r.Offset, err)
				return
			}
			if c.cfg.Lineage != "" && ev.Lineage != c.cfg.Lineage {
				perr = fmt.Errorf("consumer: %s offset %d: record of lineage %q, want %q", topic, r.Offset, ev.Lineage, c.cfg.Lineage)
				return
			}
			txn, ok, err := asm.Add(&ev)
			if err != nil {
				perr = fmt.Errorf("consumer: %s offset %d: %w", topic, r.Offset, err)
				return
			}
			if ok && !txn.Aborted { // an aborted range has nothing to apply
				batch = append(batch, txn)
				lastCommitOffset = r.Offset
			}
		})
		c.skipped.Store(asm.Skipped)
		if perr != nil {
			return perr
		}
		// The lag is stored before the batch goes to the applier, so that
		// whoever sees the batch applied sees this fetch's lag too.
		if hw >= 0 && next >= 0 {
			c.lag.Store(hw - next)
		} else if hw >= 0 && fs.NumRecords() == 0 {
			c.lag.Store(0)
		}
		if len(batch) > 0 {
			c.queue(batch)
			select {
			case jobs <- job{txns: batch, commitOffset: lastCommitOffset + 1}:
			case err := <-applyErr:
				return err
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		cl.AllowRebalance()
	}
}

func (c *Consumer) apply(ctx context.Context, batch []change.Committed) error {
	if err := c.applier.Apply(ctx, batch); err != nil {
		if ctx.Err() == nil {
			c.replica.Fail(err)
		}
		return fmt.Errorf("consumer: apply LSNs %d-%d: %w", batch[0].FirstLSN, batch[len(batch)-1].CommitLSN, err)
	}
	var changes uint64
	for i := range batch {
		changes += uint64(len(batch[i].Changes))
	}
	c.txns.Add(uint64(len(batch)))
	c.changes.Add(changes)
	c.batches.Add(1)
	last := &batch[len(batch)-1]
	c.mu.Lock()
	if last.CommitLSN > c.mu.applied {
		c.mu.applied = last.CommitLSN
		c.mu.commitTime = last.CommitTime
		close(c.mu.advanced)
		c.mu.advanced = make(chan struct{})
	}
	for len(c.mu.queued) > 0 && c.mu.queued[0].last <= c.mu.applied {
		c.mu.queued = c.mu.queued[1:]
	}
	c.mu.Unlock()
	if c.cfg.OnApplied != nil {
		c.cfg.OnApplied(batch)
	}
	return nil
}

func (c *Consumer) position() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.applied
}

// startOffset returns a safe offset to start reading topic from, given the
// replica's position (see the package doc). Broker errors that retrying
// can cure (a broker down or restarting while the group rebalances) are
// retried with backoff until ctx ends: they must not stop the consumer.
// A gap (kafkawire.ErrGap), a malformed record and errors that retrying
// cannot cure (kafkawire.IsFatal) are returned at once.
func (c *Consumer) startOffset(ctx context.Context, topic string) (int64, error) {
	pos, err := c.applier.Position(ctx)
	if err != nil {
		return 0, fmt.Errorf("consumer: replica position: %w", err)
	}
	c.mu.Lock()
	if pos > c.mu.applied {
		c.mu.applied = pos
	}
	c.mu.Unlock()
	wait := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		off, err := c.searchOffset(ctx, topic, pos)
		if err == nil || ctx.Err() != nil || errors.Is(err, kafkawire.ErrGap) ||
			errors.Is(err, walerr.ErrCorruption) || kafkawire.IsFatal(err) {
			return off, err
		}
		c.log.Warn("kafka: cannot find the start offset (retried)", "topic", topic, "attempt", attempt, "next_in", wait, "err", err)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// searchOffset finds a safe start offset for a replica at pos: the
// group's committed offset if it is one, else a binary search.
func (c *Consumer) searchOffset(ctx context.Context, topic string, pos uint64) (int64, error) {
	cl, err := kgo.NewClient(c.kopts...)
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err != nil {
		return 0, fmt.Errorf("consumer: list offsets of %s: %w", topic, err)
	}
	// The last stable offset: a read_committed reader sees nothing beyond
	// it until the open transactions end.
	ends, err := adm.ListCommittedOffsets(ctx, topic)
	if err != nil {
		return 0, fmt.Errorf("consumer: list offsets of %s: %w", topic, err)
	}
	so, ok1 := starts.Lookup(topic, 0)
	eo, ok2 := ends.Lookup(topic, 0)
	if !ok1 || !ok2 || so.Err != nil || eo.Err != nil {
		return 0, fmt.Errorf("consumer: list offsets of %s partition 0: %v %v", topic, so.Err, eo.Err)
	}
	lo, hi := so.Offset, eo.Offset
	if pos == 0 || lo >= hi {
		return lo, nil
	}
	// safe says whether reading from a record of lsn delivers every record
	// of every LSN above pos: pos is a commit LSN, so pos+1 is the first
	// LSN of the next transaction, and its first record is the change
	// itself; a tombstone of pos+1 comes after its delete.
	safe := func(lsn uint64, tombstone bool) bool { return lsn <= pos || lsn == pos+1 && !tombstone }
	// The group's committed offset first: normally one probe.
	if fo, err := adm.FetchOffsets(ctx, c.cfg.Group); err == nil {
		if co, ok := fo.Lookup(topic, 0); ok && co.Err == nil && co.At > lo && co.At < hi {
			if off, lsn, tomb, err := c.probe(ctx, topic, co.At, hi); err == nil && safe(lsn, tomb) && off < hi {
				c.log.Info("starting at the group's offset", "offset", off, "lsn", lsn, "replica_lsn", pos)
				return off, nil
			}
		}
	}
	off, lsn, tomb, err := c.probe(ctx, topic, lo, hi)
	if err != nil {
		return 0, err
	}
	if off >= hi {
		return lo, nil // nothing committed to read below hi
	}
	if !safe(lsn, tomb) {
		what := "LSN " + strconv.FormatUint(lsn, 10)
		if tomb {
			what += "'s tombstone, not its delete"
		}
		return 0, fmt.Errorf("%w: the replica is at LSN %d but %s starts at offset %d with %s: records lost to Kafka retention; rebuild the replica from the archive (walreplay restore)", kafkawire.ErrGap, pos, topic, off, what)
	}
	lo = off
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		off, lsn, tomb, err := c.probe(ctx, topic, mid, hi)
		if err != nil {
			return 0, err
		}
		if off < hi && safe(lsn, tomb) {
			lo = off
			if off != mid { // records between mid and off are gone: narrow from there
				continue
			}
		} else {
			hi = mid
		}
	}
	c.log.Info("starting at a searched offset", "offset", lo, "replica_lsn", pos)
	return lo, nil
}

// probe returns the offset and LSN of the first record at or after offset o,
// and whether it is a tombstone; an offset of hi or more if there is none
// below hi (the last stable offset). Control records (transaction markers)
// are read, so that a range holding only markers and aborted records is
// told at once, not waited on.
func (c *Consumer) probe(ctx context.Context, topic string, o, hi int64) (int64, uint64, bool, error) {
	opts := append([]kgo.Opt{}, c.kopts...)
	opts = append(opts, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().At(o)}}), kgo.KeepControlRecords(),
		kgo.FetchMaxWait(100*time.Millisecond),
		kgo.WithHooks(brokerHooks{c}), kgo.FetchMaxPartitionBytes(1<<16))
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return 0, 0, false, err
	}
	defer cl.Close()
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		fs := cl.PollRecords(pctx, 1)
		if err := pctx.Err(); err != nil {
			return 0, 0, false, fmt.Errorf("consumer: read %s at offset %d: %w", topic, o, err)
		}
		for _, r := range fs.Records() {
			if r.Offset >= hi {
				return r.Offset, 0, false, nil
			}
			if r.Attrs.IsControl() {
				continue
			}
			lsn, _, _, _, err := kafkawire.DecodeHeaders(r)
			if err != nil {
				return 0, 0, false, fmt.Errorf("consumer: %s offset %d: %w", topic, r.Offset, err)
			}
			return r.Offset, lsn, r.Value == nil && !kafkawire.IsAbortedMarker(r), nil
		}
	}
}

// reportPositions produces the replica's applied position to the positions
// topic each time it moves (the latest only, if it moved several times
// while a report was in flight), until ctx ends. Failures are retried: a
// report only lets the primary acknowledge sooner.
func (c *Consumer) reportPositions(ctx context.Context, cl *kgo.Client) {
	topic := kafkawire.PositionsTopic(c.cfg.TopicPrefix)
	adm := kadm.NewClient(cl)
	for attempt := 0; ; attempt++ {
		err := kafkawire.EnsurePositionsTopic(ctx, adm, topic)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return
		}
		c.log.Warn("consumer: cannot create the positions topic; retrying", "topic", topic, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(min(time.Duration(attempt+1)*200*time.Millisecond, 5*time.Second)):
		}
	}
	var sent uint64
	first := true
	for {
		c.mu.Lock()
		pos, advanced := c.mu.applied, c.mu.advanced
		c.mu.Unlock()
		if first || pos > sent {
			rec := &kgo.Record{Topic: topic, Key: []byte(c.cfg.Name), Value: kafkawire.AppliedPosition{LSN: pos, Time: time.Now().UTC()}.Encode()}
			if err := cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
				if ctx.Err() != nil {
					return
				}
				c.log.Warn("consumer: reporting the applied position failed; retrying", "topic", topic, "lsn", pos, "err", err)
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Second):
				}
				continue
			}
			sent, first = pos, false
		}
		select {
		case <-ctx.Done():
			return
		case <-advanced:
		}
	}
}
