package secret

import (
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

// TestDSN covers each shape of connection string that used to leak all or
// part of its password, and that what is not secret stays readable.
func TestDSN(t *testing.T) {
	for _, tt := range []struct{ name, in, want string }{
		{"plain", "host=db user=walship password=hunter2 dbname=app", "host=db user=walship password=REDACTED dbname=app"},
		{"spaces around =", "host=db password = hunter2 dbname=app", "host=db password = REDACTED dbname=app"},
		{"tab and newline around =", "host=db password\t=\n hunter2 dbname=app", "host=db password\t=\n REDACTED dbname=app"},
		{"escaped space", `host=db password=hun\ ter2 dbname=app`, "host=db password=REDACTED dbname=app"},
		{"escaped backslash", `host=db password=hun\\ter2 dbname=app`, "host=db password=REDACTED dbname=app"},
		{"quoted with spaces", "host=db password='a b c' dbname=app", "host=db password='REDACTED' dbname=app"},
		{"quoted escaped quote", `host=db password='it\'s secret' dbname=app`, "host=db password='REDACTED' dbname=app"},
		{"quoted escaped backslash", `host=db password='a\\' dbname=app`, "host=db password='REDACTED' dbname=app"},
		{"unterminated quote", `host=db password='hunter2 dbname=app`, "host=db password='REDACTED'"},
		{"quote escaped at the end", `host=db password='hunter2\' dbname=app`, "host=db password='REDACTED'"},
		{"unterminated quote before", `host='db password=hunter2 dbname=app`, "host='db password=REDACTED"},
		{"word without =", "host=db password=hun ter2", "host=db password=REDACTED"},
		{"sslpassword", "host=db sslkey=/k sslpassword=pass1 user=u", "host=db sslkey=/k sslpassword=REDACTED user=u"},
		{"space after = (the driver reads the next word)", "host=db password= user=u", "host=db password= REDACTED"},
		{"empty password", "host=db user=u password=", "host=db user=u password="},
		{"no password", "host=db user=walship dbname=app", "host=db user=walship dbname=app"},
		{"url", "postgres://walship:hunter2@db:5432/app?sslmode=disable", "postgres://walship:REDACTED@db:5432/app?sslmode=disable"},
		{"url unencoded @", "postgres://walship:hun@ter2@db:5432/app", "postgres://walship:REDACTED@db:5432/app"},
		{"url unencoded : and @", "postgres://u:p@ss:w0rd@h/db", "postgres://u:REDACTED@h/db"},
		{"url unencoded / and ?", "postgres://u:p/a?ss@h/db?sslmode=require", "postgres://u:REDACTED@h/db?sslmode=require"},
		{"url percent-encoded", "postgresql://u:p%40ss%3Aw@h/db", "postgresql://u:REDACTED@h/db"},
		{"url spaces", "postgres://u:hun ter2@h/db", "postgres://u:REDACTED@h/db"},
		{"url query password", "postgres://u@h/db?sslmode=disable&password=hunter2&application_name=x", "postgres://u@h/db?sslmode=disable&password=REDACTED&application_name=x"},
		{"url query encoded key", "postgres://u@h/db?pass%77ord=hunter2", "postgres://u@h/db?pass%77ord=REDACTED"},
		{"url query sslpassword with @", "postgres://u@h/db?sslpassword=a@b:c", "postgres://u@h/db?sslpassword=REDACTED"},
		{"url query malformed", "postgres://u@h/db?password=a=b&x=1", "postgres://u@h/db?password=REDACTED"},
		{"url no password", "postgres://walship@db/app", "postgres://walship@db/app"},
		{"url upper-case scheme", "POSTGRES://u:hunter2@h/db", "POSTGRES://u:REDACTED@h/db"},
		{"url leading space", "  postgres://u:hunter2@h/db", "  postgres://u:REDACTED@h/db"},
		{"sqlite path", "sqlite:///var/lib/walship/r.db", "sqlite:///var/lib/walship/r.db"},
		{"s3 keys", "s3://AKIAEXAMPLE:wJalrXUtnFEMI@minio:9000/bucket", "s3://AKIAEXAMPLE:REDACTED@minio:9000/bucket"},
		{"empty", "", ""},
	} {
		got := DSN(tt.in)
		if got != tt.want {
			t.Errorf("%s: DSN(%q)\n got %q\nwant %q", tt.name, tt.in, got, tt.want)
		}
		if again := DSN(got); again != got {
			t.Errorf("%s: DSN is not idempotent: %q -> %q", tt.name, got, again)
		}
	}
}

// TestDSNMatchesDriver: for strings the driver accepts, DSN hides exactly
// the password the driver reads, whatever it is.
func TestDSNMatchesDriver(t *testing.T) {
	for _, dsn := range []string{
		"host=h dbname=d password = 'a b\\' c'",
		`host=h dbname=d password=x\ y\\z`,
		"postgres://u:pw%2Fx@h/d",
		"postgres://u@h/d?password=q%26r",
	} {
		cfg, err := pgconn.ParseConfig(dsn)
		if err != nil {
			t.Fatalf("driver refuses %q: %v", dsn, err)
		}
		if cfg.Password == "" || strings.Contains(DSN(dsn), cfg.Password) {
			t.Errorf("DSN(%q) = %q shows the password %q", dsn, DSN(dsn), cfg.Password)
		}
	}
}

// TestDSNError: the driver's parse errors quote the connection string with
// a mask that misses these shapes; DSNError restates them.
func TestDSNError(t *testing.T) {
	for _, dsn := range []string{
		"host=db password = hunter2x dbname=app sslmode=bogus",
		`host=db password=hunter2x\ more dbname=app sslmode=bogus`,
		`host=db password='hunter2x\' dbname=app`,
		`host=db password='hunter2x dbname=app`,
		"host=db password=ab hunter2x host=h",
		"postgres://u:p@ss:hunter2x@h/db",
		"postgres://u:hunter2x@h/db?sslmode=bogus",
		"postgres://u@h/db?password=hunter2x&sslmode=bogus",
	} {
		_, err := pgconn.ParseConfig(dsn)
		if err == nil {
			t.Fatalf("driver accepts %q", dsn)
		}
		got := DSNError(dsn, err)
		if strings.Contains(got.Error(), "hunter2x") {
			t.Errorf("DSNError for %q leaks: %v", dsn, got)
		}
		if !strings.Contains(got.Error(), `cannot parse "`) || !strings.Contains(got.Error(), "REDACTED") {
			t.Errorf("DSNError for %q does not say what failed: %v", dsn, got)
		}
		var pce *pgconn.ParseConfigError
		if !errors.As(got, &pce) {
			t.Errorf("DSNError hides the driver's error from errors.As")
		}
	}
	// A driver error that echoes a password's tail as the host.
	dsn := "postgres://u:abc@tailofpw@h/db"
	err := DSNError(dsn, errors.New("hostname resolving error: lookup tailofpw@h: no such host"))
	if strings.Contains(err.Error(), "tailofpw") {
		t.Errorf("DSNError leaks the password's tail: %v", err)
	}
	if DSNError(dsn, nil) != nil {
		t.Error("DSNError(nil) != nil")
	}
}

// TestAddr: user information pasted into a host:port value is hidden; a
// plain address is left alone.
func TestAddr(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:9092":               "127.0.0.1:9092",
		"[::1]:9092":                   "[::1]:9092",
		"kuser:KPASS42@127.0.0.1:2":    "kuser:REDACTED@127.0.0.1:2",
		"kuser:KP@SS42@127.0.0.1:2":    "kuser:REDACTED@127.0.0.1:2",
		"TOKEN42@broker:9092":          "REDACTED@broker:9092",
		"kafka://u:KPASS42@broker:909": "kafka://u:REDACTED@broker:909",
	} {
		got := Addr(in)
		if got != want {
			t.Errorf("Addr(%q) = %q, want %q", in, got, want)
		}
		if again := Addr(got); again != got {
			t.Errorf("Addr is not idempotent on %q: %q", got, again)
		}
	}
}
