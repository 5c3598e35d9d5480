// Package miniotest starts a private MinIO server on a loopback port for
// tests and benchmarks (docs/DESIGN.md §6.2), over HTTP or HTTPS with a
// self-signed certificate, and a small fault-injecting reverse proxy to
// put in front of it.
//
// The server binary is $WALSHIP_MINIO, else "minio" on PATH, else
// $(go env GOPATH)/bin/minio (scripts/deps.sh builds it there). Start
// fails — never skips — when none exists, saying to run scripts/deps.sh.
package miniotest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// Credentials of every server started here.
const (
	AccessKey = "walshiptest"
	SecretKey = "walshiptest-secret"
	Region    = "us-east-1"
)

// Options configure Start.
type Options struct {
	// TLS serves HTTPS with a fresh self-signed certificate for 127.0.0.1
	// (CAFile trusts it).
	TLS bool
	// Dir holds the data, certificates and log; default a new temp dir,
	// removed by Stop.
	Dir string
	// Log receives MinIO's output; default a file in Dir.
	Log *os.File
}

// Server is a running MinIO.
type Server struct {
	Endpoint string // http(s)://127.0.0.1:port
	Addr     string // 127.0.0.1:port
	CAFile   string // PEM of the self-signed certificate (TLS only)
	Dir      string
	cmd      *exec.Cmd
	done     chan struct{}
	ownDir   bool
	logPath  string
}

// Binary finds the MinIO server binary.
func Binary() (string, error) {
	if p := os.Getenv("WALSHIP_MINIO"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("miniotest: $WALSHIP_MINIO=%s: %v", p, err)
		}
		return p, nil
	}
	if p, err := exec.LookPath("minio"); err == nil {
		return p, nil
	}
	gopath, err := exec.Command("go", "env", "GOPATH").Output()
	if err == nil {
		for _, dir := range filepath.SplitList(strings.TrimSpace(string(gopath))) {
			p := filepath.Join(dir, "bin", "minio")
			if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
				return p, nil
			}
		}
	}
	return "", errors.New("miniotest: MinIO server binary not found ($WALSHIP_MINIO, PATH, $(go env GOPATH)/bin/minio): run scripts/deps.sh")
}

// Start starts a MinIO server and stops it when t ends. It fails t if the
// server cannot be started.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	s, err := StartProcess(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Logf("miniotest: stop: %v", err)
		}
	})
	return s
}

// StartProcess starts a MinIO server; the caller calls Stop.
func StartProcess(opts Options) (*Server, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	s := &Server{Dir: opts.Dir}
	if s.Dir == "" {
		if s.Dir, err = os.MkdirTemp("", "walship-minio-"); err != nil {
			return nil, err
		}
		s.ownDir = true
	}
	dataDir := filepath.Join(s.Dir, "data")
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	cport, err := freePort()
	if err != nil {
		return nil, err
	}
	s.Addr = fmt.Sprintf("127.0.0.1:%d", port)
	args := []string{"server", "--quiet", "--address", s.Addr, "--console-address", fmt.Sprintf("127.0.0.1:%d", cport)}
	scheme := "http"
	if opts.TLS {
		certDir := filepath.Join(s.Dir, "certs")
		if err := writeSelfSigned(certDir); err != nil {
			return nil, err
		}
		s.CAFile = filepath.Join(certDir, "public.crt")
		args = append(args, "--certs-dir", certDir)
		scheme = "https"
	}
	args = append(args, dataDir)
	s.Endpoint = scheme + "://" + s.Addr
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(),
		"MINIO_ROOT_USER="+AccessKey, "MINIO_ROOT_PASSWORD="+SecretKey,
		"MINIO_BROWSER=off", "MINIO_UPDATE=off", "MINIO_CI_CD=1")
	logf := opts.Log
	if logf == nil {
		s.logPath = filepath.Join(s.Dir, "minio.log")
		if logf, err = os.Create(s.logPath); err != nil {
			return nil, err
		}
		defer logf.Close()
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("miniotest: start %s: %w", bin, err)
	}
	s.cmd, s.done = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); close(s.done) }()
	if err := s.waitReady(60 * time.Second); err != nil {
		_ = s.Stop()
		return nil, err
	}
	return s, nil
}

func (s *Server) waitReady(limit time.Duration) error {
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} // readiness probe only
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			return fmt.Errorf("miniotest: MinIO exited during startup: %s", s.logTail())
		default:
		}
		resp, err := client.Get(s.Endpoint + "/minio/health/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("miniotest: MinIO not ready at %s after %v: %s", s.Endpoint, limit, s.logTail())
}

func (s *Server) logTail() string {
	if s.logPath == "" {
		return "(log not captured)"
	}
	b, _ := os.ReadFile(s.logPath)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(bytes.TrimSpace(b))
}

// Stop kills the server and waits for it; it removes Dir if Start made
// it. It is idempotent.
func (s *Server) Stop() error {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
		s.cmd = nil
	}
	if s.ownDir {
		s.ownDir = false
		return os.RemoveAll(s.Dir)
	}
	return nil
}

// Client returns an S3 client for the server (path style, checksums
// when required, the test CA trusted).
func (s *Server) Client() (*s3.Client, error) {
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if s.CAFile != "" {
		pem, err := os.ReadFile(s.CAFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		tlsCfg.RootCAs = pool
	}
	return s3.New(s3.Options{
		Region:                     Region,
		BaseEndpoint:               aws.String(s.Endpoint),
		UsePathStyle:               true,
		Credentials:                credentials.NewStaticCredentialsProvider(AccessKey, SecretKey, ""),
		HTTPClient:                 &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg, MaxIdleConnsPerHost: 64}},
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	}), nil
}

// MakeBucket creates a bucket.
func (s *Server) MakeBucket(ctx context.Context, name string) error {
	c, err := s.Client()
	if err != nil {
		return err
	}
	if _, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		return fmt.Errorf("miniotest: create bucket %s: %w", name, err)
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// writeSelfSigned writes public.crt and private.key (MinIO's names) for
// 127.0.0.1 and localhost into dir. The certificate is its own CA.
func writeSelfSigned(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "walship test MinIO"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "public.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "private.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
}
