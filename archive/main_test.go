package archive

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/walship/walship/internal/miniotest"
)

// The same suite runs against every backend: a directory, and a real
// MinIO over HTTP and over HTTPS (self-signed certificate). The MinIO
// servers are started once per test binary, on first use; each test gets
// its own prefix in the shared bucket.

const testBucket = "walship-test"

type minioState struct {
	once sync.Once
	srv  *miniotest.Server
	err  error
}

var (
	minioHTTP, minioHTTPS minioState
	prefixSeq             atomic.Int64
)

func TestMain(m *testing.M) {
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
			s.err = s.srv.MakeBucket(ctx, testBucket)
			cancel()
		}
	})
	if s.err != nil {
		t.Fatalf("cannot start MinIO (tls=%v): %v", tls, s.err)
	}
	return s.srv
}

// testBackend names an archive URL and the options to open it.
type testBackend struct {
	name string
	url  string
	opts BackendOptions
}

func s3Opts(srv *miniotest.Server, endpoint string) BackendOptions {
	if endpoint == "" {
		endpoint = srv.Endpoint
	}
	return BackendOptions{
		Endpoint: endpoint, Region: miniotest.Region, PathStyle: true,
		AccessKey: miniotest.AccessKey, SecretKey: miniotest.SecretKey,
		CAFile: srv.CAFile, PartSize: minPartSize, Concurrency: 4,
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

// eachBackend runs f as a subtest per backend.
func eachBackend(t *testing.T, f func(t *testing.T, tb testBackend)) {
	t.Run("file", func(t *testing.T) {
		f(t, testBackend{name: "file", url: "file://" + t.TempDir()})
	})
	t.Run("s3-http", func(t *testing.T) {
		srv := minioHTTP.get(t, false)
		f(t, testBackend{name: "s3-http", url: "s3://" + testBucket + "/" + uniquePrefix(t), opts: s3Opts(srv, "")})
	})
	t.Run("s3-https", func(t *testing.T) {
		srv := minioHTTPS.get(t, true)
		f(t, testBackend{name: "s3-https", url: "s3://" + testBucket + "/" + uniquePrefix(t), opts: s3Opts(srv, "")})
	})
}

func openBackend(t testing.TB, tb testBackend) Backend {
	t.Helper()
	b, err := OpenBackend(context.Background(), tb.url, tb.opts)
	if err != nil {
		t.Fatalf("OpenBackend(%s): %v", tb.url, err)
	}
	return b
}

func openArchive(t testing.TB, tb testBackend, opts Options) *Archive {
	t.Helper()
	opts.Backend = tb.opts
	a, err := Open(context.Background(), tb.url, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", tb.url, err)
	}
	return a
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}
