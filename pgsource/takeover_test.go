package pgsource

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/walship/walship/change"
	"github.com/walship/walship/checkpoint"
	"github.com/walship/walship/internal/pgtest"
	"github.com/walship/walship/vfs"
	"github.com/walship/walship/wal"
)

// openLog opens a WAL and a checkpoint store under dir.
func openLog(t *testing.T, dir string) (*wal.WAL, *checkpoint.Store) {
	t.Helper()
	w, _, err := wal.Open(wal.Options{Dir: filepath.Join(dir, "wal")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	ck, err := checkpoint.Open(context.Background(), vfs.Default, filepath.Join(dir, "ckpt"), checkpoint.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return w, ck
}

// runOn runs a source on w and ck in a goroutine.
func runOn(t *testing.T, cfg Options, w *wal.WAL, ck *checkpoint.Store) *running {
	t.Helper()
	src, err := New(cfg, w, ck)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{src: src, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- src.Run(ctx) }()
	t.Cleanup(func() { r.stop() })
	return r
}

// returned waits for Run to return by itself and gives its result.
func (r *running) returned(t *testing.T, what string) error {
	t.Helper()
	select {
	case err := <-r.done:
		r.done <- err
		return err
	case <-time.After(60 * time.Second):
		t.Fatalf("Run did not return within 60s %s", what)
		return nil
	}
}

// copyLog appends txns to dst, a fresh log, as a follower would build its
// copy: the same transactions at the same LSNs (checked), and no
// checkpoint of the source that wrote them.
func copyLog(t *testing.T, txns []change.Committed, dst *wal.WAL) {
	t.Helper()
	for i := range txns {
		tk, err := dst.Append(context.Background(), &txns[i].Txn)
		if err != nil {
			t.Fatal(err)
		}
		if tk.First != txns[i].FirstLSN || tk.Last != txns[i].CommitLSN {
			t.Fatalf("copy of transaction %d at LSNs %d-%d, the original is at %d-%d", i, tk.First, tk.Last, txns[i].FirstLSN, txns[i].CommitLSN)
		}
	}
}

func readDir(t *testing.T, dir string) []change.Committed {
	t.Helper()
	l, _, err := wal.OpenReadOnly(vfs.Default, filepath.Join(dir, "wal"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	r, err := l.NewReader(l.FirstLSN(), false)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var out []change.Committed
	for {
		txn, err := r.Next(context.Background())
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, *txn)
	}
}

func slotConfirmed(t *testing.T, e *env, slot string) pglogrepl.LSN {
	t.Helper()
	var lsn pglogrepl.LSN
	if err := e.conn().QueryRow(context.Background(), "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = $1", slot).
		Scan(&lsn); err != nil {
		t.Fatal(err)
	}
	return lsn
}

// TestSnapshotStateReadFromLog: without the checkpoint, the start-up scan
// reads from the log whether this source's initial snapshot finished (the
// end marker, or a streamed transaction after the last chunk) and the
// newest source commit in the log.
func TestSnapshotStateReadFromLog(t *testing.T) {
	tab := change.Table{Schema: "public", Name: "t"}
	row := change.Row{{Name: "id", Value: change.IntValue(1)}}
	chunk := func(origin string) change.Txn {
		return change.Txn{Header: change.TxHeader{Origin: origin},
			Changes: []change.Change{{Table: tab, Op: change.Read, Key: row, After: row}}}
	}
	marker := func(origin string) change.Txn {
		return change.Txn{Header: change.TxHeader{Origin: origin}, Changes: []change.Change{{Op: change.Message,
			Message: &change.LogicalMessage{Prefix: SnapshotDonePrefix, Content: []byte(`{"tables":1}`), Transactional: true}}}}
	}
	streamed := func(origin string, lsn uint64) change.Txn {
		return change.Txn{Header: change.TxHeader{XID: 7, SourceLSN: lsn, Origin: origin},
			Changes: []change.Change{{Table: tab, Op: change.Insert, Key: row, After: row}}}
	}
	const me, other = "pg/walship", "pg/other"
	for _, tc := range []struct {
		name     string
		log      []change.Txn
		wantDone bool
		floor    uint64
	}{
		{"empty log", nil, false, 0},
		{"chunks only: cut short", []change.Txn{chunk(me), chunk(me)}, false, 0},
		{"chunks and the end marker", []change.Txn{chunk(me), marker(me)}, true, 0},
		{"marker then streamed", []change.Txn{chunk(me), marker(me), streamed(me, 100)}, true, 100},
		{"no marker (older log), streamed after the chunks", []change.Txn{chunk(me), streamed(me+"/o", 100)}, true, 100},
		{"slot recreated: new chunks after streaming", []change.Txn{chunk(me), marker(me), streamed(me, 100), chunk(me)}, false, 100},
		{"only another source's", []change.Txn{chunk(other), marker(other), streamed(other, 300)}, false, 0},
		{"streamed only (log trimmed)", []change.Txn{streamed(me, 100), streamed(other, 500), streamed(me, 200)}, true, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, ck := openLog(t, t.TempDir())
			for i := range tc.log {
				if _, err := w.Append(context.Background(), &tc.log[i]); err != nil {
					t.Fatal(err)
				}
			}
			s, err := New(Options{DSN: "postgres://u@127.0.0.1:1/db"}, w, ck)
			if err != nil {
				t.Fatal(err)
			}
			// A new HA leader's loss check reads the same position before
			// the source runs.
			if newest, err := s.NewestInLog(context.Background()); err != nil || newest != tc.floor {
				t.Errorf("NewestInLog = %d, %v; want %d", newest, err, tc.floor)
			}
			if err := s.recover(context.Background()); err != nil {
				t.Fatal(err)
			}
			if done := s.state.Snapshot != nil && s.state.Snapshot.Done; done != tc.wantDone {
				t.Errorf("snapshot done = %v, want %v", done, tc.wantDone)
			}
			st := s.Stats()
			if !st.LogScanned || st.LoggedSourceLSN != tc.floor || s.floor != tc.floor {
				t.Errorf("LogScanned %v, LoggedSourceLSN %d, floor %d: want true, %d", st.LogScanned, st.LoggedSourceLSN, s.floor, tc.floor)
			}
		})
	}
}

// TestTakeOverSlotFromPausedLeader: the old leader (a process) streams a
// workload and is paused (SIGSTOP) with its walsender still holding the
// slot. A new source on a copy of the old leader's log, without its
// checkpoint: without TakeOverSlot it waits (retries) as before; with it,
// it terminates the old walsender, streams from the slot's confirmed
// position, skips what its log has, and its log ends up with every source
// transaction exactly once, in commit order, and replays to the tables.
func TestTakeOverSlotFromPausedLeader(t *testing.T) {
	e := newEnv(t, pgtest.WithoutFsync())
	ctx := context.Background()
	e.exec(`CREATE TABLE accounts (id int PRIMARY KEY, name text NOT NULL, balance numeric(12,2), n int)`,
		`INSERT INTO accounts SELECT g, 'acct ' || g, g, 0 FROM generate_series(1, 1000) g`,
		`SELECT pg_create_logical_replication_slot('ref', 'test_decoding')`)
	pks := map[string][]string{"public.accounts": {"id"}}

	// The old leader confirms every 2s, so that when it is paused its log
	// holds transactions the slot has not confirmed (to be skipped).
	dirA := t.TempDir()
	a := startChild(t, dirA, e.dsn, 300, "PGSOURCE_CHILD_STATUS=2s")
	e.waitSlot("walship") // transactions committed before are in the snapshot, not streamed
	stop, wdone := make(chan struct{}), make(chan int, 1)
	go workloadLoop(e.dsn, stop, wdone)
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
	}()
	a.waitFor("the old leader streaming", 90*time.Second, func(s Stats) bool { return s.SnapshotDone && s.ConfirmedLSN > 0 && s.Txns > 200 })
	if err := a.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer a.cmd.Process.Signal(syscall.SIGCONT)
	var oldPID int32
	if err := e.conn().QueryRow(ctx, "SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'walship'").Scan(&oldPID); err != nil {
		t.Fatalf("the paused leader's walsender should hold the slot: %v", err)
	}
	confirmed := slotConfirmed(t, e, "walship")

	// The new leader's log: the old one's up to some transaction beyond
	// the slot's confirmed position (a follower has at least what was
	// confirmed under sync shipped).
	old := readDir(t, dirA)
	cut := len(old)
	for i, txn := range old {
		if txn.Header.SourceLSN >= uint64(confirmed) {
			cut = i + (len(old)-i+1)/2
			break
		}
	}
	copyLog(t, old[:cut], e.w)
	var inCopy uint64
	for _, txn := range old[:cut] {
		inCopy = max(inCopy, txn.Header.SourceLSN)
	}
	t.Logf("old leader's log: %d transactions, slot confirmed %s; the copy has %d, up to commit %s",
		len(old), confirmed, cut, pglogrepl.LSN(inCopy))

	// Without TakeOverSlot: today's behaviour, the busy slot is retried.
	w1, _ := openLog(t, t.TempDir())
	copyLog(t, old[:cut], w1)
	_, ck1 := openLog(t, t.TempDir())
	cfg := testConfig(e.dsn)
	r1 := runOn(t, cfg, w1, ck1)
	deadline := time.Now().Add(60 * time.Second)
	for r1.src.Stats().Reconnects < 1 {
		if time.Now().After(deadline) {
			t.Fatalf("without TakeOverSlot, no retry on the busy slot: %+v", r1.src.Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := r1.stop(); err != nil {
		t.Fatal(err)
	}
	if st := r1.src.Stats(); st.Txns != 0 || st.ConfirmedLSN > uint64(confirmed) {
		t.Fatalf("without TakeOverSlot the busy slot was used: %+v", st)
	}
	// What a new leader compares to find a loss: here none (the copy
	// reaches past the confirmed position).
	if st := r1.src.Stats(); !st.LogScanned || st.LoggedSourceLSN != inCopy {
		t.Errorf("LoggedSourceLSN %s (scanned %v), want the copy's newest commit %s", pglogrepl.LSN(st.LoggedSourceLSN), st.LogScanned, pglogrepl.LSN(inCopy))
	}
	if got, err := r1.src.SlotConfirmed(ctx); err != nil || got != uint64(confirmed) {
		t.Errorf("SlotConfirmed = %s, %v; want %s", pglogrepl.LSN(got), err, confirmed)
	}
	cfgNone := testConfig(e.dsn)
	cfgNone.Slot = "no_such_slot"
	none, err := New(cfgNone, w1, ck1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := none.SlotConfirmed(ctx); !errors.Is(err, ErrSlotNotFound) || !strings.Contains(err.Error(), "no_such_slot") {
		t.Errorf("SlotConfirmed of a missing slot: %v, want ErrSlotNotFound naming it", err)
	}

	// With TakeOverSlot.
	logs := &syncBuf{}
	cfg.TakeOverSlot = true
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	r := e.run(cfg)
	deadline = time.Now().Add(60 * time.Second)
	for r.src.Stats().Txns == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the new leader appended nothing within 60s: %+v\n%s", r.src.Stats(), logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(stop)
	committed := <-wdone
	e.catchUp(r, 60*time.Second)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	st := r.src.Stats()
	if want := fmt.Sprintf("pid=%d", oldPID); !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), want) {
		t.Errorf("the takeover is not logged at WARN naming %s:\n%s", want, logs)
	}
	if inCopy >= uint64(confirmed) && st.Skipped == 0 {
		t.Errorf("the copy holds transactions beyond the slot's confirmed position but none was skipped: %+v", st)
	}
	if st.SnapshotRows != 0 || !st.SnapshotDone {
		t.Errorf("the new leader took the snapshot again (%d rows) although the log shows it done", st.SnapshotRows)
	}
	var alive bool
	if err := e.conn().QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)", oldPID).Scan(&alive); err != nil || alive {
		t.Errorf("the old walsender %d is still there (%v)", oldPID, err)
	}
	t.Logf("workload committed %d; new leader: %d appended, %d skipped", committed, st.Txns, st.Skipped)
	a.cmd.Process.Signal(syscall.SIGKILL)
	e.close()
	txns := checkLog(t, e.dir, e.dsn, true)
	compareModels(t, replay(t, txns, pks), sourceModel(t, e.dsn, pks))
}

// TestGateShutStopsConfirmingAndAppending: once Options.Gate fails, the
// source confirms nothing more (the slot's confirmed_flush_lsn stays at or
// below the server's position when the gate shut, although heartbeats keep
// moving the server on), appends nothing more, and Run returns the gate's
// error as fatal.
func TestGateShutStopsConfirmingAndAppending(t *testing.T) {
	e := newEnv(t, pgtest.WithoutFsync())
	ctx := context.Background()
	e.exec(`CREATE TABLE t (id int PRIMARY KEY)`)
	lost := errors.New("test: leadership lost")
	gated := func(slot string, interval time.Duration) (*running, *atomic.Bool) {
		var shut atomic.Bool
		cfg := testConfig(e.dsn)
		cfg.Slot, cfg.StatusInterval = slot, interval
		cfg.Gate = func() error {
			if shut.Load() {
				return lost
			}
			return nil
		}
		return e.run(cfg), &shut
	}
	check := func(err error, what string) {
		t.Helper()
		var fe *FatalError
		var ge *GateError
		if !errors.Is(err, lost) || !errors.As(err, &fe) || !errors.As(err, &ge) || !strings.Contains(err.Error(), what) {
			t.Fatalf("Run returned %v: want a *FatalError with the gate's error, saying it did not %s", err, what)
		}
	}

	t.Run("status", func(t *testing.T) {
		r, shut := gated("gate_status", 100*time.Millisecond)
		e.waitSlot("gate_status")
		e.exec(`INSERT INTO t VALUES (1)`)
		e.catchUp(r, 60*time.Second)
		shut.Store(true)
		var at pglogrepl.LSN
		if err := e.conn().QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()").Scan(&at); err != nil {
			t.Fatal(err)
		}
		// Nothing is received meanwhile but heartbeats: only the status
		// update's gate can stop Run.
		check(r.returned(t, "after the gate shut, with nothing to append"), "confirm")
		e.exec(`INSERT INTO t VALUES (2)`, `SELECT pg_logical_emit_message(false, 'x', 'moves the server on')`)
		if c := slotConfirmed(t, e, "gate_status"); c > at {
			t.Errorf("slot confirmed %s, beyond %s where the gate shut", c, at)
		}
	})

	t.Run("append", func(t *testing.T) {
		// Status updates once a minute: the append's gate comes first.
		r, shut := gated("gate_append", time.Minute)
		e.waitSlot("gate_append")
		e.exec(`INSERT INTO t VALUES (3)`)
		deadline := time.Now().Add(60 * time.Second)
		for r.src.Stats().LoggedSourceLSN == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("insert not in the log within 60s: %+v", r.src.Stats())
			}
			time.Sleep(10 * time.Millisecond)
		}
		before := r.src.Stats().Txns
		shut.Store(true)
		e.exec(`INSERT INTO t VALUES (4)`)
		check(r.returned(t, "after the gate shut and a transaction came"), "append transaction")
		if st := r.src.Stats(); st.Txns != before {
			t.Errorf("%d transactions appended after the gate shut", st.Txns-before)
		}
		for _, txn := range readLog(t, e.w) {
			if txn.Header.Origin == "pg/gate_append" && len(txn.Changes) > 0 {
				if v, _ := txn.Changes[0].After.Get("id"); v.Equal(change.IntValue(4)) {
					t.Errorf("row 4 is in the log")
				}
			}
		}
	})
}

// TestTakeOverWithoutCheckpointAfterAndDuringSnapshot: a copy of the log
// without the checkpoint. After a finished snapshot (the log's end marker
// only: no streamed transaction follows it), the new source does not copy
// the tables again. During one (the old source stopped part way), it takes
// the whole snapshot again from a fresh snapshot, then streams from the
// slot's start; replaying its log gives the source's tables.
func TestTakeOverWithoutCheckpointAfterAndDuringSnapshot(t *testing.T) {
	e := newEnv(t, pgtest.WithoutFsync())
	e.exec(`CREATE TABLE big (id int PRIMARY KEY, pad text)`,
		`INSERT INTO big SELECT g, 'row ' || g FROM generate_series(1, 3000) g`)
	pks := map[string][]string{"public.big": {"id"}}

	t.Run("after", func(t *testing.T) {
		cfg := testConfig(e.dsn)
		cfg.Slot, cfg.SnapshotChunkRows = "snap_after", 500
		wA, ckA := openLog(t, t.TempDir())
		a := runOn(t, cfg, wA, ckA)
		deadline := time.Now().Add(60 * time.Second)
		for !a.src.Stats().SnapshotDone {
			if time.Now().After(deadline) {
				t.Fatalf("snapshot not done within 60s: %+v", a.src.Stats())
			}
			time.Sleep(10 * time.Millisecond)
		}
		if err := a.stop(); err != nil {
			t.Fatal(err)
		}
		old := readLogAll(t, wA)
		if n := len(old); n == 0 || !isSnapshotMarker(&old[n-1]) {
			t.Fatalf("the old source's log does not end with the snapshot's end marker: %d transactions", n)
		}
		dir := t.TempDir()
		wB, ckB := openLog(t, dir)
		copyLog(t, old, wB)
		cfg.TakeOverSlot = true
		b := runOn(t, cfg, wB, ckB)
		e.exec(`UPDATE big SET pad = 'updated' WHERE id <= 10`, `DELETE FROM big WHERE id > 2990`)
		e.catchUp(b, 60*time.Second)
		if err := b.stop(); err != nil {
			t.Fatal(err)
		}
		if st := b.src.Stats(); st.SnapshotRows != 0 || !st.SnapshotDone {
			t.Errorf("the new source copied %d rows again (done %v): the log showed the snapshot finished", st.SnapshotRows, st.SnapshotDone)
		}
		compareModels(t, replay(t, readLog(t, wB), pks), sourceModel(t, e.dsn, pks))
	})

	t.Run("during", func(t *testing.T) {
		cfg := testConfig(e.dsn)
		cfg.Slot, cfg.SnapshotChunkRows = "snap_during", 200
		// The old source stops after 3 chunks: its gate shuts.
		var calls atomic.Int64
		cfg.Gate = func() error {
			if calls.Add(1) > 3 {
				return errors.New("test: stop the old source")
			}
			return nil
		}
		dirA := t.TempDir()
		wA, ckA := openLog(t, dirA)
		a := runOn(t, cfg, wA, ckA)
		if err := a.returned(t, "after its gate shut"); err == nil {
			t.Fatal("the old source's Run returned nil")
		}
		if err := wA.Close(); err != nil { // what was appended is durable
			t.Fatal(err)
		}
		old := readDir(t, dirA)
		if len(old) != 3 || isSnapshotMarker(&old[2]) {
			t.Fatalf("the old source's log has %d transactions, want 3 chunks", len(old))
		}
		// Changes after the slot's start: streamed to the new source.
		e.exec(`UPDATE big SET pad = 'again' WHERE id <= 300`, `DELETE FROM big WHERE id BETWEEN 100 AND 150`,
			`INSERT INTO big VALUES (5000, 'new')`)
		var rows uint64
		if err := e.conn().QueryRow(context.Background(), "SELECT count(*) FROM big").Scan(&rows); err != nil {
			t.Fatal(err)
		}
		wB, ckB := openLog(t, t.TempDir())
		copyLog(t, old, wB)
		cfg.Gate, cfg.TakeOverSlot = nil, true
		b := runOn(t, cfg, wB, ckB)
		e.catchUp(b, 60*time.Second)
		if err := b.stop(); err != nil {
			t.Fatal(err)
		}
		if st := b.src.Stats(); st.SnapshotRows != rows || !st.SnapshotDone {
			t.Errorf("the new source copied %d rows (done %v), want the whole table again: %d", st.SnapshotRows, st.SnapshotDone, rows)
		}
		txns := readLogAll(t, wB)
		markers := 0
		for i := range txns {
			if isSnapshotMarker(&txns[i]) {
				markers++
			}
		}
		if markers != 1 {
			t.Errorf("%d end-of-snapshot markers in the log, want 1", markers)
		}
		compareModels(t, replay(t, readLog(t, wB), pks), sourceModel(t, e.dsn, pks))
	})
}
