package archive

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
)

// s3Backend stores objects in one bucket under a prefix. It makes single
// attempts: retries are added by the retrying wrapper (retry.go), so that
// one classifier decides and the SDK's own retryer is off.
type s3Backend struct {
	client   *s3.Client
	bucket   string
	prefix   string // "" or "p/" (with the slash)
	partSize int64
	conc     int
	// partPolicy and partOnRetry are the retry policy of one part upload
	// (set by the retrying wrapper, so part retries are counted and
	// bounded alike; until ctx ends without it).
	partPolicy  RetryPolicy
	partOnRetry func(op, key string) func(attempt int, err error, wait time.Duration)
}

var _ Backend = (*s3Backend)(nil)

// ErrNoCredentials means an S3 archive at a custom endpoint has no
// credentials: neither BackendOptions.AccessKey nor the standard AWS
// environment and files give any.
var ErrNoCredentials = errors.New("archive: no S3 credentials")

// imdsExplicitlyEnabled reports whether AWS_EC2_METADATA_DISABLED is set to
// false: the one way to have a custom endpoint's credentials looked up in
// the instance-metadata service.
func imdsExplicitlyEnabled() bool {
	v, ok := os.LookupEnv("AWS_EC2_METADATA_DISABLED")
	return ok && strings.EqualFold(strings.TrimSpace(v), "false")
}

// attemptWait is how long one attempt waits to connect and for the
// response's headers under a RetryTimeout (0: no bound of ours): a quarter
// of it, between 1 s and 30 s, so that a server that accepts and never
// answers is retried, and reported, several times before the call gives
// up. Bodies are not bounded by it: a large object may take longer.
func attemptWait(retryTimeout time.Duration) time.Duration {
	if retryTimeout <= 0 {
		return 0
	}
	return min(max(retryTimeout/4, time.Second), 30*time.Second)
}

// newS3Client builds the S3 client for opts.
func newS3Client(ctx context.Context, opts BackendOptions) (*s3.Client, error) {
	var loadOpts []func(*config.LoadOptions) error
	if opts.Region != "" {
		loadOpts = append(loadOpts, config.WithRegion(opts.Region))
	}
	if opts.AccessKey != "" {
		loadOpts = append(loadOpts, config.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(opts.AccessKey, opts.SecretKey, "")))
	}
	// A custom endpoint is not AWS: the instance-metadata service (whose
	// address answers on any cloud, or hangs off one) cannot hold its
	// credentials, so it is asked only when the environment says so.
	noIMDS := opts.Endpoint != "" && !imdsExplicitlyEnabled()
	if noIMDS {
		loadOpts = append(loadOpts, config.WithEC2IMDSClientEnableState(imds.ClientDisabled))
	}
	// AWS_CA_BUNDLE is applied by LoadDefaultConfig to its own HTTP client;
	// ours is set below through s3.Options (docs/DESIGN.md §6.2), and the bundle
	// is honoured there through CAFile.
	cfg, err := config.LoadDefaultConfig(ctx, loadOpts...)
	if err != nil {
		return nil, fmt.Errorf("archive: load AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	if noIMDS && opts.AccessKey == "" {
		// Without the metadata service the chain is local (environment,
		// shared files) but for container and SSO providers the
		// environment or files ask for: find out now, in plain words,
		// rather than from the SDK at the first request.
		if _, err := cfg.Credentials.Retrieve(ctx); err != nil {
			return nil, fmt.Errorf("%w for %s (%v)", ErrNoCredentials, opts.Endpoint, err)
		}
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: opts.InsecureSkipVerify}
	if opts.CAFile != "" {
		pem, err := os.ReadFile(opts.CAFile)
		if err != nil {
			return nil, fmt.Errorf("archive: read CA file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("archive: CA file %s holds no PEM certificate", opts.CAFile)
		}
		tlsCfg.RootCAs = pool
	}
	conns := max(opts.Concurrency*2, 16)
	httpClient := awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
		tr.TLSClientConfig = tlsCfg
		tr.MaxIdleConns = conns * 2
		tr.MaxIdleConnsPerHost = conns
		if w := attemptWait(opts.RetryTimeout); w > 0 {
			tr.ResponseHeaderTimeout = w
		}
	})
	if w := attemptWait(opts.RetryTimeout); w > 0 {
		httpClient = httpClient.WithDialerOptions(func(d *net.Dialer) { d.Timeout = w })
	}
	if gate := opts.WriteGate; gate != nil {
		httpClient = httpClient.WithTransportOptions(func(tr *http.Transport) {
			dial := tr.DialContext
			tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
				c, err := dial(ctx, network, addr)
				if err != nil {
					return nil, err
				}
				return gatedConn{Conn: c, gate: gate}, nil
			}
		})
	}
	client := s3.NewFromConfig(cfg, func(o *s3.Options) {
		if opts.Endpoint != "" {
			o.BaseEndpoint = aws.String(opts.Endpoint)
		}
		o.UsePathStyle = opts.PathStyle
		o.HTTPClient = httpClient
		// Non-AWS servers reject or mis-handle the SDK's default CRC
		// trailers; our own checksum covers every object (docs/ARCHIVE.md).
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
		o.Retryer = aws.NopRetryer{}
	})
	return client, nil
}

func newS3Backend(ctx context.Context, bucket, prefix string, opts BackendOptions) (*s3Backend, error) {
	client, err := newS3Client(ctx, opts)
	if err != nil {
		return nil, err
	}
	if prefix != "" {
		prefix += "/"
	}
	return &s3Backend{client: client, bucket: bucket, prefix: prefix, partSize: opts.PartSize, conc: opts.Concurrency,
		partPolicy: RetryPolicy{MaxElapsed: -1, Initial: retryBase, Max: retryCap}}, nil
}

func (b *s3Backend) Put(ctx context.Context, key string, body []byte) error {
	return b.put(ctx, key, body, false)
}

func (b *s3Backend) PutIfAbsent(ctx context.Context, key string, body []byte) error {
	return b.put(ctx, key, body, true)
}

func (b *s3Backend) put(ctx context.Context, key string, body []byte, ifAbsent bool) error {
	if err := checkKey(key); err != nil {
		return err
	}
	var err error
	if int64(len(body)) > b.partSize {
		err = b.putMultipart(ctx, key, body, ifAbsent)
	} else {
		in := &s3.PutObjectInput{
			Bucket:        aws.String(b.bucket),
			Key:           aws.String(b.prefix + key),
			Body:          bytes.NewReader(body),
			ContentLength: aws.Int64(int64(len(body))),
		}
		if ifAbsent {
			in.IfNoneMatch = aws.String("*")
		}
		_, err = b.client.PutObject(ctx, in)
	}
	if err != nil {
		return fmt.Errorf("archive: put %s: %w", key, mapS3Error(err))
	}
	return nil
}

// putMultipart uploads body in PartSize parts, Concurrency at a time; the
// object appears only when CompleteMultipartUpload succeeds (with
// If-None-Match for PutIfAbsent). A failed upload is aborted.
func (b *s3Backend) putMultipart(ctx context.Context, key string, body []byte, ifAbsent bool) error {
	k := aws.String(b.prefix + key)
	created, err := b.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(b.bucket), Key: k})
	if err != nil {
		return err
	}
	id := created.UploadId
	abort := func() {
		// Best effort, detached from a possibly cancelled ctx.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), defaultAbortTimeout)
		defer cancel()
		_, _ = b.client.AbortMultipartUpload(actx, &s3.AbortMultipartUploadInput{Bucket: aws.String(b.bucket), Key: k, UploadId: id})
	}
	n := int((int64(len(body)) + b.partSize - 1) / b.partSize)
	parts := make([]types.CompletedPart, n)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	sem := make(chan struct{}, b.conc)
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for i := range n {
		lo := int64(i) * b.partSize
		hi := min(lo+b.partSize, int64(len(body)))
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			// Parts are retried here individually: one lost part must not
			// restart the whole object.
			var out *s3.UploadPartOutput
			var onRetry func(int, error, time.Duration)
			if b.partOnRetry != nil {
				onRetry = b.partOnRetry("put part", key)
			}
			err := retryLoop(pctx, b.partPolicy, nil, onRetry, func(pctx context.Context) error {
				var err error
				out, err = b.client.UploadPart(pctx, &s3.UploadPartInput{
					Bucket: aws.String(b.bucket), Key: k, UploadId: id,
					PartNumber:    aws.Int32(int32(i + 1)),
					Body:          bytes.NewReader(body[lo:hi]),
					ContentLength: aws.Int64(hi - lo),
				})
				return err
			})
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
				cancel()
				return
			}
			parts[i] = types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(int32(i + 1))}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		abort()
		return firstErr
	}
	in := &s3.CompleteMultipartUploadInput{
		Bucket: aws.String(b.bucket), Key: k, UploadId: id,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
	}
	if ifAbsent {
		in.IfNoneMatch = aws.String("*")
	}
	if _, err := b.client.CompleteMultipartUpload(ctx, in); err != nil {
		abort()
		return err
	}
	return nil
}

func (b *s3Backend) Get(ctx context.Context, key string) ([]byte, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	out, err := b.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(b.bucket), Key: aws.String(b.prefix + key)})
	if err != nil {
		return nil, fmt.Errorf("archive: get %s: %w", key, mapS3Error(err))
	}
	defer out.Body.Close()
	var buf []byte
	if out.ContentLength != nil && *out.ContentLength >= 0 {
		buf = make([]byte, *out.ContentLength)
		if _, err := io.ReadFull(out.Body, buf); err != nil {
			return nil, fmt.Errorf("archive: get %s: read body: %w", key, err)
		}
		// A body longer than announced is a broken response.
		var one [1]byte
		if n, _ := out.Body.Read(one[:]); n != 0 {
			return nil, fmt.Errorf("archive: get %s: body longer than Content-Length %d", key, len(buf))
		}
	} else if buf, err = io.ReadAll(out.Body); err != nil {
		return nil, fmt.Errorf("archive: get %s: read body: %w", key, err)
	}
	return buf, nil
}

func (b *s3Backend) List(ctx context.Context, prefix string) ([]string, error) {
	if err := checkPrefix(prefix); err != nil {
		return nil, err
	}
	var keys []string
	p := s3.NewListObjectsV2Paginator(b.client, &s3.ListObjectsV2Input{
		Bucket: aws.String(b.bucket),
		Prefix: aws.String(b.prefix + prefix),
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("archive: list %q: %w", prefix, mapS3Error(err))
		}
		for _, o := range page.Contents {
			k := strings.TrimPrefix(aws.ToString(o.Key), b.prefix)
			if checkKey(k) == nil {
				keys = append(keys, k)
			}
		}
	}
	sort.Strings(keys)
	return keys, nil
}

func (b *s3Backend) Delete(ctx context.Context, key string) error {
	if err := checkKey(key); err != nil {
		return err
	}
	_, err := b.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(b.bucket), Key: aws.String(b.prefix + key)})
	if err != nil {
		err = mapS3Error(err)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		return fmt.Errorf("archive: delete %s: %w", key, err)
	}
	return nil
}

// mapS3Error turns S3's "missing" and "precondition failed" answers into
// ErrNotFound and ErrExists, keeping the original in the chain.
func mapS3Error(err error) error {
	var nsk *types.NoSuchKey
	if errors.As(err, &nsk) {
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	var api smithy.APIError
	if errors.As(err, &api) {
		switch api.ErrorCode() {
		case "NoSuchKey", "NotFound":
			return fmt.Errorf("%w: %w", ErrNotFound, err)
		case "PreconditionFailed":
			return fmt.Errorf("%w: %w", ErrExists, err)
		}
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		switch re.HTTPStatusCode() {
		case http.StatusPreconditionFailed:
			return fmt.Errorf("%w: %w", ErrExists, err)
		}
	}
	return err
}

// gatedConn checks its gate before every write (BackendOptions.WriteGate).
type gatedConn struct {
	net.Conn
	gate func() error
}

func (c gatedConn) Write(p []byte) (int, error) {
	if err := c.gate(); err != nil {
		return 0, fmt.Errorf("%w: %w", ErrGateClosed, err)
	}
	return c.Conn.Write(p)
}
