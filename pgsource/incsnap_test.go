package pgsource

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/walship/walship/change"
	"github.com/walship/walship/internal/pgtest"
)

// waitFor polls cond until it holds, failing after d.
func waitFor(t *testing.T, r *running, d time.Duration, what string, cond func(Stats) bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond(r.src.Stats()) {
		select {
		case err := <-r.done:
			r.done <- err
			t.Fatalf("Run returned while waiting for %s: %v", what, err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %+v", what, d, r.src.Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// load runs updates, inserts and deletes on public.acc (ids 1..n+) from
// a few connections until stopped.
type load struct {
	stop  chan struct{}
	wg    sync.WaitGroup
	stmts atomic.Int64
	err   atomic.Pointer[error]
}

func startLoad(t *testing.T, dsn string, n int) *load {
	l := &load{stop: make(chan struct{})}
	var next atomic.Int64
	next.Store(int64(n) + 1)
	for w := 0; w < 3; w++ {
		l.wg.Add(1)
		go func(seed int64) {
			defer l.wg.Done()
			ctx := context.Background()
			c, err := pgx.Connect(ctx, dsn)
			if err != nil {
				l.err.Store(&err)
				return
			}
			defer c.Close(ctx)
			rng := rand.New(rand.NewSource(seed))
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				id := rng.Intn(n) + 1
				var sql string
				switch rng.Intn(4) {
				case 0:
					sql = fmt.Sprintf("DELETE FROM acc WHERE id = %d", id)
				case 1:
					sql = fmt.Sprintf("INSERT INTO acc VALUES (%d, 0, 'ins') ON CONFLICT (id) DO UPDATE SET v = acc.v + 1000", id)
				case 2:
					sql = fmt.Sprintf("INSERT INTO acc VALUES (%d, 0, 'new')", next.Add(1))
				default:
					sql = fmt.Sprintf("UPDATE acc SET v = v + 1, pad = 'upd' WHERE id BETWEEN %d AND %d", id, id+3)
				}
				if _, err := c.Exec(ctx, sql); err != nil {
					l.err.Store(&err)
					return
				}
				l.stmts.Add(1)
			}
		}(seed(w))
	}
	return l
}

func seed(w int) int64 { return time.Now().UnixNano() + int64(w) }

func (l *load) end(t *testing.T) {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	if p := l.err.Load(); p != nil {
		t.Fatalf("load: %v", *p)
	}
}

var accPKs = map[string][]string{"public.acc": {"id"}}

// checkIncrementalLog checks that no watermark reached the log and
// returns the number of incremental reads in it.
func checkIncrementalLog(t *testing.T, txns []change.Committed) int {
	t.Helper()
	reads := 0
	for _, txn := range txns {
		for _, c := range txn.Changes {
			if c.Op == change.Message && c.Message.Prefix == WatermarkPrefix {
				t.Fatalf("watermark message in the log: %+v", txn.Header)
			}
			if c.Op == change.Read && txn.Header.SourceLSN != 0 { // the initial snapshot's have none
				if txn.Header.Snapshot != change.SnapshotIncremental {
					t.Fatalf("incremental read in a transaction with header %+v", txn.Header)
				}
				reads++
			}
		}
	}
	return reads
}

// TestIncrementalSnapshotUnderLoad copies a table with no initial
// snapshot (only the incremental snapshot brings its existing rows)
// while three clients update, insert and delete its rows; replaying the
// log gives exactly the source's table. Without the window's removal of
// changed keys, rows deleted or changed during a chunk's window come back
// stale.
func TestIncrementalSnapshotUnderLoad(t *testing.T) {
	e := newEnv(t, pgtest.WithoutFsync())
	const n = 20000
	e.exec(`CREATE TABLE acc (id int PRIMARY KEY, v int, pad text)`,
		fmt.Sprintf(`INSERT INTO acc SELECT g, g, 'row' FROM generate_series(1, %d) g`, n))
	cfg := testConfig(e.dsn)
	cfg.Snapshot = "never"
	cfg.SnapshotChunkRows = 250
	r := e.run(cfg)
	e.waitSlot("walship")
	waitFor(t, r, 60*time.Second, "streaming", func(s Stats) bool { return s.ConfirmedLSN > 0 })
	l := startLoad(t, e.dsn, n)
	req, err := r.src.RequestSnapshot(context.Background(), "public.acc", "")
	if err != nil {
		t.Fatal(err)
	}
	if req.ID == "" || req.Table != "public.acc" {
		t.Fatalf("request %+v", req)
	}
	waitFor(t, r, 5*time.Minute, "incremental snapshot done", func(s Stats) bool {
		return s.IncrementalPending == 0 && s.IncrementalChunks > 0
	})
	l.end(t)
	e.catchUp(r, 150*time.Second)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	st := r.src.Stats()
	if st.IncrementalChunks < n/2/250 || st.IncrementalRows < n/2 {
		t.Errorf("incremental stats %+v", st)
	}
	txns := readLog(t, e.w)
	if reads := checkIncrementalLog(t, txns); reads < n/2 {
		t.Errorf("%d incremental reads in the log, want most of %d rows", reads, n)
	}
	t.Logf("%d load statements, %d chunks, %d rows read", l.stmts.Load(), st.IncrementalChunks, st.IncrementalRows)
	compareModels(t, replay(t, txns, accPKs), sourceModel(t, e.dsn, accPKs))
}

// TestIncrementalSnapshotResumes stops the source in the middle of an
// incremental snapshot under load; the next run continues after the last
// chunk recorded (copying fewer rows than the table has) and the replay
// equals the source.
func TestIncrementalSnapshotResumes(t *testing.T) {
	e := newEnv(t, pgtest.WithoutFsync())
	const n = 20000
	e.exec(`CREATE TABLE acc (id int PRIMARY KEY, v int, pad text)`,
		fmt.Sprintf(`INSERT INTO acc SELECT g, g, 'row' FROM generate_series(1, %d) g`, n))
	cfg := testConfig(e.dsn)
	cfg.Snapshot = "never"
	cfg.SnapshotChunkRows = 100
	r := e.run(cfg)
	e.waitSlot("walship")
	waitFor(t, r, 60*time.Second, "streaming", func(s Stats) bool { return s.ConfirmedLSN > 0 })
	l := startLoad(t, e.dsn, n)
	if _, err := r.src.RequestSnapshot(context.Background(), "public.acc", ""); err != nil {
		t.Fatal(err)
	}
	waitFor(t, r, 3*time.Minute, "some chunks copied", func(s Stats) bool { return s.IncrementalChunks >= 20 })
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	first := r.src.Stats()
	if first.IncrementalPending != 1 {
		t.Fatalf("stopped after the snapshot finished (make the table larger): %+v", first)
	}
	r2 := e.run(cfg)
	waitFor(t, r2, time.Minute, "request loaded from the checkpoint", func(s Stats) bool { return s.IncrementalPending == 1 })
	if reqs := r2.src.SnapshotRequests(); len(reqs) != 1 || reqs[0].Table != "public.acc" || reqs[0].Max == nil {
		t.Fatalf("requests after the restart: %+v", reqs)
	}
	waitFor(t, r2, 5*time.Minute, "resumed incremental snapshot done", func(s Stats) bool {
		return s.IncrementalPending == 0 && s.IncrementalChunks > 0
	})
	l.end(t)
	e.catchUp(r2, 150*time.Second)
	if err := r2.stop(); err != nil {
		t.Fatal(err)
	}
	second := r2.src.Stats()
	// The copy stops at the table's last key when it began (about n):
	// the first run's 2,000 rows or more are not copied again.
	if second.IncrementalRows > uint64(n)-1000 {
		t.Errorf("the second run copied %d rows after the first copied %d: not resumed", second.IncrementalRows, first.IncrementalRows)
	}
	txns := readLog(t, e.w)
	checkIncrementalLog(t, txns)
	compareModels(t, replay(t, txns, accPKs), sourceModel(t, e.dsn, accPKs))
}

// TestIncrementalBackfillAndSignal: a table added to Tables after the
// initial snapshot is backfilled on the next start (once: a later start
// does not copy it again), and a row in the signal table starts a
// snapshot restricted by its filter. RequestSnapshot's errors name the
// problem.
func TestIncrementalBackfillAndSignal(t *testing.T) {
	e := newEnv(t, pgtest.WithoutFsync())
	e.exec(`CREATE TABLE a (id int PRIMARY KEY, v int)`, `INSERT INTO a SELECT g, g FROM generate_series(1, 500) g`,
		`CREATE TABLE sig (id text PRIMARY KEY, type text, data text)`)
	cfg := testConfig(e.dsn)
	cfg.Tables = []TableSpec{{Name: "public.a"}, {Name: "public.sig"}}
	cfg.SignalTable = "public.sig"
	cfg.SnapshotChunkRows = 100
	r := e.run(cfg)
	waitFor(t, r, 60*time.Second, "initial snapshot", func(s Stats) bool { return s.SnapshotDone })
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	e.exec(`CREATE TABLE b (id int PRIMARY KEY, v text)`, `INSERT INTO b SELECT g, 'b' || g FROM generate_series(1, 3000) g`,
		`CREATE TABLE nokey (v int)`, `CREATE TABLE other (id int PRIMARY KEY)`)
	cfg.Tables = append(cfg.Tables, TableSpec{Name: "public.b"}, TableSpec{Name: "public.nokey"})
	r = e.run(cfg)
	waitFor(t, r, 60*time.Second, "streaming", func(s Stats) bool { return s.ConfirmedLSN > 0 })
	e.exec(`UPDATE b SET v = 'changed' WHERE id % 10 = 0`, `DELETE FROM b WHERE id % 7 = 0`, `INSERT INTO b VALUES (5000, 'new')`)
	waitFor(t, r, 2*time.Minute, "backfill done", func(s Stats) bool {
		return s.IncrementalPending == 0 && s.IncrementalChunks > 0
	})
	backfilled := r.src.Stats().IncrementalRows
	if backfilled == 0 || backfilled > 3001 {
		t.Errorf("backfill copied %d rows of b", backfilled)
	}

	// Errors.
	ctx := context.Background()
	for _, c := range []struct {
		table, where string
		want         error
	}{
		{"public.missing", "", ErrUnknownTable},
		{"public.other", "", ErrNotPublished},
		{"public.nokey", "", ErrNoPrimaryKey},
		{"public.a", "no_such_column > 1", ErrBadRequest},
		{"not a name", "", ErrBadRequest},
	} {
		if _, err := r.src.RequestSnapshot(ctx, c.table, c.where); !errors.Is(err, c.want) {
			t.Errorf("RequestSnapshot(%q, %q) = %v, want %v", c.table, c.where, err, c.want)
		}
	}

	// A signal with a filter.
	e.exec(`INSERT INTO sig VALUES ('s1', 'execute-snapshot', '{"data-collections": ["public.a"],
		"additional-conditions": [{"data-collection": "public.a", "filter": "id <= 42"}]}')`)
	waitFor(t, r, 2*time.Minute, "signalled snapshot done", func(s Stats) bool {
		return s.IncrementalPending == 0 && s.IncrementalRows >= backfilled+42
	})
	e.catchUp(r, 60*time.Second)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	if got := r.src.Stats().IncrementalRows - backfilled; got != 42 {
		t.Errorf("signalled snapshot copied %d rows, want 42 (id <= 42)", got)
	}

	// A later start does not backfill again.
	r = e.run(cfg)
	e.exec(`INSERT INTO b VALUES (5001, 'later')`)
	e.catchUp(r, 60*time.Second)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	if st := r.src.Stats(); st.IncrementalRows != 0 || st.IncrementalPending != 0 {
		t.Errorf("third start copied again: %+v", st)
	}

	// b leaves the configuration (and the publication), changes while it
	// is gone, and comes back: it is backfilled again, so that what it
	// missed reaches the log.
	with := cfg.Tables
	cfg.Tables = slices.DeleteFunc(slices.Clone(cfg.Tables), func(t TableSpec) bool { return t.Name == "public.b" })
	r = e.run(cfg)
	waitFor(t, r, 60*time.Second, "streaming without b", func(s Stats) bool { return s.ConfirmedLSN > 0 })
	e.exec(`UPDATE b SET v = 'while away' WHERE id <= 5`, `INSERT INTO b VALUES (6000, 'while away')`)
	e.catchUp(r, 60*time.Second)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	cfg.Tables = with
	r = e.run(cfg)
	waitFor(t, r, 2*time.Minute, "b backfilled again", func(s Stats) bool {
		return s.IncrementalPending == 0 && s.IncrementalChunks > 0
	})
	e.catchUp(r, 60*time.Second)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	txns := readLog(t, e.w)
	checkIncrementalLog(t, txns)
	pks := map[string][]string{"public.a": {"id"}, "public.b": {"id"}, "public.sig": {"id"}}
	var kept []change.Committed
	for _, txn := range txns {
		if len(txn.Changes) > 0 && txn.Changes[0].Table.Name == "nokey" {
			continue
		}
		kept = append(kept, txn)
	}
	compareModels(t, replay(t, kept, pks), sourceModel(t, e.dsn, pks))
}

// TestIncrementalSnapshotUnderPgbench: pgbench's own tables, filled by
// `pgbench -i` before capture starts, are brought into the log only by
// incremental snapshots taken while `pgbench` runs its TPC-B-like load
// (every transaction updates an account, a teller and a branch, and
// appends to the keyless pgbench_history). Replaying the log gives
// exactly the source's accounts, tellers and branches.
func TestIncrementalSnapshotUnderPgbench(t *testing.T) {
	e := newEnv(t, pgtest.WithoutFsync())
	pgbench := func(ctx context.Context, args ...string) *exec.Cmd {
		return exec.CommandContext(ctx, filepath.Join(e.c.BinDir(), "pgbench"), append(args, e.dsn)...)
	}
	if out, err := pgbench(context.Background(), "-i", "-s", "1", "-q").CombinedOutput(); err != nil {
		t.Fatalf("pgbench -i: %v\n%s", err, out)
	}
	cfg := testConfig(e.dsn)
	cfg.Snapshot = "never"
	cfg.SnapshotChunkRows = 2000
	r := e.run(cfg)
	e.waitSlot("walship")
	waitFor(t, r, 60*time.Second, "streaming", func(s Stats) bool { return s.ConfirmedLSN > 0 })

	ctx, stop := context.WithCancel(context.Background())
	load := pgbench(ctx, "-n", "-c", "4", "-j", "2", "-T", "600")
	var out bytes.Buffer
	load.Stdout, load.Stderr = &out, &out
	if err := load.Start(); err != nil {
		t.Fatal(err)
	}
	loadDone := make(chan error, 1)
	go func() { loadDone <- load.Wait() }()
	for _, tb := range []string{"public.pgbench_branches", "public.pgbench_tellers", "public.pgbench_accounts"} {
		if _, err := r.src.RequestSnapshot(context.Background(), tb, ""); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, r, 5*time.Minute, "incremental snapshots done", func(s Stats) bool {
		return s.IncrementalPending == 0 && s.IncrementalRows >= 100000
	})
	stop() // pgbench's transaction in flight is rolled back: never streamed
	select {
	case <-loadDone:
	case <-time.After(time.Minute):
		t.Fatal("pgbench did not stop")
	}
	e.catchUp(r, 150*time.Second)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	txns := readLog(t, e.w)
	checkIncrementalLog(t, txns)
	pks := map[string][]string{"public.pgbench_accounts": {"aid"}, "public.pgbench_tellers": {"tid"},
		"public.pgbench_branches": {"bid"}}
	var keyed []change.Committed
	history := 0
	for _, txn := range txns {
		var cs []change.Change
		for _, c := range txn.Changes {
			if c.Table.Name == "pgbench_history" {
				history++
				continue
			}
			cs = append(cs, c)
		}
		txn.Changes = cs
		keyed = append(keyed, txn)
	}
	if history == 0 {
		t.Fatalf("no pgbench transaction was streamed (pgbench output:\n%s)", out.String())
	}
	compareModels(t, replay(t, keyed, pks), sourceModel(t, e.dsn, pks))
}

// TestIncrementalWhereIsOneExpression: a request's where clause that
// closes the expression and appends statements of its own is refused
// (ErrBadRequest) and none of its statements runs.
func TestIncrementalWhereIsOneExpression(t *testing.T) {
	e := newEnv(t, pgtest.WithoutFsync())
	e.exec(`CREATE TABLE a (id int PRIMARY KEY, v int)`, `INSERT INTO a SELECT g, g FROM generate_series(1, 20) g`)
	r := e.run(testConfig(e.dsn))
	waitFor(t, r, 60*time.Second, "initial snapshot", func(s Stats) bool { return s.SnapshotDone })
	for _, where := range []string{"true) LIMIT 0; DELETE FROM a; SELECT (1", "v > 0); DELETE FROM a WHERE (true"} {
		if _, err := r.src.RequestSnapshot(context.Background(), "public.a", where); !errors.Is(err, ErrBadRequest) {
			t.Errorf("where %q: err %v, want ErrBadRequest", where, err)
		}
	}
	var n int
	if err := e.conn().QueryRow(context.Background(), `SELECT count(*) FROM a`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 20 {
		t.Fatalf("a where clause's statements ran: %d rows left of 20", n)
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
}
