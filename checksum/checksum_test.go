package checksum_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/walship/walship/change"
	"github.com/walship/walship/checkpoint"
	"github.com/walship/walship/checksum"
	"github.com/walship/walship/internal/pgtest"
	"github.com/walship/walship/pgsource"
	"github.com/walship/walship/replica"
	"github.com/walship/walship/vfs"
	"github.com/walship/walship/wal"
)

// pipe is a source database streamed by pgsource into a log that a
// goroutine applies to a SQLite and a PostgreSQL replica.
type pipe struct {
	t        *testing.T
	dsn      string
	w        *wal.WAL
	ck       *checkpoint.Store
	src      *pgsource.Source
	sqlite   string
	pg       string
	applyErr chan error
	// snapshotted is closed once the initial snapshot is applied: checks
	// before it compare with a replica still being filled.
	snapshotted chan struct{}
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func exec(t *testing.T, dsn string, sqls ...string) {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	for _, s := range sqls {
		if _, err := c.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

const rows = 400

func newPipe(t *testing.T) *pipe { return newPipeWith(t, nil) }

// newPipeWith is newPipe with the source's options changed by opts, after
// sqls ran on the source.
func newPipeWith(t *testing.T, opts func(*pgsource.Options), sqls ...string) *pipe {
	t.Helper()
	c := pgtest.Start(t)
	p := &pipe{t: t, dsn: c.DSN("postgres"), sqlite: filepath.Join(t.TempDir(), "r.db"), pg: c.DSN("replica"), applyErr: make(chan error, 1), snapshotted: make(chan struct{})}
	exec(t, p.dsn, `CREATE DATABASE replica`,
		`CREATE TABLE acct (id int PRIMARY KEY, bal bigint NOT NULL, note text, ts timestamptz, js jsonb, f float8, n numeric(12,2), b bytea, arr int[])`,
		fmt.Sprintf(`INSERT INTO acct SELECT g, g*10, 'n'||g, '2024-01-02 03:04:05+00'::timestamptz + g * interval '1 second', jsonb_build_object('g', g, 'a', 'x'), g/3.0, g*1.25, '\x00ff'::bytea, ARRAY[g, NULL] FROM generate_series(1, %d) g`, rows),
		`CREATE TABLE kv (a text, b int, v text, PRIMARY KEY (a, b))`,
		`INSERT INTO kv SELECT chr(65 + g % 26) || g, g % 7, 'v' || g FROM generate_series(1, 300) g`)
	exec(t, p.dsn, sqls...)
	dir := t.TempDir()
	w, _, err := wal.Open(wal.Options{Dir: filepath.Join(dir, "wal")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	ck, err := checkpoint.Open(context.Background(), vfs.Default, filepath.Join(dir, "ckpt"), checkpoint.Options{})
	if err != nil {
		t.Fatal(err)
	}
	p.w, p.ck = w, ck
	so := pgsource.Options{DSN: p.dsn, Heartbeat: 200 * time.Millisecond, StatusInterval: 100 * time.Millisecond, Logger: quiet}
	if opts != nil {
		opts(&so)
	}
	src, err := pgsource.New(so, w, ck)
	if err != nil {
		t.Fatal(err)
	}
	p.src = src
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	srcErr := make(chan error, 1)
	go func() { defer wg.Done(); srcErr <- src.Run(ctx) }()
	go func() { defer wg.Done(); p.applyErr <- p.apply(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	select {
	case <-p.snapshotted:
	case err := <-p.applyErr:
		t.Fatalf("applying the log stopped: %v", err)
	case err := <-srcErr:
		t.Fatalf("the source stopped: %v", err)
	case <-time.After(3 * time.Minute):
		t.Fatal("initial snapshot not applied within 3 minutes")
	}
	return p
}

// apply applies the log to both replicas as it grows.
func (p *pipe) apply(ctx context.Context) error {
	var apps []replica.Applier
	for _, u := range []string{"sqlite://" + p.sqlite, p.pg} {
		a, err := replica.Open(ctx, u, replica.Options{Logger: quiet})
		if err != nil {
			return err
		}
		defer a.Close()
		apps = append(apps, a)
	}
	r, err := p.w.NewReader(p.w.FirstLSN(), true)
	if err != nil {
		return err
	}
	defer r.Close()
	// Transactions are applied in batches of what the log already holds
	// (as walship consume does), so that a load test's replicas keep up:
	// one commit per transaction falls minutes behind on a loaded disk.
	txns := make(chan *change.Committed, 512)
	readErr := make(chan error, 1)
	readerDone := make(chan struct{})
	rctx, cancel := context.WithCancel(ctx)
	defer func() { <-readerDone }() // before r.Close: Next is not called concurrently with it
	defer cancel()
	go func() {
		defer close(readerDone)
		for {
			txn, err := r.Next(rctx)
			if err != nil {
				readErr <- err
				return
			}
			select {
			case txns <- txn:
			case <-rctx.Done():
				return
			}
		}
	}()
	for {
		var batch []change.Committed
		select {
		case txn := <-txns:
			batch = append(batch, *txn)
		case err := <-readErr:
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	more:
		for len(batch) < 200 {
			select {
			case txn := <-txns:
				batch = append(batch, *txn)
			default:
				break more
			}
		}
		for _, a := range apps {
			if err := a.Apply(ctx, batch); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
		}
		for _, txn := range batch {
			if len(txn.Changes) == 1 && txn.Changes[0].Op == change.Message && txn.Changes[0].Message.Prefix == pgsource.SnapshotDonePrefix {
				close(p.snapshotted)
			}
		}
	}
}

// waitRound waits until both replicas applied the end of round.
func (p *pipe) waitRound(round string) map[string][]replica.ChecksumResult {
	p.t.Helper()
	// The deadline is for progress: under two suites at once the replicas
	// (one commit per transaction) can be minutes behind a load test's
	// log, and catch up.
	const patience = 3 * time.Minute
	deadline := time.Now().Add(patience)
	var applied uint64
	for {
		var pos uint64
		for _, u := range []string{"sqlite://" + p.sqlite, p.pg} {
			if st, err := replica.ReadState(context.Background(), u); err == nil {
				pos += st.LSN
			}
		}
		if pos > applied {
			applied, deadline = pos, time.Now().Add(patience)
		}
		out := map[string][]replica.ChecksumResult{}
		for _, u := range []string{p.sqlite, p.pg} {
			res, err := replica.ReadChecksums(context.Background(), u)
			if err != nil && !strings.Contains(err.Error(), "no such file") {
				p.t.Fatal(err)
			}
			for _, r := range res {
				if r.Round == round && r.Table == "" {
					out[u] = res
				}
			}
		}
		if len(out) == 2 {
			return out
		}
		select {
		case err := <-p.applyErr:
			p.t.Fatalf("applying the log stopped: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("round %s not applied to both replicas, and neither advanced for %v", round, patience)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// load runs a pgbench-like workload (transfers, inserts, deletes) until
// stop is closed.
func load(t *testing.T, dsn string, stop <-chan struct{}, seed uint64) *sync.WaitGroup {
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			c, err := pgx.Connect(ctx, dsn)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close(ctx)
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			next := rows + 1000*(w+1)
			for {
				// Paced (as pgbench --rate): the replicas keep up, under
				// the race detector too.
				select {
				case <-stop:
					return
				case <-time.After(3 * time.Millisecond):
				}
				var sql string
				switch rng.IntN(5) {
				case 0, 1:
					a, b := 1+rng.IntN(rows), 1+rng.IntN(rows)
					sql = fmt.Sprintf(`BEGIN; UPDATE acct SET bal = bal - 1, ts = now() WHERE id = %d; UPDATE acct SET bal = bal + 1, js = jsonb_build_object('t', %d) WHERE id = %d; COMMIT`, a, rng.IntN(100), b)
				case 2:
					// Inserts into ranges being checked: not blocked by the
					// checks' row locks.
					sql = fmt.Sprintf(`INSERT INTO acct (id, bal) VALUES (%d, 1) ON CONFLICT DO NOTHING; INSERT INTO kv VALUES ('%c%d', %d, 'x') ON CONFLICT DO NOTHING`, next, 'A'+rng.IntN(26), rng.IntN(1000), rng.IntN(7))
					next++
					if rng.IntN(2) == 0 {
						// Also into the middle of the key space.
						sql += fmt.Sprintf(`; INSERT INTO acct (id, bal) VALUES (%d, 2) ON CONFLICT DO NOTHING`, -rng.IntN(1000000))
					}
				case 3:
					sql = fmt.Sprintf(`DELETE FROM acct WHERE id = %d; UPDATE kv SET v = v || 'u' WHERE b = %d AND a LIKE '%c%%'`, rows+1000*(w+1)+rng.IntN(50), rng.IntN(7), 'A'+rng.IntN(26))
				case 4:
					sql = fmt.Sprintf(`UPDATE acct SET note = note || 'x', n = n + 0.01 WHERE id BETWEEN %d AND %d`, 1+rng.IntN(rows), 1+rng.IntN(rows))
				}
				// Like pgbench --max-tries: the workload's own transactions
				// may deadlock with each other; a check never makes them.
				if _, err := c.Exec(ctx, sql); err != nil {
					var pe *pgconn.PgError
					if errors.As(err, &pe) && pe.Code == "40P01" && !checkInCycle(pe) {
						c.Exec(ctx, "ROLLBACK")
						continue
					}
					t.Error(err)
					return
				}
			}
		}()
	}
	return &wg
}

func TestRoundsUnderLoadAllEqual(t *testing.T) {
	p := newPipe(t)
	stop := make(chan struct{})
	wg := load(t, p.dsn, stop, 1)
	r := checksum.New(checksum.Options{DSN: p.dsn, ChunkRows: 80, Rate: 1000, Logger: quiet})
	ctx := context.Background()
	var round string
	began := time.Now()
	for i := range 10 {
		if _, err := r.Round(ctx, ""); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		round = r.Status().LastRound
	}
	t.Logf("10 rounds under load in %v", time.Since(began))
	close(stop)
	wg.Wait()
	for u, res := range p.waitRound(round) {
		rounds := 0
		for _, id := range roundIDs(res) {
			rep := checksum.Summarize(upTo(res, id))
			if rep.Round != id || rep.Exit() != checksum.ExitEqual {
				var b strings.Builder
				rep.Print(&b)
				t.Fatalf("replica %s, round %s: exit %d\n%s", u, id, rep.Exit(), b.String())
			}
			if len(rep.Tables) != 2 || rep.Tables[0].Chunks < 4 {
				t.Fatalf("replica %s, round %s: tables %+v", u, id, rep.Tables)
			}
			for _, tb := range rep.Tables {
				if len(tb.Unsettled) > 0 {
					t.Logf("replica %s, round %s, %s: %d unsettled chunk(s)", u, id, tb.Table, len(tb.Unsettled))
				}
			}
			rounds++
		}
		if rounds != 10 {
			t.Fatalf("replica %s: %d rounds finished, want 10", u, rounds)
		}
	}
}

// roundIDs returns the rounds that ended in res, in order.
func roundIDs(res []replica.ChecksumResult) []string {
	var out []string
	for _, r := range res {
		if r.Table == "" {
			out = append(out, r.Round)
		}
	}
	return out
}

// upTo returns res up to the end of round id.
func upTo(res []replica.ChecksumResult, id string) []replica.ChecksumResult {
	for i, r := range res {
		if r.Table == "" && r.Round == id {
			return res[:i+1]
		}
	}
	return res
}

func TestReplicaChangedByHandIsReported(t *testing.T) {
	p := newPipe(t)
	r := checksum.New(checksum.Options{DSN: p.dsn, ChunkRows: 100, Logger: quiet})
	ctx := context.Background()
	if _, err := r.Round(ctx, ""); err != nil {
		t.Fatal(err)
	}
	for u, res := range p.waitRound(r.Status().LastRound) {
		if rep := checksum.Summarize(res); rep.Exit() != checksum.ExitEqual {
			t.Fatalf("replica %s before the change: exit %d: %+v\n%+v", u, rep.Exit(), rep, res)
		}
	}
	// SQLite: a row changed (chunk 1) and one deleted (chunk 3); PostgreSQL:
	// a row inserted past the source's last key (the last, open chunk) and
	// one changed in the text-keyed table.
	exec(t, p.pg, `INSERT INTO acct (id, bal) VALUES (100000, 5)`, `UPDATE kv SET v = 'hand' WHERE a = 'B1' AND b = 1`)
	sq, err := replicaSQLite(p.sqlite)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sq.ExecContext(ctx, `UPDATE acct SET bal = -1 WHERE id = 50; DELETE FROM acct WHERE id = 250`); err != nil {
		t.Fatal(err)
	}
	sq.Close()
	if _, err := r.Round(ctx, ""); err != nil {
		t.Fatal(err)
	}
	got := p.waitRound(r.Status().LastRound)
	check := func(u string, want map[string]string) {
		t.Helper()
		rep := checksum.Summarize(got[u])
		if rep.Exit() != checksum.ExitDifferent {
			t.Fatalf("replica %s: exit %d, want %d: %+v", u, rep.Exit(), checksum.ExitDifferent, rep)
		}
		seen := map[string]string{}
		for _, tb := range rep.Tables {
			var rs []string
			for _, d := range tb.Different {
				rs = append(rs, d.String())
			}
			if len(rs) > 0 {
				seen[tb.Table] = strings.Join(rs, " ")
			}
		}
		if fmt.Sprint(seen) != fmt.Sprint(want) {
			t.Fatalf("replica %s: different chunks %v, want %v", u, seen, want)
		}
	}
	check(p.sqlite, map[string]string{"public.acct": "(-inf, 100] (200, 300]"})
	check(p.pg, map[string]string{"public.acct": "(400, +inf)", "public.kv": kvRange(t, p.dsn, "B1", 1)})
}

// kvRange returns the range of the 100-row chunk of kv that holds (a, b).
func kvRange(t *testing.T, dsn, a string, b int) string {
	ctx := context.Background()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var pos int
	if err := c.QueryRow(ctx, `SELECT count(*) FROM kv WHERE (a COLLATE "C", b) < ($1, $2)`, a, b).Scan(&pos); err != nil {
		t.Fatal(err)
	}
	var keys []string
	rows, err := c.Query(ctx, `SELECT a || ',' || b FROM kv ORDER BY a COLLATE "C", b`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var k string
		rows.Scan(&k)
		keys = append(keys, k)
	}
	rows.Close()
	chunk := pos / 100
	rg := checksum.Range{}
	if chunk > 0 {
		rg.After = strings.Split(keys[chunk*100-1], ",")
	}
	if (chunk+1)*100 < len(keys) || len(keys)%100 == 0 && (chunk+1)*100 == len(keys) {
		rg.Hi = strings.Split(keys[(chunk+1)*100-1], ",")
	}
	return rg.String()
}

// replicaSQLite opens a SQLite replica to change it by hand.
func replicaSQLite(path string) (*sql.DB, error) { return sql.Open("sqlite", path) }

// checkInCycle reports whether a deadlock involved a check's transaction
// (its query text is in the detail).
func checkInCycle(pe *pgconn.PgError) bool {
	return strings.Contains(pe.Detail, "FOR SHARE") || strings.Contains(pe.Detail, "pg_logical_emit_message")
}

// TestRoundResumesAfterRestart: a runner stopped in the middle of a round
// resumes it from its checkpoint: the same round ends with every chunk
// checked once and equal.
func TestRoundResumesAfterRestart(t *testing.T) {
	p := newPipe(t)
	opts := checksum.Options{DSN: p.dsn, ChunkRows: 20, Rate: 20, Store: p.ck, Logger: quiet}
	r := checksum.New(opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	if err := r.Start("acct"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for r.Status().Chunks < 5 {
		if time.Now().After(deadline) {
			t.Fatalf("round made no progress: %+v", r.Status())
		}
		time.Sleep(20 * time.Millisecond)
	}
	round := r.Status().Round
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if ck, ok := p.ck.Get(checksum.CheckpointName); !ok || !strings.Contains(string(ck.Payload), round) {
		t.Fatalf("no progress stored for round %s: %+v", round, ck)
	}
	r2 := checksum.New(opts)
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	go r2.Run(ctx2)
	for _, res := range p.waitRound(round) {
		rep := checksum.Summarize(res)
		if rep.Round != round || rep.Exit() != checksum.ExitEqual || len(rep.Tables) != 1 || rep.Tables[0].Chunks != rows/20+1 {
			t.Fatalf("resumed round: %+v", rep)
		}
	}
}

// TestRoundsOverFilteredAndProtectedTables: what walship does not copy as
// it is — rows outside a publication's row filter, hashed and masked
// columns, generated columns (pgoutput leaves them out) — is not compared,
// so replicas of such tables check equal.
func TestRoundsOverFilteredAndProtectedTables(t *testing.T) {
	p := newPipeWith(t, func(o *pgsource.Options) {
		o.HashSalt = "salt"
		o.Tables = []pgsource.TableSpec{{Name: "public.acct"}, {Name: "public.kv"},
			{Name: "public.pf", Where: "amount > 50", Hash: []string{"email"}, Mask: []string{"phone"}}}
	}, `CREATE TABLE pf (id int PRIMARY KEY, amount int, email text, phone text, g int GENERATED ALWAYS AS (id * 2) STORED)`,
		`ALTER TABLE pf REPLICA IDENTITY FULL`, // a row filter on a non-key column needs it
		`INSERT INTO pf (id, amount, email, phone) SELECT g, g, 'u' || g || '@example.com', '555-' || g FROM generate_series(1, 200) g`)
	r := checksum.New(checksum.Options{DSN: p.dsn, ChunkRows: 40, Logger: quiet,
		Protected: map[string][]string{"public.pf": {"email", "phone"}}})
	ctx := context.Background()
	exec(t, p.dsn, `UPDATE pf SET amount = amount + 1, email = 'x' || email WHERE id % 3 = 0`, `DELETE FROM pf WHERE id % 11 = 0`)
	if _, err := r.Round(ctx, ""); err != nil {
		t.Fatal(err)
	}
	for u, res := range p.waitRound(r.Status().LastRound) {
		rep := checksum.Summarize(res)
		if rep.Exit() != checksum.ExitEqual {
			t.Fatalf("replica %s: exit %d, want every chunk equal: %+v", u, rep.Exit(), rep)
		}
		pf := 0
		for _, x := range res {
			if x.Table == "public.pf" {
				pf++
			}
		}
		if pf == 0 {
			t.Fatalf("replica %s: no chunk of public.pf was checked", u)
		}
	}
}

// TestRoundsOverUUIDKeysAndCharColumns: a table keyed by uuid is checked
// (its key compares by bytes without a collation, which uuid refuses),
// and char(n) values, padded in a SQLite replica and not in PostgreSQL's
// text output, check equal.
func TestRoundsOverUUIDKeysAndCharColumns(t *testing.T) {
	p := newPipeWith(t, nil, `CREATE TABLE u (id uuid PRIMARY KEY, code char(6), v int)`,
		`INSERT INTO u SELECT md5(g::text)::uuid, 'c' || (g % 10), g FROM generate_series(1, 120) g`)
	r := checksum.New(checksum.Options{DSN: p.dsn, ChunkRows: 50, Logger: quiet})
	if _, err := r.Round(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
	for u, res := range p.waitRound(r.Status().LastRound) {
		rep := checksum.Summarize(res)
		if rep.Exit() != checksum.ExitEqual {
			t.Fatalf("replica %s: exit %d, want every chunk equal: %+v", u, rep.Exit(), rep)
		}
		n := 0
		for _, x := range res {
			if x.Table == "public.u" {
				n++
			}
		}
		if n < 3 {
			t.Fatalf("replica %s: %d checks of public.u, want its 3 chunks", u, n)
		}
	}
}

// TestRoundOverUUIDKeyedTable: a uuid key compares without COLLATE "C"
// (PostgreSQL refuses a collation on uuid, which failed every round of
// such a table), in chunks whose bounds are uuids, equal in both replicas.
func TestRoundOverUUIDKeyedTable(t *testing.T) {
	p := newPipeWith(t, nil, `CREATE TABLE u (id uuid PRIMARY KEY, v int)`,
		`INSERT INTO u SELECT md5(g::text)::uuid, g FROM generate_series(1, 100) g`)
	r := checksum.New(checksum.Options{DSN: p.dsn, ChunkRows: 40, Logger: quiet})
	if _, err := r.Round(context.Background(), "public.u"); err != nil {
		t.Fatalf("round over a uuid-keyed table: %v", err)
	}
	for u, res := range p.waitRound(r.Status().LastRound) {
		if rep := checksum.Summarize(res); rep.Exit() != checksum.ExitEqual || len(rep.Tables) != 1 || rep.Tables[0].Chunks != 3 {
			t.Errorf("replica %s: exit %d, want 3 equal chunks of public.u: %+v", u, rep.Exit(), rep)
		}
	}
}

// TestCharColumnChecksEqual: char(n) values check equal although a
// SQLite replica holds the padded text the stream carries and the
// source's text output drops the padding.
func TestCharColumnChecksEqual(t *testing.T) {
	p := newPipeWith(t, nil, `CREATE TABLE cp (id int PRIMARY KEY, c char(5))`,
		`INSERT INTO cp SELECT g, 'ab' FROM generate_series(1, 10) g`)
	r := checksum.New(checksum.Options{DSN: p.dsn, ChunkRows: 40, Logger: quiet})
	if _, err := r.Round(context.Background(), "public.cp"); err != nil {
		t.Fatal(err)
	}
	for u, res := range p.waitRound(r.Status().LastRound) {
		if rep := checksum.Summarize(res); rep.Exit() != checksum.ExitEqual {
			t.Errorf("replica %s: exit %d (identical data reported different): %+v", u, rep.Exit(), rep)
		}
	}
}

// TestFailingTableDoesNotBlockTheRound: a table whose check the source
// refuses (here: the checking role may not read it) is logged and left
// out of the round; the tables after it are still checked and the round
// ends, instead of failing at that table at every retry.
func TestFailingTableDoesNotBlockTheRound(t *testing.T) {
	p := newPipeWith(t, nil, `CREATE TABLE hidden (id int PRIMARY KEY)`,
		`INSERT INTO hidden SELECT generate_series(1, 10)`,
		// pg_logical_emit_message needs REPLICATION; FOR SHARE needs UPDATE.
		`CREATE ROLE checker LOGIN REPLICATION`, `GRANT SELECT, UPDATE ON acct, kv TO checker`)
	dsn := strings.Replace(p.dsn, "postgres@", "checker@", 1)
	r := checksum.New(checksum.Options{DSN: dsn, ChunkRows: 100, Logger: quiet})
	if _, err := r.Round(context.Background(), ""); err != nil {
		t.Fatalf("round with one unreadable table: %v", err)
	}
	if st := r.Status(); !strings.Contains(st.LastError, "public.hidden") {
		t.Errorf("status %+v: want the unchecked table in last_error", st)
	}
	for u, res := range p.waitRound(r.Status().LastRound) {
		rep := checksum.Summarize(res)
		var tables []string
		for _, tb := range rep.Tables {
			tables = append(tables, tb.Table)
		}
		// kv sorts after hidden: it was checked after the failure.
		if rep.Exit() != checksum.ExitEqual || fmt.Sprint(tables) != "[public.acct public.kv]" {
			t.Errorf("replica %s: exit %d, tables %v; want acct and kv equal", u, rep.Exit(), tables)
		}
	}
}
