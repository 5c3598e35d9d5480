package pgsource

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/walship/walship/change"
)

// managedComment begins the comment (COMMENT ON PUBLICATION) of a
// publication walship manages: it created it, and keeps its tables, row
// filters and column lists in step with Options.Tables. The rest of the
// comment is the digest of the table list last applied. A publication
// without it (made by hand, or by a walship before this rule) is never
// dropped from or changed, only added to.
const managedComment = managedMark + ", kept in step with source.postgres.tables; remove this comment to manage it by hand. spec "

// managedMark is what the comment of a managed publication begins with:
// giving a publication a comment that begins so hands it to walship.
const managedMark = "walship: managed publication"

// specDigest identifies a table list as applied to a publication.
func specDigest(tables []TableSpec) string {
	type entry struct {
		T string   `json:"t"`
		W string   `json:"w,omitempty"`
		C []string `json:"c,omitempty"`
	}
	es := make([]entry, len(tables))
	for i, t := range tables {
		es[i] = entry{T: t.Table().String(), W: t.Where, C: t.Columns}
	}
	slices.SortFunc(es, func(a, b entry) int { return strings.Compare(a.T, b.T) })
	b, _ := json.Marshal(es)
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:8])
}

// checkTables verifies that every configured table exists, that no
// partition is listed with an ancestor, and that the column list,
// hashed and masked columns leave the table's key whole.
func (s *Source) checkTables(ctx context.Context, q *pgx.Conn) error {
	if err := q.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&s.serverVersion); err != nil {
		return err
	}
	oids := map[uint32]int{}
	type listed struct {
		oid       uint32
		partition bool
	}
	ls := make([]listed, len(s.cfg.Tables))
	for i, spec := range s.cfg.Tables {
		t := spec.Table()
		if (spec.Where != "" || spec.Columns != nil) && s.serverVersion < 150000 {
			return fatalf("source.postgres.tables[%d]: row filters and column lists need PostgreSQL 15 or later (server_version_num %d)", i, s.serverVersion)
		}
		var l listed
		err := q.QueryRow(ctx, `SELECT c.oid, c.relispartition FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')`, t.Schema, t.Name).Scan(&l.oid, &l.partition)
		if err == pgx.ErrNoRows {
			return fatalf("source.postgres.tables[%d]: table %s does not exist in the database", i, quoteTable(t))
		}
		if err != nil {
			return err
		}
		ls[i], oids[l.oid] = l, i
	}
	for i, l := range ls {
		if !l.partition {
			continue
		}
		rows, err := q.Query(ctx, "SELECT relid::oid FROM pg_partition_ancestors($1) WHERE relid <> $1::regclass", l.oid)
		if err != nil {
			return err
		}
		anc, err := pgx.CollectRows(rows, pgx.RowTo[uint32])
		if err != nil {
			return err
		}
		for _, a := range anc {
			if j, ok := oids[a]; ok {
				return fatalf("source.postgres.tables[%d]: %s is a partition of %s (tables[%d]), whose changes are all published as the root: "+
					"list the root only", i, s.cfg.Tables[i].Name, s.cfg.Tables[j].Name, j)
			}
		}
	}
	for i, spec := range s.cfg.Tables {
		if spec.Columns == nil && len(spec.Hash)+len(spec.Mask) == 0 {
			continue
		}
		// The key: primary key and replica identity index columns.
		rows, err := q.Query(ctx, `SELECT DISTINCT a.attname::text FROM pg_index i JOIN pg_attribute a
			ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) WHERE i.indrelid = $1 AND (i.indisprimary OR i.indisreplident)`, ls[i].oid)
		if err != nil {
			return err
		}
		key, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		for _, k := range key {
			switch {
			case spec.Columns != nil && !slices.Contains(spec.Columns, k):
				return fatalf("source.postgres.tables[%d].columns: key column %q of %s is missing: PostgreSQL refuses UPDATE and DELETE "+
					"on a table whose published columns do not cover its replica identity, and the log needs the key", i, k, spec.Name)
			case slices.Contains(spec.Hash, k):
				return fatalf("source.postgres.tables[%d].hash: %q is a key column of %s: hashed keys would break the key every consumer "+
					"and replica matches rows by (its type and value change); hash only other columns", i, k, spec.Name)
			case slices.Contains(spec.Mask, k):
				return fatalf("source.postgres.tables[%d].mask: %q is a key column of %s: masked, every row would have the same key", i, k, spec.Name)
			}
		}
		var cols []string
		rows, err = q.Query(ctx, "SELECT attname::text FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped", ls[i].oid)
		if err != nil {
			return err
		}
		if cols, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return err
		}
		for _, l := range []struct {
			f    string
			cols []string
		}{{"columns", spec.Columns}, {"hash", spec.Hash}, {"mask", spec.Mask}} {
			for j, c := range l.cols {
				if !slices.Contains(cols, c) {
					return fatalf("source.postgres.tables[%d].%s[%d]: %s has no column %q", i, l.f, j, spec.Name, c)
				}
			}
		}
	}
	return nil
}

// publicationTables lists the tables the publication publishes, as
// pgoutput names them.
func (s *Source) publicationTables(ctx context.Context, q *pgx.Conn) (map[change.Table]bool, error) {
	rows, err := q.Query(ctx, "SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1", s.cfg.Publication)
	if err != nil {
		return nil, err
	}
	m := map[change.Table]bool{}
	for rows.Next() {
		var t change.Table
		if err := rows.Scan(&t.Schema, &t.Name); err != nil {
			return nil, err
		}
		m[t] = true
	}
	return m, rows.Err()
}

// ensurePublication creates the publication if absent (managed: see
// managedComment) and brings a managed one in step with Options.Tables:
// tables added, dropped, their row filters and column lists replaced. It
// records the tables the publication gained (addedToPublication).
func (s *Source) ensurePublication(ctx context.Context, q *pgx.Conn) error {
	s.pubAdded = nil
	pub := pgx.Identifier{s.cfg.Publication}.Sanitize()
	var allTables, viaRoot bool
	var comment string
	err := q.QueryRow(ctx, `SELECT puballtables, pubviaroot, coalesce(obj_description(oid, 'pg_publication'), '')
		FROM pg_publication WHERE pubname = $1`, s.cfg.Publication).Scan(&allTables, &viaRoot, &comment)
	exists := err == nil
	if err != nil && err != pgx.ErrNoRows {
		return err
	}
	before := map[change.Table]bool{}
	if exists {
		if before, err = s.publicationTables(ctx, q); err != nil {
			return err
		}
	}
	digest := specDigest(s.cfg.Tables)
	managed := strings.HasPrefix(comment, managedMark)
	var stmts []string
	what := ""
	create := func() {
		sql := "CREATE PUBLICATION " + pub + " FOR ALL TABLES"
		if len(s.cfg.Tables) > 0 {
			names := make([]string, len(s.cfg.Tables))
			for i, t := range s.cfg.Tables {
				names[i] = pubTableSQL(t)
			}
			sql = "CREATE PUBLICATION " + pub + " FOR TABLE " + strings.Join(names, ", ")
		}
		// Partitions publish as their root: one table per root downstream,
		// and a root's snapshot reads every partition once.
		stmts = append(stmts, sql+" WITH (publish_via_partition_root = true)")
	}
	switch {
	case !exists:
		create()
		what = "publication created"
	case !managed && allTables:
		if len(s.cfg.Tables) > 0 {
			s.log.Warn("postgres source: publication "+s.cfg.Publication+" is FOR ALL TABLES and was not made by walship: left alone; "+
				"source.postgres.tables (its list, row filters and column lists) is not applied to it, hashing and masking are",
				"publication", s.cfg.Publication)
		} else {
			s.log.Info("postgres source: publication "+s.cfg.Publication+" is FOR ALL TABLES and was not made by walship: left alone",
				"publication", s.cfg.Publication)
		}
		return s.noteAdded(before, before)
	case !managed:
		// Made by hand (or by an earlier walship): only add what it lacks.
		for _, t := range s.cfg.Tables {
			if !before[t.Table()] {
				stmts = append(stmts, "ALTER PUBLICATION "+pub+" ADD TABLE "+pubTableSQL(t))
			}
		}
		s.log.Info("postgres source: publication "+s.cfg.Publication+" was not made by walship: tables are only added to it, "+
			"never dropped or changed (docs/POSTGRES.md, \"Publication management\")", "publication", s.cfg.Publication)
		what = "tables added to the publication"
	case allTables != (len(s.cfg.Tables) == 0):
		// FOR ALL TABLES and a table list do not convert into each other:
		// the publication is made again, in one transaction, so the slot
		// never decodes a moment without it.
		stmts = append(stmts, "DROP PUBLICATION "+pub)
		create()
		what = "publication made again"
	case !allTables && (comment != managedComment+digest || !sameTables(before, s.cfg.Tables)):
		stmts = append(stmts, "ALTER PUBLICATION "+pub+" SET TABLE "+strings.Join(mapSlice(s.cfg.Tables, pubTableSQL), ", "))
		what = "publication brought in step with source.postgres.tables"
	}
	if recreated := len(stmts) > 0 && strings.HasPrefix(stmts[len(stmts)-1], "CREATE"); managed && !viaRoot && !recreated {
		stmts = append(stmts, "ALTER PUBLICATION "+pub+" SET (publish_via_partition_root = true)")
	}
	if len(stmts) == 0 {
		return s.noteAdded(before, before)
	}
	if managed || !exists {
		stmts = append(stmts, "COMMENT ON PUBLICATION "+pub+" IS "+sqlLiteral(managedComment+digest))
	}
	tx, err := q.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.Background())
	for _, sql := range stmts {
		if _, err := tx.Exec(ctx, sql); err != nil {
			return fatalf("source.postgres.tables: %s: %v", sql, err)
		}
	}
	if err := s.checkIdentity(ctx, tx); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	after, err := s.publicationTables(ctx, q)
	if err != nil {
		return err
	}
	var dropped []string
	for t := range before {
		if !after[t] {
			dropped = append(dropped, t.String())
		}
	}
	slices.Sort(dropped)
	s.log.Info("postgres source: "+what, "publication", s.cfg.Publication, "dropped", dropped)
	return s.noteAdded(before, after)
}

// checkIdentity asks PostgreSQL, inside the transaction that changes the
// publication, whether it would still accept UPDATE and DELETE on every
// table with a row filter or column list: the filter may only use, and the
// list must cover, the replica identity's columns. EXPLAIN runs the
// check without touching a row or firing a trigger. Refused, nothing of
// the change is kept. A role that may not DELETE cannot be asked.
func (s *Source) checkIdentity(ctx context.Context, tx pgx.Tx) error {
	for i, spec := range s.cfg.Tables {
		if spec.Where == "" && spec.Columns == nil {
			continue
		}
		if _, err := tx.Exec(ctx, "SAVEPOINT walship_identity"); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "EXPLAIN DELETE FROM "+quoteTable(spec.Table())+" WHERE false")
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "42P10" {
			key := "columns"
			if strings.Contains(pe.Detail, "WHERE") {
				key = "where"
			}
			return fatalf("source.postgres.tables[%d].%s: with it PostgreSQL would refuse UPDATE and DELETE on %s (%s %s): "+
				"a row filter may use only, and a column list must cover, the replica identity's columns; "+
				"or run ALTER TABLE %s REPLICA IDENTITY FULL (a filter may then use any column, a list must name them all)",
				i, key, spec.Name, pe.Message, pe.Detail, quoteTable(spec.Table()))
		}
		if _, err := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT walship_identity"); err != nil {
			return err
		}
	}
	return nil
}

// sameTables: the publication publishes exactly the configured tables
// (false when a table was added or dropped by hand).
func sameTables(published map[change.Table]bool, tables []TableSpec) bool {
	if len(published) != len(tables) {
		return false
	}
	for _, t := range tables {
		if !published[t.Table()] {
			return false
		}
	}
	return true
}

// noteAdded records the tables in after but not before.
func (s *Source) noteAdded(before, after map[change.Table]bool) error {
	for t := range after {
		if !before[t] {
			s.pubAdded = append(s.pubAdded, t)
		}
	}
	slices.SortFunc(s.pubAdded, func(a, b change.Table) int { return strings.Compare(a.String(), b.String()) })
	if len(s.pubAdded) > 0 && len(before) > 0 {
		names := mapSlice(s.pubAdded, change.Table.String)
		s.log.Warn("postgres source: tables added to the publication; their changes are captured from now on", "tables", names)
	}
	return nil
}

// addedToPublication returns the tables the publication gained at this
// session's start (sorted; all of them when it was just created): tables
// whose rows from before are in no snapshot already taken.
func (s *Source) addedToPublication() []change.Table { return s.pubAdded }

func mapSlice[T, U any](ts []T, f func(T) U) []U {
	us := make([]U, len(ts))
	for i, t := range ts {
		us[i] = f(t)
	}
	return us
}

// pubTable is how the publication publishes one table: its column list
// (nil: all) and row filter ("" none), as the catalog states them.
type pubTable struct {
	cols   []string
	filter string
}

// publishedTables lists the tables of the publication, in order, with
// their column lists and row filters (PostgreSQL 15+; before, none).
func (s *Source) publishedTables(ctx context.Context, q *pgx.Conn) ([]change.Table, map[change.Table]pubTable, error) {
	sql := "SELECT schemaname::text, tablename::text, NULL::text[], NULL::text FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1, 2"
	if s.serverVersion >= 150000 {
		sql = "SELECT schemaname::text, tablename::text, attnames::text[], rowfilter FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1, 2"
	}
	rows, err := q.Query(ctx, sql, s.cfg.Publication)
	if err != nil {
		return nil, nil, err
	}
	var tables []change.Table
	pt := map[change.Table]pubTable{}
	for rows.Next() {
		var t change.Table
		var cols []string
		var filter *string
		if err := rows.Scan(&t.Schema, &t.Name, &cols, &filter); err != nil {
			return nil, nil, err
		}
		tables = append(tables, t)
		p := pubTable{cols: cols}
		if filter != nil {
			p.filter = *filter
		}
		pt[t] = p
	}
	return tables, pt, rows.Err()
}
