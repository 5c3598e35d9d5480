package pgsource

import (
	"container/list"

	"github.com/walship/walship/change"
)

// toastMin is the smallest value the cache keeps: Postgres moves a value
// out of line (and then sends unchanged ones as 'u') only when a row
// exceeds about 2 kB, so smaller values are never asked for.
const toastMin = 1024

// toastCache remembers the last seen large values of rows, by table, key
// and column, to fill in unchanged TOAST values of later updates without a
// query. It is bounded in bytes (least recently used rows go first) and
// owned by the goroutine that streams.
type toastCache struct {
	max, size int64
	ll        *list.List // of *toastRow, front = most recent
	m         map[string]*list.Element
}

type toastRow struct {
	key  string // table \x00 key text
	cols map[string]change.Value
	size int64
}

func newToastCache(max int64) *toastCache {
	return &toastCache{max: max, ll: list.New(), m: map[string]*list.Element{}}
}

func (c *toastCache) get(key, col string) (change.Value, bool) {
	if e, ok := c.m[key]; ok {
		c.ll.MoveToFront(e)
		v, ok := e.Value.(*toastRow).cols[col]
		return v, ok
	}
	return change.Value{}, false
}

// put records the large values of a row image (replacing what the row had).
// key is called only if the row has a large value.
func (c *toastCache) put(keyFn func() string, row change.Row) {
	if c.max <= 0 {
		return
	}
	var tr *toastRow
	var key string
	for _, col := range row {
		sz := valueSize(col.Value)
		if sz < toastMin {
			continue
		}
		if tr == nil {
			key = keyFn()
			tr = &toastRow{key: key, cols: map[string]change.Value{}}
		}
		tr.cols[col.Name] = col.Value
		tr.size += sz + int64(len(col.Name))
	}
	if tr == nil {
		return
	}
	c.remove(key)
	if tr.size > c.max {
		return
	}
	c.m[key] = c.ll.PushFront(tr)
	c.size += tr.size
	for c.size > c.max {
		e := c.ll.Back()
		c.remove(e.Value.(*toastRow).key)
	}
}

func (c *toastCache) remove(key string) {
	if e, ok := c.m[key]; ok {
		c.size -= e.Value.(*toastRow).size
		c.ll.Remove(e)
		delete(c.m, key)
	}
}

// dropTable forgets every row of a table (truncate).
func (c *toastCache) dropTable(prefix string) {
	for e := c.ll.Front(); e != nil; {
		next := e.Next()
		if k := e.Value.(*toastRow).key; len(k) > len(prefix) && k[:len(prefix)] == prefix {
			c.remove(k)
		}
		e = next
	}
}
