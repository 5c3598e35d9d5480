package archive

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"syscall"
	"testing"
	"time"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

func TestBackendContract(t *testing.T) {
	eachBackend(t, func(t *testing.T, tb testBackend) {
		ctx := testCtx(t)
		b := openBackend(t, tb)

		if _, err := b.Get(ctx, "a/missing"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get(missing) = %v, want ErrNotFound", err)
		}
		if err := b.Put(ctx, "a/x", []byte("one")); err != nil {
			t.Fatal(err)
		}
		if err := b.Put(ctx, "a/x", []byte("two")); err != nil {
			t.Fatal(err)
		}
		if got, err := b.Get(ctx, "a/x"); err != nil || string(got) != "two" {
			t.Fatalf("Get after overwrite = %q, %v; want two", got, err)
		}
		if err := b.PutIfAbsent(ctx, "a/y", []byte("first")); err != nil {
			t.Fatal(err)
		}
		if err := b.PutIfAbsent(ctx, "a/y", []byte("second")); !errors.Is(err, ErrExists) {
			t.Fatalf("second PutIfAbsent = %v, want ErrExists", err)
		}
		if got, _ := b.Get(ctx, "a/y"); string(got) != "first" {
			t.Fatalf("PutIfAbsent replaced the object: %q", got)
		}
		if err := b.Put(ctx, "a/empty", nil); err != nil {
			t.Fatal(err)
		}
		if got, err := b.Get(ctx, "a/empty"); err != nil || len(got) != 0 {
			t.Fatalf("Get(empty) = %q, %v", got, err)
		}
		for _, k := range []string{"b/2", "b/10", "b/1", "b.c/1", "c"} {
			if err := b.Put(ctx, k, []byte(k)); err != nil {
				t.Fatal(err)
			}
		}
		got, err := b.List(ctx, "b")
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"b.c/1", "b/1", "b/10", "b/2"}
		if !slices.Equal(got, want) {
			t.Fatalf("List(b) = %q, want %q", got, want)
		}
		got, _ = b.List(ctx, "b/")
		if want := []string{"b/1", "b/10", "b/2"}; !slices.Equal(got, want) {
			t.Fatalf("List(b/) = %q, want %q", got, want)
		}
		all, _ := b.List(ctx, "")
		if !slices.IsSorted(all) || len(all) != 8 {
			t.Fatalf("List() = %q, want 8 sorted keys", all)
		}
		if got, _ := b.List(ctx, "nothing/"); len(got) != 0 {
			t.Fatalf("List(nothing/) = %q", got)
		}
		if err := b.Delete(ctx, "b/1"); err != nil {
			t.Fatal(err)
		}
		if err := b.Delete(ctx, "b/1"); err != nil {
			t.Fatalf("Delete(missing) = %v, want nil", err)
		}
		if _, err := b.Get(ctx, "b/1"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get(deleted) = %v, want ErrNotFound", err)
		}
		for _, k := range []string{"", "/abs", "a//b", "a/../b", "a/./b", "sp ace", "a/"} {
			if err := b.Put(ctx, k, nil); !errors.Is(err, ErrInvalidKey) {
				t.Errorf("Put(%q) = %v, want ErrInvalidKey", k, err)
			}
		}

		// Larger than PartSize: multipart on S3, one file otherwise.
		big := make([]byte, 2*minPartSize+12345)
		for i := range big {
			big[i] = byte(rand.Uint32())
		}
		if err := b.PutIfAbsent(ctx, "big/obj", big); err != nil {
			t.Fatal(err)
		}
		if got, err := b.Get(ctx, "big/obj"); err != nil || !bytes.Equal(got, big) {
			t.Fatalf("Get(big) = %d bytes, %v; want the %d bytes put", len(got), err, len(big))
		}
		if err := b.PutIfAbsent(ctx, "big/obj", big[:minPartSize+1]); !errors.Is(err, ErrExists) {
			t.Fatalf("multipart PutIfAbsent over an existing key = %v, want ErrExists", err)
		}
		if got, _ := b.Get(ctx, "big/obj"); !bytes.Equal(got, big) {
			t.Fatal("multipart PutIfAbsent replaced the object")
		}
	})
}

func TestOpenBackendBadURLs(t *testing.T) {
	ctx := context.Background()
	for _, u := range []string{"", "ftp://x/y", "file://host/x", "file:relative", "s3:///prefix", "s3://b/bad prefix"} {
		if _, err := OpenBackend(ctx, u, BackendOptions{}); err == nil {
			t.Errorf("OpenBackend(%q) succeeded", u)
		}
	}
	for _, o := range []BackendOptions{{PartSize: 1}, {Concurrency: -1}, {AccessKey: "a"}, {Endpoint: "127.0.0.1:9000"}} {
		if _, err := OpenBackend(ctx, "s3://b/p", o); err == nil {
			t.Errorf("OpenBackend with %+v succeeded", o)
		}
	}
}

func TestIsTransient(t *testing.T) {
	resp := func(code int) error {
		return &awshttp.ResponseError{ResponseError: &smithyhttp.ResponseError{
			Response: &smithyhttp.Response{Response: &http.Response{StatusCode: code}}, Err: errors.New("x")}}
	}
	cases := []struct {
		err  error
		want bool
	}{
		{resp(503), true}, {resp(500), true}, {resp(429), true}, {resp(404), false}, {resp(403), false},
		{&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, true},
		{fmt.Errorf("x: %w", syscall.ECONNRESET), true},
		{io.ErrUnexpectedEOF, true},
		{context.Canceled, false}, {context.DeadlineExceeded, false},
		{fmt.Errorf("k: %w", ErrNotFound), false}, {ErrExists, false},
		{errors.New("other"), false},
	}
	for _, c := range cases {
		if got := IsTransient(c.err); got != c.want {
			t.Errorf("IsTransient(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

// TestS3TLSSettings: the CA may come from AWS_CA_BUNDLE (the HTTP client
// is set through s3.Options, so LoadDefaultConfig's handling of the
// bundle does not get in the way); an untrusted certificate fails at
// once, without retries; InsecureSkipVerify connects anyway.
func TestS3TLSSettings(t *testing.T) {
	srv := minioHTTPS.get(t, true)
	url := "s3://" + testBucket + "/" + uniquePrefix(t)
	ctx := testCtx(t)

	t.Setenv("AWS_CA_BUNDLE", srv.CAFile)
	o := s3Opts(srv, "")
	o.CAFile = ""
	b, err := OpenBackend(ctx, url, o)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatalf("Put with the CA from AWS_CA_BUNDLE: %v", err)
	}

	t.Setenv("AWS_CA_BUNDLE", "")
	b = must(OpenBackend(ctx, url, o))
	start := time.Now()
	_, err = b.Get(ctx, "k")
	if err == nil || errors.Is(err, ErrNotFound) || IsTransient(err) {
		t.Fatalf("Get with an untrusted certificate: %v, want a permanent TLS error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("untrusted certificate took %v to fail: retried?", d)
	}
	if r := b.(interface{ Retries() uint64 }).Retries(); r != 0 {
		t.Fatalf("%d retries of a certificate error", r)
	}

	o.InsecureSkipVerify = true
	b = must(OpenBackend(ctx, url, o))
	if got, err := b.Get(ctx, "k"); err != nil || string(got) != "v" {
		t.Fatalf("Get with InsecureSkipVerify = %q, %v", got, err)
	}
}

// TestS3ServerDownIsNotNotFound: with nothing listening, Get fails with a
// transient error once RetryTimeout passes — never ErrNotFound.
func TestS3ServerDownIsNotNotFound(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	b := must(OpenBackend(context.Background(), "s3://b/p", BackendOptions{
		Endpoint: "http://" + addr, PathStyle: true, AccessKey: "a", SecretKey: "b", RetryTimeout: 3 * time.Second}))
	_, err = b.Get(context.Background(), "k")
	if err == nil || errors.Is(err, ErrNotFound) || !IsTransient(err) {
		t.Fatalf("Get from a dead server = %v, want a transient error, not ErrNotFound", err)
	}
	if r := b.(interface{ Retries() uint64 }).Retries(); r == 0 {
		t.Fatal("no retries against a dead server")
	}
	// The context, not the (default, long) retry timeout, bounds the call.
	// Opened before the deadline starts, so a slow open under load cannot
	// use it up.
	b = must(OpenBackend(context.Background(), "s3://b/p", BackendOptions{Endpoint: "http://" + addr, PathStyle: true, AccessKey: "a", SecretKey: "b"}))
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := b.Get(ctx, "k"); !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrNotFound) {
		t.Fatalf("Get bounded by ctx = %v, want DeadlineExceeded", err)
	}
}
