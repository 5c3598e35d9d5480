package archive

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"
)

const (
	retryBase           = 50 * time.Millisecond
	retryCap            = 5 * time.Second
	retryLogEvery       = 10 * time.Second
	defaultAbortTimeout = 30 * time.Second
)

// IsTransient reports whether err is a failure worth retrying: the server
// is unreachable, slow or overloaded (connection refused/reset, timeouts,
// truncated responses, HTTP 408, 429, 5xx, S3 SlowDown and throttling
// codes). It is the package's one retry classifier. Context cancellation,
// ErrNotFound, ErrExists, access errors and bad requests are not
// transient.
func IsTransient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrExists) || errors.Is(err, ErrInvalidKey) {
		return false
	}
	var api smithy.APIError
	if errors.As(err, &api) {
		switch api.ErrorCode() {
		case "SlowDown", "Throttling", "ThrottlingException", "ThrottledException",
			"RequestThrottled", "RequestThrottledException", "TooManyRequestsException",
			"ProvisionedThroughputExceededException", "RequestLimitExceeded",
			"RequestTimeout", "RequestTimeoutException", "InternalError", "ServiceUnavailable",
			"XMinioServerNotInitialized", "ConditionalRequestConflict", "OperationAborted":
			return true
		}
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		switch c := re.HTTPStatusCode(); {
		case c == http.StatusRequestTimeout, c == http.StatusTooManyRequests, c >= 500:
			return true
		}
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNABORTED) {
		return true
	}
	// A certificate or protocol mismatch will not fix itself.
	var (
		cve *tls.CertificateVerificationError
		uae x509.UnknownAuthorityError
		he  x509.HostnameError
		cie x509.CertificateInvalidError
		rhe tls.RecordHeaderError
	)
	if errors.As(err, &cve) || errors.As(err, &uae) || errors.As(err, &he) || errors.As(err, &cie) || errors.As(err, &rhe) {
		return false
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return true // dial, read and write failures
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// retryPolicy says how retryLoop waits and reports.
type retryPolicy struct {
	timeout time.Duration // 0: until ctx ends
	onRetry func(attempt int, err error)
}

// retryLoop calls f until it succeeds, returns a non-transient error, or
// ctx ends (or the policy's timeout passes), sleeping with exponential
// backoff and full jitter between attempts. It returns f's last error,
// joined with the context's when that is why it stopped.
func retryLoop(ctx context.Context, p retryPolicy, f func() error) error {
	var deadline time.Time
	if p.timeout > 0 {
		deadline = time.Now().Add(p.timeout)
	}
	for attempt := 1; ; attempt++ {
		err := f()
		if err == nil || !IsTransient(err) {
			return err
		}
		if ctx.Err() != nil {
			return errors.Join(err, ctx.Err())
		}
		if !deadline.IsZero() && time.Now().After(deadline) {
			return err
		}
		if p.onRetry != nil {
			p.onRetry(attempt, err)
		}
		t := time.NewTimer(Backoff(attempt))
		select {
		case <-ctx.Done():
			t.Stop()
			return errors.Join(err, ctx.Err())
		case <-t.C:
		}
	}
}

// Backoff is the wait before retry attempt+1: exponential from retryBase,
// capped at retryCap, with full jitter (at least half the step).
func Backoff(attempt int) time.Duration {
	d := retryCap
	if attempt < 20 {
		d = min(retryBase<<(attempt-1), retryCap)
	}
	return d/2 + rand.N(d/2+1)
}

// retrying wraps a Backend with retryLoop on every call and counts the
// retries. Log lines about retries are rate-limited to one per
// retryLogEvery (with the number suppressed).
type retrying struct {
	b       Backend
	timeout time.Duration
	log     *slog.Logger
	retries atomic.Uint64
	mu      struct {
		sync.Mutex
		lastLog    time.Time
		suppressed int
	}
}

var _ Backend = (*retrying)(nil)

func withRetries(b Backend, opts BackendOptions) *retrying {
	return &retrying{b: b, timeout: opts.RetryTimeout, log: opts.Logger}
}

// Retries returns how many calls were retried so far.
func (r *retrying) Retries() uint64 { return r.retries.Load() }

func (r *retrying) policy(op, key string) retryPolicy {
	return retryPolicy{timeout: r.timeout, onRetry: func(attempt int, err error) {
		r.retries.Add(1)
		r.mu.Lock()
		now := time.Now()
		if now.Sub(r.mu.lastLog) < retryLogEvery {
			r.mu.suppressed++
			r.mu.Unlock()
			return
		}
		sup := r.mu.suppressed
		r.mu.lastLog, r.mu.suppressed = now, 0
		r.mu.Unlock()
		r.log.Warn("archive: transient failure, retrying", "op", op, "key", key, "attempt", attempt,
			"err", err, "suppressed", sup)
	}}
}

func (r *retrying) Put(ctx context.Context, key string, body []byte) error {
	return retryLoop(ctx, r.policy("put", key), func() error { return r.b.Put(ctx, key, body) })
}

func (r *retrying) PutIfAbsent(ctx context.Context, key string, body []byte) error {
	return retryLoop(ctx, r.policy("put", key), func() error { return r.b.PutIfAbsent(ctx, key, body) })
}

func (r *retrying) Get(ctx context.Context, key string) ([]byte, error) {
	var out []byte
	err := retryLoop(ctx, r.policy("get", key), func() error {
		var err error
		out, err = r.b.Get(ctx, key)
		return err
	})
	return out, err
}

func (r *retrying) List(ctx context.Context, prefix string) ([]string, error) {
	var out []string
	err := retryLoop(ctx, r.policy("list", prefix), func() error {
		var err error
		out, err = r.b.List(ctx, prefix)
		return err
	})
	return out, err
}

func (r *retrying) Delete(ctx context.Context, key string) error {
	return retryLoop(ctx, r.policy("delete", key), func() error { return r.b.Delete(ctx, key) })
}
