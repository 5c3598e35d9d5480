package pgsource

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/walship/walship/change"
	"github.com/walship/walship/internal/pgtest"
)

// ops renders a table's changes in the log as "op key after-columns",
// the columns as name=value.
func ops(txns []change.Committed, table string) []string {
	var out []string
	for _, txn := range txns {
		for _, c := range txn.Changes {
			if c.Table.String() != table {
				continue
			}
			s := c.Op.Name() + " " + rowText(c.Key)
			if c.After != nil {
				s += " " + rowText(c.After)
			}
			out = append(out, s)
		}
	}
	return out
}

func rowText(r change.Row) string {
	var parts []string
	for _, c := range r {
		parts = append(parts, c.Name+"="+c.Value.String())
	}
	return strings.Join(parts, ",")
}

func runUntilDone(t *testing.T, e *env, cfg Options) *running {
	t.Helper()
	r := e.run(cfg)
	deadline := time.Now().Add(90 * time.Second)
	for !r.src.Stats().SnapshotDone {
		select {
		case err := <-r.done:
			r.done <- err
			t.Fatalf("Run returned before its snapshot was done: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("snapshot not done within 90s: %+v", r.src.Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return r
}

// TestRowFilterColumnListHashMask: the publication's row filter and
// column list decide what the snapshot and the stream capture (an update
// leaving the filter is a delete, one entering it an insert), and hashed
// and masked values never reach the log, in new rows, old rows or the
// snapshot.
func TestRowFilterColumnListHashMask(t *testing.T) {
	e := newEnv(t, pgtest.WithoutFsync())
	e.exec(`CREATE TABLE f (id int PRIMARY KEY, amount int, note text)`, `ALTER TABLE f REPLICA IDENTITY FULL`,
		`CREATE TABLE c (id int PRIMARY KEY, a text, b text)`,
		`CREATE TABLE p (id int PRIMARY KEY, email text, phone text)`, `ALTER TABLE p REPLICA IDENTITY FULL`,
		`INSERT INTO f VALUES (1, 50, 'small'), (2, 150, 'big')`,
		`INSERT INTO c VALUES (1, 'a1', 'secret1')`,
		`INSERT INTO p VALUES (1, 'alice@example.com', '555-0101')`)
	cfg := testConfig(e.dsn)
	cfg.HashSalt = "pepper"
	cfg.Tables = []TableSpec{{Name: "public.f", Where: "amount > 100"}, {Name: "public.c", Columns: []string{"id", "a"}},
		{Name: "public.p", Hash: []string{"email"}, Mask: []string{"phone"}}}
	r := runUntilDone(t, e, cfg)
	e.exec(`INSERT INTO f VALUES (3, 200, 'in'), (4, 10, 'out')`,
		`UPDATE f SET amount = 20 WHERE id = 2`,  // leaves the filter: a delete
		`UPDATE f SET amount = 500 WHERE id = 4`, // enters it: an insert
		`INSERT INTO c VALUES (2, 'a2', 'secret2')`, `UPDATE c SET b = 'secret3', a = 'a3' WHERE id = 1`,
		`INSERT INTO p VALUES (2, 'bob@example.com', NULL)`, `UPDATE p SET phone = '555-0199' WHERE id = 1`,
		`DELETE FROM p WHERE id = 2`)
	e.catchUp(r, 60*time.Second)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	txns := readLog(t, e.w)
	want := []string{`read id=2 id=2,amount=150,note="big"`, `insert id=3 id=3,amount=200,note="in"`,
		`delete id=2`, `insert id=4 id=4,amount=500,note="out"`}
	if got := ops(txns, "public.f"); !slices.Equal(got, want) {
		t.Errorf("row filter: log has\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	want = []string{`read id=1 id=1,a="a1"`, `insert id=2 id=2,a="a2"`, `update id=1 id=1,a="a3"`}
	if got := ops(txns, "public.c"); !slices.Equal(got, want) {
		t.Errorf("column list: log has\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	h := func(s string) string { x := sha256.Sum256([]byte("pepper" + s)); return hex.EncodeToString(x[:]) }
	want = []string{fmt.Sprintf(`read id=1 id=1,email="%s",phone="****"`, h("alice@example.com")),
		fmt.Sprintf(`insert id=2 id=2,email="%s",phone=null`, h("bob@example.com")),
		fmt.Sprintf(`update id=1 id=1,email="%s",phone="****"`, h("alice@example.com")),
		`delete id=2`}
	if got := ops(txns, "public.p"); !slices.Equal(got, want) {
		t.Errorf("hash and mask: log has\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, txn := range txns {
		for _, c := range txn.Changes {
			for _, row := range []change.Row{c.After, c.Before, c.Key} {
				for _, col := range row {
					if v := col.Value.String(); strings.Contains(v, "@example.com") || strings.Contains(v, "555-") || strings.Contains(v, "secret") {
						t.Errorf("%s %s: column %s holds %s in the log", c.Op.Name(), c.Table, col.Name, v)
					}
				}
			}
			if c.Table.String() == "public.p" {
				if ty, _ := c.TypeOf("email"); len(c.Types) > 0 && ty != "text" {
					t.Errorf("hashed column email has type %q in the log, want text", ty)
				}
			}
		}
	}

	// A hashed key column is refused before anything is changed.
	cfg.Tables = []TableSpec{{Name: "public.p", Hash: []string{"id"}}}
	wantFatal(t, runErr(t, e, cfg), "source.postgres.tables[0].hash", `"id" is a key column`)
	cfg.Tables = []TableSpec{{Name: "public.c", Columns: []string{"a"}}}
	wantFatal(t, runErr(t, e, cfg), "source.postgres.tables[0].columns", `key column "id"`)
	// A row filter on a column outside the replica identity would make
	// PostgreSQL refuse UPDATE and DELETE on the table: refused, and the
	// publication is left as it was.
	cfg.Tables = []TableSpec{{Name: "public.c", Where: "a <> 'x'"}}
	wantFatal(t, runErr(t, e, cfg), "source.postgres.tables[0].where", "REPLICA IDENTITY FULL")
	e.exec(`UPDATE c SET a = 'a4' WHERE id = 1`, `DELETE FROM c WHERE id = 2`)
}

// TestPublicationKeptInStep: across restarts the managed publication
// gains tables, loses them (their changes are no longer captured) and
// takes new row filters; a FOR ALL TABLES publication made by hand is
// left alone.
func TestPublicationKeptInStep(t *testing.T) {
	e := newEnv(t, pgtest.WithoutFsync())
	e.exec(`CREATE TABLE a (id int PRIMARY KEY)`, `CREATE TABLE b (id int PRIMARY KEY)`, `CREATE TABLE c (id int PRIMARY KEY)`,
		`INSERT INTO c VALUES (1)`)
	cfg := testConfig(e.dsn)
	pubTables := func() string {
		var s string
		if err := e.conn().QueryRow(context.Background(), `SELECT string_agg(tablename || coalesce(' ' || rowfilter, ''), '; ' ORDER BY tablename)
			FROM pg_publication_tables WHERE pubname = 'walship'`).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	step := func(tables []TableSpec, sqls ...string) *running {
		t.Helper()
		cfg.Tables = tables
		r := runUntilDone(t, e, cfg)
		e.exec(sqls...)
		// A table the publication gained, or whose filter changed, is
		// copied again (incremental snapshot), queued before streaming
		// starts: once caught up, let the copies finish, so that each
		// step's log is complete.
		e.catchUp(r, 60*time.Second)
		waitFor(t, r, 2*time.Minute, "copies", func(s Stats) bool { return s.IncrementalPending == 0 })
		e.catchUp(r, 60*time.Second)
		if err := r.stop(); err != nil {
			t.Fatal(err)
		}
		return r
	}
	r := step([]TableSpec{{Name: "public.a"}, {Name: "public.b"}}, `INSERT INTO a VALUES (1)`, `INSERT INTO b VALUES (1)`)
	if got := pubTables(); got != "a; b" {
		t.Errorf("first start: publication has %q", got)
	}
	if got := r.src.addedToPublication(); len(got) != 2 {
		t.Errorf("created publication: added %v, want a and b", got)
	}
	r = step([]TableSpec{{Name: "public.a"}, {Name: "public.b", Where: "id > 10"}, {Name: "public.c"}},
		`INSERT INTO a VALUES (2)`, `INSERT INTO b VALUES (5), (15)`, `INSERT INTO c VALUES (2)`)
	if got := pubTables(); got != "a; b (id > 10); c" {
		t.Errorf("second start: publication has %q", got)
	}
	if got := r.src.addedToPublication(); !slices.Equal(got, []change.Table{{Schema: "public", Name: "c"}}) {
		t.Errorf("second start: added %v, want public.c", got)
	}
	r = step([]TableSpec{{Name: "public.a"}}, `INSERT INTO a VALUES (3)`, `INSERT INTO b VALUES (30)`, `INSERT INTO c VALUES (3)`)
	if got := pubTables(); got != "a" {
		t.Errorf("third start: publication has %q", got)
	}
	if got := r.src.addedToPublication(); len(got) != 0 {
		t.Errorf("third start: added %v, want none", got)
	}
	txns := readLog(t, e.w)
	for tb, want := range map[string][]string{
		"public.a": {"insert id=1 id=1", "insert id=2 id=2", "insert id=3 id=3"},
	} {
		if got := ops(txns, tb); !slices.Equal(got, want) {
			t.Errorf("%s: log has %q, want %q", tb, got, want)
		}
	}
	// b: 5 filtered out, 30 inserted once b was dropped; its new filter
	// made walship copy it again (15 read back, if inserted before).
	if got := slices.DeleteFunc(ops(txns, "public.b"), func(o string) bool { return o == "read id=15 id=15" }); !slices.Equal(got, []string{"insert id=1 id=1", "insert id=15 id=15"}) {
		t.Errorf("public.b: log has %q, want inserts of 1 and 15 (and a read of 15)", ops(txns, "public.b"))
	}
	// 1 was in c before c was added: its backfill brings it (and 2 too,
	// if the insert of 2 came first); 3 was inserted while c was dropped.
	if got := keysAfter(ops(txns, "public.c")); !slices.Equal(got, []string{"1", "2"}) || !slices.Contains(ops(txns, "public.c"), "read id=1 id=1") {
		t.Errorf("public.c: log %q leaves keys %q, want 1 (read by the backfill) and 2", ops(txns, "public.c"), got)
	}

	// No tables: the managed publication becomes FOR ALL TABLES, and stays
	// so across a restart; a list again makes it a list again.
	step(nil, `INSERT INTO b VALUES (40)`)
	step(nil, `INSERT INTO b VALUES (41)`)
	if got := pubTables(); got != "a; b; c" {
		t.Errorf("no tables configured: publication has %q, want every table", got)
	}
	step([]TableSpec{{Name: "public.c"}}, `INSERT INTO b VALUES (42)`, `INSERT INTO c VALUES (4)`)
	if got := pubTables(); got != "c" {
		t.Errorf("back to a list: publication has %q", got)
	}
	txns = readLog(t, e.w)
	// b came back (every table) after it was dropped: backfilled, so 5
	// (filtered out before) and 30 (inserted while dropped) reach the log;
	// 42 was inserted after b was dropped again.
	if got, want := keysAfter(ops(txns, "public.b")), []string{"1", "15", "30", "40", "41", "5"}; !slices.Equal(got, want) {
		t.Errorf("public.b: replaying the log leaves keys %q, want %q (log %q)", got, want, ops(txns, "public.b"))
	}

	// A publication made by hand FOR ALL TABLES is not touched.
	e.exec(`CREATE PUBLICATION mine FOR ALL TABLES`)
	var logs syncBuf
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	cfg.Publication, cfg.Slot, cfg.Tables = "mine", "mine", []TableSpec{{Name: "public.a", Where: "id > 1"}}
	step(cfg.Tables)
	var all bool
	var comment *string
	if err := e.conn().QueryRow(context.Background(), `SELECT puballtables, obj_description(oid, 'pg_publication')
		FROM pg_publication WHERE pubname = 'mine'`).Scan(&all, &comment); err != nil || !all || comment != nil {
		t.Errorf("the hand-made publication changed: all tables %v, comment %v, %v", all, comment, err)
	}
	if !strings.Contains(logs.String(), "is FOR ALL TABLES and was not made by walship: left alone") {
		t.Errorf("no log line says the publication is left alone:\n%s", logs.String())
	}

	// Handed to walship by its comment, it is brought in step.
	e.exec(`COMMENT ON PUBLICATION mine IS 'walship: managed publication'`)
	step(cfg.Tables, `INSERT INTO a VALUES (5)`)
	var got string
	if err := e.conn().QueryRow(context.Background(), `SELECT string_agg(tablename || coalesce(' ' || rowfilter, ''), '; ')
		FROM pg_publication_tables WHERE pubname = 'mine'`).Scan(&got); err != nil || got != "a (id > 1)" {
		t.Errorf("publication handed to walship has %q (%v), want a (id > 1)", got, err)
	}
}

// TestPartitionedRootPublishedAsRoot: a partitioned table listed by its
// root is copied once through the root and streamed as the root, rows
// moving between partitions included; a replica equals the source.
func TestPartitionedRootPublishedAsRoot(t *testing.T) {
	e := newEnv(t, pgtest.WithoutFsync())
	e.exec(`CREATE TABLE meas (id int, region text, v int, PRIMARY KEY (id, region)) PARTITION BY LIST (region)`,
		`CREATE TABLE meas_eu PARTITION OF meas FOR VALUES IN ('eu')`,
		`CREATE TABLE meas_us PARTITION OF meas FOR VALUES IN ('us')`,
		`CREATE TABLE meas_ap PARTITION OF meas FOR VALUES IN ('ap')`,
		`INSERT INTO meas SELECT i, (ARRAY['eu','us','ap'])[i % 3 + 1], i FROM generate_series(1, 30) i`)
	cfg := testConfig(e.dsn)
	cfg.Tables = []TableSpec{{Name: "public.meas"}, {Name: "public.meas_us"}}
	wantFatal(t, runErr(t, e, cfg), "source.postgres.tables[1]", "is a partition of public.meas (tables[0])", "list the root only")

	cfg.Tables = []TableSpec{{Name: "public.meas"}}
	cfg.SnapshotChunkRows = 7
	r := runUntilDone(t, e, cfg)
	e.exec(`INSERT INTO meas_eu VALUES (100, 'eu', 1)`, `INSERT INTO meas VALUES (101, 'ap', 2), (102, 'us', 3)`,
		`UPDATE meas SET region = 'us' WHERE id IN (100, 3)`, // moves across partitions
		`UPDATE meas SET v = v * 10 WHERE region = 'ap'`, `DELETE FROM meas WHERE id = 102`)
	e.catchUp(r, 60*time.Second)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	txns := readLogAll(t, e.w)
	reads := 0
	for _, txn := range txns {
		for _, c := range txn.Changes {
			if c.Op != change.Message && c.Table.String() != "public.meas" {
				t.Fatalf("%s change on %s: partitions must be published as the root", c.Op.Name(), c.Table)
			}
			if c.Op == change.Read {
				reads++
			}
		}
	}
	if reads != 30 {
		t.Errorf("snapshot copied %d rows, want 30 (each row once, through the root)", reads)
	}
	replicaEqualsSource(t, e.dsn, txns)
}

// TestHashValueText: the text a value is hashed as (docs/POSTGRES.md,
// "Per-table options").
func TestHashValueText(t *testing.T) {
	ts, err := change.TimestampValue(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	num, _ := change.NumericValue("12.50")
	for _, tc := range []struct {
		v    change.Value
		text string
	}{{change.TextValue(`a"b`), `a"b`}, {change.IntValue(42), "42"}, {ts, "2026-01-02T03:04:05Z"}, {num, "12.50"},
		{change.BytesValue([]byte{0xde, 0xad}), "dead"}, {change.BoolValue(true), "true"}} {
		h := sha256.Sum256([]byte("salt" + tc.text))
		if got := hashValue("salt", tc.v); got != hex.EncodeToString(h[:]) {
			t.Errorf("hash of %s is not that of salt + %q", tc.v, tc.text)
		}
	}
}

// TestIncrementalSnapshotHonoursPublication: an incremental snapshot copies
// what the publication publishes, as the initial snapshot does: the row
// filter's rows, the column list's columns, hashed and masked values.
func TestIncrementalSnapshotHonoursPublication(t *testing.T) {
	e := newEnv(t, pgtest.WithoutFsync())
	e.exec(`CREATE TABLE f (id int PRIMARY KEY, amount int, note text)`, `ALTER TABLE f REPLICA IDENTITY FULL`,
		`CREATE TABLE c (id int PRIMARY KEY, a text, b text)`,
		`CREATE TABLE p (id int PRIMARY KEY, email text, phone text)`, `ALTER TABLE p REPLICA IDENTITY FULL`,
		`INSERT INTO f VALUES (1, 50, 'small'), (2, 150, 'big')`,
		`INSERT INTO c VALUES (1, 'a1', 'secret1')`,
		`INSERT INTO p VALUES (1, 'alice@example.com', '555-0101')`)
	cfg := testConfig(e.dsn)
	cfg.Snapshot = "never"
	cfg.HashSalt = "pepper"
	cfg.Tables = []TableSpec{{Name: "public.f", Where: "amount > 100"}, {Name: "public.c", Columns: []string{"id", "a"}},
		{Name: "public.p", Hash: []string{"email"}, Mask: []string{"phone"}}}
	r := e.run(cfg)
	waitFor(t, r, time.Minute, "streaming", func(s Stats) bool { return s.LogScanned && s.ConfirmedLSN > 0 })
	for _, tb := range []string{"public.f", "public.c", "public.p"} {
		if _, err := r.src.RequestSnapshot(context.Background(), tb, ""); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, r, 2*time.Minute, "incremental snapshots", func(s Stats) bool {
		return s.IncrementalPending == 0 && s.IncrementalChunks >= 3
	})
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	txns := readLog(t, e.w)
	h := func(s string) string { x := sha256.Sum256([]byte("pepper" + s)); return hex.EncodeToString(x[:]) }
	for table, want := range map[string][]string{
		"public.f": {`read id=2 id=2,amount=150,note="big"`},
		"public.c": {`read id=1 id=1,a="a1"`},
		"public.p": {fmt.Sprintf(`read id=1 id=1,email="%s",phone="****"`, h("alice@example.com"))},
	} {
		if got := ops(txns, table); !slices.Equal(got, want) {
			t.Errorf("%s: log has\n%s\nwant\n%s", table, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
}

// keysAfter replays ops (as ops renders them) of a table keyed by id and
// returns the ids left, sorted as text.
func keysAfter(ops []string) []string {
	have := map[string]bool{}
	for _, o := range ops {
		f := strings.Fields(o)
		if len(f) < 2 {
			continue
		}
		id := strings.TrimPrefix(f[1], "id=")
		switch f[0] {
		case "insert", "read", "update":
			have[id] = true
		case "delete":
			delete(have, id)
		}
	}
	return slices.Sorted(maps.Keys(have))
}
