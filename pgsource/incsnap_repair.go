package pgsource

// Repairs: incremental snapshots of a key range whose chunks also delete
// what the replica has in the range and the source has not (see
// docs/CHECKSUM.md, "Repair"). Each chunk transaction starts with a
// replica.RepairPrefix message naming the chunk's key range and the keys
// to keep: the keys the chunk's SELECT returned and the keys of the table
// that the stream changed between the chunk's watermarks. A key the source
// holds in the range at the high watermark is among them: either it
// existed at the SELECT (returned) or a transaction committed after the
// SELECT's snapshot put it there; that commit follows the low watermark in
// the stream (waitCommitting makes the SELECT see every transaction that
// committed before the low watermark), so it is among the changed keys.
// Rows changed after the high watermark come later in the stream and are
// applied after the chunk.

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/walship/walship/change"
	"github.com/walship/walship/replica"
)

// KeyRange is a repair's primary-key range: keys greater than After (nil:
// from the start) and at most Hi (nil: to the end), each key the text of
// its columns in key order; integers compare by value, text by bytes (as
// the consistency checks compare them).
type KeyRange struct {
	After []string `json:"after,omitempty"`
	Hi    []string `json:"hi,omitempty"`
}

// RequestRepair queues a repair of the rows of table ("schema.table")
// whose primary key is in (after, hi] (nil: unbounded): an incremental
// snapshot of that range (see RequestSnapshot for the checks and the
// queue) whose chunks also make replicas delete the rows of the range
// that the source does not have. The key columns must be integers, text,
// varchar or uuid (ErrBadRequest otherwise, or when a bound has the wrong
// number of values or values of the wrong type).
func (s *Source) RequestRepair(ctx context.Context, table string, after, hi []string) (SnapshotRequest, error) {
	t, err := change.ParseTable(table)
	if err != nil {
		return SnapshotRequest{}, fmt.Errorf("%w: table %q: %v", ErrBadRequest, table, err)
	}
	q, err := s.connect(ctx, false)
	if err != nil {
		return SnapshotRequest{}, fmt.Errorf("pgsource: repair of %s: %w", t, err)
	}
	defer q.Close(context.Background())
	if err := s.checkIncremental(ctx, q, t, ""); err != nil {
		return SnapshotRequest{}, err
	}
	rows, err := q.Query(ctx, `SELECT a.attname, ty.typname FROM pg_index i
		JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
		JOIN pg_type ty ON ty.oid = a.atttypid
		WHERE i.indrelid = $1::text::regclass AND i.indisprimary
		ORDER BY array_position(i.indkey::int2[], a.attnum)`, quoteTable(t))
	if err != nil {
		return SnapshotRequest{}, fmt.Errorf("pgsource: repair of %s: key columns: %w", t, err)
	}
	var names, types []string
	for rows.Next() {
		var n, ty string
		if err := rows.Scan(&n, &ty); err != nil {
			rows.Close()
			return SnapshotRequest{}, fmt.Errorf("pgsource: repair of %s: key columns: %w", t, err)
		}
		names, types = append(names, n), append(types, ty)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return SnapshotRequest{}, fmt.Errorf("pgsource: repair of %s: key columns: %w", t, err)
	}
	for i, ty := range types {
		if !replica.KeySupported(ty) {
			return SnapshotRequest{}, fmt.Errorf("%w: repair of %s: key column %s has type %s (integers, text, varchar and uuid keys only)", ErrBadRequest, t, names[i], ty)
		}
	}
	for _, b := range []struct {
		name string
		key  []string
	}{{"after", after}, {"hi", hi}} {
		if b.key == nil {
			continue
		}
		if len(b.key) != len(names) {
			return SnapshotRequest{}, fmt.Errorf("%w: repair of %s: %s has %d values, the key (%v) %d columns", ErrBadRequest, t, b.name, len(b.key), names, len(names))
		}
		for i, v := range b.key {
			if _, err := q.Exec(ctx, "SELECT $1::text::"+pgx.Identifier{types[i]}.Sanitize(), v); err != nil {
				return SnapshotRequest{}, fmt.Errorf("%w: repair of %s: %s value %q for key column %s: %v", ErrBadRequest, t, b.name, v, names[i], err)
			}
		}
	}
	return s.queueSnapshot(t.String(), "", &KeyRange{After: after, Hi: hi}), nil
}

// collatable reports whether a key column compares under a collation (a
// repair compares it COLLATE "C": by bytes).
func collatable(ti *typeInfo) bool {
	switch ti.name {
	case "text", "varchar", "bpchar", "name":
		return true
	}
	return false
}

// repairWindow is a repair chunk's range and the keys to keep.
type repairWindow struct {
	keyCols []string // the table's key columns, in key order
	// Set by the worker before the high watermark (under inc.mu):
	after, hi []string
	// Streamer only: keys changed inside the window.
	changed [][]string
}

func newRepairWindow(rel *relation) *repairWindow {
	w := &repairWindow{}
	for _, k := range rel.key {
		w.keyCols = append(w.keyCols, rel.cols[k].name)
	}
	return w
}

// observe records the key of row (a streamed change's key or new image)
// if it has every key column.
func (w *repairWindow) observe(row change.Row) {
	if k, ok := keyTexts(row, w.keyCols); ok {
		w.changed = append(w.changed, k)
	}
}

// message is the chunk's RepairPrefix message; rows are the rows the
// chunk's SELECT returned.
func (w *repairWindow) message(t change.Table, rows []change.Change) change.Change {
	m := replica.RepairMessage{Table: t.String(), Key: w.keyCols, After: w.after, Hi: w.hi, Keep: [][]string{}}
	for _, c := range rows {
		if k, ok := keyTexts(c.After, w.keyCols); ok {
			m.Keep = append(m.Keep, k)
		}
	}
	m.Keep = append(m.Keep, w.changed...)
	b, _ := json.Marshal(m)
	return change.Change{Op: change.Message, Message: &change.LogicalMessage{Prefix: replica.RepairPrefix, Content: b, Transactional: true}}
}

// keyTexts renders the values of cols in row as the source's text of them
// (integers in decimal, text as is).
func keyTexts(row change.Row, cols []string) ([]string, bool) {
	if row == nil {
		return nil, false
	}
	out := make([]string, len(cols))
	for i, c := range cols {
		v, ok := row.Get(c)
		if !ok || v.IsNull() {
			return nil, false
		}
		if s, ok := v.Text(); ok {
			out[i] = s
		} else if n, ok := v.Int(); ok {
			out[i] = strconv.FormatInt(n, 10)
		} else if _, s, ok := v.Unknown(); ok {
			out[i] = s
		} else {
			out[i] = v.String()
		}
	}
	return out, true
}
