package chaos

import (
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// s3Mode is what an s3Proxy does with requests.
type s3Mode int32

const (
	s3Pass     s3Mode = iota
	s3SlowDown        // every request answered 503 SlowDown, as S3 does under load
	s3Latency         // every request delayed by s3Delay before it is forwarded
)

const s3Delay = 700 * time.Millisecond

// put is one PUT that reached MinIO through a member's proxy: who sent it,
// when it arrived and when MinIO's answer went back. A PUT is a write to
// the archive only if MinIO answered 2xx.
type put struct {
	member     string
	path       string
	start, end time.Time
	status     int
}

// s3Proxy is one member's way to the archive: a reverse proxy to MinIO
// that injects faults and logs every PUT with its time, so the checks can
// tell which member wrote when (at most one writer per lineage at any
// moment; none outside its term). Requests keep their Host header, so the
// member's S3 signatures made for the proxy's address verify at MinIO.
type s3Proxy struct {
	member string
	addr   string // where it listens
	rp     *httputil.ReverseProxy
	mode   atomic.Int32
	srv    *http.Server
	mu     struct {
		sync.Mutex
		puts []put
	}
}

func newS3Proxy(t *testing.T, member, target string) *s3Proxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &s3Proxy{member: member, addr: l.Addr().String(), rp: httputil.NewSingleHostReverseProxy(u)}
	p.rp.Transport = &http.Transport{MaxIdleConnsPerHost: 16}
	p.srv = &http.Server{Handler: http.HandlerFunc(p.handle)}
	go func() { _ = p.srv.Serve(l) }()
	t.Cleanup(func() { p.srv.Close() })
	return p
}

func (p *s3Proxy) set(m s3Mode) { p.mode.Store(int32(m)) }

func (p *s3Proxy) handle(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	switch s3Mode(p.mode.Load()) {
	case s3SlowDown:
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>`))
		return
	case s3Latency:
		select {
		case <-time.After(s3Delay):
		case <-r.Context().Done():
			return
		}
	}
	if r.Method != http.MethodPut {
		p.rp.ServeHTTP(w, r)
		return
	}
	rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	p.rp.ServeHTTP(rec, r)
	p.mu.Lock()
	p.mu.puts = append(p.mu.puts, put{member: p.member, path: r.URL.Path, start: start, end: time.Now(), status: rec.status})
	p.mu.Unlock()
}

// puts returns a copy of the PUT log.
func (p *s3Proxy) puts() []put {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]put(nil), p.mu.puts...)
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}
