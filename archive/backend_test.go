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
