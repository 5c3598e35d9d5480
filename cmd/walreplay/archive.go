package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/walship/walship/internal/cli"

	"github.com/walship/walship/archive"
	"github.com/walship/walship/internal/seal"
	"github.com/walship/walship/internal/secret"
	"github.com/walship/walship/pitr"
)

// openArchive opens the archive named by the flags, reporting each retried
// failure on stderr. An archive that cannot be opened is exit 2.
func openArchive(ctx context.Context, af archiveFlags, stderr io.Writer) (*pitr.ArchiveSource, error) {
	if err := requireFlag("archive", af.url); err != nil {
		return nil, err
	}
	if af.timeout <= 0 {
		return nil, usageError("--timeout %s: want a positive duration", af.timeout)
	}
	if (af.accessKey == "") != (af.secretKey == "") {
		return nil, usageError("--s3-access-key and --s3-secret-key go together")
	}
	sealer, err := seal.FromConfig(af.keyFile, af.keyEnv)
	if err != nil {
		return nil, usageError("encryption key: %v", err)
	}
	opts := archive.Options{
		Backend: archive.BackendOptions{MustExist: true, Endpoint: af.endpoint, Region: af.region, PathStyle: af.pathStyle,
			CAFile: af.caFile, InsecureSkipVerify: af.insecure, AccessKey: af.accessKey, SecretKey: af.secretKey,
			RetryTimeout: af.timeout, OnRetry: retryReporter(stderr)},
		Logger: slog.New(slog.DiscardHandler),
	}
	if sealer != nil {
		opts.Seal = sealer
	}
	a, err := archive.Open(ctx, af.url, opts)
	if errors.Is(err, archive.ErrNoCredentials) {
		return nil, cli.Exit(exitUsage, errors.New(noCredentials))
	}
	if err != nil {
		return nil, cli.Exit(exitUsage, err)
	}
	return pitr.NewArchiveSource(a), nil
}

// noCredentials is the whole message for an S3 archive without credentials:
// what to set, not the SDK's account of its provider chain.
const noCredentials = "no S3 credentials: set --s3-access-key/--s3-secret-key or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"

// retryReporter writes one line per retried archive call to stderr: what
// failed, which attempt, and the wait before the next. A silent wait on a
// dead server looks like a hang.
func retryReporter(stderr io.Writer) func(archive.RetryEvent) {
	var mu sync.Mutex
	return func(e archive.RetryEvent) {
		mu.Lock()
		defer mu.Unlock()
		// Redacted like the final error line: the SDK's text quotes the
		// endpoint, user information and query included.
		fmt.Fprint(stderr, secret.Text(fmt.Sprintf("walreplay: attempt %d: %v; retrying in %s",
			e.Attempt, e.Err, e.Wait.Round(time.Millisecond)))+"\n")
	}
}

// reachable wraps an archive-reading command: an archive that did not
// answer within --timeout is exit 2, with what to check.
func reachable(run func(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error) func(
	ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	return func(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
		err := run(ctx, args, stdin, stdout, stderr)
		var ue *archive.UnavailableError
		if !errors.As(err, &ue) {
			return err
		}
		ep := secret.URL(ue.Endpoint)
		if ep == "" {
			ep = "the default AWS S3 endpoint"
		}
		return cli.Exit(exitUsage, fmt.Errorf("the archive's S3 server at %s did not answer within %s (--timeout, %d attempts; last error: %v): "+
			"check the endpoint (--s3-endpoint, AWS_ENDPOINT_URL_S3), that the network reaches it, and the credentials",
			ep, ue.Timeout, ue.Attempts, ue.Err))
	}
}

// catalogExit is exit 2 for a catalog that cannot be read, saying so
// plainly when it is because the archive is encrypted and no key was given.
func catalogExit(err error) error {
	var ee *archive.EncryptedError
	if errors.As(err, &ee) {
		return cli.Exit(exitUsage, fmt.Errorf("the archive is encrypted (key id %s): give its key with --encryption-key-file or --encryption-key-env (%s is sealed)",
			ee.KeyID, ee.Key))
	}
	return cli.Exit(exitUsage, fmt.Errorf("read the archive's catalog: %w", err))
}

// requireKey fails (exit 2) when the archive holds sealed objects and no
// key was given: they cannot be read, and are not corrupt. (With a key,
// every object must be sealed with it: the archive package refuses the
// others as damage.)
func requireKey(ctx context.Context, src *pitr.ArchiveSource, af archiveFlags) error {
	if af.keyFile != "" || af.keyEnv != "" {
		return nil
	}
	cat, err := src.Catalog(ctx)
	if err != nil {
		return catalogExit(err)
	}
	ids := map[string]bool{}
	for _, s := range cat.Segments {
		if s.KeyID != "" {
			ids[s.KeyID] = true
		}
	}
	for _, s := range cat.Snapshots {
		if s.KeyID != "" {
			ids[s.KeyID] = true
		}
	}
	if len(ids) == 0 {
		return nil
	}
	var list []string
	for id := range ids {
		list = append(list, id)
	}
	slices.Sort(list)
	return cli.Exit(exitUsage, fmt.Errorf("the archive is encrypted (key id %s): give its key with --encryption-key-file or --encryption-key-env",
		strings.Join(list, ", ")))
}
