package httpsource

import (
	"fmt"
	"strings"
	"testing"

	"github.com/walship/walship/wal"
)

// TestBackfillKeyCountsFromAppend: the idempotency window counts from when
// a request was appended, not from its commit_time: a keyed backfill of
// transactions committed years ago is still remembered, by the running
// writer and after a reopen, and its retry appends nothing.
func TestBackfillKeyCountsFromAppend(t *testing.T) {
	dir := t.TempDir()
	open := func() *wal.WAL {
		w, _, err := wal.Open(wal.Options{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	var sb strings.Builder
	for i := range 3 {
		fmt.Fprintf(&sb, `{"changes":[{"table":"t","op":"c","after":{"i":%d}}],"commit_time":"2020-01-0%dT00:00:00Z"}`+"\n", i, i+1)
	}
	body := sb.String()
	w := open()
	_, srv := keyedSource(t, w, Options{}) // a window of 24h
	code, _, first := postKey(t, srv.URL, "backfill-2020", body)
	if code != 200 {
		t.Fatalf("status %d: %s", code, first)
	}
	if code, replayed, again := postKey(t, srv.URL, "backfill-2020", body); code != 200 || replayed != "true" || again != first {
		t.Fatalf("retry: status %d, replayed %q: %s; want the original answer", code, replayed, again)
	}
	srv.Close()
	w.Close()

	w = open()
	defer w.Close()
	_, srv = keyedSource(t, w, Options{})
	if code, replayed, again := postKey(t, srv.URL, "backfill-2020", body); code != 200 || replayed != "true" || again != first {
		t.Fatalf("retry after reopen: status %d, replayed %q: %s; want the original answer", code, replayed, again)
	}
	if n := len(readAll(t, w)); n != 3 {
		t.Fatalf("log has %d transactions, want 3", n)
	}
}
