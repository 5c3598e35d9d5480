// Package daemon assembles `walship run` from a config.Config: the WAL,
// its sources (PostgreSQL, HTTP), its sinks (archive, Kafka), retention by
// checkpoints and the operator HTTP listener.
//
// Lifecycle guarantees:
//   - Start-up fails, before anything is captured, with an error naming the
//     config key or component when a part cannot start.
//   - Shutdown (context cancelled: SIGINT/SIGTERM) stops the sources first;
//     each drains — waits until what it appended is durable, checkpoints,
//     and (Postgres) confirms the durable position to the server — then the
//     sinks stop, having checkpointed what they shipped, and the WAL is
//     closed after a final fsync. A restart resumes from the checkpoints.
//   - A component that fails stops the daemon (after the same orderly
//     shutdown of the others) and its error is returned: walship never runs
//     half-alive, silently not shipping.
//   - Retention removes a local segment only when every registered
//     checkpoint (each sink's) has passed it (docs/DESIGN.md §4.5).
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/walship/walship/archive"
	"github.com/walship/walship/archivesink"
	"github.com/walship/walship/kafkasink"
	"github.com/walship/walship/obs"
	"github.com/walship/walship/pgsource"
	"github.com/walship/walship/status"

	"github.com/walship/walship/checkpoint"
	"github.com/walship/walship/checksum"
	"github.com/walship/walship/config"
	"github.com/walship/walship/httpsource"
	"github.com/walship/walship/internal/httpx"
	"github.com/walship/walship/internal/secret"
	"github.com/walship/walship/vfs"
	"github.com/walship/walship/wal"
)

// component is one long-running part of the daemon.
type component struct {
	name string
	run  func(ctx context.Context) error
}

// failure is err as the daemon reports it: named by the component, which
// is its config section ("kafka", "archive", "source.postgres"). The
// package's own prefix may follow ("kafka: kafkasink: ..."): the daemon
// never reads an error's text to decide.
func (c component) failure(err error) error { return fmt.Errorf("%s: %w", c.name, err) }

// Daemon is a configured walship run.
type Daemon struct {
	cfg *config.Config
	log *slog.Logger

	wal *wal.WAL
	// levels tracks the replication levels (wal.sync): the HTTP source
	// answers and the Postgres source confirms by them.
	levels *wal.Levels
	// sinkCkpts holds the sinks' positions: retention follows their
	// minimum. srcCkpts holds the sources' own bookkeeping (resume points,
	// snapshot progress), which must not hold retention back.
	sinkCkpts, srcCkpts *checkpoint.Store

	sources []component // stopped first
	sinks   []component // stopped after the sources
	servers []*server

	retention *retention
	archiver  *archivesink.Archiver
	kafka     *kafkasink.Sink
	metrics   *obs.Metrics
	// snapshotter keeps a local replica and stores base snapshots.
	snapshotter *archivesink.Snapshotter

	httpSource atomic.Pointer[httpsource.Source]
	keys       *wal.KeyIndex // the HTTP source's idempotency keys
	// kafkaShipped is the Kafka sink's stored position: in a group, as far
	// as the archiver may go (the group's history is the ordered topic).
	kafkaShipped atomic.Uint64
	// ha is this daemon's membership of an HA group; nil for a single
	// daemon.
	ha *haMember
	pg *pgsource.Source
	// checksum runs check rounds over pg (checksum:); nil without.
	checksum *checksum.Runner
	// archiveOldest is the oldest restorable commit time, refreshed from
	// the archive's catalog now and then.
	archiveOldest  atomicTime
	archiveHandle  *archive.Archive
	archiveSummary atomic.Pointer[status.Archive]

	// Ready is closed once every component has started.
	ready chan struct{}
}

// server is an HTTP listener of the daemon.
type server struct {
	name string
	srv  *httpx.Server
}

// Addr returns the address the named listener is bound to ("source.http"
// or "http"), for tests and the demo that use port 0.
func (d *Daemon) Addr(name string) string {
	for _, s := range d.servers {
		if s.name == name {
			return s.srv.Addr().String()
		}
	}
	return ""
}

// WAL returns the daemon's log (for the demo and tests).
func (d *Daemon) WAL() *wal.WAL { return d.wal }

// Postgres returns the Postgres source, nil if none is configured.
func (d *Daemon) Postgres() *pgsource.Source { return d.pg }

// Ready is closed when every component has started.
func (d *Daemon) Ready() <-chan struct{} { return d.ready }

// New opens the WAL and the checkpoint store and builds every configured
// component. Nothing runs until Run.
func New(ctx context.Context, cfg *config.Config, logger *slog.Logger) (_ *Daemon, err error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	d := &Daemon{cfg: cfg, log: logger, ready: make(chan struct{})}
	defer func() {
		if err != nil {
			d.closeAll()
		}
	}()
	if err := cfg.ForRun(); err != nil {
		return nil, err
	}
	level, err := wal.ParseLevel(cfg.WAL.Sync)
	if err != nil {
		return nil, fmt.Errorf("wal.sync: %w", err)
	}
	// Every level but off fsyncs the log: shipped is local first.
	sm := wal.SyncLocal
	if level == wal.LevelOff {
		sm = wal.SyncOff
	}
	codec, err := wal.ParseCompression(cfg.WAL.Compression)
	if err != nil {
		return nil, err
	}
	if d.metrics, err = obs.New(obs.Options{Lag: lagOptions(cfg.Lag, cfg.Archive), Logger: logger}); err != nil {
		return nil, err
	}
	wopts := wal.Options{Dir: cfg.WAL.Dir, Sync: sm, SegmentSize: int64(cfg.WAL.SegmentSize),
		Compression: codec, MinInterval: cfg.WAL.MinInterval, MaxCommitTimeSkew: cfg.WAL.MaxCommitTimeSkew, ZeroFill: cfg.WAL.ZeroFill == nil || *cfg.WAL.ZeroFill, Logger: logger,
		Observe: d.metrics.ObserveWAL}
	if cfg.HA != nil {
		// Every batch a member writes checks its term (a follower's
		// copies pass: it has none).
		wopts.Gate = d.gate
		if wopts.FirstLSN, err = haFirstLSN(ctx, cfg); err != nil {
			return nil, err
		}
	}
	w, rep, err := wal.Open(wopts)
	if err != nil {
		return nil, fmt.Errorf("wal.dir %s: %w", cfg.WAL.Dir, err)
	}
	d.wal = w
	var quorum *wal.Quorum
	if cfg.WAL.AppliedQuorum != "" {
		if quorum, err = wal.ParseQuorum(cfg.WAL.AppliedQuorum); err != nil {
			return nil, fmt.Errorf("wal.applied_quorum: %w", err)
		}
	}
	if d.levels, err = wal.NewLevels(w, level, cfg.WAL.ShippedSinks, quorum); err != nil {
		return nil, fmt.Errorf("wal.sync: %w", err)
	}
	if !rep.Clean() {
		logger.Warn("wal recovered", "dir", cfg.WAL.Dir, "report", rep.String())
	}
	ckdir := vfs.Join(cfg.WAL.Dir, "checkpoints")
	if d.sinkCkpts, err = checkpoint.Open(ctx, vfs.Default, vfs.Join(ckdir, "sinks"), checkpoint.Options{Logger: logger}); err != nil {
		return nil, fmt.Errorf("checkpoints: %w", err)
	}
	if d.srcCkpts, err = checkpoint.Open(ctx, vfs.Default, vfs.Join(ckdir, "sources"), checkpoint.Options{Logger: logger}); err != nil {
		return nil, fmt.Errorf("checkpoints: %w", err)
	}
	if err := checkNotBehindSinks(w, d.sinkCkpts, rep); err != nil {
		return nil, err
	}
	if cfg.HA != nil {
		if err := d.buildHA(ctx); err != nil {
			return nil, err
		}
	}
	if err := d.buildSources(ctx); err != nil {
		return nil, err
	}
	if err := d.buildSinks(ctx); err != nil {
		return nil, err
	}
	// What the Kafka sink stored before this start counts for shipped (it
	// resumes from its checkpoint too); they report their progress from
	// here on. The archive is not seeded from its checkpoint: the archiver
	// reports where the archive really ends once it has checked at resume
	// (the archive may end before the checkpoint, and then that range is
	// archived again, not shipped).
	for _, c := range d.sinkCkpts.All() {
		if c.Name != archivesink.CheckpointName {
			d.levels.Report(c.Name, c.Pos)
		}
		if c.Name == kafkasink.CheckpointName {
			d.kafkaShipped.Store(c.Pos)
		}
	}
	d.retention = newRetention(w, d.sinkCkpts, cfg.WAL, logger)
	if d.keys != nil {
		d.retention.floor = d.keys.Floor
	}
	if err := d.buildHTTP(); err != nil {
		return nil, err
	}
	return d, nil
}

func (d *Daemon) buildSources(ctx context.Context) error {
	if h := d.cfg.Source.HTTP; h != nil {
		var handler http.Handler
		if d.ha != nil {
			// The source itself is built when this member leads, on the
			// log as it is then.
			handler = http.HandlerFunc(d.ha.serveSource)
		} else {
			src, err := d.newHTTPSource(ctx)
			if err != nil {
				return err
			}
			handler = src.Handler()
		}
		opts := httpOptions("source.http", h.Listener, d.log)
		opts.MaxConns = h.MaxConnections
		s, err := d.listenWith("source.http", h.Listener, opts, handler)
		if err != nil {
			return err
		}
		d.log.Info("http source listening", "addr", s.srv.Addr().String(), "endpoint", "/v1/append")
	}
	if d.cfg.Source.Postgres != nil {
		if err := d.buildPostgres(ctx); err != nil {
			return err
		}
	}
	return nil
}

// newHTTPSource builds the HTTP source on the log as it is now: the
// idempotency keys of the window are read back from the log before the
// source takes a request.
func (d *Daemon) newHTTPSource(ctx context.Context) (*httpsource.Source, error) {
	h := d.cfg.Source.HTTP
	keys, err := d.wal.LoadKeys(ctx, h.IdempotencyWindow)
	if err != nil {
		return nil, err
	}
	d.keys = keys
	src := httpsource.New(d.wal, httpsource.Options{MaxBody: int64(h.MaxBody), MaxInflight: int64(h.MaxInflightBytes),
		ReadTimeout: h.ReadTimeout, Keys: keys, Levels: d.levels, SyncTimeout: h.SyncTimeout, Logger: d.log})
	d.httpSource.Store(src)
	return src, nil
}

// listen binds and serves an HTTP listener now, so that a port in use is
// a start-up error naming the key. Security (loopback by default, a token
// elsewhere, TLS) is httpx's.
func (d *Daemon) listen(name string, l config.Listener, h http.Handler) (*server, error) {
	return d.listenWith(name, l, httpOptions(name, l, d.log), h)
}

// listenWith is listen with httpx's options given.
func (d *Daemon) listenWith(name string, l config.Listener, opts httpx.Options, h http.Handler) (*server, error) {
	srv, err := httpx.Listen(opts, h)
	if err != nil {
		return nil, fmt.Errorf("%s.listen %s: %w", name, l.Listen, err)
	}
	s := &server{name: name, srv: srv}
	d.servers = append(d.servers, s)
	return s, nil
}

// httpOptions maps a listener section (name is its key, such as "http"
// or "source.http") to httpx's options. /healthz is public so that load
// balancers can probe without the token.
func httpOptions(name string, l config.Listener, log *slog.Logger) httpx.Options {
	return httpx.Options{Addr: l.Listen, Token: secret.Secret(l.Token), TLSCert: l.TLSCert, TLSKey: l.TLSKey,
		Public: []string{"/healthz"}, Name: name, Logger: log}
}

// Run runs every component until ctx ends or one fails, then shuts down in
// order (sources, sinks, listeners, WAL) and returns the first failure. A
// member of an HA group follows the group's log until it leads, then runs
// as a single daemon until its term is lost (an error matching ErrHA).
func (d *Daemon) Run(ctx context.Context) error {
	if d.ha != nil {
		return d.runHA(ctx)
	}
	return d.runComponents(ctx, nil)
}

// runComponents is Run once this daemon writes: lost, when not nil, ends
// it like a failed component (an HA term that lapsed).
func (d *Daemon) runComponents(ctx context.Context, lost <-chan error) error {
	srcCtx, stopSources := context.WithCancel(context.WithoutCancel(ctx))
	sinkCtx, stopSinks := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSources()
	defer stopSinks()

	// Room for every component's error (the sources, the sinks, and
	// retention, metrics and the archive catalog), so no sender blocks.
	failed := make(chan error, len(d.sources)+len(d.sinks)+3)
	var srcWG, sinkWG sync.WaitGroup
	start := func(wg *sync.WaitGroup, ctx context.Context, c component) {
		wg.Go(func() {
			err := c.run(ctx)
			if err != nil && ctx.Err() == nil {
				failed <- c.failure(err)
			} else if err != nil && !errors.Is(err, context.Canceled) {
				failed <- fmt.Errorf("%s (stopping): %w", c.name, err)
			}
		})
	}
	for _, c := range d.sinks {
		start(&sinkWG, sinkCtx, c)
	}
	for _, c := range d.sources {
		start(&srcWG, srcCtx, c)
	}
	start(&sinkWG, sinkCtx, component{name: "retention", run: d.retention.run})
	if d.ha == nil { // a group member observes from its start (runHA)
		start(&sinkWG, sinkCtx, component{name: "metrics", run: d.observe})
	}
	if d.archiveHandle != nil {
		start(&sinkWG, sinkCtx, component{name: "archive catalog", run: d.watchCatalog})
	}
	if d.ha == nil {
		close(d.ready)
	}
	d.log.Info("walship running", "wal", d.cfg.WAL.Dir, "sources", len(d.sources)+boolInt(d.cfg.Source.HTTP != nil), "sinks", len(d.sinks))

	var first error
	select {
	case <-ctx.Done():
		d.log.Info("shutting down")
	case first = <-failed:
		d.log.Error("component failed; shutting down", "err", first)
	case first = <-lost:
		d.log.Error("shutting down", "err", first)
	}

	// 1. Sources: stop taking input, drain to durability, confirm.
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, s := range d.servers {
		if s.name == "source.http" {
			s.srv.Shutdown(shutdownCtx) // waits for in-flight appends to be acknowledged
		}
	}
	// Requests still waiting for a level (the sinks are down) are answered
	// 503 with what is durable locally.
	d.levels.Close()
	stopSources()
	srcWG.Wait()
	// 2. Sinks ship what they can, checkpoint and stop.
	stopSinks()
	sinkWG.Wait()
	// 3. Operator listeners, then the WAL.
	close(failed)
	for err := range failed {
		if first == nil {
			first = err
		} else if err != first {
			d.log.Error("during shutdown", "err", err)
		}
	}
	if err := d.closeRest(shutdownCtx); err != nil && first == nil {
		first = err
	}
	return first
}

// closeRest shuts the listeners down and closes the snapshotter, the
// archive and the WAL: the end of every Run.
func (d *Daemon) closeRest(ctx context.Context) error {
	for _, s := range d.servers {
		s.srv.Shutdown(ctx)
	}
	var first error
	if d.snapshotter != nil {
		if err := d.snapshotter.Close(); err != nil {
			first = fmt.Errorf("closing the snapshotter: %w", err)
		}
	}
	if d.archiveHandle != nil {
		d.archiveHandle.Close()
	}
	if err := d.wal.Close(); err != nil && first == nil {
		first = fmt.Errorf("closing the wal: %w", err)
	}
	d.log.Info("stopped", "durable_lsn", d.wal.Durable())
	return first
}

// closeAll releases what New opened when New fails.
func (d *Daemon) closeAll() {
	for _, s := range d.servers {
		s.srv.Close()
	}
	if d.snapshotter != nil {
		d.snapshotter.Close()
	}
	if d.archiveHandle != nil {
		d.archiveHandle.Close()
	}
	if d.wal != nil {
		d.wal.Close()
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// checkNotBehindSinks refuses to run a log that ends before what a sink
// has already shipped: recovery took damage to acknowledged records for a
// torn tail, or the directory was restored from an older copy. Appending
// would give new transactions LSNs that consumers and the archive already
// hold for other ones — a divergent history they would deduplicate away.
func checkNotBehindSinks(w *wal.WAL, sinks *checkpoint.Store, rep *wal.RecoveryReport) error {
	end := w.Visible()
	for _, c := range sinks.All() {
		if c.Pos <= end {
			continue
		}
		what := "the log"
		if rep != nil && !rep.Clean() {
			what = "recovery (" + rep.String() + ")"
		}
		return fmt.Errorf("wal.dir %s ends at LSN %d, but sink %q has already shipped up to LSN %d: %s lost acknowledged records "+
			"(a damaged tail taken for a torn write, or an older copy of the directory). walship will not reuse those LSNs. "+
			"Restore the log from the archive (walreplay) or start a new lineage in a fresh wal.dir", w.Dir(), end, c.Name, c.Pos, what)
	}
	return nil
}
