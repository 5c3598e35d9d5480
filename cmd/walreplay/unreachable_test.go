package main

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// deadEndpoints returns two S3 endpoints on loopback: one where nothing
// listens (connection refused) and one that accepts connections and never
// answers.
func deadEndpoints(t *testing.T) (refused, silent string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused = "http://" + l.Addr().String()
	l.Close()
	s, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { close(done); s.Close() })
	go func() {
		for {
			c, err := s.Accept()
			if err != nil {
				return
			}
			go func() { <-done; c.Close() }()
		}
	}()
	return refused, "http://" + s.Addr().String()
}

// TestUnreachableS3GivesUpWithinTimeout runs list and restore against a
// loopback port with nothing listening and against a server that accepts
// and never answers, with --timeout 3s: each reports its retries on
// stderr, then exits 2 within a bound, naming the endpoint and what to
// check.
func TestUnreachableS3GivesUpWithinTimeout(t *testing.T) {
	ctx := context.Background()
	s3Env(t)
	refused, silent := deadEndpoints(t)
	dst := "sqlite://" + filepath.Join(t.TempDir(), "r.db")
	for _, ep := range []string{refused, silent} {
		for _, cmd := range [][]string{{"list"}, {"restore", "--to", dst}} {
			args := append(cmd, "--archive", "s3://pitr/arch", "--s3-endpoint", ep, "--s3-path-style", "--s3-region", "us-east-1", "--timeout", "3s")
			start := time.Now()
			r := walreplay(t, ctx, args...)
			took := time.Since(start)
			if r.code != 2 || r.err == nil {
				t.Fatalf("%s against %s: exit %d (%v), want 2", cmd[0], ep, r.code, r.err)
			}
			// Generous for a loaded machine; a hang is minutes.
			if took > 30*time.Second {
				t.Fatalf("%s against %s: gave up after %s with --timeout 3s", cmd[0], ep, took)
			}
			msg := r.err.Error()
			for _, want := range []string{ep, "did not answer within 3s", "check the endpoint (--s3-endpoint", "network", "credentials"} {
				if !strings.Contains(msg, want) {
					t.Errorf("%s against %s: error lacks %q:\n%s", cmd[0], ep, want, msg)
				}
			}
			if !strings.Contains(r.stderr, `walreplay: attempt 1: archive: list "": `) || !strings.Contains(r.stderr, "; retrying in ") {
				t.Errorf("%s against %s: no retry line on stderr:\n%s", cmd[0], ep, r.stderr)
			}
		}
	}
}

// TestCustomEndpointNoCredentialsNeverAsksIMDS gives walreplay a custom
// endpoint and no credentials: it says so in plain words, exit 2, and never
// asks the instance-metadata service (pointed at a local recorder).
func TestCustomEndpointNoCredentialsNeverAsksIMDS(t *testing.T) {
	ctx := context.Background()
	var asked atomic.Int64
	imds := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		http.Error(w, "no", http.StatusNotFound)
	}))
	defer imds.Close()
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
		"AWS_EC2_METADATA_DISABLED", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
		"AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"} {
		t.Setenv(k, "")
	}
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.URL)
	refused, _ := deadEndpoints(t)
	dst := "sqlite://" + filepath.Join(t.TempDir(), "r.db")
	for _, cmd := range [][]string{{"list"}, {"restore", "--to", dst}} {
		r := walreplay(t, ctx, append(cmd, "--archive", "s3://pitr/arch", "--s3-endpoint", refused, "--s3-path-style", "--timeout", "3s")...)
		const want = "no S3 credentials: set --s3-access-key/--s3-secret-key or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
		if r.code != 2 || r.err == nil || r.err.Error() != want {
			t.Fatalf("%s without credentials: exit %d: %v; want 2: %s", cmd[0], r.code, r.err, want)
		}
	}
	if n := asked.Load(); n != 0 {
		t.Fatalf("the instance-metadata service was asked %d times", n)
	}
}
