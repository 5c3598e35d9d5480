package main

// Suite kafka: the Kafka sink and the replay consumer against a
// bare franz-go producer, all on one in-process broker (kfake) started for
// the run. See README.md.
//
// The produce comparison is kept fair: both producers use the sink's
// default client settings (producerOpts: zstd, 5 ms linger, 1 MiB batches,
// 10000 records buffered, idempotent, acks=all, one partition) and the same
// record bytes, and both clocks run from before the client is created to
// the last acknowledgement (connecting and creating the topic included; the
// sink's Run does both). The sink's figure also includes reading and
// decoding the WAL and encoding the envelopes, which the bare producer gets
// prebuilt. On a loaded 2-core machine the ratio follows mostly the CPU
// each side spends per record; compare medians of several repetitions.
//
// kafka/sink-produce-txn is the sink in transactional mode (HA), timed to
// its last commit and compared with the plain sink.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/walship/walship/change"
	"github.com/walship/walship/checkpoint"
	"github.com/walship/walship/consumer"
	"github.com/walship/walship/internal/pgtest"
	"github.com/walship/walship/kafkasink"
	"github.com/walship/walship/kafkasink/kafkatest"
	"github.com/walship/walship/kafkawire"
	"github.com/walship/walship/vfs"
	"github.com/walship/walship/wal"
)

const (
	kBareName     = "kafka/bare-produce"
	kSinkName     = "kafka/sink-produce"
	kSinkTxnName  = "kafka/sink-produce-txn"
	kSQLiteName   = "kafka/apply-sqlite"
	kPGName       = "kafka/apply-postgres"
	kLagName      = "kafka/e2e-lag-5k"
	kLagRate      = 5000 // changes/s
	mLagP50       = "lag_p50_ms"
	mLagP95       = "lag_p95_ms"
	mLagP999      = "lag_p999_ms"
	mChangesTotal = "changes"
)

func init() { register("kafka", kafkaSuite) }

func kafkaSuite() *suite {
	return &suite{
		name:    "kafka",
		summary: "Kafka sink vs bare franz-go producer; replay apply into SQLite/PostgreSQL; commit-to-apply lag; commit-to-acknowledgement per replication level",
		cases:   kafkaCases,
		targets: kafkaTargets,
	}
}

// kafkaBench is the state shared by the suite's cases: one broker, one
// prebuilt WAL and its records, one topic filled for the apply cases.
type kafkaBench struct {
	cfg              *config
	dir              string
	cluster          *kafkatest.Cluster
	w                *wal.WAL
	records          []*kgo.Record // what the sink sends for the WAL's transactions
	changes          int
	last             uint64
	applyTopicPrefix string
	pg               *pgtest.Cluster
	seq              atomic.Int64
}

func kafkaCases(cfg *config) []*benchCase {
	b := &kafkaBench{cfg: cfg}
	n := 20000 // transactions of 1-5 changes: ~60k changes
	if cfg.quick {
		n = 2000
	}
	setupOnce := sync.OnceValue(func() error { return b.setup(context.Background(), n) })
	setup := func(context.Context) error { return setupOnce() }
	cleanup := sync.OnceFunc(b.cleanup)
	return append([]*benchCase{
		{name: kBareName, primary: mRecordsPerSec, setup: setup, cleanup: cleanup,
			run: b.bareProduce},
		{name: kSinkName, primary: mRecordsPerSec, setup: setup, cleanup: cleanup,
			compare: []comparison{{metric: mRecordsPerSec, base: kBareName, baseMetric: mRecordsPerSec}},
			run:     b.sinkProduce},
		{name: kSinkTxnName, primary: mRecordsPerSec, setup: setup, cleanup: cleanup,
			compare: []comparison{{metric: mRecordsPerSec, base: kSinkName, baseMetric: mRecordsPerSec}},
			run:     b.sinkProduceTxn},
		{name: kSQLiteName, primary: mRecordsPerSec, extra: []string{mChangesTotal}, setup: setup, cleanup: cleanup,
			run: func(ctx context.Context) (sample, error) { return b.apply(ctx, "sqlite") }},
		{name: kPGName, primary: mRecordsPerSec, extra: []string{mChangesTotal}, setup: setup, cleanup: cleanup,
			run: func(ctx context.Context) (sample, error) { return b.apply(ctx, "postgres") }},
		{name: kLagName, primary: mMillis, extra: []string{mLagP50, mLagP95, mLagP999}, setup: setup, cleanup: cleanup,
			run: b.lag},
	}, levelCases(cfg)...)
}

func (b *kafkaBench) setup(ctx context.Context, n int) error {
	var err error
	if b.dir, err = b.cfg.tempDir("kafka"); err != nil {
		return err
	}
	// PostgreSQL runs as the postgres user when we are root: its cluster
	// directory below b.dir must be reachable.
	if err := os.Chmod(b.dir, 0o755); err != nil {
		return err
	}
	if b.cluster, err = kafkatest.Start(); err != nil {
		return err
	}
	if b.w, _, err = wal.Open(wal.Options{Dir: filepath.Join(b.dir, "wal")}); err != nil {
		return err
	}
	wl := kafkatest.NewWorkload(42)
	wl.NoKinds = true
	var last uint64
	for range n {
		txn := wl.Next()
		t, err := b.w.AppendAsync(ctx, &txn)
		if err != nil {
			return err
		}
		last = t.Last
	}
	if err := b.w.Wait(ctx, last); err != nil {
		return err
	}
	rd, err := b.w.NewReader(1, false)
	if err != nil {
		return err
	}
	defer rd.Close()
	// Only the records stay: the decoded transactions would be live heap
	// every garbage collection during the timed cases marks for nothing.
	enc := &kafkawire.Encoder{Database: "bench", Name: "walship", Lineage: "bench"}
	read := 0
	for {
		t, err := rd.Next(ctx)
		if err != nil {
			break
		}
		read++
		b.changes += len(t.Changes)
		b.last = t.CommitLSN
		b.records = append(b.records, enc.OrderedRecords(t, "bare", true)...)
	}
	if read != n {
		return fmt.Errorf("read %d of %d transactions back", read, n)
	}
	// The topic the apply cases read: shipped once by the sink.
	b.applyTopicPrefix = "apply"
	if _, err := b.ship(ctx, b.applyTopicPrefix, ""); err != nil {
		return err
	}
	b.pg, err = pgtest.New(filepath.Join(b.dir, "pg"), pgtest.WithoutFsync())
	if err != nil {
		return fmt.Errorf("postgres: %w (run scripts/deps.sh)", err)
	}
	return nil
}

func (b *kafkaBench) cleanup() {
	if b.pg != nil {
		b.pg.Close()
	}
	if b.w != nil {
		b.w.Close()
	}
	if b.cluster != nil {
		b.cluster.Close()
	}
	if b.dir != "" {
		os.RemoveAll(b.dir)
	}
}

// producerOpts are the client options of both producers: the sink's
// defaults (zstd, 5ms linger, 1 MiB batches, 10000 records buffered,
// idempotent, acks=all).
func (b *kafkaBench) producerOpts() []kgo.Opt {
	return []kgo.Opt{
		kgo.SeedBrokers(b.cluster.Addr), kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerBatchCompression(kgo.ZstdCompression()), kgo.ProducerLinger(kafkasink.DefaultLinger),
		kgo.ProducerBatchMaxBytes(kafkasink.DefaultMaxBatchBytes), kgo.MaxBufferedRecords(kafkasink.DefaultMaxBufferedRecords),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
	}
}

// bareProduce sends the sink's records (prebuilt, same bytes) with a bare
// franz-go producer and the sink's client settings. Its clock, like the
// sink's (ship), runs from before the client is created — connecting and
// creating the topic included — to the last acknowledgement: the sink's
// Run does both inside its timing, and leaving them out of the bare
// producer's alone favoured it by a fixed 10-50 ms per ~70k records.
func (b *kafkaBench) bareProduce(ctx context.Context) (sample, error) {
	start := time.Now()
	cl, err := kgo.NewClient(b.producerOpts()...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	topic := fmt.Sprintf("bare%d.ordered", b.seq.Add(1))
	if err := createTopic(ctx, cl, topic); err != nil {
		return nil, err
	}
	var failed atomic.Pointer[error]
	var wg sync.WaitGroup
	for _, r := range b.records {
		rec := &kgo.Record{Topic: topic, Key: r.Key, Value: r.Value, Headers: r.Headers, Timestamp: r.Timestamp, Partition: 0}
		wg.Add(1)
		cl.Produce(ctx, rec, func(_ *kgo.Record, err error) {
			if err != nil {
				failed.Store(&err)
			}
			wg.Done()
		})
	}
	wg.Wait()
	took := time.Since(start)
	if p := failed.Load(); p != nil {
		return nil, *p
	}
	return sample{mRecordsPerSec: float64(len(b.records)) / took.Seconds()}, nil
}

// ship runs a sink over the prebuilt WAL to topic prefix until every LSN is
// acknowledged (with a transactional id: committed) and returns how long
// that took.
func (b *kafkaBench) ship(ctx context.Context, prefix, txnID string) (time.Duration, error) {
	ckdir, err := os.MkdirTemp(b.dir, "ckpt-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(ckdir)
	ck, err := checkpoint.Open(ctx, vfs.Default, ckdir, checkpoint.Options{})
	if err != nil {
		return 0, err
	}
	s, err := kafkasink.New(kafkasink.Options{Brokers: []string{b.cluster.Addr}, TopicPrefix: prefix, Database: "bench", Logger: b.cfg.logger,
		TransactionalID: txnID}, b.w, ck, "bench")
	if err != nil {
		return 0, err
	}
	rctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	start := time.Now()
	go func() { errc <- s.Run(rctx) }()
	defer func() { cancel(); <-errc }()
	for s.Stats().AckedLSN < b.last {
		select {
		case err := <-errc:
			errc <- err
			return 0, fmt.Errorf("sink stopped: %w", err)
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
	return time.Since(start), nil
}

func (b *kafkaBench) sinkProduce(ctx context.Context) (sample, error) {
	took, err := b.ship(ctx, fmt.Sprintf("sink%d", b.seq.Add(1)), "")
	if err != nil {
		return nil, err
	}
	return sample{mRecordsPerSec: float64(len(b.records)) / took.Seconds()}, nil
}

// sinkProduceTxn is sinkProduce in transactional mode (the HA leader's
// sink): the clock stops when the last transaction is committed.
func (b *kafkaBench) sinkProduceTxn(ctx context.Context) (sample, error) {
	prefix := fmt.Sprintf("sinktxn%d", b.seq.Add(1))
	took, err := b.ship(ctx, prefix, kafkawire.OrderedTopic(prefix))
	if err != nil {
		return nil, err
	}
	return sample{mRecordsPerSec: float64(len(b.records)) / took.Seconds()}, nil
}

// apply replays the apply topic into a fresh replica with a fresh group and
// reports changes applied per second (Kafka fetch and decode included).
func (b *kafkaBench) apply(ctx context.Context, kind string) (sample, error) {
	id := b.seq.Add(1)
	var url string
	if kind == "sqlite" {
		url = "sqlite://" + filepath.Join(b.dir, fmt.Sprintf("replica%d.db", id))
		defer os.Remove(url[len("sqlite://"):])
	} else {
		db := fmt.Sprintf("replica%d", id)
		if err := b.pg.CreateDB(ctx, db); err != nil {
			return nil, err
		}
		url = b.pg.DSN(db)
	}
	// The rate is taken from the end of the first batch to the end of the
	// last: group join and the start-offset lookup are not apply work.
	var first time.Time
	var firstChanges, total int
	var lastAt time.Time
	var mu sync.Mutex
	c, err := consumer.New(ctx, consumer.Options{Brokers: []string{b.cluster.Addr}, TopicPrefix: b.applyTopicPrefix,
		Group: fmt.Sprintf("bench%d", id), ReplicaURL: url, Logger: b.cfg.logger,
		OnApplied: func(txns []change.Committed) {
			n := 0
			for i := range txns {
				n += len(txns[i].Changes)
			}
			mu.Lock()
			defer mu.Unlock()
			if first.IsZero() {
				first, firstChanges = time.Now(), n
			}
			total += n
			lastAt = time.Now()
		}})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	rctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	start := time.Now()
	go func() { errc <- c.Run(rctx) }()
	werr := waitOrFail(ctx, c, b.last, errc)
	cancel()
	if werr != nil {
		return nil, werr
	}
	<-errc
	mu.Lock()
	defer mu.Unlock()
	if total != b.changes {
		return nil, fmt.Errorf("applied %d changes, want %d", total, b.changes)
	}
	// With one batch (a small --quick topic) there is no steady state:
	// take the whole run, group join included.
	rate := float64(total) / lastAt.Sub(start).Seconds()
	if d := lastAt.Sub(first); d > 0 && total > firstChanges {
		rate = float64(total-firstChanges) / d.Seconds()
	}
	return sample{mRecordsPerSec: rate, mChangesTotal: float64(total)}, nil
}

func waitOrFail(ctx context.Context, c *consumer.Consumer, lsn uint64, errc chan error) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case err := <-errc:
			errc <- err
			cancel()
		case <-wctx.Done():
		}
	}()
	if err := c.WaitApplied(wctx, lsn); err != nil {
		select {
		case err := <-errc:
			errc <- err
			return fmt.Errorf("consumer stopped: %w", err)
		default:
		}
		return err
	}
	return nil
}

// lag runs the whole pipeline at a steady kLagRate changes/s — appends to
// a fresh WAL (fsync on), the sink, the consumer into SQLite — and reports
// percentiles of the time from each transaction's source commit time to its
// apply.
func (b *kafkaBench) lag(ctx context.Context) (sample, error) {
	id := b.seq.Add(1)
	dir, err := os.MkdirTemp(b.dir, "lag-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	w, _, err := wal.Open(wal.Options{Dir: filepath.Join(dir, "wal")})
	if err != nil {
		return nil, err
	}
	defer w.Close()
	ck, err := checkpoint.Open(ctx, vfs.Default, filepath.Join(dir, "ckpt"), checkpoint.Options{})
	if err != nil {
		return nil, err
	}
	prefix := fmt.Sprintf("lag%d", id)
	// Linger 1ms: at 5,000 changes/s batches fill slowly; latency matters.
	s, err := kafkasink.New(kafkasink.Options{Brokers: []string{b.cluster.Addr}, TopicPrefix: prefix, Linger: time.Millisecond, Logger: b.cfg.logger}, w, ck, "bench")
	if err != nil {
		return nil, err
	}
	var mu sync.Mutex
	var lags []float64
	measureFrom := time.Now().Add(500 * time.Millisecond) // warm-up
	c, err := consumer.New(ctx, consumer.Options{Brokers: []string{b.cluster.Addr}, TopicPrefix: prefix, Group: prefix,
		ReplicaURL: "sqlite://" + filepath.Join(dir, "replica.db"), Logger: b.cfg.logger,
		OnApplied: func(txns []change.Committed) {
			now := time.Now()
			mu.Lock()
			defer mu.Unlock()
			for i := range txns {
				if t := txns[i].Header.SourceCommitTime; t.After(measureFrom) {
					lags = append(lags, float64(now.Sub(t))/1e6)
				}
			}
		}})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	var sinkErr, consErr error
	go func() { defer wg.Done(); sinkErr = s.Run(rctx) }()
	go func() { defer wg.Done(); consErr = c.Run(rctx) }()
	defer func() { cancel(); wg.Wait() }()

	// The source: transactions of 5 changes, 1000 per second, spread over
	// 10ms ticks; each appended with its own durable commit.
	dur := max(b.cfg.duration, 3*time.Second)
	if b.cfg.quick {
		dur = time.Second
	}
	wl := kafkatest.NewWorkload(uint64(id))
	wl.NoKinds = true
	const perTxn = 5
	txnsPerTick := kLagRate / perTxn / 100
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	end := time.Now().Add(500*time.Millisecond + dur)
	var last uint64
	for time.Now().Before(end) {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		for range txnsPerTick {
			txn := wl.Next()
			for len(txn.Changes) < perTxn {
				txn.Changes = append(txn.Changes, wl.Next().Changes...)
			}
			txn.Changes = txn.Changes[:perTxn]
			txn.Header.SourceCommitTime = time.Now()
			t, err := w.AppendAsync(ctx, &txn)
			if err != nil {
				return nil, err
			}
			last = t.Last
		}
	}
	if err := w.Wait(ctx, last); err != nil {
		return nil, err
	}
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	err = c.WaitApplied(wctx, last)
	wcancel()
	if err != nil {
		cancel()
		wg.Wait()
		return nil, fmt.Errorf("replica at %d, want %d: %w (sink: %v, consumer: %v)", c.Stats().AppliedLSN, last, err, sinkErr, consErr)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(lags) == 0 {
		return nil, errors.New("no transaction measured")
	}
	slices.Sort(lags)
	return sample{mMillis: pct(lags, 0.99), mLagP50: pct(lags, 0.50), mLagP95: pct(lags, 0.95), mLagP999: pct(lags, 0.999)}, nil
}

func pct(sorted []float64, p float64) float64 {
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func createTopic(ctx context.Context, cl *kgo.Client, topic string) error {
	adm := newKadm(cl)
	resp, err := adm.CreateTopic(ctx, 1, -1, nil, topic)
	if err == nil {
		err = resp.Err
	}
	return err
}

func kafkaTargets(cfg *config, rs *resultSet) []target {
	var ts []target
	check := func(what string, v float64, ok bool, met bool, measured, want string) {
		t := target{what: what, want: want, status: "not measured", measured: "-"}
		if ok {
			t.measured = measured
			t.status = map[bool]string{true: "met", false: "missed"}[met]
		}
		ts = append(ts, t)
	}
	r, ok := rs.compared(kSinkName, mRecordsPerSec, kBareName)
	a, _ := rs.value(kSinkName, mRecordsPerSec)
	bv, _ := rs.value(kBareName, mRecordsPerSec)
	check("sink produce vs bare franz-go producer", r, ok, r >= 0.8,
		fmt.Sprintf("%s (%s vs %s records/s)", formatRatio(r), formatNumber(a), formatNumber(bv)), "≥ 0.8x")
	v, ok := rs.value(kSQLiteName, mRecordsPerSec)
	check("apply into SQLite", v, ok, v >= 50000, formatNumber(v)+" changes/s", "≥ 50k changes/s")
	v, ok = rs.value(kPGName, mRecordsPerSec)
	check("apply into PostgreSQL", v, ok, v >= 20000, formatNumber(v)+" changes/s", "≥ 20k changes/s")
	for _, p := range []struct {
		metric, name string
		slo          float64
	}{{mLagP50, "p50", 10}, {mLagP95, "p95", 100}, {mMillis, "p99", 500}, {mLagP999, "p99.9", 2000}} {
		v, ok := rs.value(kLagName, p.metric)
		check(fmt.Sprintf("commit-to-apply lag at 5k changes/s, %s (SLO)", p.name), v, ok, v <= p.slo,
			fmt.Sprintf("%.1f ms", v), fmt.Sprintf("≤ %g ms", p.slo))
	}
	v, ok = rs.value(kLagName, mMillis)
	check("commit-to-apply lag at 5k changes/s, p99 (target)", v, ok, v <= 250, fmt.Sprintf("%.1f ms", v), "≤ 250 ms")
	return ts
}

func newKadm(cl *kgo.Client) *kadm.Client { return kadm.NewClient(cl) }
