// Package archivetest runs tests of code built on package archive against
// every backend: a directory, and a real MinIO over HTTP and over HTTPS
// (self-signed certificate). The MinIO servers are started once per test
// binary, on first use, and stopped by Main; each test gets its own prefix
// in the shared bucket. Package archive's own tests keep an internal copy
// of these few helpers: they cannot import a package that imports archive.
package archivetest

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/walship/walship/archive"
	"github.com/walship/walship/change"
	"github.com/walship/walship/internal/miniotest"
)

// Bucket is the bucket the tests share.
const Bucket = "walship-test"

type minioState struct {
	once sync.Once
	srv  *miniotest.Server
	err  error
}

var (
	minioHTTP, minioHTTPS minioState
	prefixSeq             atomic.Int64
)

// Main runs the tests and stops the MinIO servers they started; call it
// from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	for _, s := range []*minioState{&minioHTTP, &minioHTTPS} {
		if s.srv != nil {
			_ = s.srv.Stop()
		}
	}
	os.Exit(code)
}

func (s *minioState) get(t testing.TB, tls bool) *miniotest.Server {
	t.Helper()
	s.once.Do(func() {
		s.srv, s.err = miniotest.StartProcess(miniotest.Options{TLS: tls})
		if s.err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			s.err = s.srv.MakeBucket(ctx, Bucket)
			cancel()
		}
	})
	if s.err != nil {
		t.Fatalf("cannot start MinIO (tls=%v): %v", tls, s.err)
	}
	return s.srv
}

// Backend names an archive URL and the options to open it.
type Backend struct {
	Name string
	URL  string
	Opts archive.BackendOptions
}

// MinIO returns the shared MinIO server over HTTP or HTTPS, started on
// first use.
func MinIO(t testing.TB, tls bool) *miniotest.Server {
	if tls {
		return minioHTTPS.get(t, true)
	}
	return minioHTTP.get(t, false)
}

// S3 is a backend on srv, reached at endpoint (srv.Endpoint if empty:
// another endpoint is a proxy in front of it), under a prefix of the
// test's own.
func S3(t testing.TB, srv *miniotest.Server, endpoint string) Backend {
	if endpoint == "" {
		endpoint = srv.Endpoint
	}
	return Backend{Name: "s3", URL: "s3://" + Bucket + "/" + uniquePrefix(t), Opts: s3Opts(srv, endpoint)}
}

func s3Opts(srv *miniotest.Server, endpoint string) archive.BackendOptions {
	return archive.BackendOptions{
		Endpoint: endpoint, Region: miniotest.Region, PathStyle: true,
		AccessKey: miniotest.AccessKey, SecretKey: miniotest.SecretKey,
		CAFile: srv.CAFile, PartSize: 5 << 20, Concurrency: 4,
		RetryTimeout: 20 * time.Second, // a test never hangs on a dead server
	}
}

func uniquePrefix(t testing.TB) string {
	name := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '-'
	}, t.Name())
	return fmt.Sprintf("%s-%d-%d", name, time.Now().UnixNano()%1e6, prefixSeq.Add(1))
}

// EachBackend runs f as a subtest per backend.
func EachBackend(t *testing.T, f func(t *testing.T, b Backend)) {
	t.Run("file", func(t *testing.T) {
		f(t, Backend{Name: "file", URL: "file://" + t.TempDir()})
	})
	t.Run("s3-http", func(t *testing.T) {
		b := S3(t, MinIO(t, false), "")
		b.Name = "s3-http"
		f(t, b)
	})
	t.Run("s3-https", func(t *testing.T) {
		b := S3(t, MinIO(t, true), "")
		b.Name = "s3-https"
		f(t, b)
	})
}

// OpenBackend opens b's backend or fails the test.
func OpenBackend(t testing.TB, b Backend) archive.Backend {
	t.Helper()
	be, err := archive.OpenBackend(context.Background(), b.URL, b.Opts)
	if err != nil {
		t.Fatalf("OpenBackend(%s): %v", b.URL, err)
	}
	return be
}

// OpenArchive opens the archive at b with opts (its Backend set to b's).
func OpenArchive(t testing.TB, b Backend, opts archive.Options) *archive.Archive {
	t.Helper()
	opts.Backend = b.Opts
	a, err := archive.Open(context.Background(), b.URL, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", b.URL, err)
	}
	return a
}

// Ctx is a context that ends with the test, or after 90 s: a test never
// hangs on a dead server.
func Ctx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TxnsEqual fails the test unless got and want hold the same transactions
// at the same LSNs and commit times.
func TxnsEqual(t testing.TB, got, want []change.Committed) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d transactions, want %d", len(got), len(want))
	}
	for i := range got {
		g, w := &got[i], &want[i]
		if g.FirstLSN != w.FirstLSN || g.CommitLSN != w.CommitLSN || !g.CommitTime.Equal(w.CommitTime) || !g.Txn.Equal(&w.Txn) {
			t.Fatalf("transaction %d differs:\n got %+v\nwant %+v", i, *g, *w)
		}
	}
}
