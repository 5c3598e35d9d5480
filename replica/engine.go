package replica

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"

	"github.com/walship/walship/change"
)

// backend is one replica database.
type backend interface {
	// init creates the bookkeeping tables and returns the stored state.
	init(ctx context.Context) (State, error)
	// readState reads the bookkeeping row.
	readState(ctx context.Context) (State, error)
	begin(ctx context.Context) (dbTxn, error)
	// dialect is the SQL and the naming of the backend.
	dialect() *dialect
	close() error
}

// dbTxn is one open database transaction of a backend. Statements may be
// queued and sent at flush or commit (Postgres pipelines them); an error
// may thus surface at a later call, and then the whole transaction is void.
type dbTxn interface {
	// loadState reads the bookkeeping row, locking it against other
	// writers until the transaction ends.
	loadState(ctx context.Context) (State, error)
	// loadTable returns the replica's shape of source table src, whose
	// replica table is dst, nil if absent; columns carry source names.
	loadTable(ctx context.Context, src change.Table, dst target) (*tableSchema, error)
	// lookupName returns the source name that walship_names records for
	// (kind, tbl, target), and whether there is one.
	lookupName(ctx context.Context, kind, tbl, target string) (string, bool, error)
	recordName(ctx context.Context, kind, tbl, target, source string) error
	forgetName(ctx context.Context, kind, tbl, target string) error
	// schemaExists reports whether the replica has the schema name.
	schemaExists(ctx context.Context, name string) (bool, error)
	createTable(ctx context.Context, t *tableSchema) error
	addColumn(ctx context.Context, t *tableSchema, c column) error
	dropColumn(ctx context.Context, t *tableSchema, name string) error
	retypeColumn(ctx context.Context, t *tableSchema, c column) error
	// upsert inserts row, or for a table with a key, updates the columns
	// of row in the row with the same key.
	upsert(ctx context.Context, t *tableSchema, row change.Row) error
	// update sets the columns of set in the row matching where: the key
	// columns, or for a table without a key one row equal on every column
	// of where.
	update(ctx context.Context, t *tableSchema, set, where change.Row) error
	// delete deletes the row matching where (as for update).
	delete(ctx context.Context, t *tableSchema, where change.Row) error
	// truncate empties the tables ts in one statement where the backend
	// can (the tables of one source TRUNCATE), with its options.
	truncate(ctx context.Context, ts []*tableSchema, opts change.TruncateOptions) error
	saveState(ctx context.Context, s State) error
	// at names the change the next statements belong to, for errors that
	// surface later (a pipelined statement fails at flush).
	at(desc string)
	commit(ctx context.Context) error
	rollback() error
}

type applier struct {
	b    backend
	d    *dialect
	opts Options
	log  *slog.Logger

	// mu serialises Apply, Position and Close: one DB transaction at a time.
	mu struct {
		sync.Mutex
		state  State // as committed in the replica
		tables map[change.Table]*tableSchema
		stats  Stats
		closed bool
	}
}

var _ Applier = (*applier)(nil)

func newApplier(ctx context.Context, b backend, opts Options) (*applier, error) {
	st, err := b.init(ctx)
	if err != nil {
		return nil, err
	}
	a := &applier{b: b, d: b.dialect(), opts: opts, log: opts.Logger}
	if opts.Lineage != "" && st.Lineage != opts.Lineage {
		if st.Lineage != "" {
			return nil, fmt.Errorf("%w: replica holds lineage %q at LSN %d, the log is lineage %q", ErrLineage, st.Lineage, st.LSN, opts.Lineage)
		}
		tx, err := b.begin(ctx)
		if err != nil {
			return nil, err
		}
		st.Lineage = opts.Lineage
		if err := tx.saveState(ctx, st); err != nil {
			tx.rollback()
			return nil, err
		}
		if err := tx.commit(ctx); err != nil {
			return nil, err
		}
	}
	a.mu.state = st
	a.mu.tables = map[change.Table]*tableSchema{}
	return a, nil
}

func (a *applier) Position(ctx context.Context) (uint64, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.mu.closed {
		return 0, errors.New("replica: closed")
	}
	st, err := a.b.readState(ctx)
	if err != nil {
		return 0, fmt.Errorf("replica: %w", err)
	}
	if st.LSN != a.mu.state.LSN {
		// Another writer advanced the replica: its tables may have changed.
		a.mu.state = st
		a.mu.tables = map[change.Table]*tableSchema{}
	}
	return st.LSN, nil
}

func (a *applier) Stats() Stats {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.mu.stats
}

func (a *applier) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.mu.closed {
		return nil
	}
	a.mu.closed = true
	return a.b.close()
}

func (a *applier) Apply(ctx context.Context, txns []change.Committed) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.mu.closed {
		return errors.New("replica: closed")
	}
	for i := 1; i < len(txns); i++ {
		if txns[i].CommitLSN <= txns[i-1].CommitLSN {
			return fmt.Errorf("replica: %w: commit LSN %d after %d", ErrOrder, txns[i].CommitLSN, txns[i-1].CommitLSN)
		}
	}
	// Two source names that would share a replica name are refused before
	// any of txns is written.
	if err := a.d.planNames(txns); err != nil {
		return fmt.Errorf("replica: %w", err)
	}
	for len(txns) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		// Skip what the replica already holds before opening a DB
		// transaction, so a redelivered batch costs no write.
		for len(txns) > 0 && txns[0].CommitLSN <= a.mu.state.LSN {
			a.mu.stats.Skipped++
			txns = txns[1:]
		}
		if len(txns) == 0 {
			break
		}
		n := min(len(txns), a.opts.MaxBatchTxns)
		if err := a.applyBatchLocked(ctx, txns[:n]); err != nil {
			return err
		}
		txns = txns[n:]
	}
	return nil
}

// applyBatchLocked applies txns in one DB transaction with the position.
func (a *applier) applyBatchLocked(ctx context.Context, txns []change.Committed) (err error) {
	tx, err := a.b.begin(ctx)
	if err != nil {
		return fmt.Errorf("replica: begin: %w", err)
	}
	defer func() {
		if err != nil {
			tx.rollback()
		}
	}()
	// The stored position, not the cached one, decides what to skip: another
	// writer (a second consumer started by mistake) may have advanced it.
	st, err := tx.loadState(ctx)
	if err != nil {
		return fmt.Errorf("replica: %w", err)
	}
	if st.LSN != a.mu.state.LSN {
		// Another writer changed the replica: its tables may have changed too.
		a.mu.tables = map[change.Table]*tableSchema{}
	}
	stats := a.mu.stats
	for len(txns) > 0 && txns[0].CommitLSN <= st.LSN {
		stats.Skipped++
		txns = txns[1:]
	}
	if len(txns) == 0 {
		a.mu.state, a.mu.stats = st, stats
		return tx.rollback()
	}
	// Schemas changed in this DB transaction are cached only if it commits.
	work := &batch{a: a, tx: tx, tables: map[change.Table]*tableSchema{}, stats: &stats}
	for i := range txns {
		t := &txns[i]
		for j := 0; j < len(t.Changes); j++ {
			c := &t.Changes[j]
			desc := fmt.Sprintf("txn at LSN %d, change %d (%s %s)", t.CommitLSN, j, c.Op, c.Table)
			tx.at(desc)
			if c.Op == change.Truncate {
				// A source TRUNCATE of several tables is consecutive changes
				// with the same options: one statement, as at the source.
				k := j + 1
				for k < len(t.Changes) && t.Changes[k].Op == change.Truncate && t.Changes[k].TruncateOpts == c.TruncateOpts {
					k++
				}
				if err := work.truncate(ctx, t.Changes[j:k]); err != nil {
					return wrapAt(desc, err)
				}
				j = k - 1
				continue
			}
			if err := work.apply(ctx, c); err != nil {
				return wrapAt(desc, err)
			}
		}
		tx.at(fmt.Sprintf("position of the txn at LSN %d", t.CommitLSN))
		st.LSN, st.CommitTime = t.CommitLSN, t.CommitTime.UTC()
		st.Txns++
		st.Changes += uint64(len(t.Changes))
		stats.Applied++
		stats.Changes += uint64(len(t.Changes))
	}
	tx.at(fmt.Sprintf("position %d", st.LSN))
	if err := tx.saveState(ctx, st); err != nil {
		return wrapAt("saving the position", err)
	}
	if err := tx.commit(ctx); err != nil {
		return wrapAt(fmt.Sprintf("commit of LSNs up to %d", st.LSN), err)
	}
	a.mu.state = st
	a.mu.stats = stats
	for k, v := range work.tables {
		a.mu.tables[k] = v
	}
	return nil
}

// stmtError is a failed statement that was sent after the change it
// belongs to (pipelining): desc names that change.
type stmtError struct {
	desc string
	err  error
}

func (e *stmtError) Error() string { return e.desc + ": " + e.err.Error() }
func (e *stmtError) Unwrap() error { return e.err }

// wrapAt prefixes err with desc, or with the change a pipelined statement
// belonged to.
func wrapAt(desc string, err error) error {
	var se *stmtError
	if errors.As(err, &se) {
		return fmt.Errorf("replica: %w", se)
	}
	return fmt.Errorf("replica: %s: %w", desc, err)
}

// batch applies changes within one DB transaction.
type batch struct {
	a      *applier
	tx     dbTxn
	tables map[change.Table]*tableSchema // shapes read or changed in this DB transaction
	stats  *Stats
}

// table returns the shape of t (nil if absent), from the batch, the
// applier's cache or the database.
func (w *batch) table(ctx context.Context, t change.Table) (*tableSchema, error) {
	if ts, ok := w.tables[t]; ok {
		return ts, nil
	}
	if ts, ok := w.a.mu.tables[t]; ok {
		return ts, nil
	}
	ts, err := w.claimTable(ctx, t)
	if err != nil {
		return nil, err
	}
	if ts != nil {
		w.tables[t] = ts
	}
	return ts, nil
}

func (w *batch) apply(ctx context.Context, c *change.Change) error {
	switch c.Op {
	case change.Message:
		if c.Message != nil && c.Message.Prefix == ChecksumPrefix {
			return w.checksum(ctx, c)
		}
		if c.Message != nil && c.Message.Prefix == RepairPrefix {
			return w.repair(ctx, c)
		}
		return nil
	case change.Truncate:
		return w.truncate(ctx, []change.Change{*c})
	case change.Delete:
		ts, err := w.table(ctx, c.Table)
		if err != nil || ts == nil {
			return err // nothing to delete
		}
		old := c.Key
		if old == nil {
			old = c.Before
		}
		ts, err = w.evolve(ctx, ts, c, old)
		if err != nil {
			return err
		}
		return w.tx.delete(ctx, ts, w.where(ts, old))
	case change.Insert, change.Read, change.Update:
	default:
		return fmt.Errorf("unknown op %q", c.Op)
	}
	ts, err := w.table(ctx, c.Table)
	if err != nil {
		return err
	}
	if ts == nil {
		if ts, err = w.create(ctx, c); err != nil {
			return err
		}
	}
	var old change.Row
	if c.Op == change.Update {
		old = c.Key
		if old == nil {
			old = c.Before
		}
	}
	if ts, err = w.evolve(ctx, ts, c, old); err != nil {
		return err
	}
	after := c.After
	var where change.Row
	if c.Op == change.Update {
		where = w.where(ts, old)
	}
	for _, k := range ts.key {
		v, ok := after.Get(k)
		if !ok && c.Op == change.Update {
			// An image without the key: the key did not change.
			if v, ok = where.Get(k); ok {
				after = append(slices.Clip(after), change.Column{Name: k, Value: v})
			}
		}
		switch {
		case !ok:
			return fmt.Errorf("key column %q is missing from the new image", k)
		case v.IsNull():
			// SQLite would invent a rowid for an INTEGER key.
			return fmt.Errorf("key column %q is NULL in the new image", k)
		}
	}
	if c.Op != change.Update {
		return w.tx.upsert(ctx, ts, after)
	}
	if len(ts.key) == 0 {
		return w.tx.update(ctx, ts, after, where)
	}
	if !keyChanged(ts, where, after) {
		// An upsert converges also when the row is missing (a replica
		// built from a partial snapshot).
		return w.tx.upsert(ctx, ts, after)
	}
	// The key changed: free the new key, move the row (keeping columns
	// that the new image lacks, e.g. unchanged TOAST values), and insert
	// it if the old row was missing.
	newKey := make(change.Row, 0, len(ts.key))
	for _, k := range ts.key {
		v, _ := after.Get(k)
		newKey = append(newKey, change.Column{Name: k, Value: v})
	}
	if err := w.tx.delete(ctx, ts, newKey); err != nil {
		return err
	}
	if err := w.tx.update(ctx, ts, after, where); err != nil {
		return err
	}
	return w.tx.upsert(ctx, ts, after)
}

// truncate empties the tables of cs (truncates with the same options) that
// the replica has; unknown ones have nothing to empty.
func (w *batch) truncate(ctx context.Context, cs []change.Change) error {
	var tss []*tableSchema
	for i := range cs {
		ts, err := w.table(ctx, cs[i].Table)
		if err != nil {
			return err
		}
		if ts != nil && !slices.Contains(tss, ts) {
			tss = append(tss, ts)
		}
	}
	if len(tss) == 0 {
		return nil
	}
	return w.tx.truncate(ctx, tss, cs[0].TruncateOpts)
}

// where returns the columns of old that find the row: the key columns for
// a table with a key (all of old if it lacks one of them), else all of old.
func (w *batch) where(ts *tableSchema, old change.Row) change.Row {
	if len(ts.key) == 0 {
		return old
	}
	r := make(change.Row, 0, len(ts.key))
	for _, k := range ts.key {
		v, ok := old.Get(k)
		if !ok {
			return old
		}
		r = append(r, change.Column{Name: k, Value: v})
	}
	return r
}

// keyChanged reports whether after has a key column that differs from where.
func keyChanged(ts *tableSchema, where, after change.Row) bool {
	for _, k := range ts.key {
		nv, ok := after.Get(k)
		if !ok {
			continue
		}
		ov, ok := where.Get(k)
		if !ok || !ov.Equal(nv) {
			return true
		}
	}
	return false
}

// create creates the table of c: the columns of its types and images, the
// key columns as primary key.
func (w *batch) create(ctx context.Context, c *change.Change) (*tableSchema, error) {
	ts := &tableSchema{src: c.Table}
	for _, t := range c.Types {
		if ts.index(t.Name) >= 0 {
			continue
		}
		if err := w.claimColumn(ts, t.Name); err != nil {
			return nil, err
		}
		ts.cols = append(ts.cols, column{name: t.Name, typ: parseType(t.Type)})
	}
	for _, r := range []change.Row{c.After, c.Key, c.Before} {
		for _, col := range r {
			if ts.index(col.Name) < 0 {
				if err := w.claimColumn(ts, col.Name); err != nil {
					return nil, err
				}
				ts.cols = append(ts.cols, column{name: col.Name, typ: inferType(col.Value)})
			}
		}
	}
	for _, k := range c.Key {
		ts.key = append(ts.key, k.Name)
	}
	if err := w.tx.createTable(ctx, ts); err != nil {
		return nil, fmt.Errorf("creating the table: %w", err)
	}
	if err := w.recordTable(ctx, ts); err != nil {
		return nil, fmt.Errorf("recording the table's names: %w", err)
	}
	w.tables[c.Table] = ts
	w.stats.SchemaChanges++
	w.a.log.Info("replica: table created", "table", c.Table.String(), "columns", len(ts.cols), "key", ts.key)
	return ts, nil
}

// evolve applies the schema changes that c shows: new columns are added,
// columns whose source type changed are retyped, and columns missing from
// a full image (after with every column of types) are dropped unless
// Options.KeepDroppedColumns.
func (w *batch) evolve(ctx context.Context, ts *tableSchema, c *change.Change, old change.Row) (*tableSchema, error) {
	var next *tableSchema // copy on write: the cached shape stays valid if the DB transaction fails
	mut := func() *tableSchema {
		if next == nil {
			next = &tableSchema{src: ts.src, cols: slices.Clone(ts.cols), key: ts.key}
		}
		return next
	}
	cur := func() *tableSchema {
		if next != nil {
			return next
		}
		return ts
	}
	for _, t := range c.Types {
		i := cur().index(t.Name)
		nt := parseType(t.Type)
		if i < 0 {
			col := column{name: t.Name, typ: nt}
			if err := w.claimColumn(cur(), t.Name); err != nil {
				return nil, err
			}
			if err := w.tx.addColumn(ctx, cur(), col); err != nil {
				return nil, fmt.Errorf("adding column %q (%s): %w", t.Name, t.Type, err)
			}
			if err := w.recordColumn(ctx, cur(), t.Name); err != nil {
				return nil, err
			}
			n := mut()
			n.cols = append(n.cols, col)
			w.logSchema("column added", c, t.Name, t.Type)
			continue
		}
		if cur().cols[i].typ.name != nt.name {
			col := column{name: t.Name, typ: nt}
			if err := w.tx.retypeColumn(ctx, cur(), col); err != nil {
				return nil, fmt.Errorf("changing the type of column %q from %s to %s: %w", t.Name, cur().cols[i].typ.name, t.Type, err)
			}
			mut().cols[i] = col
			w.logSchema("column retyped", c, t.Name, t.Type)
		}
	}
	for _, r := range []change.Row{c.After, old} {
		for _, col := range r {
			if cur().index(col.Name) >= 0 {
				continue
			}
			nc := column{name: col.Name, typ: inferType(col.Value)}
			if err := w.claimColumn(cur(), col.Name); err != nil {
				return nil, err
			}
			if err := w.tx.addColumn(ctx, cur(), nc); err != nil {
				return nil, fmt.Errorf("adding column %q (%s): %w", nc.name, nc.typ.name, err)
			}
			if err := w.recordColumn(ctx, cur(), col.Name); err != nil {
				return nil, err
			}
			n := mut()
			n.cols = append(n.cols, nc)
			w.logSchema("column added", c, nc.name, nc.typ.name)
		}
	}
	if len(c.Types) > 0 && c.After != nil && len(c.After) == len(c.Types) && !w.a.opts.KeepDroppedColumns {
		full := true
		for _, t := range c.Types {
			if c.After.Index(t.Name) < 0 {
				full = false
				break
			}
		}
		for full {
			dropped := ""
			for _, col := range cur().cols {
				if c.After.Index(col.name) < 0 && !cur().isKey(col.name) {
					dropped = col.name
					break
				}
			}
			if dropped == "" {
				break
			}
			if err := w.tx.dropColumn(ctx, cur(), dropped); err != nil {
				return nil, fmt.Errorf("dropping column %q: %w", dropped, err)
			}
			if t := w.a.d.column(dropped); t != dropped {
				if err := w.tx.forgetName(ctx, kindColumn, w.a.d.target(c.Table).key(), t); err != nil {
					return nil, err
				}
			}
			n := mut()
			n.cols = slices.DeleteFunc(n.cols, func(x column) bool { return x.name == dropped })
			w.a.log.Warn("replica: column dropped: the source's full row image no longer has it", "table", c.Table.String(), "column", dropped)
			w.stats.SchemaChanges++
		}
	}
	if next != nil {
		w.tables[c.Table] = next
		return next, nil
	}
	return ts, nil
}

func (w *batch) logSchema(what string, c *change.Change, col, typ string) {
	w.stats.SchemaChanges++
	w.a.log.Info("replica: "+what, "table", c.Table.String(), "column", col, "type", typ)
}
