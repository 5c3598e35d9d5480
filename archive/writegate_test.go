package archive

import (
	"bytes"
	"context"
	"errors"
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
