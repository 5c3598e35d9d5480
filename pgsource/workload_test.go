package pgsource

import (
	"strings"
	"testing"
	"time"

	"github.com/walship/walship/change"
	"github.com/walship/walship/internal/pgtest"
)

// Tables of the workload and their key columns, for the replay model.
var workloadPKs = map[string][]string{
	"public.accounts":       {"id"},
	"public.docs":           {"id"},
	"public.docs_full":      {"id"},
	"public.kv":             {"k"},
	"public.big":            {"id"},
	`public."Odd ""Name"""`: {"id"},
	"public.alltypes":       {"id"},
}

// bigText is an incompressible ~96 kB value: stored out of line (TOAST).
const bigText = `(SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 3000))`

var workloadSetup = []string{
	allTypesDDL,
	`CREATE TABLE accounts (id int PRIMARY KEY, name text NOT NULL, balance numeric(12,2), n int)`,
	`CREATE TABLE docs (id int PRIMARY KEY, body text, n int)`,
	`CREATE TABLE docs_full (id int PRIMARY KEY, body text, n int)`,
	`ALTER TABLE docs_full REPLICA IDENTITY FULL`,
	`CREATE TABLE kv (k text NOT NULL, v int)`,
	`CREATE UNIQUE INDEX kv_k ON kv (k)`,
	`ALTER TABLE kv REPLICA IDENTITY USING INDEX kv_k`,
	`CREATE TABLE big (id int8 PRIMARY KEY, pad text)`,
	`CREATE TABLE "Odd ""Name""" (id int PRIMARY KEY, v text)`,
	// Snapshot content.
	`INSERT INTO accounts SELECT g, 'acct ' || g, g * 1.25, g FROM generate_series(1, 2000) g`,
	`INSERT INTO docs SELECT g, ` + bigText + `, 0 FROM generate_series(1, 5) g`,
	`INSERT INTO docs_full SELECT g, ` + bigText + `, 0 FROM generate_series(1, 3) g`,
	`INSERT INTO kv VALUES ('a', 1), ('b', 2)`,
	`INSERT INTO alltypes VALUES ` + strings.Replace(allTypesValues, "%d", "1", 1),
}

var workloadStream = []string{
	`INSERT INTO accounts SELECT g, 'acct ' || g, g * 1.25, g FROM generate_series(2001, 3000) g`,
	`UPDATE accounts SET balance = balance + 1 WHERE id % 7 = 0`,
	`UPDATE accounts SET id = id + 100000 WHERE id <= 50`, // primary-key change
	`DELETE FROM accounts WHERE id % 11 = 0`,
	// TOAST: unchanged large values under DEFAULT (from the snapshot's
	// cache, from a streamed insert) and FULL (from the old row).
	`UPDATE docs SET n = n + 1`,
	`INSERT INTO docs VALUES (6, ` + bigText + `, 0)`,
	`UPDATE docs SET n = 10 WHERE id = 6`,
	`UPDATE docs SET body = ` + bigText + ` WHERE id = 2`,
	`UPDATE docs SET n = 20 WHERE id = 2`,
	`UPDATE docs SET id = 106, n = 30 WHERE id = 1`, // key change with unchanged TOAST
	`UPDATE docs_full SET n = n + 1`,
	`INSERT INTO docs_full VALUES (4, ` + bigText + `, 0)`,
	`UPDATE docs_full SET n = 5 WHERE id = 4`,
	`DELETE FROM docs_full WHERE id = 1`,
	// REPLICA IDENTITY USING INDEX, key change, truncate.
	`INSERT INTO kv VALUES ('c', 3)`,
	`UPDATE kv SET v = 20 WHERE k = 'b'`,
	`UPDATE kv SET k = 'cc' WHERE k = 'c'`,
	`DELETE FROM kv WHERE k = 'a'`,
	`TRUNCATE kv`,
	`INSERT INTO kv VALUES ('after-truncate', 1)`,
	`INSERT INTO "Odd ""Name""" VALUES (1, 'x'), (2, 'y')`,
	`UPDATE "Odd ""Name""" SET v = 'z' WHERE id = 2`,
	`INSERT INTO alltypes VALUES ` + strings.Replace(allTypesValues, "%d", "2", 1),
	`UPDATE alltypes SET n = 0.000000000000000000001, at = '{}', tstz = '1970-01-01 00:00:00+00' WHERE id = 1`,
	// A multi-table transaction.
	`BEGIN; INSERT INTO accounts VALUES (5000, 'multi', 1, 1); UPDATE kv SET v = v + 1; DELETE FROM accounts WHERE id = 2001; COMMIT`,
	// Schema changes: add, retype, drop.
	`ALTER TABLE accounts ADD COLUMN note text`,
	`UPDATE accounts SET note = 'note ' || id WHERE id < 100`,
	`ALTER TABLE accounts ALTER COLUMN n TYPE int8`,
	`UPDATE accounts SET n = 5000000000 WHERE id = 60`,
	`ALTER TABLE accounts DROP COLUMN name`,
	`INSERT INTO accounts (id, balance, n, note) VALUES (6000, 1, 1, 'after drop')`,
	// One transaction of a million rows.
	`INSERT INTO big SELECT g, 'row ' || g FROM generate_series(1, 1000000) g`,
	`UPDATE big SET pad = 'updated' WHERE id % 100000 = 0`,
}

// TestWorkloadReplaysToSourceState runs the acceptance workload (every
// column type, TOAST values, a million-row transaction that spills)
// through snapshot and stream, then replays the log into a model and
// compares it with the source tables, column by column.
func TestWorkloadReplaysToSourceState(t *testing.T) {
	e := newEnv(t, pgtest.WithoutFsync())
	e.exec(workloadSetup...)
	cfg := testConfig(e.dsn)
	cfg.SnapshotChunkRows = 500
	cfg.MaxTxnMemory = 4 << 20 // the million-row transaction spills
	cfg.SpillDir = t.TempDir()
	r := e.run(cfg)
	e.waitSlot("walship")
	// Some streamed changes during the snapshot (the kill test has more).
	e.exec(workloadStream[:4]...)
	// TRUNCATE is not MVCC-safe: one committed while the snapshot runs
	// empties the table for the snapshot too. Let it finish first, so the
	// row count below is exact.
	deadline := time.Now().Add(60 * time.Second)
	for !r.src.Stats().SnapshotDone {
		if time.Now().After(deadline) {
			t.Fatalf("snapshot not done in 60s: %+v", r.src.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.exec(workloadStream[4:]...)
	e.catchUp(r, 150*time.Second)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	st := r.src.Stats()
	if !st.SnapshotDone || st.SnapshotRows != 2000+5+3+2+1 || st.SnapshotTables != len(workloadPKs) {
		t.Errorf("snapshot stats %+v", st)
	}
	txns := readLog(t, e.w)
	compareModels(t, replay(t, txns, workloadPKs), sourceModel(t, e.dsn, workloadPKs))

	var bigTxn, lastSrc uint64
	for _, txn := range txns {
		if len(txn.Changes) == 1000000 {
			bigTxn++
		}
		if h := txn.Header; h.SourceLSN != 0 {
			if h.SourceLSN <= lastSrc {
				t.Errorf("source LSNs out of order: %x after %x", h.SourceLSN, lastSrc)
			}
			lastSrc = h.SourceLSN
			if h.XID == 0 || h.SourceCommitTime.IsZero() || h.Origin != "pg/walship" {
				t.Errorf("streamed txn header %+v", h)
			}
		}
	}
	if bigTxn != 1 {
		t.Errorf("%d log transactions of 1,000,000 changes, want 1 (whole, never split)", bigTxn)
	}
	// The schema change shows in the Types of later changes.
	var sawNote, sawInt8, sawDropped bool
	for _, txn := range txns {
		for _, c := range txn.Changes {
			if c.Table.Name != "accounts" {
				continue
			}
			if typ, ok := c.TypeOf("note"); ok && typ == "text" {
				sawNote = true
			}
			if typ, _ := c.TypeOf("n"); typ == "int8" {
				sawInt8 = true
				if _, ok := c.TypeOf("name"); !ok && c.Op == change.Insert {
					sawDropped = true
				}
			}
		}
	}
	if !sawNote || !sawInt8 || !sawDropped {
		t.Errorf("schema changes not carried in Types: added %v, retyped %v, dropped %v", sawNote, sawInt8, sawDropped)
	}
}
