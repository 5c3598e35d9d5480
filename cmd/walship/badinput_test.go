package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/walship/walship/change"
)

// TestAppendBadInput puts a malformed line at line k of otherwise valid
// input and checks docs/DESIGN.md §4.10 and §5.1: a non-zero exit with a message
// naming line k and the problem, the k-1 transactions before it
// acknowledged and durable, nothing after it appended.
func TestAppendBadInput(t *testing.T) {
	t.Parallel()
	const ok = `{"table":"t","op":"c","after":{"id":1}}`
	for _, tc := range []struct {
		name, line string
		want       []string // substrings of stderr besides "line k"
	}{
		{"truncated JSON", `{"table":"t","op":"c",`, []string{"JSON"}},
		{"invalid JSON", `{"table":"t","op":c}`, []string{"invalid JSON"}},
		{"trailing data", ok + ` {}`, []string{"after the JSON value"}},
		{"not an object", `[1,2]`, []string{"expected a JSON object"}},
		{"null", `null`, []string{"expected a JSON object"}},
		{"empty object", `{}`, []string{`"changes"`}},
		{"unknown op", `{"table":"t","op":"x","after":{"id":1}}`, []string{`unknown op "x"`}},
		{"missing op", `{"table":"t","after":{"id":1}}`, []string{"op", "missing"}},
		{"unknown field", `{"table":"t","op":"c","after":{"id":1},"colour":"red"}`, []string{`unknown field "colour"`}},
		{"unknown field in changes", `{"changes":[` + ok + `,{"table":"t","op":"c","after":{"id":2},"bogus":1}]}`, []string{"changes[1]", `unknown field "bogus"`}},
		{"duplicate field", `{"table":"t","op":"c","op":"c","after":{"id":1}}`, []string{`duplicate field "op"`}},
		{"duplicate column", `{"table":"t","op":"c","after":{"id":1,"id":2}}`, []string{"after", "duplicate"}},
		{"insert without after", `{"table":"t","op":"c","key":{"id":1}}`, []string{"after", "required"}},
		{"insert without after in changes", `{"changes":[` + ok + `,{"table":"t","op":"c","key":{"id":1}}]}`, []string{"changes[1].after", "required"}},
		{"insert with before", `{"table":"t","op":"c","before":{"id":0},"after":{"id":1}}`, []string{"before", "not allowed"}},
		{"delete without key", `{"table":"t","op":"d"}`, []string{"key or before"}},
		{"truncate with after", `{"table":"t","op":"t","after":{"id":1}}`, []string{"after", "not allowed"}},
		{"message without message", `{"op":"m"}`, []string{"message", "required"}},
		{"missing table", `{"op":"c","after":{"id":1}}`, []string{"table", "missing"}},
		{"bad table name", `{"table":"a.b.c","op":"c","after":{"id":1}}`, []string{"invalid table name"}},
		{"empty changes", `{"changes":[]}`, []string{"empty transaction"}},
		{"changes and change fields", `{"changes":[` + ok + `],"op":"c"}`, []string{"op", `together with "changes"`}},
		{"bad $type", `{"table":"t","op":"c","after":{"id":{"$type":"bogus","value":1}}}`, []string{"after.id", `unknown $type "bogus"`}},
		{"$type without value", `{"table":"t","op":"c","after":{"id":{"$type":"int"}}}`, []string{"after.id", `missing "value"`}},
		{"bad base64", `{"table":"t","op":"c","after":{"b":{"$type":"bytes","value":"!!!"}}}`, []string{"after.b", "base64"}},
		{"int out of range", `{"table":"t","op":"c","after":{"i":{"$type":"int","value":"99999999999999999999"}}}`, []string{"after.i", "int64"}},
		{"bad timestamp", `{"table":"t","op":"c","after":{"ts":{"$type":"timestamp","value":"yesterday"}}}`, []string{"after.ts", "RFC 3339"}},
		{"bad commit_time", `{"table":"t","op":"c","after":{"id":1},"commit_time":"2024-13-01"}`, []string{"commit_time", "RFC 3339"}},
		{"far-future commit_time", `{"table":"t","op":"c","after":{"id":1},"commit_time":"2099-01-01T00:00:00Z"}`,
			[]string{"commit_time", "2099-01-01T00:00:00Z", "5m0s", "--max-commit-time-skew"}},
		{"bad source_lsn", `{"table":"t","op":"c","after":{"id":1},"source_lsn":"xyz"}`, []string{"source_lsn"}},
		{"negative xid", `{"table":"t","op":"c","after":{"id":1},"xid":-1}`, []string{"xid"}},
		{"invalid UTF-8", "{\"table\":\"t\",\"op\":\"c\",\"after\":{\"v\":\"\xff\xfe\"}}", []string{"UTF-8"}},
		{"row not an object", `{"table":"t","op":"c","after":[1]}`, []string{"after", "expected an object"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g := newGen(seed(t))
			k := 1 + g.r.IntN(8)
			valid := g.txns(k-1, 1)
			in := append(append(valid[:len(valid):len(valid)], tc.line), g.txns(3, 1000)...)
			dir := t.TempDir()
			res := walship(t, ndjson(in), "append", "--wal", dir)
			if res.code == 0 {
				t.Fatalf("bad line %d accepted:\n%v", k, res)
			}
			wantLine := fmt.Sprintf("line %d:", k)
			if !strings.Contains(res.stderr, wantLine) {
				t.Errorf("stderr does not name %q:\n%v", wantLine, res)
			}
			for _, w := range tc.want {
				if !strings.Contains(res.stderr, w) {
					t.Errorf("stderr does not say %q:\n%v", w, res)
				}
			}
			if n := strings.Count(res.stderr, "\n"); n != 1 {
				t.Errorf("stderr has %d lines, want one message:\n%v", n, res)
			}
			acks := parseAcks(t, res.stdout)
			txns := parseTxns(t, valid)
			checkAcks(t, acks, txns, 1, time.Time{})
			dump := parseDump(t, mustWalship(t, nil, "dump", "--wal", dir).stdout)
			checkDump(t, dump, txns, acks, 1)
			mustWalship(t, nil, "verify", "--wal", dir)
		})
	}
}

// TestAppendBadInputLineNumbers: blank lines count in line numbers, and a
// bad last line without a newline is named too.
func TestAppendBadInputLineNumbers(t *testing.T) {
	t.Parallel()
	ok := `{"table":"t","op":"c","after":{"id":1}}`
	in := ok + "\n\n" + ok + "\r\n  \n" + `{"table":"t","op":"x"}`
	dir := t.TempDir()
	res := walship(t, []byte(in), "append", "--wal", dir)
	if res.code == 0 || !strings.Contains(res.stderr, "line 5:") || len(parseAcks(t, res.stdout)) != 2 {
		t.Errorf("want a failure naming line 5 after 2 acknowledgements, got\n%v", res)
	}
}

// TestBadFlags: bad command lines exit 2 with a message naming the flag,
// and create nothing.
func TestBadFlags(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "wal")
	in := []byte(`{"table":"t","op":"c","after":{"id":1}}` + "\n")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"append", "--wal", dir, "--sync", "maybe"}, "--sync"},
		{[]string{"append", "--wal", dir, "--segment-size", "12XB"}, "--segment-size"},
		{[]string{"append", "--wal", dir, "--segment-size", "-5"}, "--segment-size"},
		{[]string{"append", "--wal", dir, "--segment-size", "1KiB"}, "--segment-size"},
		{[]string{"append", "--wal", dir, "--segment-size", "8GiB"}, "--segment-size"},
		{[]string{"append", "--wal", dir, "--compression", "lz4"}, "--compression"},
		{[]string{"append", "--wal", dir, "--max-commit-time-skew", "soon"}, "--max-commit-time-skew"},
		{[]string{"append", "--wal", dir, "--max-commit-time-skew", "0s"}, "--max-commit-time-skew"},
		{[]string{"append"}, "--wal"},
		{[]string{"append", "--wal", ""}, "--wal"},
		{[]string{"append", "--wal", dir, "--bogus"}, "bogus"},
		{[]string{"append", "--wal", dir, "extra"}, `"extra"`},
		{[]string{"dump"}, "--wal"},
		{[]string{"dump", "--wal", dir, "--from", "abc"}, "from"},
		{[]string{"dump", "--wal", dir, "--to", "-1"}, "to"},
		{[]string{"dump", "--wal", dir, "--from", "10", "--to", "5"}, "--to"},
		{[]string{"verify"}, "--wal"},
		{[]string{"verify", "--wal", dir, "--bogus"}, "bogus"},
		{[]string{}, "no command"},
		{[]string{"bogus"}, `"bogus"`},
	} {
		res := walship(t, in, tc.args...)
		if res.code != 2 || !strings.Contains(res.stderr, tc.want) || res.stdout != "" {
			t.Errorf("walship %s: want exit 2, a message naming %s and no output; got\n%v", strings.Join(tc.args, " "), tc.want, res)
		}
	}
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("a bad command line created %s", dir)
	}
	for _, args := range [][]string{{"append", "-h"}, {"dump", "--help"}, {"verify", "-h"}, {"help"}} {
		if res := walship(t, nil, args...); res.code != 0 || res.stderr == "" {
			t.Errorf("walship %s: want usage on stderr and exit 0, got\n%v", strings.Join(args, " "), res)
		}
	}
	// The valid spellings work.
	for _, args := range [][]string{
		{"append", "--wal", dir, "--sync", "off", "--segment-size", "4KiB", "--compression", "s2"},
		{"append", "--wal", dir, "--sync=local", "--segment-size=1MB", "--compression=zstd"},
		{"append", "-wal", dir, "-segment-size", "65536"},
	} {
		mustWalship(t, in, args...)
	}
	if d := parseDump(t, mustWalship(t, nil, "dump", "--wal", dir).stdout); len(d) != 3 {
		t.Errorf("dump after three appends has %d changes, want 3", len(d))
	}
}

// TestAppendLineTooLong: a line longer than change.MaxLineSize is rejected
// naming its line, after the lines before it are acknowledged.
func TestAppendLineTooLong(t *testing.T) {
	t.Parallel()
	ok := `{"table":"t","op":"c","after":{"id":1}}` + "\n"
	long := `{"table":"t","op":"c","after":{"v":"` + strings.Repeat("x", change.MaxLineSize) + `"}}` + "\n"
	dir := t.TempDir()
	res := walship(t, []byte(ok+ok+long+ok), "append", "--wal", dir)
	if res.code == 0 || !strings.Contains(res.stderr, "line 3:") || !strings.Contains(res.stderr, "longer than") {
		t.Errorf("want a failure naming line 3 as too long, got\n%v", res)
	}
	if a := parseAcks(t, res.stdout); len(a) != 2 {
		t.Errorf("%d acknowledgements, want 2", len(a))
	}
	if d := parseDump(t, mustWalship(t, nil, "dump", "--wal", dir).stdout); len(d) != 2 {
		t.Errorf("dump has %d changes, want 2", len(d))
	}
}

// TestHelpOfEveryCommand: each command's -h has its summary, a usage line
// naming only flags that exist, and an example; the examples of the log
// tools run as printed (on a temporary directory in place of /tmp/wal).
// `walship version` and `--version` print the version, commit and Go
// version.
func TestHelpOfEveryCommand(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "wal")
	for _, c := range program.Commands {
		if c.Summary == "" || c.Usage == "" || c.Example == "" {
			t.Errorf("%s: summary %q, usage %q, example %q", c.Name, c.Summary, c.Usage, c.Example)
			continue
		}
		res := walship(t, nil, c.Name, "-h")
		if res.code != 0 || !strings.HasPrefix(res.stderr, "walship "+c.Name+": "+c.Summary+"\n\nusage: walship "+c.Name+" "+c.Usage+"\n\nflags:\n") ||
			!strings.Contains(res.stderr, "\nexample:\n  ") {
			t.Errorf("%s -h: %v", c.Name, res)
		}
		flagsPart, _, _ := strings.Cut(res.stderr, "\nexample:\n")
		for _, word := range strings.Fields(c.Usage) {
			if word = strings.Trim(word, "[]()"); strings.HasPrefix(word, "-") && !strings.Contains(flagsPart, "\n  "+word+" ") && !strings.Contains(flagsPart, "\n  "+word+"\n") {
				t.Errorf("%s: the usage line names %s, which is not among the flags", c.Name, word)
			}
		}
	}
	// The log tools' examples, in order: append, then dump and verify.
	for _, name := range []string{"append", "dump", "verify"} {
		for _, c := range program.Commands {
			if c.Name != name {
				continue
			}
			script := strings.ReplaceAll(c.Example, "/tmp/wal", dir)
			script = strings.ReplaceAll(script, "walship ", walshipBin+" ")
			out, err := exec.Command("sh", "-c", script).CombinedOutput()
			if err != nil || len(out) == 0 {
				t.Errorf("example %q: %v\n%s", c.Example, err, out)
			}
		}
	}
	for _, arg := range []string{"version", "--version"} {
		res := walship(t, nil, arg)
		if res.code != 0 || !strings.HasPrefix(res.stdout, "walship ") || !strings.Contains(res.stdout, "\ncommit: ") ||
			!strings.HasSuffix(res.stdout, "\ngo: "+runtime.Version()+"\n") {
			t.Errorf("%s: %v", arg, res)
		}
	}
}

// TestAppendMaxCommitTimeSkewFlag: --max-commit-time-skew moves the bound
// on source commit times: a time refused by default is accepted with a
// bound beyond it.
func TestAppendMaxCommitTimeSkewFlag(t *testing.T) {
	t.Parallel()
	ct := time.Now().Add(time.Hour).Truncate(time.Second).UTC()
	in := []byte(`{"table":"t","op":"c","after":{"id":1},"commit_time":"` + ct.Format(time.RFC3339) + `"}` + "\n")
	dir := t.TempDir()
	if res := walship(t, in, "append", "--wal", dir); res.code == 0 || !strings.Contains(res.stderr, "line 1:") {
		t.Fatalf("default bound: want a failure naming line 1, got\n%v", res)
	}
	res := mustWalship(t, in, "append", "--wal", dir, "--max-commit-time-skew", "2h")
	if acks := parseAcks(t, res.stdout); len(acks) != 1 || !acks[0].CommitTime.Equal(ct) {
		t.Fatalf("with --max-commit-time-skew 2h: acks %+v, want one at %v", acks, ct)
	}
}
