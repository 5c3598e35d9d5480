package pgsource

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/walship/walship/change"
	"github.com/walship/walship/checkpoint"
	"github.com/walship/walship/internal/pgtest"
	"github.com/walship/walship/vfs"
	"github.com/walship/walship/wal"
)

// The re-exec pattern: with PGSOURCE_CHILD_DIR set, the test binary is a
// source process (WAL and checkpoints in that dir) that prints its Stats as
// JSON lines until SIGTERM (graceful) or SIGKILL.
func TestMain(m *testing.M) {
	if dir := os.Getenv("PGSOURCE_CHILD_DIR"); dir != "" {
		os.Exit(childMain(dir))
	}
	os.Exit(m.Run())
}

func childMain(dir string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	w, _, err := wal.Open(wal.Options{Dir: filepath.Join(dir, "wal")})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	defer w.Close()
	ck, err := checkpoint.Open(ctx, vfs.Default, filepath.Join(dir, "ckpt"), checkpoint.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	cfg := Options{DSN: os.Getenv("PGSOURCE_CHILD_DSN"), Heartbeat: 200 * time.Millisecond,
		StatusInterval: 50 * time.Millisecond, MaxTxnMemory: 2 << 20, SpillDir: dir,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))}
	cfg.SnapshotChunkRows, _ = strconv.Atoi(os.Getenv("PGSOURCE_CHILD_CHUNK"))
	if v := os.Getenv("PGSOURCE_CHILD_STATUS"); v != "" {
		cfg.StatusInterval, _ = time.ParseDuration(v)
	}
	src, err := New(cfg, w, ck)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()
	enc := json.NewEncoder(os.Stdout)
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case err := <-done:
			enc.Encode(src.Stats())
			if err != nil {
				fmt.Fprintln(os.Stderr, "child: Run:", err)
				return 1
			}
			if err := w.Close(); err != nil {
				fmt.Fprintln(os.Stderr, "child: close:", err)
				return 1
			}
			return 0
		case <-t.C:
			enc.Encode(src.Stats())
		}
	}
}

type child struct {
	t      *testing.T
	cmd    *exec.Cmd
	mu     sync.Mutex
	stats  Stats
	exited chan error
}

func startChild(t *testing.T, dir, dsn string, chunk int, env ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "PGSOURCE_CHILD_DIR="+dir, "PGSOURCE_CHILD_DSN="+dsn,
		"PGSOURCE_CHILD_CHUNK="+strconv.Itoa(chunk))
	cmd.Env = append(cmd.Env, env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{t: t, cmd: cmd, exited: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var st Stats
			if json.Unmarshal(sc.Bytes(), &st) == nil {
				c.mu.Lock()
				c.stats = st
				c.mu.Unlock()
			}
		}
		c.exited <- cmd.Wait()
	}()
	t.Cleanup(func() { cmd.Process.Kill() })
	return c
}

func (c *child) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

// waitFor waits until pred holds for the child's stats.
func (c *child) waitFor(what string, timeout time.Duration, pred func(Stats) bool) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for !pred(c.Stats()) {
		select {
		case err := <-c.exited:
			c.exited <- err
			c.t.Fatalf("child exited (%v) while waiting for %s", err, what)
		default:
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("timed out waiting for %s: %+v", what, c.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (c *child) kill() {
	c.t.Helper()
	c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.exited
}

func (c *child) term() error {
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-c.exited:
		return err
	case <-time.After(60 * time.Second):
		return errors.New("child did not exit within 60s of SIGTERM")
	}
}

// refTxn is a committed source transaction as the reference slot
// (test_decoding) reports it.
type refTxn struct {
	xid uint64
	end pglogrepl.LSN
}

func refTxns(t *testing.T, dsn string) []refTxn {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT lsn, xid::text::int8 FROM pg_logical_slot_peek_changes('ref', NULL, NULL,
		'include-xids', '1', 'skip-empty-xacts', '1') WHERE data LIKE 'COMMIT%'`)
	if err != nil {
		t.Fatal(err)
	}
	var out []refTxn
	for rows.Next() {
		var r refTxn
		var xid int64
		if err := rows.Scan(&r.end, &xid); err != nil {
			t.Fatal(err)
		}
		r.xid = uint64(xid)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// checkLog opens the (dead) child's WAL and checks invariant 4: the log's
// streamed transactions are exactly the source's first N, in commit order,
// once each; every source transaction at or below the slot's confirmed
// flush LSN is among them. With complete, N must be all of them.
func checkLog(t *testing.T, dir, dsn string, complete bool) []change.Committed {
	t.Helper()
	ref := refTxns(t, dsn)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var confirmed pglogrepl.LSN
	if err := conn.QueryRow(ctx, "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'walship'").
		Scan(&confirmed); err != nil {
		t.Fatal(err)
	}
	l, _, err := wal.OpenReadOnly(vfs.Default, filepath.Join(dir, "wal"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var txns []change.Committed
	r, err := l.NewReader(l.FirstLSN(), false)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var xids []uint64
	for {
		txn, err := r.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		txns = append(txns, *txn)
		if txn.Header.SourceLSN != 0 {
			xids = append(xids, txn.Header.XID)
		}
	}
	if len(xids) > len(ref) {
		t.Fatalf("log has %d streamed transactions, the source committed only %d", len(xids), len(ref))
	}
	for i, x := range xids {
		if ref[i].xid != x {
			t.Fatalf("log transaction %d has xid %d, source's %d-th commit is xid %d (duplicate, gap or reorder)", i, x, i, ref[i].xid)
		}
	}
	for _, rt := range ref[len(xids):] {
		if rt.end <= confirmed {
			t.Fatalf("slot confirmed %s but source transaction %d (end %s) is not in the log", confirmed, rt.xid, rt.end)
		}
	}
	if complete && len(xids) != len(ref) {
		t.Fatalf("log has %d of the source's %d transactions", len(xids), len(ref))
	}
	t.Logf("log: %d streamed transactions of %d committed; slot confirmed %s", len(xids), len(ref), confirmed)
	return txns
}

// workloadLoop commits small mixed transactions until stop closes,
// reconnecting through server restarts. It returns how many committed.
func workloadLoop(dsn string, stop <-chan struct{}, done chan<- int) {
	n := 0
	defer func() { done <- n }()
	ctx := context.Background()
	var conn *pgx.Conn
	for i := 0; ; i++ {
		select {
		case <-stop:
			if conn != nil {
				conn.Close(ctx)
			}
			return
		default:
		}
		if conn == nil {
			c, err := pgx.Connect(ctx, dsn)
			if err != nil {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			conn = c
		}
		id := 10000 + i
		_, err := conn.Exec(ctx, fmt.Sprintf(`BEGIN;
			INSERT INTO accounts VALUES (%d, 'w', %d, 1);
			UPDATE accounts SET balance = balance + 1, n = n + 1 WHERE id = %d;
			UPDATE accounts SET id = id + 1000000 WHERE id = %d;
			DELETE FROM accounts WHERE id = %d;
			COMMIT`, id, i, 1+i%1000, 10000+i/2, 1000000+10000+(i-7)))
		if err != nil {
			conn.Close(ctx)
			conn = nil
			continue
		}
		n++
		time.Sleep(2 * time.Millisecond)
	}
}

// TestKillAndRestartKeepsEveryTransactionOnce kills the source process with
// SIGKILL during the snapshot, during streaming and in the middle of a large
// transaction, and restarts PostgreSQL (clean and immediate) under it; after
// each kill, the log holds a gap-free, duplicate-free prefix of the source's
// commits covering everything the slot confirmed; at the end, all of them,
// and the replayed log equals the source tables.
func TestKillAndRestartKeepsEveryTransactionOnce(t *testing.T) {
	cl := pgtest.Start(t) // fsync on: the server is restarted and crashed
	dsn := cl.DSN("postgres")
	dir := t.TempDir()
	e := &env{t: t, c: cl, dsn: dsn, dir: dir}
	e.exec(
		`CREATE TABLE accounts (id int PRIMARY KEY, name text NOT NULL, balance numeric(12,2), n int)`,
		`CREATE TABLE big (id int8 PRIMARY KEY, pad text)`,
		`INSERT INTO accounts SELECT g, 'acct ' || g, g, 0 FROM generate_series(1, 1000) g`,
		`INSERT INTO big SELECT g, repeat('x', 100) FROM generate_series(1, 200000) g`,
		`SELECT pg_create_logical_replication_slot('ref', 'test_decoding')`,
	)
	pks := map[string][]string{"public.accounts": {"id"}, "public.big": {"id"}}

	stop := make(chan struct{})
	wdone := make(chan int, 1)

	// 1. SIGKILL during the snapshot (200 rows per chunk).
	c := startChild(t, dir, dsn, 200)
	c.waitFor("snapshot progress", 60*time.Second, func(s Stats) bool { return s.SnapshotRows > 20000 })
	go workloadLoop(dsn, stop, wdone)
	c.waitFor("more snapshot progress", 60*time.Second, func(s Stats) bool { return s.SnapshotRows > 40000 })
	time.Sleep(300 * time.Millisecond) // let a progress checkpoint be written
	c.kill()
	checkLog(t, dir, dsn, false)

	// 2. SIGKILL while streaming.
	c = startChild(t, dir, dsn, 5000)
	c.waitFor("snapshot resumed and done", 90*time.Second, func(s Stats) bool { return s.SnapshotDone })
	s0 := c.Stats()
	if s0.SnapshotRows >= 190000 {
		t.Errorf("resumed snapshot copied %d rows: want only what was not done before the kill", s0.SnapshotRows)
	}
	c.waitFor("streaming", 60*time.Second, func(s Stats) bool { return s.Txns > s0.Txns+100 && s.ConfirmedLSN > s0.ConfirmedLSN })
	c.kill()
	checkLog(t, dir, dsn, false)

	// 3. SIGKILL in the middle of a large transaction.
	c = startChild(t, dir, dsn, 5000)
	bigDone := make(chan error, 1)
	go func() {
		conn, err := pgx.Connect(context.Background(), dsn)
		if err != nil {
			bigDone <- err
			return
		}
		defer conn.Close(context.Background())
		_, err = conn.Exec(context.Background(), `UPDATE big SET pad = 'updated in one transaction'`)
		bigDone <- err
	}()
	c.waitFor("the large transaction half received", 90*time.Second, func(s Stats) bool { return s.OpenTxnChanges > 60000 })
	c.kill()
	if err := <-bigDone; err != nil {
		t.Fatal(err)
	}
	checkLog(t, dir, dsn, false)

	// 4. PostgreSQL restarts (clean, then crash) under a running source.
	c = startChild(t, dir, dsn, 5000)
	c.waitFor("the large transaction", 90*time.Second, func(s Stats) bool { return s.Changes >= 200000 })
	if err := cl.Stop(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if err := cl.Start(); err != nil {
		t.Fatal(err)
	}
	c.waitFor("reconnect after restart", 60*time.Second, func(s Stats) bool { return s.Reconnects >= 1 })
	before := c.Stats().Txns
	c.waitFor("streaming after restart", 60*time.Second, func(s Stats) bool { return s.Txns > before+20 })
	if err := cl.Crash(); err != nil {
		t.Fatal(err)
	}
	if err := cl.Start(); err != nil {
		t.Fatal(err)
	}
	c.waitFor("reconnect after crash", 60*time.Second, func(s Stats) bool { return s.Reconnects >= 2 })
	before = c.Stats().Txns
	c.waitFor("streaming after crash", 60*time.Second, func(s Stats) bool { return s.Txns > before+20 })

	// Quiesce, catch up, stop gracefully.
	close(stop)
	committed := <-wdone
	var lsn pglogrepl.LSN
	conn := e.conn()
	if err := conn.QueryRow(context.Background(), "SELECT pg_current_wal_insert_lsn()").Scan(&lsn); err != nil {
		t.Fatal(err)
	}
	c.waitFor("catch up", 90*time.Second, func(s Stats) bool { return s.ConfirmedLSN >= uint64(lsn) })
	if err := c.term(); err != nil {
		t.Fatalf("graceful stop: %v", err)
	}
	txns := checkLog(t, dir, dsn, true)
	t.Logf("workload committed %d transactions", committed)
	compareModels(t, replay(t, txns, pks), sourceModel(t, dsn, pks))
}
