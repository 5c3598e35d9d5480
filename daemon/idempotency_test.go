package daemon

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestIdempotencyAcrossRestart: a keyed request posted to `walship run`'s
// HTTP source is remembered in the log: retention keeps its segments though
// every sink has passed them, and after the daemon is stopped and started
// again on the same WAL a retry gets the original answer, marked as a
// replay, and appends nothing.
func TestIdempotencyAcrossRestart(t *testing.T) {
	cfg := testConfig(t, "")
	var sb strings.Builder
	pad := strings.Repeat("p", 1000)
	for i := range 3000 { // several 1 MiB segments
		fmt.Fprintf(&sb, `{"table":"public.t","op":"c","key":{"id":%d},"after":{"id":%d,"v":%q}}`+"\n", i, i, pad)
	}
	body := sb.String()
	post := func(r *running) (int, string, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, "http://"+r.d.Addr("source.http")+"/v1/append", strings.NewReader(body))
		req.Header.Set("Idempotency-Key", "nightly-import-42")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Idempotency-Replayed"), string(b)
	}

	r := start(t, cfg)
	code, replayed, first := post(r)
	if code != 200 || replayed != "" {
		t.Fatalf("first post: status %d, replayed %q: %.300s", code, replayed, first)
	}
	appendN(t, r.d.Addr("source.http"), 10_000, 2000) // later, unkeyed
	ctx := context.Background()
	r.d.sinkCkpts.Register("archive")
	if err := r.d.sinkCkpts.Set(ctx, "archive", r.d.wal.Durable(), nil); err != nil {
		t.Fatal(err)
	}
	if err := r.d.retention.once(); err != nil {
		t.Fatal(err)
	}
	if first := r.d.wal.FirstLSN(); first > 1 {
		t.Fatalf("retention removed the keyed request's segments (first LSN now %d)", first)
	}
	r.stop(t)

	r = start(t, cfg)
	defer r.stop(t)
	durable := r.d.wal.Durable()
	code, replayed, again := post(r)
	if code != 200 || replayed != "true" || again != first {
		t.Fatalf("retry after restart: status %d, replayed %q, same answer %v", code, replayed, again == first)
	}
	if r.d.wal.Durable() != durable {
		t.Fatalf("the retry appended LSNs %d..%d", durable+1, r.d.wal.Durable())
	}
}
