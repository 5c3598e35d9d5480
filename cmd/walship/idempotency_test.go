package main

import (
	"strings"
	"testing"
)

// TestAppendIdempotencyKey: `walship append --idempotency-key` appends its
// input whole and remembers the key in the log, so that a second run (a new
// process reopening the WAL) with the same key and input appends nothing
// and prints the original acknowledgements; other input under the key
// fails appending nothing, and bad input appends nothing, not even the
// lines before the bad one.
func TestAppendIdempotencyKey(t *testing.T) {
	dir := t.TempDir()
	in := []byte(`{"table":"public.t","op":"c","key":{"id":1},"after":{"id":1}}
{"table":"public.t","op":"c","key":{"id":2},"after":{"id":2}}
{"table":"public.t","op":"c","key":{"id":3},"after":{"id":3}}
`)
	first := mustWalship(t, in, "append", "--wal", dir, "--idempotency-key", "batch-2024-05-01")
	if n := len(parseAcks(t, first.stdout)); n != 3 {
		t.Fatalf("first run: %d acknowledgements, want 3: %v", n, first)
	}
	again := mustWalship(t, in, "append", "--wal", dir, "--idempotency-key", "batch-2024-05-01")
	if again.stdout != first.stdout || !strings.Contains(again.stderr, "already appended") {
		t.Fatalf("retry: %v\nwant the first run's output %q", again, first.stdout)
	}
	other := walship(t, []byte(`{"table":"public.t","op":"c","key":{"id":9},"after":{"id":9}}`+"\n"),
		"append", "--wal", dir, "--idempotency-key", "batch-2024-05-01")
	if other.code != 1 || !strings.Contains(other.stderr, "--idempotency-key") || !strings.Contains(other.stderr, "nothing appended") {
		t.Fatalf("other input under the key: %v, want exit 1 naming --idempotency-key", other)
	}
	bad := walship(t, []byte(`{"table":"public.t","op":"c","key":{"id":4},"after":{"id":4}}`+"\n"+`{"table":"public.t","op":"x"}`+"\n"),
		"append", "--wal", dir, "--idempotency-key", "batch-2")
	if bad.code == 0 || !strings.Contains(bad.stderr, "line 2") || !strings.Contains(bad.stderr, "nothing appended") {
		t.Fatalf("bad input: %v, want a failure naming line 2", bad)
	}
	if usage := walship(t, in, "append", "--wal", dir, "--idempotency-key", "has space"); usage.code != 2 {
		t.Fatalf("a key with a space: %v, want exit 2", usage)
	}
	if usage := walship(t, in, "append", "--wal", dir, "--idempotency-key", "k", "--idempotency-window", "1ns"); usage.code != 2 || !strings.Contains(usage.stderr, "--idempotency-window") {
		t.Fatalf("a window of 1ns: %v, want exit 2 naming --idempotency-window", usage)
	}
	// An empty key given is a usage error, not "no key".
	for _, args := range [][]string{{"--idempotency-key", ""}, {"--idempotency-key="}} {
		usage := walship(t, in, append([]string{"append", "--wal", dir}, args...)...)
		if usage.code != 2 || !strings.Contains(usage.stderr, "--idempotency-key") || !strings.Contains(usage.stderr, "1 to 128") {
			t.Fatalf("append %q: %v, want exit 2 naming --idempotency-key and 1 to 128 bytes", args, usage)
		}
	}
	if n := len(parseDump(t, mustWalship(t, nil, "dump", "--wal", dir).stdout)); n != 3 {
		t.Fatalf("the log has %d changes, want the first run's 3", n)
	}
}
