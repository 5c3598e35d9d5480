package replica

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/walship/walship/change"
	"github.com/walship/walship/internal/secret"
)

// ChecksumPrefix is the prefix of the transactional logical messages that
// carry consistency checks (package checksum writes them at the source;
// the applier verifies them, see docs/CHECKSUM.md).
const ChecksumPrefix = "walship.checksum"

// ChecksumMessage is the JSON content of a ChecksumPrefix message: either
// the checksum of one chunk of a source table, or (Done) the end of a
// round.
//
// A chunk covers the rows whose key is greater than After (no lower bound
// when After is nil) and at most Hi (no upper bound when Hi is nil), keys
// compared column by column in key order (integers by value, text by
// bytes). Lo and Last are the first and last key the source read, for
// people; Rows and Hash describe the rows as they are at the message's
// commit, except for rows inserted by concurrent transactions (see
// Attempt).
type ChecksumMessage struct {
	Round string `json:"round"`
	// Table is the source table, "schema.name".
	Table string `json:"table,omitempty"`
	// Chunk numbers the chunks of a table in a round from 1.
	Chunk int `json:"chunk,omitempty"`
	// Attempt numbers the checks of one chunk's range: 1 reads the chunk,
	// 2 and later recheck the same range in new transactions until two in
	// a row agree at the source (package checksum).
	Attempt int      `json:"attempt,omitempty"`
	Key     []string `json:"key,omitempty"`
	// Columns are the source columns hashed, in the order given.
	Columns []string `json:"columns,omitempty"`
	After   []string `json:"after,omitempty"`
	Hi      []string `json:"hi,omitempty"`
	Lo      []string `json:"lo,omitempty"`
	Last    []string `json:"last,omitempty"`
	Rows    int64    `json:"rows"`
	Hash    string   `json:"hash,omitempty"`
	// Done marks the end of a round: Chunks is the number of chunks the
	// round emitted, over Tables.
	Done   bool     `json:"done,omitempty"`
	Chunks int      `json:"chunks,omitempty"`
	Tables []string `json:"tables,omitempty"`
}

// ParseChecksumMessage decodes the content of a ChecksumPrefix message.
func ParseChecksumMessage(content []byte) (ChecksumMessage, error) {
	var m ChecksumMessage
	if err := json.Unmarshal(content, &m); err != nil {
		return m, fmt.Errorf("checksum message: %w", err)
	}
	if m.Round == "" {
		return m, errors.New("checksum message: no round")
	}
	if !m.Done && (m.Table == "" || m.Chunk < 1 || len(m.Key) == 0 || len(m.Columns) == 0) {
		return m, fmt.Errorf("checksum message of round %s: table, chunk, key and columns are required", m.Round)
	}
	return m, nil
}

// rowHash is the checksum of a chunk: SHA-256 over each row's canonical
// JSON object (see canon.go; object keys sorted) followed by "\n", rows in
// key order.
type rowHash struct {
	h hash.Hash
	n int64
}

func newRowHash() *rowHash { return &rowHash{h: sha256.New()} }

func (r *rowHash) add(row map[string]any) error {
	b, err := json.Marshal(row)
	if err != nil {
		return err
	}
	r.h.Write(b)
	r.h.Write([]byte{'\n'})
	r.n++
	return nil
}

func (r *rowHash) sum() string { return hex.EncodeToString(r.h.Sum(nil)) }

// pgTextSettings make col::text the canonical input of canonPG.
var pgTextSettings = [][2]string{{"TimeZone", "UTC"}, {"DateStyle", "ISO, YMD"}, {"IntervalStyle", "postgres"}, {"bytea_output", "hex"}, {"extra_float_digits", "1"}}

// SourceColumn is a column of a source table: its name and its type name
// (pg_type.typname).
type SourceColumn struct{ Name, Type string }

// SourceTable is a source table to check: its columns and key columns.
type SourceTable struct {
	Table   change.Table
	Columns []SourceColumn
	Key     []string
	// Filter is the publication's row filter of the table (a boolean SQL
	// expression over its columns), "" for none: replicas hold only the
	// rows that pass it, so the source hashes only those.
	Filter string
}

// KeySupported reports whether the checksum range predicate can compare
// keys of type typ the same way in PostgreSQL and SQLite (integers, and
// text and uuid compared by bytes).
func KeySupported(typ string) bool {
	t := parseType(typ)
	switch t.class {
	case classInt:
		return true
	case classText:
		switch t.name {
		case "text", "varchar", "uuid":
			return true
		}
	}
	return false
}

// ChunkSum is the checksum of a chunk as SourceChunk computed it.
type ChunkSum struct {
	Rows      int64
	Hash      string
	Lo, Last  []string // first and last key read; nil if none
	Hi        []string // the chunk's inclusive upper bound; nil: unbounded
	Truncated bool     // limit rows were read: Hi is Last
}

// SourceChunk reads, in tx (a transaction on the source), the rows of t
// whose key is greater than after and, if hi is not nil, at most hi, in
// key order, locking them with FOR SHARE so that concurrent updates and
// deletes of those rows wait for tx, and returns their checksum. With
// limit > 0 at most limit rows are read, and when limit rows were read
// the chunk ends at the last one (Hi); otherwise it ends at hi. Text
// output settings are set for the rest of tx.
func SourceChunk(ctx context.Context, tx pgx.Tx, t SourceTable, after, hi []string, limit int) (ChunkSum, error) {
	for _, s := range pgTextSettings {
		if _, err := tx.Exec(ctx, `SELECT set_config($1, $2, true)`, s[0], s[1]); err != nil {
			return ChunkSum{}, err
		}
	}
	types := map[string]string{}
	for _, c := range t.Columns {
		types[c.Name] = c.Type
	}
	// Keys are qualified: a bare name in ORDER BY would be the output
	// column k::text, ordering integers as text.
	keyExpr := func(k string) string {
		e := "t." + quoteIdent(k)
		if parseType(types[k]).collatable() {
			e += ` COLLATE "C"`
		}
		return e
	}
	var b strings.Builder
	b.WriteString("SELECT ")
	for i, c := range t.Columns {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(quoteIdent(c.Name) + "::text")
	}
	for _, k := range t.Key {
		b.WriteString(", " + quoteIdent(k) + "::text")
	}
	b.WriteString(" FROM " + quoteIdent(t.Table.Schema) + "." + quoteIdent(t.Table.Name) + " t")
	var args []any
	keyCols := make([]string, len(t.Key))
	keyTypes := make([]string, len(t.Key))
	for i, k := range t.Key {
		keyCols[i] = keyExpr(k)
		keyTypes[i] = types[k]
	}
	writeRange(&b, &args, keyCols, func(n int, i int) string {
		return "$" + strconv.Itoa(n) + "::text::" + quoteIdent(keyTypes[i])
	}, after, hi, func(s string, _ int) any { return s })
	if t.Filter != "" {
		if len(args) > 0 { // writeRange wrote a WHERE
			b.WriteString(" AND (" + t.Filter + ")")
		} else {
			b.WriteString(" WHERE (" + t.Filter + ")")
		}
	}
	b.WriteString(" ORDER BY " + strings.Join(keyCols, ", "))
	if limit > 0 {
		b.WriteString(" LIMIT " + strconv.Itoa(limit))
	}
	b.WriteString(" FOR SHARE")
	rows, err := tx.Query(ctx, b.String(), args...)
	if err != nil {
		return ChunkSum{}, fmt.Errorf("checksum of %s: %w", t.Table, err)
	}
	defer rows.Close()
	n := len(t.Columns)
	vals := make([]*string, n+len(t.Key))
	ptrs := make([]any, len(vals))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	typs := make([]*typeInfo, n)
	for i, c := range t.Columns {
		typs[i] = parseType(c.Type)
	}
	h := newRowHash()
	var out ChunkSum
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return ChunkSum{}, fmt.Errorf("checksum of %s: %w", t.Table, err)
		}
		row := make(map[string]any, n)
		for i, c := range t.Columns {
			v, err := canonPG(typs[i], vals[i])
			if err != nil {
				return ChunkSum{}, fmt.Errorf("checksum of %s, column %s: %w", t.Table, c.Name, err)
			}
			row[c.Name] = v
		}
		if err := h.add(row); err != nil {
			return ChunkSum{}, err
		}
		key := make([]string, len(t.Key))
		for i := range t.Key {
			if vals[n+i] != nil {
				key[i] = *vals[n+i]
			}
		}
		if out.Lo == nil {
			out.Lo = key
		}
		out.Last = key
	}
	if err := rows.Err(); err != nil {
		return ChunkSum{}, fmt.Errorf("checksum of %s: %w", t.Table, err)
	}
	out.Rows, out.Hash, out.Hi = h.n, h.sum(), hi
	if limit > 0 && h.n == int64(limit) {
		out.Truncated, out.Hi = true, out.Last
	}
	return out, nil
}

// writeRange appends the WHERE clause of the range (after, hi] over the
// key expressions cols, comparing rows of values (a row comparison: key
// order).
func writeRange(b *strings.Builder, args *[]any, cols []string, param func(n, i int) string, after, hi []string, conv func(s string, i int) any) {
	var conds []string
	bound := func(op string, vals []string) {
		var p []string
		for i, v := range vals {
			*args = append(*args, conv(v, i))
			p = append(p, param(len(*args), i))
		}
		conds = append(conds, "("+strings.Join(cols, ", ")+") "+op+" ("+strings.Join(p, ", ")+")")
	}
	if after != nil {
		bound(">", after)
	}
	if hi != nil {
		bound("<=", hi)
	}
	if len(conds) > 0 {
		b.WriteString(" WHERE " + strings.Join(conds, " AND "))
	}
}

// ChecksumResult is one row of a replica's walship_checksums: a checksum
// message as applied, with the replica's own count and hash of the range.
type ChecksumResult struct {
	Round      string
	Table      string // "" for the end of a round
	Chunk      int    // the chunk; for the end of a round, the round's chunk count
	Attempt    int
	After, Hi  []string
	Lo, Last   []string
	SourceRows int64
	SourceHash string
	Rows       int64
	Hash       string
	Equal      bool
	AppliedAt  time.Time
}

const checksumTablePG = `CREATE TABLE IF NOT EXISTS walship_checksums (
	seq bigserial PRIMARY KEY, round text NOT NULL, tbl text NOT NULL, chunk int NOT NULL, attempt int NOT NULL,
	after text, hi text, lo text, last text, src_rows bigint NOT NULL, src_hash text NOT NULL,
	rows bigint NOT NULL, hash text NOT NULL, equal boolean NOT NULL, applied_at timestamptz NOT NULL)`

const checksumTableSQLite = `CREATE TABLE IF NOT EXISTS walship_checksums (
	seq INTEGER PRIMARY KEY AUTOINCREMENT, round TEXT NOT NULL, tbl TEXT NOT NULL, chunk INTEGER NOT NULL, attempt INTEGER NOT NULL,
	after TEXT, hi TEXT, lo TEXT, last TEXT, src_rows INTEGER NOT NULL, src_hash TEXT NOT NULL,
	rows INTEGER NOT NULL, hash TEXT NOT NULL, equal INTEGER NOT NULL, applied_at TEXT NOT NULL)`

func keyJSON(k []string) any {
	if k == nil {
		return nil
	}
	b, _ := json.Marshal(k)
	return string(b)
}

// checksum verifies a ChecksumPrefix message in the batch's DB
// transaction: it hashes the same range of the replica's table the same
// way, and records both in walship_checksums.
func (w *batch) checksum(ctx context.Context, c *change.Change) error {
	m, err := ParseChecksumMessage(c.Message.Content)
	if err != nil {
		// A malformed check is not a reason to stop applying: it is logged.
		w.a.log.Warn("replica: checksum message ignored", "err", err)
		return nil
	}
	res := ChecksumResult{Round: m.Round, Table: m.Table, Chunk: m.Chunk, Attempt: m.Attempt, After: m.After, Hi: m.Hi,
		Lo: m.Lo, Last: m.Last, SourceRows: m.Rows, SourceHash: m.Hash, Equal: true, AppliedAt: time.Now().UTC()}
	if m.Done {
		res.Chunk = m.Chunks
		res.Table = ""
	} else {
		src, err := change.ParseTable(m.Table)
		if err != nil {
			return fmt.Errorf("checksum message: table %q: %w", m.Table, err)
		}
		ts, err := w.table(ctx, src)
		if err != nil {
			return err
		}
		ck, ok := w.tx.(checksummer)
		if !ok {
			return nil
		}
		h := newRowHash()
		if ts != nil {
			if err := ck.hashRange(ctx, w.a.d, ts, m, h); err != nil {
				return fmt.Errorf("checksum of %s chunk %d: %w", m.Table, m.Chunk, err)
			}
		}
		res.Rows, res.Hash = h.n, h.sum()
		res.Equal = res.Rows == m.Rows && res.Hash == m.Hash
		if res.Equal {
			w.stats.ChecksumsEqual++
		} else {
			w.stats.ChecksumsDifferent++
		}
	}
	ck, ok := w.tx.(checksummer)
	if !ok {
		return nil
	}
	return ck.recordChecksum(ctx, res)
}

// checksummer is a dbTxn that verifies checksums.
type checksummer interface {
	hashRange(ctx context.Context, d *dialect, ts *tableSchema, m ChecksumMessage, h *rowHash) error
	recordChecksum(ctx context.Context, r ChecksumResult) error
}

// selectRange returns the SELECT of m's columns over m's range of ts.
func selectRange(d *dialect, ts *tableSchema, m ChecksumMessage, cols []string, keyExpr func(k string) string, param func(n, i int) string, conv func(s string, i int) any, colExpr func(c string) string) (string, []any) {
	var b strings.Builder
	b.WriteString("SELECT ")
	for i, c := range cols {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(colExpr(c))
	}
	b.WriteString(" FROM " + d.table(ts.src) + " t")
	keys := make([]string, len(m.Key))
	for i, k := range m.Key {
		keys[i] = keyExpr(k)
	}
	var args []any
	writeRange(&b, &args, keys, param, m.After, m.Hi, conv)
	b.WriteString(" ORDER BY " + strings.Join(keys, ", "))
	return b.String(), args
}

// presentColumns returns the columns of m that ts has.
func presentColumns(ts *tableSchema, m ChecksumMessage) []string {
	var out []string
	for _, c := range m.Columns {
		if ts.index(c) >= 0 {
			out = append(out, c)
		}
	}
	return out
}

func (t *pgTxn) hashRange(ctx context.Context, d *dialect, ts *tableSchema, m ChecksumMessage, h *rowHash) error {
	if err := t.flush(ctx); err != nil {
		return err
	}
	// The settings hold for this statement only: the rest of the apply
	// transaction keeps its own.
	old := make([]string, len(pgTextSettings))
	for i, s := range pgTextSettings {
		if err := t.tx.QueryRow(ctx, `SELECT current_setting($1), set_config($1, $2, true)`, s[0], s[1]).Scan(&old[i], new(string)); err != nil {
			return err
		}
	}
	defer func() {
		for i, s := range pgTextSettings {
			t.tx.Exec(ctx, `SELECT set_config($1, $2, true)`, s[0], old[i])
		}
	}()
	cols := presentColumns(ts, m)
	q, args := selectRange(d, ts, m, cols, func(k string) string {
		e := "t." + d.ident(k) // qualified: see SourceChunk
		if i := ts.index(k); i >= 0 && ts.cols[i].typ.collatable() {
			e += ` COLLATE "C"`
		}
		return e
	}, func(n, i int) string { return "$" + strconv.Itoa(n) + "::text::" + pgColType(ts, m.Key[i]) },
		func(s string, _ int) any { return s },
		func(c string) string { return d.ident(c) + "::text" })
	rows, err := t.tx.Query(ctx, q, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	err = hashRows(rows.Next, rows.Scan, cols, func(c string, v *string) (any, error) {
		return canonPG(ts.cols[ts.index(c)].typ, v)
	}, h)
	if err != nil {
		return err
	}
	return rows.Err()
}

func (t *pgTxn) recordChecksum(ctx context.Context, r ChecksumResult) error {
	if err := t.exec(ctx, checksumTablePG); err != nil {
		return err
	}
	return t.exec(ctx, `INSERT INTO walship_checksums (round, tbl, chunk, attempt, after, hi, lo, last, src_rows, src_hash, rows, hash, equal, applied_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`,
		r.Round, r.Table, r.Chunk, r.Attempt, keyJSON(r.After), keyJSON(r.Hi), keyJSON(r.Lo), keyJSON(r.Last),
		r.SourceRows, r.SourceHash, r.Rows, r.Hash, r.Equal, r.AppliedAt)
}

func (t *sqliteTxn) hashRange(ctx context.Context, d *dialect, ts *tableSchema, m ChecksumMessage, h *rowHash) error {
	cols := presentColumns(ts, m)
	q, args := selectRange(d, ts, m, cols, d.ident, func(n, _ int) string { return "?" }, func(s string, i int) any {
		if j := ts.index(m.Key[i]); j >= 0 && ts.cols[j].typ.class == classInt {
			if v, err := strconv.ParseInt(s, 10, 64); err == nil {
				return v
			}
		}
		return s
	}, d.ident)
	rows, err := t.tx.QueryContext(ctx, q, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	err = hashRows(rows.Next, rows.Scan, cols, func(c string, v any) (any, error) {
		return canonSQLite(ts.cols[ts.index(c)].typ, v)
	}, h)
	if err != nil {
		return err
	}
	return rows.Err()
}

// hashRows adds each row that next and scan read (the columns cols, each
// scanned into a V) to h, canonicalised column by column by canon: the
// one loop of both engines' hashRange.
func hashRows[V any](next func() bool, scan func(dest ...any) error, cols []string, canon func(col string, v V) (any, error), h *rowHash) error {
	vals := make([]V, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for next() {
		if err := scan(ptrs...); err != nil {
			return err
		}
		row := make(map[string]any, len(cols))
		for i, c := range cols {
			v, err := canon(c, vals[i])
			if err != nil {
				return fmt.Errorf("column %s: %w", c, err)
			}
			row[c] = v
		}
		if err := h.add(row); err != nil {
			return err
		}
	}
	return nil
}

func (t *sqliteTxn) recordChecksum(ctx context.Context, r ChecksumResult) error {
	if err := t.ddl(ctx, checksumTableSQLite); err != nil {
		return err
	}
	return t.exec(ctx, `INSERT INTO walship_checksums (round, tbl, chunk, attempt, after, hi, lo, last, src_rows, src_hash, rows, hash, equal, applied_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, []any{
		r.Round, r.Table, r.Chunk, r.Attempt, keyJSON(r.After), keyJSON(r.Hi), keyJSON(r.Lo), keyJSON(r.Last),
		r.SourceRows, r.SourceHash, r.Rows, r.Hash, r.Equal, r.AppliedAt.Format(time.RFC3339Nano)})
}

// ReadChecksums returns the rows of walship_checksums of a replica by URL
// (none if it has no such table), in the order they were applied.
func ReadChecksums(ctx context.Context, rawURL string) ([]ChecksumResult, error) {
	if strings.HasPrefix(rawURL, "/") {
		rawURL = "sqlite://" + rawURL
	}
	kind, path, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	const sel = `SELECT round, tbl, chunk, attempt, after, hi, lo, last, src_rows, src_hash, rows, hash, equal, applied_at FROM walship_checksums ORDER BY seq`
	var out []ChecksumResult
	scan := func(scan func(dest ...any) error) error {
		var r ChecksumResult
		var after, hi, lo, last sql.NullString
		var at any
		if kind == "sqlite" {
			var s string
			at = &s
		} else {
			at = &r.AppliedAt
		}
		if err := scan(&r.Round, &r.Table, &r.Chunk, &r.Attempt, &after, &hi, &lo, &last, &r.SourceRows, &r.SourceHash, &r.Rows, &r.Hash, &r.Equal, at); err != nil {
			return err
		}
		if s, ok := at.(*string); ok {
			r.AppliedAt, _ = time.Parse(time.RFC3339Nano, *s)
		}
		for _, p := range []struct {
			s   sql.NullString
			dst *[]string
		}{{after, &r.After}, {hi, &r.Hi}, {lo, &r.Lo}, {last, &r.Last}} {
			if p.s.Valid {
				if err := json.Unmarshal([]byte(p.s.String), p.dst); err != nil {
					return err
				}
			}
		}
		out = append(out, r)
		return nil
	}
	err = func() error {
		if kind == "sqlite" {
			db, err := openSQLiteRead(ctx, path)
			if err != nil {
				return err
			}
			defer db.Close()
			var n int
			if err := db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_schema WHERE name = 'walship_checksums'`).Scan(&n); err != nil || n == 0 {
				return err
			}
			rows, err := db.QueryContext(ctx, sel)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				if err := scan(rows.Scan); err != nil {
					return err
				}
			}
			return rows.Err()
		}
		conn, err := connectPostgres(ctx, rawURL)
		if err != nil {
			return err
		}
		defer conn.Close(context.WithoutCancel(ctx))
		var exists bool
		if err := conn.QueryRow(ctx, `SELECT to_regclass('walship_checksums') IS NOT NULL`).Scan(&exists); err != nil || !exists {
			return err
		}
		rows, err := conn.Query(ctx, sel)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			if err := scan(rows.Scan); err != nil {
				return err
			}
		}
		return rows.Err()
	}()
	if err != nil {
		return nil, fmt.Errorf("checksums of replica %s: %w", secret.URL(rawURL), secret.DSNError(rawURL, err))
	}
	return out, nil
}
