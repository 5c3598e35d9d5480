package httpx

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const token = "0123456789abcdef-test-token"

func TestNonLoopbackNeedsToken(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:7071", ":7071", "10.1.2.3:7071", "[::]:7071", "db.example.com:7071"} {
		_, err := Listen(Options{Addr: addr, Name: "http"}, http.NotFoundHandler())
		if err == nil || !strings.Contains(err.Error(), "bearer token is required") || !strings.Contains(err.Error(), "http.token") {
			t.Errorf("Listen(%s) without token: err = %v", addr, err)
		}
		c := Options{Addr: addr, Token: token}
		if err := c.Check(); err != nil {
			t.Errorf("Check(%s) with token: %v", addr, err)
		}
	}
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0", "localhost:0", "127.0.0.2:0"} {
		c := Options{Addr: addr}
		if err := c.Check(); err != nil {
			t.Errorf("loopback %s: %v", addr, err)
		}
	}
	c := Options{Addr: "0.0.0.0:1", Token: "short"}
	if err := c.Check(); err == nil || !strings.Contains(err.Error(), "too short") {
		t.Errorf("short token: %v", err)
	}
	c = Options{Addr: "nonsense"}
	if err := c.Check(); err == nil || !strings.Contains(err.Error(), "not host:port") {
		t.Errorf("bad addr: %v", err)
	}
	c = Options{Addr: "127.0.0.1:0", TLSCert: "x.pem"}
	if err := c.Check(); err == nil || !strings.Contains(err.Error(), "together") {
		t.Errorf("half TLS: %v", err)
	}
}

func TestDefaultIsLoopback(t *testing.T) {
	s, err := Listen(Options{}, http.NotFoundHandler())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if ip := s.Addr().(*net.TCPAddr).IP; !ip.IsLoopback() {
		t.Fatalf("default bound %v", ip)
	}
}

func get(t *testing.T, c *http.Client, url, tok string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if tok != "" {
		req.Header.Set("Authorization", tok)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "metrics") })
	return mux
}

func TestTokenRequired(t *testing.T) {
	var logs bytes.Buffer
	s, err := Listen(Options{Addr: "127.0.0.1:0", Token: token, Public: []string{"/healthz"}, Logger: slog.New(slog.NewTextHandler(&logs, nil))}, handler())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := http.DefaultClient
	tests := []struct {
		path, auth string
		want       int
	}{
		{"/metrics", "", 401},
		{"/metrics", "Bearer wrong", 401},
		{"/metrics", "Bearer " + token[:len(token)-1], 401},
		{"/metrics", "Basic " + token, 401},
		{"/metrics", "Bearer " + token, 200},
		{"/metrics", "bearer " + token, 200},
		{"/healthz", "", 200},
		{"/healthz/", "", 401}, // only exact public paths
	}
	for _, tt := range tests {
		if code, _ := get(t, c, s.URL()+tt.path, tt.auth); code != tt.want {
			t.Errorf("GET %s %q: %d, want %d", tt.path, tt.auth, code, tt.want)
		}
	}
	if strings.Contains(logs.String(), token) {
		t.Fatalf("token in logs: %s", logs.String())
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil { // idempotent
		t.Fatal(err)
	}
}

func TestTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := selfSigned(t, dir)
	s, err := Listen(Options{Addr: "127.0.0.1:0", Token: token, TLSCert: certFile, TLSKey: keyFile}, handler())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !strings.HasPrefix(s.URL(), "https://") {
		t.Fatalf("URL %s", s.URL())
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 5 * time.Second}
	if code, body := get(t, c, s.URL()+"/metrics", "Bearer "+token); code != 200 || body != "metrics" {
		t.Fatalf("TLS GET: %d %q", code, body)
	}
	if _, err := Listen(Options{Addr: "127.0.0.1:0", TLSCert: certFile, TLSKey: filepath.Join(dir, "missing.pem")}, handler()); err == nil || !strings.Contains(err.Error(), "missing.pem") {
		t.Fatalf("missing key file: %v", err)
	}
}

func TestAddressInUse(t *testing.T) {
	s, err := Listen(Options{Addr: "127.0.0.1:0"}, handler())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = Listen(Options{Addr: s.Addr().String(), Name: "source.http"}, handler())
	if err == nil || !strings.Contains(err.Error(), "source.http: listen on") {
		t.Fatalf("second listener on the same port: %v", err)
	}
}

func selfSigned(t *testing.T, dir string) (string, string, *x509.CertPool) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "walship test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestHeaderAndConnectionBounds: headers beyond MaxHeaderBytes get 431
// before authentication, and with MaxConns open connections a further
// one is served only once one of them closes.
func TestHeaderAndConnectionBounds(t *testing.T) {
	s, err := Listen(Options{Token: token, MaxConns: 2}, http.NotFoundHandler())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	addr := s.Addr().String()

	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		// The server may answer and close before the whole block is sent.
		io.WriteString(conn, "GET /x HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("a", 100<<10)+"\r\n\r\n")
	}()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("100 KiB of headers: status %d, want 431", resp.StatusCode)
	}
	conn.Close()

	// Two connections hold both slots without sending a byte.
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	third := make(chan int, 1)
	go func() {
		resp, err := http.Get(s.URL() + "/healthz")
		if err != nil {
			third <- -1
			return
		}
		resp.Body.Close()
		third <- resp.StatusCode
	}()
	select {
	case code := <-third:
		t.Fatalf("a third connection was served (status %d) while two held both slots", code)
	case <-time.After(300 * time.Millisecond): // only a wrong pass is possible under load
	}
	held[0].Close()
	if code := <-third; code != http.StatusUnauthorized {
		t.Fatalf("third connection after a slot freed: status %d, want 401", code)
	}
}
