// Package httpx starts walship's HTTP listeners (the operator endpoint and
// the HTTP source) with these security rules (docs/OBSERVABILITY.md,
// "Listeners"):
//
//   - Loopback by default: an empty address is 127.0.0.1 with the
//     caller's default port.
//   - Any address that is not loopback (an IP other than 127.0.0.0/8 and
//     ::1, a host name other than "localhost", or an empty host meaning all
//     interfaces) requires a bearer token of at least MinTokenLen
//     characters; Listen refuses to start without one and says so.
//   - The token is compared in constant time (SHA-256 of both sides, then
//     subtle.ConstantTimeCompare, so neither content nor length leaks).
//   - TLS from PEM certificate and key files; a non-loopback listener
//     without TLS is allowed (e.g. behind a TLS-terminating proxy) but
//     logged as a warning because the token then crosses the network in
//     clear.
//   - Memory before authentication is bounded: request headers are at
//     most MaxHeaderBytes, and Options.MaxConns caps the connections open
//     at once (further ones wait in the kernel's accept queue).
//   - Paths listed in Config.Public (typically /healthz, so that load
//     balancers and orchestrators can probe without the token) are served
//     without authentication. Public paths must not reveal anything.
//
// When a token is configured it is required on every non-public path,
// loopback or not.
package httpx

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/walship/walship/internal/secret"
)

// MinTokenLen is the shortest bearer token accepted.
const MinTokenLen = 16

// MaxHeaderBytes bounds a request's header block (net/http's default is
// 1 MiB): every header walship needs, a bearer token and an
// Idempotency-Key among them, is short, and headers are held before the
// token is checked.
const MaxHeaderBytes = 64 << 10

// Options describes one listener.
type Options struct {
	// Addr is host:port. Empty means "127.0.0.1:" + DefaultPort.
	Addr string
	// DefaultPort is used when Addr is empty.
	DefaultPort string
	// Token is the bearer token; required when Addr is not loopback.
	Token secret.Secret
	// TLSCert and TLSKey are PEM files; both or neither.
	TLSCert, TLSKey string
	// Public lists exact paths served without the token (e.g. "/healthz").
	Public []string
	// MaxConns caps the connections open at once; 0 means no cap.
	MaxConns int
	// Name names the listener in errors and logs ("http", "source.http").
	Name string
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// IsLoopback reports whether addr's host is a loopback IP or "localhost".
// An empty host (all interfaces) is not loopback.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Check validates cfg without binding: the address form, TLS file pairs
// and the token rule. Errors name the listener and what to change.
func (cfg *Options) Check() error {
	name := cfg.Name
	if name == "" {
		name = "http"
	}
	addr := cfg.addr()
	if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
		return fmt.Errorf("%s.listen: %q is not host:port (for example 127.0.0.1:7071)", name, addr)
	}
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		return fmt.Errorf("%s: tls_cert and tls_key must be given together", name)
	}
	tok := cfg.Token.Reveal()
	if !IsLoopback(addr) && tok == "" {
		return fmt.Errorf("%s.listen: %s is not a loopback address, so a bearer token is required: set %s.token (for example \"${WALSHIP_TOKEN}\") or listen on 127.0.0.1", name, addr, name)
	}
	if tok != "" && len(tok) < MinTokenLen {
		return fmt.Errorf("%s.token: too short (%d characters), want at least %d (for example: openssl rand -hex 32)", name, len(tok), MinTokenLen)
	}
	return nil
}

func (cfg *Options) addr() string {
	if cfg.Addr != "" {
		return cfg.Addr
	}
	port := cfg.DefaultPort
	if port == "" {
		port = "0"
	}
	return net.JoinHostPort("127.0.0.1", port)
}

// Server is a running listener. Close or Shutdown stops it; both are
// idempotent.
type Server struct {
	srv    *http.Server
	ln     net.Listener
	scheme string
	done   chan struct{}
	err    error // set before done is closed
	once   sync.Once
}

// Listen checks cfg, binds the address (so "address in use" and TLS file
// errors surface here, not later) and serves h in a goroutine owned by
// the returned Server, wrapped by Auth when a token is set.
func Listen(cfg Options, h http.Handler) (*Server, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	name := cfg.Name
	if name == "" {
		name = "http"
	}
	addr := cfg.addr()
	var tlsCfg *tls.Config
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("%s: loading tls_cert %s / tls_key %s: %w", name, cfg.TLSCert, cfg.TLSKey, err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	if tok := cfg.Token.Reveal(); tok != "" {
		h = Auth(tok, cfg.Public, h)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: listen on %s: %w", name, addr, err)
	}
	if cfg.MaxConns > 0 {
		ln = &limitListener{Listener: ln, slots: make(chan struct{}, cfg.MaxConns)}
	}
	s := &Server{
		srv: &http.Server{
			Handler:           h,
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       2 * time.Minute,
			MaxHeaderBytes:    MaxHeaderBytes,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		},
		ln:     ln,
		scheme: "http",
		done:   make(chan struct{}),
	}
	if tlsCfg != nil {
		s.scheme = "https"
		s.ln = tls.NewListener(ln, tlsCfg)
	} else if !IsLoopback(addr) {
		log.Warn("listener is not loopback and has no TLS: the bearer token crosses the network in clear; set tls_cert/tls_key or terminate TLS in front", "listener", name, "addr", ln.Addr().String())
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.err = err
		}
	}()
	log.Info("listening", "listener", name, "url", s.URL())
	return s, nil
}

// Addr is the bound address (useful with port 0).
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// URL is the base URL, e.g. "http://127.0.0.1:7071".
func (s *Server) URL() string { return s.scheme + "://" + s.ln.Addr().String() }

// Done is closed when the server has stopped serving.
func (s *Server) Done() <-chan struct{} { return s.done }

// Shutdown stops accepting, waits for in-flight requests until ctx ends
// (then closes them) and returns the serve error, if serving failed.
func (s *Server) Shutdown(ctx context.Context) error {
	var err error
	s.once.Do(func() {
		if err = s.srv.Shutdown(ctx); err != nil {
			s.srv.Close()
		}
	})
	<-s.done
	if s.err != nil {
		return s.err
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return nil // forced close after the grace period is not a failure
	}
	return err
}

// Close stops the server immediately.
func (s *Server) Close() error {
	s.once.Do(func() { s.srv.Close() })
	<-s.done
	return s.err
}

// Auth requires "Authorization: Bearer <token>" on every path except the
// exact paths in public. A missing or wrong token gets 401 with a
// WWW-Authenticate challenge and no detail.
func Auth(token string, public []string, h http.Handler) http.Handler {
	want := sha256.Sum256([]byte(token))
	pub := make(map[string]bool, len(public))
	for _, p := range public {
		pub[p] = true
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if pub[r.URL.Path] {
			h.ServeHTTP(w, r)
			return
		}
		got, ok := bearerToken(r.Header.Get("Authorization"))
		sum := sha256.Sum256([]byte(got))
		if !ok || subtle.ConstantTimeCompare(sum[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="walship"`)
			http.Error(w, "unauthorized: send Authorization: Bearer <token>", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func bearerToken(h string) (string, bool) {
	const prefix = "bearer "
	if len(h) < len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		return "", false
	}
	return strings.TrimSpace(h[len(prefix):]), true
}

// limitListener accepts a connection only while fewer than cap(slots)
// are open; a slot is freed when the connection is closed.
type limitListener struct {
	net.Listener
	slots chan struct{}
}

func (l *limitListener) Accept() (net.Conn, error) {
	l.slots <- struct{}{}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.slots }}, nil
}

// limitConn frees its listener's slot once, on the first Close.
type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
