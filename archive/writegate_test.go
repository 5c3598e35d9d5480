package archive

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
)

// TestS3WriteGate: once an S3 backend's write gate says no, not one more
// byte reaches the store, even of a put already under way: the put fails
// at once (not retried) with ErrGateClosed and no object exists.
func TestS3WriteGate(t *testing.T) {
	for _, tls := range []bool{false, true} {
		srv := minioHTTP.get(t, false)
		if tls {
			srv = minioHTTPS.get(t, true)
		}
		tb := testBackend{url: "s3://" + testBucket + "/" + uniquePrefix(t), opts: s3Opts(srv, "")}
		var writes, allow atomic.Int64
		allow.Store(1 << 40)
		errLost := errors.New("term lost")
		tb.opts.WriteGate = func() error {
			if writes.Add(1) > allow.Load() {
				return errLost
			}
			return nil
		}
		b := openBackend(t, tb)
		ctx := context.Background()
		if err := b.Put(ctx, "before", []byte("x")); err != nil {
			t.Fatal(err)
		}
		// The gate closes after the request's first writes: the body
		// (several MiB, written in many pieces) never gets through.
		allow.Store(writes.Load() + 2)
		err := b.Put(ctx, "during", bytes.Repeat([]byte("y"), 4<<20))
		if !errors.Is(err, ErrGateClosed) || !errors.Is(err, errLost) {
			t.Fatalf("tls %v: put while the gate closes: %v, want ErrGateClosed wrapping the gate's error", tls, err)
		}
		// A reader's requests are writes too: read through another client.
		tb.opts.WriteGate = nil
		if _, err := openBackend(t, tb).Get(ctx, "during"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("the object of a put cut by the gate: %v, want ErrNotFound", err)
		}
	}
}

// TestFileWriteGate: a directory backend checks its write gate right
// before the link or rename that makes a put visible, so a writer whose
// gate closed while it wrote and synced the temporary file (a stalled
// disk) publishes nothing, and leaves no temporary file.
func TestFileWriteGate(t *testing.T) {
	dir := t.TempDir()
	var closed atomic.Bool
	errLost := errors.New("term lost")
	b, err := OpenBackend(context.Background(), "file://"+dir, BackendOptions{WriteGate: func() error {
		if closed.Load() {
			return errLost
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := b.Put(ctx, "a/before", []byte("x")); err != nil {
		t.Fatal(err)
	}
	closed.Store(true)
	for _, put := range []func(context.Context, string, []byte) error{b.Put, b.PutIfAbsent} {
		if err := put(ctx, "a/after", []byte("y")); !errors.Is(err, ErrGateClosed) || !errors.Is(err, errLost) {
			t.Fatalf("put with the gate closed: %v, want ErrGateClosed wrapping the gate's error", err)
		}
	}
	if _, err := b.Get(ctx, "a/after"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the object of a put refused by the gate: %v, want ErrNotFound", err)
	}
	ents, err := os.ReadDir(filepath.Join(dir, "a"))
	if err != nil || len(ents) != 1 {
		t.Fatalf("the directory holds %d entries (%v), want only the object put before", len(ents), err)
	}
}
