package pgsource

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"sort"
	"strings"
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

// env is one test's cluster, WAL and checkpoint store.
type env struct {
	t   *testing.T
	c   *pgtest.Cluster
	dsn string
	dir string
	w   *wal.WAL
	ck  *checkpoint.Store
}

func newEnv(t *testing.T, opts ...pgtest.Option) *env {
	t.Helper()
	e := &env{t: t, c: pgtest.Start(t, opts...), dir: t.TempDir()}
	e.dsn = e.c.DSN("postgres")
	e.open()
	t.Cleanup(e.close)
	return e
}

func (e *env) open() {
	e.t.Helper()
	w, _, err := wal.Open(wal.Options{Dir: filepath.Join(e.dir, "wal")})
	if err != nil {
		e.t.Fatal(err)
	}
	ck, err := checkpoint.Open(context.Background(), vfs.Default, filepath.Join(e.dir, "ckpt"), checkpoint.Options{})
	if err != nil {
		e.t.Fatal(err)
	}
	e.w, e.ck = w, ck
}

func (e *env) close() {
	if e.w != nil {
		e.w.Close()
		e.w = nil
	}
}

func (e *env) conn() *pgx.Conn {
	e.t.Helper()
	c, err := pgx.Connect(context.Background(), e.dsn)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func (e *env) exec(sqls ...string) {
	e.t.Helper()
	c, err := pgx.Connect(context.Background(), e.dsn)
	if err != nil {
		e.t.Fatal(err)
	}
	defer c.Close(context.Background())
	for _, sql := range sqls {
		if _, err := c.Exec(context.Background(), sql); err != nil {
			e.t.Fatalf("%s: %v", sql, err)
		}
	}
}

func testConfig(dsn string) Options {
	return Options{DSN: dsn, Heartbeat: 200 * time.Millisecond, StatusInterval: 100 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

// running is a Source running in a goroutine.
type running struct {
	src    *Source
	cancel context.CancelFunc
	done   chan error
}

func (e *env) run(cfg Options) *running {
	e.t.Helper()
	src, err := New(cfg, e.w, e.ck)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{src: src, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- src.Run(ctx) }()
	e.t.Cleanup(func() { r.stop() })
	return r
}

// stop ends Run and returns its result.
func (r *running) stop() error {
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err
		return err
	case <-time.After(60 * time.Second):
		return errors.New("Run did not return within 60s of cancel")
	}
}

// waitSlot waits until the slot exists: changes committed after it are
// streamed, not copied.
func (e *env) waitSlot(slot string) {
	e.t.Helper()
	c := e.conn()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var n int
		if err := c.QueryRow(context.Background(), "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&n); err != nil {
			e.t.Fatal(err)
		}
		if n == 1 {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("slot %s not created within 30s", slot)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// catchUp waits until the source has confirmed the server's current WAL
// position, i.e. everything committed so far is durable in the log.
func (e *env) catchUp(r *running, timeout time.Duration) {
	e.t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, e.dsn)
	if err != nil {
		e.t.Fatal(err)
	}
	defer c.Close(ctx)
	var lsn pglogrepl.LSN
	if err := c.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()").Scan(&lsn); err != nil {
		e.t.Fatal(err)
	}
	// timeout bounds a stall, not the whole catch-up: on a loaded machine
	// a large transaction can take minutes while the source keeps making
	// progress, so the deadline moves whenever the source's counters do
	// (with an overall cap, so a livelock still fails).
	type progress struct{ confirmed, last, changes, open uint64 }
	now := func() progress {
		st := r.src.Stats()
		return progress{st.ConfirmedLSN, st.LastSourceLSN, uint64(st.Changes), uint64(st.OpenTxnChanges)}
	}
	seen, deadline, limit := now(), time.Now().Add(timeout), time.Now().Add(10*time.Minute)
	for uint64(lsn) > r.src.Stats().ConfirmedLSN {
		select {
		case err := <-r.done:
			r.done <- err
			e.t.Fatalf("Run returned while catching up: %v", err)
		default:
		}
		if p := now(); p != seen {
			seen, deadline = p, time.Now().Add(timeout)
		}
		if time.Now().After(deadline) || time.Now().After(limit) {
			e.t.Fatalf("source did not reach %s (no progress for %v, or 10 minutes in all): %+v", lsn, timeout, r.src.Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readLog returns the log's transactions without the end-of-snapshot
// markers (readLogAll keeps them).
func readLog(t testing.TB, w *wal.WAL) []change.Committed {
	t.Helper()
	var out []change.Committed
	for _, txn := range readLogAll(t, w) {
		if !isSnapshotMarker(&txn) {
			out = append(out, txn)
		}
	}
	return out
}

func isSnapshotMarker(t *change.Committed) bool {
	return len(t.Changes) == 1 && t.Changes[0].Op == change.Message && t.Changes[0].Message.Prefix == SnapshotDonePrefix
}

func readLogAll(t testing.TB, w *wal.WAL) []change.Committed {
	t.Helper()
	r, err := w.NewReader(w.FirstLSN(), false)
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

// model is a replica in memory: table -> key text -> row.
type model map[string]map[string]change.Row

// keyOfRow renders the values of the named columns.
func keyString(r change.Row, cols []string) string {
	var b strings.Builder
	for _, c := range cols {
		v, _ := r.Get(c)
		b.WriteString(v.String())
		b.WriteByte('|')
	}
	return b.String()
}

// replay applies the log's changes as an upserting applier would. pks
// gives each table's key columns.
func replay(t testing.TB, txns []change.Committed, pks map[string][]string) model {
	m := model{}
	for _, txn := range txns {
		for _, c := range txn.Changes {
			if c.Op == change.Message {
				continue
			}
			tn := c.Table.String()
			cols, ok := pks[tn]
			if !ok {
				t.Fatalf("change on unexpected table %s", tn)
			}
			if m[tn] == nil {
				m[tn] = map[string]change.Row{}
			}
			switch c.Op {
			case change.Read, change.Insert:
				m[tn][keyString(c.After, cols)] = c.After
			case change.Update:
				old := c.Key
				if old == nil {
					old = c.Before
				}
				delete(m[tn], keyString(old, cols))
				m[tn][keyString(c.After, cols)] = c.After
			case change.Delete:
				old := c.Key
				if old == nil {
					old = c.Before
				}
				delete(m[tn], keyString(old, cols))
			case change.Truncate:
				m[tn] = map[string]change.Row{}
			}
		}
	}
	return m
}

// sourceModel reads the tables with COPY and the package's own decoder.
func sourceModel(t testing.TB, dsn string, pks map[string][]string) model {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	s := &Source{types: newTypeCache(), toast: newToastCache(-1)}
	m := model{}
	for tn, cols := range pks {
		tab, _ := change.ParseTable(tn)
		rel, sel, err := s.snapshotRelation(ctx, conn, tab)
		if err != nil {
			t.Fatalf("%s: %v", tn, err)
		}
		cp := &copyParser{s: s, rel: rel, buf: newTxnBuf(change.TxHeader{}, 1<<40, "")}
		if _, err := conn.PgConn().CopyTo(ctx, cp, "COPY ("+sel+") TO STDOUT"); err != nil || cp.err != nil {
			t.Fatalf("%s: %v %v", tn, err, cp.err)
		}
		m[tn] = map[string]change.Row{}
		for _, c := range cp.buf.changes {
			m[tn][keyString(c.After, cols)] = c.After
		}
	}
	return m
}

func sortedKeys[M ~map[string]V, V any](m M) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func compareModels(t testing.TB, got, want model) {
	t.Helper()
	for _, tn := range sortedKeys(want) {
		g, w := got[tn], want[tn]
		if len(g) != len(w) {
			t.Errorf("table %s: replica has %d rows, source %d", tn, len(g), len(w))
		}
		n := 0
		for _, k := range sortedKeys(w) {
			gr, ok := g[k]
			if !ok {
				if n++; n < 5 {
					t.Errorf("table %s: row %s missing from replica", tn, k)
				}
				continue
			}
			for _, col := range w[k] {
				gv, _ := gr.Get(col.Name)
				if !gv.Equal(col.Value) {
					if n++; n < 5 {
						t.Errorf("table %s row %s column %s: replica %s, source %s", tn, k, col.Name, gv, col.Value)
					}
				}
			}
		}
		for _, k := range sortedKeys(g) {
			if _, ok := w[k]; !ok {
				if n++; n < 5 {
					t.Errorf("table %s: replica has row %s that the source lacks", tn, k)
				}
			}
		}
	}
}
