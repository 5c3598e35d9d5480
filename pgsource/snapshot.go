package pgsource

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/walship/walship/change"
)

// chunkDone is a snapshot chunk appended to the log; its progress is
// recorded once it is durable.
type chunkDone struct {
	last  uint64 // WAL LSN of its commit record
	table string
	prog  tableProgress
}

// snapshot copies every published table not yet copied, in chunks of
// SnapshotChunkRows rows ordered by primary key, each chunk one transaction
// of `r` changes. With snapName (a slot just created) it reads the slot's
// exported snapshot, so the copy is exactly the state at the slot's start.
// Without (resuming after a crash: the exported snapshot died with its
// session) it reads a fresh snapshot; streaming then starts at the slot's
// start, and replaying those changes over the newer rows converges (see
// docs/POSTGRES.md, "Snapshot").
func (s *Source) snapshot(ctx context.Context, q *pgx.Conn, snapName string) error {
	if s.state.Snapshot == nil {
		s.state.Snapshot = &snapState{Tables: map[string]*tableProgress{}}
	}
	ss := s.state.Snapshot
	ss.resumed, ss.exact = snapName == "", ss.Stopped
	if ss.Stopped {
		// Recorded before any chunk is appended: a crash of this run leaves
		// a checkpoint that does not claim to be exact.
		ss.Stopped = false
		if err := s.saveCheckpoint(ctx); err != nil {
			return err
		}
	}
	tables, pt, err := s.publishedTables(ctx, q)
	if err != nil {
		return err
	}
	s.pubTables = pt
	done := 0
	for _, t := range tables {
		p := ss.Tables[t.String()]
		if p == nil {
			p = &tableProgress{}
			ss.Tables[t.String()] = p
		}
		if p.Done {
			done++
		}
	}
	s.st.snapTables.Store(int64(len(tables)))
	s.st.snapTablesDone.Store(int64(done))

	if _, err := q.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"); err != nil {
		return err
	}
	defer q.Exec(context.Background(), "ROLLBACK")
	if snapName != "" {
		if _, err := q.Exec(ctx, "SET TRANSACTION SNAPSHOT "+sqlLiteral(snapName)); err != nil {
			return fmt.Errorf("use the slot's exported snapshot: %w", err)
		}
		if err := q.QueryRow(ctx, "SELECT pg_current_snapshot()::text").Scan(&ss.XSnap); err != nil {
			return fmt.Errorf("read the slot's exported snapshot: %w", err)
		}
		// Recorded before any chunk is appended: a resumed copy of a table
		// without a key needs it.
		if err := s.saveCheckpoint(ctx); err != nil {
			return err
		}
		s.log.Info("postgres source: snapshot started", "tables", len(tables))
	} else {
		s.log.Info("postgres source: snapshot resumed with a fresh snapshot (the exported one ended with its session)",
			"tables", len(tables), "done", done)
	}

	var queue []chunkDone
	// Progress checkpoints are written in the background (three fsyncs
	// each), one at a time, so that copying goes on meanwhile.
	var saving chan error
	reap := func(block bool) error {
		if saving == nil {
			return nil
		}
		if !block {
			select {
			case err := <-saving:
				saving = nil
				return err
			default:
				return nil
			}
		}
		err := <-saving
		saving = nil
		return err
	}
	startSave := func() error {
		b, err := json.Marshal(&s.state)
		if err != nil {
			return err
		}
		pos := s.ckptPos
		ch := make(chan error, 1)
		saving = ch
		s.lastCkptSave = time.Now()
		go func() { ch <- s.ckpts.SetBackward(context.Background(), s.ckptName, pos, b) }()
		return nil
	}
	defer reap(true)
	// settle records the progress of durable chunks; with wait it first
	// waits until all are durable.
	settle := func(wait bool) error {
		if wait {
			var last uint64 // empty chunks have 0: wait for the highest
			for _, c := range queue {
				last = max(last, c.last)
			}
			if err := s.w.Wait(ctx, last); err != nil {
				return err
			}
		}
		durable := s.w.Durable()
		i := 0
		for ; i < len(queue) && queue[i].last <= durable; i++ {
			p := queue[i].prog
			ss.Tables[queue[i].table] = &p
			s.ckptPos = max(s.ckptPos, queue[i].last+1)
			if p.Done {
				s.st.snapTablesDone.Add(1)
			}
		}
		queue = append(queue[:0], queue[i:]...)
		if err := reap(false); err != nil {
			return fmt.Errorf("pgsource: save snapshot progress: %w", err)
		}
		// Progress is saved about every 200ms: a crash copies again at
		// most the chunks of that interval.
		if i > 0 && saving == nil && time.Since(s.lastCkptSave) > 200*time.Millisecond {
			return startSave()
		}
		return nil
	}

	// The first and last tables with rows to copy, for the snapshot
	// position of their chunks (source.snapshot "first" and "last"); the
	// first only for a snapshot that starts from nothing.
	fresh := true
	for _, p := range ss.Tables {
		fresh = fresh && !p.Done && p.Last == nil && p.Page == 0
	}
	firstTable, lastTable := -1, -1
	for i, t := range tables {
		if ss.Tables[t.String()].Done {
			continue
		}
		var rows bool
		exists := "SELECT EXISTS (SELECT 1 FROM " + quoteTable(t)
		if f := pt[t].filter; f != "" {
			exists += " WHERE (" + f + ")"
		}
		if err := q.QueryRow(ctx, exists+")").Scan(&rows); err != nil {
			return fmt.Errorf("snapshot of %s: %w", t, err)
		}
		if rows {
			if firstTable < 0 && fresh {
				firstTable = i
			}
			lastTable = i
		}
	}

	for i, t := range tables {
		p := ss.Tables[t.String()]
		if p.Done {
			continue
		}
		var pos change.SnapshotPos
		if i == firstTable {
			pos |= change.SnapshotFirstTable
		}
		if i == lastTable {
			pos |= change.SnapshotLastTable
		}
		err := s.copyTable(ctx, q, t, *p, pos, func(last uint64, prog tableProgress) error {
			queue = append(queue, chunkDone{last: last, table: t.String(), prog: prog})
			return settle(len(queue) > 2)
		})
		if err != nil {
			if ctx.Err() != nil {
				// Stopping: keep what is durable for the next start.
				dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				for _, c := range queue {
					s.w.Wait(dctx, c.last)
				}
				ctx = dctx
				if settle(false) == nil && reap(true) == nil && len(queue) == 0 {
					ss.Stopped = true
				}
				return s.saveCheckpoint(dctx)
			}
			return fmt.Errorf("snapshot of %s: %w", t, err)
		}
	}
	if err := settle(true); err != nil {
		return err
	}
	if err := reap(true); err != nil {
		return fmt.Errorf("pgsource: save snapshot progress: %w", err)
	}
	if _, err := q.Exec(ctx, "COMMIT"); err != nil {
		return err
	}
	if err := s.markSnapshotDone(ctx, len(tables)); err != nil {
		return err
	}
	ss.Done = true
	s.st.snapDone.Store(true)
	s.log.Info("postgres source: snapshot done", "tables", len(tables), "rows", s.st.snapRows.Load())
	return s.saveCheckpoint(ctx)
}

// markSnapshotDone appends the end-of-snapshot marker (SnapshotDonePrefix)
// and waits until it is durable. A crash before the checkpoint records
// the snapshot done appends a second one on the next start: harmless, and
// rare (it takes the crash in between).
func (s *Source) markSnapshotDone(ctx context.Context, tables int) error {
	if err := s.gate(func() string { return "append the end of the snapshot to the log" }); err != nil {
		return err
	}
	content, err := json.Marshal(struct {
		Tables int `json:"tables"`
	}{tables})
	if err != nil {
		return err
	}
	t, err := s.w.Append(ctx, &change.Txn{Header: change.TxHeader{Origin: s.origin}, Changes: []change.Change{{
		Op: change.Message, Message: &change.LogicalMessage{Prefix: SnapshotDonePrefix, Content: content, Transactional: true}}}})
	if err != nil {
		return &FatalError{Err: fmt.Errorf("pgsource: append the end of the snapshot to the log: %w", err)}
	}
	s.st.txns.Add(1)
	s.st.changes.Add(1)
	s.ckptPos = max(s.ckptPos, t.Last+1)
	return nil
}

// copyTable copies one table from prog on, calling appended after each
// chunk is queued in the log. Each chunk's header has the snapshot
// position pos plus SnapshotTableFirst (the table's first chunk, if prog
// is its start) and SnapshotTableLast (its last).
func (s *Source) copyTable(ctx context.Context, q *pgx.Conn, t change.Table, prog tableProgress, pos change.SnapshotPos,
	appended func(last uint64, prog tableProgress) error) error {
	rel, from, err := s.snapshotRelation(ctx, q, t)
	if err != nil {
		return err
	}
	var kl *keylessPlan
	if rel.key == nil {
		if kl, err = s.planKeyless(ctx, q, t, &prog); err != nil {
			return fmt.Errorf("plan the copy by ctid ranges: %w", err)
		}
	}
	if prog.Last == nil && prog.Page == 0 {
		pos |= change.SnapshotTableFirst
	}
	sqlTypes := rel.sqlTypes
	var order []string
	for _, k := range rel.key {
		order = append(order, pgx.Identifier{rel.cols[k].name}.Sanitize())
	}
	limit := s.cfg.SnapshotChunkRows
	sql := from
	if rel.key == nil {
		// No primary key: copied by ranges of heap pages (kl), each range
		// one chunk; or, where that is not possible, whole in one
		// transaction (spilled if large), again whole after a crash.
		limit = 0
	} else {
		if prog.Last != nil {
			var lits []string
			for i, k := range rel.key {
				lits = append(lits, sqlLiteral(prog.Last[i])+"::"+sqlTypes[rel.cols[k].name])
			}
			sql += " WHERE (" + strings.Join(order, ", ") + ") > (" + strings.Join(lits, ", ") + ")"
		}
		// One ordered stream, cut into chunks here: no query per chunk.
		sql += " ORDER BY " + strings.Join(order, ", ")
	}
	newBuf := func() *txnBuf {
		buf := newTxnBuf(change.TxHeader{Origin: s.origin}, s.cfg.MaxTxnMemory, s.cfg.SpillDir)
		if limit > 0 {
			buf.changes = make([]change.Change, 0, min(limit, 1<<16))
		}
		return buf
	}
	cp := &copyParser{s: s, rel: rel, buf: newBuf(), limit: limit}
	defer func() { cp.buf.close() }()
	if kl != nil && !kl.whole {
		cp.node = kl.node
	}
	if kl != nil {
		if kl.restart {
			// The rows of the earlier chunks are in the log: the replica
			// drops them before the copy starts again from page 0.
			if err := cp.buf.add(change.Change{Table: rel.table, Op: change.Truncate}); err != nil {
				return err
			}
			cp.n++
		}
	}

	// Chunks are appended by a goroutine of their own, so that parsing the
	// next overlaps encoding this one into the log; their results come back
	// in order and are reported (appended) from this goroutine.
	type chunkJob struct {
		buf  *txnBuf
		n    int
		prog tableProgress
	}
	type chunkResult struct {
		last uint64
		prog tableProgress
		err  error
	}
	jobs := make(chan chunkJob, 2)
	results := make(chan chunkResult, 8)
	appCtx, appCancel := context.WithCancel(ctx)
	go func() {
		defer close(results)
		failed := false
		for j := range jobs {
			if failed {
				j.buf.close()
				continue
			}
			if err := s.gate(func() string { return "append a snapshot chunk of " + rel.table.String() + " to the log" }); err != nil {
				j.buf.close()
				failed = true
				results <- chunkResult{err: err}
				continue
			}
			t, err := j.buf.appendTo(appCtx, s.w)
			j.buf.close()
			if err != nil {
				failed = true
				results <- chunkResult{err: &FatalError{Err: fmt.Errorf("pgsource: append snapshot chunk: %w", err)}}
				continue
			}
			s.st.txns.Add(1)
			s.st.changes.Add(int64(j.n))
			results <- chunkResult{last: t.Last, prog: j.prog}
		}
	}()
	report := func(r chunkResult) error {
		if r.err != nil {
			return r.err
		}
		return appended(r.last, r.prog)
	}
	finished := false
	finish := func() error { // waits for the appender and reports the rest
		if finished {
			return nil
		}
		finished = true
		close(jobs)
		var first error
		for r := range results {
			if err := report(r); err != nil && first == nil {
				first = err
			}
		}
		return first
	}
	defer func() {
		appCancel()
		finish()
	}()
	// chunk hands the rows parsed so far over as one transaction.
	cp.chunk = func(done bool) error {
		for {
			select {
			case r := <-results:
				if err := report(r); err != nil {
					return err
				}
				continue
			default:
			}
			break
		}
		if cp.n == 0 {
			if err := finish(); err != nil {
				return err
			}
			return appended(0, tableProgress{Done: done, Last: prog.Last})
		}
		prog = tableProgress{Done: done, Last: cp.lastKey, Page: cp.page, FileNode: cp.node}
		cp.buf.hdr.Snapshot = pos
		if done {
			cp.buf.hdr.Snapshot |= change.SnapshotTableLast
		}
		pos &^= change.SnapshotTableFirst
		select {
		case jobs <- chunkJob{buf: cp.buf, n: cp.n, prog: prog}:
		case <-ctx.Done():
			return ctx.Err()
		}
		cp.buf, cp.n, cp.lastKey = newBuf(), 0, nil
		if done {
			return finish()
		}
		return nil
	}
	copyRows := func(sql string) error {
		_, err := q.PgConn().CopyTo(ctx, cp, "COPY ("+sql+") TO STDOUT")
		if err == nil {
			err = cp.err
		}
		if err == nil && len(cp.partial) > 0 {
			err = fmt.Errorf("COPY output ends inside a row")
		}
		return err
	}
	if kl == nil || kl.whole {
		if kl != nil && kl.visible != "" {
			sql += " WHERE " + kl.visible
		}
		if err := copyRows(sql); err != nil {
			return err
		}
		return cp.chunk(true)
	}
	// A range's rows are handed over when a row of a later range arrives
	// (cut), so that the table's last chunk is never empty; empty ranges
	// only move the page on.
	for p := prog.Page; ; p += kl.perChunk {
		last := p+kl.perChunk >= kl.pages
		if err := copyRows(from + kl.where(p, last)); err != nil {
			return err
		}
		cp.page = p + kl.perChunk // every row buffered lies before it
		if last {
			return cp.chunk(true)
		}
		cp.cut = true
	}
}

// copyParser turns COPY text output into `r` changes.
type copyParser struct {
	s       *Source
	rel     *relation
	buf     *txnBuf
	limit   int              // rows per chunk; 0: no chunks
	page    int64            // ctid ranges: every row buffered lies before this page
	cut     bool             // ctid ranges: hand the rows buffered over at the next row
	node    uint32           // filenode of the table copied by ctid ranges
	chunk   func(bool) error // appends a full chunk
	partial []byte
	n       int
	lastKey []string
	err     error
	fields  []string
	isNull  []bool
}

func (p *copyParser) Write(b []byte) (int, error) {
	if p.err != nil {
		return 0, p.err
	}
	n := len(b)
	if len(p.partial) > 0 {
		p.partial = append(p.partial, b...)
		b = p.partial
	}
	for {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			break
		}
		if err := p.row(b[:i]); err != nil {
			p.err = err
			return 0, err
		}
		b = b[i+1:]
	}
	p.partial = append(p.partial[:0], b...)
	return n, nil
}

func (p *copyParser) row(line []byte) error {
	rel := p.rel
	// A full chunk is handed over when the next row comes, not at once, so
	// that the table's last chunk is never empty: it carries the table's
	// last row (SnapshotTableLast).
	if p.limit > 0 && p.n == p.limit || p.cut && p.n > 0 {
		if err := p.chunk(false); err != nil {
			return err
		}
	}
	p.cut = false
	p.fields, p.isNull = p.fields[:0], p.isNull[:0]
	for start := 0; ; {
		i := bytes.IndexByte(line[start:], '\t')
		end := len(line)
		if i >= 0 {
			end = start + i
		}
		f := line[start:end]
		if len(f) == 2 && f[0] == '\\' && f[1] == 'N' {
			p.fields, p.isNull = append(p.fields, ""), append(p.isNull, true)
		} else {
			p.fields, p.isNull = append(p.fields, unescapeCopy(f)), append(p.isNull, false)
		}
		if i < 0 {
			break
		}
		start = end + 1
	}
	if len(p.fields) != len(rel.cols) {
		return fmt.Errorf("COPY row has %d fields, table %s has %d columns", len(p.fields), rel.table, len(rel.cols))
	}
	row := make(change.Row, len(rel.cols))
	for i, c := range rel.cols {
		row[i].Name = c.name
		if !p.isNull[i] {
			row[i].Value = decodeText(c.ti, p.fields[i])
		}
	}
	if rel.key != nil {
		p.lastKey = p.lastKey[:0:0]
		for _, k := range rel.key {
			p.lastKey = append(p.lastKey, p.fields[k])
		}
		p.s.toast.put(func() string { return rel.rowPrefix + keyTextOf(rel, p.fields) }, row)
	}
	p.n++
	p.s.st.snapRows.Add(1)
	p.s.st.snapBytes.Add(int64(len(line) + 1))
	c := change.Change{Table: rel.table, Op: change.Read, Key: keyOf(rel, row), After: row, Types: rel.types}
	p.s.protect(&c)
	return p.buf.add(c)
}

// unescapeCopy decodes one field of COPY text format.
func unescapeCopy(f []byte) string {
	if bytes.IndexByte(f, '\\') < 0 {
		return string(f)
	}
	out := make([]byte, 0, len(f))
	for i := 0; i < len(f); i++ {
		c := f[i]
		if c != '\\' || i+1 == len(f) {
			out = append(out, c)
			continue
		}
		i++
		switch c = f[i]; c {
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'v':
			out = append(out, '\v')
		case 'x':
			v, j := 0, i+1
			for ; j < len(f) && j < i+3 && isHex(f[j]); j++ {
				v = v*16 + hexVal(f[j])
			}
			if j == i+1 {
				out = append(out, 'x')
				continue
			}
			out = append(out, byte(v))
			i = j - 1
		default:
			if c >= '0' && c <= '7' {
				v, j := 0, i
				for ; j < len(f) && j < i+3 && f[j] >= '0' && f[j] <= '7'; j++ {
					v = v*8 + int(f[j]-'0')
				}
				out = append(out, byte(v))
				i = j - 1
			} else {
				out = append(out, c)
			}
		}
	}
	return string(out)
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func hexVal(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	}
	return int(c-'A') + 10
}

// snapshotRelation describes table t as the snapshot copies it (columns in
// order, generated ones left out as pgoutput does) and returns the SELECT
// that reads it.
func (s *Source) snapshotRelation(ctx context.Context, q *pgx.Conn, t change.Table) (*relation, string, error) {
	var oid uint32
	if err := q.QueryRow(ctx, "SELECT $1::text::regclass::oid", quoteTable(t)).Scan(&oid); err != nil {
		return nil, "", err
	}
	rel := &relation{table: t, prefix: t.String() + "\x00", ident: 'd'}
	rows, err := q.Query(ctx, `SELECT attname::text, atttypid FROM pg_attribute
		WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum`, oid)
	if err != nil {
		return nil, "", err
	}
	type col struct {
		name string
		oid  uint32
	}
	var cols []col
	for rows.Next() {
		var c col
		if err := rows.Scan(&c.name, &c.oid); err != nil {
			return nil, "", err
		}
		cols = append(cols, c)
	}
	if err := rows.Err(); err != nil {
		return nil, "", err
	}
	var sel []string
	pub := s.pubTables[t]
	for _, c := range cols {
		if pub.cols != nil && !slices.Contains(pub.cols, c.name) {
			continue // not in the publication's column list
		}
		ti, err := s.types.resolve(ctx, q, c.oid)
		if err != nil {
			return nil, "", err
		}
		rel.cols = append(rel.cols, relCol{name: c.name, ti: ti})
		rel.types = append(rel.types, change.ColumnType{Name: c.name, Type: ti.name})
		sel = append(sel, pgx.Identifier{c.name}.Sanitize())
	}
	pk, sqlTypes, err := tableMeta(ctx, q, oid)
	if err != nil {
		return nil, "", err
	}
	rel.sqlTypes = sqlTypes
	rel.key = keyColumns(rel, pk)
	if len(pk) == 0 || len(rel.key) != len(pk) {
		rel.key = nil
	}
	rel.keyPrefix = isPrefix(rel.key)
	rel.rowPrefix = rowPrefix(rel)
	from := quoteTable(t)
	if pub.filter != "" {
		// The publication's row filter; a subquery, so that the caller can
		// add a WHERE of its own. It is named as the table, so that a
		// where clause naming the table's columns by it ("t.id") still
		// resolves.
		from = "(SELECT * FROM " + from + " WHERE (" + pub.filter + ")) AS " + pgx.Identifier{t.Name}.Sanitize()
	}
	return rel, "SELECT " + strings.Join(sel, ", ") + " FROM " + from, nil
}

// keyTextOf is keyText for COPY fields.
func keyTextOf(rel *relation, fields []string) string {
	var b strings.Builder
	for _, k := range rel.key {
		b.WriteString(fields[k])
		b.WriteByte(0)
	}
	return b.String()
}
