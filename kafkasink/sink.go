package kafkasink

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/walship/walship/change"
	"github.com/walship/walship/checkpoint"
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
}

// Sink ships the WAL to Kafka. Create it with New, run it with Run.
type Sink struct {
	cfg     Config
	w       *wal.WAL
	ckpts   *checkpoint.Store
	lineage string
	log     *slog.Logger

	wm      atomic.Pointer[watermark]
	ckptLSN atomic.Uint64
	records atomic.Uint64
	bytes   atomic.Uint64
	retries atomic.Uint64
	errs    atomic.Uint64
	connErr atomic.Pointer[error]
	running atomic.Bool
}

// New validates cfg and registers the "kafka" checkpoint in ckpts, so that
// retention holds the local log until the sink has shipped it. It does no
// network I/O.
func New(cfg Config, w *wal.WAL, ckpts *checkpoint.Store, lineage string) (*Sink, error) {
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
	s.wm.Store(newWatermark(pos))
	return s, nil
}

// Stats returns a snapshot of the sink's progress. It is safe to call at
// any time, concurrently with Run.
func (s *Sink) Stats() Stats {
	pos, posTime, inFlight, oldest := s.wm.Load().position()
	st := Stats{
		AckedLSN: pos, CheckpointLSN: s.ckptLSN.Load(), DurableLSN: s.w.Durable(),
		Records: s.records.Load(), Bytes: s.bytes.Load(), InFlight: inFlight,
		Retries: s.retries.Load(), Errors: s.errs.Load(),
	}
	if st.DurableLSN > pos {
		st.LagRecords = st.DurableLSN - pos
		switch {
		case !oldest.IsZero():
			st.LagSeconds = time.Since(oldest).Seconds()
		case !posTime.IsZero():
			st.LagSeconds = time.Since(posTime).Seconds()
		}
		st.LagSeconds = max(st.LagSeconds, 0)
	}
	return st
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

	opts, err := s.clientOptions()
	if err != nil {
		return err
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("kafkasink: %w", err)
	}
	defer cl.Close()

	topics := &topicCache{cfg: &s.cfg, adm: kadm.NewClient(cl), log: s.log, known: map[string]bool{}, fatal: s.fatalConnErr}
	if s.cfg.Mode == ModeOrdered {
		if err := topics.ensure(ctx, OrderedTopic(s.cfg.TopicPrefix), 1); err != nil {
			return err
		}
	}

	rd, err := newTxnReader(s.w.Log, pos+1, true)
	if err != nil {
		return fmt.Errorf("kafkasink: open WAL reader at %d: %w", pos+1, err)
	}
	defer rd.Close()

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

	loopErr := s.produceLoop(runCtx, produceCtx, cl, rd, wm, topics, cancelRun)

	// Drain: wait (bounded) for what is in flight, then a final checkpoint.
	flushCtx, cancelFlush := context.WithTimeout(produceCtx, flushGrace)
	if ferr := cl.Flush(flushCtx); ferr != nil {
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
	opts, err := ClientOptions(s.cfg.Brokers, s.cfg.TLS, s.cfg.SASL)
	if err != nil {
		return nil, err
	}
	codec, _ := compressionCodec(s.cfg.Compression)
	opts = append(opts,
		kgo.RequiredAcks(kgo.AllISRAcks()), // idempotence requires acks=all; explicit for the reader
		kgo.ProducerBatchCompression(codec),
		kgo.ProducerLinger(s.cfg.Linger),
		kgo.ProducerBatchMaxBytes(s.cfg.MaxBatchBytes),
		kgo.MaxBufferedRecords(s.cfg.MaxBufferedRecords),
		kgo.WithHooks(retryHook{s}),
	)
	if s.cfg.Mode == ModeOrdered {
		// One partition, and the record says which: order never depends on
		// a partitioner.
		opts = append(opts, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	} else {
		// Kafka's murmur2 key hashing, as Java clients: per-key order.
		opts = append(opts, kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)))
	}
	return opts, nil
}

// produceLoop reads transactions and hands their records to the producer
// until runCtx ends or reading fails.
func (s *Sink) produceLoop(runCtx, produceCtx context.Context, cl *kgo.Client, rd *txnReader, wm *watermark, topics *topicCache, fail context.CancelCauseFunc) error {
	jobs := &jobPool{produceCtx: produceCtx, ordered: s.cfg.Mode == ModeOrdered}
	promise := func(r *kgo.Record, err error) {
		// The LSN is the first header (set below): parsing it back costs
		// less than a context per record.
		lsn, _ := strconv.ParseUint(string(r.Headers[0].Value), 10, 64)
		if err != nil {
			if errors.Is(err, context.Canceled) || errors.Is(err, kgo.ErrClientClosed) {
				return // shutdown: not acknowledged, re-sent after restart
			}
			s.errs.Add(1)
			fail(fmt.Errorf("kafkasink: produce lsn %d to %s: %w", lsn, r.Topic, err))
			return
		}
		s.records.Add(1)
		s.bytes.Add(uint64(len(r.Key) + len(r.Value)))
		wm.ack(lsn)
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
	for job := range ready {
		select {
		case <-job.done:
		case <-runCtx.Done():
			return nil
		}
		// Every LSN of the job is issued before any of its records is
		// produced: an acknowledgement never precedes its issue.
		wm.issueAll(job.entries)
		recs := job.recs
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
	if err := <-encErr; err != nil && runCtx.Err() == nil {
		return err
	}
	return nil
}

// span is a range of one transaction's changes within a job.
type span struct {
	txn      *wal.Txn
	from, to int
}

// encJob is a run of consecutive changes — whole small transactions, or
// a range of a large one — to encode; done is closed when entries and recs
// are ready (empty if the sink stopped first). Batching small transactions
// into one job keeps the channel handoffs and goroutine wake-ups per
// change low.
//
// A job is reused (jobPool) once every record of it is acknowledged, with
// its buffers: the keys, values and header values of its records are carved
// from its chunks, and its records and their headers are elements of its
// slices, so encoding allocates next to nothing once the sink runs.
type encJob struct {
	spans []span
	// Per change of the job, in LSN order: its data_collection_order and
	// (tables mode) its topic, "" for none. In ordered mode topics is nil.
	ordinals []int32
	topics   []string
	done     chan struct{}
	entries  []wmEntry    // one per LSN, in order
	recs     []kgo.Record // in LSN order
	headers  []kgo.RecordHeader
	chunks   [][]byte // chunks[chunk] is being carved from
	chunk    int
	// ctx is every record's Context: the produce context, and the way back
	// from a record to its job in the promise.
	ctx     jobCtx
	unacked atomic.Int32 // records produced and not yet acknowledged
}

func (j *encJob) len() int { return len(j.ordinals) }

// jobCtx is the Context of a job's records.
type jobCtx struct {
	context.Context
	job *encJob
}

// jobPool recycles jobs for one Run.
type jobPool struct {
	pool       sync.Pool
	produceCtx context.Context
	ordered    bool
}

func (p *jobPool) get() *encJob {
	j, _ := p.pool.Get().(*encJob)
	if j == nil {
		j = &encJob{ordinals: make([]int32, 0, encodedJobLen)}
		j.ctx = jobCtx{Context: p.produceCtx, job: j}
		if !p.ordered {
			j.topics = make([]string, 0, encodedJobLen)
		}
	}
	j.done = make(chan struct{})
	return j
}

// put recycles j: no record of it may be in the client any more.
func (p *jobPool) put(j *encJob) {
	clear(j.spans) // a pooled job keeps no transaction alive
	j.spans = j.spans[:0]
	j.ordinals = j.ordinals[:0]
	if j.topics != nil {
		j.topics = j.topics[:0]
	}
	j.entries, j.recs, j.headers = j.entries[:0], j.recs[:0], j.headers[:0]
	j.chunk = 0
	if len(j.chunks) > 0 {
		j.chunks[0] = j.chunks[0][:0]
	}
	p.pool.Put(j)
}

const (
	encodedJobs   = 32
	encodedJobLen = 64
)

// readLoop reads transactions, decides their topics (creating them) and
// hands runs of at most encodedJobLen changes to the encoding workers, and
// the same jobs, in LSN order, to out. A job is handed on when it is full,
// before a topic must be created, and whenever the reader has caught up with
// the durable end of the WAL, so records never wait for more data.
func (s *Sink) readLoop(ctx context.Context, rd *txnReader, topics *topicCache, jobs *jobPool, out chan<- *encJob) error {
	workers := min(max(runtime.GOMAXPROCS(0), 1), 4)
	work := make(chan *encJob, encodedJobs)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := &encodeWorker{s: s, enc: &Encoder{Database: s.cfg.Database, Name: s.cfg.Name, Lineage: s.lineage},
				lineage: []byte(s.lineage), orderedTopic: OrderedTopic(s.cfg.TopicPrefix)}
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
	ordered := s.cfg.Mode == ModeOrdered
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
	for {
		txn, err := rd.next(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("kafkasink: read WAL: %w", err)
		}
		t := txn
		// data_collection_order: small transactions count by scanning,
		// large ones with a map.
		useMap := len(t.Changes) > 16
		if useMap {
			clear(counts)
		}
		for i := range t.Changes {
			c := &t.Changes[i]
			topic := ""
			if !ordered {
				if c.Op == change.Message || c.Table.IsZero() {
					// Tables mode has no topic for logical messages: the
					// LSN passes without a record.
				} else {
					topic = TablesTopic(s.cfg.TopicPrefix, c.Table.Schema, c.Table.Name)
					if !topics.known[topic] {
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
			}
			var ord int32
			if topic != "" || ordered {
				if useMap {
					counts[c.Table]++
					ord = counts[c.Table]
				} else {
					ord = 1
					for k := range i {
						if o := &t.Changes[k]; o.Table == c.Table && (ordered || o.Op != change.Message) {
							ord++
						}
					}
				}
			}
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

// encodeWorker encodes jobs; each worker has its own Encoder.
type encodeWorker struct {
	s            *Sink
	enc          *Encoder
	lineage      []byte
	orderedTopic string
	job          *encJob // being encoded
}

// carve appends with build to the job's current chunk and returns what was
// appended (a full-slice expression: later appends never write into it).
func (w *encodeWorker) carve(build func([]byte) []byte) []byte {
	j := w.job
	if len(j.chunks) == 0 {
		j.chunks = append(j.chunks, make([]byte, 0, chunkSize))
	}
	if c := j.chunks[j.chunk]; cap(c)-len(c) < 2048 {
		j.chunk++
		if j.chunk == len(j.chunks) {
			j.chunks = append(j.chunks, make([]byte, 0, chunkSize))
		}
		j.chunks[j.chunk] = j.chunks[j.chunk][:0]
	}
	c := j.chunks[j.chunk]
	start := len(c)
	c = build(c)
	j.chunks[j.chunk] = c
	return c[start:len(c):len(c)]
}

// encode fills job.entries and job.recs. Records, and the headers of all
// of them, are allocated once per job.
func (w *encodeWorker) encode(job *encJob) {
	w.job = job
	w.enc.nowMS = time.Now().UnixMilli() // ts_ms: the time the job is encoded
	defer func() { w.job = nil }()
	tombstones := *w.s.cfg.Tombstones
	nrecs, nsent := 0, 0
	k := 0
	for _, sp := range job.spans {
		for i := sp.from; i < sp.to; i++ {
			if w.topic(job, k) != "" {
				nsent++
				c := &sp.txn.Changes[i]
				if c.Op == change.Delete && c.Key != nil && tombstones {
					nrecs++
				}
			}
			k++
		}
	}
	nrecs += nsent
	job.entries = slices.Grow(job.entries[:0], job.len())
	job.recs = slices.Grow(job.recs[:0], nrecs)
	// Records point into headers: it must not grow below.
	headers := slices.Grow(job.headers[:0], 4*nsent)
	defer func() { job.headers = headers }()
	k = 0
	for _, sp := range job.spans {
		t := sp.txn
		var hdrCommit, hdrFirst []byte
		for i := sp.from; i < sp.to; i, k = i+1, k+1 {
			c := &t.Changes[i]
			lsn := t.FirstLSN + uint64(i)
			e := wmEntry{lsn: lsn, commit: lsn == t.CommitLSN, commitTime: t.CommitTime}
			topic := w.topic(job, k)
			if topic == "" {
				job.entries = append(job.entries, e)
				continue
			}
			if hdrCommit == nil {
				hdrCommit = w.carve(func(b []byte) []byte { return strconv.AppendUint(b, t.CommitLSN, 10) })
				hdrFirst = w.carve(func(b []byte) []byte { return strconv.AppendUint(b, t.FirstLSN, 10) })
			}
			hasKey := c.Key != nil || c.Op == change.Message
			var key []byte
			if hasKey {
				key = w.carve(func(b []byte) []byte { b, _ = w.enc.AppendKey(b, c); return b })
			}
			value := w.carve(func(b []byte) []byte {
				return w.enc.AppendValue(b, position{txn: t, index: i, tableOrdinal: int(job.ordinals[k])})
			})
			h := len(headers)
			headers = append(headers,
				kgo.RecordHeader{Key: HeaderLSN, Value: w.carve(func(b []byte) []byte { return strconv.AppendUint(b, lsn, 10) })},
				kgo.RecordHeader{Key: HeaderCommitLSN, Value: hdrCommit},
				kgo.RecordHeader{Key: HeaderTxnFirstLSN, Value: hdrFirst},
				kgo.RecordHeader{Key: HeaderLineage, Value: w.lineage},
			)
			hdrs := headers[h:len(headers):len(headers)]
			// The record timestamp is the commit time (non-decreasing in
			// LSN order), which lets consumers seek by time.
			job.recs = append(job.recs, kgo.Record{Topic: topic, Key: key, Value: value, Headers: hdrs, Timestamp: t.CommitTime, Context: &job.ctx})
			e.left = 1
			if c.Op == change.Delete && hasKey && tombstones {
				job.recs = append(job.recs, kgo.Record{Topic: topic, Key: key, Headers: hdrs, Timestamp: t.CommitTime, Context: &job.ctx})
				e.left = 2
			}
			job.entries = append(job.entries, e)
		}
	}
}

// topic returns the topic of the job's k-th change, "" for none.
func (w *encodeWorker) topic(job *encJob, k int) string {
	if job.topics == nil {
		return w.orderedTopic
	}
	return job.topics[k]
}

// produce hands rec to the client; it blocks while MaxBufferedRecords are
// in flight (backpressure) and returns runCtx's error if runCtx ends first.
func (s *Sink) produce(runCtx context.Context, cl *kgo.Client, rec *kgo.Record, promise func(*kgo.Record, error)) error {
	if s.cfg.Mode == ModeOrdered {
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

// chunkSize is the size of the buffers records are carved from.
const chunkSize = 32 << 10

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
	if pos <= s.ckptLSN.Load() {
		return nil
	}
	if err := s.ckpts.Set(ctx, CheckpointName, pos, nil); err != nil {
		return fmt.Errorf("kafkasink: checkpoint %d: %w", pos, err)
	}
	s.ckptLSN.Store(pos)
	return nil
}

// retryHook counts failed broker connections and writes: franz-go retries
// them, and the count shows a broker outage in Stats.
type retryHook struct{ s *Sink }

func (h retryHook) OnBrokerConnect(_ kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	if err != nil {
		h.s.retries.Add(1)
		h.s.connErr.Store(&err)
	} else {
		h.s.connErr.Store(nil)
	}
}

// fatalConnErr returns the last broker connection error if no connection
// has succeeded since and retrying cannot cure it (bad credentials or
// certificates): franz-go retries those like any other, forever.
func (s *Sink) fatalConnErr() error {
	if p := s.connErr.Load(); p != nil && IsFatal(*p) {
		return fmt.Errorf("kafkasink: connect to the brokers: %w", *p)
	}
	return nil
}

func (h retryHook) OnBrokerWrite(_ kgo.BrokerMetadata, _ int16, _ int, _, _ time.Duration, err error) {
	if err != nil {
		h.s.retries.Add(1)
	}
}

// topicCache creates topics on first use.
type topicCache struct {
	cfg   *Config
	adm   *kadm.Client
	log   *slog.Logger
	known map[string]bool
	// fatal returns a connection error that retrying cannot cure, or nil.
	fatal func() error
}

// ensure creates topic with partitions if it does not exist, retrying
// while the brokers are unreachable (until ctx ends). For the ordered
// topic (partitions == 1 in ordered mode) an existing topic with more than
// one partition is an error: it would lose the total order.
func (tc *topicCache) ensure(ctx context.Context, topic string, partitions int32) error {
	if tc.known[topic] {
		return nil
	}
	for attempt := 0; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := tc.tryEnsure(actx, topic, partitions)
		cancel()
		if err != nil && tc.fatal != nil {
			if ferr := tc.fatal(); ferr != nil {
				return ferr
			}
		}
		if err == nil {
			tc.known[topic] = true
			return nil
		}
		var fatal *fatalTopicError
		if errors.As(err, &fatal) {
			return err
		}
		if attempt%10 == 0 {
			tc.log.Warn("kafka topic not ready; retrying", "topic", topic, "err", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// IsFatal reports errors that retrying cannot cure: authentication,
// authorization, certificates, invalid topic names, a session timeout the
// broker refuses. The consumer uses it too.
func IsFatal(err error) bool {
	var verr *tls.CertificateVerificationError
	var uerr x509.UnknownAuthorityError
	var herr x509.HostnameError
	for _, e := range []error{kerr.SaslAuthenticationFailed, kerr.UnsupportedSaslMechanism, kerr.IllegalSaslState,
		kerr.TopicAuthorizationFailed, kerr.ClusterAuthorizationFailed, kerr.GroupAuthorizationFailed,
		kerr.InvalidTopicException, kerr.InvalidSessionTimeout} {
		if errors.Is(err, e) {
			return true
		}
	}
	return errors.As(err, &verr) || errors.As(err, &uerr) || errors.As(err, &herr)
}

type fatalTopicError struct{ err error }

func (e *fatalTopicError) Error() string { return e.err.Error() }
func (e *fatalTopicError) Unwrap() error { return e.err }

func (tc *topicCache) tryEnsure(ctx context.Context, topic string, partitions int32) error {
	resp, err := tc.adm.CreateTopic(ctx, partitions, tc.cfg.ReplicationFactor, nil, topic)
	if err == nil {
		err = resp.Err
	}
	switch {
	case err == nil:
		tc.log.Info("created kafka topic", "topic", topic, "partitions", partitions)
	case errors.Is(err, kerr.TopicAlreadyExists):
	default:
		if IsFatal(err) {
			return &fatalTopicError{fmt.Errorf("kafkasink: create topic %s: %w", topic, err)}
		}
		return fmt.Errorf("kafkasink: create topic %s: %w", topic, err)
	}
	if tc.cfg.Mode != ModeOrdered {
		return nil
	}
	details, err := tc.adm.ListTopics(ctx, topic)
	if err != nil {
		return err
	}
	d, ok := details[topic]
	if !ok || d.Err != nil {
		return fmt.Errorf("kafkasink: describe topic %s: %v", topic, d.Err)
	}
	if n := len(d.Partitions); n != 1 {
		return &fatalTopicError{fmt.Errorf("kafka.mode ordered: topic %s has %d partitions; the total order needs exactly 1", topic, n)}
	}
	return nil
}
