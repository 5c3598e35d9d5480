package pgsource

// Incremental snapshots: the DBLog watermark algorithm (as Debezium's
// incremental snapshots). A table is copied in chunks while the stream
// runs, without locks and without a long transaction. For each chunk the
// worker emits a low watermark (a non-transactional logical message,
// decoded at its WAL position among the commits), selects the next rows by
// primary key under READ COMMITTED, and emits a high watermark. The
// streamer collects the keys of the table that transactions streamed
// between the two watermarks changed; at the high watermark it drops
// those keys from the chunk (the stream's events for them are as new or
// newer) and appends the rest as one transaction of `r` changes, at the
// high watermark's place in the stream. Every chunk row that stays was not
// changed between the low watermark and the SELECT, nor between the SELECT
// and the high watermark, so its value is the row's value at the high
// watermark: placed there, the log still replays to the source's state.
// See docs/POSTGRES.md, "Incremental snapshots".

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/walship/walship/change"
)

// WatermarkPrefix is the logical message prefix of the incremental
// snapshot's watermarks; they are never written to the log.
const WatermarkPrefix = "walship.watermark"

// SignalExecuteSnapshot is the type of a signal table row that starts an
// incremental snapshot (Debezium's "execute-snapshot").
const SignalExecuteSnapshot = "execute-snapshot"

// Errors of RequestSnapshot (errors.Is).
var (
	// ErrUnknownTable: the table does not exist.
	ErrUnknownTable = errors.New("no such table")
	// ErrNotPublished: the table is not in the source's publication.
	ErrNotPublished = errors.New("table not in the publication")
	// ErrNoPrimaryKey: the table has no primary key to copy it by.
	ErrNoPrimaryKey = errors.New("table has no primary key")
	// ErrBadRequest: the request is malformed (table name, where clause).
	ErrBadRequest = errors.New("bad snapshot request")
)

// SnapshotRequest is one incremental snapshot: the rows of Table matching
// Where (an SQL predicate, empty for all), copied in chunks by primary key.
type SnapshotRequest struct {
	ID    string `json:"id"`
	Table string `json:"table"` // schema.table
	Where string `json:"where,omitempty"`
	// Range makes the request a repair (RequestRepair): the rows of a key
	// range, whose chunks also delete the replica rows of their range
	// that the source does not have.
	Range *KeyRange `json:"range,omitempty"`
	// Max is the primary key of the last row (matching Where) when the
	// copy began; it stops there: rows inserted since come from the
	// stream. Nil until the copy begins, or if the table was empty.
	Max []string `json:"max,omitempty"`
	// Last is the primary key (text of each column) of the last row whose
	// chunk is durable in the log; the copy resumes after it.
	Last []string `json:"last,omitempty"`
	Done bool     `json:"done,omitempty"`
}

// incRequest is a queued request and the worker's position in it.
type incRequest struct {
	SnapshotRequest
	cursor   []string // key of the last row handed to the stream (ahead of Last)
	finished bool     // the worker handed its last chunk over
	failed   bool
}

// incState is a Source's incremental snapshot queue, shared by the API,
// the worker and the streamer (under mu).
type incState struct {
	mu     sync.Mutex
	reqs   []*incRequest
	loaded bool
	win    *incWindow    // the chunk between its watermarks, nil if none
	wake   chan struct{} // a request was queued
	dirty  bool          // the queue changed since the checkpoint was saved
	table  string        // table being copied, for Stats
	run    string        // this process's watermark id prefix
	seq    uint64
	rows   uint64
	chunks uint64
}

// incWindow is one chunk between its watermarks. The worker fills rows
// before it emits the high watermark; only the streamer touches the rest.
type incWindow struct {
	id    string
	req   *incRequest
	table change.Table
	rows  []change.Change // the chunk, in key order
	last  []string        // key of the chunk's last row
	done  bool            // the chunk is the request's last
	// Streamer only:
	open      bool
	changed   map[string]struct{} // keys (keyName) changed inside the window
	keyCols   [][]string          // distinct key column sets seen
	truncated bool
	placed    bool          // the chunk was handed to the appender
	handed    chan struct{} // closed once the streamer handled the high watermark
	// repair is the chunk's key range when the request is a repair.
	repair *repairWindow
}

// incChunk is a chunk's progress, applied when its transaction is durable.
type incChunk struct {
	req  *incRequest
	last []string
	done bool
}

type watermark struct {
	ID   string `json:"id"`
	Low  bool   `json:"low"`
	Rows int    `json:"rows,omitempty"`
}

func (s *Source) incInit() {
	s.inc.mu.Lock()
	defer s.inc.mu.Unlock()
	if s.inc.wake == nil {
		s.inc.wake = make(chan struct{}, 1)
		var b [6]byte
		rand.Read(b[:])
		s.inc.run = hex.EncodeToString(b[:])
	}
}

// loadIncremental takes the requests of the checkpoint state (once).
func (s *Source) loadIncremental() {
	s.incInit()
	s.inc.mu.Lock()
	defer s.inc.mu.Unlock()
	if s.inc.loaded {
		return
	}
	s.inc.loaded = true
	var loaded []*incRequest
	for _, r := range s.state.Incremental {
		if r.Done {
			continue
		}
		loaded = append(loaded, &incRequest{SnapshotRequest: r, cursor: r.Last})
	}
	s.inc.reqs = append(loaded, s.inc.reqs...)
}

// incStateForCheckpoint returns a copy of the queue for the checkpoint.
func (s *Source) incStateForCheckpoint() []SnapshotRequest {
	s.inc.mu.Lock()
	defer s.inc.mu.Unlock()
	if !s.inc.loaded {
		return s.state.Incremental
	}
	s.inc.dirty = false
	var out []SnapshotRequest
	for _, r := range s.inc.reqs {
		if !r.Done && !r.failed {
			c := r.SnapshotRequest
			c.Last = append([]string(nil), r.Last...)
			c.Max = append([]string(nil), r.Max...)
			out = append(out, c)
		}
	}
	return out
}

// RequestSnapshot queues an incremental snapshot of table ("schema.table")
// restricted to the rows matching where (an SQL boolean expression over
// the table's columns; empty for every row). It checks, on a connection of
// its own, that the table exists (else ErrUnknownTable), is published
// (ErrNotPublished), has a primary key (ErrNoPrimaryKey) and that where is
// valid SQL for it (ErrBadRequest). The request is copied while the source
// streams, one request at a time in queue order, and is kept in the
// source's checkpoint from the next save on (within a status interval): a
// restart continues it after the last chunk that was durable. Safe to call
// at any time, before or during Run.
func (s *Source) RequestSnapshot(ctx context.Context, table, where string) (SnapshotRequest, error) {
	t, err := change.ParseTable(table)
	if err != nil {
		return SnapshotRequest{}, fmt.Errorf("%w: table %q: %v", ErrBadRequest, table, err)
	}
	q, err := s.connect(ctx, false)
	if err != nil {
		return SnapshotRequest{}, fmt.Errorf("pgsource: incremental snapshot of %s: %w", t, err)
	}
	defer q.Close(context.Background())
	if err := s.checkIncremental(ctx, q, t, where); err != nil {
		return SnapshotRequest{}, err
	}
	return s.queueSnapshot(t.String(), where, nil), nil
}

// checkIncremental validates a request against the database.
func (s *Source) checkIncremental(ctx context.Context, q *pgx.Conn, t change.Table, where string) error {
	var exists, published, hasPK bool
	err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')),
		EXISTS (SELECT 1 FROM pg_publication_tables WHERE pubname = $3 AND schemaname = $1 AND tablename = $2),
		EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = $1 AND c.relname = $2 AND i.indisprimary)`, t.Schema, t.Name, s.cfg.Publication).
		Scan(&exists, &published, &hasPK)
	if err != nil {
		return fmt.Errorf("pgsource: incremental snapshot of %s: %w", t, err)
	}
	switch {
	case !exists:
		return fmt.Errorf("incremental snapshot of %s: %w", t, ErrUnknownTable)
	case !published:
		return fmt.Errorf("incremental snapshot of %s: %w %q (add it to source.postgres.tables)", t, ErrNotPublished, s.cfg.Publication)
	case !hasPK:
		return fmt.Errorf("incremental snapshot of %s: %w: incremental snapshots copy by primary key", t, ErrNoPrimaryKey)
	}
	if where != "" {
		if err := checkWhere(ctx, q, t, where); err != nil {
			return fmt.Errorf("%w: where clause for %s: %v", ErrBadRequest, t, err)
		}
	}
	return nil
}

// checkWhere checks that where is one boolean expression over t's
// columns. It is tried in a read-only transaction through the extended
// protocol, which takes exactly one statement: a where that closes the
// expression and appends statements of its own ("true) LIMIT 0; DELETE
// ...") is refused, never run.
func checkWhere(ctx context.Context, q *pgx.Conn, t change.Table, where string) error {
	if _, err := q.Exec(ctx, "BEGIN READ ONLY"); err != nil {
		return err
	}
	defer q.Exec(context.WithoutCancel(ctx), "ROLLBACK")
	_, err := q.PgConn().ExecParams(ctx, "SELECT 1 FROM "+quoteTable(t)+" WHERE ("+where+") LIMIT 0", nil, nil, nil, nil).Close()
	return err
}

// queueSnapshot appends a request (unchecked) and wakes the worker.
func (s *Source) queueSnapshot(table, where string, rg *KeyRange) SnapshotRequest {
	s.incInit()
	s.inc.mu.Lock()
	s.inc.seq++
	r := &incRequest{SnapshotRequest: SnapshotRequest{ID: fmt.Sprintf("%s-%d", s.inc.run, s.inc.seq), Table: table, Where: where, Range: rg}}
	s.inc.reqs = append(s.inc.reqs, r)
	s.inc.dirty = true
	s.inc.mu.Unlock()
	select {
	case s.inc.wake <- struct{}{}:
	default:
	}
	s.log.Info("postgres source: incremental snapshot queued", "id", r.ID, "table", table, "where", where, "repair", rg != nil)
	return r.SnapshotRequest
}

// SnapshotRequests returns the incremental snapshots queued or under way.
func (s *Source) SnapshotRequests() []SnapshotRequest {
	s.inc.mu.Lock()
	defer s.inc.mu.Unlock()
	var out []SnapshotRequest
	for _, r := range s.inc.reqs {
		if !r.Done && !r.failed {
			out = append(out, r.SnapshotRequest)
		}
	}
	return out
}

// incStats fills the incremental snapshot fields of st.
func (s *Source) incStats(st *Stats) {
	s.inc.mu.Lock()
	defer s.inc.mu.Unlock()
	st.IncrementalTable, st.IncrementalRows, st.IncrementalChunks = s.inc.table, s.inc.rows, s.inc.chunks
	for _, r := range s.inc.reqs {
		if !r.Done && !r.failed {
			st.IncrementalPending++
		}
	}
}

// next returns the first request the worker has not finished.
func (s *Source) nextIncremental() *incRequest {
	s.inc.mu.Lock()
	defer s.inc.mu.Unlock()
	for _, r := range s.inc.reqs {
		if !r.finished && !r.failed && !r.Done {
			return r
		}
	}
	s.inc.table = ""
	return nil
}

// incWorker copies the queued requests until ctx ends, one chunk at a
// time, each between its watermarks. It runs beside the streamer of a
// session; an error it cannot retry stops the request (logged), a lost
// connection ends the worker until the next session.
func (s *Source) incWorker(ctx context.Context, wg *sync.WaitGroup) {
	defer wg.Done()
	var q *pgx.Conn
	defer func() {
		if q != nil {
			q.Close(context.Background())
		}
	}()
	// A type cache of its own: the streamer's is not shared.
	ws := &Source{cfg: s.cfg, types: newTypeCache()}
	for {
		r := s.nextIncremental()
		if r == nil {
			select {
			case <-ctx.Done():
				return
			case <-s.inc.wake:
				continue
			}
		}
		if q == nil {
			c, err := s.connect(ctx, false)
			if err != nil {
				if ctx.Err() == nil {
					s.log.Warn("postgres source: incremental snapshot: cannot connect; retrying", "err", err)
					select {
					case <-ctx.Done():
						return
					case <-time.After(time.Second):
					}
				}
				continue
			}
			q = c
		}
		err := s.copyIncremental(ctx, q, ws, r)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			var fe *FatalError
			if errors.As(err, &fe) {
				s.inc.mu.Lock()
				r.failed = true
				s.inc.dirty = true
				s.inc.mu.Unlock()
				s.log.Error("postgres source: incremental snapshot abandoned", "id", r.ID, "table", r.Table, "err", err)
				continue
			}
			s.log.Warn("postgres source: incremental snapshot: retrying", "id", r.ID, "table", r.Table, "err", err)
			q.Close(context.Background())
			q = nil
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}
}

// copyIncremental copies request r chunk by chunk until it is finished.
func (s *Source) copyIncremental(ctx context.Context, q *pgx.Conn, ws *Source, r *incRequest) error {
	t, err := change.ParseTable(r.Table)
	if err != nil {
		return &FatalError{Err: err}
	}
	if err := s.checkIncremental(ctx, q, t, r.Where); err != nil {
		if errors.Is(err, ErrUnknownTable) || errors.Is(err, ErrNotPublished) || errors.Is(err, ErrNoPrimaryKey) ||
			errors.Is(err, ErrBadRequest) {
			return &FatalError{Err: err}
		}
		return err
	}
	// The chunks copy what the publication publishes of the table: its
	// column list and its row filter, as the initial snapshot does.
	_, pt, err := s.publishedTables(ctx, q)
	if err != nil {
		return err
	}
	ws.pubTables = pt // ws is this worker's own
	rel, from, err := ws.snapshotRelation(ctx, q, t)
	if err != nil {
		return err
	}
	if rel.key == nil {
		return &FatalError{Err: fmt.Errorf("incremental snapshot of %s: %w", t, ErrNoPrimaryKey)}
	}
	var order []string
	for _, k := range rel.key {
		e := pgx.Identifier{rel.cols[k].name}.Sanitize()
		if r.Range != nil && collatable(rel.cols[k].ti) {
			// A repair's range is the checks' range: text by bytes.
			e += ` COLLATE "C"`
		}
		order = append(order, e)
	}
	keyLits := func(key []string) string {
		var lits []string
		for i, k := range rel.key {
			lits = append(lits, sqlLiteral(key[i])+"::"+rel.sqlTypes[rel.cols[k].name])
		}
		return "(" + strings.Join(lits, ", ") + ")"
	}
	keyTuple := "(" + strings.Join(order, ", ") + ")"
	s.inc.mu.Lock()
	s.inc.table = r.Table
	cursor, maxKey := r.cursor, r.Max
	s.inc.mu.Unlock()
	if maxKey == nil && r.Range == nil {
		// The copy ends at the newest row now: later ones are streamed.
		sql := from
		if r.Where != "" {
			sql += " WHERE (" + r.Where + ")"
		}
		sql += " ORDER BY " + strings.Join(order, " DESC, ") + " DESC LIMIT 1"
		rows, last, err := s.readChunk(ctx, q, rel, sql)
		if err != nil {
			return fmt.Errorf("incremental snapshot of %s: read its last key: %w", t, err)
		}
		s.inc.mu.Lock()
		if len(rows) == 0 {
			r.finished, r.Done, s.inc.dirty = true, true, true
			s.inc.mu.Unlock()
			s.log.Info("postgres source: incremental snapshot done: no rows", "id", r.ID, "table", r.Table)
			return nil
		}
		r.Max, maxKey, s.inc.dirty = last, last, true
		s.inc.mu.Unlock()
	}
	n := s.cfg.SnapshotChunkRows
	for ctx.Err() == nil {
		var conds []string
		lower := cursor
		if r.Range == nil {
			conds = append(conds, keyTuple+" <= "+keyLits(maxKey))
		} else {
			// A repair ends at its range's end, not at the newest row:
			// its last chunk must delete replica rows up to there.
			if r.Range.Hi != nil {
				conds = append(conds, keyTuple+" <= "+keyLits(r.Range.Hi))
			}
			if lower == nil {
				lower = r.Range.After
			}
		}
		if lower != nil {
			conds = append(conds, keyTuple+" > "+keyLits(lower))
		}
		if r.Where != "" {
			conds = append(conds, "("+r.Where+")")
		}
		sql := from
		if len(conds) > 0 { // a repair of a whole table has none
			sql += " WHERE " + strings.Join(conds, " AND ")
		}
		sql += fmt.Sprintf(" ORDER BY %s LIMIT %d", strings.Join(order, ", "), n)

		s.inc.mu.Lock()
		s.inc.seq++
		w := &incWindow{id: fmt.Sprintf("%s-%d", s.inc.run, s.inc.seq), req: r, table: t, handed: make(chan struct{})}
		if r.Range != nil {
			w.repair = newRepairWindow(rel)
		}
		s.inc.win = w
		s.inc.mu.Unlock()
		if err := s.emitWatermark(ctx, q, watermark{ID: w.id, Low: true}); err != nil {
			return err
		}
		if r.Range != nil {
			if err := waitCommitting(ctx, q); err != nil {
				return fmt.Errorf("incremental snapshot of %s: %w", t, err)
			}
		}
		// READ COMMITTED, autocommit: a snapshot of its own, no locks
		// beyond the SELECT's.
		rows, last, err := s.readChunk(ctx, q, rel, sql)
		if err != nil {
			return fmt.Errorf("incremental snapshot of %s: %w", t, err)
		}
		s.inc.mu.Lock()
		w.rows, w.last, w.done = rows, last, len(rows) < n
		if w.repair != nil {
			w.repair.after, w.repair.hi = lower, last
			if w.done {
				w.repair.hi = r.Range.Hi // the last chunk covers the rest of the range
			}
		}
		s.inc.mu.Unlock()
		if err := s.emitWatermark(ctx, q, watermark{ID: w.id, Rows: len(rows)}); err != nil {
			return err
		}
		select {
		case <-w.handed:
		case <-ctx.Done():
			return ctx.Err()
		}
		if !w.placed {
			continue // copied again
		}
		s.inc.mu.Lock()
		s.inc.rows += uint64(len(rows))
		s.inc.chunks++
		if last != nil {
			cursor, r.cursor = last, last
		}
		if w.done {
			r.finished = true
		}
		s.inc.mu.Unlock()
		if w.done {
			s.log.Info("postgres source: incremental snapshot copied", "id", r.ID, "table", r.Table)
			return nil
		}
	}
	return ctx.Err()
}

func (s *Source) emitWatermark(ctx context.Context, q *pgx.Conn, m watermark) error {
	b, _ := json.Marshal(m)
	if _, err := q.Exec(ctx, "SELECT pg_logical_emit_message(false, $1, $2::text)", WatermarkPrefix, string(b)); err != nil {
		return fmt.Errorf("pgsource: emit incremental snapshot watermark: %w", err)
	}
	return nil
}

// readChunk runs the chunk's SELECT in text format and returns its rows
// as `r` changes and the key of the last.
func (s *Source) readChunk(ctx context.Context, q *pgx.Conn, rel *relation, sql string) ([]change.Change, []string, error) {
	rr := q.PgConn().ExecParams(ctx, sql, nil, nil, nil, nil)
	var out []change.Change
	var last []string
	for rr.NextRow() {
		vals := rr.Values()
		if len(vals) != len(rel.cols) {
			rr.Close()
			return nil, nil, fmt.Errorf("chunk row has %d fields, table %s has %d columns", len(vals), rel.table, len(rel.cols))
		}
		row := make(change.Row, len(rel.cols))
		for i, c := range rel.cols {
			row[i].Name = c.name
			if vals[i] != nil {
				row[i].Value = decodeText(c.ti, string(vals[i]))
			}
		}
		last = last[:0:0]
		for _, k := range rel.key {
			last = append(last, string(vals[k]))
		}
		c := change.Change{Table: rel.table, Op: change.Read, Key: keyOf(rel, row), After: row, Types: rel.types}
		s.protect(&c) // hashed and masked columns, as in the stream
		out = append(out, c)
	}
	if _, err := rr.Close(); err != nil {
		return nil, nil, err
	}
	return out, last, nil
}

// keyName renders the values of cols in row ("" if one is missing).
func keyName(row change.Row, cols []string) (string, bool) {
	var b strings.Builder
	for _, c := range cols {
		v, ok := row.Get(c)
		if !ok {
			return "", false
		}
		b.WriteString(c)
		b.WriteByte(0)
		b.WriteString(v.String())
		b.WriteByte(0)
	}
	return b.String(), true
}

// incObserve records, for an open window on c's table, the keys c
// changes. Called by the streamer for every streamed change.
func (st *streamer) incObserve(c *change.Change) {
	w := st.win
	if w == nil || !w.open || c.Table != w.table {
		return
	}
	if c.Op == change.Truncate {
		w.truncated = true
		return
	}
	if c.Key == nil {
		return
	}
	cols := make([]string, len(c.Key))
	for i, k := range c.Key {
		cols[i] = k.Name
	}
	known := false
	for _, kc := range w.keyCols {
		if strings.Join(kc, "\x00") == strings.Join(cols, "\x00") {
			known = true
			break
		}
	}
	if !known {
		w.keyCols = append(w.keyCols, cols)
	}
	if k, ok := keyName(c.Key, cols); ok {
		w.changed[k] = struct{}{}
	}
	if c.After != nil {
		if k, ok := keyName(c.After, cols); ok {
			w.changed[k] = struct{}{}
		}
	}
	if w.repair != nil {
		w.repair.observe(c.Key)
		w.repair.observe(c.After)
	}
}

// incWatermark handles a watermark message at stream position lsn.
// Watermarks of other processes or sessions (received again after a
// restart) are ignored.
func (st *streamer) incWatermark(ctx context.Context, content []byte, lsn pglogrepl.LSN) error {
	s := st.s
	var m watermark
	if err := json.Unmarshal(content, &m); err != nil {
		return nil
	}
	s.inc.mu.Lock()
	w := s.inc.win
	if w == nil || w.id != m.ID {
		s.inc.mu.Unlock()
		return nil
	}
	if m.Low {
		s.inc.mu.Unlock()
		st.win = w
		w.open, w.changed = true, map[string]struct{}{}
		return nil
	}
	s.inc.win = nil
	rows, last, done := w.rows, w.last, w.done
	s.inc.mu.Unlock()
	st.win = nil
	defer close(w.handed)
	if !w.open {
		// The low watermark was not seen in this session: the chunk
		// cannot be placed. The worker copies it again.
		return nil
	}
	b := newTxnBuf(change.TxHeader{SourceLSN: uint64(lsn), SourceCommitTime: time.Now().UTC(), Origin: s.origin,
		Snapshot: change.SnapshotIncremental}, s.cfg.MaxTxnMemory, s.cfg.SpillDir)
	if w.repair != nil {
		// First, so the replica deletes before it upserts the chunk.
		if err := b.add(w.repair.message(w.table, rows)); err != nil {
			b.close()
			return err
		}
	}
	if !w.truncated {
		for _, c := range rows {
			drop := false
			for _, kc := range w.keyCols {
				if k, ok := keyName(c.After, kc); ok {
					if _, hit := w.changed[k]; hit {
						drop = true
						break
					}
				}
			}
			if !drop {
				if err := b.add(c); err != nil {
					b.close()
					return err
				}
			}
		}
	}
	w.placed = true
	return st.finishInc(ctx, b, lsn, &incChunk{req: w.req, last: last, done: done})
}

// incDurable records a chunk's progress once its transaction is durable
// (called by the streamer's advance); the checkpoint is saved soon after.
func (s *Source) incDurable(c *incChunk) {
	s.inc.mu.Lock()
	defer s.inc.mu.Unlock()
	if c.last != nil {
		c.req.Last = c.last
	}
	if c.done {
		c.req.Done = true
		s.log.Info("postgres source: incremental snapshot done", "id", c.req.ID, "table", c.req.Table)
	}
	s.inc.dirty = true
}

// incDirty reports whether the queue changed since the last checkpoint.
func (s *Source) incDirty() bool {
	s.inc.mu.Lock()
	defer s.inc.mu.Unlock()
	return s.inc.dirty
}
