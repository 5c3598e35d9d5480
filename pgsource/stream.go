package pgsource

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/walship/walship/change"
)

// relation is what a pgoutput Relation message (plus the catalog) says
// about a table.
type relation struct {
	table change.Table
	cols  []relCol
	types []change.ColumnType
	key   []int // columns forming Change.Key: the primary key, else the replica identity index; nil if none
	// keyPrefix: key is the first len(key) columns in order.
	keyPrefix bool
	ident     byte // replica identity: d(efault), f(ull), i(ndex), n(othing)
	sqlTypes  map[string]string
	prefix    string // the table's part of a toast cache key ("schema.table\x00")
	// rowPrefix is prefix and the names of the key columns: the snapshot
	// keys rows by the primary key and the stream, under REPLICA
	// IDENTITY USING INDEX, by the index, so the two kinds of key text
	// must never meet in the cache (one row's key value could be another
	// row's index value).
	rowPrefix string
}

type relCol struct {
	name  string
	ti    *typeInfo
	ident bool
}

// pending is a transaction appended but perhaps not yet durable.
type pending struct {
	last uint64 // WAL LSN of its commit record; 0 if nothing was appended
	// need is the log position that must be confirmable before it is
	// confirmed: last, or for a transaction skipped as already in the
	// log, the end of what recovery found there (its copy is at or below).
	need   uint64
	end    pglogrepl.LSN // source end LSN to confirm once durable
	commit uint64        // source commit LSN
	inc    *incChunk     // an incremental snapshot chunk's progress
}

// pollDurable is how often the receive loop, while transactions wait for
// durability, wakes up to move the confirmed position if no message comes.
const pollDurable = 5 * time.Millisecond

// streamer is the state of one replication session.
type streamer struct {
	s    *Source
	q    *pgx.Conn
	repl *pgconn.PgConn
	cur  *txnBuf
	// Received transactions go to the appender goroutine through jobs, in
	// commit order, so that decoding the next one overlaps encoding and
	// queueing this one into the log.
	jobs    chan appendJob
	appDone chan struct{}
	free    chan []change.Change // change slices to reuse (the WAL copies what it appends)
	appErr  atomic.Pointer[error]
	// queued counts jobs handed over and not yet in app.pending (or
	// dropped): while it is not 0, nothing may be confirmed past them.
	queued atomic.Int64
	app    struct {
		sync.Mutex
		pending      []pending // appended or skipped, in commit order, not yet confirmed
		lastAppended uint64
	}
	busy bool // transactions queued or waiting for durability (set by advance)
	// confirmed is the source LSN last reported as flushed; idle is the
	// newest keepalive position seen with no transaction open.
	confirmed, idle pglogrepl.LSN
	lastDurable     pending
	// oldT, newT are scratch tuples (their values point into the message).
	oldT, newT []tcol
	// win is the incremental snapshot chunk whose window is open;
	// signals are the signal table's requests in the open transaction.
	win     *incWindow
	signals []SnapshotRequest
}

// stream runs logical replication until ctx ends (then drains and returns
// nil) or an error.
func (s *Source) stream(ctx context.Context, q *pgx.Conn, repl *pgconn.PgConn) error {
	sessCtx, cancel := context.WithCancelCause(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go s.health(sessCtx, cancel, &wg)
	defer func() {
		cancel(nil)
		wg.Wait()
	}()

	if s.cfg.TakeOverSlot {
		if err := s.takeOver(sessCtx, q, repl.PID()); err != nil {
			return err
		}
	}
	pub := sqlLiteral(pgx.Identifier{s.cfg.Publication}.Sanitize())
	err := pglogrepl.StartReplication(sessCtx, repl, pgx.Identifier{s.cfg.Slot}.Sanitize(), 0, pglogrepl.StartReplicationOptions{
		Mode:       pglogrepl.LogicalReplication,
		PluginArgs: []string{"proto_version '1'", "publication_names " + pub, "messages 'true'"},
	})
	if err != nil {
		return s.slotErr(err)
	}
	st := &streamer{s: s, q: q, repl: repl, confirmed: pglogrepl.LSN(s.st.confirmed.Load()),
		jobs: make(chan appendJob, 8), appDone: make(chan struct{}), free: make(chan []change.Change, 8)}
	go st.appender(sessCtx)
	s.loadIncremental()
	wg.Add(1)
	go s.incWorker(sessCtx, &wg)
	s.log.Info("postgres source: streaming", "from", st.confirmed, "skip_through", pglogrepl.LSN(s.floor))
	err = st.loop(sessCtx)
	close(st.jobs)
	<-st.appDone
	if aerr := st.appErr.Load(); aerr != nil {
		err = *aerr
	}
	if st.cur != nil {
		st.cur.close() // an interrupted transaction leaves nothing
	}
	if cause := context.Cause(sessCtx); ctx.Err() == nil && cause != nil && !errors.Is(cause, context.Canceled) {
		err = cause // the health check found the slot gone
	}
	// Drain: everything appended becomes durable, then Postgres hears of it.
	dctx, dcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer dcancel()
	var last uint64 // skipped transactions have 0: wait for the highest
	for _, p := range st.app.pending {
		last = max(last, p.last)
	}
	if werr := s.w.Wait(dctx, last); werr != nil {
		// The next session would take these transactions as written:
		// never go on without knowing they are durable.
		return &FatalError{Err: fmt.Errorf("pgsource: waiting for appended transactions to become durable: %w", werr)}
	}
	st.advance()
	var gateErr *GateError
	if errors.As(err, &gateErr) {
		// The gate is shut: nothing more is confirmed, and Run returns
		// the error even if ctx ended meanwhile.
	} else if err == nil || ctx.Err() != nil {
		if serr := st.sendStatus(); serr != nil && (errors.As(serr, &gateErr) || err == nil && ctx.Err() == nil) {
			err = serr
		}
	}
	s.floor = max(s.floor, st.app.lastAppended)
	if st.lastDurable.last > 0 {
		s.state.SourceLSN, s.ckptPos = st.lastDurable.commit, st.lastDurable.last+1
		if cerr := s.saveCheckpoint(dctx); cerr != nil && err == nil {
			err = cerr
		}
	}
	if ctx.Err() != nil && gateErr == nil {
		return nil
	}
	return err
}

// gate calls Options.Gate before an external write described by what.
func (s *Source) gate(what func() string) error {
	if s.cfg.Gate == nil {
		return nil
	}
	if err := s.cfg.Gate(); err != nil {
		return &FatalError{Err: &GateError{What: what(), Err: err}}
	}
	return nil
}

func (s *Source) slotErr(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "42704" {
		return &FatalError{Err: fmt.Errorf("source.postgres.slot: %w: %s", ErrSlotLost, pe.Message)}
	}
	if errors.As(err, &pe) && pe.Code == "55000" && strings.Contains(pe.Message, "invalidated") {
		return &FatalError{Err: fmt.Errorf("source.postgres.slot: %w: %s", ErrSlotLost, pe.Message)}
	}
	return err
}

// advance moves the confirmed position over the transactions now durable
// and at the configured replication level (Options.Confirmable).
func (st *streamer) advance() {
	// queued is read before pending: a job leaves queued only after it is
	// in pending, so none can be missed in between.
	queued := st.queued.Load()
	durable := st.s.w.Durable()
	if c := st.s.cfg.Confirmable; c != nil {
		durable = min(durable, c())
	}
	st.app.Lock()
	i := 0
	for ; i < len(st.app.pending) && st.app.pending[i].need <= durable; i++ {
		p := st.app.pending[i]
		if p.inc != nil {
			st.s.incDurable(p.inc)
		}
		st.confirmed = max(st.confirmed, p.end)
		if p.last > 0 {
			st.lastDurable = p
		}
	}
	if i > 0 {
		st.app.pending = append(st.app.pending[:0], st.app.pending[i:]...)
	}
	left := len(st.app.pending)
	st.app.Unlock()
	st.busy = left > 0 || queued > 0
	if !st.busy && st.idle > st.confirmed {
		// Nothing is in flight and the server has sent everything before
		// idle: confirming it lets the slot release WAL of quiet periods.
		st.confirmed = st.idle
	}
	st.s.st.confirmed.Store(int64(st.confirmed))
}

func (st *streamer) sendStatus() error {
	if err := st.s.gate(func() string { return "confirm " + st.confirmed.String() + " to the server" }); err != nil {
		return err
	}
	err := pglogrepl.SendStandbyStatusUpdate(context.Background(), st.repl, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: st.confirmed, WALFlushPosition: st.confirmed, WALApplyPosition: st.confirmed})
	if err != nil {
		return fmt.Errorf("send standby status: %w", err)
	}
	return nil
}

func (st *streamer) loop(ctx context.Context) error {
	s := st.s
	interval := s.cfg.StatusInterval
	nextStatus := time.Now()
	// Receives take no context: a context per call costs an allocation and
	// a watcher. Timeouts are read deadlines on the socket, and the end of
	// ctx sets the deadline to now.
	nc := st.repl.Conn()
	stopWatch := context.AfterFunc(ctx, func() { nc.SetReadDeadline(time.Now()) })
	defer stopWatch()
	defer nc.SetReadDeadline(time.Time{})
	var deadline time.Time
	for {
		if aerr := st.appErr.Load(); aerr != nil {
			return *aerr
		}
		st.advance()
		now := time.Now()
		if !now.Before(nextStatus) {
			if err := st.sendStatus(); err != nil {
				return err
			}
			nextStatus = now.Add(interval)
			// Incremental snapshot progress is saved at once: a restart
			// copies again only chunks not yet recorded.
			if st.lastDurable.last > 0 && now.Sub(s.lastCkptSave) > 10*time.Second || s.incDirty() {
				if st.lastDurable.last > 0 {
					s.state.SourceLSN, s.ckptPos = st.lastDurable.commit, st.lastDurable.last+1
				}
				if err := s.saveCheckpoint(ctx); err != nil {
					return err
				}
			}
			deadline = time.Time{}
		}
		if deadline.IsZero() || !now.Before(deadline) {
			deadline = nextStatus
			if st.busy && now.Add(pollDurable).Before(deadline) {
				deadline = now.Add(pollDurable)
			}
			nc.SetReadDeadline(deadline)
			if ctx.Err() != nil {
				return nil
			}
		}
		msg, err := st.repl.ReceiveMessage(context.Background())
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if pgconn.Timeout(err) {
				deadline = time.Time{}
				continue
			}
			return s.slotErr(err)
		}
		switch msg := msg.(type) {
		case *pgproto3.CopyData:
			if len(msg.Data) == 0 {
				continue
			}
			switch msg.Data[0] {
			case pglogrepl.PrimaryKeepaliveMessageByteID:
				ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(msg.Data[1:])
				if err != nil {
					return fmt.Errorf("keepalive: %w", err)
				}
				if st.cur == nil {
					st.idle = max(st.idle, ka.ServerWALEnd)
				}
				if ka.ReplyRequested {
					nextStatus = time.Now()
				}
			case pglogrepl.XLogDataByteID:
				xld, err := pglogrepl.ParseXLogData(msg.Data[1:])
				if err != nil {
					return fmt.Errorf("xlogdata: %w", err)
				}
				if err := st.handle(ctx, xld.WALData); err != nil {
					return err
				}
			}
		case *pgproto3.ErrorResponse:
			return s.slotErr(pgconn.ErrorResponseToPgError(msg))
		case *pgproto3.CopyDone:
			return errors.New("server ended replication (CopyDone)")
		}
	}
}

// handle processes one pgoutput message.
func (st *streamer) handle(ctx context.Context, data []byte) error {
	s := st.s
	if len(data) > 0 && (data[0] == 'I' || data[0] == 'U' || data[0] == 'D') {
		// Row changes, the bulk of the stream, are decoded here: one copy
		// of the message, of which every value is a substring.
		if err := st.rowChange(ctx, string(data)); err != nil {
			return fmt.Errorf("pgoutput %c message: %w", data[0], err)
		}
		return nil
	}
	m, err := pglogrepl.Parse(data)
	if err != nil {
		return fmt.Errorf("decode pgoutput message: %w", err)
	}
	switch m := m.(type) {
	case *pglogrepl.BeginMessage:
		if st.cur != nil {
			st.cur.close()
		}
		st.signals = nil
		st.cur = newTxnBuf(change.TxHeader{XID: uint64(m.Xid), SourceLSN: uint64(m.FinalLSN),
			SourceCommitTime: m.CommitTime.UTC(), Origin: s.origin}, s.cfg.MaxTxnMemory, s.cfg.SpillDir)
		select {
		case c := <-st.free:
			st.cur.changes = c
		default:
		}
	case *pglogrepl.OriginMessage:
		if st.cur != nil {
			st.cur.hdr.Origin = s.origin + "/" + m.Name
		}
	case *pglogrepl.CommitMessage:
		if st.cur == nil {
			return fmt.Errorf("commit %s without begin", m.CommitLSN)
		}
		cur := st.cur
		st.cur = nil
		cur.hdr.SourceLSN = uint64(m.CommitLSN)
		cur.hdr.SourceCommitTime = m.CommitTime.UTC()
		s.inc.recent.add(uint32(cur.hdr.XID), m.CommitLSN)
		return st.finish(ctx, cur, m.TransactionEndLSN)
	case *pglogrepl.RelationMessage:
		return st.relation(ctx, m)
	case *pglogrepl.TypeMessage:
		// Types are resolved through pg_type when a relation uses them.
	case *pglogrepl.TruncateMessage:
		for _, id := range m.RelationIDs {
			rel, err := st.rel(id)
			if err != nil {
				return err
			}
			s.toast.dropTable(rel.prefix)
			opts := change.TruncateOptions(m.Option) & (change.TruncateCascade | change.TruncateRestartIdentity)
			if err := st.add(change.Change{Table: rel.table, Op: change.Truncate, Types: rel.types, TruncateOpts: opts}); err != nil {
				return err
			}
		}
	case *pglogrepl.LogicalDecodingMessage:
		if m.Prefix == HeartbeatPrefix {
			return nil
		}
		if m.Prefix == WatermarkPrefix && !m.Transactional {
			return st.incWatermark(ctx, m.Content, m.LSN)
		}
		c := change.Change{Op: change.Message, Message: &change.LogicalMessage{Prefix: m.Prefix,
			Content: append([]byte(nil), m.Content...), Transactional: m.Transactional}}
		if m.Transactional && st.cur != nil {
			return st.add(c)
		}
		// A non-transactional message is a transaction of its own at its LSN.
		b := newTxnBuf(change.TxHeader{SourceLSN: uint64(m.LSN), SourceCommitTime: time.Now().UTC(), Origin: s.origin},
			s.cfg.MaxTxnMemory, s.cfg.SpillDir)
		b.add(c)
		return st.finish(ctx, b, m.LSN)
	}
	return nil
}

func (st *streamer) add(c change.Change) error {
	if st.cur == nil {
		return fmt.Errorf("%s change on %s outside a transaction", c.Op.Name(), c.Table)
	}
	st.s.st.openTxn.Store(int64(st.cur.n + 1))
	st.s.protect(&c)
	st.incObserve(&c)
	st.signal(&c)
	return st.cur.add(c)
}

// appendJob is a received transaction for the appender.
type appendJob struct {
	b    *txnBuf
	end  pglogrepl.LSN
	skip bool // already in the log, or empty: only its position counts
	inc  *incChunk
}

// finish hands a received transaction to the appender, marked to be skipped
// if the log already has it. It blocks while the appender is 8 behind.
func (st *streamer) finish(ctx context.Context, b *txnBuf, end pglogrepl.LSN) error {
	return st.finishInc(ctx, b, end, nil)
}

// finishInc is finish for a transaction carrying an incremental snapshot
// chunk's progress (nil for any other).
func (st *streamer) finishInc(ctx context.Context, b *txnBuf, end pglogrepl.LSN, inc *incChunk) error {
	s := st.s
	s.st.openTxn.Store(0)
	commit := b.hdr.SourceLSN
	s.st.lastSource.Store(int64(commit))
	skip := commit <= s.floor || b.n == 0
	if skip && b.n > 0 {
		s.st.skipped.Add(1)
	}
	st.queueSignals(skip)
	st.queued.Add(1)
	st.busy = true
	select {
	case st.jobs <- appendJob{b: b, end: end, skip: skip, inc: inc}:
		return nil
	case <-ctx.Done():
		// Stays counted as queued: nothing after it is confirmed.
		b.close()
		return nil
	}
}

// appender appends the transactions of jobs in order until jobs is closed.
// After a failure, or once ctx has ended, it appends nothing more (the
// transactions are not confirmed, so the server sends them again).
func (st *streamer) appender(ctx context.Context) {
	s := st.s
	defer close(st.appDone)
	stopped := false // once one is not appended, no later position may be confirmed
	for j := range st.jobs {
		b := j.b
		commit := b.hdr.SourceLSN
		p := pending{end: j.end, commit: commit, need: s.recoveredEnd, inc: j.inc}
		if stopped || (!j.skip && (st.appErr.Load() != nil || ctx.Err() != nil)) {
			stopped = true // stays counted in queued: nothing after it is confirmed
			b.close()
			continue
		}
		if !j.skip {
			s.clampCommitTime(&b.hdr)
			err := s.gate(func() string {
				return fmt.Sprintf("append transaction %d (commit %s) to the log", b.hdr.XID, pglogrepl.LSN(commit))
			})
			if err != nil {
				stopped = true // stays counted in queued
				b.close()
				st.appErr.Store(&err)
				continue
			}
			t, err := b.appendTo(ctx, s.w)
			if err != nil {
				stopped = true // stays counted in queued
				b.close()
				if ctx.Err() == nil {
					e := error(&FatalError{Err: fmt.Errorf("pgsource: append transaction %d (commit %s) to the log: %w",
						b.hdr.XID, pglogrepl.LSN(commit), err)})
					st.appErr.Store(&e)
				}
				continue
			}
			p.last, p.need = t.Last, t.Last
			s.st.logged.Store(int64(commit))
			s.st.txns.Add(1)
			s.st.changes.Add(int64(b.n))
			if cap(b.changes) <= 4096 {
				clear(b.changes)
				select {
				case st.free <- b.changes[:0]:
				default:
				}
				b.changes = nil
			}
		}
		b.close()
		st.app.Lock()
		st.app.pending = append(st.app.pending, p)
		if !j.skip {
			st.app.lastAppended = commit
		}
		st.app.Unlock()
		st.queued.Add(-1)
	}
}

func (st *streamer) rel(id uint32) (*relation, error) {
	rel, ok := st.s.rels[id]
	if !ok {
		return nil, fmt.Errorf("change for relation %d before its relation message", id)
	}
	return rel, nil
}

// relation records a Relation message, resolving column types and the
// primary key from the catalog.
func (st *streamer) relation(ctx context.Context, m *pglogrepl.RelationMessage) error {
	rel := &relation{table: change.Table{Schema: m.Namespace, Name: m.RelationName}, ident: m.ReplicaIdentity,
		sqlTypes: map[string]string{}}
	rel.prefix = rel.table.String() + "\x00"
	for _, c := range m.Columns {
		ti, err := st.s.types.resolve(ctx, st.q, c.DataType)
		if err != nil {
			return err
		}
		rel.cols = append(rel.cols, relCol{name: c.Name, ti: ti, ident: c.Flags&1 != 0})
		rel.types = append(rel.types, change.ColumnType{Name: c.Name, Type: ti.name})
	}
	pk, sqlTypes, err := tableMeta(ctx, st.q, m.RelationID)
	if err != nil {
		return err
	}
	rel.sqlTypes = sqlTypes
	rel.key = keyColumns(rel, pk)
	rel.keyPrefix = isPrefix(rel.key)
	rel.rowPrefix = rowPrefix(rel)
	st.s.rels[m.RelationID] = rel
	return nil
}

// rowPrefix is the toast cache key prefix of rel's rows: the table and the
// names of its key columns.
func rowPrefix(rel *relation) string {
	var b strings.Builder
	b.WriteString(rel.prefix)
	for i, k := range rel.key {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(rel.cols[k].name)
	}
	b.WriteByte(0)
	return b.String()
}

// keyColumns picks the columns of Change.Key: under REPLICA IDENTITY
// USING INDEX the index's columns (PostgreSQL's old-key tuple of a delete
// holds only those: a primary key on other columns would be null there;
// Debezium keys such a table by the index too), else the primary key if
// the relation has all its columns, else the identity columns; FULL
// without a primary key has no key (appliers match on the before image).
func keyColumns(rel *relation, pk []string) []int {
	var key []int
	if rel.ident == 'i' {
		for i, c := range rel.cols {
			if c.ident {
				key = append(key, i)
			}
		}
		if len(key) > 0 {
			return key
		}
	}
	for _, name := range pk {
		for i, c := range rel.cols {
			if c.name == name {
				key = append(key, i)
			}
		}
	}
	if len(pk) > 0 && len(key) == len(pk) {
		return key
	}
	if rel.ident == 'i' || rel.ident == 'd' {
		key = key[:0]
		for i, c := range rel.cols {
			if c.ident {
				key = append(key, i)
			}
		}
		if len(key) > 0 {
			return key
		}
	}
	return nil
}

// tableMeta reads a table's primary key columns (in key order) and the SQL
// types of its columns.
func tableMeta(ctx context.Context, q *pgx.Conn, oid uint32) ([]string, map[string]string, error) {
	var pk []string
	rows, err := q.Query(ctx, `SELECT a.attname::text FROM pg_index i, unnest(i.indkey) WITH ORDINALITY k(attnum, ord)
		JOIN pg_attribute a ON a.attnum = k.attnum WHERE i.indrelid = $1 AND i.indisprimary AND a.attrelid = $1 ORDER BY k.ord`, oid)
	if err != nil {
		return nil, nil, err
	}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, nil, err
		}
		pk = append(pk, n)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}
	types := map[string]string{}
	rows, err = q.Query(ctx, `SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute
		WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped`, oid)
	if err != nil {
		return nil, nil, err
	}
	for rows.Next() {
		var n, t string
		if err := rows.Scan(&n, &t); err != nil {
			return nil, nil, err
		}
		types[n] = t
	}
	return pk, types, rows.Err()
}

// tcol is one column of pgoutput TupleData: its kind ('n' null, 'u'
// unchanged TOAST, 't' text, 'b' binary) and data.
type tcol struct {
	kind byte
	val  string
}

// parseTuple decodes TupleData at s[off:], checking every length.
// The result reuses dst's array.
func parseTuple(s string, off int, dst []tcol) ([]tcol, int, error) {
	if off+2 > len(s) {
		return nil, 0, errors.New("truncated tuple")
	}
	n := int(s[off])<<8 | int(s[off+1])
	off += 2
	if cap(dst) < n {
		dst = make([]tcol, n)
	}
	t := dst[:n]
	clear(t)
	for i := range t {
		if off >= len(s) {
			return nil, 0, errors.New("truncated tuple")
		}
		t[i].kind = s[off]
		off++
		switch t[i].kind {
		case 't', 'b':
			if off+4 > len(s) {
				return nil, 0, errors.New("truncated tuple")
			}
			l := int(uint32(s[off])<<24 | uint32(s[off+1])<<16 | uint32(s[off+2])<<8 | uint32(s[off+3]))
			off += 4
			if l > len(s)-off {
				return nil, 0, errors.New("tuple value longer than the message")
			}
			t[i].val = s[off : off+l]
			off += l
		case 'n', 'u':
		default:
			return nil, 0, fmt.Errorf("unknown tuple data kind %q", t[i].kind)
		}
	}
	return t, off, nil
}

func u32(s string, off int) (uint32, bool) {
	if off+4 > len(s) {
		return 0, false
	}
	return uint32(s[off])<<24 | uint32(s[off+1])<<16 | uint32(s[off+2])<<8 | uint32(s[off+3]), true
}

// rowChange decodes an Insert, Update or Delete message:
//
//	I relid:u32 'N' tuple
//	U relid:u32 [('K'|'O') tuple] 'N' tuple
//	D relid:u32 ('K'|'O') tuple
func (st *streamer) rowChange(ctx context.Context, s string) error {
	relid, ok := u32(s, 1)
	if !ok {
		return errors.New("truncated message")
	}
	rel, err := st.rel(relid)
	if err != nil {
		return err
	}
	off := 5
	var oldKind byte
	var old, nw []tcol
	if off < len(s) && (s[off] == 'K' || s[off] == 'O') {
		oldKind = s[off]
		if old, off, err = parseTuple(s, off+1, st.oldT); err != nil {
			return err
		}
	}
	if s[0] != 'D' {
		if off >= len(s) || s[off] != 'N' {
			return errors.New("no new tuple")
		}
		if nw, off, err = parseTuple(s, off+1, st.newT); err != nil {
			return err
		}
	}
	if off != len(s) {
		return fmt.Errorf("%d bytes after the tuple", len(s)-off)
	}
	if old != nil {
		st.oldT = old
	}
	if nw != nil {
		st.newT = nw
	}
	switch s[0] {
	case 'I':
		row, _ := rowOf(rel, nw)
		st.s.toast.put(func() string { return rel.rowPrefix + keyText(rel, nw) }, row)
		return st.add(change.Change{Table: rel.table, Op: change.Insert, After: row, Types: rel.types, Key: keyOf(rel, row)})
	case 'D':
		if old == nil {
			return fmt.Errorf("delete on %s without old key or row", rel.table)
		}
		row, _ := rowOf(rel, old)
		c := change.Change{Table: rel.table, Op: change.Delete, Types: rel.types, Key: keyOf(rel, row)}
		if oldKind == 'O' {
			c.Before = row
		}
		st.s.toast.remove(rel.rowPrefix + keyText(rel, old))
		return st.add(c)
	}
	return st.update(ctx, rel, oldKind, old, nw)
}

// rowOf converts tuple data; toast lists the unchanged TOAST columns.
func rowOf(rel *relation, t []tcol) (row change.Row, toast []int) {
	n := min(len(t), len(rel.cols))
	row = make(change.Row, n)
	for i := 0; i < n; i++ {
		row[i].Name = rel.cols[i].name
		switch t[i].kind {
		case 't':
			row[i].Value = decodeText(rel.cols[i].ti, t[i].val)
		case 'b':
			row[i].Value = change.UnknownValue(rel.cols[i].ti.name, t[i].val)
		case 'u':
			toast = append(toast, i)
		}
	}
	return row, toast
}

func keyOf(rel *relation, row change.Row) change.Row {
	if rel.key == nil {
		return nil
	}
	if rel.keyPrefix && len(row) >= len(rel.key) {
		return row[:len(rel.key):len(rel.key)] // shares the row's columns, read-only
	}
	key := make(change.Row, len(rel.key))
	for i, k := range rel.key {
		key[i] = row[k]
	}
	return key
}

// keyText renders a row's key columns for the TOAST cache.
func keyText(rel *relation, t []tcol) string {
	var b strings.Builder
	for _, k := range rel.key {
		if k < len(t) {
			b.WriteString(t[k].val)
		}
		b.WriteByte(0)
	}
	return b.String()
}

// update converts an Update message, filling in unchanged TOAST values:
// from the old row (REPLICA IDENTITY FULL), else from the cache of values
// seen, else by reading the row from the table (docs/POSTGRES.md, "TOAST").
func (st *streamer) update(ctx context.Context, rel *relation, oldKind byte, oldT, newT []tcol) error {
	s := st.s
	row, toast := rowOf(rel, newT)
	c := change.Change{Table: rel.table, Op: change.Update, Types: rel.types}
	keyT := newT
	if oldT != nil {
		old, _ := rowOf(rel, oldT)
		keyT = oldT
		if oldKind == 'O' {
			c.Before = old
		}
		c.Key = keyOf(rel, old)
	} else {
		c.Key = keyOf(rel, row)
	}
	oldKey := rel.rowPrefix + keyText(rel, keyT)
	if len(toast) > 0 {
		var missing []int
		for _, i := range toast {
			name := rel.cols[i].name
			if c.Before != nil && i < len(c.Before) && i < len(oldT) && oldT[i].kind != 'u' {
				row[i].Value = c.Before[i].Value
			} else if v, ok := s.toast.get(oldKey, name); ok {
				row[i].Value = v
			} else {
				missing = append(missing, i)
			}
		}
		if len(missing) > 0 {
			if err := st.fetch(ctx, rel, keyT, row, missing); err != nil {
				return err
			}
		}
	}
	s.toast.remove(oldKey)
	s.toast.put(func() string { return rel.rowPrefix + keyText(rel, newT) }, row)
	return st.add(withAfter(c, row))
}

// fetch reads the current values of columns missing from row, by key.
// A row deleted since keeps those columns out of the after image (logged).
func (st *streamer) fetch(ctx context.Context, rel *relation, keyT []tcol, row change.Row, missing []int) error {
	if len(rel.key) == 0 {
		return fmt.Errorf("update on %s has unchanged TOAST values and no key to read them by: "+
			"set REPLICA IDENTITY FULL or add a primary key", rel.table)
	}
	var sel, where []string
	for _, i := range missing {
		sel = append(sel, pgx.Identifier{rel.cols[i].name}.Sanitize()+"::text")
	}
	for _, k := range rel.key {
		name := rel.cols[k].name
		typ := rel.sqlTypes[name]
		if typ == "" {
			typ = "text"
		}
		where = append(where, pgx.Identifier{name}.Sanitize()+" = "+sqlLiteral(keyT[k].val)+"::"+typ)
	}
	sql := "SELECT " + strings.Join(sel, ", ") + " FROM " + quoteTable(rel.table) + " WHERE " + strings.Join(where, " AND ")
	vals := make([]*string, len(missing))
	dst := make([]any, len(missing))
	for i := range vals {
		dst[i] = &vals[i]
	}
	err := st.q.QueryRow(ctx, sql).Scan(dst...)
	if err == pgx.ErrNoRows {
		st.s.log.Warn("postgres source: unchanged TOAST value of a row deleted since cannot be read; the columns stay out of the after image",
			"table", rel.table.String())
		for j := len(missing) - 1; j >= 0; j-- {
			i := missing[j]
			row[i].Name = "" // marked for removal
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("read unchanged TOAST values of %s: %w", rel.table, err)
	}
	for j, i := range missing {
		if vals[j] == nil {
			row[i].Value = change.NullValue()
		} else {
			row[i].Value = decodeText(rel.cols[i].ti, *vals[j])
		}
	}
	return nil
}

// withAfter sets After, dropping columns fetch marked as unreadable.
func withAfter(c change.Change, row change.Row) change.Change {
	out := row[:0]
	for _, col := range row {
		if col.Name != "" {
			out = append(out, col)
		}
	}
	c.After = out
	return c
}

func isPrefix(key []int) bool {
	for i, k := range key {
		if k != i {
			return false
		}
	}
	return len(key) > 0
}

// clampCommitTime replaces a commit time beyond the log's bound
// (wal.max_commit_time_skew ahead of this host's clock) with this host's
// clock, and logs it. The database has committed the transaction, so
// refusing it would stop capture for good (the server sends it again and
// again); but recorded as it is, the log would give that future time to
// every later transaction (commit times never decrease along it).
func (s *Source) clampCommitTime(hdr *change.TxHeader) {
	bound, ok := s.w.CommitTimeBound()
	if !ok || !hdr.SourceCommitTime.After(bound) {
		return
	}
	now := time.Now().UTC()
	s.log.Warn("postgres source: commit time is beyond wal.max_commit_time_skew ahead of this host's clock; recording this host's clock instead (check the database server's clock)",
		"xid", hdr.XID, "commit_lsn", pglogrepl.LSN(hdr.SourceLSN), "source_commit_time", hdr.SourceCommitTime, "recorded", now)
	hdr.SourceCommitTime = now
}
