package main

import (
	"context"
	"errors"
	"fmt"
	"io"
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
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/walship/walship/archive"
	"github.com/walship/walship/change"
	"github.com/walship/walship/config"
	"github.com/walship/walship/daemon"
	"github.com/walship/walship/internal/logx"
	"github.com/walship/walship/internal/pgtest"
	"github.com/walship/walship/kafkasink/kafkatest"
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
func runDemo(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) (err error) {
	defer func() {
		// Ctrl-C is how a user ends the demo: say so, not "context canceled".
		if err != nil && ctx.Err() != nil {
			fmt.Fprintln(stdout, "interrupted: everything stopped and cleaned up")
			err = cli.Exit(130, errors.New("interrupted"))
		}
	}()
	fs := newFlagSet("demo", stderr)
	dirFlag := fs.String("dir", "", "work directory (default: a temporary one, removed at the end)")
	keep := fs.Bool("keep", false, "keep the work directory")
	txns := fs.Int("txns", 3000, "transactions of the workload (three phases)")
	listen := fs.String("listen", "127.0.0.1:7071", "status page address (a free port is used if busy)")
	httpOnly := fs.Bool("http-source", false, "use the HTTP source even if PostgreSQL is available")
	hold := fs.Duration("hold", 0, "keep everything running this long after the proof (to look at the status page)")
	if help, err := parseFlags(fs, args); help || err != nil {
		return err
	}
	if *txns < 30 {
		return usageError("--txns must be at least 30")
	}
	out := &demoOut{w: stdout, start: time.Now()}
	dir := *dirFlag
	if dir == "" {
		if dir, err = os.MkdirTemp("", "walship-demo-"); err != nil {
			return err
		}
		if !*keep {
			defer os.RemoveAll(dir)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	os.Chmod(dir, 0o755) // the postgres user must reach its data directory

	// Errors only: the demo's narration is on stdout, and a lag warning
	// while a tiny pipeline warms up is noise here.
	logger, err := logx.New(logx.Options{Format: "text", Level: "error", Writer: stderr})
	if err != nil {
		return err
	}

	// 1. The source.
	var src demoSource
	if _, lookErr := exec.LookPath("pg_config"); lookErr == nil && !*httpOnly {
		out.step("starting a throwaway PostgreSQL 15 (wal_level=logical) in %s", filepath.Join(dir, "pg"))
		pg, err := newPGSource(ctx, filepath.Join(dir, "pg"))
		if err != nil {
			return fmt.Errorf("demo: postgres: %w (run with --http-source to use the HTTP source instead)", err)
		}
		defer pg.close()
		src = pg
	} else {
		why := "PostgreSQL binaries not found"
		if *httpOnly {
			why = "--http-source"
		}
		out.step("%s: using the HTTP source with a generated workload", why)
		src = &httpSource{dir: dir}
	}

	// 2. The broker.
	kc, err := kafkatest.Start()
	if err != nil {
		return fmt.Errorf("demo: kafka broker: %w", err)
	}
	defer kc.Close()
	out.step("in-process Kafka-protocol broker on %s", kc.Addr)

	// 3. walship run.
	if ln, err := net.Listen("tcp", *listen); err != nil {
		*listen = "127.0.0.1:0"
	} else {
		ln.Close()
	}
	archiveDir := filepath.Join(dir, "archive")
	runYAML := fmt.Sprintf(`wal: {dir: %q}
source:
%s
archive: {url: "file://%s", timeout: 1s, snapshot_interval: 4s}
kafka: {brokers: [%q], topic_prefix: demo, mode: ordered}
http: {listen: %q}
`, filepath.Join(dir, "wal"), src.configYAML(), archiveDir, kc.Addr, *listen)
	runCfg, err := config.Parse([]byte(runYAML), os.LookupEnv)
	if err != nil {
		return fmt.Errorf("demo: config: %w", err)
	}
	d, err := daemon.New(ctx, runCfg, logger)
	if err != nil {
		return fmt.Errorf("demo: walship run: %w", err)
	}
	var wg sync.WaitGroup
	runCtx, stopRun := context.WithCancel(context.WithoutCancel(ctx))
	runErr := make(chan error, 1)
	wg.Go(func() { runErr <- d.Run(runCtx) })
	defer func() {
		stopRun()
		wg.Wait()
		if rerr := <-runErr; rerr != nil && err == nil {
			err = fmt.Errorf("demo: walship run: %w", rerr)
		}
	}()
	<-d.Ready()
	out.step("walship run: WAL %s, archive file://%s, Kafka topic demo.ordered", runCfg.WAL.Dir, archiveDir)
	out.say("\n    status page:  http://%s/status\n", d.Addr("http"))

	// 4. walship consume.
	replicaPath := filepath.Join(dir, "replica.db")
	consumeCfg, err := config.Parse([]byte(fmt.Sprintf("kafka: {brokers: [%q], topic_prefix: demo}\nreplica: {url: \"sqlite://%s\"}\nhttp: {listen: \"127.0.0.1:0\"}\n",
		kc.Addr, replicaPath)), os.LookupEnv)
	if err != nil {
		return err
	}
	cons, err := daemon.NewConsume(ctx, consumeCfg, logger)
	if err != nil {
		return fmt.Errorf("demo: walship consume: %w", err)
	}
	consCtx, stopCons := context.WithCancel(context.WithoutCancel(ctx))
	consErr := make(chan error, 1)
	wg.Go(func() { consErr <- cons.Run(consCtx) })
	defer func() {
		stopCons()
		if cerr := <-consErr; cerr != nil && err == nil {
			err = fmt.Errorf("demo: walship consume: %w", cerr)
		}
	}()
	out.step("walship consume: Kafka -> SQLite replica %s (status http://%s/status)", replicaPath, cons.Addr())

	// 5. The workload, in three phases; the source's state is recorded at
	// the end of each.
	if err := src.start(ctx, d); err != nil {
		return err
	}
	per := *txns / 3
	var marks []demoMark
	for phase := 1; phase <= 3; phase++ {
		n, err := src.phase(ctx, per)
		if err != nil {
			return fmt.Errorf("demo: workload: %w", err)
		}
		m, err := src.mark(ctx)
		if err != nil {
			return fmt.Errorf("demo: recording the source state: %w", err)
		}
		marks = append(marks, m)
		out.step("workload phase %d: %d transactions committed; source state at %s recorded (%s)", phase, n, m.at.Format("15:04:05.000000"), m.tables.summary())
		time.Sleep(20 * time.Millisecond) // distinct commit times between phases
	}

	// 6. Wait for the pipeline to catch up: everything captured, durable,
	// applied to the replica and archived.
	waitCtx, cancelWait := context.WithTimeout(ctx, 2*time.Minute)
	defer cancelWait()
	last, err := src.caughtUp(waitCtx, d)
	if err != nil {
		return fmt.Errorf("demo: waiting for capture: %w", err)
	}
	out.step("captured: WAL durable up to LSN %d", last)
	if err := cons.Consumer().WaitApplied(waitCtx, last); err != nil {
		return fmt.Errorf("demo: waiting for the replica: %w", err)
	}
	out.step("replica applied up to LSN %d", last)
	for d.Positions().Sinks[archivesink.CheckpointName] < last {
		select {
		case <-waitCtx.Done():
			return fmt.Errorf("demo: waiting for the archive: %w", waitCtx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	out.step("archive holds every transaction up to LSN %d", last)

	// 7. The proof.
	out.say("\nproof:\n")
	final := marks[len(marks)-1]
	got, err := replica.Dump(ctx, "sqlite://"+replicaPath)
	if err != nil {
		return err
	}
	if diff := replica.Diff(replica.Tables(final.tables), got); diff != "" {
		return fmt.Errorf("demo: the Kafka replica differs from the source:\n%s", diff)
	}
	st, err := replica.ReadState(ctx, "sqlite://"+replicaPath)
	if err != nil {
		return err
	}
	out.ok("Kafka replica (walship consume, SQLite) == source now: %s; %d transactions applied, each once", final.tables.summary(), st.Txns)

	ar, err := archive.Open(ctx, "file://"+archiveDir, archive.Options{})
	if err != nil {
		return err
	}
	source := pitr.NewArchiveSource(ar)
	for i, m := range marks[:len(marks)-1] {
		target := pitr.Target{Kind: pitr.Time, Time: m.at}
		plan, err := pitr.PlanRestore(ctx, source, target, pitr.PlanOptions{})
		if err != nil {
			return fmt.Errorf("demo: planning the restore to %s: %w", m.at.Format(time.RFC3339Nano), err)
		}
		path := filepath.Join(dir, fmt.Sprintf("restore-phase%d.db", i+1))
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
		out.ok("walreplay restore --target-time %s == source at the end of phase %d: %s (%d objects, %d transactions replayed)",
			m.at.Format(time.RFC3339Nano), i+1, m.tables.summary(), res.Objects, res.Txns)
	}
	keepNote := " (while --hold runs; the directory is removed at the end unless --keep or --dir)"
	if *keep || *dirFlag != "" {
		keepNote = ""
	}
	out.say("\nthe same with the command line%s:\n  walreplay list --archive file://%s\n  walreplay restore --archive file://%s --to sqlite://%s --target-time %s\n",
		keepNote, archiveDir, archiveDir, filepath.Join(dir, "restore-cli.db"), marks[0].at.Format(time.RFC3339Nano))
	if *hold > 0 {
		out.say("holding for %s; status page http://%s/status (Ctrl-C to stop)\n", *hold, d.Addr("http"))
		select {
		case <-ctx.Done():
		case <-time.After(*hold):
		}
	}
	out.say("demo finished in %s; stopping and cleaning up\n", time.Since(out.start).Round(time.Millisecond))
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
	cluster *pgtest.Cluster
	pool    *pgxpool.Pool
	rng     *rand.Rand
	mu      sync.Mutex
	orders  int64
}

const demoSchema = `
CREATE TABLE accounts (id bigint PRIMARY KEY, owner text NOT NULL, balance numeric(14,2) NOT NULL,
  updated_at timestamptz NOT NULL, tags text[], profile jsonb);
CREATE TABLE orders (id bigint PRIMARY KEY, account_id bigint NOT NULL, amount numeric(12,2) NOT NULL,
  status text NOT NULL, placed_at timestamptz NOT NULL, note text);
INSERT INTO accounts SELECT g, 'owner-' || g, 1000.00, now(), ARRAY['demo', 'tier' || (g % 3)], jsonb_build_object('n', g)
  FROM generate_series(1, 200) g;`

func newPGSource(ctx context.Context, dir string) (*pgSource, error) {
	c, err := pgtest.New(dir)
	if err != nil {
		return nil, err
	}
	p := &pgSource{cluster: c, rng: rand.New(rand.NewPCG(1, 2))}
	if err := c.CreateDB(ctx, "shop"); err != nil {
		c.Close()
		return nil, err
	}
	if p.pool, err = pgxpool.New(ctx, c.DSN("shop")); err != nil {
		c.Close()
		return nil, err
	}
	if _, err := p.pool.Exec(ctx, demoSchema); err != nil {
		p.close()
		return nil, err
	}
	return p, nil
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

// phase runs n transactions on 4 connections: a transfer between two
// accounts, a new order, and now and then an order shipped or deleted.
func (p *pgSource) phase(ctx context.Context, n int) (int, error) {
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	jobs := make(chan struct{}, n)
	for range n {
		jobs <- struct{}{}
	}
	close(jobs)
	for range 4 {
		wg.Go(func() {
			for range jobs {
				p.mu.Lock()
				a, b := 1+p.rng.IntN(200), 1+p.rng.IntN(200)
				amt := fmt.Sprintf("%d.%02d", p.rng.IntN(100), p.rng.IntN(100))
				p.orders++
				oid, roll := p.orders, p.rng.IntN(10)
				p.mu.Unlock()
				err := pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
					if _, err := tx.Exec(ctx, `UPDATE accounts SET balance = balance - $2::numeric, updated_at = clock_timestamp() WHERE id = $1`, a, amt); err != nil {
						return err
					}
					if _, err := tx.Exec(ctx, `UPDATE accounts SET balance = balance + $2::numeric, updated_at = clock_timestamp() WHERE id = $1`, b, amt); err != nil {
						return err
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
				if err != nil {
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
