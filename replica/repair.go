package replica

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/walship/walship/change"
)

// RepairPrefix is the prefix of the transactional logical message that
// opens each chunk transaction of a repair (an incremental snapshot of a
// key range, see docs/CHECKSUM.md, "Repair"). An incremental snapshot
// only upserts; the message tells the applier which rows of the chunk's
// range the source does not have, so the chunk also removes them.
const RepairPrefix = "walship.repair"

// RepairMessage is the JSON content of a RepairPrefix message. The
// applier deletes, in the chunk's own DB transaction and before the
// chunk's rows, every row of Table whose key lies in the range (greater
// than After, nil: no lower bound; at most Hi, nil: no upper bound; keys
// compared as the checks compare them, see ChecksumMessage) and is not in
// Keep. Keep holds the keys the chunk's SELECT returned and the keys of
// the table that the stream changed between the chunk's watermarks: every
// key in the range that the source holds at the chunk's place in the
// stream is among them.
type RepairMessage struct {
	Table string     `json:"table"`
	Key   []string   `json:"key"` // key column names, in key order
	After []string   `json:"after,omitempty"`
	Hi    []string   `json:"hi,omitempty"`
	Keep  [][]string `json:"keep"`
}

// ParseRepairMessage decodes the content of a RepairPrefix message.
func ParseRepairMessage(content []byte) (RepairMessage, error) {
	var m RepairMessage
	if err := json.Unmarshal(content, &m); err != nil {
		return m, fmt.Errorf("repair message: %w", err)
	}
	if m.Table == "" || len(m.Key) == 0 {
		return m, errors.New("repair message: table and key are required")
	}
	for _, k := range [][]string{m.After, m.Hi} {
		if k != nil && len(k) != len(m.Key) {
			return m, fmt.Errorf("repair message of %s: a bound has %d values for %d key columns", m.Table, len(k), len(m.Key))
		}
	}
	return m, nil
}

// repairKeys lists the keys of a replica table in a key range, as the
// source renders them (integers in decimal, text as is).
type repairKeys interface {
	rangeKeys(ctx context.Context, d *dialect, ts *tableSchema, m ChecksumMessage) ([][]string, error)
}

// repair applies a RepairPrefix message: it deletes the rows of the
// message's range that are not in its keep list.
func (w *batch) repair(ctx context.Context, c *change.Change) error {
	m, err := ParseRepairMessage(c.Message.Content)
	if err != nil {
		return err // the chunk cannot be applied as the source meant it
	}
	src, err := change.ParseTable(m.Table)
	if err != nil {
		return fmt.Errorf("repair message: table %q: %w", m.Table, err)
	}
	ts, err := w.table(ctx, src)
	if err != nil || ts == nil {
		return err // no table: nothing to delete
	}
	for _, k := range m.Key {
		if ts.index(k) < 0 {
			return fmt.Errorf("repair of %s: the replica table has no key column %q", m.Table, k)
		}
	}
	rk, ok := w.tx.(repairKeys)
	if !ok {
		return nil
	}
	keys, err := rk.rangeKeys(ctx, w.a.d, ts, ChecksumMessage{Key: m.Key, After: m.After, Hi: m.Hi})
	if err != nil {
		return fmt.Errorf("repair of %s: read the keys of the range: %w", m.Table, err)
	}
	keep := make(map[string]struct{}, len(m.Keep))
	for _, k := range m.Keep {
		keep[strings.Join(k, "\x00")] = struct{}{}
	}
	for _, k := range keys {
		if _, ok := keep[strings.Join(k, "\x00")]; ok {
			continue
		}
		where := make(change.Row, len(m.Key))
		for i, name := range m.Key {
			where[i] = change.Column{Name: name, Value: change.TextValue(k[i])}
			if ts.cols[ts.index(name)].typ.class == classInt {
				if n, err := strconv.ParseInt(k[i], 10, 64); err == nil {
					where[i].Value = change.IntValue(n)
				}
			}
		}
		if err := w.tx.delete(ctx, ts, where); err != nil {
			return fmt.Errorf("repair of %s: delete key %v: %w", m.Table, k, err)
		}
		w.stats.RepairDeleted++
	}
	return nil
}

func (t *pgTxn) rangeKeys(ctx context.Context, d *dialect, ts *tableSchema, m ChecksumMessage) ([][]string, error) {
	if err := t.flush(ctx); err != nil {
		return nil, err
	}
	q, args := selectRange(d, ts, m, m.Key, func(k string) string {
		e := "t." + d.ident(k) // qualified: see SourceChunk
		if i := ts.index(k); i >= 0 && ts.cols[i].typ.collatable() {
			e += ` COLLATE "C"`
		}
		return e
	}, func(n, i int) string { return "$" + strconv.Itoa(n) + "::text::" + pgColType(ts, m.Key[i]) },
		func(s string, _ int) any { return s },
		func(c string) string { return "t." + d.ident(c) + "::text" })
	rows, err := t.tx.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out [][]string
	for rows.Next() {
		k := make([]string, len(m.Key))
		ptrs := make([]any, len(k))
		for i := range k {
			ptrs[i] = &k[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

func (t *sqliteTxn) rangeKeys(ctx context.Context, d *dialect, ts *tableSchema, m ChecksumMessage) ([][]string, error) {
	q, args := selectRange(d, ts, m, m.Key, d.ident, func(n, _ int) string { return "?" }, func(s string, i int) any {
		if j := ts.index(m.Key[i]); j >= 0 && ts.cols[j].typ.class == classInt {
			if v, err := strconv.ParseInt(s, 10, 64); err == nil {
				return v
			}
		}
		return s
	}, d.ident)
	rows, err := t.tx.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out [][]string
	vals := make([]any, len(m.Key))
	ptrs := make([]any, len(vals))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		k := make([]string, len(vals))
		for i, v := range vals {
			switch x := v.(type) {
			case int64:
				k[i] = strconv.FormatInt(x, 10)
			case string:
				k[i] = x
			case []byte:
				k[i] = string(x)
			default:
				k[i] = fmt.Sprint(x)
			}
		}
		out = append(out, k)
	}
	return out, rows.Err()
}
