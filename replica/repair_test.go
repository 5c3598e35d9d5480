package replica

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/walship/walship/change"
)

func repairMsg(t *testing.T, m RepairMessage) change.Change {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return change.Change{Op: change.Message, Message: &change.LogicalMessage{Prefix: RepairPrefix, Content: b, Transactional: true}}
}

// keysOf returns the values of column col of table's dumped rows.
func keysOf(t *testing.T, d Tables, table string, cols ...string) string {
	t.Helper()
	var out []string
	for _, r := range d[table] {
		var m map[string]any
		if err := json.Unmarshal([]byte(r), &m); err != nil {
			t.Fatal(err)
		}
		var k []string
		for _, c := range cols {
			b, _ := json.Marshal(m[c])
			k = append(k, strings.Trim(string(b), `"`))
		}
		out = append(out, strings.Join(k, "/"))
	}
	return strings.Join(out, " ")
}

// TestRepairMessageDeletesRowsNotKept: a repair message deletes the rows
// of its range whose key is not in keep, before the chunk's rows, in the
// same transaction; rows outside the range stay. Text keys compare by
// bytes ("B" < "Z" < "a"), as in the checks.
func TestRepairMessageDeletesRowsNotKept(t *testing.T) {
	backends(t, func(t *testing.T, url string) {
		a := open(t, url, Options{})
		var first []change.Change
		for i := 1; i <= 10; i++ {
			first = append(first, ins("public.t", []string{"id"}, row("id", i, "v", "x")))
		}
		for _, k := range []struct {
			a string
			b int
		}{{"B", 1}, {"Z", 2}, {"a", 1}, {"c", 1}, {"c", 2}} {
			first = append(first, ins("public.kv", []string{"a", "b"}, row("a", k.a, "b", k.b, "v", "x")))
		}
		apply(t, a, txn(1, first...))
		apply(t, a, txn(2,
			repairMsg(t, RepairMessage{Table: "public.t", Key: []string{"id"}, After: []string{"3"}, Hi: []string{"7"}, Keep: [][]string{{"4"}, {"6"}, {"99"}}}),
			// A chunk row the message did not keep (not in the replica
			// before) is upserted after the deletion.
			ins("public.t", []string{"id"}, row("id", 5, "v", "new")),
		), txn(3,
			repairMsg(t, RepairMessage{Table: "public.kv", Key: []string{"a", "b"}, After: []string{"B", "1"}, Hi: []string{"c", "1"}, Keep: [][]string{{"a", "1"}}}),
		), txn(4,
			// Unbounded above: everything after 9 not kept goes.
			repairMsg(t, RepairMessage{Table: "public.t", Key: []string{"id"}, After: []string{"9"}}),
		))
		d := dump(t, url)
		if got, want := keysOf(t, d, "t", "id", "v"), "1/x 2/x 3/x 4/x 5/new 6/x 8/x 9/x"; got != want {
			t.Fatalf("t after repair: %s, want %s", got, want)
		}
		if got, want := keysOf(t, d, "kv", "a", "b"), "B/1 a/1 c/2"; got != want {
			t.Fatalf("kv after repair: %s, want %s", got, want)
		}
		if n := a.Stats().RepairDeleted; n != 5 {
			t.Fatalf("RepairDeleted = %d, want 5", n)
		}
	})
}
