package logx

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/walship/walship/internal/secret"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func lines(s string) []map[string]any {
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			panic(fmt.Sprintf("%v: %s", err, l))
		}
		out = append(out, m)
	}
	return out
}

func TestRepeatedErrorsRateLimited(t *testing.T) {
	var buf bytes.Buffer
	clk := &clock{t: time.Unix(1000, 0)}
	log, err := New(Options{Format: "json", Writer: &buf, RepeatWindow: 10 * time.Second, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("connection refused")
	for i := 0; i < 5; i++ { // one written, four suppressed
		log.Error("kafka produce failed", "err", boom, "attempt", i)
		clk.advance(time.Second)
	}
	log.Error("kafka produce failed", "err", errors.New("other error"))      // different error text: written
	log.With("sink", "archive").Error("kafka produce failed", "err", boom)   // different scope: written
	log.Info("kafka produce failed", "err", boom)                            // info is never limited
	log.Error("kafka produce failed", "err", boom, "topic", "walship.other") // another string attribute: written
	clk.advance(10 * time.Second)
	log.Error("kafka produce failed", "err", boom) // after the window: written with repeated=4
	log.Error("kafka produce failed", "err", boom) // suppressed again

	got := lines(buf.String())
	if len(got) != 6 {
		t.Fatalf("%d lines, want 6:\n%s", len(got), buf.String())
	}
	if got[4]["topic"] != "walship.other" {
		t.Errorf("record with another string attribute merged: %v", got[4])
	}
	got = append(got[:4], got[5:]...)
	if got[0]["attempt"] != 0.0 || got[0]["repeated"] != nil {
		t.Errorf("first line: %v", got[0])
	}
	if got[1]["err"] != "other error" || got[2]["sink"] != "archive" || got[3]["level"] != "INFO" {
		t.Errorf("distinct records merged: %v", got[1:4])
	}
	if got[4]["repeated"] != 4.0 {
		t.Errorf("after the window: repeated = %v, want 4 (%v)", got[4]["repeated"], got[4])
	}
}

func TestFormatAndLevel(t *testing.T) {
	var buf bytes.Buffer
	log, err := New(Options{Writer: &buf, Level: "warn"}) // auto on a buffer = JSON
	if err != nil {
		t.Fatal(err)
	}
	log.Info("hidden")
	log.Warn("shown", "n", 1)
	if s := buf.String(); strings.Contains(s, "hidden") || !strings.HasPrefix(s, `{"time"`) {
		t.Fatalf("auto/warn output: %q", s)
	}
	buf.Reset()
	log, _ = New(Options{Writer: &buf, Format: "text", Level: "debug"})
	log.Debug("dbg")
	if !strings.Contains(buf.String(), "level=DEBUG msg=dbg") {
		t.Fatalf("text/debug output: %q", buf.String())
	}
	if _, err := New(Options{Format: "xml"}); err == nil || !strings.Contains(err.Error(), "log.format") {
		t.Fatalf("bad format: %v", err)
	}
	if _, err := New(Options{Level: "loud"}); err == nil || !strings.Contains(err.Error(), "log.level") {
		t.Fatalf("bad level: %v", err)
	}
}

// TestNoSecretInLogOutput runs a scenario that logs every kind of secret
// walship handles through both formats and greps all output.
func TestNoSecretInLogOutput(t *testing.T) {
	secrets := []string{"pgpass-9f3a", "AKIAsecret+wJalr/K7MDENG", "tok-5b2c7e1d9a", "sasl-pw-77", "keymaterial0123"}
	for _, format := range []string{"json", "text"} {
		var buf bytes.Buffer
		log, err := New(Options{Writer: &buf, Format: format, Level: "debug"})
		if err != nil {
			t.Fatal(err)
		}
		dsn := "postgres://walship:pgpass-9f3a@db:5432/app?sslmode=disable"
		log.Info("starting source", "dsn", dsn)
		log.Error("replication failed", "err", fmt.Errorf("connect %s: %w", dsn, errors.New("refused")))
		log.Warn("s3 error", "err", errors.New("s3: secret_key=AKIAsecret+wJalr/K7MDENG: SignatureDoesNotMatch"))
		log.Debug("http", "authorization", "Bearer tok-5b2c7e1d9a", "token", secret.Secret("tok-5b2c7e1d9a"))
		log.WithGroup("kafka").With("sasl_password", "sasl-pw-77").Info("connecting", "brokers", "127.0.0.1:9092")
		log.Info("dsn " + "host=db user=walship password=pgpass-9f3a")
		log.Info("archive", "encryption_key", "keymaterial0123", "key", "lineage/0001/segments/00000001")
		out := buf.String()
		for _, s := range secrets {
			if strings.Contains(out, s) {
				t.Errorf("%s: secret %q leaked:\n%s", format, s, out)
			}
		}
		if !strings.Contains(out, "lineage/0001/segments/00000001") || !strings.Contains(out, "db:5432/app") {
			t.Errorf("%s: useful context redacted too:\n%s", format, out)
		}
	}
}
