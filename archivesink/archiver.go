package archivesink

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/walship/walship/archive"
	"github.com/walship/walship/checkpoint"
	"github.com/walship/walship/internal/health"
	"github.com/walship/walship/wal"
)

// CheckpointName is the checkpoint the archiver registers and advances.
// Its position is the last LSN durably archived (0 before the first
// object): local retention may remove LSNs <= that position. Its payload
// is this node's owner id.
const CheckpointName = "archive"

// MinTimeout is the smallest ArchiverOptions.Timeout.
const MinTimeout = 100 * time.Millisecond

// ArchiverOptions configure an Archiver. The zero value is valid.
type ArchiverOptions struct {
	// Lineage archived into. Default "main".
	Lineage string
	// Timeout bounds how old the newest durable change may be before it
	// is archived (the RPO, config archive.timeout), while the archive is
	// reachable. Default 60s; at least MinTimeout.
	Timeout time.Duration
	// MaxObjectBytes closes an object once its encoded transactions reach
	// this size (before compression). Default 16 MiB.
	MaxObjectBytes int
	// NodeID identifies this node as the lineage's owner. Default: the id
	// kept in the archive checkpoint's payload, generated (random) and
	// stored there on the first run.
	NodeID string
	// Stored, if set, is called with the last LSN of the archive each time
	// it grows (an object and its manifest stored, the checkpoint
	// advanced), and once when Run finds the archive's end: the
	// replication level shipped counts it. It must not block.
	Stored func(lsn uint64)
	// Logger defaults to discard.
	Logger *slog.Logger
	// Backend, if set, is the tracker the archiver records the object
	// store's health in (Stats().Backend reads it); default its own. The
	// archiver sees a failure only when a call returns, and the backend
	// retries transient failures inside a call (for as long as its
	// RetryTimeout, or ctx, allows), so also pass it to
	// archive.BackendOptions.OnRetry (BackendRetried) when opening the
	// archive: then the first failed attempt of any call marks the store
	// down at once.
	Backend *health.Tracker
	// Gate, if set, is called right before each object, manifest or
	// record the archiver puts (archive.Archive.WithPutGate). Its error
	// stops the archiver: Run returns it (matching archive.ErrGateClosed
	// and the gate's error). It must be cheap and must not block (HA: the
	// leader's term, ha.Term.Gate).
	Gate func() error
	// Through, if set, bounds what is archived: only transactions whose
	// commit LSN is at most Through() (HA: the Kafka sink's committed
	// position, so that the archive never holds what the group's Kafka
	// history lacks). The archiver waits for it to advance, polling it
	// every throughPoll at most. Nil: no bound.
	Through func() uint64
	// Copied, if set, is the LSN through which the log was copied from
	// this archive when this node started to write it (HA without Kafka:
	// the new leader's catch-up). A newest segment ending beyond both it
	// and the archive checkpoint was stored by no one this node followed
	// (a replaced leader's put that landed late): Run refuses to resume
	// after it, since its transactions are not this log's.
	Copied func() uint64
}

// BackendRetried returns an archive.BackendOptions.OnRetry hook that
// records every retried failure in t: an attempt that failed means the
// store is down now, whether or not a later attempt succeeds (that one
// marks it up again). It does not block.
func BackendRetried(t *health.Tracker) func(archive.RetryEvent) {
	return func(e archive.RetryEvent) { t.Fail(e.Err) }
}

// Validate reports the first bad field.
func (o *ArchiverOptions) Validate() error {
	if o.Lineage != "" {
		if err := archive.CheckLineage(o.Lineage); err != nil {
			return fmt.Errorf("archive: ArchiverOptions.Lineage: %w", err)
		}
	}
	if o.Timeout != 0 && o.Timeout < MinTimeout {
		return fmt.Errorf("archive: ArchiverOptions.Timeout %v is below %v", o.Timeout, MinTimeout)
	}
	if o.MaxObjectBytes < 0 {
		return fmt.Errorf("archive: ArchiverOptions.MaxObjectBytes %d is negative", o.MaxObjectBytes)
	}
	if len(o.NodeID) > 128 {
		return fmt.Errorf("archive: ArchiverOptions.NodeID is %d bytes, at most 128", len(o.NodeID))
	}
	return nil
}

// ArchiverStats is a snapshot of an Archiver's progress.
type ArchiverStats struct {
	Lineage string
	// ArchivedLSN is the last LSN durably archived.
	ArchivedLSN uint64
	// ArchivedCommitTime is the commit time of the newest archived change.
	ArchivedCommitTime time.Time
	// DurableLSN is the WAL's durable LSN when sampled.
	DurableLSN uint64
	// Lag is how long the oldest durable transaction not yet archived has
	// waited, measured from when the archiver read it (or, if it has not
	// read it yet, from Run's start or the last stored object); 0 when
	// caught up.
	Lag       time.Duration
	Objects   uint64 // objects stored by this Archiver
	Bytes     uint64 // object bytes stored
	RawBytes  uint64 // encoded transaction bytes before compression
	Retries   uint64 // backend calls retried after transient failures
	Errors    uint64 // failed attempts to store an object or checkpoint (each retried)
	LastError string
	// Backend is the object store's health: every object stored, every
	// failed attempt, a probe (a listing, every probeInterval while Run
	// runs) and, through ArchiverOptions.Backend, every retried attempt
	// of the backend's own calls report to it.
	Backend health.State
}

// probeInterval is how often Run checks that the archive's backend
// answers, so that an idle archiver notices an outage (and its end).
const probeInterval = 5 * time.Second

// Archiver follows the WAL and ships whole transactions to the archive,
// one object at a time, in LSN order.
//
// Guarantees:
//   - Only durable data: it reads the log through a segment reader, which
//     sees durable committed transactions only, and ships their record
//     bytes as stored (not decoded and re-encoded).
//   - No holes: objects are stored in order; the next is built only from
//     the transactions that follow the last stored one; a failure is
//     retried (with backoff, forever while ctx lives), never skipped. On
//     start it resumes after the newest object in the archive, and fails
//     rather than start past LSNs the local WAL no longer has.
//   - Retention waits: CheckpointName is registered by NewArchiver and
//     advanced only after an object and its manifest are stored.
//   - RPO: a transaction read from the WAL is put in an object within
//     Timeout/4 and that object is stored as soon as the ones before it
//     are, so with a reachable archive the newest archived change is
//     never older than Timeout.
//   - Ownership: it writes only into a lineage it owns (Claim); otherwise
//     Run fails with an *OwnerError.
type Archiver struct {
	a       *archive.Archive
	w       *wal.WAL
	ckpts   *checkpoint.Store
	opts    ArchiverOptions
	log     *slog.Logger
	running atomic.Bool
	backend *health.Tracker

	mu struct {
		sync.Mutex
		stats ArchiverStats
		// seen samples (LSN, when read) of transactions read but not yet
		// archived, oldest first: Lag is measured from seen[0].
		seen []seenMark
		// progress is when Run started or last stored an object.
		progress time.Time
		// lastLog rate-limits error logs.
		lastLog    time.Time
		suppressed int
	}
}

type seenMark struct {
	lsn uint64
	at  time.Time
}

const (
	defaultLineage        = "main"
	defaultTimeout        = 60 * time.Second
	defaultMaxObjectBytes = 16 << 20
	errorLogEvery         = 10 * time.Second
	seenSampleEvery       = 10 * time.Millisecond
	txnQueue              = 4096
)

// NewArchiver returns an archiver of w into a. It registers
// CheckpointName in ckpts at once, so retention keeps every local
// segment until the archiver has durably passed it. It does no I/O.
func NewArchiver(a *archive.Archive, w *wal.WAL, ckpts *checkpoint.Store, opts ArchiverOptions) (*Archiver, error) {
	if a == nil || w == nil || ckpts == nil {
		return nil, errors.New("archive: NewArchiver: nil archive.Archive, WAL or checkpoint Store")
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.Lineage == "" {
		opts.Lineage = defaultLineage
	}
	if opts.Timeout == 0 {
		opts.Timeout = defaultTimeout
	}
	if opts.MaxObjectBytes == 0 {
		opts.MaxObjectBytes = defaultMaxObjectBytes
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if err := ckpts.Register(CheckpointName); err != nil {
		return nil, err
	}
	ar := &Archiver{a: a.WithPutGate(opts.Gate), w: w, ckpts: ckpts, opts: opts, log: opts.Logger, backend: opts.Backend}
	if ar.backend == nil {
		ar.backend = &health.Tracker{}
	}
	ar.mu.stats.Lineage = opts.Lineage
	if c, ok := ckpts.Get(CheckpointName); ok {
		ar.mu.stats.ArchivedLSN = c.Pos
	}
	return ar, nil
}

// Stats returns the archiver's progress. It does no I/O.
func (ar *Archiver) Stats() ArchiverStats {
	durable := ar.w.Durable()
	ar.mu.Lock()
	s := ar.mu.stats
	switch {
	case len(ar.mu.seen) > 0:
		s.Lag = time.Since(ar.mu.seen[0].at)
	case durable > s.ArchivedLSN && !ar.mu.progress.IsZero():
		// Durable but not read yet (starting, or the reader is held back):
		// behind at least since the last progress.
		s.Lag = time.Since(ar.mu.progress)
	}
	ar.mu.Unlock()
	s.DurableLSN = durable
	s.Retries = ar.a.Retries()
	s.Backend = ar.backend.State()
	return s
}

// probe lists a prefix no object has, every probeInterval until ctx ends,
// and records the outcome in the backend's health. The backend retries
// transient failures inside the call: the probe's deadline bounds them.
func (ar *Archiver) probe(ctx context.Context) {
	prefix := archive.SegmentKey(ar.opts.Lineage, 0, 0)
	t := time.NewTicker(probeInterval)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*probeInterval)
		_, err := ar.a.Backend().List(pctx, prefix)
		cancel()
		if ctx.Err() != nil {
			return
		}
		ar.backend.Fail(err)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// nodeID returns the owner id: the option, else the checkpoint payload,
// else a new random id stored durably in the checkpoint first.
func (ar *Archiver) nodeID(ctx context.Context) (string, uint64, error) {
	c, _ := ar.ckpts.Get(CheckpointName)
	id := ar.opts.NodeID
	if id == "" {
		id = string(c.Payload)
	}
	if id == "" {
		var b [16]byte
		if _, err := rand.Read(b[:]); err != nil {
			return "", 0, err
		}
		id = "node-" + hex.EncodeToString(b[:])
	}
	if string(c.Payload) != id {
		if err := ar.ckpts.Set(ctx, CheckpointName, c.Pos, []byte(id)); err != nil {
			return "", 0, fmt.Errorf("archive: store node id in checkpoint %q: %w", CheckpointName, err)
		}
	}
	return id, c.Pos, nil
}

// Run archives until ctx ends, then returns ctx's error; or returns
// early with an error it cannot retry: the lineage is owned by another
// node (*OwnerError), the archive and the local WAL disagree (a hole
// would result), a local WAL read fails, an object exists under a key
// with different contents, or the Gate closed (archive.ErrGateClosed:
// nothing more is put). Run may be called once at a time.
func (ar *Archiver) Run(ctx context.Context) error {
	if !ar.running.CompareAndSwap(false, true) {
		return errors.New("archive: Archiver.Run is already running")
	}
	defer ar.running.Store(false)
	ar.mu.Lock()
	ar.mu.progress = time.Now()
	ar.mu.Unlock()
	probeCtx, stopProbe := context.WithCancel(ctx)
	defer stopProbe()
	go ar.probe(probeCtx)

	node, ckptPos, err := ar.nodeID(ctx)
	if err != nil {
		return err
	}
	lineage := ar.opts.Lineage
	if err := ar.a.Claim(ctx, lineage, node); err != nil {
		return err
	}
	if err := ar.a.CreateLineage(ctx, archive.LineageRecord{ID: lineage}); err != nil && !errors.Is(err, archive.ErrExists) {
		return err
	}
	next, err := ar.resumePoint(ctx, ckptPos, node)
	if err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// A pipeline of four goroutines so that reading, building,
	// compressing and uploading overlap; channels of one object bound
	// the memory to about four objects plus txnQueue transactions.
	txCh := make(chan *archive.RawTxn, txnQueue)
	buildCh := make(chan *archive.SegmentBuilder, 1)
	upCh := make(chan *archive.EncodedSegment, 1)
	errCh := make(chan error, 3)
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { // WAL -> txCh
		defer wg.Done()
		defer close(txCh)
		err := ar.readLoop(ctx, next, txCh)
		if err != nil {
			cancel() // stop the uploads too: Run reports err now
		}
		errCh <- err
	}()
	go func() { // txCh -> segment plaintexts
		defer wg.Done()
		defer close(buildCh)
		err := ar.buildLoop(ctx, next.from, txCh, buildCh)
		if err != nil {
			cancel()
		}
		errCh <- err
	}()
	go func() { // compress, seal, checksum
		defer wg.Done()
		defer close(upCh)
		for b := range buildCh {
			enc, err := ar.a.Finish(b)
			if err != nil {
				errCh <- err
				cancel()
				return
			}
			select {
			case upCh <- enc:
			case <-ctx.Done():
				errCh <- ctx.Err()
				return
			}
		}
		errCh <- nil
	}()
	upErr := ar.uploadLoop(ctx, node, upCh)
	cancel()
	wg.Wait()
	close(errCh)
	errs := []error{upErr}
	for e := range errCh {
		errs = append(errs, e)
	}
	// Prefer the root cause over the cancellations it caused.
	for _, e := range errs {
		if e != nil && !errors.Is(e, context.Canceled) {
			return e
		}
	}
	return context.Cause(ctx)
}

type resume struct {
	from uint64 // LSN to read from
	// strict: the archive is not empty, so the first transaction read
	// must start at from unless the LSNs in between are still in the WAL
	// (aborted transactions).
	strict bool
}

// resumePoint decides where archiving continues: after the newest
// archived object, checked against the checkpoint and the local WAL.
func (ar *Archiver) resumePoint(ctx context.Context, ckptPos uint64, node string) (resume, error) {
	seg, found, err := ar.a.LastSegment(ctx, ar.opts.Lineage)
	if se := (*archive.SealError)(nil); errors.As(err, &se) && found {
		// The newest segment is sealed with a key this writer does not
		// hold. After a key change that is this writer's own object, and
		// its checkpoint covers it; anything beyond the checkpoint was not
		// stored by this writer, so its name cannot be trusted to skip
		// transactions (they would never be archived).
		if seg.LastLSN > ckptPos {
			return resume{}, fmt.Errorf("%w: this node's archive checkpoint (LSN %d) does not cover it, so it was not stored here before a key change: "+
				"remove the object and its manifest if they are not yours, or give archive.encryption_key_file the key that sealed them", err, ckptPos)
		}
		ar.log.Warn("archive: newest segment is sealed with another key, within this node's checkpoint (a key change); resuming after it",
			"key", seg.Key, "key_id", se.KeyID, "checkpoint", ckptPos)
		err = nil
	}
	if err != nil {
		return resume{}, err
	}
	var last uint64
	if found {
		last = seg.LastLSN
	}
	durable := ar.w.Durable()
	switch {
	case last > durable:
		return resume{}, fmt.Errorf("archive: lineage %q in the archive ends at LSN %d, beyond this WAL's durable end %d: "+
			"the archive holds another history (use another lineage)", ar.opts.Lineage, last, durable)
	case ar.opts.Copied != nil && last > max(ckptPos, ar.opts.Copied()):
		return resume{}, fmt.Errorf("archive: lineage %q in the archive ends at LSN %d (segment %s), beyond both this node's archive checkpoint (LSN %d) and what it copied from the archive when it took over (LSN %d): "+
			"another writer stored it after this node took over (a replaced leader's late put); its transactions are not this log's: remove that segment after checking (walreplay inspect)",
			ar.opts.Lineage, last, seg.Key, ckptPos, ar.opts.Copied())
	case last > ckptPos:
		// Stored before a crash that prevented the checkpoint update.
		if err := ar.ckpts.Set(ctx, CheckpointName, last, []byte(node)); err != nil {
			return resume{}, err
		}
	case last < ckptPos:
		ar.log.Warn("archive: archive ends before the archive checkpoint; re-archiving the difference",
			"lineage", ar.opts.Lineage, "archive_last_lsn", last, "checkpoint", ckptPos)
	}
	if found {
		ar.mu.Lock()
		ar.mu.stats.ArchivedLSN, ar.mu.stats.ArchivedCommitTime = last, seg.LastCommitTime
		ar.mu.Unlock()
		if ar.opts.Stored != nil {
			ar.opts.Stored(last)
		}
		return resume{from: last + 1, strict: true}, nil
	}
	if ckptPos > 0 {
		ar.log.Warn("archive: lineage is empty in the archive but the checkpoint says it was archived; archiving from the start of the local WAL",
			"lineage", ar.opts.Lineage, "checkpoint", ckptPos)
	}
	return resume{from: 1}, nil
}

// readLoop reads the log's durable transactions from rs.from on, with
// their records undecoded (wal.Reader.NextRaw): the segment plaintext
// holds the log's record bytes as they are. Only each transaction's header
// fields and logical messages are looked at.
func (ar *Archiver) readLoop(ctx context.Context, rs resume, out chan<- *archive.RawTxn) error {
	from := rs.from
	if fl := ar.w.FirstLSN(); from < fl {
		if rs.strict {
			return fmt.Errorf("archive: the archive of lineage %q ends at LSN %d but the local WAL now starts at LSN %d: "+
				"LSNs %d..%d would be missing from the archive; refusing to leave a hole",
				ar.opts.Lineage, from-1, fl, from, fl-1)
		}
		// Not strict: start at the first whole transaction retention kept.
		from = fl
	}
	r, err := ar.w.NewReader(from, true)
	if err != nil {
		return fmt.Errorf("archive: open WAL reader at LSN %d: %w", from, err)
	}
	defer r.Close()
	for {
		raw, err := r.NextRaw(ctx)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("archive: WAL reader ended unexpectedly: %w", err)
			}
			return fmt.Errorf("archive: read WAL: %w", err)
		}
		cur, err := archive.NewRawTxn(raw.FirstLSN, raw.CommitLSN, raw.CommitTime, raw.Records)
		if err != nil {
			return err
		}
		if err := waitThrough(ctx, ar.opts.Through, raw.CommitLSN); err != nil {
			return err
		}
		now := time.Now()
		ar.mu.Lock()
		if n := len(ar.mu.seen); n == 0 || now.Sub(ar.mu.seen[n-1].at) >= seenSampleEvery {
			ar.mu.seen = append(ar.mu.seen, seenMark{lsn: raw.CommitLSN, at: now})
		}
		ar.mu.Unlock()
		select {
		case out <- cur:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// buildLoop puts transactions into segments, closing one when it reaches
// MaxObjectBytes or Timeout/4 after its first transaction arrived.
func (ar *Archiver) buildLoop(ctx context.Context, from uint64, in <-chan *archive.RawTxn, out chan<- *archive.SegmentBuilder) error {
	flushAfter := ar.opts.Timeout / 4
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	capHint := ar.opts.MaxObjectBytes + ar.opts.MaxObjectBytes/8
	b := archive.NewSegmentBuilder(ar.opts.Lineage, from, capHint)
	flush := func() error {
		timer.Stop()
		done := b
		b = archive.NewSegmentBuilder(ar.opts.Lineage, done.LastLSN()+1, capHint)
		select {
		case out <- done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for {
		var tick <-chan time.Time
		if !b.Empty() {
			tick = timer.C
		}
		select {
		case t, ok := <-in:
			if !ok {
				return nil
			}
			if b.Empty() {
				timer.Reset(flushAfter)
			}
			if err := b.AddRaw(t); err != nil {
				return err
			}
			if b.Size() >= ar.opts.MaxObjectBytes {
				if err := flush(); err != nil {
					return err
				}
			}
		case <-tick:
			if err := flush(); err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// storeBackoff spaces the upload loop's own retries, which never give up:
// from 50 ms up to 5 s.
var storeBackoff = archive.RetryPolicy{Initial: 50 * time.Millisecond, Max: 5 * time.Second}

func (ar *Archiver) uploadLoop(ctx context.Context, node string, in <-chan *archive.EncodedSegment) error {
	for enc := range in {
		var m archive.SegmentManifest
		for attempt := 1; ; attempt++ {
			var err error
			m, err = ar.a.StoreSegment(ctx, enc)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, archive.ErrExists) || errors.Is(err, archive.ErrInvalidKey) || errors.Is(err, archive.ErrGateClosed) {
				return err
			}
			ar.backend.Fail(err)
			ar.noteError("store object", enc.Manifest.Key, attempt, err)
			if err := sleepCtx(ctx, storeBackoff.Backoff(attempt)); err != nil {
				return err
			}
		}
		for attempt := 1; ; attempt++ {
			err := ar.ckpts.Set(ctx, CheckpointName, m.LastLSN, []byte(node))
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			ar.noteError("advance checkpoint", CheckpointName, attempt, err)
			if err := sleepCtx(ctx, storeBackoff.Backoff(attempt)); err != nil {
				return err
			}
		}
		ar.mu.Lock()
		st := &ar.mu.stats
		st.ArchivedLSN, st.ArchivedCommitTime = m.LastLSN, m.LastCommitTime
		st.Objects++
		ar.backend.OK()
		ar.mu.progress = time.Now()
		st.Bytes += uint64(m.Size)
		st.RawBytes += uint64(m.RawSize)
		i := 0
		for i < len(ar.mu.seen) && ar.mu.seen[i].lsn <= m.LastLSN {
			i++
		}
		ar.mu.seen = append(ar.mu.seen[:0], ar.mu.seen[i:]...)
		ar.mu.Unlock()
		if ar.opts.Stored != nil {
			ar.opts.Stored(m.LastLSN)
		}
	}
	return ctx.Err()
}

func (ar *Archiver) noteError(what, key string, attempt int, err error) {
	ar.mu.Lock()
	ar.mu.stats.Errors++
	ar.mu.stats.LastError = err.Error()
	now := time.Now()
	if now.Sub(ar.mu.lastLog) < errorLogEvery {
		ar.mu.suppressed++
		ar.mu.Unlock()
		return
	}
	sup := ar.mu.suppressed
	ar.mu.lastLog, ar.mu.suppressed = now, 0
	ar.mu.Unlock()
	ar.log.Error("archive: "+what+" failed; retrying", "key", key, "attempt", attempt, "err", err, "suppressed", sup)
}

// throughPoll is the longest wait between two reads of a Through bound
// that holds a transaction back; the first ones come sooner.
const throughPoll = 50 * time.Millisecond

// waitThrough returns once through (if not nil) reaches lsn, or ctx ends.
// Through is a plain function with no notification, so it is polled,
// backing off from 1ms to throughPoll.
func waitThrough(ctx context.Context, through func() uint64, lsn uint64) error {
	if through == nil {
		return nil
	}
	for d := time.Millisecond; through() < lsn; d = min(2*d, throughPoll) {
		if err := sleepCtx(ctx, d); err != nil {
			return err
		}
	}
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
