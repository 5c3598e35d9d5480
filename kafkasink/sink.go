package kafkasink

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/walship/walship/change"
	"github.com/walship/walship/checkpoint"
	"github.com/walship/walship/internal/health"
	"github.com/walship/walship/kafkawire"
	"github.com/walship/walship/wal"
)

// flushGrace bounds how long Run, once its context ends, keeps waiting for
// records already handed to the producer, so their acknowledgements still
// reach the checkpoint.
const flushGrace = 5 * time.Second

// Stats is a snapshot of a Sink's progress.
type Stats struct {
	// AckedLSN is the watermark: every LSN up to it is acknowledged by the
	// brokers (docs/DESIGN.md §4.6). CheckpointLSN is the part of it that is
	// durable in the checkpoint store.
	AckedLSN, CheckpointLSN uint64
	// DurableLSN is the WAL's last durable LSN.
	DurableLSN uint64
	// LagRecords is DurableLSN - AckedLSN; LagSeconds the age of the oldest
	// commit not yet acknowledged (0 when caught up).
	LagRecords uint64
	LagSeconds float64
	// Records and Bytes produced (acknowledged). InFlight is the LSNs
	// handed to the producer that the watermark has not passed: those of
	// the records in its buffer (at most MaxBufferedRecords), those
	// acknowledged behind one that is not (tables mode acknowledges out
	// of order), and the changes of the job being produced, whose LSNs are
	// issued together before its first record.
	Records, Bytes uint64
	InFlight       int
	// Retries counts failed broker connections and writes (each is
	// retried); Errors counts records failed for good (each ends Run).
	Retries, Errors uint64
	// Brokers is the brokers' health as the producer sees it: every
	// connection, write and probe (each probeInterval while Run runs)
	// reports to it.
	Brokers health.State
}

// Sink ships the WAL to Kafka. Create it with New, run it with Run.
type Sink struct {
	cfg     Options
	w       *wal.WAL
	ckpts   *checkpoint.Store
	lineage string
	log     *slog.Logger

	wm atomic.Pointer[watermark]
	// committed is, with a TransactionalID, the highest commit LSN every
	// LSN up to which is in committed Kafka transactions: it, not the
	// watermark, is what the sink reports shipped.
	committed atomic.Uint64
	ckptLSN   atomic.Uint64
	records   atomic.Uint64
	bytes     atomic.Uint64
	retries   atomic.Uint64
	errs      atomic.Uint64
	connErr   atomic.Pointer[error]
	running   atomic.Bool
	brokers   health.Tracker
	// oldest caches the commit time of the first transaction after a
	// watermark position, read from the WAL (see Stats).
	oldest atomic.Pointer[oldestAfter]
}

type oldestAfter struct {
	pos  uint64
	time time.Time
}

// probeInterval is how often Run checks that a broker answers, so that an
// idle sink notices an outage and a stuck one its end.
const probeInterval = 2 * time.Second

// New validates cfg and registers the "kafka" checkpoint in ckpts, so that
// retention holds the local log until the sink has shipped it. It does no
// network I/O.
func New(cfg Options, w *wal.WAL, ckpts *checkpoint.Store, lineage string) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if w == nil || ckpts == nil {
		return nil, errors.New("kafkasink: New needs a WAL and a checkpoint store")
	}
	if err := ckpts.Register(CheckpointName); err != nil {
		return nil, fmt.Errorf("kafkasink: %w", err)
	}
	s := &Sink{cfg: cfg, w: w, ckpts: ckpts, lineage: lineage, log: cfg.Logger.With("component", "kafkasink")}
	pos := uint64(0)
	if c, ok := ckpts.Get(CheckpointName); ok {
		pos = c.Pos
	}
	s.ckptLSN.Store(pos)
	s.committed.Store(pos)
	s.wm.Store(newWatermark(pos))
	return s, nil
}

// Stats returns a snapshot of the sink's progress. It is safe to call at
// any time, concurrently with Run.
func (s *Sink) Stats() Stats {
	pos, posTime, inFlight, oldest := s.wm.Load().position()
	if s.cfg.TransactionalID != "" {
		// What is acknowledged but not committed is not shipped; the
		// lag runs from the first transaction after the committed one.
		pos, posTime, oldest = s.committed.Load(), time.Time{}, time.Time{}
	}
	st := Stats{
		AckedLSN: pos, CheckpointLSN: s.ckptLSN.Load(), DurableLSN: s.w.Durable(),
		Records: s.records.Load(), Bytes: s.bytes.Load(), InFlight: inFlight,
		Retries: s.retries.Load(), Errors: s.errs.Load(),
	}
	st.Brokers = s.brokers.State()
	if st.DurableLSN > pos {
		st.LagRecords = st.DurableLSN - pos
		if oldest.IsZero() {
			// Nothing in flight: the oldest transaction not shipped is
			// the one after the watermark, not read yet (the brokers
			// may be down since start-up).
			oldest = s.commitTimeAfter(pos, posTime)
		}
		if !oldest.IsZero() {
			st.LagSeconds = max(time.Since(oldest).Seconds(), 0)
		}
	}
	return st
}

// commitTimeAfter returns the commit time of the first transaction after
// pos, read from the WAL once per pos; on a read error, posTime (the
// commit before it: an upper bound of the lag).
func (s *Sink) commitTimeAfter(pos uint64, posTime time.Time) time.Time {
	if c := s.oldest.Load(); c != nil && c.pos == pos {
		return c.time
	}
	t, ok, err := s.w.CommitTimeAfter(pos)
	if err != nil {
		return posTime
	}
	if ok {
		s.oldest.Store(&oldestAfter{pos: pos, time: t})
	}
	return t
}

// probe pings the brokers every probeInterval until ctx ends and records
// the outcome in the brokers' health.
func (s *Sink) probe(ctx context.Context, cl *kgo.Client) {
	t := time.NewTicker(probeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, probeInterval*2)
		err := cl.Ping(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		s.brokers.Fail(err)
	}
}

// Run ships transactions from the checkpoint on until ctx ends or a record
// fails for good, and returns that error (nil-equivalent: ctx's error).
//
// It reads only durable transactions (as wal.NewReader in follow mode), starting
// at the transaction after the checkpoint (a commit LSN), so a restart may
// send again records that were acknowledged beyond it; consumers
// deduplicate by the walship.lsn header. The checkpoint "kafka" advances,
// at most every CheckpointInterval, to the contiguous watermark of
// acknowledged records. At most MaxBufferedRecords records are in the
// producer and 2048 encoded changes wait for it: when the brokers are
// unreachable Produce blocks, reading stops and the backlog stays in the
// local WAL. Broker errors are retried without end;
// a record failed for good (e.g. too large, not authorized) ends Run. On
// return the producer has been flushed for up to 5 s and the last
// watermark checkpointed. Run must not be called twice at once.
func (s *Sink) Run(ctx context.Context) (err error) {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("kafkasink: Run is already running")
	}
	defer s.running.Store(false)

	pos := uint64(0)
	if c, ok := s.ckpts.Get(CheckpointName); ok {
		pos = c.Pos
	}
	wm := newWatermark(pos)
	s.wm.Store(wm)
	s.ckptLSN.Store(pos)
	s.committed.Store(pos)
	var tx *txn
	if s.cfg.TransactionalID != "" {
		tx = &txn{id: s.cfg.TransactionalID}
	}

	opts, err := s.clientOptions()
	if err != nil {
		return err
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("kafkasink: %w", err)
	}
	defer cl.Close()
	probeCtx, stopProbe := context.WithCancel(ctx)
	defer stopProbe()
	go s.probe(probeCtx, cl)

	topics := &topicCache{cfg: &s.cfg, adm: kadm.NewClient(cl), log: s.log, known: map[string]bool{}, fatal: s.fatalConnErr}
	if s.cfg.Mode == kafkawire.ModeOrdered {
		if err := topics.ensure(ctx, kafkawire.OrderedTopic(s.cfg.TopicPrefix), 1); err != nil {
			return err
		}
	}
	if s.cfg.TransactionTopic {
		if err := topics.ensure(ctx, kafkawire.TransactionTopic(s.cfg.TopicPrefix), 1); err != nil {
			return err
		}
	}

	rd, err := s.w.NewReader(pos+1, true)
	if err != nil {
		return fmt.Errorf("kafkasink: open WAL reader at %d: %w", pos+1, err)
	}
	rd.ReportAborted()
	defer func() {
		if rd != nil { // replaced when a transaction is produced again
			rd.Close()
		}
	}()

	// runCtx ends on ctx or on the first record failed for good.
	runCtx, cancelRun := context.WithCancelCause(ctx)
	defer cancelRun(nil)
	// produceCtx outlives runCtx by flushGrace so records in flight at
	// shutdown can still be acknowledged and checkpointed.
	produceCtx, cancelProduce := context.WithCancel(context.Background())
	defer cancelProduce()
	stopGrace := context.AfterFunc(runCtx, func() {
		t := time.NewTimer(flushGrace)
		defer t.Stop()
		select {
		case <-t.C:
		case <-produceCtx.Done():
		}
		cancelProduce()
	})
	defer stopGrace()

	var ckWG sync.WaitGroup
	ckErr := make(chan error, 1)
	ckCtx, stopCk := context.WithCancel(context.Background())
	ckWG.Add(1)
	go func() {
		defer ckWG.Done()
		err := s.checkpointLoop(ckCtx, wm)
		if err != nil {
			cancelRun(err)
		}
		ckErr <- err
	}()

	var loopErr error
	for {
		loopErr = s.produceLoop(runCtx, produceCtx, cl, rd, wm, topics, cancelRun, tx)
		var rw *rewindError
		if tx == nil || !errors.As(loopErr, &rw) {
			break
		}
		// The transaction failed: abort it and produce again, from the
		// committed position, after a backoff that grows while
		// transactions keep failing.
		s.retries.Add(1)
		committed := s.committed.Load()
		s.log.Warn("kafka transaction aborted; producing again from the committed position",
			"transactional_id", tx.id, "committed_lsn", committed, "err", rw.cause)
		if loopErr = s.rewindTxn(runCtx, produceCtx, cl, tx); loopErr != nil || runCtx.Err() != nil {
			break
		}
		rd.Close()
		if rd, err = s.w.NewReader(committed+1, true); err != nil {
			loopErr = fmt.Errorf("kafkasink: open WAL reader at %d: %w", committed+1, err)
			break
		}
		rd.ReportAborted()
		wm = newWatermark(committed)
		s.wm.Store(wm)
	}

	// Drain: wait (bounded) for what is in flight (with a transaction:
	// commit or abort it), then a final checkpoint.
	flushCtx, cancelFlush := context.WithTimeout(produceCtx, flushGrace)
	if tx != nil {
		if loopErr == nil {
			if cause := context.Cause(runCtx); cause != nil && !errors.Is(cause, context.Canceled) {
				loopErr = cause
			}
		}
		if ferr := s.finishTxn(flushCtx, cl, wm, tx, loopErr); ferr != nil && (loopErr == nil || errors.Is(loopErr, context.Canceled)) {
			loopErr = ferr
		}
	} else if ferr := cl.Flush(flushCtx); ferr != nil {
		s.log.Warn("kafka flush at shutdown incomplete", "err", ferr)
	}
	cancelFlush()
	stopCk()
	ckWG.Wait()
	if cerr := <-ckErr; cerr != nil && loopErr == nil {
		loopErr = cerr
	}
	if cerr := s.checkpoint(context.Background(), wm); cerr != nil && loopErr == nil {
		loopErr = cerr
	}
	if cause := context.Cause(runCtx); loopErr == nil || errors.Is(loopErr, context.Canceled) {
		if cause != nil && !errors.Is(cause, context.Canceled) {
			loopErr = cause
		}
	}
	if loopErr == nil {
		loopErr = ctx.Err()
	}
	return loopErr
}

func (s *Sink) clientOptions() ([]kgo.Opt, error) {
	opts, err := producerOptions(&s.cfg)
	if err != nil {
		return nil, err
	}
	opts = append(opts, kgo.WithHooks(retryHook{s}))
	if s.cfg.TransactionalID != "" {
		opts = append(opts, kgo.TransactionalID(s.cfg.TransactionalID), kgo.TransactionTimeout(txnTimeout))
	}
	if s.cfg.Mode == kafkawire.ModeOrdered {
		// One partition, and the record says which: order never depends on
		// a partitioner.
		opts = append(opts, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	} else {
		opts = append(opts, kgo.RecordPartitioner(tablesPartitioner))
	}
	return opts, nil
}

// tablesPartitioner places tables-mode records: by key with Kafka's
// murmur2 hashing, as Java clients (per-key order); a record without a key
// by its walship.lsn header, hashed the same way. Either way the partition
// depends on the record alone, so walreplay publish places each record
// where the sink did.
var tablesPartitioner = kgo.BasicConsistentPartitioner(func(topic string) func(*kgo.Record, int) int {
	byKey := kgo.StickyKeyPartitioner(nil).ForTopic(topic) // stateless for keyed records
	return func(r *kgo.Record, n int) int {
		if r.Key == nil {
			return byKey.Partition(&kgo.Record{Key: r.Headers[0].Value}, n) // the encoder's first header
		}
		return byKey.Partition(r, n)
	}
})

// producerOptions are the client settings of the daemon's producer and
// Publisher alike: idempotent, acks from all in-sync replicas, cfg's
// compression, linger, batch size and buffer bound.
func producerOptions(cfg *Options) ([]kgo.Opt, error) {
	opts, err := kafkawire.ClientOptions(cfg.Brokers, cfg.TLS, cfg.SASL)
	if err != nil {
		return nil, err
	}
	codec, _ := compressionCodec(cfg.Compression)
	return append(opts,
		kgo.RequiredAcks(kgo.AllISRAcks()), // idempotence requires acks=all; explicit for the reader
		kgo.ProducerBatchCompression(codec),
		kgo.ProducerLinger(cfg.Linger),
		kgo.ProducerBatchMaxBytes(cfg.MaxBatchBytes),
		kgo.MaxBufferedRecords(cfg.MaxBufferedRecords),
	), nil
}

// produceLoop reads transactions and hands their records to the producer
// until runCtx ends or reading fails. With tx (TransactionalID) it
// produces in transactions and commits them (see txn.go); a
// *rewindError asks Run to abort the open one and produce again.
func (s *Sink) produceLoop(runCtx, produceCtx context.Context, cl *kgo.Client, rd *wal.Reader, wm *watermark, topics *topicCache, fail context.CancelCauseFunc, tx *txn) error {
	jobs := &jobPool{produceCtx: produceCtx, ordered: s.cfg.Mode == kafkawire.ModeOrdered}
	promise := func(r *kgo.Record, err error) {
		// The LSN is the first header (set below): parsing it back costs
		// less than a context per record.
		lsn, _ := strconv.ParseUint(string(r.Headers[0].Value), 10, 64)
		if err != nil {
			if errors.Is(err, context.Canceled) || errors.Is(err, kgo.ErrClientClosed) {
				return // shutdown: not acknowledged, re-sent after restart
			}
			if tx != nil {
				if errors.Is(err, kgo.ErrAborting) {
					return // the sink aborts the transaction
				}
				if isFenced(err) {
					tx.fail(err)
					fail(s.fencedErr(err))
					return
				}
				if isAbortable(err) {
					tx.fail(err) // abort and produce again
					return
				}
			}
			s.errs.Add(1)
			fail(fmt.Errorf("kafkasink: produce lsn %d to %s: %w", lsn, r.Topic, err))
			return
		}
		s.records.Add(1)
		s.bytes.Add(uint64(len(r.Key) + len(r.Value)))
		if pos, moved := wm.ack(lsn); moved && s.cfg.Acked != nil && tx == nil {
			s.cfg.Acked(pos)
		}
		// The client is done with r once its promise is called: the last
		// record of a job returns the job's buffers for reuse. (A record
		// that fails leaves its job to the garbage collector.)
		if jc, ok := r.Context.(*jobCtx); ok && jc.job.unacked.Add(-1) == 0 {
			jobs.put(jc.job)
		}
	}
	// Reading runs in one goroutine, encoding in encodeWorkers more, and
	// producing here, all overlapping. jobs carries the encoded ranges in
	// LSN order as futures; at most encodedJobs of them (of at most
	// encodedJobLen changes each) wait, on top of the producer's
	// MaxBufferedRecords.
	ready := make(chan *encJob, encodedJobs)
	encErr := make(chan error, 1)
	encCtx, stopEnc := context.WithCancel(runCtx)
	go func() {
		defer close(ready)
		encErr <- s.readLoop(encCtx, rd, topics, jobs, ready)
	}()
	defer func() {
		stopEnc()
		for range ready { // let the reader stop
		}
	}()
	for {
		if tx != nil && s.commitDue(tx, len(ready) == 0) {
			if err := s.commitTxn(produceCtx, cl, wm, tx); err != nil {
				return err
			}
		}
		var job *encJob
		select {
		case j, ok := <-ready:
			if !ok {
				return s.readEnd(runCtx, encErr)
			}
			job = j
		case <-runCtx.Done():
			return nil
		}
		select {
		case <-job.done:
		case <-runCtx.Done():
			return nil
		}
		if err := s.gate(); err != nil {
			return err
		}
		if tx != nil {
			if err := tx.err(); err != nil {
				return &rewindError{err}
			}
			if !tx.open {
				if err := s.beginTxn(cl, tx); err != nil {
					return err
				}
			}
		}
		// Every LSN of the job is issued before any of its records is
		// produced: an acknowledgement never precedes its issue.
		if pos, moved := wm.issueAll(job.entries); moved && s.cfg.Acked != nil && tx == nil {
			s.cfg.Acked(pos)
		}
		recs := job.recs
		if tx != nil && len(job.entries) > 0 {
			tx.records += len(recs)
			tx.boundary = job.entries[len(job.entries)-1].commit
		}
		if len(recs) == 0 {
			jobs.put(job)
			continue
		}
		// Once the last record is produced, its promise may have put the
		// job back already: only recs (this slice header) is used below.
		job.unacked.Store(int32(len(recs)))
		for i := range recs {
			if err := s.produce(runCtx, cl, &recs[i], promise); err != nil {
				return nil
			}
		}
	}
}

// readEnd returns the reading goroutine's error once it has stopped.
func (s *Sink) readEnd(runCtx context.Context, encErr <-chan error) error {
	if err := <-encErr; err != nil && runCtx.Err() == nil {
		return err
	}
	return nil
}

// readLoop reads transactions, decides their topics (creating them) and
// hands runs of at most encodedJobLen changes to the encoding workers, and
// the same jobs, in LSN order, to out. A job is handed on when it is full,
// before a topic must be created, and whenever the reader has caught up with
// the durable end of the WAL, so records never wait for more data.
func (s *Sink) readLoop(ctx context.Context, rd *wal.Reader, topics *topicCache, jobs *jobPool, out chan<- *encJob) error {
	workers := min(max(runtime.GOMAXPROCS(0), 1), 4)
	work := make(chan *encJob, encodedJobs)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := newEncodeWorker(&s.cfg, s.lineage)
			for job := range work {
				w.encode(job)
				close(job.done)
			}
		}()
	}
	defer func() {
		close(work)
		wg.Wait()
	}()
	ordered := s.cfg.Mode == kafkawire.ModeOrdered
	var job *encJob
	// flush hands job on; false if ctx ended first.
	flush := func() bool {
		if job == nil {
			return true
		}
		j := job
		job = nil
		select {
		case out <- j:
		case <-ctx.Done():
			return false
		}
		select {
		case work <- j:
			return true
		case <-ctx.Done():
			close(j.done) // nothing of it is produced
			return false
		}
	}
	counts := map[change.Table]int32{}
	var ords []int32
	for {
		txn, err := rd.Next(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("kafkasink: read WAL: %w", err)
		}
		t := txn
		if t.Aborted {
			// An aborted range: one marker in the ordered topic, nothing in
			// tables mode; either way the watermark passes its LSNs.
			if job == nil {
				job = jobs.get()
			}
			job.spans = append(job.spans, span{txn: txn})
			if t.CommitLSN >= s.w.Durable() && !flush() {
				return nil
			}
			continue
		}
		ords = tableOrdinals(ords, t, ordered, counts)
		for i := range t.Changes {
			c := &t.Changes[i]
			topic := ""
			if !ordered {
				topic = changeTopic(false, s.cfg.TopicPrefix, c)
				if topic != "" && !topics.known[topic] {
					if !flush() {
						return nil
					}
					if err := topics.ensure(ctx, topic, s.cfg.Partitions); err != nil {
						if ctx.Err() != nil {
							return nil
						}
						return err
					}
				}
			}
			ord := ords[i]
			if job == nil {
				job = jobs.get()
			}
			if n := len(job.spans); n == 0 || job.spans[n-1].txn != txn {
				job.spans = append(job.spans, span{txn: txn, from: i, to: i})
			}
			job.spans[len(job.spans)-1].to = i + 1
			job.ordinals = append(job.ordinals, ord)
			if !ordered {
				job.topics = append(job.topics, topic)
			}
			if job.len() == encodedJobLen && !flush() {
				return nil
			}
		}
		// Caught up with the durable end: hand the job on now rather than
		// wait in NextTxn with records held back.
		if t.CommitLSN >= s.w.Durable() && !flush() {
			return nil
		}
	}
}

// produce hands rec to the client; it blocks while MaxBufferedRecords are
// in flight (backpressure) and returns runCtx's error if runCtx ends first.
func (s *Sink) produce(runCtx context.Context, cl *kgo.Client, rec *kgo.Record, promise func(*kgo.Record, error)) error {
	if s.cfg.Mode == kafkawire.ModeOrdered {
		rec.Partition = 0
	}
	// A Produce blocked on a full buffer waits on produceCtx, which ends
	// at most flushGrace after runCtx.
	if err := runCtx.Err(); err != nil {
		return err
	}
	cl.Produce(rec.Context, rec, promise)
	return runCtx.Err()
}

// checkpointLoop writes the watermark every CheckpointInterval while it
// moves, until ctx ends.
func (s *Sink) checkpointLoop(ctx context.Context, wm *watermark) error {
	t := time.NewTicker(s.cfg.CheckpointInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := s.checkpoint(ctx, wm); err != nil && ctx.Err() == nil {
				return err
			}
			if err := s.fatalConnErr(); err != nil {
				return err
			}
		}
	}
}

func (s *Sink) checkpoint(ctx context.Context, wm *watermark) error {
	pos, _, _, _ := wm.position()
	if s.cfg.TransactionalID != "" {
		pos = s.committed.Load()
	}
	if pos <= s.ckptLSN.Load() {
		return nil
	}
	if err := s.ckpts.Set(ctx, CheckpointName, pos, nil); err != nil {
		return fmt.Errorf("kafkasink: checkpoint %d: %w", pos, err)
	}
	s.ckptLSN.Store(pos)
	return nil
}
