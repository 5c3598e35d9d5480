package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestErrorLinesRedacted runs the real binaries into errors that quote a
// secret: an S3 endpoint with a password in its user information and a
// token in its query (walship run, walreplay verify) and a Kafka broker
// written as user:password@host:port. Neither marker may show anywhere on
// stdout or stderr, the log lines and the final error line alike, and a
// URL the error quotes keeps its closing quote.
func TestErrorLinesRedacted(t *testing.T) {
	const pass, token = "SKPASS77", "QTOKEN55"
	endpoint := "http://ak:" + pass + "@nonexistent.invalid:9000/?token=" + token
	write := func(extra string) string {
		dir := t.TempDir()
		cfg := filepath.Join(dir, "walship.yaml")
		y := fmt.Sprintf("wal: {dir: %q}\nsource:\n  http: {listen: \"127.0.0.1:0\"}\nhttp: {listen: \"127.0.0.1:0\"}\n%s", filepath.Join(dir, "wal"), extra)
		if err := os.WriteFile(cfg, []byte(y), 0o600); err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	check := func(what string, r result, code int, markers ...string) {
		t.Helper()
		if r.code != code {
			t.Errorf("%s: exit %d, want %d\n%s", what, r.code, code, r)
		}
		for _, m := range markers {
			if strings.Contains(r.stdout+r.stderr, m) {
				t.Errorf("%s: %q shows:\n%s", what, m, r)
			}
		}
		lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
		last := lines[len(lines)-1]
		if !strings.Contains(last, "REDACTED") {
			t.Errorf("%s: the final error line names no redacted value: %q", what, last)
		}
		// A URL in backquotes keeps its closing one, in the log and on
		// the final line.
		for _, l := range lines {
			if i := strings.Index(l, "`http://"); i >= 0 && !strings.Contains(l[i+1:], "REDACTED`") {
				t.Errorf("%s: the quoted URL lost its closing backquote: %q", what, l)
			}
		}
	}

	cfg := write(fmt.Sprintf("archive:\n  url: s3://bkt/pre\n  s3: {endpoint: %q, region: us-east-1, path_style: true, access_key: ak, secret_key: %q}\n", endpoint, "SECRETKEY99"))
	check("walship run with an archive endpoint", walship(t, nil, "run", "--config", cfg), 1, pass, token, "SECRETKEY99")

	cfg = write("kafka: {brokers: [\"kuser:KPASS42@127.0.0.1:2\"]}\n")
	check("walship run with a broker", walship(t, nil, "run", "--config", cfg), 2, "KPASS42")

	walreplay := filepath.Join(filepath.Dir(walshipBin), "walreplay")
	cmd := exec.Command(walreplay, "verify", "--archive", "s3://bkt/pre", "--s3-endpoint", "http://u:PWLEAK1@127.0.0.1:1/?token=TKLEAK2",
		"--s3-region", "us-east-1", "--s3-path-style", "--timeout", "2s")
	cmd.Env = append(os.Environ(), "AWS_ACCESS_KEY_ID=ak", "AWS_SECRET_ACCESS_KEY=SECRETKEY99")
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	check("walreplay verify", r, 2, "PWLEAK1", "TKLEAK2", "SECRETKEY99")
}
