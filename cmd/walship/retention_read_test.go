package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/walship/walship/internal/cli"
	"github.com/walship/walship/vfs"
)

// retentionFS is the operating system's filesystem, except that before the
// segment opens chosen by at it removes, as retention does, every segment
// of dir up to and including the one being opened, but never the newest.
// It makes the race of a reader with retention happen at a chosen point.
type retentionFS struct {
	vfs.FS
	dir   string
	at    func(n int) bool // remove before the n-th segment open (from 1)
	opens int
	fired bool // something was removed
}

func (f *retentionFS) Open(name string) (vfs.File, error) {
	if strings.HasSuffix(name, ".seg") {
		f.opens++
		if f.at(f.opens) {
			segs, _ := filepath.Glob(filepath.Join(f.dir, "*.seg")) // sorted: by LSN
			for i, p := range segs {
				if i == len(segs)-1 || filepath.Base(p) > filepath.Base(name) {
					break
				}
				if err := os.Remove(p); err == nil {
					f.fired = true
				}
			}
		}
	}
	return f.FS.Open(name)
}

// on runs cmd (dump or verify) in this process, reading through fsys.
func on(fsys vfs.FS, cmd func(context.Context, vfs.FS, []string, io.Writer, io.Writer) error) func(context.Context, []string, io.Reader, io.Writer, io.Writer) error {
	return func(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
		return cmd(ctx, fsys, args, stdout, stderr)
	}
}

// inProcess runs a walship command in this process.
func inProcess(run func(context.Context, []string, io.Reader, io.Writer, io.Writer) error, args ...string) result {
	var out, errb bytes.Buffer
	err := run(context.Background(), args, nil, &out, &errb)
	if err != nil {
		errb.WriteString(err.Error())
	}
	return result{stdout: out.String(), stderr: errb.String(), code: cli.Code(err)}
}

// oldestBase returns the first LSN of the oldest segment left in dir.
func oldestBase(t *testing.T, dir string) uint64 {
	t.Helper()
	return readSegments(t, dir)[0].base
}

// txnAt returns the index of the transaction whose first LSN is lsn.
func txnAt(t *testing.T, b *baseLog, lsn uint64) int {
	t.Helper()
	next := uint64(1)
	for k, a := range b.acks {
		if next == lsn {
			return k
		}
		next = a.LSN + 1
	}
	t.Fatalf("no transaction starts at LSN %d", lsn)
	return 0
}

// TestDumpAndVerifyBesideRetention: retention removing segments while dump
// and verify read the log is never reported as damage (exit 1). Before
// every segment open in turn, the segments up to the one being opened are
// removed. verify then verifies the log as it now is (exit 0, naming what it
// verified); dump prints the log as it now is when nothing was printed yet,
// else stops at the end of a whole transaction with exit 2 naming the LSN
// to go on from. When retention outpaces every attempt, verify exits 2.
func TestDumpAndVerifyBesideRetention(t *testing.T) {
	base := newFrameLog(t, 1500, changedAttempts+2)
	if n := len(readSegments(t, base.dir)); n < changedAttempts+2 {
		t.Fatalf("log has %d segments, want %d or more", n, changedAttempts+2)
	}
	last := base.last().LSN
	var bases []uint64
	for _, s := range readSegments(t, base.dir) {
		bases = append(bases, s.base)
	}

	var restarted, stopped int
	for k := 1; ; k++ {
		dir := copyDir(t, base.dir)
		fsys := &retentionFS{FS: vfs.Default, dir: dir, at: func(n int) bool { return n == k }}
		var r result
		r = inProcess(on(fsys, dump), "--wal", dir)
		if fsys.opens < k {
			break // every open point has been tried
		}
		if !fsys.fired {
			continue
		}
		dump := parseDump(t, r.stdout)
		switch r.code {
		case 0:
			// The whole log as it was when dump opened it: from the
			// first LSN of a segment, the oldest one then, to the end.
			if len(dump) == 0 || !slices.Contains(bases, dump[0].LSN) || dump[0].LSN > oldestBase(t, dir) {
				t.Fatalf("k=%d: dump beside retention: want the log from a segment's first LSN, got %d lines\n%v", k, len(dump), r)
			}
			first := dump[0].LSN
			i := txnAt(t, base, first)
			checkDump(t, dump, base.txns[i:], base.acks[i:], first)
			if first > 1 {
				restarted++
			}
		case 2:
			if len(dump) == 0 {
				t.Fatalf("k=%d: dump exit 2 with nothing printed:\n%v", k, r)
			}
			n := txnAt(t, base, dump[len(dump)-1].CommitLSN+1)
			checkDump(t, dump, base.txns[:n], base.acks[:n], 1)
			from := "--from " + strconv.FormatUint(base.acks[n-1].LSN+1, 10)
			if !strings.Contains(r.stderr, "not damage") || !strings.Contains(r.stderr, from) {
				t.Errorf("k=%d: dump stopped by retention: want a message saying it is not damage and %q, got\n%v", k, from, r)
			}
			stopped++
		default:
			t.Fatalf("k=%d: dump beside retention: want exit 0 or 2, got\n%v", k, r)
		}

		dir = copyDir(t, base.dir)
		fsys = &retentionFS{FS: vfs.Default, dir: dir, at: func(n int) bool { return n == k }}
		r = inProcess(on(fsys, verify), "--wal", dir, "--json")
		var m map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &m); err != nil {
			t.Fatalf("k=%d: verify --json: %v\n%v", k, err, r)
		}
		first := oldestBase(t, dir)
		i := txnAt(t, base, first)
		if r.code != 0 || m["status"] != "intact" || m["first_lsn"] != float64(first) || m["last_lsn"] != float64(last) ||
			m["transactions"] != float64(len(base.acks)-i) || m["segments"] != float64(len(readSegments(t, dir))) {
			t.Fatalf("k=%d: verify beside retention: want exit 0, intact, LSN %d..%d, %d transactions; got\n%v", k, first, last, len(base.acks)-i, r)
		}
	}
	if restarted == 0 || stopped == 0 {
		t.Errorf("dump restarted %d times and stopped %d times: want both cases", restarted, stopped)
	}

	// Retention removing a segment under every attempt: exit 2, not 1.
	dir := copyDir(t, base.dir)
	fsys := &retentionFS{FS: vfs.Default, dir: dir, at: func(int) bool { return true }}
	r := inProcess(on(fsys, verify), "--wal", dir, "--json")
	var m map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &m); err != nil {
		t.Fatalf("verify --json: %v\n%v", err, r)
	}
	if r.code != 2 || m["status"] != "changed" || !strings.Contains(r.stderr, "run verify again") {
		t.Errorf("verify while retention outpaces it: want exit 2, status changed, 'run verify again'; got\n%v", r)
	}
}
