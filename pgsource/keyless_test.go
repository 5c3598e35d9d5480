package pgsource

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/walship/walship/change"
	"github.com/walship/walship/internal/pgtest"
	"github.com/walship/walship/replica"
)

// TestKeylessSnapshotResumesByCtidRanges: a table without a primary key
// (pgbench_history's shape) is copied in chunks of heap pages; a copy
// interrupted by a stop goes on from the recorded page, one interrupted by
// a crash starts again behind a truncate; rows inserted after the slot's
// start come once, from the stream. The log replayed as a multiset of rows
// equals the table.
func TestKeylessSnapshotResumesByCtidRanges(t *testing.T) {
	for _, crash := range []bool{false, true} {
		name := "stop"
		if crash {
			name = "crash"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, pgtest.WithoutFsync())
			e.exec(`CREATE TABLE history (tid int, bid int, aid int, delta int, mtime timestamp, filler varchar(22))`,
				`INSERT INTO history SELECT i % 10, i % 3, i, i % 7, '2024-01-01'::timestamp + i * interval '1 s', NULL
					FROM generate_series(1, 6000) i`,
				`INSERT INTO history SELECT 1, 1, 1, 1, '2024-01-01', 'dup' FROM generate_series(1, 5)`,
				`ANALYZE history`,
				// Copied after history: not yet at the interruption.
				`CREATE TABLE zfull (a int, b text)`, `ALTER TABLE zfull REPLICA IDENTITY FULL`,
				`INSERT INTO zfull VALUES (1, 'x'), (1, 'x'), (2, 'y'), (3, 'z')`)
			cfg := testConfig(e.dsn)
			cfg.SnapshotChunkRows = 400
			var calls atomic.Int64
			var cur atomic.Pointer[running]
			errStop := errors.New("stopped by the test")
			cfg.Gate = func() error {
				if calls.Add(1) == 4 {
					if !crash {
						cur.Load().cancel()
					}
					return errStop
				}
				return nil
			}
			r := e.run(cfg)
			cur.Store(r)
			var err error
			select {
			case err = <-r.done:
				r.done <- err
			case <-time.After(2 * time.Minute):
				t.Fatal("the first run did not end at the gate")
			}
			if crash && !errors.Is(err, errStop) {
				t.Fatalf("first run: %v, want the gate's error", err)
			}
			// Rows committed after the slot's start: a fresh snapshot sees
			// them, the stream brings them.
			e.exec(`INSERT INTO history SELECT 2, 2, i, 2, '2025-01-01', 'late' FROM generate_series(1, 300) i`,
				// Neither version of these rows is in the resumed copy; the
				// stream's update and delete bring them to the replica.
				`UPDATE zfull SET b = 'w' WHERE a = 2`,
				`DELETE FROM zfull WHERE a = 3`)
			var st ckptState
			if ck, ok := e.ck.Get("pg.walship"); !ok {
				t.Fatal("no checkpoint after the first run")
			} else if err := json.Unmarshal(ck.Payload, &st); err != nil {
				t.Fatalf("checkpoint %s: %v", ck.Payload, err)
			}
			// A crash may come before any progress is recorded.
			if p := st.Snapshot; !crash && (p == nil || p.Tables["public.history"] == nil ||
				p.Tables["public.history"].Done || p.Tables["public.history"].Page == 0) {
				t.Fatalf("progress after the first run: %+v, want a page inside the table", p.Tables["public.history"])
			}

			cfg.Gate = nil
			r = e.run(cfg)
			e.catchUp(r, 60*time.Second)
			if err := r.stop(); err != nil {
				t.Fatal(err)
			}
			txns := readLog(t, e.w)
			chunks, lastChunks, truncates := 0, 0, 0
			got := map[string]int{}
			for _, txn := range txns {
				// A table's snapshot chunks: its first one says so, its
				// last one too (never an empty chunk).
				if c := txn.Changes[0]; c.Op == change.Read && c.Table.Name == "history" {
					chunks++
					if txn.Header.Snapshot&change.SnapshotTableLast != 0 {
						lastChunks++
					}
				}
				for _, c := range txn.Changes {
					if c.Table.Name != "history" {
						continue
					}
					switch c.Op {
					case change.Truncate:
						truncates++
						got = map[string]int{}
					case change.Read, change.Insert:
						got[rowText(c.After)]++
					}
				}
			}
			if lastChunks != 1 {
				t.Errorf("%d chunks of history marked its last, want 1", lastChunks)
			}
			if chunks < 10 {
				t.Errorf("%d snapshot chunks, want the table copied in many", chunks)
			}
			if crash != (truncates > 0) {
				t.Errorf("%d truncates in the log (crash %v)", truncates, crash)
			}
			want := map[string]int{}
			m := sourceRows(t, e.dsn, "public.history")
			for _, row := range m {
				want[rowText(row)]++
			}
			if len(m) != 6305 {
				t.Fatalf("source has %d rows", len(m))
			}
			for k, n := range want {
				if got[k] != n {
					t.Errorf("row %s: %d in the log, %d in the table", k, got[k], n)
				}
			}
			for k, n := range got {
				if want[k] == 0 {
					t.Errorf("row %s: %d in the log, none in the table", k, n)
				}
			}
			// A replica of the log equals the source.
			ctx := context.Background()
			url := "sqlite://" + filepath.Join(t.TempDir(), "r.db")
			a, err := replica.Open(ctx, url, replica.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			if err := a.Apply(ctx, txns); err != nil {
				t.Fatal(err)
			}
			src, err := replica.Dump(ctx, e.dsn)
			if err != nil {
				t.Fatal(err)
			}
			dst, err := replica.Dump(ctx, url)
			if err != nil {
				t.Fatal(err)
			}
			if d := replica.Diff(src, dst); d != "" {
				t.Errorf("replica differs from the source:\n%s", d)
			}
		})
	}
}

// sourceRows reads table tn with COPY and the package's own decoder.
func sourceRows(t testing.TB, dsn, tn string) []change.Row {
	t.Helper()
	ctx := context.Background()
	e := &env{t: t.(*testing.T), dsn: dsn}
	conn := e.conn()
	s := &Source{types: newTypeCache(), toast: newToastCache(-1)}
	tab, _ := change.ParseTable(tn)
	rel, sel, err := s.snapshotRelation(ctx, conn, tab)
	if err != nil {
		t.Fatalf("%s: %v", tn, err)
	}
	cp := &copyParser{s: s, rel: rel, buf: newTxnBuf(change.TxHeader{}, 1<<40, "")}
	if _, err := conn.PgConn().CopyTo(ctx, cp, "COPY ("+sel+") TO STDOUT"); err != nil || cp.err != nil {
		t.Fatalf("%s: %v %v", tn, err, cp.err)
	}
	var rows []change.Row
	for _, c := range cp.buf.changes {
		rows = append(rows, c.After)
	}
	return rows
}
