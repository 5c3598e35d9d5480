package main

import (
	"flag"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/walship/walship/archive"

	"github.com/walship/walship/internal/cli"
)

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	return program.NewFlagSet(name, stderr)
}
func parseFlags(fs *flag.FlagSet, args []string) (bool, error) { return cli.ParseFlags(fs, args) }
func requireFlag(name, value string) error                     { return cli.RequireFlag(name, value) }
func usageError(format string, args ...any) error              { return cli.UsageError(format, args...) }

// archiveFlags are the flags that locate and open an archive.
type archiveFlags struct {
	url       string
	endpoint  string
	region    string
	pathStyle bool
	caFile    string
	insecure  bool
	lineage   string
	keyFile   string
	keyEnv    string
	accessKey string
	secretKey string
	timeout   time.Duration
}

func (a *archiveFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&a.url, "archive", "", "archive URL: file:///abs/dir or s3://bucket/prefix")
	fs.StringVar(&a.endpoint, "s3-endpoint", os.Getenv("AWS_ENDPOINT_URL_S3"), "S3 endpoint URL for non-AWS servers (default $AWS_ENDPOINT_URL_S3, then the AWS configuration)")
	fs.StringVar(&a.region, "s3-region", "", "S3 region (default from the standard AWS environment and config)")
	fs.BoolVar(&a.pathStyle, "s3-path-style", envBool("AWS_S3_USE_PATH_STYLE"), "use path-style S3 addressing (MinIO and most non-AWS servers)")
	fs.StringVar(&a.caFile, "s3-ca-file", "", "PEM file of CA certificates to trust for an https S3 endpoint")
	fs.BoolVar(&a.insecure, "s3-insecure-skip-verify", false, "do not verify the S3 server's TLS certificate (tests only)")
	fs.StringVar(&a.accessKey, "s3-access-key", "", "S3 access key (default from AWS_ACCESS_KEY_ID and the AWS configuration)")
	fs.StringVar(&a.secretKey, "s3-secret-key", "", "S3 secret key, with --s3-access-key (visible to other local users in the process list: prefer AWS_SECRET_ACCESS_KEY)")
	fs.DurationVar(&a.timeout, "timeout", archive.DefaultRetryMaxElapsed, "how long one archive request may take, retries included, before walreplay gives up with exit 2")
	fs.StringVar(&a.lineage, "lineage", "", "lineage to use when the archive holds several")
	fs.StringVar(&a.keyFile, "encryption-key-file", "", "file holding the archive's encryption key (as archive.encryption_key_file)")
	fs.StringVar(&a.keyEnv, "encryption-key-env", "", "environment variable holding the archive's encryption key (as archive.encryption_key_env)")
}

func envBool(name string) bool {
	b, _ := strconv.ParseBool(os.Getenv(name))
	return b
}
