//go:build unix

package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestRunBadEncryptionKey: `walship run` with an archive key that is not
// a usable key (a placeholder of zero bytes, a password, a FIFO, a
// device, or the same in archive.encryption_key_env) exits 2 naming the
// file or variable and why, before any listener opens or the WAL is
// created.
func TestRunBadEncryptionKey(t *testing.T) {
	dir := t.TempDir()
	zero := filepath.Join(dir, "zero.key")
	os.WriteFile(zero, []byte(strings.Repeat("0", 64)+"\n"), 0o600)
	password := filepath.Join(dir, "password.key")
	os.WriteFile(password, []byte("correct horse battery staple 123\n"), 0o600)
	fifo := filepath.Join(dir, "fifo.key")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("WALSHIP_TEST_ZERO_KEY", strings.Repeat("0", 64))
	wal := filepath.Join(dir, "wal")
	cfg := filepath.Join(dir, "c.yaml")
	for key, want := range map[string]string{
		"encryption_key_file: " + zero:              "all equal to 0x00: a placeholder, not a random key; want 64 hex characters or base64 of 32 random bytes (for example: head -c32 /dev/urandom | base64) (key file " + zero + ")",
		"encryption_key_file: " + password:          "that is a password",
		"encryption_key_file: " + fifo:              "key file " + fifo + " is a FIFO, not a regular file",
		"encryption_key_file: /dev/zero":            "key file /dev/zero is a device, not a regular file",
		"encryption_key_env: WALSHIP_TEST_ZERO_KEY": "/urandom | base64) (environment variable WALSHIP_TEST_ZERO_KEY)",
	} {
		os.WriteFile(cfg, []byte("wal: {dir: "+wal+"}\nsource: {http: {listen: \"127.0.0.1:0\"}}\nhttp: {listen: \"127.0.0.1:0\"}\n"+
			"archive: {url: \"file://"+filepath.Join(dir, "arch")+"\", "+key+"}\n"), 0o644)
		res := walship(t, nil, "run", "--config", cfg)
		if res.code != 2 || !strings.Contains(res.stderr, "archive encryption key: ") || !strings.Contains(res.stderr, want) || strings.Contains(res.stderr, "listening") {
			t.Fatalf("%s: %v, want exit 2 with %q before any listener", key, res, want)
		}
		if _, err := os.Stat(wal); err == nil {
			t.Fatalf("%s: the WAL was created before the refusal", key)
		}
	}
}
