package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/walship/walship/config"
	"github.com/walship/walship/consumer"
	"github.com/walship/walship/internal/health"
	"github.com/walship/walship/internal/secret"
	"github.com/walship/walship/obs"
	"github.com/walship/walship/status"
)

// Consume is a configured `walship consume`: Kafka's ordered topic applied
// to a replica, with the operator listener (/metrics, /healthz, /readyz,
// /status and /v1/wait?lsn=N for read-your-writes).
type Consume struct {
	cfg     *config.Config
	log     *slog.Logger
	c       *consumer.Consumer
	metrics *obs.Metrics
	srv     *server
	ready   chan struct{}
}

// NewConsume connects to the replica and prepares the consumer.
func NewConsume(ctx context.Context, cfg *config.Config, logger *slog.Logger) (*Consume, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := cfg.ForConsume(); err != nil {
		return nil, err
	}
	k := cfg.Kafka
	group := k.Group
	if group == "" {
		// One group per replica: every replica needs the whole ordered
		// topic, so two replicas must never share a group by accident.
		sum := sha256.Sum256([]byte(cfg.Replica.URL))
		group = "walship-consume-" + hex.EncodeToString(sum[:4])
	}
	kc := KafkaSinkOptions(k, logger)
	// A static group member: a restarted walship consume takes its
	// partition back at once instead of waiting out the old session.
	host, _ := os.Hostname()
	c, err := consumer.New(ctx, consumer.Options{Brokers: k.Brokers, TopicPrefix: k.TopicPrefix, Group: group, InstanceID: group + "-" + host,
		ReplicaURL: cfg.Replica.URL, Lineage: Lineage, MaxBatchTxns: cfg.Replica.MaxBatchTxns, TLS: kc.TLS, SASL: kc.SASL, Logger: logger,
		Name: cfg.Consumer.Name})
	if err != nil {
		return nil, fmt.Errorf("replica %s: %w", secret.URL(cfg.Replica.URL), err)
	}
	m, err := obs.New(obs.Options{Lag: lagOptions(cfg.Lag, cfg.Archive), Logger: logger})
	if err != nil {
		c.Close()
		return nil, err
	}
	cd := &Consume{cfg: cfg, log: logger, c: c, metrics: m, ready: make(chan struct{})}
	m.AddReadiness("started", func(context.Context) error {
		select {
		case <-cd.ready:
			return nil
		default:
			return errors.New("starting")
		}
	})
	// Both dependencies gate readiness: without the brokers nothing new
	// arrives, without the replica database nothing is applied, and
	// /v1/wait would only time out.
	m.AddDependency("kafka", true, func() health.State { return c.Stats().Kafka })
	m.AddDependency("replica", true, func() health.State { return c.Stats().Replica })
	mux := m.Mux()
	mux.Handle("/v1/wait", c.WaitHandler())
	verdict := registerChecksumMetrics(m, c, cfg.Replica.URL)
	started := time.Now()
	status.Register(mux, func(ctx context.Context) (status.Snapshot, error) {
		s := c.Stats()
		kState, kErr := depState(s.Kafka, "ok")
		rState, rErr := depState(s.Replica, "ok")
		snap := status.Snapshot{Title: "walship consume", Role: "replica", Host: host, Version: Version(), Started: started,
			Source: &status.Source{Kind: "kafka", Name: k.TopicPrefix, LSN: s.AppliedLSN, State: kState, Error: kErr},
			Sinks: []status.Sink{{Name: "replica", Kind: "replica", Target: secret.URL(cfg.Replica.URL), LSN: s.AppliedLSN,
				LagRecords: uint64(max(s.LagRecords, 0)), Lag: status.Duration(time.Duration(s.LagSeconds * float64(time.Second))), State: rState, Error: rErr}}}
		snap.AddMetrics(m)
		verdict.warn(ctx, &snap)
		return snap, nil
	})
	d := &Daemon{log: logger}
	srv, err := d.listen("http", cfg.HTTP.Listener, mux)
	if err != nil {
		c.Close()
		return nil, err
	}
	cd.srv = srv
	return cd, nil
}

// Addr is the operator listener's address.
func (cd *Consume) Addr() string { return cd.srv.srv.Addr().String() }

// Consumer returns the consumer (for the demo and tests).
func (cd *Consume) Consumer() *consumer.Consumer { return cd.c }

// Run applies until ctx ends or the consumer fails; the replica's position
// is always that of its last committed transaction, so a restart resumes
// exactly.
func (cd *Consume) Run(ctx context.Context) error {
	mctx, stop := context.WithCancel(ctx)
	defer stop()
	go cd.metrics.Run(mctx)
	go func() {
		t := time.NewTicker(pollInterval)
		defer t.Stop()
		for {
			s := cd.c.Stats()
			cd.metrics.ConsumerPosition("replica", obs.Position{LSN: s.AppliedLSN, LagRecords: uint64(max(s.LagRecords, 0)),
				Lag: time.Duration(s.LagSeconds * float64(time.Second))})
			select {
			case <-mctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	close(cd.ready)
	cd.log.Info("walship consume running", "replica", secret.URL(cd.cfg.Replica.URL), "brokers", cd.cfg.Kafka.Brokers, "http", cd.Addr())
	err := cd.c.Run(ctx)
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		err = nil
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cd.srv.srv.Shutdown(shutdownCtx)
	if cerr := cd.c.Close(); err == nil {
		err = cerr
	}
	cd.log.Info("stopped", "applied_lsn", cd.c.Stats().AppliedLSN)
	return err
}
