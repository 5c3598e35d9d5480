package replica

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/walship/walship/change"
	_ "modernc.org/sqlite" // driver "sqlite"
)

// sqliteDSN returns the modernc DSN of the database file path: WAL
// journal, synchronous=FULL (a commit reported to the caller survives a
// power loss, so the replica never goes back behind a position the
// consumer has acknowledged upstream), immediate transactions (the write
// lock is taken at BEGIN, so the busy timeout covers it).
//
// Unsynced (Options.Unsynced) sets synchronous=NORMAL instead: in WAL mode a
// commit is then not synced, only checkpoints are, and a power loss can take
// back the last commits but never leaves the file inconsistent.
func sqliteDSN(path string, busy time.Duration, readOnly, unsynced bool) string {
	q := url.Values{}
	q.Set("_busy_timeout", fmt.Sprint(busy.Milliseconds()))
	if readOnly {
		q.Set("_query_only", "1")
	} else {
		q.Set("_journal_mode", "WAL")
		q.Set("_synchronous", "FULL")
		if unsynced {
			q.Set("_synchronous", "NORMAL")
		}
		q.Set("_txlock", "immediate")
		// A 64 MiB page cache (the default is 2 MiB): an applier's
		// upserts walk the tables' indexes, and with the small cache
		// most of them read pages back from the file.
		q.Add("_pragma", "cache_size(-65536)")
	}
	return "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
}

type sqliteBackend struct {
	db       *sql.DB
	path     string
	unsynced bool // Options.Unsynced: synchronous=NORMAL
}

func openSQLite(ctx context.Context, path string, opts Options) (*sqliteBackend, error) {
	if fi, err := os.Stat(filepath.Dir(path)); err != nil {
		return nil, fmt.Errorf("directory of the database: %w", err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("%s is not a directory", filepath.Dir(path))
	}
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return nil, fmt.Errorf("%s is a directory", path)
	}
	db, err := sql.Open("sqlite", sqliteDSN(path, opts.BusyTimeout, false, opts.Unsynced))
	if err != nil {
		return nil, err
	}
	// One connection: the applier is the only writer, and statements
	// prepared on the DB are reused by its transactions.
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	var mode string
	if err := db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		db.Close()
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	if !strings.EqualFold(mode, "wal") {
		db.Close()
		return nil, fmt.Errorf("opening %s: journal mode is %q, not wal", path, mode)
	}
	return &sqliteBackend{db: db, path: path, unsynced: opts.Unsynced}, nil
}

const sqliteBookkeeping = `
CREATE TABLE IF NOT EXISTS walship_applied (
	id          INTEGER PRIMARY KEY CHECK (id = 1),
	lsn         INTEGER NOT NULL,
	commit_time TEXT,
	txns        INTEGER NOT NULL,
	changes     INTEGER NOT NULL,
	lineage     TEXT NOT NULL DEFAULT ''
);
INSERT OR IGNORE INTO walship_applied (id, lsn, commit_time, txns, changes) VALUES (1, 0, NULL, 0, 0);
CREATE TABLE IF NOT EXISTS walship_columns (
	tbl  TEXT NOT NULL,
	col  TEXT NOT NULL,
	type TEXT NOT NULL,
	PRIMARY KEY (tbl, col)
);` + namesTable

func (b *sqliteBackend) init(ctx context.Context) (State, error) {
	if _, err := b.db.ExecContext(ctx, sqliteBookkeeping); err != nil {
		return State{}, fmt.Errorf("creating the bookkeeping tables: %w", err)
	}
	return readSQLiteState(ctx, b.db)
}

type sqlQueryRower interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func readSQLiteState(ctx context.Context, db sqlQueryRower) (State, error) {
	var (
		st  State
		lsn int64
		ct  sql.NullString
	)
	err := db.QueryRowContext(ctx, `SELECT lsn, commit_time, txns, changes, lineage FROM walship_applied WHERE id = 1`).
		Scan(&lsn, &ct, &st.Txns, &st.Changes, &st.Lineage)
	if err != nil {
		return State{}, fmt.Errorf("reading walship_applied: %w", err)
	}
	st.LSN = uint64(lsn)
	if ct.Valid {
		if st.CommitTime, err = time.Parse(time.RFC3339Nano, ct.String); err != nil {
			return State{}, fmt.Errorf("walship_applied.commit_time %q: %w", ct.String, err)
		}
	}
	return st, nil
}

func (b *sqliteBackend) readState(ctx context.Context) (State, error) {
	return readSQLiteState(ctx, b.db)
}

func (b *sqliteBackend) close() error {
	var err error
	if b.unsynced {
		// Under synchronous=NORMAL a checkpoint syncs the WAL, copies it
		// into the database file and syncs that.
		if _, err = b.db.Exec("PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
			err = fmt.Errorf("make the applied transactions durable: %w", err)
		}
	}
	return errors.Join(err, b.db.Close())
}

func (b *sqliteBackend) begin(ctx context.Context) (dbTxn, error) {
	tx, err := b.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	return &sqliteTxn{b: b, tx: tx, stmts: map[string]*sql.Stmt{}}, nil
}

type sqliteTxn struct {
	b     *sqliteBackend
	tx    *sql.Tx
	stmts map[string]*sql.Stmt // prepared in tx, by SQL text
	args  []any
}

// exec runs a statement prepared once per DB transaction. (Statements
// prepared on the DB cannot be used here: the transaction holds the only
// connection.)
func (t *sqliteTxn) exec(ctx context.Context, query string, args []any) error {
	st, ok := t.stmts[query]
	if !ok {
		var err error
		if st, err = t.tx.PrepareContext(ctx, query); err != nil {
			return err
		}
		t.stmts[query] = st
	}
	_, err := st.ExecContext(ctx, args...)
	return err
}

// ddl runs a schema change (prepared statements re-prepare themselves).
func (t *sqliteTxn) ddl(ctx context.Context, query string, args ...any) error {
	if _, err := t.tx.ExecContext(ctx, query, args...); err != nil {
		return err
	}
	return nil
}

func sqliteDeclType(c class) string {
	switch c {
	case classInt:
		return "INTEGER"
	case classFloat:
		return "REAL"
	case classBool:
		return "BOOLEAN" // NUMERIC affinity: stores the integers 0 and 1
	case classBytes:
		return "BLOB"
	}
	// TEXT affinity keeps numerics, timestamps, JSON and arrays as written.
	return "TEXT"
}

func (t *sqliteTxn) loadState(ctx context.Context) (State, error) {
	// BEGIN IMMEDIATE took the write lock: the row cannot change under us.
	return readSQLiteState(ctx, t.tx)
}

func (b *sqliteBackend) dialect() *dialect { return &sqliteDialect }

func (t *sqliteTxn) lookupName(ctx context.Context, kind, tbl, target string) (string, bool, error) {
	var src string
	err := t.tx.QueryRowContext(ctx, sqliteDialect.lookupName(), kind, tbl, target).Scan(&src)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	return src, err == nil, err
}

func (t *sqliteTxn) recordName(ctx context.Context, kind, tbl, target, source string) error {
	return t.ddl(ctx, sqliteDialect.recordName(), kind, tbl, target, source)
}

func (t *sqliteTxn) forgetName(ctx context.Context, kind, tbl, target string) error {
	return t.ddl(ctx, sqliteDialect.forgetName(), kind, tbl, target)
}

// schemaExists: SQLite has no schemas (they are flattened into table
// names), so no schema name is ever taken.
func (t *sqliteTxn) schemaExists(context.Context, string) (bool, error) { return false, nil }

func (t *sqliteTxn) loadTable(ctx context.Context, src change.Table, dst target) (*tableSchema, error) {
	ts, err := loadSQLiteTable(ctx, t.tx, dst.name, true)
	if ts != nil {
		ts.src = src
	}
	return ts, err
}

// loadSQLiteTable reads the shape of table name, nil if absent; with
// hasTypes, source types come from walship_columns.
func loadSQLiteTable(ctx context.Context, tx *sql.Tx, name string, hasTypes bool) (*tableSchema, error) {
	rows, err := tx.QueryContext(ctx, `SELECT name, type, pk FROM pragma_table_info(?) ORDER BY cid`, name)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	ts := &tableSchema{}
	pks := map[int]string{}
	for rows.Next() {
		var (
			col, decl string
			pk        int
		)
		if err := rows.Scan(&col, &decl, &pk); err != nil {
			return nil, err
		}
		ts.cols = append(ts.cols, column{name: col, typ: sqliteFallbackType(decl)})
		if pk > 0 {
			pks[pk] = col
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(ts.cols) == 0 {
		return nil, nil
	}
	for i := 1; i <= len(pks); i++ {
		ts.key = append(ts.key, pks[i])
	}
	if !hasTypes {
		return ts, nil
	}
	types, err := tx.QueryContext(ctx, `SELECT col, type FROM walship_columns WHERE tbl = ?`, name)
	if err != nil {
		return nil, err
	}
	defer types.Close()
	for types.Next() {
		var col, typ string
		if err := types.Scan(&col, &typ); err != nil {
			return nil, err
		}
		if i := ts.index(col); i >= 0 {
			ts.cols[i].typ = parseType(typ)
		}
	}
	return ts, types.Err()
}

// sqliteFallbackType is the source type assumed for a column walship did
// not create (no walship_columns row).
func sqliteFallbackType(decl string) *typeInfo {
	d := strings.ToUpper(decl)
	switch {
	case strings.Contains(d, "INT"):
		return parseType("int8")
	case strings.Contains(d, "BOOL"):
		return parseType("bool")
	case strings.Contains(d, "REAL"), strings.Contains(d, "FLOA"), strings.Contains(d, "DOUB"):
		return parseType("float8")
	case strings.Contains(d, "BLOB"):
		return parseType("bytea")
	}
	return parseType("text")
}

func (t *sqliteTxn) recordType(ctx context.Context, ts *tableSchema, c column) error {
	return t.ddl(ctx, sqliteDialect.recordType(), sqliteTableName(ts.src), c.name, c.typ.name)
}

func (t *sqliteTxn) createTable(ctx context.Context, ts *tableSchema) error {
	if len(ts.cols) == 0 {
		// SQLite needs a column; a Postgres table may have none.
		return errors.New("a table without columns cannot be created in SQLite")
	}
	if err := t.ddl(ctx, sqliteDialect.createTable(ts)); err != nil {
		return err
	}
	for _, c := range ts.cols {
		if err := t.recordType(ctx, ts, c); err != nil {
			return err
		}
	}
	return nil
}

func (t *sqliteTxn) addColumn(ctx context.Context, ts *tableSchema, c column) error {
	if err := t.ddl(ctx, sqliteDialect.addColumn(ts, c)); err != nil {
		return err
	}
	return t.recordType(ctx, ts, c)
}

func (t *sqliteTxn) dropColumn(ctx context.Context, ts *tableSchema, name string) error {
	if err := t.ddl(ctx, sqliteDialect.dropColumn(ts, name)); err != nil {
		return err
	}
	return t.ddl(ctx, sqliteDialect.forgetColumn(), sqliteTableName(ts.src), name)
}

// retypeColumn records the new source type. SQLite columns are not
// retyped: values are stored by their own kind (see docs/REPLICA.md), and
// the declared affinity only decides how a text that looks like a number
// is stored, which canonical dumps read back alike.
func (t *sqliteTxn) retypeColumn(ctx context.Context, ts *tableSchema, c column) error {
	return t.recordType(ctx, ts, c)
}

func (t *sqliteTxn) upsert(ctx context.Context, ts *tableSchema, row change.Row) error {
	args, err := t.values(t.args[:0], ts, row)
	if err != nil {
		return err
	}
	t.args = args
	return t.exec(ctx, sqliteDialect.upsert(ts, row), args)
}

// values appends the SQLite values of row to args.
func (t *sqliteTxn) values(args []any, ts *tableSchema, row change.Row) ([]any, error) {
	for _, c := range row {
		v, err := sqliteValue(forColumn(ts, c.Name, c.Value))
		if err != nil {
			return nil, fmt.Errorf("column %q: %w", c.Name, err)
		}
		args = append(args, v)
	}
	return args, nil
}

func (t *sqliteTxn) update(ctx context.Context, ts *tableSchema, set, where change.Row) error {
	if len(set) == 0 || len(where) == 0 {
		return nil
	}
	args, err := t.values(t.args[:0], ts, set)
	if err == nil {
		args, err = t.values(args, ts, where)
	}
	if err != nil {
		return err
	}
	t.args = args
	if err := t.exec(ctx, sqliteDialect.update(ts, set, where), args); err != nil || len(ts.key) > 0 {
		return err
	}
	// No row equal to where: insert set (dialect.updateKeyless).
	return t.exec(ctx, sqliteDialect.insertMissed(ts, set, "changes() = 0"), args[:len(set)])
}

func (t *sqliteTxn) delete(ctx context.Context, ts *tableSchema, where change.Row) error {
	if len(where) == 0 {
		return nil
	}
	args, err := t.values(t.args[:0], ts, where)
	if err != nil {
		return err
	}
	t.args = args
	return t.exec(ctx, sqliteDialect.delete(ts, where), args)
}

// truncate deletes the rows of each table (SQLite has no TRUNCATE); with
// RESTART IDENTITY it also forgets their AUTOINCREMENT counters, if any.
// CASCADE needs nothing more: the source lists every table it emptied.
func (t *sqliteTxn) truncate(ctx context.Context, ts []*tableSchema, opts change.TruncateOptions) error {
	for _, s := range ts {
		if err := t.exec(ctx, sqliteDialect.truncateTables([]*tableSchema{s}, 0), nil); err != nil {
			return err
		}
	}
	if opts&change.TruncateRestartIdentity == 0 {
		return nil
	}
	var seq int
	if err := t.tx.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_sequence'").Scan(&seq); err != nil || seq == 0 {
		return err
	}
	for _, s := range ts {
		if err := t.exec(ctx, "DELETE FROM sqlite_sequence WHERE name = ?", []any{sqliteDialect.target(s.src).name}); err != nil {
			return err
		}
	}
	return nil
}

func (t *sqliteTxn) saveState(ctx context.Context, s State) error {
	if s.LSN > 1<<63-1 {
		return fmt.Errorf("LSN %d does not fit SQLite's INTEGER", s.LSN)
	}
	var ct any
	if !s.CommitTime.IsZero() {
		ct = s.CommitTime.UTC().Format(time.RFC3339Nano)
	}
	return t.exec(ctx, sqliteDialect.saveState(),
		[]any{int64(s.LSN), ct, int64(s.Txns), int64(s.Changes), s.Lineage})
}

func (t *sqliteTxn) at(string) {} // statements run at once: errors are returned in place

func (t *sqliteTxn) commit(ctx context.Context) error { return t.tx.Commit() }

func (t *sqliteTxn) rollback() error { return t.tx.Rollback() }
