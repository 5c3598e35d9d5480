package httpsource

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// wideLine is one transaction of one change with cols columns, about 10
// bytes of input each.
func wideLine(cols, id int) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, `{"table":"t","op":"c","after":{"id":%d`, id)
	for i := range cols {
		fmt.Fprintf(&sb, `,"c%d":0`, i)
	}
	sb.WriteString("}}\n")
	return sb.String()
}

// manyChangesLine is one transaction of n truncate changes, 23 bytes of
// input each.
func manyChangesLine(n int) string {
	return `{"changes":[` + strings.Repeat(`{"table":"t","op":"t"},`, n-1) + `{"table":"t","op":"t"}]}` + "\n"
}

// TestWideLineChargedToInflight: the decoded form of a line, many times
// its size, counts against source.http.max_inflight_bytes as it is
// decoded: a line whose decoded form cannot fit even alone gets 413 naming
// the line and the key, one that does not fit beside another request gets
// 429 with Retry-After and fits on retry; nothing of a refused request is
// appended and its budget is returned.
func TestWideLineChargedToInflight(t *testing.T) {
	w := openWAL(t)
	s := New(w, Options{MaxBody: 768 << 10, MaxInflight: 1 << 20})
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()

	errLine := func(body string) (int, string) {
		var e struct {
			Error string `json:"error"`
			Line  int    `json:"line"`
		}
		json.Unmarshal([]byte(body), &e)
		return e.Line, e.Error
	}
	for _, tc := range []struct {
		name, body string
		line       int
	}{
		{"wide line", wideLine(20_000, 1), 1},
		{"wide second line", lines(1, 1) + wideLine(20_000, 2), 2},
		{"many changes", manyChangesLine(20_000), 1},
	} {
		code, body := post(t, srv.URL, tc.body)
		line, msg := errLine(body)
		if code != http.StatusRequestEntityTooLarge || line != tc.line || !strings.Contains(msg, fmt.Sprintf("line %d", tc.line)) || !strings.Contains(msg, "source.http.max_inflight_bytes") {
			t.Fatalf("%s (%d bytes): status %d, %s; want 413 naming line %d and source.http.max_inflight_bytes", tc.name, len(tc.body), code, body, tc.line)
		}
		if got := s.Stats().InflightBytes; got != 0 {
			t.Fatalf("%s: %d bytes still reserved after the refusal", tc.name, got)
		}
	}

	// A holds most of the budget with a declared body it has not sent.
	bodyA := lines(10_000, 100) // about 650 KiB
	pr, pw := io.Pipe()
	defer pw.Close() // lets srv.Close end if the test fails early
	reqA, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/append", pr)
	reqA.ContentLength = int64(len(bodyA))
	doneA := make(chan int, 1)
	go func() {
		resp, err := http.DefaultClient.Do(reqA)
		if err != nil {
			doneA <- -1
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		doneA <- resp.StatusCode
	}()
	waitFor(t, "the first request to reserve its body", func() bool { return s.Stats().InflightBytes == int64(len(bodyA)) })

	wide := wideLine(2500, 2) // 25 KiB, decoded more than is left
	resp, err := http.Post(srv.URL+"/v1/append", "application/x-ndjson", strings.NewReader(wide))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("wide line beside a held budget: status %d, Retry-After %q, %s; want 429", resp.StatusCode, resp.Header.Get("Retry-After"), b)
	}
	if n := len(readAll(t, w)); n != 0 {
		t.Fatalf("log has %d changes after refusals, want 0", n)
	}
	if _, err := io.WriteString(pw, bodyA); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if code := <-doneA; code != 200 {
		t.Fatalf("first request: status %d", code)
	}
	waitFor(t, "the budget to be free", func() bool { return s.Stats().InflightBytes == 0 })
	if code, body := post(t, srv.URL, wide); code != 200 {
		t.Fatalf("retry of the wide line: status %d, %s", code, body)
	}
	if n := len(readAll(t, w)); n != 10_000+1 {
		t.Fatalf("log has %d changes, want %d", n, 10_000+1)
	}
}
