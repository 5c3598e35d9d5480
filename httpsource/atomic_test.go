package httpsource

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/walship/walship/change"
	"github.com/walship/walship/vfs"
	"github.com/walship/walship/wal"
)

// postKey posts body with an Idempotency-Key (none if key is "") and
// returns the status, the Idempotency-Replayed header and the body.
func postKey(t *testing.T, url, key, body string) (int, string, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url+"/v1/append", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Idempotency-Replayed"), string(b)
}

// keyedSource serves a source with idempotency keys loaded from w.
func keyedSource(t *testing.T, w *wal.WAL, opts Options) (*Source, *httptest.Server) {
	t.Helper()
	keys, err := w.LoadKeys(context.Background(), 24*3600e9)
	if err != nil {
		t.Fatal(err)
	}
	opts.Keys = keys
	s := New(w, opts)
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return s, srv
}

func lines(n, from int) string {
	var sb strings.Builder
	for i := range n {
		fmt.Fprintf(&sb, `{"table":"public.t","op":"c","key":{"id":%d},"after":{"id":%d}}`+"\n", from+i, from+i)
	}
	return sb.String()
}

// TestRecordTooLargeOnceEncodedIs400: a line that passes validation but
// whose change exceeds the log's record limit once encoded rejects the
// whole request with 400 naming the line, and nothing of it (not even its
// valid first line) is appended.
func TestRecordTooLargeOnceEncodedIs400(t *testing.T) {
	// A record limit below the line limit, so that a valid line can
	// exceed it: numeric literals take a byte more each once encoded.
	w, _, err := wal.Open(wal.Options{Dir: t.TempDir(), MaxRecordBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	srv := httptest.NewServer(New(w, Options{}).Handler())
	defer srv.Close()
	big := `{"table":"public.t","op":"c","after":{"v":[` + strings.Repeat("1.5,", 15000) + `1.5]}}` + "\n"
	if len(big) > 64<<10 {
		t.Fatalf("the line is %d bytes, over the record limit already", len(big))
	}
	code, out := post(t, srv.URL, lines(1, 1)+big)
	if code != http.StatusBadRequest {
		t.Fatalf("status %d, want 400: %.300s", code, out)
	}
	var eb errorBody
	if err := json.Unmarshal([]byte(out), &eb); err != nil {
		t.Fatalf("error body %.300q: %v", out, err)
	}
	if eb.Line != 2 || !strings.Contains(eb.Error, "line 2") || !strings.Contains(eb.Error, "record limit") {
		t.Errorf("error %+v, want line 2 and the record limit named", eb)
	}
	if n := len(readAll(t, w)); n != 0 {
		t.Fatalf("%d transactions written by the refused request", n)
	}
}

// TestIdempotentRetry: a retry with the same key and body gets the
// original answer with Idempotency-Replayed and appends nothing; the same
// key with another body gets 422 and appends nothing; a request without a
// key, or with another key, appends as usual.
func TestIdempotentRetry(t *testing.T) {
	w := openWAL(t)
	s, srv := keyedSource(t, w, Options{})
	body := lines(3, 1)
	code, replayed, first := postKey(t, srv.URL, "order-17", body)
	if code != 200 || replayed != "" {
		t.Fatalf("first: status %d, replayed %q: %s", code, replayed, first)
	}
	code, replayed, again := postKey(t, srv.URL, "order-17", body)
	if code != 200 || replayed != "true" || again != first {
		t.Fatalf("retry: status %d, replayed %q, body %q; want 200, true, %q", code, replayed, again, first)
	}
	code, _, out := postKey(t, srv.URL, "order-17", lines(3, 100))
	if code != http.StatusUnprocessableEntity || !strings.Contains(out, "different body") {
		t.Fatalf("other body: status %d: %s", code, out)
	}
	if n := len(readAll(t, w)); n != 3 {
		t.Fatalf("log has %d transactions, want 3", n)
	}
	if code, _, out := postKey(t, srv.URL, "order-18", body); code != 200 || out == first {
		t.Fatalf("another key: status %d: %s", code, out)
	}
	if code, _, _ := postKey(t, srv.URL, "bad key", body); code != http.StatusBadRequest {
		t.Fatalf("a key with a space: status %d, want 400", code)
	}
	if n := len(readAll(t, w)); n != 6 {
		t.Fatalf("log has %d transactions, want 6", n)
	}
	txns := readAll(t, w)
	if m := txns[0].Header.Idempotency; m == nil || m.Key != "order-17" || m.Count != 3 || m.Hash != sha256.Sum256([]byte(body)) {
		t.Fatalf("first transaction's mark = %+v", m)
	}
	if st := s.Stats(); st.Replayed != 1 {
		t.Fatalf("stats = %+v, want 1 replayed", st)
	}
}

// TestConcurrentDuplicatesAppendOnce: the same keyed request sent many
// times at once is appended once; every answer is the same.
func TestConcurrentDuplicatesAppendOnce(t *testing.T) {
	w := openWAL(t)
	_, srv := keyedSource(t, w, Options{})
	body := lines(50, 1)
	const n = 12
	outs := make([]string, n)
	codes := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { codes[i], _, outs[i] = postKey(t, srv.URL, "dup", body) })
	}
	wg.Wait()
	for i := range n {
		if codes[i] != 200 || outs[i] != outs[0] {
			t.Fatalf("request %d: status %d, body %.200q; want 200, %.200q", i, codes[i], outs[i], outs[0])
		}
	}
	if got := len(readAll(t, w)); got != 50 {
		t.Fatalf("log has %d transactions, want 50", got)
	}
}

// TestIdempotencySurvivesReopen: the key is remembered in the log, so a
// retry after the WAL is closed and reopened (a daemon restart) gets the
// original answer and appends nothing.
func TestIdempotencySurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	open := func() *wal.WAL {
		w, _, err := wal.Open(wal.Options{Dir: dir, SegmentSize: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	w := open()
	_, srv := keyedSource(t, w, Options{})
	body := lines(2000, 1) // several segments
	code, _, first := postKey(t, srv.URL, "k-restart", body)
	if code != 200 {
		t.Fatalf("status %d: %s", code, first)
	}
	if code, _, _ := postKey(t, srv.URL, "", lines(5, 5000)); code != 200 {
		t.Fatalf("unkeyed request: status %d", code)
	}
	srv.Close()
	w.Close()

	w = open()
	defer w.Close()
	_, srv = keyedSource(t, w, Options{})
	code, replayed, again := postKey(t, srv.URL, "k-restart", body)
	if code != 200 || replayed != "true" || again != first {
		t.Fatalf("retry after reopen: status %d, replayed %q, same answer %v", code, replayed, again == first)
	}
	if code, _, _ := postKey(t, srv.URL, "k-restart", lines(2, 1)); code != http.StatusUnprocessableEntity {
		t.Fatalf("other body after reopen: status %d, want 422", code)
	}
	if n := len(readAll(t, w)); n != 2005 {
		t.Fatalf("log has %d transactions, want 2005", n)
	}
}

// TestIdempotencyResumesCutRequest: an earlier attempt that a crash cut
// short left the first transactions of a keyed request in the log; the
// retry appends only the rest and answers with every LSN, the first ones
// the original's.
func TestIdempotencyResumesCutRequest(t *testing.T) {
	dir := t.TempDir()
	w, _, err := wal.Open(wal.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	body := lines(4, 1)
	// What the cut attempt left: its first two transactions, marked as the
	// start of a request of four.
	b := w.NewBatch()
	dec := change.NewDecoder(strings.NewReader(body))
	for range 2 {
		_, txn, err := dec.Next()
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Add(&txn); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.SetMark(&change.IdempotencyMark{Key: "cut", Hash: sha256.Sum256([]byte(body)), Count: 4}); err != nil {
		t.Fatal(err)
	}
	if err := w.AppendBatchAsync(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	w, _, err = wal.Open(wal.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	_, srv := keyedSource(t, w, Options{})
	// Appended after the restart, before the retry: not the request's.
	if code, _, out := postKey(t, srv.URL, "", lines(1, 100)); code != 200 {
		t.Fatalf("unkeyed request: status %d: %s", code, out)
	}
	_, srv = keyedSource(t, w, Options{}) // the keys read back again
	code, replayed, out := postKey(t, srv.URL, "cut", body)
	if code != 200 || replayed != "" {
		t.Fatalf("status %d, replayed %q: %s", code, replayed, out)
	}
	want := ""
	txns := readAll(t, w)
	for i, tx := range txns {
		if i == 2 {
			continue // the unkeyed request's
		}
		want += fmt.Sprintf(`{"lsn":%d,"commit_time":"%s"}`+"\n", tx.CommitLSN, tx.CommitTime.Format("2006-01-02T15:04:05.999999999Z07:00"))
	}
	if len(txns) != 5 || out != want {
		t.Fatalf("answer %q, want the request's four transactions, the first two the cut attempt's: %q", out, want)
	}
	if code, replayed, again := postKey(t, srv.URL, "cut", body); code != 200 || replayed != "true" || again != out {
		t.Fatalf("retry: status %d, replayed %q: %s", code, replayed, again)
	}
}

// TestFsyncFailureListsDurableLSNs: a server fault after the request was
// queued (a failed fsync) is 503 whose answer lists exactly which of the
// request's LSNs are durable: here none, since the fsync covering them
// failed; the first request, acknowledged before, stays durable.
func TestFsyncFailureListsDurableLSNs(t *testing.T) {
	fsys := vfs.NewCrashFS()
	w, _, err := wal.Open(wal.Options{Dir: "/wal", FS: fsys})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	srv := httptest.NewServer(New(w, Options{}).Handler())
	defer srv.Close()
	if code, out := post(t, srv.URL, lines(2, 1)); code != 200 {
		t.Fatalf("first request: status %d: %s", code, out)
	}
	fsys.InjectSyncError("", errors.New("injected EIO"))
	code, out := post(t, srv.URL, lines(3, 10))
	if code != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503: %s", code, out)
	}
	var eb errorBody
	if err := json.Unmarshal([]byte(out), &eb); err != nil {
		t.Fatalf("error body %q: %v", out, err)
	}
	if eb.DurableLSNs == nil || len(*eb.DurableLSNs) != 0 || !strings.Contains(eb.Error, "0 of this request's 3 transaction(s) are durable") {
		t.Fatalf("answer %+v, want durable_lsns [] and the count named", eb)
	}
	if !strings.Contains(out, `"durable_lsns":[]`) {
		t.Fatalf("answer %s does not list durable_lsns", out)
	}
	if w.Durable() != 2 {
		t.Fatalf("durable LSN %d, want 2", w.Durable())
	}
}
