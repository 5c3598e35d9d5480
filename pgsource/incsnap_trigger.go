package pgsource

import (
	"context"
	"encoding/json"

	"github.com/jackc/pgx/v5"
	"github.com/walship/walship/change"
)

// signalData is the data column of an execute-snapshot signal row.
type signalData struct {
	Collections []string `json:"data-collections"`
	Conditions  []struct {
		Collection string `json:"data-collection"`
		Filter     string `json:"filter"`
	} `json:"additional-conditions"`
}

// signal notes an execute-snapshot row inserted into the signal table;
// it is queued when its transaction is (queueSignals).
func (st *streamer) signal(c *change.Change) {
	s := st.s
	if s.cfg.SignalTable == "" || c.Op != change.Insert {
		return
	}
	if sig, err := change.ParseTable(s.cfg.SignalTable); err != nil || sig != c.Table {
		return
	}
	text := func(col string) string {
		v, _ := c.After.Get(col)
		t, _ := v.Text()
		return t
	}
	if text("type") != SignalExecuteSnapshot {
		return
	}
	id := text("id")
	var d signalData
	if err := json.Unmarshal([]byte(text("data")), &d); err != nil || len(d.Collections) == 0 {
		s.log.Warn("postgres source: signal row ignored: data is not {\"data-collections\": [...]}", "id", id, "err", err)
		return
	}
	for _, name := range d.Collections {
		where := ""
		for _, cond := range d.Conditions {
			if cond.Collection == name {
				where = cond.Filter
			}
		}
		t, err := change.ParseTable(name)
		if err != nil {
			s.log.Warn("postgres source: signal row ignored: bad table name", "id", id, "table", name, "err", err)
			continue
		}
		st.signals = append(st.signals, SnapshotRequest{Table: t.String(), Where: where})
	}
}

// queueSignals queues the signals of the transaction just received,
// unless it is skipped (already in the log: queued when it was first).
func (st *streamer) queueSignals(skip bool) {
	if !skip {
		for _, r := range st.signals {
			st.s.queueSnapshot(r.Table, r.Where, nil)
		}
	}
	st.signals = nil
}

// incPrepare runs before streaming: it loads the incremental snapshots of
// the checkpoint, checks that the signal table is published, and queues a
// backfill of every published table the initial snapshot did not copy
// (added to the publication since), recording it so that it is queued once.
func (s *Source) incPrepare(ctx context.Context, q *pgx.Conn) error {
	s.loadIncremental()
	if s.cfg.SignalTable != "" {
		t, _ := change.ParseTable(s.cfg.SignalTable)
		var published bool
		if err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication_tables WHERE pubname = $1
			AND schemaname = $2 AND tablename = $3)`, s.cfg.Publication, t.Schema, t.Name).Scan(&published); err != nil {
			return err
		}
		if !published {
			return fatalf("source.postgres.signal_table: table %s is not in publication %q: create it (id text, type text, data text) "+
				"and add it to source.postgres.tables", quoteTable(t), s.cfg.Publication)
		}
	}
	ss := s.state.Snapshot
	if s.cfg.Snapshot != "initial" || ss == nil || !ss.Done {
		return nil
	}
	rows, err := q.Query(ctx, `SELECT p.schemaname::text, p.tablename::text, EXISTS (SELECT 1 FROM pg_index i
			WHERE i.indrelid = format('%I.%I', p.schemaname, p.tablename)::regclass AND i.indisprimary)
		FROM pg_publication_tables p WHERE p.pubname = $1 ORDER BY 1, 2`, s.cfg.Publication)
	if err != nil {
		return err
	}
	type pubTable struct {
		t     change.Table
		hasPK bool
	}
	var tables []pubTable
	for rows.Next() {
		var p pubTable
		if err := rows.Scan(&p.t.Schema, &p.t.Name, &p.hasPK); err != nil {
			return err
		}
		tables = append(tables, p)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	// A snapshot known done only from the log (no checkpoint: a new HA
	// leader) does not say which tables it copied: take them all as
	// copied rather than copy every table again.
	backfill := len(ss.Tables) > 0
	changed := false
	// A table no longer published misses its changes from now on: if it
	// is published again, it is backfilled again.
	published := map[string]bool{}
	for _, p := range tables {
		published[p.t.String()] = true
	}
	for name, p := range ss.Tables {
		if !published[name] && !p.Removed {
			p.Removed = true
			changed = true
			s.log.Info("postgres source: table no longer published: its changes are not captured; "+
				"if it is published again it is backfilled", "table", name)
		}
	}
	for _, p := range tables {
		name := p.t.String()
		if tp := ss.Tables[name]; tp != nil && !tp.Removed {
			continue
		}
		ss.Tables[name] = &tableProgress{Done: true}
		changed = true
		switch {
		case !backfill:
		case !p.hasPK:
			s.log.Warn("postgres source: table added to the publication after the initial snapshot has no primary key: "+
				"its existing rows are not copied (incremental snapshots copy by primary key)", "table", name)
		default:
			s.log.Info("postgres source: table added to the publication after the initial snapshot: backfilling it", "table", name)
			s.queueSnapshot(name, "", nil)
		}
	}
	if changed {
		return s.saveCheckpoint(ctx)
	}
	return nil
}
