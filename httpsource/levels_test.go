package httpsource

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/walship/walship/wal"
)

func postLevel(t *testing.T, url, level string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url+"/v1/append", strings.NewReader(`{"table":"public.t","op":"c","key":{"id":1},"after":{"id":1}}`+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if level != "" {
		req.Header.Set(SyncHeader, level)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestSyncHeader: the Walship-Sync header sets a request's level in either
// direction; an unknown level, or one this source cannot reach (shipped
// with no sink counted), is 400 naming the header, with nothing appended;
// a shipped wait past SyncTimeout is 504 listing the durable LSNs, and a
// shipped request is answered once the counted sink reports its LSN.
func TestSyncHeader(t *testing.T) {
	w := openWAL(t)
	srv := httptest.NewServer(New(w, Options{}).Handler())
	defer srv.Close()
	for _, lv := range []string{"always", "Local", "remote_apply"} {
		resp, body := postLevel(t, srv.URL, lv)
		if resp.StatusCode != 400 || !strings.Contains(body, SyncHeader+": ") {
			t.Errorf("%s: %s: %d %q, want 400 naming the header", SyncHeader, lv, resp.StatusCode, body)
		}
	}
	resp, body := postLevel(t, srv.URL, "shipped")
	if resp.StatusCode != 400 || !strings.Contains(body, SyncHeader) || !strings.Contains(body, "none is configured") {
		t.Errorf("shipped without sinks: %d %q, want 400", resp.StatusCode, body)
	}
	resp, body = postLevel(t, srv.URL, "applied")
	if resp.StatusCode != 400 || !strings.Contains(body, SyncHeader) || !strings.Contains(body, "none is configured") {
		t.Errorf("applied without a quorum: %d %q, want 400", resp.StatusCode, body)
	}
	if w.Durable() != 0 {
		t.Fatalf("refused requests appended up to LSN %d", w.Durable())
	}
	for _, lv := range []string{"off", "local"} {
		resp, body := postLevel(t, srv.URL, lv)
		if resp.StatusCode != 200 || resp.Header.Get(SyncHeader) != lv {
			t.Errorf("%s: %d %q (%s %q)", lv, resp.StatusCode, body, SyncHeader, resp.Header.Get(SyncHeader))
		}
	}
	// No header: the log's level, local.
	if resp, body := postLevel(t, srv.URL, ""); resp.StatusCode != 200 || resp.Header.Get(SyncHeader) != "local" {
		t.Errorf("no header: %d %q (%s %q)", resp.StatusCode, body, SyncHeader, resp.Header.Get(SyncHeader))
	}

	levels, err := wal.NewLevels(w, wal.LevelShipped, []string{"kafka"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	shipped := httptest.NewServer(New(w, Options{Levels: levels, SyncTimeout: 200 * time.Millisecond}).Handler())
	defer shipped.Close()
	resp, body = postLevel(t, shipped.URL, "")
	var e errorBody
	if resp.StatusCode != http.StatusGatewayTimeout || json.Unmarshal([]byte(body), &e) != nil ||
		e.DurableLSNs == nil || len(*e.DurableLSNs) != 1 || (*e.DurableLSNs)[0] != w.Durable() || e.Level != "shipped" || e.LevelLSN == nil || *e.LevelLSN != 0 {
		t.Fatalf("shipped with the sink silent: %d %q, want 504 with durable_lsns [%d]", resp.StatusCode, body, w.Durable())
	}
	// A lowered request is answered; a shipped one once the sink reports.
	if resp, body := postLevel(t, shipped.URL, "local"); resp.StatusCode != 200 {
		t.Fatalf("local on a shipped source: %d %q", resp.StatusCode, body)
	}
	next := w.Durable() + 1
	go func() {
		for w.Durable() < next {
			if err := w.Wait(context.Background(), next); err != nil {
				return
			}
		}
		levels.Report("kafka", next)
	}()
	slow := httptest.NewServer(New(w, Options{Levels: levels, SyncTimeout: time.Minute}).Handler())
	defer slow.Close()
	if resp, body := postLevel(t, slow.URL, ""); resp.StatusCode != 200 || resp.Header.Get(SyncHeader) != "shipped" || !strings.HasPrefix(body, `{"lsn":`) {
		t.Fatalf("shipped once the sink reports: %d %q", resp.StatusCode, body)
	}
}
