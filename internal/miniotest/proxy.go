package miniotest

import (
	"errors"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
)

// Mode is what a Proxy does with requests.
type Mode int32

const (
	// Pass forwards requests to the server.
	Pass Mode = iota
	// SlowDown answers every request with 503 and S3's SlowDown error.
	SlowDown
	// Down refuses connections: the listening socket is closed until the
	// mode changes (open connections are closed too).
	Down
)

// Proxy is a reverse proxy in front of an HTTP server whose failures
// tests switch on and off. Requests keep their Host header, so S3
// signatures made for the proxy's address verify at the server.
type Proxy struct {
	Endpoint string // http://127.0.0.1:port
	addr     string
	target   *url.URL
	rp       *httputil.ReverseProxy
	mode     atomic.Int32
	hits     atomic.Int64 // requests refused or failed by the proxy

	mu struct {
		sync.Mutex
		srv    *http.Server
		closed bool
	}
}

// NewProxy starts a proxy to the HTTP endpoint target (http://host:port).
func NewProxy(target string) (*Proxy, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "http" {
		return nil, errors.New("miniotest: proxy supports http targets only")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{addr: l.Addr().String(), target: u}
	p.Endpoint = "http://" + p.addr
	p.rp = httputil.NewSingleHostReverseProxy(u)
	p.rp.Transport = &http.Transport{MaxIdleConnsPerHost: 64}
	p.serve(l)
	return p, nil
}

func (p *Proxy) serve(l net.Listener) {
	srv := &http.Server{Handler: http.HandlerFunc(p.handle)}
	p.mu.srv = srv
	go func() { _ = srv.Serve(l) }()
}

func (p *Proxy) handle(w http.ResponseWriter, r *http.Request) {
	if Mode(p.mode.Load()) == SlowDown {
		p.hits.Add(1)
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>`))
		return
	}
	p.rp.ServeHTTP(w, r)
}

// Set switches the proxy's mode.
func (p *Proxy) Set(m Mode) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mu.closed {
		return errors.New("miniotest: proxy closed")
	}
	old := Mode(p.mode.Swap(int32(m)))
	switch {
	case m == Down && old != Down:
		p.hits.Add(1)
		return p.mu.srv.Close()
	case m != Down && old == Down:
		l, err := net.Listen("tcp", p.addr)
		if err != nil {
			return err
		}
		p.serve(l)
	}
	return nil
}

// Faults returns how many requests were answered 503 plus how many times
// the proxy went down.
func (p *Proxy) Faults() int64 { return p.hits.Load() }

// Close stops the proxy.
func (p *Proxy) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mu.closed {
		return nil
	}
	p.mu.closed = true
	return p.mu.srv.Close()
}
