package daemon

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestMaxCommitTimeSkewReachesTheLog: wal.max_commit_time_skew is the
// bound the HTTP source enforces: a commit time inside it (beyond the
// default) is accepted, one beyond it gets 400 naming the key.
func TestMaxCommitTimeSkewReachesTheLog(t *testing.T) {
	cfg := testConfig(t, "") // its wal section is fixed: the key is set as parsing would
	cfg.WAL.MaxCommitTimeSkew = time.Hour
	r := start(t, cfg)
	defer r.stop(t)
	post := func(ct time.Time) (int, string) {
		t.Helper()
		body := `{"commit_time":"` + ct.UTC().Format(time.RFC3339) + `","changes":[{"table":"public.t","op":"c","after":{"id":1}}]}` + "\n"
		resp, err := http.Post("http://"+r.d.Addr("source.http")+"/v1/append", "application/x-ndjson", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, out := post(time.Now().Add(30 * time.Minute)); code != http.StatusOK {
		t.Fatalf("commit time 30m ahead with a 1h bound: %d %s", code, out)
	}
	if code, out := post(time.Now().Add(2 * time.Hour)); code != http.StatusBadRequest || !strings.Contains(out, "wal.max_commit_time_skew") || !strings.Contains(out, "1h0m0s") {
		t.Fatalf("commit time 2h ahead with a 1h bound: %d %s, want 400 naming the key and the bound", code, out)
	}
}
