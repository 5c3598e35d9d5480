package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/walship/walship/config"
	"github.com/walship/walship/internal/cli"
	"github.com/walship/walship/internal/secret"
	"github.com/walship/walship/pgsource"
	"github.com/walship/walship/pitr"
	"github.com/walship/walship/replica"
)

// marker is the heart of every generated password: it must never show.
const marker = "xQ7vMARKERk2"

// junk is what a password is padded with around the marker: the
// characters that confused the redactors before (spaces, quotes,
// backslash escapes, '@', ':', '/', '%', '?').
var junk = []string{" ", "  ", "'", `\`, `\'`, `\\`, "@", ":", "/", "%", "%40", "%zz", "?", "a", "Z", "9", "-", `"`}

// genDSN builds a connection string whose password holds marker. shape
// picks the form: keyword/value with the password quoted, escaped, raw,
// raw in quotes or with an unterminated quote; a URL with the password in
// the user information (percent-encoded or raw) or in the query
// (percent-encoded or raw).
func genDSN(seed uint64, shape uint8) string {
	r := rand.New(rand.NewPCG(seed, uint64(shape)))
	pad := func() string {
		var b strings.Builder
		for range r.IntN(6) {
			b.WriteString(junk[r.IntN(len(junk))])
		}
		return b.String()
	}
	pw := pad() + marker + pad()
	pick := func(xs ...string) string { return xs[r.IntN(len(xs))] }
	kv := func(val string) string {
		key := pick("password", "sslpassword", "password", "PASSWORD")
		pair := key + pick("", " ", "  ", "\t") + "=" + pick("", " ", "  ", "\t") + val
		parts := []string{}
		for _, p := range []string{"host=db", "user=walship", "dbname=app", "sslmode=disable", "application_name='a b'"} {
			if r.IntN(2) == 0 {
				parts = append(parts, p)
			}
		}
		at := r.IntN(len(parts) + 1)
		parts = append(parts[:at], append([]string{pair}, parts[at:]...)...)
		return strings.Join(parts, pick(" ", "  ", "\t"))
	}
	quote := strings.NewReplacer(`\`, `\\`, `'`, `\'`)
	escape := strings.NewReplacer(`\`, `\\`, `'`, `\'`, " ", `\ `)
	enc := func(s string) string { return strings.ReplaceAll(url.QueryEscape(s), "+", "%20") }
	scheme := pick("postgres://", "postgresql://")
	tail := pick("", "?sslmode=disable", "?sslmode=disable&application_name=x")
	switch shape % 9 {
	case 0:
		return kv("'" + quote.Replace(pw) + "'")
	case 1:
		return kv(escape.Replace(pw))
	case 2:
		return kv(pw)
	case 3:
		return kv("'" + pw + "'")
	case 4:
		return kv("'" + quote.Replace(pw))
	case 5:
		return scheme + "walship:" + enc(pw) + "@db:5432/app" + tail
	case 6:
		return scheme + "walship:" + pw + "@db:5432/app" + tail
	case 7:
		return scheme + "walship@db:5432/app?sslmode=disable&password=" + enc(pw) + pick("", "&application_name=x")
	default:
		return scheme + "walship@db:5432/app?sslmode=disable&password=" + pw + pick("", "&application_name=x")
	}
}

// FuzzRedactDSN builds random connection strings around a marker
// password and checks that the marker shows nowhere walship prints a
// connection string: the redactor's output, the final error line of a
// program (cli.ErrorLine), pgsource's DSN validation,
// replica.ParseURL and replica.Open, config validation of
// source.postgres.dsn and replica.url, and walreplay restore's summary and
// --json.
func FuzzRedactDSN(f *testing.F) {
	for shape := range uint8(9) {
		f.Add(uint64(1), shape)
		f.Add(uint64(42), shape)
	}
	f.Fuzz(func(t *testing.T, seed uint64, shape uint8) {
		checkNoMarker(t, genDSN(seed, shape))
	})
}

func checkNoMarker(t *testing.T, dsn string) {
	t.Helper()
	leak := func(where, out string) {
		t.Helper()
		if strings.Contains(out, marker) {
			t.Fatalf("the password shows in %s\n  dsn: %q\n  out: %q", where, dsn, out)
		}
	}
	red := secret.DSN(dsn)
	leak("secret.DSN", red)
	if again := secret.DSN(red); again != red {
		t.Fatalf("secret.DSN is not idempotent: %q -> %q", red, again)
	}
	if !strings.ContainsAny(dsn, " \t") {
		// In free text a space ends a URL or value: only a connection
		// string without one can be told whole.
		leak("secret.Text", secret.Text(dsn))
		// The line a program exits with, for an error that quotes the
		// connection string as SDKs and the standard library do.
		leak("the final error line", cli.ErrorLine("walreplay", fmt.Errorf("connect `%s` failed", dsn)))
		leak("the final error line", cli.ErrorLine("walreplay", fmt.Errorf("connect %s: refused", dsn)))
		if strings.Contains(dsn, "://") {
			// %q escapes backslashes, which changes how a keyword/value
			// string reads (such errors go through secret.DSNError); a
			// URL's parts stay where they were.
			leak("the final error line", cli.ErrorLine("walreplay", fmt.Errorf("connect %q: refused", dsn)))
		}
	}

	o := pgsource.Options{DSN: dsn}
	if err := o.Validate(); err != nil {
		leak("pgsource.Options.Validate", err.Error())
	}
	if _, _, err := replica.ParseURL(dsn); err != nil {
		leak("replica.ParseURL", err.Error())
	} else {
		// A cancelled context: the driver parses, then gives up before
		// any network traffic, and its error names the host.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := replica.Open(ctx, dsn, replica.Options{}); err != nil {
			leak("replica.Open", err.Error())
		}
	}

	q, err := yaml.Marshal(dsn)
	if err != nil {
		t.Fatal(err)
	}
	v := strings.TrimSpace(string(q))
	for _, doc := range []string{
		"wal: {dir: /w}\nsource:\n  postgres:\n    dsn: " + v + "\n",
		"wal: {dir: /w}\nreplica:\n  url: " + v + "\n",
	} {
		if _, err := config.Parse([]byte(doc), func(string) (string, bool) { return "", false }); err != nil {
			leak("config validation", err.Error())
		}
	}

	res := &pitr.Result{Txns: 3, Position: 7, Elapsed: time.Second, LastCommitTime: time.Unix(1, 0)}
	leak("walreplay restore's summary", restoreSummary(dsn, res))
	out := newRestoreJSON("file:///archive", dsn, false, &pitr.Plan{})
	out.Result = toResultJSON(res)
	j, err := json.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	leak("walreplay restore --json", string(j))
}

// TestRestoreOutputRedactsTo: the summary and --json of `walreplay restore
// --to postgres://user:pw@...` name the destination without its password.
func TestRestoreOutputRedactsTo(t *testing.T) {
	to := "postgres://walship:hunter2@db:5432/app?sslmode=disable"
	res := &pitr.Result{Txns: 3, Position: 7, Elapsed: time.Second}
	if got, want := restoreSummary(to, res), "restored postgres://walship:REDACTED@db:5432/app?sslmode=disable: 3 transactions"; !strings.HasPrefix(got, want) {
		t.Errorf("summary %q, want it to start with %q", got, want)
	}
	j, err := json.Marshal(newRestoreJSON("file:///archive", to, false, &pitr.Plan{}))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(j), `"to":"postgres://walship:REDACTED@db:5432/app?sslmode=disable"`) || strings.Contains(string(j), "hunter2") {
		t.Errorf("--json %s", j)
	}
}

// TestRedactEachShape runs the fuzz checks over every generated shape for
// a few seeds, so each case runs in every `go test`, not only when fuzzing.
func TestRedactEachShape(t *testing.T) {
	for seed := range uint64(40) {
		for shape := range uint8(9) {
			checkNoMarker(t, genDSN(seed, shape))
		}
	}
	for _, dsn := range []string{
		"host=db password = " + marker + " dbname=app",
		`host=db password=a\ ` + marker + " dbname=app",
		`host=db password='a\'` + marker + "' dbname=app",
		`host=db password='` + marker + " dbname=app",
		"postgres://walship:a@" + marker + "@db/app",
		"postgres://walship:a@" + marker + ":x@db/app",
	} {
		checkNoMarker(t, dsn)
	}
}
