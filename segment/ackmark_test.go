package segment_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/walship/walship/groupcommit"
	"github.com/walship/walship/segment"
	"github.com/walship/walship/vfs"
	"github.com/walship/walship/walerr"
)

// buildAckedLog writes, through the group committer, acknowledged
// transactions over several segments, the last ones pipelined so that
// the last frame holds several, and closes the log cleanly (so the
// acknowledgement watermark is exact). It returns the transactions.
func buildAckedLog(t *testing.T, fs *vfs.CrashFS, opts segment.Options) []txn {
	t.Helper()
	l, _ := open(t, crashDir, opts)
	c := newCommitter(t, l, groupcommit.Options{})
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(7, 7))
	var out []txn
	for round := 0; len(l.Segments()) < 3 || round < 2; round++ {
		var tks []groupcommit.Ticket
		var recs [][][]byte
		for i := range 20 {
			rs := [][]byte{payload(fmt.Sprintf("r%d-%d", round, i), 0, 40+rng.IntN(80), rng)}
			tk, err := c.AppendAsync(ctx, rs, time0.Add(time.Duration(len(out)+i)*time.Millisecond))
			if err != nil {
				t.Fatal(err)
			}
			tks, recs = append(tks, tk), append(recs, rs)
		}
		if err := c.Wait(ctx, tks[len(tks)-1].Last); err != nil {
			t.Fatal(err)
		}
		for i, tk := range tks {
			out = append(out, txn{first: tk.First, last: tk.Last, recs: recs[i], commitTime: tk.CommitTime})
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestAckWatermarkRefusesLostAcknowledged damages the end of a log whose
// transactions were all acknowledged: a byte flipped in the last frame of
// the active segment, the segment cut at its last frame's boundary, the
// newest segment deleted. No later frame proves the spot durable, so
// without the watermark each read as a torn tail and opening truncated
// acknowledged transactions (and reused their LSNs). Now Open and Verify
// refuse with a CorruptionError naming the segment, the offset and the
// first lost LSN, and the message gives the range lost. A log without a
// watermark (written before it existed), or with one of another log,
// recovers by the old rule, and gets its own watermark.
func TestAckWatermarkRefusesLostAcknowledged(t *testing.T) {
	opts := segment.Options{SegmentSize: 4096, Logger: quiet}
	type damage func(t *testing.T, fs *vfs.CrashFS, newest string, b []byte, f frameInfo) (seg string, off int64, first uint64)
	cases := []struct {
		name   string
		damage damage
	}{
		{"last-frame-byte-flipped", func(t *testing.T, fs *vfs.CrashFS, newest string, b []byte, f frameInfo) (string, int64, uint64) {
			b[f.payloadEnd-1] ^= 0x40
			writeDurable(t, fs, newest, b)
			return newest, f.off, f.txnStart
		}},
		{"truncated-at-frame-boundary", func(t *testing.T, fs *vfs.CrashFS, newest string, b []byte, f frameInfo) (string, int64, uint64) {
			writeDurable(t, fs, newest, b[:f.off])
			return newest, f.off, f.txnStart
		}},
		{"newest-segment-deleted", func(t *testing.T, fs *vfs.CrashFS, newest string, b []byte, f frameInfo) (string, int64, uint64) {
			if err := fs.Remove(vfs.Join(crashDir, newest)); err != nil {
				t.Fatal(err)
			}
			if err := fs.SyncDir(crashDir); err != nil {
				t.Fatal(err)
			}
			base, _ := segment.ParseSegmentName(newest)
			return newest, 0, base
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fs := vfs.NewCrashFS()
			opts := opts
			opts.FS = fs
			acked := buildAckedLog(t, fs, opts)
			last := acked[len(acked)-1].last
			segs := segFiles(t, fs, crashDir)
			newest := segs[len(segs)-1]
			b, err := fs.ReadFile(vfs.Join(crashDir, newest))
			if err != nil {
				t.Fatal(err)
			}
			frames := walkFrames(b)
			f := frames[len(frames)-1]
			if f.firstLSN+uint64(f.count)-1 != last {
				t.Fatalf("last frame %+v does not end at the last acknowledged LSN %d", f, last)
			}
			seg, off, first := tc.damage(t, fs, newest, b, f)
			lost := fmt.Sprintf("acknowledged transactions at LSN %d..%d", first, last)
			for what, err := range map[string]error{"Open": openErr(crashDir, opts), "Verify": verifyErr(fs, crashDir)} {
				wantCorrupt(t, what, err, seg, off, off+1)
				var ce *walerr.CorruptionError
				errors.As(err, &ce)
				if ce.LSN != first || !strings.Contains(err.Error(), lost) {
					t.Fatalf("%s: %v: want LSN %d and %q", what, err, first, lost)
				}
			}
			if got := segFiles(t, fs, crashDir); len(got) != len(segs)-btoi(tc.name == "newest-segment-deleted") {
				t.Fatalf("the refused open changed the segments: %v", got)
			}
		})
	}

	// The same damage to a log without a watermark (or with another log's)
	// is what it always was: a torn tail, truncated.
	for _, other := range []bool{false, true} {
		t.Run(fmt.Sprintf("no-watermark/other-log=%v", other), func(t *testing.T) {
			fs := vfs.NewCrashFS()
			opts := opts
			opts.FS = fs
			acked := buildAckedLog(t, fs, opts)
			ackPath := vfs.Join(crashDir, segment.AckedName)
			if other {
				ofs := vfs.NewCrashFS()
				o := opts
				o.FS = ofs
				buildAckedLog(t, ofs, o)
				b, err := ofs.ReadFile(ackPath)
				if err != nil {
					t.Fatal(err)
				}
				writeDurable(t, fs, segment.AckedName, b)
			} else if err := fs.Remove(ackPath); err != nil {
				t.Fatal(err)
			}
			segs := segFiles(t, fs, crashDir)
			newest := segs[len(segs)-1]
			b, _ := fs.ReadFile(vfs.Join(crashDir, newest))
			frames := walkFrames(b)
			f := frames[len(frames)-1]
			b[f.payloadEnd-1] ^= 0x40
			writeDurable(t, fs, newest, b)

			vrep, err := segment.Verify(fs, crashDir)
			if err != nil || vrep.Torn == nil || vrep.Torn.Offset != f.off || vrep.Watermark != nil {
				t.Fatalf("Verify: %+v, %v; want a torn tail at %d and no watermark", vrep, err, f.off)
			}
			l, rep := open(t, crashDir, opts)
			if rep.Torn == nil || rep.Torn.Offset != f.off {
				t.Fatalf("Open: %v; want a torn tail at %d", rep, f.off)
			}
			var kept []txn
			for _, x := range acked {
				if x.first < f.txnStart {
					kept = append(kept, x)
				}
			}
			checkTxns(t, readTxns(t, l), kept)
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			// The log has its own watermark now.
			vrep, err = segment.Verify(fs, crashDir)
			if err != nil || vrep.Watermark == nil || vrep.Watermark.LSN != kept[len(kept)-1].last {
				t.Fatalf("Verify after recovery: %+v, %v; want the watermark at LSN %d", vrep, err, kept[len(kept)-1].last)
			}
		})
	}
}

// TestAckWatermarkOffCommitPath: the watermark is written by a background
// goroutine that the flusher only signals. While its fdatasync of the
// watermark file hangs, appends are still acknowledged; once it returns,
// the watermark catches up (Close writes the last one).
func TestAckWatermarkOffCommitPath(t *testing.T) {
	fs := vfs.NewCrashFS()
	opts := segment.Options{FS: fs, SegmentSize: 4096, Logger: quiet}
	l, _ := open(t, crashDir, opts)
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	fs.SetSyncHook(func(name string) {
		if strings.HasSuffix(name, segment.AckedName) {
			once.Do(func() { close(entered) })
			<-release
		}
	})
	c := newCommitter(t, l, groupcommit.Options{})
	first := appendTxn(t, c, [][]byte{[]byte("first")})
	<-entered // the watermark's fdatasync is hanging now
	var last txn
	for i := range 200 {
		last = appendTxn(t, c, [][]byte{[]byte(fmt.Sprintf("while the watermark hangs %d", i))})
	}
	if last.last <= first.last {
		t.Fatalf("appends did not advance: %v after %v", last, first)
	}
	close(release)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	fs.SetSyncHook(nil)
	vrep, err := segment.Verify(fs, crashDir)
	if err != nil || vrep.Watermark == nil || vrep.Watermark.LSN != last.last {
		t.Fatalf("Verify: %+v, %v; want the watermark at LSN %d", vrep, err, last.last)
	}
}

func openErr(dir string, opts segment.Options) error {
	l, _, err := segment.Open(dir, opts)
	if err == nil {
		l.Close()
	}
	return err
}

func verifyErr(fs vfs.FS, dir string) error {
	_, err := segment.Verify(fs, dir)
	return err
}

func writeDurable(t *testing.T, fs *vfs.CrashFS, name string, b []byte) {
	t.Helper()
	if err := fs.WriteFile(vfs.Join(crashDir, name), b, true); err != nil {
		t.Fatal(err)
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
