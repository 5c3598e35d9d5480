package main

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestAppendDumpRoundTrip appends random transactions (every op and value
// kind, both input forms, optional header fields) to a log with small
// segments, and checks the acknowledgements (docs/DESIGN.md §5.1: one per line,
// the transaction's last LSN, dense, commit times never decreasing) and
// that dump gives back exactly the input, with --from/--to selecting an
// exact LSN range, and that a second append continues the LSNs.
func TestAppendDumpRoundTrip(t *testing.T) {
	t.Parallel()
	for _, codec := range []string{"none", "zstd", "s2"} {
		t.Run(codec, func(t *testing.T) {
			t.Parallel()
			g := newGen(seed(t))
			dir := t.TempDir()
			in := g.txns(2000, 1)
			txns := parseTxns(t, in)
			// 16 KiB segments: compressed frames grow with the batches group
			// commit forms, which grow under load, so the log must rotate
			// several times even when zstd packs big batches well.
			appendArgs := []string{"append", "--wal", dir, "--segment-size", "16KiB"}
			if codec != "none" {
				appendArgs = append(appendArgs, "--compression", codec)
			}
			res := mustWalship(t, ndjson(in), appendArgs...)
			acks := parseAcks(t, res.stdout)
			checkAcks(t, acks, txns, 1, time.Time{})
			if res.stderr != "" {
				t.Errorf("append wrote to stderr on success: %s", res.stderr)
			}

			segs := readSegments(t, dir)
			t.Logf("%d segments, %d bytes of input", len(segs), len(ndjson(in)))
			if len(segs) < 3 {
				t.Errorf("only %d segments with --segment-size 16KiB", len(segs))
			}
			if codec != "none" {
				compressed := 0
				for _, s := range segs {
					for _, f := range s.frames {
						if f.codec != 0 {
							compressed++
						}
					}
				}
				if compressed == 0 {
					t.Errorf("--compression %s: no frame is compressed", codec)
				}
			}

			dump := parseDump(t, mustWalship(t, nil, "dump", "--wal", dir).stdout)
			checkDump(t, dump, txns, acks, 1)
			last := acks[len(acks)-1].LSN

			// --from/--to select exactly that LSN range, also when it
			// begins or ends inside a transaction.
			ranges := [][2]uint64{{1, 1}, {1, 0}, {2, 2}, {last, last}, {last, 0}, {0, 5}}
			for range 12 {
				a := 1 + g.r.Uint64N(last)
				b := a + g.r.Uint64N(last-a+1)
				ranges = append(ranges, [2]uint64{a, b})
			}
			// A range starting right after a transaction and one ending just
			// before its commit.
			k := 1 + g.r.IntN(len(acks)-2)
			ranges = append(ranges, [2]uint64{acks[k].LSN + 1, acks[k+1].LSN}, [2]uint64{acks[k].LSN, acks[k].LSN})
			for k := range acks[1:] {
				if acks[k+1].LSN-acks[k].LSN >= 3 { // a transaction of 3 or more changes: its middle
					ranges = append(ranges, [2]uint64{acks[k].LSN + 2, acks[k+1].LSN - 1})
					break
				}
			}
			for _, rg := range ranges {
				args := []string{"dump", "--wal", dir}
				if rg[0] != 0 {
					args = append(args, "--from", strconv.FormatUint(rg[0], 10))
				}
				if rg[1] != 0 {
					args = append(args, "--to", strconv.FormatUint(rg[1], 10))
				}
				got := parseDump(t, mustWalship(t, nil, args...).stdout)
				lo, hi := max(rg[0], 1), rg[1]
				if hi == 0 {
					hi = last
				}
				want := dump[lo-1 : hi]
				if len(got) != len(want) {
					t.Fatalf("dump --from %d --to %d: %d changes, want %d", rg[0], rg[1], len(got), len(want))
				}
				for i := range got {
					if got[i].LSN != want[i].LSN || got[i].CommitLSN != want[i].CommitLSN ||
						!got[i].CommitTime.Equal(want[i].CommitTime) || !got[i].Change.Equal(want[i].Change) {
						t.Fatalf("dump --from %d --to %d: line %d is LSN %d, want LSN %d", rg[0], rg[1], i+1, got[i].LSN, want[i].LSN)
					}
				}
			}
			// Past the end: nothing, successfully.
			if r := mustWalship(t, nil, "dump", "--wal", dir, "--from", fmt.Sprint(last+1)); r.stdout != "" {
				t.Errorf("dump --from %d (past the end) printed %q", last+1, clip(r.stdout))
			}

			// Appending again continues the LSNs and the commit times.
			in2 := g.txns(100, 100000)
			txns2 := parseTxns(t, in2)
			res2 := mustWalship(t, ndjson(in2), appendArgs...)
			acks2 := parseAcks(t, mustAppendOut(t, res2))
			checkAcks(t, acks2, txns2, last+1, acks[len(acks)-1].CommitTime)
			dump = parseDump(t, mustWalship(t, nil, "dump", "--wal", dir).stdout)
			checkDump(t, dump, append(txns, txns2...), append(acks, acks2...), 1)

			v := mustWalship(t, nil, "verify", "--wal", dir)
			if want := fmt.Sprintf("LSN 1..%d, %d transactions", acks2[len(acks2)-1].LSN, len(acks)+len(acks2)); !strings.Contains(v.stdout, want) {
				t.Errorf("verify output does not say %q:\n%s", want, v.stdout)
			}
		})
	}
}

func mustAppendOut(t *testing.T, r result) string {
	t.Helper()
	if r.stderr != "" {
		t.Errorf("append wrote to stderr on success: %s", r.stderr)
	}
	return r.stdout
}

// TestAppendForms checks the two input forms and the header fields on a
// hand-written input, including blank lines and CRLF line ends, against
// exact expected dump lines (apart from the commit time).
func TestAppendForms(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	in := "{\"table\":\"public.t\",\"op\":\"c\",\"key\":{\"id\":1},\"after\":{\"id\":1,\"v\":\"x\"}}\n" +
		"\n   \n" +
		"{\"changes\":[{\"table\":\"other.t\",\"op\":\"u\",\"key\":{\"id\":1},\"after\":{\"id\":1,\"v\":\"y\"}},{\"table\":\"t\",\"op\":\"t\"}],\"xid\":7,\"source_lsn\":\"16/B374D848\",\"commit_time\":\"2024-05-01T12:00:00+02:00\",\"origin\":\"app\"}\r\n" +
		"{\"op\":\"m\",\"message\":{\"prefix\":\"p\",\"content\":{\"$type\":\"bytes\",\"value\":\"gAE=\"},\"transactional\":true},\"xid\":8}" // no final newline
	res := mustWalship(t, []byte(in), "append", "--wal", dir)
	acks := parseAcks(t, res.stdout)
	if len(acks) != 3 || acks[0].LSN != 1 || acks[1].LSN != 3 || acks[2].LSN != 4 {
		t.Fatalf("acks %v, want LSNs 1, 3, 4", res.stdout)
	}
	dump := lines(mustWalship(t, nil, "dump", "--wal", dir).stdout)
	ct := func(i int) string { return acks[i].CommitTime.Format(time.RFC3339Nano) }
	want := []string{
		`{"lsn":1,"commit_lsn":1,"commit_time":"` + ct(0) + `","xid":0,"table":"public.t","op":"c","key":{"id":1},"before":null,"after":{"id":1,"v":"x"}}`,
		`{"lsn":2,"commit_lsn":3,"commit_time":"` + ct(1) + `","xid":7,"source_lsn":"16/B374D848","source_commit_time":"2024-05-01T10:00:00Z","origin":"app","table":"other.t","op":"u","key":{"id":1},"before":null,"after":{"id":1,"v":"y"}}`,
		`{"lsn":3,"commit_lsn":3,"commit_time":"` + ct(1) + `","xid":7,"source_lsn":"16/B374D848","source_commit_time":"2024-05-01T10:00:00Z","origin":"app","table":"public.t","op":"t","key":null,"before":null,"after":null}`,
		`{"lsn":4,"commit_lsn":4,"commit_time":"` + ct(2) + `","xid":8,"table":null,"op":"m","key":null,"before":null,"after":null,"message":{"prefix":"p","content":{"$type":"bytes","value":"gAE="},"transactional":true}}`,
	}
	if len(dump) != len(want) {
		t.Fatalf("dump:\n%s\nwant %d lines", res.stdout, len(want))
	}
	for i := range want {
		if dump[i] != want[i] {
			t.Errorf("dump line %d:\n got %s\nwant %s", i+1, dump[i], want[i])
		}
	}
}

// TestAppendEmptyInput: no input is success with no output, and leaves a
// log that dump and verify read.
func TestAppendEmptyInput(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	res := mustWalship(t, []byte{}, "append", "--wal", dir)
	if res.stdout != "" {
		t.Errorf("append of no input printed %q", res.stdout)
	}
	if r := mustWalship(t, nil, "dump", "--wal", dir); r.stdout != "" {
		t.Errorf("dump of an empty log printed %q", r.stdout)
	}
	mustWalship(t, nil, "verify", "--wal", dir)
	res = mustWalship(t, []byte(`{"table":"t","op":"c","after":{"id":1}}`+"\n"), "append", "--wal", dir)
	if a := parseAcks(t, res.stdout); len(a) != 1 || a[0].LSN != 1 {
		t.Errorf("first append after an empty one: %q, want LSN 1", res.stdout)
	}
}
