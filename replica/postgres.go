package replica

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/walship/walship/change"
	"github.com/walship/walship/internal/secret"
)

// pgFlushAt is how many statements are queued before they are sent in
// one pipeline (one round trip for all of them).
const pgFlushAt = 1024

type postgresBackend struct {
	url      string
	conn     *pgx.Conn // replaced when the server closed it (a restart)
	unsynced bool      // Options.Unsynced: commits do not wait for the WAL flush
}

func connectPostgres(ctx context.Context, rawURL string) (*pgx.Conn, error) {
	return connectPostgresWith(ctx, rawURL, false)
}

// connectPostgresWith connects; unsynced sets synchronous_commit off for
// the session (Options.Unsynced).
func connectPostgresWith(ctx context.Context, rawURL string, unsynced bool) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(rawURL)
	if err != nil {
		return nil, fmt.Errorf("bad connection string: %w", secret.DSNError(rawURL, err))
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	// Values are sent as text and converted by casts in the statements;
	// the session time zone only shapes what Dump reads.
	cfg.RuntimeParams["timezone"] = "UTC"
	if unsynced {
		cfg.RuntimeParams["synchronous_commit"] = "off"
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		// The driver's errors name the host, and a password with an
		// unencoded '@' makes part of it the host.
		return nil, secret.DSNError(rawURL, err)
	}
	return conn, nil
}

func openPostgres(ctx context.Context, rawURL string, opts Options) (backend, error) {
	conn, err := connectPostgresWith(ctx, rawURL, opts.Unsynced)
	if err != nil {
		return nil, err
	}
	return &postgresBackend{url: rawURL, conn: conn, unsynced: opts.Unsynced}, nil
}

const pgBookkeeping = `
CREATE TABLE IF NOT EXISTS walship_applied (
	id          int PRIMARY KEY CHECK (id = 1),
	lsn         bigint NOT NULL,
	commit_time timestamptz,
	txns        bigint NOT NULL,
	changes     bigint NOT NULL,
	lineage     text NOT NULL DEFAULT ''
);
INSERT INTO walship_applied (id, lsn, commit_time, txns, changes) VALUES (1, 0, NULL, 0, 0) ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS walship_columns (
	tbl  text NOT NULL,
	col  text NOT NULL,
	type text NOT NULL,
	PRIMARY KEY (tbl, col)
);` + namesTable

func (b *postgresBackend) init(ctx context.Context) (State, error) {
	// A multi-statement simple query runs as one transaction.
	if _, err := b.conn.Exec(ctx, pgBookkeeping, pgx.QueryExecModeSimpleProtocol); err != nil {
		return State{}, fmt.Errorf("creating the bookkeeping tables: %w", err)
	}
	return readPGState(ctx, b.conn, false)
}

type pgQuerier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func readPGState(ctx context.Context, q pgQuerier, lock bool) (State, error) {
	var (
		st              State
		lsn, txns, chgs int64
		ct              *time.Time
	)
	query := `SELECT lsn, commit_time, txns, changes, lineage FROM walship_applied WHERE id = 1`
	if lock {
		query += " FOR UPDATE"
	}
	if err := q.QueryRow(ctx, query).Scan(&lsn, &ct, &txns, &chgs, &st.Lineage); err != nil {
		return State{}, fmt.Errorf("reading walship_applied: %w", err)
	}
	st.LSN, st.Txns, st.Changes = uint64(lsn), uint64(txns), uint64(chgs)
	if ct != nil {
		st.CommitTime = ct.UTC()
	}
	return st, nil
}

func readPostgresState(ctx context.Context, rawURL string) (State, error) {
	conn, err := connectPostgres(ctx, rawURL)
	if err != nil {
		return State{}, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return readPGState(ctx, conn, false)
}

func (b *postgresBackend) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var err error
	if b.unsynced && !b.conn.IsClosed() {
		// A synchronous commit waits until the server's WAL is flushed
		// up to it, and so past every unsynced commit before it.
		_, err = b.conn.Exec(ctx, "SET synchronous_commit = on; UPDATE walship_applied SET lsn = lsn WHERE id = 1",
			pgx.QueryExecModeSimpleProtocol)
		if err != nil {
			err = fmt.Errorf("make the applied transactions durable: %w", err)
		}
	}
	return errors.Join(err, b.conn.Close(ctx))
}

// reconnect replaces a connection the server closed (a restart). It died
// with any DB transaction open on it, so nothing is half applied.
func (b *postgresBackend) reconnect(ctx context.Context) error {
	if !b.conn.IsClosed() {
		return nil
	}
	conn, err := connectPostgresWith(ctx, b.url, b.unsynced)
	if err != nil {
		return err
	}
	b.conn = conn
	return nil
}

func (b *postgresBackend) readState(ctx context.Context) (State, error) {
	if err := b.reconnect(ctx); err != nil {
		return State{}, err
	}
	return readPGState(ctx, b.conn, false)
}

func (b *postgresBackend) begin(ctx context.Context) (dbTxn, error) {
	if err := b.reconnect(ctx); err != nil {
		return nil, err
	}
	tx, err := b.conn.Begin(ctx)
	if err != nil {
		return nil, err
	}
	return &pgTxn{b: b, tx: tx, batch: &pgx.Batch{}}, nil
}

type pgTxn struct {
	b      *postgresBackend
	tx     pgx.Tx
	batch  *pgx.Batch
	descs  []string // per queued statement: the change it belongs to
	desc   string
	failed bool
}

func (t *pgTxn) loadState(ctx context.Context) (State, error) {
	if err := t.flush(ctx); err != nil {
		return State{}, err
	}
	return readPGState(ctx, t.tx, true)
}

// queue adds a statement to the pipeline, sending it when full.
func (t *pgTxn) queue(ctx context.Context, sql string, args []any) error {
	t.batch.Queue(sql, args...)
	t.descs = append(t.descs, t.desc)
	if t.batch.Len() >= pgFlushAt {
		return t.flush(ctx)
	}
	return nil
}

// flush sends the queued statements and returns the first error.
func (t *pgTxn) flush(ctx context.Context) error {
	n := t.batch.Len()
	if n == 0 {
		return nil
	}
	br := t.tx.SendBatch(ctx, t.batch)
	descs := t.descs
	t.batch, t.descs = &pgx.Batch{}, t.descs[:0:0]
	var first error
	for i := 0; i < n; i++ {
		if _, err := br.Exec(); err != nil && first == nil {
			first = &stmtError{desc: descs[i], err: err}
		}
	}
	if err := br.Close(); err != nil && first == nil {
		first = err
	}
	if first != nil {
		t.failed = true
	}
	return first
}

// exec runs a statement now, after the queued ones.
func (t *pgTxn) exec(ctx context.Context, sql string, args ...any) error {
	if err := t.flush(ctx); err != nil {
		return err
	}
	_, err := t.tx.Exec(ctx, sql, args...)
	return err
}

func (b *postgresBackend) dialect() *dialect { return &pgDialect }

func (t *pgTxn) lookupName(ctx context.Context, kind, tbl, target string) (string, bool, error) {
	if err := t.flush(ctx); err != nil {
		return "", false, err
	}
	var src string
	err := t.tx.QueryRow(ctx, pgDialect.lookupName(), kind, tbl, target).Scan(&src)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", false, nil
	}
	return src, err == nil, err
}

func (t *pgTxn) recordName(ctx context.Context, kind, tbl, target, source string) error {
	return t.queue(ctx, pgDialect.recordName(), []any{kind, tbl, target, source})
}

func (t *pgTxn) forgetName(ctx context.Context, kind, tbl, target string) error {
	return t.queue(ctx, pgDialect.forgetName(), []any{kind, tbl, target})
}

func (t *pgTxn) schemaExists(ctx context.Context, name string) (bool, error) {
	if err := t.flush(ctx); err != nil {
		return false, err
	}
	var exists bool
	err := t.tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`, name).Scan(&exists)
	return exists, err
}

func (t *pgTxn) loadTable(ctx context.Context, src change.Table, dst target) (*tableSchema, error) {
	if err := t.flush(ctx); err != nil {
		return nil, err
	}
	rows, err := t.tx.Query(ctx, `
SELECT a.attname, ty.typname, format_type(a.atttypid, NULL),
       coalesce(array_position(i.indkey::int2[], a.attnum), 0)
FROM pg_attribute a
JOIN pg_type ty ON ty.oid = a.atttypid
LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum`, dst.sql())
	if err != nil {
		return nil, err
	}
	ts := &tableSchema{src: src}
	pks := map[int]string{}
	for rows.Next() {
		var (
			name, typname, format string
			pk                    int
		)
		if err := rows.Scan(&name, &typname, &format, &pk); err != nil {
			rows.Close()
			return nil, err
		}
		typ := parseType(typname)
		typ.pg = format // cast to the column's own type (an enum, a domain)
		ts.cols = append(ts.cols, column{name: name, typ: typ})
		if pk > 0 {
			pks[pk] = name
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var exists bool
	if len(ts.cols) == 0 {
		if err := t.tx.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, dst.sql()).Scan(&exists); err != nil {
			return nil, err
		}
		if !exists {
			return nil, nil
		}
	}
	// Columns whose replica names are not their own.
	nrows, err := t.tx.Query(ctx, pgDialect.columnNames(), dst.key())
	if err != nil {
		return nil, err
	}
	names := map[string]string{}
	for nrows.Next() {
		var tgt, source string
		if err := nrows.Scan(&tgt, &source); err != nil {
			nrows.Close()
			return nil, err
		}
		names[tgt] = source
	}
	nrows.Close()
	if err := nrows.Err(); err != nil {
		return nil, err
	}
	for i := range ts.cols {
		if source, ok := names[ts.cols[i].name]; ok {
			for k, name := range pks {
				if name == ts.cols[i].name {
					pks[k] = source
				}
			}
			ts.cols[i].name = source
		}
	}
	keys := make([]int, 0, len(pks))
	for k := range pks {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	for _, k := range keys {
		ts.key = append(ts.key, pks[k])
	}
	// Source type names walship recorded (an enum kept as text here).
	trows, err := t.tx.Query(ctx, `SELECT col, type FROM walship_columns WHERE tbl = $1`, src.String())
	if err != nil {
		return nil, err
	}
	defer trows.Close()
	for trows.Next() {
		var col, typ string
		if err := trows.Scan(&col, &typ); err != nil {
			return nil, err
		}
		if i := ts.index(col); i >= 0 {
			pg := ts.cols[i].typ.pg
			ts.cols[i].typ = parseType(typ)
			ts.cols[i].typ.pg = pg
		}
	}
	return ts, trows.Err()
}

func (t *pgTxn) recordType(ctx context.Context, ts *tableSchema, c column) error {
	return t.queue(ctx, pgDialect.recordType(), []any{ts.src.String(), c.name, c.typ.name})
}

func (t *pgTxn) createTable(ctx context.Context, ts *tableSchema) error {
	if dst := pgDialect.target(ts.src); dst.schema != "public" {
		if err := t.exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+quoteIdent(dst.schema)); err != nil {
			return err
		}
	}
	if err := t.exec(ctx, pgDialect.createTable(ts)); err != nil {
		return err
	}
	for _, c := range ts.cols {
		if err := t.recordType(ctx, ts, c); err != nil {
			return err
		}
	}
	return nil
}

func (t *pgTxn) addColumn(ctx context.Context, ts *tableSchema, c column) error {
	if err := t.exec(ctx, pgDialect.addColumn(ts, c)); err != nil {
		return err
	}
	return t.recordType(ctx, ts, c)
}

func (t *pgTxn) dropColumn(ctx context.Context, ts *tableSchema, name string) error {
	if err := t.exec(ctx, pgDialect.dropColumn(ts, name)); err != nil {
		return err
	}
	return t.queue(ctx, pgDialect.forgetColumn(), []any{ts.src.String(), name})
}

// retypeColumn converts the column through its text form, as the source's
// own ALTER TYPE would for compatible types.
func (t *pgTxn) retypeColumn(ctx context.Context, ts *tableSchema, c column) error {
	q := fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s TYPE %s USING %s::text::%s",
		pgDialect.table(ts.src), pgDialect.ident(c.name), c.typ.pg, pgDialect.ident(c.name), c.typ.pg) // Postgres only: SQLite columns are not retyped
	if err := t.exec(ctx, q); err != nil {
		return err
	}
	return t.recordType(ctx, ts, c)
}

// pgArgs converts the values of row to text parameters.
func pgArgs(args []any, ts *tableSchema, row change.Row) ([]any, error) {
	for _, c := range row {
		s, ok, err := pgText(forColumn(ts, c.Name, c.Value))
		if err != nil {
			return nil, fmt.Errorf("column %q: %w", c.Name, err)
		}
		if ok {
			args = append(args, s)
		} else {
			args = append(args, nil)
		}
	}
	return args, nil
}

func (t *pgTxn) upsert(ctx context.Context, ts *tableSchema, row change.Row) error {
	if len(row) == 0 {
		return t.queue(ctx, "INSERT INTO "+pgDialect.table(ts.src)+" DEFAULT VALUES", nil) // a table without columns
	}
	args, err := pgArgs(make([]any, 0, len(row)), ts, row)
	if err != nil {
		return err
	}
	return t.queue(ctx, pgDialect.upsert(ts, row), args)
}

func (t *pgTxn) update(ctx context.Context, ts *tableSchema, set, where change.Row) error {
	if len(set) == 0 || len(where) == 0 {
		return nil
	}
	args, err := pgArgs(make([]any, 0, len(set)+len(where)), ts, set)
	if err == nil {
		args, err = pgArgs(args, ts, where)
	}
	if err != nil {
		return err
	}
	if len(ts.key) == 0 {
		return t.queue(ctx, pgDialect.updateKeyless(ts, set, where), args)
	}
	return t.queue(ctx, pgDialect.update(ts, set, where), args)
}

func (t *pgTxn) delete(ctx context.Context, ts *tableSchema, where change.Row) error {
	if len(where) == 0 {
		return nil
	}
	args, err := pgArgs(make([]any, 0, len(where)), ts, where)
	if err != nil {
		return err
	}
	return t.queue(ctx, pgDialect.delete(ts, where), args)
}

func (t *pgTxn) truncate(ctx context.Context, ts []*tableSchema, opts change.TruncateOptions) error {
	return t.queue(ctx, pgDialect.truncateTables(ts, opts), nil)
}

func (t *pgTxn) saveState(ctx context.Context, s State) error {
	if s.LSN > 1<<63-1 {
		return fmt.Errorf("LSN %d does not fit bigint", s.LSN)
	}
	var ct any
	if !s.CommitTime.IsZero() {
		ct = s.CommitTime.UTC()
	}
	return t.queue(ctx, pgDialect.saveState(),
		[]any{int64(s.LSN), ct, int64(s.Txns), int64(s.Changes), s.Lineage})
}

func (t *pgTxn) at(desc string) { t.desc = desc }

func (t *pgTxn) commit(ctx context.Context) error {
	if err := t.flush(ctx); err != nil {
		return err
	}
	return t.tx.Commit(ctx)
}

func (t *pgTxn) rollback() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := t.tx.Rollback(ctx)
	if t.failed {
		// Statements prepared for shapes this transaction created are
		// not rolled back; forget them.
		t.b.conn.DeallocateAll(ctx)
	}
	if errors.Is(err, pgx.ErrTxClosed) {
		return nil
	}
	return err
}
