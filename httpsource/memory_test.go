package httpsource

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/walship/walship/wal"
)

// waitFor waits until cond holds; the deadline only catches a hang.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// onlyReader hides a reader's length, so the client sends it chunked.
type onlyReader struct{ io.Reader }

// TestInflightBoundIs429: while a request holds the in-flight budget
// (source.http.max_inflight_bytes), a request whose Content-Length does
// not fit gets 429 with Retry-After before its body is read, a chunked
// body gets 429 as soon as its bytes read do not fit, a small chunked body
// still fits; nothing of a refused request is appended, and each succeeds
// on retry once the budget is free.
func TestInflightBoundIs429(t *testing.T) {
	w := openWAL(t)
	s := New(w, Options{MaxBody: 48 << 10, MaxInflight: 64 << 10})
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()

	bodyA := lines(600, 1) // about 40 KiB
	pr, pw := io.Pipe()
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
	if _, err := pw.Write([]byte(bodyA[:100])); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first request to reserve its body", func() bool { return s.Stats().InflightBytes == int64(len(bodyA)) })

	do := func(body string, chunked bool) (int, string) {
		var r io.Reader = strings.NewReader(body)
		if chunked {
			r = onlyReader{r}
		}
		resp, err := http.Post(srv.URL+"/v1/append", "application/x-ndjson", r)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, resp.Header.Get("Retry-After")
	}
	bodyB := lines(400, 1000) // about 27 KiB: does not fit beside A
	if code, ra := do(bodyB, false); code != http.StatusTooManyRequests || ra == "" {
		t.Fatalf("declared body over the bound: status %d, Retry-After %q; want 429 with Retry-After", code, ra)
	}
	if code, ra := do(bodyB, true); code != http.StatusTooManyRequests || ra == "" {
		t.Fatalf("chunked body over the bound: status %d, Retry-After %q; want 429 with Retry-After", code, ra)
	}
	if code, _ := do(lines(1, 5000), true); code != 200 {
		t.Fatalf("small chunked body beside the first request: status %d", code)
	}
	if n := len(readAll(t, w)); n != 1 {
		t.Fatalf("log has %d transactions, want only the small request's", n)
	}

	if _, err := io.WriteString(pw, bodyA[100:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if code := <-doneA; code != 200 {
		t.Fatalf("first request: status %d", code)
	}
	waitFor(t, "the budget to be free", func() bool { return s.Stats().InflightBytes == 0 })
	if code, _ := do(bodyB, false); code != 200 {
		t.Fatalf("retry of the declared body: status %d", code)
	}
	if code, _ := do(lines(400, 2000), true); code != 200 {
		t.Fatalf("retry of a chunked body: status %d", code)
	}
	if n := len(readAll(t, w)); n != 1+600+400+400 {
		t.Fatalf("log has %d transactions, want %d", n, 1+600+400+400)
	}
	if st := s.Stats(); st.RejectedLoad != 2 {
		t.Fatalf("stats = %+v, want 2 rejected for load", st)
	}
}

// TestPeakHeapBounded: several clients post maximum-size bodies at once,
// retrying on 429: bodies of tiny transactions, of wide lines (one change
// of a thousand columns each) and of lines of thousands of changes, each
// decoded many times its size, and single lines as large as a body whose
// decoded form can never fit (413). The heap's peak, sampled throughout,
// stays under a bound derived from the configuration
// (source.http.max_inflight_bytes, the WAL's queue) plus a fixed base, and
// every accepted transaction is appended exactly once.
func TestPeakHeapBounded(t *testing.T) {
	maxBody := 4 << 20
	if raceEnabled {
		maxBody = 1 << 20 // the race detector slows each append tenfold
	}
	maxInflight, maxPending := 2*maxBody, maxBody
	w, _, err := wal.Open(wal.Options{Dir: t.TempDir(), Sync: wal.SyncOff, MaxPendingBytes: maxPending})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	s := New(w, Options{MaxBody: int64(maxBody), MaxInflight: int64(maxInflight)})
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()

	// fill repeats line(i) (i from 0) as often as it fits a maximum body.
	fill := func(line func(i int) string) (string, int) {
		var sb strings.Builder
		n := 0
		for {
			l := line(n)
			if sb.Len()+len(l) > maxBody {
				return sb.String(), n
			}
			sb.WriteString(l)
			n++
		}
	}
	type post struct {
		body   string
		txns   int // appended if accepted
		status int
	}
	var posts []post
	total := 0
	for c := range 4 {
		body, n := fill(func(i int) string {
			return fmt.Sprintf(`{"table":"t","op":"c","after":{"i":%d}}`+"\n", c*10_000_000+i)
		})
		posts = append(posts, post{body, n, 200})
		total += n
	}
	for c := range 2 {
		body, n := fill(func(i int) string { return wideLine(1000, c*10_000_000+i) })
		posts = append(posts, post{body, n, 200})
		total += n
		body, n = fill(func(int) string { return manyChangesLine(2000) })
		posts = append(posts, post{body, n, 200})
		total += n
	}
	posts = append(posts,
		post{wideLine(maxBody/12, 1), 0, http.StatusRequestEntityTooLarge},
		post{manyChangesLine(maxBody/23 - 10), 0, http.StatusRequestEntityTooLarge})
	for _, p := range posts {
		if len(p.body) > maxBody {
			t.Fatalf("test body of %d bytes over the maximum", len(p.body))
		}
	}

	// Keep garbage small, so that the heap measures what is held.
	defer debug.SetGCPercent(debug.SetGCPercent(10))
	runtime.GC()
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	heap := func() uint64 { metrics.Read(sample); return sample[0].Value.Uint64() }
	base := heap()
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			if h := heap(); h > peak.Load() {
				peak.Store(h)
			}
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Microsecond):
			}
		}
	}()

	var wg sync.WaitGroup
	var throttled atomic.Int64
	errs := make(chan error, len(posts))
	for c, p := range posts {
		wg.Go(func() {
			for attempt := 0; ; attempt++ {
				resp, err := http.Post(srv.URL+"/v1/append", "application/x-ndjson", strings.NewReader(p.body))
				if err != nil {
					errs <- err
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				switch {
				case resp.StatusCode == p.status:
					return
				case resp.StatusCode == http.StatusTooManyRequests && attempt < 100_000:
					throttled.Add(1)
					time.Sleep(time.Millisecond) // back off, as Retry-After asks
				default:
					errs <- fmt.Errorf("client %d: status %d, want %d", c, resp.StatusCode, p.status)
					return
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	<-sampled
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	// The requests hold their encoded records (at most about their body's
	// size, twice while a buffer grows) and bookkeeping; the WAL's queue
	// holds its copy; the clients' bodies are in base already.
	bound := uint64(3*maxInflight + 2*maxPending + 2*maxBody + 16<<20)
	grew := peak.Load() - min(base, peak.Load())
	t.Logf("heap peak %d MiB above a base of %d MiB (bound %d MiB); %d requests throttled",
		grew>>20, base>>20, bound>>20, throttled.Load())
	if grew > bound {
		t.Fatalf("heap grew by %d MiB, over the bound of %d MiB", grew>>20, bound>>20)
	}
	if n := len(readAll(t, w)); n != total {
		t.Fatalf("log has %d transactions, want %d", n, total)
	}
}
