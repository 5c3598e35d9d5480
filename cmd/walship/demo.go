//go:build !nodemo

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/walship/walship/archivesink"
	"github.com/walship/walship/internal/cli"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/walship/walship/archive"
	"github.com/walship/walship/change"
	"github.com/walship/walship/config"
	"github.com/walship/walship/daemon"
	"github.com/walship/walship/internal/logx"
	"github.com/walship/walship/internal/pgcluster"
	"github.com/walship/walship/pitr"
	"github.com/walship/walship/replica"
)

// runDemo is `walship demo`: the whole pipeline on one machine with
// embedded defaults — a throwaway PostgreSQL (or, without its binaries, the
// HTTP source), the WAL, a directory archive, an in-process Kafka-protocol
// broker, a SQLite replica fed by `walship consume` — a workload, then a
// point-in-time restore, and the proof that the replica and the restores
// equal the source at the same points. Everything runs in this process
// (PostgreSQL as its child) and is stopped and removed at the end or on
// Ctrl-C.
// defaultDemoListen is the demo's status page address: none of walship
// run's default ports (7070, 7071), so the README tour can run the demo
// and then a daemon.
const defaultDemoListen = "127.0.0.1:7080"

func runDemo(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) (err error) {
	defer func() {
		// Ctrl-C is how a user ends the demo: say so, not "context canceled".
		if err != nil && ctx.Err() != nil {
			fmt.Fprintln(stdout, "interrupted: everything stopped and cleaned up")
			err = cli.Exit(130, errors.New("interrupted"))
		}
	}()
	dm, help, err := newDemo(args, stdout, stderr)
	if help || err != nil {
		return err
	}
	defer dm.cleanup(&err)
	for _, step := range []func(context.Context) error{
		dm.prepare,      // the work directory and the logger
		dm.startSource,  // 1. PostgreSQL, or the HTTP source
		dm.startBroker,  // 2. the Kafka-protocol broker
		dm.startRun,     // 3. walship run
		dm.startConsume, // 4. walship consume
		dm.workload,     // 5. three phases, the source's state recorded after each
		dm.catchUp,      // 6. captured, applied to the replica, archived
		dm.prove,        // 7. replica and restores equal the source
		dm.hold,         // --hold, then the end
	} {
		if err := step(ctx); err != nil {
			return err
		}
	}
	return nil
}

// demo is one run of `walship demo`: its flags, what its steps start, and
// how to stop it.
type demo struct {
	// Flags.
	dirFlag  string
	keep     bool
	txns     int
	listen   string
	httpOnly bool
	holdFor  time.Duration

	out      *demoOut
	stderr   io.Writer
	dir      string
	logger   *slog.Logger
	cleanups []func(err *error) // run last first by cleanup

	src         demoSource
	brokerAddr  string
	archiveDir  string
	d           *daemon.Daemon // walship run
	cons        *daemon.Consume
	wg          sync.WaitGroup // the daemons' Run
	replicaPath string
	marks       []demoMark // the source's state at the end of each phase
	last        uint64     // the WAL's last LSN after the workload
}

// newDemo parses the demo's flags.
func newDemo(args []string, stdout, stderr io.Writer) (dm *demo, help bool, err error) {
	dm = &demo{stderr: stderr}
	fs := newFlagSet("demo", stderr)
	fs.StringVar(&dm.dirFlag, "dir", "", "work directory (default: a temporary one, removed at the end)")
	fs.BoolVar(&dm.keep, "keep", false, "keep the work directory")
	fs.IntVar(&dm.txns, "txns", 3000, "transactions of the workload (three phases)")
	// Not 7070 or 7071, the defaults of `walship run`: the README's tour
	// runs the daemon while the demo may still be holding.
	fs.StringVar(&dm.listen, "listen", defaultDemoListen, "status page address (a free port is used if busy)")
	fs.BoolVar(&dm.httpOnly, "http-source", false, "use the HTTP source even if PostgreSQL is available")
	fs.DurationVar(&dm.holdFor, "hold", 0, "keep everything running this long after the proof (to look at the status page)")
	if help, err := parseFlags(fs, args); help || err != nil {
		return nil, help, err
	}
	if dm.txns < 30 {
		return nil, false, usageError("--txns must be at least 30")
	}
	dm.out = &demoOut{w: stdout, start: time.Now()}
	return dm, false, nil
}

// atEnd registers f to run at the end of the demo, before what was
// registered earlier. f may set *err when it is nil.
func (dm *demo) atEnd(f func(err *error)) { dm.cleanups = append(dm.cleanups, f) }

// cleanup stops and removes what the steps started, last first.
func (dm *demo) cleanup(err *error) {
	for i := len(dm.cleanups) - 1; i >= 0; i-- {
		dm.cleanups[i](err)
	}
}

// prepare makes the work directory and the logger.
func (dm *demo) prepare(context.Context) (err error) {
	dm.dir = dm.dirFlag
	if dm.dir == "" {
		if dm.dir, err = os.MkdirTemp("", "walship-demo-"); err != nil {
			return err
		}
		if !dm.keep {
			dm.atEnd(func(*error) { os.RemoveAll(dm.dir) })
		}
	}
	if err := os.MkdirAll(dm.dir, 0o755); err != nil {
		return err
	}
	os.Chmod(dm.dir, 0o755) // the postgres user must reach its data directory

	// Errors only: the demo's narration is on stdout, and a lag warning
	// while a tiny pipeline warms up is noise here.
	dm.logger, err = logx.New(logx.Options{Format: "text", Level: "error", Writer: dm.stderr})
	return err
}

// startSource starts a throwaway PostgreSQL when its binaries are there
// (and --http-source is not given), else prepares the HTTP source.
func (dm *demo) startSource(ctx context.Context) error {
	if _, lookErr := exec.LookPath("pg_config"); lookErr == nil && !dm.httpOnly {
		dm.out.step("starting a throwaway PostgreSQL 15 (wal_level=logical) in %s", filepath.Join(dm.dir, "pg"))
		pg, err := newPGSource(ctx, filepath.Join(dm.dir, "pg"))
		if err != nil {
			return fmt.Errorf("demo: postgres: %w (run with --http-source to use the HTTP source instead)", err)
		}
		dm.atEnd(func(*error) { pg.close() })
		dm.src = pg
		return nil
	}
	why := "PostgreSQL binaries not found"
	if dm.httpOnly {
		why = "--http-source"
	}
	dm.out.step("%s: using the HTTP source with a generated workload", why)
	dm.src = &httpSource{dir: dm.dir}
	return nil
}

// startBroker starts an in-process Kafka-protocol broker (kfake) with one
// partition per topic, on a free loopback port.
func (dm *demo) startBroker(context.Context) error {
	kc, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.ListenFn(func(network, _ string) (net.Listener, error) { return net.Listen(network, "127.0.0.1:0") }),
		kfake.DefaultNumPartitions(1),
	)
	if err != nil {
		return fmt.Errorf("demo: kafka broker: %w", err)
	}
	dm.atEnd(func(*error) { kc.Close() })
	dm.brokerAddr = kc.ListenAddrs()[0]
	dm.out.step("in-process Kafka-protocol broker on %s", dm.brokerAddr)
	return nil
}

// startRun starts `walship run`: the source into the WAL, the WAL to the
// archive and to Kafka, the status page on --listen (or a free port).
func (dm *demo) startRun(ctx context.Context) error {
	if ln, err := net.Listen("tcp", dm.listen); err != nil {
		dm.listen = "127.0.0.1:0"
	} else {
		ln.Close()
	}
	dm.archiveDir = filepath.Join(dm.dir, "archive")
	runYAML := fmt.Sprintf(`wal: {dir: %q}
source:
%s
archive: {url: "file://%s", timeout: 1s, snapshot_interval: 4s}
kafka: {brokers: [%q], topic_prefix: demo, mode: ordered}
http: {listen: %q}
`, filepath.Join(dm.dir, "wal"), dm.src.configYAML(), dm.archiveDir, dm.brokerAddr, dm.listen)
	runCfg, err := config.Parse([]byte(runYAML), os.LookupEnv)
	if err != nil {
		return fmt.Errorf("demo: config: %w", err)
	}
	d, err := daemon.New(ctx, runCfg, dm.logger)
	if err != nil {
		return fmt.Errorf("demo: walship run: %w", err)
	}
	dm.d = d
	runCtx, stopRun := context.WithCancel(context.WithoutCancel(ctx))
	runErr := make(chan error, 1)
	dm.wg.Go(func() { runErr <- d.Run(runCtx) })
	dm.atEnd(func(err *error) {
		stopRun()
		dm.wg.Wait()
		if rerr := <-runErr; rerr != nil && *err == nil {
			*err = fmt.Errorf("demo: walship run: %w", rerr)
		}
	})
	<-d.Ready()
	dm.out.step("walship run: WAL %s, archive file://%s, Kafka topic demo.ordered", runCfg.WAL.Dir, dm.archiveDir)
	dm.out.say("\n    status page:  http://%s/status\n", d.Addr("http"))
	return nil
}

// startConsume starts `walship consume`: Kafka into the SQLite replica.
func (dm *demo) startConsume(ctx context.Context) error {
	dm.replicaPath = filepath.Join(dm.dir, "replica.db")
	consumeCfg, err := config.Parse([]byte(fmt.Sprintf("kafka: {brokers: [%q], topic_prefix: demo}\nreplica: {url: \"sqlite://%s\"}\nhttp: {listen: \"127.0.0.1:0\"}\n",
		dm.brokerAddr, dm.replicaPath)), os.LookupEnv)
	if err != nil {
		return err
	}
	cons, err := daemon.NewConsume(ctx, consumeCfg, dm.logger)
	if err != nil {
		return fmt.Errorf("demo: walship consume: %w", err)
	}
	dm.cons = cons
	consCtx, stopCons := context.WithCancel(context.WithoutCancel(ctx))
	consErr := make(chan error, 1)
	dm.wg.Go(func() { consErr <- cons.Run(consCtx) })
	dm.atEnd(func(err *error) {
		stopCons()
		if cerr := <-consErr; cerr != nil && *err == nil {
			*err = fmt.Errorf("demo: walship consume: %w", cerr)
		}
	})
	dm.out.step("walship consume: Kafka -> SQLite replica %s (status http://%s/status)", dm.replicaPath, cons.Addr())
	return nil
}

// workload runs the workload in three phases and records the source's
// state at the end of each.
func (dm *demo) workload(ctx context.Context) error {
	if err := dm.src.start(ctx, dm.d); err != nil {
		return err
	}
	per := dm.txns / 3
	for phase := 1; phase <= 3; phase++ {
		n, err := dm.src.phase(ctx, per)
		if err != nil {
			return fmt.Errorf("demo: workload: %w", err)
		}
		m, err := dm.src.mark(ctx)
		if err != nil {
			return fmt.Errorf("demo: recording the source state: %w", err)
		}
		dm.marks = append(dm.marks, m)
		dm.out.step("workload phase %d: %d transactions committed; source state at %s recorded (%s)", phase, n, m.at.Format("15:04:05.000000"), m.tables.summary())
		time.Sleep(20 * time.Millisecond) // distinct commit times between phases
	}
	return nil
}

// catchUp waits for the pipeline to catch up: everything captured,
// durable, applied to the replica and archived.
func (dm *demo) catchUp(ctx context.Context) error {
	waitCtx, cancelWait := context.WithTimeout(ctx, 2*time.Minute)
	defer cancelWait()
	last, err := dm.src.caughtUp(waitCtx, dm.d)
	if err != nil {
		return fmt.Errorf("demo: waiting for capture: %w", err)
	}
	dm.last = last
	dm.out.step("captured: WAL durable up to LSN %d", last)
	if err := dm.cons.Consumer().WaitApplied(waitCtx, last); err != nil {
		return fmt.Errorf("demo: waiting for the replica: %w", err)
	}
	dm.out.step("replica applied up to LSN %d", last)
	for dm.d.Positions().Sinks[archivesink.CheckpointName] < last {
		select {
		case <-waitCtx.Done():
			return fmt.Errorf("demo: waiting for the archive: %w", waitCtx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	dm.out.step("archive holds every transaction up to LSN %d", last)
	return nil
}

// prove shows that the replica equals the source now, and that restores
// from the archive to the end of each earlier phase equal the source then;
// then how to do the same with walreplay.
func (dm *demo) prove(ctx context.Context) error {
	dm.out.say("\nproof:\n")
	if err := dm.proveReplica(ctx); err != nil {
		return err
	}
	if err := dm.proveRestores(ctx); err != nil {
		return err
	}
	keepNote := " (while --hold runs; the directory is removed at the end unless --keep or --dir)"
	if dm.keep || dm.dirFlag != "" {
		keepNote = ""
	}
	wr := walreplayCommand(exec.LookPath)
	dm.out.say("\nthe same with the command line%s:\n  %s list --archive file://%s\n  %s restore --archive file://%s --to sqlite://%s --target-time %s\n",
		keepNote, wr, dm.archiveDir, wr, dm.archiveDir, filepath.Join(dm.dir, "restore-cli.db"), dm.marks[0].at.Format(time.RFC3339Nano))
	return nil
}

// walreplayCommand is how the demo's closing hints run walreplay, so that
// they work as printed: the walreplay built beside this walship
// (scripts/demo.sh builds both), else one on $PATH, else `go run`, which
// works anywhere in the walship source tree.
func walreplayCommand(lookPath func(string) (string, error)) string {
	if exe, err := os.Executable(); err == nil {
		sibling := filepath.Join(filepath.Dir(exe), "walreplay")
		if fi, err := os.Stat(sibling); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return sibling
		}
	}
	if _, err := lookPath("walreplay"); err == nil {
		return "walreplay"
	}
	return "go run github.com/walship/walship/cmd/walreplay"
}

// proveReplica compares the Kafka replica with the source's final state.
func (dm *demo) proveReplica(ctx context.Context) error {
	final := dm.marks[len(dm.marks)-1]
	got, err := replica.Dump(ctx, "sqlite://"+dm.replicaPath)
	if err != nil {
		return err
	}
	if diff := replica.Diff(replica.Tables(final.tables), got); diff != "" {
		return fmt.Errorf("demo: the Kafka replica differs from the source:\n%s", diff)
	}
	st, err := replica.ReadState(ctx, "sqlite://"+dm.replicaPath)
	if err != nil {
		return err
	}
	dm.out.ok("Kafka replica (walship consume, SQLite) == source now: %s; %d transactions applied, each once", final.tables.summary(), st.Txns)
	return nil
}

// proveRestores restores the archive to the end of each phase but the
// last and compares each restore with the source's state then.
func (dm *demo) proveRestores(ctx context.Context) error {
	ar, err := archive.Open(ctx, "file://"+dm.archiveDir, archive.Options{})
	if err != nil {
		return err
	}
	source := pitr.NewArchiveSource(ar)
	for i, m := range dm.marks[:len(dm.marks)-1] {
		target := pitr.Target{Kind: pitr.Time, Time: m.at}
		plan, err := pitr.PlanRestore(ctx, source, target, pitr.PlanOptions{})
		if err != nil {
			return fmt.Errorf("demo: planning the restore to %s: %w", m.at.Format(time.RFC3339Nano), err)
		}
		path := filepath.Join(dm.dir, fmt.Sprintf("restore-phase%d.db", i+1))
		res, err := pitr.Restore(ctx, source, plan, "sqlite://"+path, pitr.RestoreOptions{})
		if err != nil {
			return fmt.Errorf("demo: restore to %s: %w", m.at.Format(time.RFC3339Nano), err)
		}
		rt, err := replica.Dump(ctx, "sqlite://"+path)
		if err != nil {
			return err
		}
		if diff := replica.Diff(replica.Tables(m.tables), rt); diff != "" {
			return fmt.Errorf("demo: the restore to the end of phase %d differs from the source then:\n%s", i+1, diff)
		}
		dm.out.ok("walreplay restore --target-time %s == source at the end of phase %d: %s (%d objects, %d transactions replayed)",
			m.at.Format(time.RFC3339Nano), i+1, m.tables.summary(), res.Objects, res.Txns)
	}
	return nil
}

// hold keeps everything running for --hold (or until Ctrl-C), then says
// the demo is done.
func (dm *demo) hold(ctx context.Context) error {
	if dm.holdFor > 0 {
		dm.out.say("holding for %s; status page http://%s/status (Ctrl-C to stop)\n", dm.holdFor, dm.d.Addr("http"))
		select {
		case <-ctx.Done():
		case <-time.After(dm.holdFor):
		}
	}
	dm.out.say("demo finished in %s; stopping and cleaning up\n", time.Since(dm.out.start).Round(time.Millisecond))
	return nil
}

// demoOut prints the demo's narration.
type demoOut struct {
	w     io.Writer
	start time.Time
}

func (o *demoOut) step(format string, args ...any) {
	fmt.Fprintf(o.w, "[%6.2fs] %s\n", time.Since(o.start).Seconds(), fmt.Sprintf(format, args...))
}
func (o *demoOut) say(format string, args ...any) { fmt.Fprintf(o.w, format, args...) }
func (o *demoOut) ok(format string, args ...any) {
	fmt.Fprintf(o.w, "  OK  %s\n", fmt.Sprintf(format, args...))
}

// demoMark is the source's state at a moment.
type demoMark struct {
	at     time.Time
	tables tablesSummary
}

type tablesSummary replica.Tables

func (t tablesSummary) summary() string {
	var parts []string
	for _, name := range []string{"accounts", "orders"} {
		parts = append(parts, fmt.Sprintf("%s %d rows", name, len(t[name])))
	}
	return strings.Join(parts, ", ")
}

// demoSource is where the demo's changes come from.
type demoSource interface {
	configYAML() string
	start(ctx context.Context, d *daemon.Daemon) error
	phase(ctx context.Context, n int) (int, error)
	mark(ctx context.Context) (demoMark, error)
	// caughtUp waits until everything committed is durable in the WAL and
	// returns the WAL's last LSN.
	caughtUp(ctx context.Context, d *daemon.Daemon) (uint64, error)
}

// pgSource drives a throwaway PostgreSQL cluster.
type pgSource struct {
	cluster *pgcluster.Cluster
	pool    *pgxpool.Pool
	rng     *rand.Rand
	mu      sync.Mutex
	orders  int64

	accounts int // the workload's accounts: ids 1 to accounts
	workers  int // connections the workload runs on
}

const demoSchema = `
CREATE TABLE accounts (id bigint PRIMARY KEY, owner text NOT NULL, balance numeric(14,2) NOT NULL,
  updated_at timestamptz NOT NULL, tags text[], profile jsonb);
CREATE TABLE orders (id bigint PRIMARY KEY, account_id bigint NOT NULL, amount numeric(12,2) NOT NULL,
  status text NOT NULL, placed_at timestamptz NOT NULL, note text);`

// demoAccountRows fills accounts with ids 1 to $1, 1000.00 each.
const demoAccountRows = `INSERT INTO accounts SELECT g, 'owner-' || g, 1000.00, now(), ARRAY['demo', 'tier' || (g % 3)], jsonb_build_object('n', g)
  FROM generate_series(1, $1::int) g`

func newPGSource(ctx context.Context, dir string) (*pgSource, error) {
	c, err := pgcluster.New(dir)
	if err != nil {
		return nil, err
	}
	p := &pgSource{cluster: c, rng: rand.New(rand.NewPCG(1, 2)), accounts: 200, workers: 4}
	if err := c.CreateDB(ctx, "shop"); err != nil {
		c.Close()
		return nil, err
	}
	if p.pool, err = pgxpool.New(ctx, c.DSN("shop")); err != nil {
		c.Close()
		return nil, err
	}
	if err := p.createSchema(ctx); err != nil {
		p.close()
		return nil, err
	}
	return p, nil
}

// createSchema creates the workload's tables and p.accounts accounts.
func (p *pgSource) createSchema(ctx context.Context) error {
	if _, err := p.pool.Exec(ctx, demoSchema); err != nil {
		return err
	}
	_, err := p.pool.Exec(ctx, demoAccountRows, p.accounts)
	return err
}

func (p *pgSource) close() {
	if p.pool != nil {
		p.pool.Close()
	}
	p.cluster.Close()
}

func (p *pgSource) configYAML() string {
	return fmt.Sprintf("  postgres: {dsn: %q, slot: walship_demo, publication: walship_demo, tables: [public.accounts, public.orders], heartbeat: 1s}", p.cluster.DSN("shop"))
}

// start waits until the source has taken its initial snapshot and
// streams, so that the workload's transactions are captured as
// transactions (not as snapshot rows).
func (p *pgSource) start(ctx context.Context, d *daemon.Daemon) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for !d.Postgres().Stats().SnapshotDone {
		select {
		case <-ctx.Done():
			return fmt.Errorf("demo: waiting for the initial snapshot: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// phase runs n transactions on p.workers connections: a transfer between
// two accounts, a new order, and now and then an order shipped or deleted.
func (p *pgSource) phase(ctx context.Context, n int) (int, error) {
	var wg sync.WaitGroup
	errs := make(chan error, p.workers)
	jobs := make(chan struct{}, n)
	for range n {
		jobs <- struct{}{}
	}
	close(jobs)
	for range p.workers {
		wg.Go(func() {
			for range jobs {
				p.mu.Lock()
				a, b := 1+p.rng.IntN(p.accounts), 1+p.rng.IntN(p.accounts)
				amt := fmt.Sprintf("%d.%02d", p.rng.IntN(100), p.rng.IntN(100))
				p.orders++
				oid, roll := p.orders, p.rng.IntN(10)
				p.mu.Unlock()
				if err := retryConflicts(ctx, func() error { return p.transfer(ctx, a, b, amt, oid, roll) }); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return n, <-errs
}

// transfer is one transaction of the workload: amt moves from account a to
// account b, and order oid is placed (roll picks what else happens).
//
// Both accounts are locked in ascending id order, whichever way the money
// moves, so that two transfers over the same accounts wait for each other
// instead of deadlocking.
func (p *pgSource) transfer(ctx context.Context, a, b int, amt string, oid int64, roll int) error {
	type leg struct {
		id   int
		sign string
	}
	legs := [2]leg{{a, "-"}, {b, "+"}}
	if b < a {
		legs[0], legs[1] = legs[1], legs[0]
	}
	return pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
		for _, l := range legs {
			if _, err := tx.Exec(ctx, `UPDATE accounts SET balance = balance `+l.sign+` $2::numeric, updated_at = clock_timestamp() WHERE id = $1`, l.id, amt); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, `INSERT INTO orders VALUES ($1, $2, $3::numeric, 'new', clock_timestamp(), $4)`, oid, a, amt, fmt.Sprintf("order %d for account %d", oid, a)); err != nil {
			return err
		}
		switch {
		case roll < 3:
			_, err := tx.Exec(ctx, `UPDATE orders SET status = 'shipped' WHERE id = $1`, oid-int64(1+roll))
			return err
		case roll == 3:
			_, err := tx.Exec(ctx, `DELETE FROM orders WHERE id = $1`, oid-5)
			return err
		}
		return nil
	})
}

// demoTxnAttempts bounds how often one workload transaction is tried when
// PostgreSQL aborts it for a deadlock or a serialization failure.
const demoTxnAttempts = 8

// retryConflicts runs txn, again after a short pause when PostgreSQL
// aborted it for a deadlock (40P01) or a serialization failure (40001):
// such a transaction was rolled back whole, and running it again is what
// PostgreSQL asks of its client. Any other error, or the last attempt's,
// is returned.
func retryConflicts(ctx context.Context, txn func() error) error {
	for attempt := 1; ; attempt++ {
		err := txn()
		var pe *pgconn.PgError
		if err == nil || attempt == demoTxnAttempts || !errors.As(err, &pe) || (pe.Code != "40P01" && pe.Code != "40001") {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Duration(attempt) * 10 * time.Millisecond):
		}
	}
}

func (p *pgSource) mark(ctx context.Context) (demoMark, error) {
	// Every transaction of the phase has committed: a commit time read
	// now is after all of them and before any later one.
	var at time.Time
	if err := p.pool.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&at); err != nil {
		return demoMark{}, err
	}
	t, err := replica.Dump(ctx, p.cluster.DSN("shop"))
	return demoMark{at: at.UTC(), tables: tablesSummary(t)}, err
}

func (p *pgSource) caughtUp(ctx context.Context, d *daemon.Daemon) (uint64, error) {
	var target string
	if err := p.pool.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&target); err != nil {
		return 0, err
	}
	want, err := change.ParseSourceLSN(target)
	if err != nil {
		return 0, err
	}
	// Every commit before pg_current_wal_lsn() has been received once the
	// source reports a confirmed position at or past it (heartbeats move
	// it forward when no data follows).
	for {
		st := d.Postgres().Stats()
		if st.ConfirmedLSN >= want && d.WAL().Durable() > 0 {
			return d.WAL().Durable(), nil
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("source confirmed %s, want %s: %w", change.FormatSourceLSN(st.ConfirmedLSN), target, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// httpSource posts generated transactions to walship's HTTP source and
// keeps the expected state in a reference SQLite database, applied
// directly (not through the WAL, Kafka or the archive).
type httpSource struct {
	dir    string
	addr   string
	ref    replica.Applier
	refURL string
	gen    *demoGen
	lsn    uint64
}

func (h *httpSource) configYAML() string { return "  http: {listen: \"127.0.0.1:0\"}" }

func (h *httpSource) start(ctx context.Context, d *daemon.Daemon) (err error) {
	h.addr = d.Addr("source.http")
	h.refURL = "sqlite://" + filepath.Join(h.dir, "reference.db")
	h.ref, err = replica.Open(ctx, h.refURL, replica.Options{})
	h.gen = newDemoGen()
	if err != nil {
		return err
	}
	setup := h.gen.setup()
	return h.post(ctx, setup)
}

func (h *httpSource) post(ctx context.Context, txns []change.Txn) error {
	var body []byte
	for i := range txns {
		body = appendTxnJSON(body, &txns[i])
	}
	if err := postAppend(ctx, h.addr, body, len(txns)); err != nil {
		return err
	}
	batch := make([]change.Committed, len(txns))
	for i := range txns {
		h.lsn += uint64(len(txns[i].Changes))
		batch[i] = change.Committed{FirstLSN: h.lsn - uint64(len(txns[i].Changes)) + 1, CommitLSN: h.lsn, CommitTime: time.Now(), Txn: txns[i]}
	}
	return h.ref.Apply(ctx, batch)
}

func (h *httpSource) phase(ctx context.Context, n int) (int, error) {
	for done := 0; done < n; {
		k := min(100, n-done)
		if err := h.post(ctx, h.gen.txns(k)); err != nil {
			return done, err
		}
		done += k
	}
	return n, nil
}

func (h *httpSource) mark(ctx context.Context) (demoMark, error) {
	at := time.Now().UTC()
	t, err := replica.Dump(ctx, h.refURL)
	return demoMark{at: at, tables: tablesSummary(t)}, err
}

func (h *httpSource) caughtUp(ctx context.Context, d *daemon.Daemon) (uint64, error) {
	// The HTTP source answers only after durability.
	if d.WAL().Durable() == 0 {
		return 0, errors.New("nothing was appended")
	}
	return d.WAL().Durable(), nil
}
