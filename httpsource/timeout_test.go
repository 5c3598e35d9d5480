package httpsource

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestStalledBodyReleasesBudget: a client that declares a body and stops
// sending it holds its share of source.http.max_inflight_bytes only until
// source.http.read_timeout passes without a body byte: it then gets 408,
// nothing of it is appended, and the budget is free for later requests. A
// slow client whose bytes keep arriving is not cut off, though it takes
// longer than the timeout in all.
func TestStalledBodyReleasesBudget(t *testing.T) {
	w := openWAL(t)
	s := New(w, Options{MaxBody: 64 << 10, MaxInflight: 64 << 10, ReadTimeout: time.Second})
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()

	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := lines(10, 1)
	fmt.Fprintf(conn, "POST /v1/append HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", 60<<10, body[:50])
	waitFor(t, "the stalled request to reserve its body", func() bool { return s.Stats().InflightBytes == 60<<10 })

	// Released by the deadline alone: the socket stays open.
	waitFor(t, "the stalled request's budget to be released", func() bool { return s.Stats().InflightBytes == 0 })
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(msg), "source.http.read_timeout") {
		t.Fatalf("stalled request: status %d, %s; want 408 naming source.http.read_timeout", resp.StatusCode, msg)
	}
	if code, b := post(t, srv.URL, lines(10, 100)); code != 200 {
		t.Fatalf("request after the stall: status %d, %s", code, b)
	}

	// A slow body: no gap as long as the timeout, more than it in all.
	s2 := New(w, Options{MaxBody: 64 << 10, ReadTimeout: 5 * time.Second})
	srv2 := httptest.NewServer(s2.Handler())
	defer srv2.Close()
	slow := lines(5, 200)
	pr, pw := io.Pipe()
	go func() {
		per := len(slow) / 5
		for i := range 5 {
			if i > 0 {
				time.Sleep(1500 * time.Millisecond) // well inside the timeout; 6 s in all
			}
			end := (i + 1) * per
			if i == 4 {
				end = len(slow)
			}
			if _, err := io.WriteString(pw, slow[i*per:end]); err != nil {
				return
			}
		}
		pw.Close()
	}()
	req, _ := http.NewRequest(http.MethodPost, srv2.URL+"/v1/append", pr)
	req.ContentLength = int64(len(slow))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("slow body: status %d, %s", resp.StatusCode, b)
	}
	if n := len(readAll(t, w)); n != 10+5 {
		t.Fatalf("log has %d transactions, want 15", n)
	}
}
