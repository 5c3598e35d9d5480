package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/walship/walship/archive"
	"github.com/walship/walship/internal/miniotest"
)

// s3Env sets the standard AWS environment walreplay reads credentials from.
func s3Env(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", miniotest.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", miniotest.SecretKey)
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
}

// s3Fixture archives txns into s3://bucket/arch on srv at endpoint.
func s3Fixture(t *testing.T, srv *miniotest.Server, endpoint, caFile string, per, n int) (*fixture, string) {
	t.Helper()
	ctx := context.Background()
	if err := srv.MakeBucket(ctx, "pitr"); err != nil {
		t.Fatal(err)
	}
	f := &fixture{url: "s3://pitr/arch", txns: genLog(t, n)}
	var err error
	f.a, err = archive.Open(ctx, f.url, archive.Options{Backend: archive.BackendOptions{Endpoint: endpoint, PathStyle: true,
		CAFile: caFile, Region: miniotest.Region}})
	if err != nil {
		t.Fatal(err)
	}
	f.add(t, 0, n, per)
	return f, f.url
}

// TestS3ArchiveOverHTTPS runs list, verify and restore against a real MinIO
// server over HTTPS with a private CA, configured by flags and the
// standard AWS environment only.
func TestS3ArchiveOverHTTPS(t *testing.T) {
	ctx := context.Background()
	s3Env(t)
	srv := miniotest.Start(t, miniotest.Options{TLS: true})
	f, url := s3Fixture(t, srv, srv.Endpoint, srv.CAFile, 6, 40)
	s3 := []string{"--archive", url, "--s3-endpoint", srv.Endpoint, "--s3-path-style", "--s3-ca-file", srv.CAFile, "--s3-region", miniotest.Region}

	r := walreplay(t, ctx, append([]string{"list", "--json"}, s3...)...)
	var lj listJSON
	if err := json.Unmarshal([]byte(r.stdout), &lj); err != nil || r.code != 0 || len(lj.Lineages) != 1 ||
		lj.Lineages[0].LastLSN != f.txns[39].CommitLSN {
		t.Fatalf("list: exit %d %v %v\n%s", r.code, r.err, err, r.stdout)
	}
	r = walreplay(t, ctx, append([]string{"verify"}, s3...)...)
	if r.code != 0 {
		t.Fatalf("verify: exit %d: %v\n%s", r.code, r.err, r.stdout)
	}
	dst := "sqlite://" + filepath.Join(t.TempDir(), "r.db")
	r = walreplay(t, ctx, append([]string{"restore", "--to", dst, "--target-xid", fmt.Sprint(f.txns[25].Header.XID), "--parallel", "3"}, s3...)...)
	if r.code != 0 {
		t.Fatalf("restore: exit %d: %v\n%s", r.code, r.err, r.stderr)
	}
	sameReplica(t, dst, expected(t, f.txns[:26]))

	// Without the CA the server is not trusted: the archive cannot be read.
	r = walreplay(t, ctx, "list", "--archive", url, "--s3-endpoint", srv.Endpoint, "--s3-path-style", "--s3-region", miniotest.Region)
	if r.code != 2 || !strings.Contains(r.err.Error(), "certificate") {
		t.Fatalf("untrusted server: exit %d: %v", r.code, r.err)
	}
}

// TestS3ThrottlingDuringRestoreIsRetried puts the server behind a proxy
// answering 503 SlowDown for a while during a restore: the restore waits
// it out and is exact; it never takes the errors for the end of the
// archive.
func TestS3ThrottlingDuringRestoreIsRetried(t *testing.T) {
	ctx := context.Background()
	s3Env(t)
	srv := miniotest.Start(t, miniotest.Options{})
	proxy, err := miniotest.NewProxy(srv.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	f, url := s3Fixture(t, srv, proxy.Endpoint, "", 3, 60)
	if err := proxy.Set(miniotest.SlowDown); err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(1500 * time.Millisecond)
		proxy.Set(miniotest.Pass)
	}()
	dst := "sqlite://" + filepath.Join(t.TempDir(), "r.db")
	start := time.Now()
	r := walreplay(t, ctx, "restore", "--archive", url, "--s3-endpoint", proxy.Endpoint, "--s3-path-style", "--s3-region", miniotest.Region, "--to", dst)
	if r.code != 0 {
		t.Fatalf("restore through throttling: exit %d: %v\n%s", r.code, r.err, r.stderr)
	}
	if proxy.Faults() == 0 {
		t.Fatal("the proxy answered no request with 503")
	}
	if time.Since(start) < time.Second {
		t.Fatalf("restore finished in %s, before the throttling ended", time.Since(start))
	}
	sameReplica(t, dst, expected(t, f.txns))
}
