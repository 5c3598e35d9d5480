package archive

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"
)

// TestRetryGivesUp: a zero policy gives up after a finite time, a
// negative MaxElapsed only when ctx ends, and an inner Retry (a retrying
// backend's, with no give-up of its own) gives up when the outer one does:
// pitr's give-up fires over a backend that would retry forever.
func TestRetryGivesUp(t *testing.T) {
	if (RetryPolicy{}).withDefaults().MaxElapsed != DefaultRetryMaxElapsed || DefaultRetryMaxElapsed <= 0 {
		t.Fatal("the zero policy has no finite give-up")
	}
	transient := &connRefused{}
	fast := RetryPolicy{MaxElapsed: 50 * time.Millisecond, Initial: time.Millisecond, Max: 2 * time.Millisecond}

	start := time.Now()
	inner := 0
	err := Retry(context.Background(), fast, func(error) bool { return true }, func(ctx context.Context) error {
		return Retry(ctx, RetryPolicy{MaxElapsed: -1, Initial: time.Millisecond, Max: 2 * time.Millisecond}, nil,
			func(context.Context) error { inner++; return transient })
	})
	if !errors.Is(err, transient) {
		t.Fatalf("Retry = %v, want the last transient error", err)
	}
	if el := time.Since(start); el > 10*time.Second || inner < 2 {
		t.Fatalf("gave up after %v and %d inner attempts", el, inner)
	}

	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	err = Retry(ctx, RetryPolicy{MaxElapsed: -1, Initial: time.Millisecond, Max: time.Millisecond}, nil, func(context.Context) error {
		if n++; n == 20 {
			cancel()
		}
		return transient
	})
	if !errors.Is(err, context.Canceled) || !errors.Is(err, transient) || n != 20 {
		t.Fatalf("Retry until ctx ends = %v after %d attempts, want both errors after 20", err, n)
	}

	n = 0
	perm := errors.New("permanent")
	if err := Retry(context.Background(), fast, nil, func(context.Context) error { n++; return perm }); err != perm || n != 1 {
		t.Fatalf("Retry of a non-transient error = %v after %d attempts", err, n)
	}
}

// connRefused is a transient error (IsTransient): connection refused.
type connRefused struct{}

func (*connRefused) Error() string { return "connection refused" }
func (*connRefused) Unwrap() error { return syscall.ECONNREFUSED }

// TestTransportTimeoutIsTransient: net/http's own timeout awaiting a
// response's headers (which answers errors.Is(err, DeadlineExceeded)) is a
// transient failure to retry; the context's deadline is not.
func TestTransportTimeoutIsTransient(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { <-done; c.Close() }()
		}
	}()
	client := &http.Client{Transport: &http.Transport{ResponseHeaderTimeout: 50 * time.Millisecond}}
	_, err = client.Get("http://" + l.Addr().String() + "/")
	if err == nil || !IsTransient(err) {
		t.Fatalf("header timeout %v: IsTransient false", err)
	}
	if IsTransient(fmt.Errorf("get: %w", context.DeadlineExceeded)) {
		t.Fatal("the context's deadline is transient")
	}
}
