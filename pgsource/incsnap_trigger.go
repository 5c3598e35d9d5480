package pgsource

import (
	"context"
	"encoding/json"
	"github.com/walship/walship/replica"

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
	if c.Op != change.Insert || s.signalTable.IsZero() || s.signalTable != c.Table {
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
	// What the publication publishes of each table (its row filter and
	// column list, PostgreSQL 15) and its primary key's column types.
	spec := `''`
	if s.serverVersion >= 150000 {
		spec = `coalesce(p.rowfilter, '') || '|' || coalesce(array_to_string(p.attnames, ','), '')`
	}
	rows, err := q.Query(ctx, `SELECT p.schemaname::text, p.tablename::text, `+spec+`,
			ARRAY(SELECT ty.typname::text FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
				JOIN pg_type ty ON ty.oid = a.atttypid
				WHERE i.indrelid = format('%I.%I', p.schemaname, p.tablename)::regclass AND i.indisprimary)
		FROM pg_publication_tables p WHERE p.pubname = $1 ORDER BY 1, 2`, s.cfg.Publication)
	if err != nil {
		return err
	}
	type pubTable struct {
		t        change.Table
		spec     string
		keyTypes []string
	}
	var tables []pubTable
	for rows.Next() {
		var p pubTable
		if err := rows.Scan(&p.t.Schema, &p.t.Name, &p.spec, &p.keyTypes); err != nil {
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
	// is published again, it is copied again.
	published := map[string]bool{}
	for _, p := range tables {
		published[p.t.String()] = true
	}
	for name, p := range ss.Tables {
		if !published[name] && !p.Removed {
			p.Removed = true
			changed = true
			s.log.Info("postgres source: table no longer published: its changes are not captured; "+
				"if it is published again it is copied again", "table", name)
		}
	}
	for _, p := range tables {
		name := p.t.String()
		tp := ss.Tables[name]
		var why string
		switch {
		case tp == nil:
		case tp.Removed:
			why = "published again"
		case tp.Spec != "" && tp.Spec != p.spec:
			why = "its row filter or column list changed"
		default:
			if tp.Spec == "" && p.spec != "" { // recorded before walship kept it
				tp.Spec, changed = p.spec, true
			}
			continue
		}
		ss.Tables[name] = &tableProgress{Done: true, Spec: p.spec}
		changed = true
		keyed := len(p.keyTypes) > 0
		repairable := keyed
		for _, ty := range p.keyTypes {
			repairable = repairable && replica.KeySupported(ty)
		}
		switch {
		case !backfill:
		case !keyed:
			s.log.Warn("postgres source: table added to the publication after the initial snapshot, or changed in it, "+
				"has no primary key: its existing rows are not copied (incremental snapshots copy by primary key)", "table", name)
		case why == "":
			s.log.Info("postgres source: table added to the publication after the initial snapshot: backfilling it", "table", name)
			s.queueSnapshot(name, "", nil)
		case repairable:
			// The replicas may hold rows the source deleted meanwhile, or
			// that the new filter leaves out: a repair of the whole key
			// range copies the table and deletes those.
			s.log.Info("postgres source: table "+why+": copying it again, deleting in replicas what the source does not publish",
				"table", name)
			s.queueSnapshot(name, "", &KeyRange{})
		default:
			s.log.Warn("postgres source: table "+why+": copying it again; its key types do not allow deleting in replicas "+
				"the rows the source no longer publishes (integer, text, varchar and uuid keys do)", "table", name)
			s.queueSnapshot(name, "", nil)
		}
	}
	if changed {
		return s.saveCheckpoint(ctx)
	}
	return nil
}
