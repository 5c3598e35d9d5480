package status

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"
)

func sample() Snapshot {
	t0 := time.Date(2026, 11, 22, 6, 0, 0, 0, time.UTC)
	return Snapshot{
		Title: "walship run", Role: "primary", Host: "db1", Time: t0,
		Source: &Source{Kind: "postgres", Name: "walship", Position: "0/16B3748", LSN: 1000, SlotBytes: 4096, State: "ok"},
		WAL:    &WAL{Dir: "/var/lib/walship/wal", FirstLSN: 1, VisibleLSN: 1000, Segments: 3, SizeBytes: 3 << 20},
		Sinks: []Sink{
			{Name: "orders", Kind: "kafka", Target: "127.0.0.1:9092", LSN: 990, LagRecords: 10, Lag: Duration(12 * time.Millisecond), State: "ok"},
			{Name: "replica", Kind: "replica", Target: "postgres://walship:hunter2@replica/app", LSN: 900, State: "retrying",
				Error: "connect postgres://walship:hunter2@replica/app: refused"},
		},
		Archive: &Archive{URL: "s3://AKIAX:wJalrXUtnFEMI@minio/bucket", Oldest: t0.Add(-time.Hour), Newest: t0, Segments: 7,
			Snapshots: []SnapshotInfo{{LSN: 500, Time: t0.Add(-30 * time.Minute), Size: 1 << 20}}},
		Series:   []Series{{Component: "wal", Points: []Point{{T: t0, Rate: 100, ByteRate: 1e4}}}},
		Warnings: []Warning{{Level: "warning", Component: "sink/replica", Message: "retrying: token=s3cr3t", Since: t0}},
	}
}

func get(t *testing.T, url string) (int, http.Header, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func TestJSONAndRedaction(t *testing.T) {
	mux := http.NewServeMux()
	Register(mux, func(context.Context) (Snapshot, error) { return sample(), nil })
	srv := httptest.NewServer(mux)
	defer srv.Close()

	for _, path := range []string{"/status.json", "/status"} {
		code, _, body := get(t, srv.URL+path)
		if code != 200 {
			t.Fatalf("%s: %d %s", path, code, body)
		}
		for _, s := range []string{"hunter2", "wJalrXUtnFEMI", "s3cr3t"} {
			if strings.Contains(body, s) {
				t.Errorf("%s shows secret %q", path, s)
			}
		}
		if !strings.Contains(body, "walship:REDACTED@replica/app") {
			t.Errorf("%s: redacted DSN missing", path)
		}
	}
	_, hdr, body := get(t, srv.URL+"/status.json")
	if hdr.Get("Content-Type") != "application/json" {
		t.Errorf("content type %q", hdr.Get("Content-Type"))
	}
	var back map[string]any
	if err := json.Unmarshal([]byte(body), &back); err != nil {
		t.Fatalf("redacted JSON does not parse: %v\n%s", err, body)
	}
	sinks := back["sinks"].([]any)
	if k := sinks[0].(map[string]any); k["lsn"] != 990.0 || k["lag"] != 0.012 || k["lag_records"] != 10.0 {
		t.Errorf("kafka sink JSON %v", k)
	}
	if back["archive"].(map[string]any)["snapshots"].([]any)[0].(map[string]any)["lsn"] != 500.0 {
		t.Errorf("archive JSON %v", back["archive"])
	}
}

// TestPageSelfContained: the page references nothing outside itself.
func TestPageSelfContained(t *testing.T) {
	srv := httptest.NewServer(PageHandler(func(context.Context) (Snapshot, error) { return sample(), nil }))
	defer srv.Close()
	_, hdr, body := get(t, srv.URL)
	for _, re := range []string{`(?i)\bsrc\s*=`, `(?i)<link\b`, `(?i)@import`, `(?i)url\(`, `(?i)href\s*=\s*"http`, `(?i)fetch\(\s*"http`} {
		if m := regexp.MustCompile(re).FindString(body); m != "" {
			t.Errorf("page references an external asset: %q", m)
		}
	}
	if !strings.Contains(hdr.Get("Content-Security-Policy"), "default-src 'none'") {
		t.Errorf("CSP %q", hdr.Get("Content-Security-Policy"))
	}
	// The embedded data is valid JSON (not HTML-escaped by the template).
	m := regexp.MustCompile(`(?s)<script id="initial" type="application/json">(.*?)</script>`).FindStringSubmatch(body)
	if m == nil {
		t.Fatal("no embedded data")
	}
	var s map[string]any
	if err := json.Unmarshal([]byte(m[1]), &s); err != nil {
		t.Fatalf("embedded data: %v\n%.300s", err, m[1])
	}
}

func TestHostileStrings(t *testing.T) {
	snap := sample()
	snap.Sinks[0].Name = `</script><script>alert(1)</script>`
	srv := httptest.NewServer(PageHandler(func(context.Context) (Snapshot, error) { return snap, nil }))
	defer srv.Close()
	_, _, body := get(t, srv.URL)
	if strings.Contains(body, "<script>alert(1)") {
		t.Fatal("a snapshot string broke out of the embedded JSON")
	}
}

func TestRedactionKeepsJSONValid(t *testing.T) {
	snap := sample()
	snap.Warnings[0].Message = `bad password=x"y\ and token=a\"b`
	srv := httptest.NewServer(JSONHandler(func(context.Context) (Snapshot, error) { return snap, nil }))
	defer srv.Close()
	_, _, body := get(t, srv.URL)
	var s Snapshot
	if err := json.Unmarshal([]byte(body), &struct{ Warnings *[]Warning }{&s.Warnings}); err != nil {
		t.Fatalf("invalid JSON after redaction: %v\n%s", err, body)
	}
	if m := s.Warnings[0].Message; m != `bad password=REDACTED token=REDACTED` {
		t.Fatalf("message %q", m)
	}
}

func TestProviderError(t *testing.T) {
	srv := httptest.NewServer(JSONHandler(func(context.Context) (Snapshot, error) {
		return Snapshot{}, errors.New("catalog: s3://k:wJalrXUtnFEMI@minio/b: 503")
	}))
	defer srv.Close()
	code, _, body := get(t, srv.URL)
	if code != 500 || strings.Contains(body, "wJalrXUtnFEMI") || !strings.Contains(body, "503") {
		t.Fatalf("%d %q", code, body)
	}
}

// TestWALStateInJSON: the WAL's state and error reach status.json, and a
// WAL that is not ok gets a critical warning (it makes /readyz 503).
func TestWALStateInJSON(t *testing.T) {
	mux := http.NewServeMux()
	Register(mux, func(context.Context) (Snapshot, error) {
		return Snapshot{WAL: &WAL{Dir: "/w", State: "critical", Error: "wal.max_bytes exceeded: a sink is behind"}}, nil
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	_, _, body := get(t, srv.URL+"/status.json")
	var back struct {
		WAL      WAL
		Warnings []Warning
	}
	if err := json.Unmarshal([]byte(body), &back); err != nil {
		t.Fatal(err)
	}
	if back.WAL.State != "critical" || back.WAL.Error != "wal.max_bytes exceeded: a sink is behind" {
		t.Errorf("wal in status.json: %+v", back.WAL)
	}
	if len(back.Warnings) != 1 || back.Warnings[0].Component != "wal" || back.Warnings[0].Level != "critical" ||
		back.Warnings[0].Message != "not ready: wal.max_bytes exceeded: a sink is behind" {
		t.Errorf("warnings %+v, want one critical for the wal", back.Warnings)
	}
}
