package httpsource

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/walship/walship/change"
	"github.com/walship/walship/wal"
)

func openWAL(t *testing.T) *wal.WAL {
	t.Helper()
	w, _, err := wal.Open(wal.Options{Dir: t.TempDir(), SegmentSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

type ack struct {
	LSN        uint64 `json:"lsn"`
	CommitTime string `json:"commit_time"`
}

func post(t *testing.T, url, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(url+"/v1/append", "application/x-ndjson", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func readAll(t *testing.T, w *wal.WAL) []change.Committed {
	t.Helper()
	r, err := w.NewReader(w.FirstLSN(), false)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var out []change.Committed
	for {
		txn, err := r.Next(context.Background())
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, *txn)
	}
}

func TestAppendAcksAfterDurability(t *testing.T) {
	w := openWAL(t)
	s := New(w, Options{})
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()

	body := `{"table":"public.t","op":"c","key":{"id":1},"after":{"id":1,"v":"x"}}
{"changes":[{"table":"public.t","op":"u","key":{"id":1},"after":{"id":1,"v":"y"}},{"table":"public.u","op":"d","key":{"k":"a"}}],"xid":42}
`
	code, out := post(t, srv.URL, body)
	if code != 200 {
		t.Fatalf("status %d: %s", code, out)
	}
	var acks []ack
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var a ack
		if err := json.Unmarshal(sc.Bytes(), &a); err != nil {
			t.Fatalf("ack line %q: %v", sc.Text(), err)
		}
		acks = append(acks, a)
	}
	if len(acks) != 2 || acks[0].LSN != 1 || acks[1].LSN != 3 {
		t.Fatalf("acks = %+v, want LSNs 1 and 3", acks)
	}
	if w.Durable() < 3 {
		t.Fatalf("acknowledged LSN 3 but durable is %d", w.Durable())
	}
	txns := readAll(t, w)
	if len(txns) != 2 || txns[1].Header.XID != 42 || len(txns[1].Changes) != 2 || txns[1].CommitLSN != 3 {
		t.Fatalf("log = %+v", txns)
	}
	if st := s.Stats(); st.Txns != 2 || st.Changes != 3 || st.Requests != 1 {
		t.Fatalf("stats = %+v", st)
	}
}

// TestBadRequestWritesNothing: a bad line anywhere rejects the whole
// request, names the line and path, and appends nothing.
func TestBadRequestWritesNothing(t *testing.T) {
	w := openWAL(t)
	s := New(w, Options{MaxBody: 4096})
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()

	good := `{"table":"public.t","op":"c","after":{"id":1}}` + "\n"
	cases := []struct {
		body     string
		code     int
		wantLine int
		want     string
	}{
		{good + `{"table":"public.t","op":"c","after":{"id":{"$type":"bytes","value":"!!"}}}` + "\n", 400, 2, "after.id"},
		{good + good + `{"table":"public.t","op":"x","after":{}}` + "\n", 400, 3, "op"},
		{good + "{not json\n", 400, 2, "line 2"},
		{`{"table":"public.t","op":"u","after":{"id":1}}` + "\n", 400, 1, "line 1"},
		{"", 400, 0, "empty body"},
		{strings.Repeat(good, 200), 413, 0, "source.http.max_body"},
	}
	for i, tc := range cases {
		code, out := post(t, srv.URL, tc.body)
		if code != tc.code {
			t.Errorf("case %d: status %d, want %d: %s", i, code, tc.code, out)
			continue
		}
		var eb errorBody
		if err := json.Unmarshal([]byte(out), &eb); err != nil {
			t.Errorf("case %d: error body %q: %v", i, out, err)
			continue
		}
		if eb.Line != tc.wantLine || !strings.Contains(eb.Error, tc.want) {
			t.Errorf("case %d: error %+v, want line %d mentioning %q", i, eb, tc.wantLine, tc.want)
		}
	}
	if n := len(readAll(t, w)); n != 0 {
		t.Fatalf("%d transactions written by rejected requests", n)
	}
	resp, err := http.Get(srv.URL + "/v1/append")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET: status %d", resp.StatusCode)
	}
}

// TestConcurrentClients: many clients at once; every acknowledged LSN is
// durable, each transaction appears once, in request order.
func TestConcurrentClients(t *testing.T) {
	w := openWAL(t)
	srv := httptest.NewServer(New(w, Options{}).Handler())
	defer srv.Close()
	const clients, per = 16, 20
	var wg sync.WaitGroup
	errs := make(chan error, clients*per)
	for c := range clients {
		wg.Go(func() {
			for i := range per {
				body := fmt.Sprintf(`{"table":"public.t","op":"c","key":{"id":%d},"after":{"id":%d}}`+"\n", c*1000+i, c*1000+i)
				resp, err := http.Post(srv.URL+"/v1/append", "application/x-ndjson", strings.NewReader(body+body))
				if err != nil {
					errs <- err
					return
				}
				var a1, a2 ack
				dec := json.NewDecoder(resp.Body)
				if err := dec.Decode(&a1); err != nil {
					errs <- err
				} else if err := dec.Decode(&a2); err != nil {
					errs <- err
				} else if a2.LSN <= a1.LSN {
					errs <- fmt.Errorf("request's transactions out of order: %d then %d", a1.LSN, a2.LSN)
				} else if w.Durable() < a2.LSN {
					errs <- fmt.Errorf("acked %d, durable %d", a2.LSN, w.Durable())
				}
				resp.Body.Close()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := len(readAll(t, w)); n != clients*per*2 {
		t.Fatalf("log has %d transactions, want %d", n, clients*per*2)
	}
}

func TestClosedWALIs503(t *testing.T) {
	w := openWAL(t)
	srv := httptest.NewServer(New(w, Options{}).Handler())
	defer srv.Close()
	w.Close()
	code, out := post(t, srv.URL, `{"table":"public.t","op":"c","after":{"id":1}}`+"\n")
	if code != http.StatusServiceUnavailable || !strings.Contains(out, "append failed") {
		t.Fatalf("status %d: %s", code, out)
	}
}

// TestFarFutureCommitTimeIs400: a request with a commit_time beyond
// wal.max_commit_time_skew gets 400 naming the line, the field and the
// bound's key, and nothing of it is appended (not even its valid first
// line); a later request gets a current commit time, not the outlier's.
func TestFarFutureCommitTimeIs400(t *testing.T) {
	w := openWAL(t)
	srv := httptest.NewServer(New(w, Options{}).Handler())
	defer srv.Close()

	good := `{"table":"public.t","op":"c","after":{"id":1}}` + "\n"
	far := `{"commit_time":"2099-01-01T00:00:00Z","changes":[{"table":"public.t","op":"c","after":{"id":2}}]}` + "\n"
	code, out := post(t, srv.URL, good+far)
	if code != http.StatusBadRequest {
		t.Fatalf("status %d, want 400: %s", code, out)
	}
	var eb errorBody
	if err := json.Unmarshal([]byte(out), &eb); err != nil {
		t.Fatalf("error body %q: %v", out, err)
	}
	for _, s := range []string{"line 2", "commit_time", "2099-01-01T00:00:00Z", "5m0s", "wal.max_commit_time_skew"} {
		if !strings.Contains(eb.Error, s) {
			t.Errorf("error %q does not name %q", eb.Error, s)
		}
	}
	if eb.Line != 2 {
		t.Errorf("error line %d, want 2", eb.Line)
	}
	if n := len(readAll(t, w)); n != 0 {
		t.Fatalf("%d transactions written by the refused request", n)
	}

	before := time.Now()
	code, out = post(t, srv.URL, good)
	if code != http.StatusOK {
		t.Fatalf("status %d: %s", code, out)
	}
	var a ack
	if err := json.Unmarshal([]byte(out), &a); err != nil {
		t.Fatalf("ack %q: %v", out, err)
	}
	ct, err := time.Parse(time.RFC3339Nano, a.CommitTime)
	if err != nil {
		t.Fatal(err)
	}
	if ct.Before(before) || ct.After(time.Now()) {
		t.Fatalf("later commit time %v, want the current time (%v..now)", ct, before)
	}
}
