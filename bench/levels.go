package main

// Cases kafka/ack-<level>: commit-to-acknowledgement latency of HTTP
// appends at a fixed rate under each replication level (wal.sync), through
// the HTTP source into a WAL (fsync on) shipped by the Kafka sink to an
// in-process broker (kfake); for applied, one named consumer applies the
// topic to SQLite and reports its position on the positions topic, read
// back as the daemon does (quorum ANY 1 (bench)). See README.md.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/walship/walship/checkpoint"
	"github.com/walship/walship/consumer"
	"github.com/walship/walship/httpsource"
	"github.com/walship/walship/kafkasink"
	"github.com/walship/walship/kafkasink/kafkatest"
	"github.com/walship/walship/kafkawire"
	"github.com/walship/walship/vfs"
	"github.com/walship/walship/wal"
)

const (
	kAckPrefix = "kafka/ack-"
	kAckRate   = 500 // HTTP requests per second, one transaction of one change each
	mAckP50    = "ack_p50_ms"
)

// levelCases are the per-level cases; shipped is compared with local.
func levelCases(cfg *config) []*benchCase {
	lb := &levelBench{cfg: cfg}
	setupOnce := sync.OnceValue(lb.setup)
	setup := func(context.Context) error { return setupOnce() }
	cleanup := sync.OnceFunc(lb.cleanup)
	var cases []*benchCase
	for _, lv := range []wal.Level{wal.LevelOff, wal.LevelLocal, wal.LevelShipped, wal.LevelApplied} {
		c := &benchCase{name: kAckPrefix + lv.String(), primary: mMillis, extra: []string{mAckP50}, setup: setup, cleanup: cleanup,
			run: func(ctx context.Context) (sample, error) { return lb.run(ctx, lv, false) }}
		if lv != wal.LevelLocal {
			c.compare = []comparison{{metric: mMillis, base: kAckPrefix + "local", baseMetric: mMillis}}
		}
		cases = append(cases, c)
	}
	// shipped as an HA group's leader ships: in Kafka transactions, so an
	// acknowledgement waits for the commit, not the produce.
	cases = append(cases, &benchCase{name: kAckPrefix + "shipped-txn", primary: mMillis, extra: []string{mAckP50}, setup: setup, cleanup: cleanup,
		run:     func(ctx context.Context) (sample, error) { return lb.run(ctx, wal.LevelShipped, true) },
		compare: []comparison{{metric: mMillis, base: kAckPrefix + "shipped", baseMetric: mMillis}}})
	return cases
}

type levelBench struct {
	cfg     *config
	dir     string
	cluster *kafkatest.Cluster
	seq     int
}

func (b *levelBench) setup() error {
	var err error
	if b.dir, err = b.cfg.tempDir("levels"); err != nil {
		return err
	}
	b.cluster, err = kafkatest.Start()
	return err
}

func (b *levelBench) cleanup() {
	if b.cluster != nil {
		b.cluster.Close()
	}
	if b.dir != "" {
		os.RemoveAll(b.dir)
	}
}

// run sends kAckRate requests per second (open loop: each on its own
// goroutine at its tick, so a slow answer does not delay the next send)
// with the header Walship-Sync: lv, and reports percentiles of the time
// from sending a request to its 200. The level off is asked per request
// of a log that fsyncs (the configured wal.sync: off would also stop the
// fsyncs, and so measure another log).
// With txn the sink is transactional, as an HA group's leader's is.
func (b *levelBench) run(ctx context.Context, lv wal.Level, txn bool) (sample, error) {
	b.seq++
	dir := filepath.Join(b.dir, fmt.Sprint(b.seq))
	w, _, err := wal.Open(wal.Options{Dir: filepath.Join(dir, "wal")})
	if err != nil {
		return nil, err
	}
	defer w.Close()
	ck, err := checkpoint.Open(ctx, vfs.Default, filepath.Join(dir, "ckpt"), checkpoint.Options{})
	if err != nil {
		return nil, err
	}
	quorum, err := wal.ParseQuorum("ANY 1 (bench)")
	if err != nil {
		return nil, err
	}
	levels, err := wal.NewLevels(w, wal.LevelLocal, []string{kafkasink.CheckpointName}, quorum)
	if err != nil {
		return nil, err
	}
	prefix := fmt.Sprintf("ack%d", b.seq)
	// Linger 1ms, as the lag case: at this rate batches fill slowly.
	sopts := kafkasink.Options{Brokers: []string{b.cluster.Addr}, TopicPrefix: prefix,
		Linger: time.Millisecond, Logger: b.cfg.logger, Acked: func(lsn uint64) { levels.Report(kafkasink.CheckpointName, lsn) }}
	if txn {
		sopts.TransactionalID = kafkawire.OrderedTopic(prefix)
	}
	sink, err := kafkasink.New(sopts, w, ck, "bench")
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(ctx)
	var bg sync.WaitGroup
	var closeAfter func() error // the consumer: closed once its Run has returned
	defer func() {
		cancel()
		bg.Wait()
		if closeAfter != nil {
			closeAfter()
		}
	}()
	bg.Go(func() { sink.Run(rctx) })
	if lv == wal.LevelApplied {
		c, err := consumer.New(ctx, consumer.Options{Brokers: []string{b.cluster.Addr}, TopicPrefix: prefix, Group: prefix,
			ReplicaURL: "sqlite://" + filepath.Join(dir, "replica.db"), Name: "bench", Logger: b.cfg.logger})
		if err != nil {
			return nil, err
		}
		closeAfter = c.Close
		bg.Go(func() { c.Run(rctx) })
		copts, err := kafkawire.ClientOptions([]string{b.cluster.Addr}, kafkawire.TLSOptions{}, kafkawire.SASLOptions{})
		if err != nil {
			return nil, err
		}
		bg.Go(func() {
			kafkawire.WatchAppliedPositions(rctx, copts, kafkawire.PositionsTopic(prefix), levels.ReportApplied, func(int64, error) {})
		})
	}
	srv := httptest.NewServer(httpsource.New(w, httpsource.Options{Levels: levels, SyncTimeout: time.Minute}).Handler())
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	defer client.CloseIdleConnections()

	dur := max(b.cfg.duration, 3*time.Second)
	if b.cfg.quick {
		dur = time.Second
	}
	warm := 500 * time.Millisecond
	var mu sync.Mutex
	var lat []float64
	var firstErr error
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Second / kAckRate)
	defer tick.Stop()
	start := time.Now()
	for i := 0; time.Since(start) < warm+dur; i++ {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		measured := time.Since(start) >= warm
		wg.Go(func() {
			body := fmt.Sprintf(`{"table":"public.t","op":"c","key":{"id":%d},"after":{"id":%d,"pad":%q}}`+"\n", i, i, strings.Repeat("x", 100))
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/v1/append", strings.NewReader(body))
			req.Header.Set(httpsource.SyncHeader, lv.String())
			t0 := time.Now()
			resp, err := client.Do(req)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					err = fmt.Errorf("HTTP %d", resp.StatusCode)
				}
			}
			took := time.Since(t0)
			mu.Lock()
			defer mu.Unlock()
			if err != nil && firstErr == nil {
				firstErr = err
			}
			if measured {
				lat = append(lat, float64(took)/1e6)
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return nil, fmt.Errorf("%s: %w", lv, firstErr)
	}
	if len(lat) == 0 {
		return nil, errors.New("no request measured")
	}
	slices.Sort(lat)
	return sample{mMillis: pct(lat, 0.99), mAckP50: pct(lat, 0.50)}, nil
}
