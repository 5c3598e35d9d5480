package secret

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"
	"testing"
)

func TestText(t *testing.T) {
	tests := []struct{ in, want string }{
		{"postgres://walship:hunter2@db:5432/app?sslmode=disable", "postgres://walship:REDACTED@db:5432/app?sslmode=disable"},
		{"dial postgres://u:p@ss:w0rd@h/db: refused", "dial postgres://u:REDACTED@h/db: refused"},
		{"postgres://walship@db/app", "postgres://walship@db/app"},
		{"s3://AKIAEXAMPLE:wJalrXUtnFEMI@minio:9000/bucket", "s3://AKIAEXAMPLE:REDACTED@minio:9000/bucket"},
		{"host=db user=walship password=hunter2 dbname=app", "host=db user=walship password=REDACTED dbname=app"},
		{"host=db password='a b c' dbname=app", "host=db password='REDACTED' dbname=app"},
		{`{"user":"u","password":"hunter2","n":1}`, `{"user":"u","password":"REDACTED","n":1}`},
		{"secret_key=wJalrXUtnFEMI/K7MDENG", "secret_key=REDACTED"},
		{"cannot parse `host=db password = hunter2 dbname=app`: bad", "cannot parse `host=db password = REDACTED dbname=app`: bad"},
		{"cannot parse `host=db password=hun\"ter2`: bad", "cannot parse `host=db password=REDACTED bad"},
		{`cannot parse "host=db password='it\'s secret' dbname=app"`, `cannot parse "host=db password='REDACTED' dbname=app"`},
		{`dsn password='unterminated and the rest`, `dsn password='REDACTED'`},
		{`password=hun\ ter2 x`, `password=REDACTED x`},
		{"Authorization=Bearer s3cr3t-t0ken", "Authorization=Bearer REDACTED"},
		{`{"authorization":"Bearer s3cr3t-t0ken"}`, `{"authorization":"REDACTED"}`},
		{"AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI", "AWS_SECRET_ACCESS_KEY=REDACTED"},
		{"https://b.s3/k?X-Amz-Credential=AKIA%2F1&X-Amz-Signature=abcdef&x=1", "https://b.s3/k?X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED&x=1"},
		{"{Username:walship Password:hunter2}", "{Username:walship Password:REDACTED}"},
		{"Authorization: Bearer s3cr3t-t0ken", "Authorization: Bearer REDACTED"},
		{"nothing secret here: key=accounts/1", "nothing secret here: key=accounts/1"},
		{"if token == nil", "if token == nil"},
		{`dsn: cannot parse "host=h password=x": failed to parse`, `dsn: cannot parse "host=h password=REDACTED failed to parse`},
		// A URL quoted by the text around it keeps its closing quote.
		{"Custom endpoint `http://ak:SKPASS77@nonexistent.invalid:9000/?token=QTOKEN55` was not found",
			"Custom endpoint `http://ak:REDACTED@nonexistent.invalid:9000/?token=REDACTED` was not found"},
		{`Put "http://u:pw@h:9000/b/k?X-Amz-Signature=abc": dial tcp`, `Put "http://u:REDACTED@h:9000/b/k?X-Amz-Signature=REDACTED": dial tcp`},
		{`endpoint 'http://u:p'w@h/?token=t'x' bad`, `endpoint 'http://u:REDACTED@h/?token=REDACTED' bad`},
		// A quote inside the password, not closing the URL: the cut at
		// the quote would have shown it (found by FuzzText).
		{"`postgres://0:00000`@db.example:5432/app", "`postgres://0:REDACTED@db.example:5432/app"},
		{"`http://h/?token=a`b` c", "`http://h/?token=REDACTED` c"},
		{"", ""},
	}
	for _, tt := range tests {
		got := Text(tt.in)
		if got != tt.want {
			t.Errorf("Text(%q)\n got %q\nwant %q", tt.in, got, tt.want)
		}
		if again := Text(got); again != got {
			t.Errorf("Text is not idempotent on %q: %q", got, again)
		}
	}
}

// TestTextLeavesProse: words that name secrets are not secrets; only
// structure (URLs, key=value, JSON, %+v fields, Authorization headers)
// marks a value.
func TestTextLeavesProse(t *testing.T) {
	for _, s := range []string{
		"the bearer token crosses the network",
		"Bearer tokens are checked on every request",
		"basic authentication is not supported",
		"source.http.token: must be at least 16 bytes",
		"archive.encryption_key_file: cannot read /etc/walship/key: permission denied",
		"the password is wrong for user walship",
		"kafka.sasl.password: required with kafka.sasl.mechanism",
		"secret: the token and the password are kept in a Secret",
		"compare password == other",
		"walreplay: following file:///var/archive (every 5s) until interrupted",
	} {
		if got := Text(s); got != s {
			t.Errorf("Text rewrote prose:\n  in  %q\n  out %q", s, got)
		}
	}
}

func TestSecretNeverPrints(t *testing.T) {
	s := Secret("hunter2")
	type cfg struct {
		DSN   string
		Token Secret `json:"token"`
	}
	c := cfg{DSN: "x", Token: s}
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "%s %v %+v %#v %q|", s, s, c, c, s)
	j, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	buf.Write(j)
	slog.New(slog.NewTextHandler(&buf, nil)).Info("m", "tok", s, "c", c)
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("m", "tok", s, "c", c)
	if strings.Contains(buf.String(), "hunter2") {
		t.Fatalf("secret leaked:\n%s", buf.String())
	}
	if s.Reveal() != "hunter2" {
		t.Fatalf("Reveal = %q", s.Reveal())
	}
	if Secret("").String() != "" {
		t.Fatal("the empty secret must print empty (unset stays visible)")
	}
	var back Secret
	if err := json.Unmarshal([]byte(`"abc"`), &back); err != nil || back.Reveal() != "abc" {
		t.Fatalf("unmarshal: %v %q", err, back.Reveal())
	}
}

func TestIsSecretName(t *testing.T) {
	for _, n := range []string{"password", "DB_PASSWORD", "sasl.password", "token", "bearer_token", "secret_key", "SecretKey", "access-key", "api_key", "encryption_key", "Authorization"} {
		if !IsSecretName(n) {
			t.Errorf("IsSecretName(%q) = false", n)
		}
	}
	for _, n := range []string{"key", "object_key", "lsn", "dsn", "url", "table", "user"} {
		if IsSecretName(n) {
			t.Errorf("IsSecretName(%q) = true", n)
		}
	}
}

func TestError(t *testing.T) {
	base := fmt.Errorf("connect postgres://u:hunter2@h/db: %w", fs.ErrNotExist)
	err := Error(base)
	if strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("leak: %v", err)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("errors.Is lost through Error")
	}
	if Error(nil) != nil {
		t.Fatal("Error(nil) != nil")
	}
}

// TestNoSecretInLogs logs a scenario full of secrets through both stdlib
// handlers with ReplaceAttr and greps every line for them.
func TestNoSecretInLogs(t *testing.T) {
	secrets := []string{"hunter2", "wJalrXUtnFEMI", "s3cr3t-t0ken", "saslpw"}
	var buf bytes.Buffer
	for _, h := range []slog.Handler{
		slog.NewTextHandler(&buf, &slog.HandlerOptions{ReplaceAttr: ReplaceAttr}),
		slog.NewJSONHandler(&buf, &slog.HandlerOptions{ReplaceAttr: ReplaceAttr}),
	} {
		log := slog.New(h)
		log.Info("connecting to postgres://walship:hunter2@db/app", "dsn", "host=db password=hunter2")
		log.Error("upload failed", "err", fmt.Errorf("s3: secret_key=wJalrXUtnFEMI rejected"), "key", "segments/0001")
		log.With("token", "s3cr3t-t0ken").Warn("listener", "authorization", "Bearer s3cr3t-t0ken", "req", "Authorization: Bearer s3cr3t-t0ken")
		log.Info("replica", "replica_url", "postgres://u:hunter2 x@h/db", "dsn", "host=h password = hunter2")
		log.WithGroup("kafka").Info("sasl", "password", "saslpw", "user", "walship")
		log.Info("typed", "token", Secret("s3cr3t-t0ken"), "url", fmt.Stringer(stringer("postgres://a:hunter2@h")))
		log.Info("structs", "cfg", struct {
			User string
			Pw   string `json:"password"`
		}{"walship", "hunter2"}, "opts", map[string]string{"dsn": "postgres://u:hunter2@h/db"}, "n", 42)
	}
	out := buf.String()
	for _, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("secret %q in log output:\n%s", s, out)
		}
	}
	for _, keep := range []string{"segments/0001", "@db/app", "user=walship"} {
		if !strings.Contains(out, keep) {
			t.Errorf("over-redaction: %q missing from\n%s", keep, out)
		}
	}
}

// FuzzText: redaction is idempotent and removes the password of any URL.
func FuzzText(f *testing.F) {
	f.Add("prefix ", "walship", "hunter2", " suffix")
	f.Add("", "u", "p@ss:w", "")
	f.Fuzz(func(t *testing.T, pre, user, pw, post string) {
		in := pre + "postgres://" + user + ":" + pw + "@db.example:5432/app" + post
		out := Text(in)
		if Text(out) != out {
			t.Fatalf("not idempotent: %q -> %q -> %q", in, out, Text(out))
		}
		// The password may legitimately appear in the output only as part
		// of what is not secret (the prefix, the user name, the rest of the
		// URL, the marker): a user "00000000" contains a password "000000".
		innocent := pre + "postgres://" + user + ":REDACTED@db.example:5432/app" + post
		clean := len(pw) >= 6 && !strings.ContainsAny(user+pw, " \t\n\r\"'<>/@:\x0b\x0c") && !strings.Contains(innocent, pw)
		if clean && strings.Contains(out, pw) {
			t.Fatalf("password %q survives in %q", pw, out)
		}
	})
}

type stringer string

func (s stringer) String() string { return string(s) }
