package pgsource

import (
	"testing"
	"time"

	"github.com/walship/walship/change"
	"github.com/walship/walship/internal/pgtest"
)

// TestToastCacheKeysOfIndexAndPrimaryKey: a table under REPLICA IDENTITY
// USING INDEX that also has a primary key:
// the snapshot caches TOAST values by the primary key's text, the stream
// looks them up by the index's text. Row id=7 has code=5, row id=5 has big
// 'A...'; an update of row 7 that leaves its big unchanged must keep 'B...'.
func TestToastCacheKeysOfIndexAndPrimaryKey(t *testing.T) {
	e := newEnv(t, pgtest.WithoutFsync())
	e.exec(`CREATE TABLE tt (id int PRIMARY KEY, code int NOT NULL UNIQUE, n int, big text)`,
		`ALTER TABLE tt ALTER big SET STORAGE EXTERNAL`,
		`ALTER TABLE tt REPLICA IDENTITY USING INDEX tt_code_key`,
		`INSERT INTO tt VALUES (5, 50, 0, repeat('A', 5000)), (7, 5, 0, repeat('B', 5000))`)
	r := e.run(testConfig(e.dsn))
	e.waitSlot("walship")
	e.exec(`UPDATE tt SET n = 1 WHERE id = 7`)
	e.catchUp(r, 60*time.Second)
	r.stop()
	found := false
	for _, txn := range readLog(t, e.w) {
		for _, c := range txn.Changes {
			if c.Op != change.Update || c.Table.Name != "tt" {
				continue
			}
			found = true
			v, _ := c.After.Get("big")
			s, _ := v.Text()
			if len(s) < 1 || s[len(s)-1] != 'B' {
				t.Errorf("update of id=7: big ends %q, want ...B (key %v)", s[max(0, len(s)-3):], c.Key)
			}
		}
	}
	if !found {
		t.Fatal("no update")
	}
}
