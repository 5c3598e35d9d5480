package pgsource

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/walship/walship/change"
	"github.com/walship/walship/internal/pgtest"
)

func TestConfigValidateNamesTheKey(t *testing.T) {
	for _, tc := range []struct {
		cfg  Options
		want string
	}{
		{Options{}, "source.postgres.dsn: missing"},
		{Options{DSN: "postgres://x@127.0.0.1:1/db?sslmode=bogus"}, "source.postgres.dsn: cannot parse"},
		{Options{DSN: "postgres://h/db", Slot: "Bad-Slot"}, "source.postgres.slot"},
		{Options{DSN: "postgres://h/db", Snapshot: "sometimes"}, "source.postgres.snapshot"},
		{Options{DSN: "postgres://h/db", SnapshotChunkRows: -1}, "source.postgres.snapshot_chunk_rows"},
		{Options{DSN: "postgres://h/db", MaxTxnMemory: 10}, "source.postgres.max_txn_memory"},
		{Options{DSN: "postgres://h/db", Tables: []TableSpec{{Name: "public.ok"}, {Name: `"unterminated`}}}, "source.postgres.tables[1]"},
		{Options{DSN: "postgres://h/db", Tables: []TableSpec{{Name: "public.ok"}, {Name: "public.ok"}}}, "source.postgres.tables[1]: public.ok is already listed"},
		{Options{DSN: "postgres://h/db", Tables: []TableSpec{{Name: "a.b", Hash: []string{"e"}}}}, "source.postgres.tables[0].hash: hashing needs source.postgres.hash_salt"},
		{Options{DSN: "postgres://h/db", HashSalt: "s", Tables: []TableSpec{{Name: "a.b", Columns: []string{"id"}, Mask: []string{"e"}}}}, "source.postgres.tables[0].mask[0]: column \"e\" is not in"},
		{Options{DSN: "postgres://h/db", HashSalt: "s", Tables: []TableSpec{{Name: "a.b", Hash: []string{"e"}, Mask: []string{"e"}}}}, "source.postgres.tables[0].mask[0]: column \"e\" is also in"},
	} {
		err := tc.cfg.Validate()
		var ce *ConfigError
		if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.As(err, &ce) {
			t.Errorf("Validate(%+v) = %v, want a *ConfigError containing %q", tc.cfg, err, tc.want)
		}
	}
	ok := Options{DSN: "postgres://h/db"}
	if err := ok.Validate(); err != nil || ok.Slot != "walship" || ok.Publication != "walship" ||
		ok.Snapshot != "initial" || ok.SnapshotChunkRows != DefaultSnapshotChunkRows || ok.MaxTxnMemory != DefaultMaxTxnMemory {
		t.Errorf("defaults: %+v, %v", ok, err)
	}
}

// runErr runs a source expected to fail and returns its error.
func runErr(t *testing.T, e *env, cfg Options) error {
	t.Helper()
	src, err := New(cfg, e.w, e.ck)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = src.Run(ctx)
	if err == nil {
		t.Fatalf("Run succeeded, want an error")
	}
	return err
}

func wantFatal(t *testing.T, err error, parts ...string) {
	t.Helper()
	var fe *FatalError
	if !errors.As(err, &fe) {
		t.Errorf("error %v (%T) is not a *FatalError", err, err)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not mention %q", err, p)
		}
	}
}

func TestWalLevelNotLogicalIsAClearError(t *testing.T) {
	e := newEnv(t, pgtest.WithoutFsync(), pgtest.WithSetting("wal_level", "replica"))
	err := runErr(t, e, testConfig(e.dsn))
	wantFatal(t, err, "wal_level", `"replica"`, "wal_level = logical", "restart")
}

func TestClearErrorsForRoleTablesAndDSN(t *testing.T) {
	e := newEnv(t, pgtest.WithoutFsync())
	ctx := context.Background()
	if err := e.c.CreateRole(ctx, "norepl", ""); err != nil {
		t.Fatal(err)
	}
	if err := e.c.CreateRole(ctx, "pwrole", "right", "REPLICATION"); err != nil {
		t.Fatal(err)
	}
	dsnAs := func(user string) string { return strings.Replace(e.dsn, "postgres@", user+"@", 1) }

	wantFatal(t, runErr(t, e, testConfig(dsnAs("norepl"))), `role "norepl" lacks the REPLICATION attribute`, "ALTER ROLE")
	wantFatal(t, runErr(t, e, testConfig(dsnAs("pwrole:wrong"))), "source.postgres.dsn", "password authentication failed")

	cfg := testConfig(e.dsn)
	cfg.Tables = []TableSpec{{Name: "public.nope"}}
	wantFatal(t, runErr(t, e, cfg), "source.postgres.tables[0]", `"public"."nope" does not exist`)

	port := e.c.Port()
	cfg = testConfig(strings.Replace(e.dsn, ":"+strconv.Itoa(port)+"/", ":1/", 1))
	wantFatal(t, runErr(t, e, cfg), "source.postgres.dsn: cannot connect")

	cfg = testConfig(e.dsn + "&sslmode=bogus")
	if _, err := New(cfg, e.w, e.ck); err == nil || !strings.Contains(err.Error(), "source.postgres.dsn") {
		t.Errorf("New with a bad DSN: %v", err)
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestNoPrimaryKeyWarnsAndCapturesInserts: a table without a primary key
// under REPLICA IDENTITY DEFAULT has its inserts captured and a warning
// explaining why its updates and deletes cannot be.
func TestNoPrimaryKeyWarnsAndCapturesInserts(t *testing.T) {
	e := newEnv(t, pgtest.WithoutFsync())
	e.exec(`CREATE TABLE nopk (x int, y text)`, `CREATE TABLE full_nopk (x int, y text)`,
		`ALTER TABLE full_nopk REPLICA IDENTITY FULL`)
	var logs syncBuf
	cfg := testConfig(e.dsn)
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	r := e.run(cfg)
	e.waitSlot("walship")
	e.exec(`INSERT INTO nopk VALUES (1, 'a'), (2, 'b')`,
		`INSERT INTO full_nopk VALUES (1, 'a')`, `UPDATE full_nopk SET y = 'b'`, `DELETE FROM full_nopk`)
	c := e.conn()
	if _, err := c.Exec(context.Background(), `UPDATE nopk SET y = 'c'`); err == nil || !strings.Contains(err.Error(), "replica identity") {
		t.Errorf("PostgreSQL accepted an update of a published table without replica identity: %v", err)
	}
	e.catchUp(r, 30*time.Second)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	if l := logs.String(); !strings.Contains(l, `has no primary key and REPLICA IDENTITY DEFAULT`) || !strings.Contains(l, "table=public.nopk") ||
		!strings.Contains(l, "UPDATE and DELETE") || strings.Contains(l, "full_nopk") {
		t.Errorf("warning missing or wrong:\n%s", l)
	}
	var ops []string
	for _, txn := range readLog(t, e.w) {
		for _, c := range txn.Changes {
			ops = append(ops, c.Table.Name+":"+string(c.Op))
			if c.Table.Name == "full_nopk" && c.Op != change.Insert && (c.Key != nil || len(c.Before) != 2) {
				t.Errorf("FULL without key: %c has key %v before %v, want no key and the whole old row", c.Op, c.Key, c.Before)
			}
		}
	}
	if got := strings.Join(ops, " "); got != "nopk:c nopk:c full_nopk:c full_nopk:u full_nopk:d" {
		t.Errorf("captured %s", got)
	}
}

// TestToastFetchedWhenNotCached: with the value cache off and REPLICA
// IDENTITY DEFAULT, an unchanged TOAST value is read from the table.
func TestToastFetchedWhenNotCached(t *testing.T) {
	e := newEnv(t, pgtest.WithoutFsync())
	e.exec(`CREATE TABLE docs (id int PRIMARY KEY, body text, n int)`,
		`INSERT INTO docs SELECT g, `+bigText+`, 0 FROM generate_series(1, 3) g`)
	cfg := testConfig(e.dsn)
	cfg.ToastCacheBytes = -1
	r := e.run(cfg)
	e.waitSlot("walship")
	e.exec(`UPDATE docs SET n = 1`)
	e.catchUp(r, 30*time.Second)
	r.stop()
	want := sourceModel(t, e.dsn, map[string][]string{"public.docs": {"id"}})
	n := 0
	for _, txn := range readLog(t, e.w) {
		for _, c := range txn.Changes {
			if c.Op != change.Update {
				continue
			}
			n++
			body, _ := c.After.Get("body")
			wb, _ := want["public.docs"][keyString(c.After, []string{"id"})].Get("body")
			if s, _ := body.Text(); len(s) < 90000 || !body.Equal(wb) {
				t.Errorf("update %v: body of %d bytes, not the source's value", c.Key, len(s))
			}
		}
	}
	if n != 3 {
		t.Errorf("%d updates, want 3", n)
	}
}

// TestDroppedSlotIsAClearError: a slot dropped behind walship's back is
// never silently recreated (changes were lost).
func TestDroppedSlotIsAClearError(t *testing.T) {
	e := newEnv(t, pgtest.WithoutFsync())
	e.exec(`CREATE TABLE t (id int PRIMARY KEY)`)
	r := e.run(testConfig(e.dsn))
	e.waitSlot("walship")
	e.exec(`INSERT INTO t VALUES (1)`)
	e.catchUp(r, 30*time.Second)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	e.exec(`SELECT pg_drop_replication_slot('walship')`)
	err := runErr(t, e, testConfig(e.dsn))
	wantFatal(t, err, "source.postgres.slot", `slot "walship" no longer exists`, "delete the checkpoint pg.walship")
	if !errors.Is(err, ErrSlotLost) {
		t.Errorf("%v is not ErrSlotLost", err)
	}
}

// TestSlotDroppedWhileStreaming: the running source stops with ErrSlotLost.
func TestSlotDroppedWhileStreaming(t *testing.T) {
	e := newEnv(t, pgtest.WithoutFsync())
	e.exec(`CREATE TABLE t (id int PRIMARY KEY)`)
	r := e.run(testConfig(e.dsn))
	e.waitSlot("walship")
	e.exec(`INSERT INTO t VALUES (1)`)
	e.catchUp(r, 30*time.Second)
	c := e.conn()
	ctx := context.Background()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = 'walship' AND active_pid IS NOT NULL`)
		if _, err := c.Exec(ctx, `SELECT pg_drop_replication_slot('walship')`); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("could not drop the slot")
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case err := <-r.done:
		r.done <- err
		if !errors.Is(err, ErrSlotLost) {
			t.Fatalf("Run returned %v, want ErrSlotLost", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run still running 30s after its slot was dropped")
	}
}

// TestIdleDatabaseDoesNotPinWAL: with no change in the captured database
// but writes elsewhere in the cluster, heartbeats keep the slot's confirmed
// position moving; restarting skips nothing and writes nothing twice.
func TestIdleDatabaseDoesNotPinWALAndRestartDedups(t *testing.T) {
	e := newEnv(t, pgtest.WithoutFsync())
	ctx := context.Background()
	if err := e.c.CreateDB(ctx, "other"); err != nil {
		t.Fatal(err)
	}
	e.exec(`CREATE TABLE t (id int PRIMARY KEY)`)
	r := e.run(testConfig(e.dsn))
	e.waitSlot("walship")
	e.exec(`INSERT INTO t VALUES (1)`)
	e.catchUp(r, 30*time.Second)

	other := *e
	other.dsn = e.c.DSN("other")
	other.exec(`CREATE TABLE o (x int)`, `INSERT INTO o SELECT generate_series(1, 100000)`)
	var lsn pglogrepl.LSN
	if err := e.conn().QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()").Scan(&lsn); err != nil {
		t.Fatal(err)
	}
	c := e.conn()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var confirmed pglogrepl.LSN
		if err := c.QueryRow(ctx, "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'walship'").Scan(&confirmed); err != nil {
			t.Fatal(err)
		}
		if confirmed >= lsn {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot confirmed %s, still behind %s after 20s of an idle database", confirmed, lsn)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	// Restart on the same log: the insert is not written again; new ones are.
	r = e.run(testConfig(e.dsn))
	e.exec(`INSERT INTO t VALUES (2)`)
	e.catchUp(r, 30*time.Second)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, txn := range readLog(t, e.w) {
		for _, c := range txn.Changes {
			v, _ := c.After.Get("id")
			ids = append(ids, string(c.Op)+v.String())
		}
	}
	if got := strings.Join(ids, " "); got != "c1 c2" {
		t.Errorf("log has %s, want c1 c2", got)
	}
}
