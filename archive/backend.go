package archive

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"
)

// Errors a Backend returns (wrapped, with the key). Match them with
// errors.Is.
var (
	// ErrNotFound means the object does not exist. A Get that could not
	// find out (network down, 5xx, timeout) never returns it.
	ErrNotFound = errors.New("archive: object not found")
	// ErrExists is returned by PutIfAbsent when the key already exists.
	ErrExists = errors.New("archive: object already exists")
	// ErrInvalidKey is returned for a key that is empty, absolute, has
	// empty, "." or ".." elements, or holds characters outside
	// [A-Za-z0-9._-/].
	ErrInvalidKey = errors.New("archive: invalid key")
)

// Backend stores immutable objects under slash-separated keys. It is the
// small interface both the file and the S3 backends implement; every call
// honours ctx.
//
// Transient failures (connection refused or reset, timeouts, 5xx, 503
// SlowDown and other throttling) are retried inside the backend with
// exponential backoff until ctx ends (or BackendOptions.RetryTimeout
// passes, or the give-up time of a Retry the call runs in); the error
// returned then wraps the last failure. A retried
// PutIfAbsent whose first attempt did reach the server returns ErrExists:
// callers compare the stored object with theirs (the archiver does).
type Backend interface {
	// Put stores body under key, replacing any object there. The object is
	// visible under key only when complete.
	Put(ctx context.Context, key string, body []byte) error
	// PutIfAbsent stores body under key unless the key exists, in which
	// case it returns ErrExists and changes nothing.
	PutIfAbsent(ctx context.Context, key string, body []byte) error
	// Get returns the object's bytes; errors.Is(err, ErrNotFound) only if
	// the object is missing. The caller owns the returned slice.
	Get(ctx context.Context, key string) ([]byte, error)
	// List returns the keys that start with prefix, sorted bytewise.
	List(ctx context.Context, prefix string) ([]string, error)
	// Delete removes key; deleting a missing key is not an error.
	Delete(ctx context.Context, key string) error
}

// BackendOptions configure OpenBackend. The zero value is valid: every
// field has a default. Fields that do not apply to a backend are ignored.
type BackendOptions struct {
	// WriteGate, if set, is checked by an S3 backend's connections right
	// before every write to the network: once it returns an error, no byte
	// more leaves for the store, not even of a request already under way
	// (the HA leader whose term lapsed while paused mid-put; WithPutGate
	// checks before each put starts). A directory backend checks it right
	// before the link or rename that makes a put visible, after writing
	// and syncing the put's temporary file. Requests then fail with an
	// error matching ErrGateClosed.
	WriteGate func() error
	// MustExist makes a file:// archive whose directory does not exist an
	// error (readers: a mistyped path must not pass for an empty
	// archive). By default the directory is created, as writers want.
	MustExist bool
	// Endpoint is the S3 endpoint URL (http://127.0.0.1:9000). Default:
	// AWS's, or AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL from the
	// environment.
	Endpoint string
	// Region defaults to the standard AWS configuration, else "us-east-1".
	Region string
	// PathStyle addresses buckets as endpoint/bucket/key (MinIO and most
	// non-AWS servers) instead of bucket.endpoint/key.
	PathStyle bool
	// AccessKey and SecretKey are static credentials; when empty the
	// standard AWS chain (environment, shared files, roles) is used.
	// They are never logged. With an Endpoint (a non-AWS server) the chain
	// never asks the EC2 instance-metadata service unless
	// AWS_EC2_METADATA_DISABLED is set to false, and finding no
	// credentials is ErrNoCredentials when the backend is opened.
	AccessKey, SecretKey string
	// CAFile is a PEM bundle trusted in addition to the system roots for
	// HTTPS endpoints. Default: $AWS_CA_BUNDLE if set.
	CAFile string
	// InsecureSkipVerify disables TLS certificate verification (tests
	// only).
	InsecureSkipVerify bool
	// Concurrency is the number of parallel part uploads of one multipart
	// object, and sizes the connection pool. Default 8.
	Concurrency int
	// PartSize is the multipart part size; objects larger than it are
	// uploaded in parts. Default 16 MiB, minimum 5 MiB (S3's rule).
	PartSize int64
	// RetryTimeout bounds one call, its retries of transient failures and
	// its attempts alike (a server that accepts and never answers is given
	// up on too): past it the call returns an *UnavailableError
	// (ErrUnavailable). 0 means until ctx ends.
	RetryTimeout time.Duration
	// Logger receives rate-limited reports of retried failures. Default:
	// discard.
	Logger *slog.Logger
	// OnRetry, if set, is called before every wait between attempts of a
	// call (not rate-limited): command-line tools report each retry with
	// it. It must not block.
	OnRetry func(RetryEvent)
}

const (
	defaultConcurrency = 8
	defaultPartSize    = 16 << 20
	minPartSize        = 5 << 20
)

// Validate checks the options and reports the first bad field.
func (o *BackendOptions) Validate() error {
	if o.Concurrency < 0 {
		return fmt.Errorf("archive: BackendOptions.Concurrency %d is negative", o.Concurrency)
	}
	if o.PartSize != 0 && o.PartSize < minPartSize {
		return fmt.Errorf("archive: BackendOptions.PartSize %d is below the S3 minimum %d", o.PartSize, minPartSize)
	}
	if o.RetryTimeout < 0 {
		return fmt.Errorf("archive: BackendOptions.RetryTimeout %v is negative", o.RetryTimeout)
	}
	if (o.AccessKey == "") != (o.SecretKey == "") {
		return errors.New("archive: BackendOptions.AccessKey and SecretKey must be set together")
	}
	if o.Endpoint != "" {
		u, err := url.Parse(o.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("archive: BackendOptions.Endpoint %q is not an http:// or https:// URL", o.Endpoint)
		}
	}
	return nil
}

func (o BackendOptions) withDefaults() BackendOptions {
	if o.Concurrency == 0 {
		o.Concurrency = defaultConcurrency
	}
	if o.PartSize == 0 {
		o.PartSize = defaultPartSize
	}
	if o.CAFile == "" {
		o.CAFile = os.Getenv("AWS_CA_BUNDLE")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// OpenBackend opens the backend named by rawURL:
//
//	file:///abs/dir         objects are files under dir (created if missing)
//	s3://bucket[/prefix]    objects are S3 objects under prefix/ in bucket
//
// It does no network I/O for s3 (the bucket is checked by the first call).
func OpenBackend(ctx context.Context, rawURL string, opts BackendOptions) (Backend, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("archive: bad archive URL %q: %v", rawURL, err)
	}
	switch u.Scheme {
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return nil, fmt.Errorf("archive: archive URL %q: file URLs take no host (file:///abs/dir)", rawURL)
		}
		if u.Path == "" || !strings.HasPrefix(u.Path, "/") {
			return nil, fmt.Errorf("archive: archive URL %q: want an absolute path (file:///abs/dir)", rawURL)
		}
		return newFileBackend(u.Path, opts.MustExist, opts.WriteGate)
	case "s3":
		if u.Host == "" {
			return nil, fmt.Errorf("archive: archive URL %q: missing bucket (s3://bucket/prefix)", rawURL)
		}
		prefix := strings.Trim(u.Path, "/")
		if prefix != "" {
			if err := checkKey(prefix); err != nil {
				return nil, fmt.Errorf("archive: archive URL %q: bad prefix: %w", rawURL, err)
			}
		}
		s, err := newS3Backend(ctx, u.Host, prefix, opts)
		if err != nil {
			return nil, err
		}
		r := withRetries(s, opts)
		s.partPolicy, s.partOnRetry = r.policy(), r.onRetry
		return r, nil
	default:
		return nil, fmt.Errorf("archive: archive URL %q: unsupported scheme %q (want file:// or s3://)", rawURL, u.Scheme)
	}
}

// checkKey validates a key (see ErrInvalidKey).
func checkKey(key string) error {
	if key == "" {
		return fmt.Errorf("%w: empty", ErrInvalidKey)
	}
	for _, el := range strings.Split(key, "/") {
		if el == "" || el == "." || el == ".." {
			return fmt.Errorf("%w: %q has an empty, \".\" or \"..\" element", ErrInvalidKey, key)
		}
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' || c == '/') {
			return fmt.Errorf("%w: %q has byte %q at %d", ErrInvalidKey, key, c, i)
		}
	}
	return nil
}

// checkPrefix validates a List prefix: empty, or a key prefix whose
// characters are allowed (it may end with "/").
func checkPrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	return checkKey(strings.TrimSuffix(prefix, "/"))
}
