package archive

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
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
	// A transport's own timeout (net/http's for response headers) says it
	// is context.DeadlineExceeded too; only the context's deadline itself
	// ends retrying.
	if err == nil || errors.Is(err, context.Canceled) || holds(err, context.DeadlineExceeded) {
		return false
	}
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrExists) || errors.Is(err, ErrInvalidKey) || errors.Is(err, ErrGateClosed) {
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

// holds reports whether target itself is in err's chain (identity, not
// errors.Is, which some errors answer for others' sake).
func holds(err, target error) bool {
	for err != nil {
		if err == target {
			return true
		}
		switch u := err.(type) {
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				if holds(e, target) {
					return true
				}
			}
			return false
		case interface{ Unwrap() error }:
			err = u.Unwrap()
		default:
			return false
		}
	}
	return false
}

// RetryPolicy says how long and how fast Retry retries one operation. The
// zero value is valid, and gives up after DefaultRetryMaxElapsed.
type RetryPolicy struct {
	// MaxElapsed is how long one operation is retried: Retry gives up
	// rather than start an attempt after it. Default (0)
	// DefaultRetryMaxElapsed; negative: until ctx ends (a caller that
	// must outlast any outage, and bounds ctx itself, such as the
	// backends of a daemon's archiver).
	MaxElapsed time.Duration
	// Initial and Max bound the exponential backoff between attempts,
	// which has full jitter (each wait is at least half its step);
	// defaults 100 ms and 5 s.
	Initial, Max time.Duration
}

// DefaultRetryMaxElapsed is RetryPolicy.MaxElapsed's default: finite, so
// that a zero policy never retries forever.
const DefaultRetryMaxElapsed = 2 * time.Minute

func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.MaxElapsed == 0 {
		p.MaxElapsed = DefaultRetryMaxElapsed
	}
	if p.Initial <= 0 {
		p.Initial = 100 * time.Millisecond
	}
	if p.Max <= 0 {
		p.Max = retryCap
	}
	return p
}

// giveUpKey keys the give-up time of the innermost Retry in a context.
type giveUpKey struct{}

// Retry calls f until it succeeds, returns an error that retryable rejects
// (nil retryable: IsTransient), ctx ends, or the next attempt would start
// after p.MaxElapsed. It returns f's last error, joined with the context's
// when that is why it stopped.
//
// f gets ctx with Retry's give-up time in it: a Retry nested in f (the
// retrying backend under an archive read, say) gives up no later than this
// one, so an outer policy's give-up fires even when the inner one alone
// would retry until ctx ends.
func Retry(ctx context.Context, p RetryPolicy, retryable func(error) bool, f func(ctx context.Context) error) error {
	return retryLoop(ctx, p, retryable, nil, f)
}

// retryLoop is Retry with onRetry, called (if not nil) before each wait
// with the wait.
func retryLoop(ctx context.Context, p RetryPolicy, retryable func(error) bool, onRetry func(attempt int, err error, wait time.Duration),
	f func(ctx context.Context) error) error {
	p = p.withDefaults()
	if retryable == nil {
		retryable = IsTransient
	}
	var deadline time.Time
	if p.MaxElapsed > 0 {
		deadline = time.Now().Add(p.MaxElapsed)
	}
	if outer, ok := ctx.Value(giveUpKey{}).(time.Time); ok && (deadline.IsZero() || outer.Before(deadline)) {
		deadline = outer
	}
	fctx := ctx
	if !deadline.IsZero() {
		fctx = context.WithValue(ctx, giveUpKey{}, deadline)
	}
	for attempt := 1; ; attempt++ {
		err := f(fctx)
		if err == nil || !retryable(err) {
			return err
		}
		if ctx.Err() != nil {
			return errors.Join(err, ctx.Err())
		}
		d := p.Backoff(attempt)
		if !deadline.IsZero() && time.Now().Add(d).After(deadline) {
			return err
		}
		if onRetry != nil {
			onRetry(attempt, err, d)
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return errors.Join(err, ctx.Err())
		case <-t.C:
		}
	}
}

// Backoff is the wait after attempt (from 1) under p: exponential from
// p.Initial, capped at p.Max, with full jitter (at least half the step).
// Retry waits so; callers with a loop of their own (the archiver's, which
// must never give up) use it to wait alike.
func (p RetryPolicy) Backoff(attempt int) time.Duration {
	p = p.withDefaults()
	d := p.Initial
	for i := 1; i < attempt && d < p.Max; i++ {
		d *= 2
	}
	d = min(d, p.Max)
	return d/2 + rand.N(d/2+1)
}

// retrying wraps a Backend with retryLoop on every call and counts the
// retries. Log lines about retries are rate-limited to one per
// retryLogEvery (with the number suppressed); OnRetry hears every one.
type retrying struct {
	b        Backend
	timeout  time.Duration
	log      *slog.Logger
	hook     func(RetryEvent)
	endpoint string // for UnavailableError
	retries  atomic.Uint64
	mu       struct {
		sync.Mutex
		lastLog    time.Time
		suppressed int
	}
}

var _ Backend = (*retrying)(nil)

func withRetries(b Backend, opts BackendOptions) *retrying {
	return &retrying{b: b, timeout: opts.RetryTimeout, log: opts.Logger, hook: opts.OnRetry, endpoint: opts.Endpoint}
}

// RetryEvent describes one retried failure of a backend call: Op ("get",
// "list", "put", "put part", "delete") on Key (or the listed prefix)
// failed with Err on attempt Attempt, and the next attempt starts after
// Wait.
type RetryEvent struct {
	Op, Key string
	Attempt int
	Err     error
	Wait    time.Duration
}

// ErrUnavailable means the archive's server did not answer usefully within
// BackendOptions.RetryTimeout: every attempt of a call failed transiently
// (refused, reset, timed out, 5xx, throttled). The error is an
// *UnavailableError.
var ErrUnavailable = errors.New("archive: server unavailable")

// UnavailableError is the error a backend call returns when it gave up
// after BackendOptions.RetryTimeout. It matches ErrUnavailable.
type UnavailableError struct {
	Op, Key  string
	Endpoint string // BackendOptions.Endpoint; "" for the default AWS endpoint
	Attempts int
	Timeout  time.Duration
	Err      error // the last failure
}

func (e *UnavailableError) Error() string {
	ep := e.Endpoint
	if ep == "" {
		ep = "the default AWS endpoint"
	}
	return fmt.Sprintf("archive: %s %q: no answer from %s within %s (%d attempts): %v", e.Op, e.Key, ep, e.Timeout, e.Attempts, e.Err)
}

func (e *UnavailableError) Unwrap() []error { return []error{ErrUnavailable, e.Err} }

// call runs f under retryLoop as op on key. With a RetryTimeout the whole
// call, attempts included, ends by then (an attempt to a server that
// accepts and never answers must not hang), and giving up is an
// *UnavailableError.
func (r *retrying) call(ctx context.Context, op, key string, f func(ctx context.Context) error) error {
	if r.timeout <= 0 {
		return retryLoop(ctx, r.policy(), nil, r.onRetry(op, key), f)
	}
	cctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	attempts := 0
	err := retryLoop(cctx, r.policy(), nil, r.onRetry(op, key), func(ctx context.Context) error {
		attempts++
		return f(ctx)
	})
	if err == nil || ctx.Err() != nil {
		return err
	}
	if IsTransient(err) || (cctx.Err() != nil && errors.Is(err, context.DeadlineExceeded)) {
		return &UnavailableError{Op: op, Key: key, Endpoint: r.endpoint, Attempts: attempts, Timeout: r.timeout, Err: err}
	}
	return err
}

// Retries returns how many calls were retried so far.
func (r *retrying) Retries() uint64 { return r.retries.Load() }

// policy is the backend's retry policy: RetryTimeout, or until ctx ends
// (BackendOptions.RetryTimeout 0), from a shorter first wait than
// RetryPolicy's default.
func (r *retrying) policy() RetryPolicy {
	p := RetryPolicy{MaxElapsed: r.timeout, Initial: retryBase, Max: retryCap}
	if p.MaxElapsed == 0 {
		p.MaxElapsed = -1
	}
	return p
}

// onRetry counts a retry of op on key and logs it, rate-limited.
func (r *retrying) onRetry(op, key string) func(attempt int, err error, wait time.Duration) {
	return func(attempt int, err error, wait time.Duration) {
		r.retries.Add(1)
		if r.hook != nil {
			r.hook(RetryEvent{Op: op, Key: key, Attempt: attempt, Err: err, Wait: wait})
		}
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
	}
}

func (r *retrying) Put(ctx context.Context, key string, body []byte) error {
	return r.call(ctx, "put", key, func(ctx context.Context) error { return r.b.Put(ctx, key, body) })
}

func (r *retrying) PutIfAbsent(ctx context.Context, key string, body []byte) error {
	return r.call(ctx, "put", key, func(ctx context.Context) error { return r.b.PutIfAbsent(ctx, key, body) })
}

func (r *retrying) Get(ctx context.Context, key string) ([]byte, error) {
	var out []byte
	err := r.call(ctx, "get", key, func(ctx context.Context) error {
		var err error
		out, err = r.b.Get(ctx, key)
		return err
	})
	return out, err
}

func (r *retrying) List(ctx context.Context, prefix string) ([]string, error) {
	var out []string
	err := r.call(ctx, "list", prefix, func(ctx context.Context) error {
		var err error
		out, err = r.b.List(ctx, prefix)
		return err
	})
	return out, err
}

func (r *retrying) Delete(ctx context.Context, key string) error {
	return r.call(ctx, "delete", key, func(ctx context.Context) error { return r.b.Delete(ctx, key) })
}
