package pgsource

import (
	"context"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/walship/walship/change"
)

// keylessPlan is how a table without a primary key is copied: by ranges of
// heap pages (`ctid >= '(p,0)' AND ctid < '(q,0)'`, a TID range scan from
// PostgreSQL 14 on), each range one chunk, its progress the next page.
//
// Within one snapshot a row's ctid does not change, so the ranges cover
// every row exactly once. A resumed copy reads a fresh snapshot: it keeps
// only rows whose inserting transaction the slot's exported snapshot shows
// (xsnap), since later ones come with the stream. It goes on from the
// recorded page only after a stop, which records every chunk appended, and
// while the table's storage is the same (VACUUM FULL, CLUSTER, TRUNCATE
// give a new filenode, so new ctids). Otherwise (after a crash, chunks
// beyond the recorded page may be in the log) it starts again from page 0
// behind a truncate of the table, which drops the rows of the earlier
// chunks from the replicas: rows copied twice would be duplicates.
type keylessPlan struct {
	whole    bool   // copied whole in one chunk (no TID range scan)
	pages    int64  // heap pages when the copy started
	perChunk int64  // pages per chunk
	node     uint32 // filenode
	restart  bool   // earlier chunks are void: truncate first
	// visible is the condition keeping rows of the exported snapshot; ""
	// when not needed (or not known: a snapshot begun by an older version).
	visible string
}

// planKeyless returns how table t (without a key) is copied from prog on:
// whole in one chunk for a partitioned table or PostgreSQL before 14. It
// resets prog to the table's start when the copy restarts.
func (s *Source) planKeyless(ctx context.Context, q *pgx.Conn, t change.Table, prog *tableProgress) (*keylessPlan, error) {
	var (
		version         int
		kind            string
		pages, relpages int64
		reltuples       float64
		node            uint32
		xmax            string
	)
	err := q.QueryRow(ctx, `SELECT current_setting('server_version_num')::int, c.relkind::text,
		pg_relation_size(c.oid) / current_setting('block_size')::bigint, c.relpages::bigint, c.reltuples::float8,
		coalesce(pg_relation_filenode(c.oid), 0)::text::bigint, pg_snapshot_xmax(pg_current_snapshot())::text
		FROM pg_class c WHERE c.oid = $1::text::regclass`, quoteTable(t)).
		Scan(&version, &kind, &pages, &relpages, &reltuples, &node, &xmax)
	if err != nil {
		return nil, err
	}
	p := &keylessPlan{pages: pages, node: node, whole: version < 140000 || kind != "r"}
	// Pages per chunk from the statistics' rows per page; without
	// statistics a guess of 50 rows a page. A denser chunk is spilled.
	perPage := 50.0
	if relpages > 0 && reltuples > 0 {
		perPage = max(reltuples/float64(relpages), 1)
	}
	p.perChunk = max(int64(float64(s.cfg.SnapshotChunkRows)/perPage), 1)
	ss := s.state.Snapshot
	if ss.resumed && (!ss.exact || !p.whole && prog.Page > 0 && prog.FileNode != node) {
		if prog.Page > 0 {
			s.log.Warn("postgres source: the copy of a table without a key was interrupted by a crash or its table rewritten: copying it again from its start",
				"table", t.String())
		}
		*prog = tableProgress{}
		p.restart = true
	}
	if ss.resumed && ss.XSnap != "" {
		// The 64-bit id of xmin, from the current snapshot's xmax (every
		// visible row's xmin is within 2^31 before it, frozen rows aside).
		full := "(" + xmax + " - ((" + xmax + " - xmin::text::bigint) % 4294967296 + 4294967296) % 4294967296)"
		p.visible = "pg_visible_in_snapshot(" + full + "::text::xid8, " + sqlLiteral(ss.XSnap) + "::pg_snapshot)"
	}
	return p, nil
}

// where returns the WHERE clause of the range of pages from `from`; the
// last range has no end (pages added since are empty in this snapshot).
func (p *keylessPlan) where(from int64, last bool) string {
	w := " WHERE ctid >= '(" + strconv.FormatInt(from, 10) + ",0)'::tid"
	if !last {
		w += " AND ctid < '(" + strconv.FormatInt(from+p.perChunk, 10) + ",0)'::tid"
	}
	if p.visible != "" {
		w += " AND " + p.visible
	}
	return w
}
