package pgsource

// Incremental snapshots: the DBLog watermark algorithm (as Debezium's
// incremental snapshots). A table is copied in chunks while the stream
// runs, without locks and without a long transaction. For each chunk the
// worker emits a low watermark (a non-transactional logical message,
// decoded at its WAL position among the commits), selects the next rows by
// primary key in a REPEATABLE READ READ ONLY transaction whose snapshot
// (pg_current_snapshot) it keeps, and emits a high watermark. The
// streamer collects the keys of the table that transactions streamed
// between the two watermarks changed; at the high watermark it drops
// those keys from the chunk (the stream's events for them are as new or
// newer) and appends the rest as one transaction of `r` changes, at the
// high watermark's place in the stream. Every chunk row that stays was not
// changed between the low watermark and the SELECT, nor between the SELECT
// and the high watermark, so its value is the row's value at the high
// watermark: placed there, the log still replays to the source's state.
//
// A commit is in the WAL (and streamed) before it becomes visible to
// snapshots: a transaction whose commit precedes the low watermark can
// still be in progress for the chunk's snapshot (with synchronous
// replication, for as long as it waits for a standby), and the chunk would
// place its old rows after it. The streamer remembers the xids of the
// transactions it streamed recently with their commit positions; a chunk
// whose snapshot has one of them in progress that committed before its low
// watermark is dropped and copied again, until those commits are visible.
// See docs/POSTGRES.md, "Incremental snapshots".

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
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
	// Error is why the request was abandoned (its SELECT failed on the
	// SQL or the data): set in SnapshotRequests, never checkpointed.
	Error string `json:"error,omitempty"`
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
	// retried counts chunks copied again because their snapshot did not
	// see a transaction streamed before their low watermark.
	retried uint64
	// recent is the streamer's memory of streamed transactions (streamer
	// only; it outlives sessions, not the process).
	recent xidRing
}

// recentTxns is how many streamed transactions the streamer remembers for
// the visibility check of chunks.
const recentTxns = 1 << 15

// xidRing maps the xids of the last recentTxns streamed transactions to
// their commit positions.
type xidRing struct {
	at   map[uint32]pglogrepl.LSN
	ring []uint32
	next int
}

// add records that transaction xid was streamed, committed at lsn.
func (r *xidRing) add(xid uint32, lsn pglogrepl.LSN) {
	if r.at == nil {
		r.at = make(map[uint32]pglogrepl.LSN)
	}
	if len(r.ring) < recentTxns {
		r.ring = append(r.ring, xid)
	} else {
		delete(r.at, r.ring[r.next])
		r.ring[r.next] = xid
		r.next = (r.next + 1) % recentTxns
	}
	r.at[xid] = lsn
}

// unseen returns a transaction streamed with a commit before lsn that snap
// does not see, and whether there is one.
func (r *xidRing) unseen(snap xidSnapshot, lsn pglogrepl.LSN) (uint32, bool) {
	for _, x := range snap.xip {
		if c, ok := r.at[x]; ok && c < lsn {
			return x, true
		}
	}
	for x, c := range r.at {
		// At or after xmax (modulo 2^32, as the server compares xids):
		// not completed when the snapshot was taken.
		if c < lsn && int32(x-snap.xmax) >= 0 {
			return x, true
		}
	}
	return 0, false
}

// xidSnapshot is what a chunk's snapshot does not see: the transactions
// in progress (xip) and every xid from xmax on, cut to their low 32 bits
// as pgoutput's xids.
type xidSnapshot struct {
	xmax uint32
	xip  []uint32
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
	snap  xidSnapshot     // what the chunk's snapshot does not see
	// Streamer only:
	low       pglogrepl.LSN // the low watermark's position
	open      bool
	changed   map[string]struct{} // keys (keyName) changed inside the window
	keyCols   [][]string          // distinct key column sets seen
	truncated bool
	placed    bool          // the chunk was handed to the appender
	unseen    bool          // dropped: its snapshot missed a commit streamed before low
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

// SnapshotRequests returns the incremental snapshots queued or under way,
// and those this process abandoned (Error set).
func (s *Source) SnapshotRequests() []SnapshotRequest {
	s.inc.mu.Lock()
	defer s.inc.mu.Unlock()
	var out []SnapshotRequest
	for _, r := range s.inc.reqs {
		if !r.Done {
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
		switch {
		case r.failed:
			st.IncrementalFailed++
		case !r.Done:
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
				r.failed, r.Error = true, err.Error()
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
			return chunkError(fmt.Errorf("incremental snapshot of %s: read its last key: %w", t, err))
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
	backoff := 10 * time.Millisecond
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
		// A snapshot of its own, taken after the low watermark; no locks
		// beyond the SELECT's.
		rows, last, snap, err := s.readChunkSnapshot(ctx, q, rel, sql)
		if err != nil {
			return chunkError(fmt.Errorf("incremental snapshot of %s: %w", t, err))
		}
		s.inc.mu.Lock()
		w.rows, w.last, w.done, w.snap = rows, last, len(rows) < n, snap
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
			// Copied again; after a pause if its snapshot missed a
			// commit, which may take a while to become visible.
			if w.unseen {
				s.inc.mu.Lock()
				s.inc.retried++
				s.inc.mu.Unlock()
				select {
				case <-time.After(backoff):
				case <-ctx.Done():
					return ctx.Err()
				}
				backoff = min(2*backoff, time.Second)
			}
			continue
		}
		backoff = 10 * time.Millisecond
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

// chunkError makes err fatal to its request if the server refused the
// chunk's SELECT for its SQL (class 42: syntax, undefined names), its data
// (class 22: division by zero, bad casts) or for writing (a where calling
// a function that writes): copying it again would fail again, and the
// requests queued behind it would wait forever.
func chunkError(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && (strings.HasPrefix(pe.Code, "42") || strings.HasPrefix(pe.Code, "22") || pe.Code == "25006") {
		return &FatalError{Err: err}
	}
	return err
}

// readChunkSnapshot runs the chunk's SELECT in a REPEATABLE READ READ ONLY
// transaction and returns, besides readChunk's results, what its snapshot
// does not see.
func (s *Source) readChunkSnapshot(ctx context.Context, q *pgx.Conn, rel *relation, sql string) ([]change.Change, []string, xidSnapshot, error) {
	var none xidSnapshot
	if _, err := q.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"); err != nil {
		return nil, nil, none, err
	}
	committed := false
	defer func() {
		if !committed {
			q.Exec(context.WithoutCancel(ctx), "ROLLBACK")
		}
	}()
	var snap string
	if err := q.QueryRow(ctx, "SELECT pg_current_snapshot()::text").Scan(&snap); err != nil {
		return nil, nil, none, fmt.Errorf("read the chunk's snapshot: %w", err)
	}
	xs, err := parseSnapshot(snap)
	if err != nil {
		return nil, nil, none, err
	}
	rows, last, err := s.readChunk(ctx, q, rel, sql)
	if err != nil {
		return nil, nil, none, err
	}
	committed = true
	if _, err := q.Exec(ctx, "COMMIT"); err != nil {
		return nil, nil, none, err
	}
	return rows, last, xs, nil
}

// parseSnapshot reads a pg_snapshot's text ("xmin:xmax:xip,...").
func parseSnapshot(snap string) (xidSnapshot, error) {
	var xs xidSnapshot
	parts := strings.Split(snap, ":")
	if len(parts) != 3 {
		return xs, fmt.Errorf("snapshot %q: not xmin:xmax:xip", snap)
	}
	fields := []string{parts[1]}
	if parts[2] != "" {
		fields = append(fields, strings.Split(parts[2], ",")...)
	}
	for i, f := range fields {
		x, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return xs, fmt.Errorf("snapshot %q: %w", snap, err)
		}
		if i == 0 {
			xs.xmax = uint32(x)
		} else {
			xs.xip = append(xs.xip, uint32(x))
		}
	}
	return xs, nil
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
		w.open, w.changed, w.low = true, map[string]struct{}{}, lsn
		return nil
	}
	s.inc.win = nil
	rows, last, done, snap := w.rows, w.last, w.done, w.snap
	s.inc.mu.Unlock()
	st.win = nil
	defer close(w.handed)
	if !w.open {
		// The low watermark was not seen in this session: the chunk
		// cannot be placed. The worker copies it again.
		return nil
	}
	if x, ok := s.inc.recent.unseen(snap, w.low); ok {
		// Streamed before the window, yet not visible to the chunk's
		// snapshot: the chunk may hold rows older than the stream's.
		// The worker copies it again (once the commit is visible).
		w.unseen = true
		s.log.Debug("postgres source: incremental snapshot chunk missed a streamed commit; copied again",
			"table", w.table.String(), "xid", x)
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
