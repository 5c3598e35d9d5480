package httpsource

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/walship/walship/change"
	"github.com/walship/walship/wal"
)

// fullLine returns a transaction line whose record is as large as limit
// allows without an idempotency mark, so that the mark takes it over.
func fullLine(t *testing.T, limit int) string {
	t.Helper()
	for n := limit; n > 0; n-- {
		line := fmt.Sprintf(`{"table":"t","op":"c","after":{"v":"%s"}}`, strings.Repeat("x", n))
		txn, err := change.ParseTxnLine([]byte(line))
		if err != nil {
			t.Fatal(err)
		}
		if change.RecordSize(&txn.Header, &txn.Changes[0]) <= limit {
			return line + "\n"
		}
	}
	t.Fatal("no line fits")
	return ""
}

// TestMarkTooLargeNamesLine: a keyed request whose first transaction
// appended is pushed over the record limit only by the idempotency mark
// gets 400 naming that transaction's line (after a blank line; and, when a
// crash cut an earlier attempt short, the line the retry starts at), and
// nothing is appended.
func TestMarkTooLargeNamesLine(t *testing.T) {
	const limit = 4 << 10
	dir := t.TempDir()
	w, _, err := wal.Open(wal.Options{Dir: dir, MaxRecordBytes: limit})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	full := fullLine(t, limit)
	lineOf := func(out string) int {
		var e struct{ Line int }
		json.Unmarshal([]byte(out), &e)
		return e.Line
	}
	_, srv := keyedSource(t, w, Options{})
	code, _, out := postKey(t, srv.URL, "blank-first", "\n"+full)
	if code != 400 || lineOf(out) != 2 || !strings.Contains(out, "line 2: changes[0]") || !strings.Contains(out, "idempotency mark") {
		t.Fatalf("status %d: %s; want 400 naming line 2, changes[0] and the mark", code, out)
	}

	// A cut attempt appended the first transaction (line 1) of three; the
	// retry starts at the second, on line 3.
	body := lines(1, 1) + "\n" + full + lines(1, 2)
	b := w.NewBatch()
	_, txn, err := change.NewDecoder(strings.NewReader(body)).Next()
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Add(&txn); err != nil {
		t.Fatal(err)
	}
	if err := b.SetMark(&change.IdempotencyMark{Key: "cut", Hash: sha256.Sum256([]byte(body)), Count: 3}); err != nil {
		t.Fatal(err)
	}
	if err := w.AppendBatchAsync(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	if err := w.Wait(context.Background(), b.Last()); err != nil {
		t.Fatal(err)
	}
	_, srv = keyedSource(t, w, Options{}) // the keys read back
	code, _, out = postKey(t, srv.URL, "cut", body)
	if code != 400 || lineOf(out) != 3 || !strings.Contains(out, "line 3: changes[0]") {
		t.Fatalf("retry of the cut request: status %d: %s; want 400 naming line 3", code, out)
	}
	if n := len(readAll(t, w)); n != 1 {
		t.Fatalf("log has %d transactions, want the cut attempt's 1", n)
	}
}
