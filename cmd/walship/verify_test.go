package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/walship/walship/change"
)

// baseLog is a log of several segments built once for the verify tests,
// to be copied by each.
type baseLog struct {
	dir  string
	in   []string
	txns []change.Txn
	acks []ack
}

func newBaseLog(t *testing.T, n int) *baseLog {
	t.Helper()
	g := newGen(seed(t))
	b := &baseLog{dir: t.TempDir()}
	// Transactions are of random sizes: some seeds fill fewer than three
	// 64 KiB segments with n of them, so more are appended until the log
	// has three (a bound for a generator that makes nothing, not a target).
	for round := 0; round == 0 || len(readSegments(t, b.dir)) < 3; round++ {
		if round == 10 {
			t.Fatalf("base log has %d segments after %d rounds of %d transactions, want 3 or more", len(readSegments(t, b.dir)), round, n)
		}
		in := g.txns(n, uint64(len(b.txns))*10+1)
		txns := parseTxns(t, in)
		res := mustWalship(t, ndjson(in), "append", "--wal", b.dir, "--segment-size", "64KiB")
		acks := parseAcks(t, res.stdout)
		first := uint64(1)
		if len(b.acks) > 0 {
			first = b.last().LSN + 1
		}
		checkAcks(t, acks, txns, first, time.Time{})
		b.in, b.txns, b.acks = append(b.in, in...), append(b.txns, txns...), append(b.acks, acks...)
	}
	return b
}

func (b *baseLog) last() ack { return b.acks[len(b.acks)-1] }

var offsetRE = regexp.MustCompile(`offset (\d+)`)

// reportedOffset returns the offset named in s after the segment name.
func reportedOffset(t *testing.T, s, seg string) int64 {
	t.Helper()
	i := strings.Index(s, seg)
	if i < 0 {
		t.Fatalf("output does not name segment %s:\n%s", seg, s)
	}
	m := offsetRE.FindStringSubmatch(s[i:])
	if m == nil {
		t.Fatalf("output does not name an offset after segment %s:\n%s", seg, s)
	}
	off, _ := strconv.ParseInt(m[1], 10, 64)
	return off
}

// verifyJSON runs verify --json and decodes its output.
func verifyJSON(t *testing.T, dir string) (map[string]any, result) {
	t.Helper()
	r := walship(t, nil, "verify", "--wal", dir, "--json")
	var m map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &m); err != nil {
		t.Fatalf("verify --json output is not JSON: %v\n%v", err, r)
	}
	return m, r
}

// TestVerifyAndCorruption checks `walship verify` exit codes (docs/DESIGN.md
// §5.1: 0 intact, torn tail reported as recoverable; 1 corruption naming
// segment file and offset; 2 unreadable) and that dump and append refuse a
// corrupt log instead of skipping anything (§4.3).
func TestVerifyAndCorruption(t *testing.T) {
	t.Parallel()
	base := newBaseLog(t, 1000)

	t.Run("intact", func(t *testing.T) {
		t.Parallel()
		r := mustWalship(t, nil, "verify", "--wal", base.dir)
		if !strings.HasPrefix(r.stdout, "intact: ") || strings.Contains(r.stdout, "torn") {
			t.Errorf("verify of an intact log:\n%v", r)
		}
		m, r := verifyJSON(t, base.dir)
		if r.code != 0 || m["status"] != "intact" || m["last_lsn"] != float64(base.last().LSN) ||
			m["transactions"] != float64(len(base.acks)) {
			t.Errorf("verify --json of an intact log:\n%v", r)
		}
		if _, ok := m["torn_tail"]; ok {
			t.Errorf("verify --json reports a torn tail on an intact log:\n%v", r)
		}
		// segment_list gives each segment's name and data end, the offset
		// after its last frame.
		segs := readSegments(t, base.dir)
		list, _ := m["segment_list"].([]any)
		if len(list) != len(segs) {
			t.Fatalf("verify --json segment_list has %d entries, want %d:\n%v", len(list), len(segs), r)
		}
		for i, e := range list {
			e, _ := e.(map[string]any)
			s := segs[i]
			if e["name"] != s.name || e["data_end"] != float64(s.frames[len(s.frames)-1].end) || e["first_lsn"] != float64(s.base) {
				t.Errorf("verify --json segment_list[%d] = %v, want name %s, first_lsn %d, data_end %d", i, e, s.name, s.base, s.frames[len(s.frames)-1].end)
			}
		}
	})

	// corrupt checks that verify, dump and (if checkAppend) append fail on
	// the log in dir with exit 1 naming seg and an offset in [lo, hi).
	corrupt := func(t *testing.T, dir, seg string, lo, hi int64, checkAppend bool) {
		t.Helper()
		r := walship(t, nil, "verify", "--wal", dir)
		if r.code != 1 {
			t.Fatalf("verify of a corrupt log: want exit 1, got\n%v", r)
		}
		if !strings.Contains(r.stdout, "CORRUPT") {
			t.Errorf("verify stdout does not say CORRUPT:\n%v", r)
		}
		if off := reportedOffset(t, r.stdout+r.stderr, seg); off < lo || off >= hi {
			t.Errorf("verify names offset %d, want one in [%d, %d):\n%v", off, lo, hi, r)
		}
		m, r := verifyJSON(t, dir)
		if r.code != 1 || m["status"] != "corrupt" || m["segment"] != seg {
			t.Errorf("verify --json of a corrupt log: want exit 1, status corrupt, segment %s; got\n%v", seg, r)
		} else if off, ok := m["offset"].(float64); !ok || int64(off) < lo || int64(off) >= hi {
			t.Errorf("verify --json offset %v, want one in [%d, %d)", m["offset"], lo, hi)
		}
		d := walship(t, nil, "dump", "--wal", dir)
		if d.code != 1 {
			t.Errorf("dump of a corrupt log: want exit 1, got\n%v", d)
		} else if off := reportedOffset(t, d.stderr, seg); off < lo || off >= hi {
			t.Errorf("dump names offset %d, want one in [%d, %d):\n%v", off, lo, hi, d)
		}
		// Whatever dump printed before failing is a prefix of the log.
		for i, dl := range parseDump(t, d.stdout) {
			if dl.LSN != uint64(i)+1 {
				t.Fatalf("dump of a corrupt log: line %d has LSN %d", i+1, dl.LSN)
			}
		}
		if checkAppend {
			a := walship(t, []byte(`{"table":"t","op":"c","after":{"id":1}}`+"\n"), "append", "--wal", dir, "--segment-size", "64KiB")
			if a.code == 0 || a.stdout != "" || !strings.Contains(a.stderr, seg) {
				t.Errorf("append to a corrupt log: want a failure naming %s, nothing acknowledged; got\n%v", seg, a)
			}
		}
	}

	t.Run("sealed-payload", func(t *testing.T) {
		t.Parallel()
		dir := copyDir(t, base.dir)
		segs := readSegments(t, dir)
		s := segs[len(segs)/2]
		if len(segs)/2 == len(segs)-1 {
			t.Fatal("no sealed segment in the middle")
		}
		f := s.frames[len(s.frames)/2]
		flipByte(t, s.path, f.payloadOff+f.stored/2)
		corrupt(t, dir, s.name, f.off, f.end, false)
	})

	t.Run("sealed-frame-header", func(t *testing.T) {
		t.Parallel()
		dir := copyDir(t, base.dir)
		segs := readSegments(t, dir)
		s := segs[1]
		f := s.frames[len(s.frames)-1]
		flipByte(t, s.path, f.off+17) // in the frame's first LSN
		corrupt(t, dir, s.name, f.off, f.end, false)
	})

	t.Run("sealed-segment-header", func(t *testing.T) {
		t.Parallel()
		dir := copyDir(t, base.dir)
		segs := readSegments(t, dir)
		s := segs[0]
		flipByte(t, s.path, 30) // in the segment id
		corrupt(t, dir, s.name, 0, segHeaderSize, true)
	})

	t.Run("newest-segment-header", func(t *testing.T) {
		t.Parallel()
		dir := copyDir(t, base.dir)
		segs := readSegments(t, dir)
		s := segs[len(segs)-1]
		flipByte(t, s.path, 45) // in the log id
		corrupt(t, dir, s.name, 0, segHeaderSize, true)
	})

	t.Run("newest-segment-early-frame", func(t *testing.T) {
		// Damage to a frame of the newest segment followed by a frame
		// written by a later write(2) call is corruption, not a torn tail.
		t.Parallel()
		dir := copyDir(t, base.dir)
		for i := range 2 {
			mustWalship(t, []byte(`{"table":"t","op":"c","after":{"id":`+strconv.Itoa(i)+`}}`+"\n"),
				"append", "--wal", dir, "--segment-size", "64KiB")
		}
		segs := readSegments(t, dir)
		s := segs[len(segs)-1]
		if len(s.frames) < 2 {
			t.Skip("the newest segment has a single frame") // not with 64KiB segments and this base
		}
		f, lastF := s.frames[0], s.frames[len(s.frames)-1]
		if int64(lastF.writeOff) <= f.off {
			t.Fatalf("last frame's write offset %d is not after the first frame %d", lastF.writeOff, f.off)
		}
		flipByte(t, s.path, f.payloadOff+f.stored/2)
		corrupt(t, dir, s.name, f.off, f.end, true)
	})

	t.Run("torn-tail", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			tear func(t *testing.T, path string, f frame)
		}{
			{"truncated-mid-payload", func(t *testing.T, path string, f frame) {
				if err := os.Truncate(path, f.payloadOff+f.stored/2); err != nil {
					t.Fatal(err)
				}
			}},
			{"truncated-mid-header", func(t *testing.T, path string, f frame) {
				if err := os.Truncate(path, f.off+frameHeaderSize/2); err != nil {
					t.Fatal(err)
				}
			}},
			{"zeroed-second-half", func(t *testing.T, path string, f frame) {
				// Preallocated file, write torn after its first sectors.
				fl, err := os.OpenFile(path, os.O_RDWR, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer fl.Close()
				mid := f.payloadOff + f.stored/2
				if _, err := fl.WriteAt(make([]byte, f.end-mid), mid); err != nil {
					t.Fatal(err)
				}
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				testTornTail(t, base, tc.tear)
			})
		}
	})

	// Damage to acknowledged transactions at the very end of the log is
	// corruption, although no later frame proves the spot durable: the
	// acknowledgement watermark (the base log was written by processes
	// that exited cleanly, so it is exact) shows they were acknowledged,
	// and no torn write can explain losing them.
	t.Run("acknowledged-tail", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			// damage damages the newest segment s of dir and returns where
			// the error must point and the first acknowledged LSN lost.
			damage func(t *testing.T, dir string, s segFile) (seg string, lo, hi int64, first uint64)
		}{
			{"last-frame-byte-flipped", func(t *testing.T, dir string, s segFile) (string, int64, int64, uint64) {
				f := s.frames[len(s.frames)-1]
				flipByte(t, s.path, f.payloadOff+f.stored/2)
				return s.name, f.off, f.end, f.txnStart
			}},
			{"truncated-at-frame-boundary", func(t *testing.T, dir string, s segFile) (string, int64, int64, uint64) {
				f := s.frames[len(s.frames)-1]
				if err := os.Truncate(s.path, f.off); err != nil {
					t.Fatal(err)
				}
				return s.name, f.off, f.off + 1, f.txnStart
			}},
			{"newest-segment-deleted", func(t *testing.T, dir string, s segFile) (string, int64, int64, uint64) {
				if err := os.Remove(s.path); err != nil {
					t.Fatal(err)
				}
				return s.name, 0, 1, s.frames[0].txnStart
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				dir := copyDir(t, base.dir)
				segs := readSegments(t, dir)
				s := segs[len(segs)-1]
				if len(s.frames) == 0 {
					t.Fatalf("newest segment %s holds no frame", s.name)
				}
				seg, lo, hi, first := tc.damage(t, dir, s)
				lost := fmt.Sprintf("acknowledged transactions at LSN %d..%d", first, base.last().LSN)
				v := walship(t, nil, "verify", "--wal", dir)
				if v.code != 1 || strings.Contains(v.stdout, "intact") || !strings.Contains(v.stdout, lost) {
					t.Errorf("verify: want exit 1 naming %q, never intact; got\n%v", lost, v)
				}
				a := walship(t, []byte(`{"table":"t","op":"c","after":{"id":1}}`+"\n"), "append", "--wal", dir, "--segment-size", "64KiB")
				if a.code != 1 || !strings.Contains(a.stderr, lost) {
					t.Errorf("append: want exit 1 naming %q; got\n%v", lost, a)
				}
				corrupt(t, dir, seg, lo, hi, true)
			})
		}
	})

	t.Run("unreadable", func(t *testing.T) {
		t.Parallel()
		missing := filepath.Join(t.TempDir(), "does-not-exist")
		for _, args := range [][]string{
			{"verify", "--wal", missing},
			{"verify", "--wal", missing, "--json"},
			{"verify", "--wal", t.TempDir()}, // exists, holds no log
		} {
			r := walship(t, nil, args...)
			if r.code != 2 {
				t.Errorf("walship %s: want exit 2, got\n%v", strings.Join(args, " "), r)
			}
			if r.stderr == "" {
				t.Errorf("walship %s: no message on stderr", strings.Join(args, " "))
			}
		}
		if r := walship(t, nil, "dump", "--wal", missing); r.code == 0 || !strings.Contains(r.stderr, "does-not-exist") {
			t.Errorf("dump of a missing directory: want a failure naming it, got\n%v", r)
		}
		if _, err := os.Stat(missing); err == nil {
			t.Errorf("dump or verify created %s", missing)
		}
	})
}

// testTornTail appends one more transaction to a copy of base in its own
// process (so it is the last frame), tears that frame, and checks that
// verify reports a recoverable torn tail (never "intact"), dump leaves the
// torn transaction out, and a new append recovers and continues. The
// acknowledgement watermark is put back as it was before that append: a
// crash before the watermark caught up, so the torn write is beyond it,
// as a write torn by a crash always is.
func testTornTail(t *testing.T, base *baseLog, tear func(t *testing.T, path string, f frame)) {
	dir := copyDir(t, base.dir)
	g := newGen(uint64(time.Now().UnixNano()))
	torn := g.txn(1 << 40)
	acked, err := os.ReadFile(filepath.Join(dir, "ACKED"))
	if err != nil {
		t.Fatal(err)
	}
	r := mustWalship(t, []byte(torn+"\n"), "append", "--wal", dir, "--segment-size", "64KiB")
	if err := os.WriteFile(filepath.Join(dir, "ACKED"), acked, 0o644); err != nil {
		t.Fatal(err)
	}
	tornTxn := parseTxns(t, []string{torn})
	tornAck := parseAcks(t, r.stdout)
	checkAcks(t, tornAck, tornTxn, base.last().LSN+1, base.last().CommitTime)

	segs := readSegments(t, dir)
	s := segs[len(segs)-1]
	f := s.frames[len(s.frames)-1]
	if f.firstLSN != base.last().LSN+1 || !f.commit || f.txnStart != f.firstLSN {
		t.Fatalf("the last frame (LSN %d, txn start %d, commit %v) is not the last transaction (LSN %d)",
			f.firstLSN, f.txnStart, f.commit, base.last().LSN+1)
	}
	tear(t, s.path, f)
	torndata, err := os.ReadFile(s.path)
	if err != nil {
		t.Fatal(err)
	}

	v := walship(t, nil, "verify", "--wal", dir)
	if v.code != 0 {
		t.Fatalf("verify of a log with a torn tail: want exit 0, got\n%v", v)
	}
	if !strings.HasPrefix(v.stdout, "recoverable: ") || strings.Contains(v.stdout, "intact") ||
		!strings.Contains(v.stdout, "beyond the acknowledgement watermark: unacknowledged writes, removed on next open") ||
		reportedOffset(t, v.stdout[strings.Index(v.stdout, "torn"):], s.name) != f.off {
		t.Errorf("verify does not report the torn tail of %s at offset %d as unacknowledged and recoverable (and never intact):\n%v", s.name, f.off, v)
	}
	m, vj := verifyJSON(t, dir)
	tt, _ := m["torn_tail"].(map[string]any)
	ak, _ := m["acknowledged"].(map[string]any)
	if vj.code != 0 || m["status"] != "recoverable" || tt == nil || tt["segment"] != s.name || tt["offset"] != float64(f.off) ||
		m["last_lsn"] != float64(base.last().LSN) || ak == nil || ak["lsn"] != float64(base.last().LSN) {
		t.Errorf("verify --json of a log with a torn tail: want status recoverable, torn_tail in %s at %d, last_lsn %d, acknowledged up to %d; got\n%v",
			s.name, f.off, base.last().LSN, base.last().LSN, vj)
	}

	// Read-only tools change nothing.
	if b, err := os.ReadFile(s.path); err != nil || string(b) != string(torndata) {
		t.Errorf("verify or dump changed the torn segment (%v)", err)
	}

	d := mustWalship(t, nil, "dump", "--wal", dir)
	checkDump(t, parseDump(t, d.stdout), base.txns, base.acks, 1)
	if len(readSegments(t, dir)) != len(segs) {
		t.Errorf("verify or dump changed the log's segment files")
	}

	next := g.txn(2 << 40)
	a := mustWalship(t, []byte(next+"\n"), "append", "--wal", dir, "--segment-size", "64KiB")
	if !strings.Contains(a.stderr, "recovered") || !strings.Contains(a.stderr, "torn tail") {
		t.Errorf("append after a torn tail does not report the recovery on stderr:\n%v", a)
	}
	nextTxn := parseTxns(t, []string{next})
	nextAck := parseAcks(t, a.stdout)
	checkAcks(t, nextAck, nextTxn, base.last().LSN+1, base.last().CommitTime)

	d = mustWalship(t, nil, "dump", "--wal", dir)
	checkDump(t, parseDump(t, d.stdout), append(base.txns[:len(base.txns):len(base.txns)], nextTxn...),
		append(base.acks[:len(base.acks):len(base.acks)], nextAck...), 1)
	if v := mustWalship(t, nil, "verify", "--wal", dir); strings.Contains(v.stdout, "torn tail (") {
		t.Errorf("verify after recovery still reports a torn tail:\n%v", v)
	}
}
