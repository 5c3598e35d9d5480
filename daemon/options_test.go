package daemon

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/walship/walship/config"
	"github.com/walship/walship/internal/secret"
	"github.com/walship/walship/obs"
)

// The daemon is the one place that turns configuration into the
// components' options; these tests pin that translation.

func TestLagOptions(t *testing.T) {
	c, err := config.Parse([]byte("wal: {dir: /tmp/w}\nsource: {http: {}}\nlag: {window: 2m, warn: {p99: 1s}, critical: {p50: 3s}}\n"), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	m, err := obs.New(obs.Options{NoProcessCollectors: true, Lag: lagOptions(c.Lag, c.Archive)})
	if err != nil {
		t.Fatal(err)
	}
	o := m.LagOptions()
	if o.Window != 2*time.Minute || o.Warn.P99 != time.Second || o.Warn.P50 != obs.DefaultWarn.P50 || o.Critical.P50 != 3*time.Second || o.Critical.P99 != 10*time.Second {
		t.Fatalf("%+v", o)
	}
	if len(o.Components) != 0 {
		t.Fatalf("objectives for components without an archive: %+v", o.Components)
	}

	// With an archive, its lag is judged against archive.timeout.
	a := lagOptions(c.Lag, &config.Archive{Timeout: 10 * time.Second}).Components[obs.ComponentArchive]
	if want := (obs.Thresholds{P50: 10 * time.Second, P95: 20 * time.Second, P99: 30 * time.Second, P999: 50 * time.Second}); a.Warn != want || a.Critical != (obs.Thresholds{}) {
		t.Fatalf("archive objectives %+v", a)
	}
}

func TestHTTPOptions(t *testing.T) {
	l := config.Listener{Listen: "0.0.0.0:9000", Token: "0123456789abcdef", TLSCert: "c.pem", TLSKey: "k.pem"}
	o := httpOptions("source.http", l, nil)
	if o.Addr != l.Listen || o.Token != secret.Secret(l.Token) || o.TLSCert != l.TLSCert || o.TLSKey != l.TLSKey || o.Name != "source.http" {
		t.Fatalf("%+v", o)
	}
	if !slices.Equal(o.Public, []string{"/healthz"}) {
		t.Fatalf("public paths %q, want only /healthz", o.Public)
	}
}

func TestArchiveOptions(t *testing.T) {
	a := &config.Archive{URL: "s3://b/p", S3: config.S3{Endpoint: "https://s3.example", Region: "eu-west-1", PathStyle: true,
		AccessKey: "ak", SecretKey: "sk", CAFile: "ca.pem"}}
	o, err := archiveOptions(a, nil)
	if err != nil {
		t.Fatal(err)
	}
	b := o.Backend
	if b.Endpoint != a.S3.Endpoint || b.Region != a.S3.Region || !b.PathStyle || b.AccessKey != "ak" || b.SecretKey != "sk" || b.CAFile != "ca.pem" {
		t.Fatalf("backend %+v", b)
	}
	if o.Seal != nil {
		t.Fatalf("no key configured, but objects are sealed with %v", o.Seal)
	}

	t.Setenv("WALSHIP_TEST_ARCHIVE_KEY", strings.Repeat("ab01", 16))
	a.EncryptionKeyEnv = "WALSHIP_TEST_ARCHIVE_KEY"
	if o, err = archiveOptions(a, nil); err != nil || o.Seal == nil {
		t.Fatalf("key from the environment: %v %v", o.Seal, err)
	}

	a.EncryptionKeyEnv = "WALSHIP_TEST_ARCHIVE_KEY_UNSET"
	if _, err = archiveOptions(a, nil); err == nil || !strings.HasPrefix(err.Error(), "archive encryption key: ") {
		t.Fatalf("unset key variable: %v", err)
	}
}
