package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/walship/walship/internal/cli"

	"github.com/walship/walship/archive"
	"github.com/walship/walship/change"
	"github.com/walship/walship/internal/seal"
	"github.com/walship/walship/pitr"
	"github.com/walship/walship/replica"
	"github.com/walship/walship/wal"
)

// result is the outcome of one in-process walreplay invocation.
type result struct {
	code           int
	stdout, stderr string
	err            error
}

func walreplay(t *testing.T, ctx context.Context, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(ctx, args, strings.NewReader(""), &out, &errb)
	code := 0
	if err != nil {
		code = exitFailure
		var ee *cli.ExitError
		if errors.As(err, &ee) {
			code = ee.Code
		}
	}
	return result{code: code, stdout: out.String(), stderr: errb.String(), err: err}
}

// fixture is a file:// archive of a generated log.
type fixture struct {
	dir  string // archive root
	url  string
	a    *archive.Archive
	txns []change.Committed
	segs []archive.SegmentManifest
}

// genLog appends n transactions (upserts of public.kv and other.log, a
// restore point "rp-<i>" every 10th) with commit times 1 s apart, and
// returns them as read back.
func genLog(t *testing.T, n int) []change.Committed {
	t.Helper()
	w, _, err := wal.Open(wal.Options{Dir: t.TempDir(), Sync: wal.SyncOff}) // no power-loss durability needed
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	for i := range n {
		txn := &change.Txn{Header: change.TxHeader{XID: uint64(700 + i), SourceLSN: 0x2_0000_0000 + uint64(i)<<8,
			SourceCommitTime: t0.Add(time.Duration(i) * time.Second)}}
		if i%10 == 9 {
			txn.Changes = pitr.RestorePointTxn(fmt.Sprintf("rp-%d", i)).Changes
		} else {
			id := int64(i % 13)
			txn.Changes = []change.Change{
				{Table: change.Table{Schema: "public", Name: "kv"}, Op: change.Insert, Key: change.Row{{Name: "k", Value: change.IntValue(id)}},
					After: change.Row{{Name: "k", Value: change.IntValue(id)}, {Name: "v", Value: change.TextValue(fmt.Sprint("v", i))}}},
				{Table: change.Table{Schema: "other", Name: "log"}, Op: change.Insert, Key: change.Row{{Name: "n", Value: change.IntValue(int64(i))}},
					After: change.Row{{Name: "n", Value: change.IntValue(int64(i))}}},
			}
			if i >= 13 {
				txn.Changes[0].Op = change.Update
			}
		}
		if _, err := w.Append(context.Background(), txn); err != nil {
			t.Fatal(err)
		}
	}
	r, err := w.NewReader(1, false)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var out []change.Committed
	for {
		tx, err := r.Next(context.Background())
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, *tx)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out
}

// newFixture archives txns in segments of per transactions.
func newFixture(t *testing.T, txns []change.Committed, per int) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir(), txns: txns}
	f.url = "file://" + f.dir
	var err error
	if f.a, err = archive.Open(context.Background(), f.url, archive.Options{}); err != nil {
		t.Fatal(err)
	}
	f.add(t, 0, len(txns), per)
	return f
}

// add archives txns[from:to] in segments of per.
func (f *fixture) add(t *testing.T, from, to, per int) {
	t.Helper()
	for i := from; i < to; i += per {
		enc, err := f.a.EncodeSegment("main", 0, f.txns[i:min(i+per, to)])
		if err != nil {
			t.Fatal(err)
		}
		m, err := f.a.StoreSegment(context.Background(), enc)
		if err != nil {
			t.Fatal(err)
		}
		f.segs = append(f.segs, m)
	}
}

// snapshot stores a snapshot of the replica holding txns[:i+1].
func (f *fixture) snapshot(t *testing.T, i int) {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	app, err := replica.Open(ctx, "sqlite://"+filepath.Join(dir, "s.db"), replica.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := app.Apply(ctx, f.txns[:i+1]); err != nil {
		t.Fatal(err)
	}
	app.Close()
	if err := replica.Snapshot(ctx, filepath.Join(dir, "s.db"), filepath.Join(dir, "snap.db")); err != nil {
		t.Fatal(err)
	}
	if err := f.a.PutSnapshot(ctx, "main", f.txns[i].CommitLSN, f.txns[i].CommitTime, filepath.Join(dir, "snap.db")); err != nil {
		t.Fatal(err)
	}
}

// expected builds a replica holding the first n transactions.
func expected(t *testing.T, txns []change.Committed) string {
	t.Helper()
	url := "sqlite://" + filepath.Join(t.TempDir(), "expected.db")
	app, err := replica.Open(context.Background(), url, replica.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(txns) > 0 {
		if err := app.Apply(context.Background(), txns); err != nil {
			t.Fatal(err)
		}
	}
	app.Close()
	return url
}

func sameReplica(t *testing.T, gotURL, wantURL string) {
	t.Helper()
	got, err := replica.Dump(context.Background(), gotURL)
	if err != nil {
		t.Fatal(err)
	}
	want, err := replica.Dump(context.Background(), wantURL)
	if err != nil {
		t.Fatal(err)
	}
	if d := replica.Diff(want, got); d != "" {
		t.Fatalf("restored replica differs:\n%s", d)
	}
	gs, _ := replica.ReadState(context.Background(), gotURL)
	ws, _ := replica.ReadState(context.Background(), wantURL)
	if gs.LSN != ws.LSN || gs.Txns != ws.Txns {
		t.Fatalf("restored replica at LSN %d with %d txns, want LSN %d with %d", gs.LSN, gs.Txns, ws.LSN, ws.Txns)
	}
}

func TestListAndJSON(t *testing.T) {
	ctx := context.Background()
	txns := genLog(t, 40)
	f := newFixture(t, txns, 6)
	r := walreplay(t, ctx, "list", "--archive", f.url)
	if r.code != 0 {
		t.Fatalf("list: %v\n%s", r.err, r.stderr)
	}
	last := txns[len(txns)-1]
	for _, want := range []string{"lineage main", fmt.Sprintf("segments:    7, LSN 1-%d", last.CommitLSN), "gaps:        none",
		`"rp-19" at LSN`, "from the empty state (--target-lsn 1 --exclusive)"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("list output lacks %q:\n%s", want, r.stdout)
		}
	}
	r = walreplay(t, ctx, "list", "--archive", f.url, "--json")
	var out listJSON
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || r.code != 0 {
		t.Fatalf("list --json: %v %v\n%s", r.err, err, r.stdout)
	}
	if len(out.Lineages) != 1 || out.Lineages[0].LastLSN != last.CommitLSN || out.Lineages[0].Segments != 7 ||
		len(out.Lineages[0].RestorePoints) != 4 || out.Lineages[0].LastCommitTime != last.CommitTime.Format(time.RFC3339Nano) ||
		out.Lineages[0].RestorableFrom == nil || *out.Lineages[0].RestorableFrom != 0 {
		t.Fatalf("list --json: %+v", out)
	}
}

func TestVerifyExitCodes(t *testing.T) {
	ctx := context.Background()
	txns := genLog(t, 30)

	f := newFixture(t, txns, 5)
	r := walreplay(t, ctx, "verify", "--archive", f.url)
	if r.code != 0 || !strings.HasPrefix(r.stdout, "intact:") {
		t.Fatalf("intact archive: exit %d: %v\n%s", r.code, r.err, r.stdout)
	}

	// A flipped byte in one object: exit 1 naming the key.
	f = newFixture(t, txns, 5)
	bad := f.segs[2].Key
	p := filepath.Join(f.dir, filepath.FromSlash(bad))
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-3] ^= 0x40
	os.WriteFile(p, b, 0o644)
	r = walreplay(t, ctx, "verify", "--archive", f.url, "--json")
	var vj verifyJSON
	if err := json.Unmarshal([]byte(r.stdout), &vj); err != nil {
		t.Fatalf("verify --json: %v\n%s", err, r.stdout)
	}
	if r.code != 1 || vj.Status != "corrupt" || len(vj.Corrupt) != 1 || vj.Corrupt[0].Key != bad {
		t.Fatalf("corrupt object: exit %d, %+v", r.code, vj)
	}

	// A deleted object: exit 3 naming the key.
	f = newFixture(t, txns, 5)
	gone := f.segs[3].Key
	os.Remove(filepath.Join(f.dir, filepath.FromSlash(gone)))
	r = walreplay(t, ctx, "verify", "--archive", f.url)
	if r.code != 3 || !strings.Contains(r.stdout, "MISSING: "+gone) {
		t.Fatalf("missing object: exit %d\n%s", r.code, r.stdout)
	}

	// An object and its manifest deleted: a hole, exit 3 naming the LSNs.
	f = newFixture(t, txns, 5)
	h := f.segs[1]
	os.Remove(filepath.Join(f.dir, filepath.FromSlash(h.Key)))
	os.Remove(filepath.Join(f.dir, filepath.FromSlash(archive.ManifestKey(h.Key))))
	r = walreplay(t, ctx, "verify", "--archive", f.url)
	if want := fmt.Sprintf("HOLE: lineage main: LSN %d-%d", h.FirstLSN, h.LastLSN); r.code != 3 || !strings.Contains(r.stdout, want) {
		t.Fatalf("hole: exit %d, want %q in\n%s", r.code, want, r.stdout)
	}

	// An archive that cannot be read: exit 2.
	r = walreplay(t, ctx, "verify", "--archive", "ftp://nowhere/x")
	if r.code != 2 {
		t.Fatalf("unreadable archive: exit %d: %v", r.code, r.err)
	}
}

func TestRestoreDryRunPrintsThePlanAndChangesNothing(t *testing.T) {
	ctx := context.Background()
	txns := genLog(t, 40)
	f := newFixture(t, txns, 6)
	dst := filepath.Join(t.TempDir(), "r.db")
	tgt := txns[20]
	r := walreplay(t, ctx, "restore", "--archive", f.url, "--to", "sqlite://"+dst, "--target-lsn", fmt.Sprint(tgt.CommitLSN), "--dry-run")
	if r.code != 0 {
		t.Fatalf("dry run: %v", r.err)
	}
	for _, want := range []string{"plan: lineage main, --target-lsn", "base:    an empty replica", "replay:  4 segments from LSN 1", f.segs[3].Key} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("plan lacks %q:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout, f.segs[4].Key) {
		t.Errorf("plan reads a segment past the target:\n%s", r.stdout)
	}
	if _, err := os.Stat(dst); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("dry run created %s", dst)
	}
	r = walreplay(t, ctx, "restore", "--archive", f.url, "--target-name", "rp-29", "--exclusive", "--dry-run", "--json")
	var out restoreJSON
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || r.code != 0 {
		t.Fatalf("dry run --json: %v %v\n%s", r.err, err, r.stdout)
	}
	if !out.DryRun || out.Plan.TargetKind != "name" || !out.Plan.Exclusive || out.Plan.Rule != fmt.Sprintf("commit LSN < %d", txns[29].CommitLSN) ||
		len(out.Plan.Segments) != 5 || out.Result != nil {
		t.Fatalf("dry run --json: %+v", out)
	}
}

func TestRestoreToTargetsEqualsTheSource(t *testing.T) {
	ctx := context.Background()
	txns := genLog(t, 60)
	f := newFixture(t, txns, 7)
	// A snapshot after txn 30, so restores past it start there.
	f.snapshot(t, 30)
	for i, c := range []struct {
		args []string
		n    int // transactions restored
	}{
		{[]string{"--target-time", txns[12].CommitTime.Format(time.RFC3339Nano)}, 13},
		{[]string{"--target-time", txns[12].CommitTime.Format(time.RFC3339Nano), "--exclusive"}, 12},
		{[]string{"--target-lsn", fmt.Sprint(txns[40].CommitLSN)}, 41},
		{[]string{"--target-source-lsn", change.FormatSourceLSN(txns[44].Header.SourceLSN), "--exclusive"}, 44},
		{[]string{"--target-xid", fmt.Sprint(txns[50].Header.XID)}, 51},
		{[]string{"--target-name", "rp-39"}, 40},
		{[]string{"--target", "latest", "--parallel", "2"}, 60},
		{nil, 60},
	} {
		dst := "sqlite://" + filepath.Join(t.TempDir(), fmt.Sprintf("r%d.db", i))
		r := walreplay(t, ctx, append([]string{"restore", "--archive", f.url, "--to", dst, "--json"}, c.args...)...)
		if r.code != 0 {
			t.Fatalf("%v: %v\n%s", c.args, r.err, r.stderr)
		}
		var out restoreJSON
		if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || out.Result == nil {
			t.Fatalf("%v: --json output: %v\n%s", c.args, err, r.stdout)
		}
		if out.Result.Position != txns[c.n-1].CommitLSN {
			t.Fatalf("%v: position %d, want %d", c.args, out.Result.Position, txns[c.n-1].CommitLSN)
		}
		if (c.n > 31) != (out.Plan.Snapshot != nil) {
			t.Errorf("%v: snapshot %+v used for a %d-transaction restore", c.args, out.Plan.Snapshot, c.n)
		}
		sameReplica(t, dst, expected(t, txns[:c.n]))
	}
}

func TestRestoreRefusals(t *testing.T) {
	ctx := context.Background()
	txns := genLog(t, 30)
	last := txns[len(txns)-1]
	f := newFixture(t, txns, 5)
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"--target-time", last.CommitTime.Add(time.Second).Format(time.RFC3339)}, 4, "after the last archived commit"},
		{[]string{"--target-lsn", fmt.Sprint(last.CommitLSN + 1)}, 4, "after the last archived commit"},
		{[]string{"--target-time", txns[0].CommitTime.Add(-time.Second).Format(time.RFC3339Nano)}, 4, "before the first archived commit"},
		{[]string{"--target-xid", "1"}, 4, "no archived transaction has xid 1"},
		{[]string{"--target-name", "nope"}, 4, `no restore point named "nope"`},
		{[]string{"--target-time", "yesterday"}, 2, "invalid target time"},
		{[]string{"--target-lsn", "5", "--target-xid", "7"}, 2, "give one target"},
		{[]string{"--target", "earliest"}, 2, `only value is "latest"`},
		{[]string{"--follow", "--target-lsn", "5"}, 2, "--follow needs --target latest"},
	} {
		dst := filepath.Join(dir, "r.db")
		r := walreplay(t, ctx, append([]string{"restore", "--archive", f.url, "--to", "sqlite://" + dst}, c.args...)...)
		t.Logf("%v: exit %d: %v", c.args, r.code, r.err)
		if r.code != c.code || r.err == nil || !strings.Contains(r.err.Error(), c.msg) {
			t.Errorf("%v: exit %d (%v), want %d with %q", c.args, r.code, r.err, c.code, c.msg)
		}
		if _, err := os.Stat(dst); err == nil {
			t.Fatalf("%v: refused restore created the destination", c.args)
		}
	}

	// A corrupt object is reported, naming it, before anything is created.
	bad := f.segs[4]
	p := filepath.Join(f.dir, filepath.FromSlash(bad.Key))
	b, _ := os.ReadFile(p)
	b[len(b)/2] ^= 1
	os.WriteFile(p, b, 0o644)
	dst := filepath.Join(dir, "c.db")
	r := walreplay(t, ctx, "restore", "--archive", f.url, "--to", "sqlite://"+dst)
	t.Logf("corrupt: exit %d: %v", r.code, r.err)
	if r.code != 1 || !strings.Contains(r.err.Error(), bad.Key) {
		t.Fatalf("corrupt object: exit %d: %v", r.code, r.err)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "c.db*")); len(m) != 0 {
		t.Fatalf("corrupt archive: destination files %v exist", m)
	}
	// ... but a restore that does not need it succeeds.
	r = walreplay(t, ctx, "restore", "--archive", f.url, "--to", "sqlite://"+dst, "--target-lsn", fmt.Sprint(bad.FirstLSN), "--exclusive")
	if r.code != 0 {
		t.Fatalf("restore before the corrupt object: %v", r.err)
	}

	// A manifest that does not verify, at the end of the archive, is not
	// taken for the end: refused as corrupt, naming it.
	lastMan := filepath.Join(f.dir, filepath.FromSlash(archive.ManifestKey(f.segs[len(f.segs)-1].Key)))
	mb, _ := os.ReadFile(lastMan)
	os.WriteFile(lastMan, append(mb[:len(mb)-5:len(mb)-5], " x}\n\n"...), 0o644)
	r = walreplay(t, ctx, "restore", "--archive", f.url, "--to", "sqlite://"+filepath.Join(dir, "m.db"), "--target-lsn", fmt.Sprint(bad.FirstLSN), "--exclusive")
	if manKey := archive.ManifestKey(f.segs[len(f.segs)-1].Key); r.code != 1 || !strings.Contains(r.err.Error(), manKey) {
		t.Fatalf("corrupt last manifest: exit %d: %v", r.code, r.err)
	}
	if r := walreplay(t, ctx, "verify", "--archive", f.url); r.code != 1 || !strings.Contains(r.stdout, "CORRUPT: "+archive.ManifestKey(f.segs[len(f.segs)-1].Key)) {
		t.Fatalf("verify of a corrupt manifest: exit %d\n%s", r.code, r.stdout)
	}
	os.WriteFile(lastMan, mb, 0o644)

	// A hole is refused with its LSNs.
	h := f.segs[2]
	os.Remove(filepath.Join(f.dir, filepath.FromSlash(h.Key)))
	os.Remove(filepath.Join(f.dir, filepath.FromSlash(archive.ManifestKey(h.Key))))
	r = walreplay(t, ctx, "restore", "--archive", f.url, "--to", "sqlite://"+filepath.Join(dir, "h.db"))
	t.Logf("hole: exit %d: %v", r.code, r.err)
	if want := fmt.Sprintf("lacks LSNs %d-%d", h.FirstLSN, h.LastLSN); r.code != 3 || !strings.Contains(r.err.Error(), want) {
		t.Fatalf("hole: exit %d (%v), want 3 with %q", r.code, r.err, want)
	}
	// An existing destination is refused.
	r = walreplay(t, ctx, "restore", "--archive", f.url, "--to", "sqlite://"+dst, "--target-lsn", "3")
	if r.code != 1 || !strings.Contains(r.err.Error(), "exists") {
		t.Fatalf("existing destination: exit %d: %v", r.code, r.err)
	}
}

// TestMissingArchiveDirectory: a mistyped file:// path is an error (exit
// 2), never an empty intact archive, and is not created.
func TestMissingArchiveDirectory(t *testing.T) {
	ctx := context.Background()
	missing := filepath.Join(t.TempDir(), "no-such-archive")
	for _, cmd := range []string{"verify", "list"} {
		r := walreplay(t, ctx, cmd, "--archive", "file://"+missing)
		if r.code != 2 || r.err == nil || !strings.Contains(r.err.Error(), missing) {
			t.Errorf("%s of a missing directory: exit %d (%v), want 2 naming it", cmd, r.code, r.err)
		}
	}
	if _, err := os.Stat(missing); err == nil {
		t.Fatal("a read-only command created the archive directory")
	}
}

func TestFollowAppliesNewObjects(t *testing.T) {
	txns := genLog(t, 50)
	f := newFixture(t, txns[:20], 5)
	f.txns = txns
	dst := "sqlite://" + filepath.Join(t.TempDir(), "standby.db")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan result, 1)
	go func() {
		done <- walreplay(t, ctx, "restore", "--archive", f.url, "--to", dst, "--follow", "--poll-interval", "20ms")
	}()
	waitPos := func(lsn uint64) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			if st, err := replica.ReadState(context.Background(), dst); err == nil && st.LSN == lsn {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("standby did not reach LSN %d", lsn)
	}
	waitPos(txns[19].CommitLSN)
	f.add(t, 20, 35, 4)
	waitPos(txns[34].CommitLSN)
	f.add(t, 35, 50, 15)
	waitPos(txns[49].CommitLSN)
	cancel()
	r := <-done
	if r.code != 0 {
		t.Fatalf("follow: exit %d: %v\n%s", r.code, r.err, r.stderr)
	}
	sameReplica(t, dst, expected(t, txns))
}

func TestPrune(t *testing.T) {
	ctx := context.Background()
	txns := genLog(t, 50)
	f := newFixture(t, txns, 5)
	f.snapshot(t, 19)
	f.snapshot(t, 34)
	// Bad policies are refused in the flags' words, never the Go fields'.
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{nil, "give --keep-snapshots N and/or --keep-within D"},
		{[]string{"--keep-snapshots", "-1"}, "--keep-snapshots -1: must not be negative"},
		{[]string{"--keep-within", "-1h"}, "--keep-within -1h0m0s: must not be negative"},
	} {
		r := walreplay(t, ctx, append([]string{"prune", "--archive", f.url}, c.args...)...)
		if r.code != 2 || r.err == nil || !strings.Contains(r.err.Error(), c.msg) ||
			strings.Contains(r.err.Error(), "KeepSnapshots") || strings.Contains(r.err.Error(), "RetentionPolicy") {
			t.Fatalf("prune %q: exit %d: %v, want 2 with %q", c.args, r.code, r.err, c.msg)
		}
	}
	r := walreplay(t, ctx, "prune", "--archive", f.url, "--keep-snapshots", "1", "--dry-run", "--json")
	var pj pruneJSON
	if err := json.Unmarshal([]byte(r.stdout), &pj); err != nil || r.code != 0 {
		t.Fatalf("prune --dry-run: %v %v\n%s", r.err, err, r.stdout)
	}
	// Segments of 5 transactions; the kept snapshot is at the end of txn 34:
	// segments 0-6 (txns 0-34) go, with the snapshot at txn 19.
	if l := pj.Lineages[0]; !pj.DryRun || l.OldestKept != txns[34].CommitLSN || len(l.DeletedSnapshots) != 1 || len(l.DeletedSegments) != 7 {
		t.Fatalf("prune --dry-run: %+v", pj)
	}
	if r := walreplay(t, ctx, "verify", "--archive", f.url); r.code != 0 || !strings.Contains(r.stdout, "12 objects") {
		t.Fatalf("after a dry run: exit %d\n%s", r.code, r.stdout)
	}
	r = walreplay(t, ctx, "prune", "--archive", f.url, "--keep-snapshots", "1")
	if r.code != 0 || !strings.Contains(r.stdout, "deleted 1 snapshots and 7 segments") {
		t.Fatalf("prune: exit %d: %v\n%s", r.code, r.err, r.stdout)
	}
	if r := walreplay(t, ctx, "verify", "--archive", f.url); r.code != 0 {
		t.Fatalf("verify after prune: exit %d\n%s", r.code, r.stdout)
	}
	dst := "sqlite://" + filepath.Join(t.TempDir(), "r.db")
	if r := walreplay(t, ctx, "restore", "--archive", f.url, "--to", dst); r.code != 0 {
		t.Fatalf("restore after prune: %v", r.err)
	}
	sameReplica(t, dst, expected(t, txns))
	r = walreplay(t, ctx, "restore", "--archive", f.url, "--to", dst+"2", "--target-lsn", fmt.Sprint(txns[30].CommitLSN))
	if r.code != 4 || !strings.Contains(r.err.Error(), "before the first snapshot") {
		t.Fatalf("restore below the pruned history: exit %d: %v", r.code, r.err)
	}
}

// TestEncryptedArchive: an archive sealed with a key is verified and
// restored with --encryption-key-file / --encryption-key-env; without the
// key it cannot be read (exit 2), and nothing is called corrupt.
func TestEncryptedArchive(t *testing.T) {
	ctx := context.Background()
	txns := genLog(t, 30)
	raw := make([]byte, 32)
	for i := range raw {
		raw[i] = byte(i*7 + 1)
	}
	keyText := hex.EncodeToString(raw)
	key, err := seal.ParseKey([]byte(keyText))
	if err != nil {
		t.Fatal(err)
	}
	sealer, err := seal.New(seal.Options{}, key)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{dir: t.TempDir(), txns: txns}
	f.url = "file://" + f.dir
	if f.a, err = archive.Open(ctx, f.url, archive.Options{Seal: sealer}); err != nil {
		t.Fatal(err)
	}
	f.add(t, 0, len(txns), 5)
	keyFile := filepath.Join(t.TempDir(), "key")
	os.WriteFile(keyFile, []byte(keyText+"\n"), 0o600)
	t.Setenv("WALREPLAY_TEST_KEY", keyText)

	if r := walreplay(t, ctx, "verify", "--archive", f.url, "--encryption-key-file", keyFile); r.code != 0 {
		t.Fatalf("verify with the key: exit %d: %v\n%s", r.code, r.err, r.stdout)
	}
	dst := "sqlite://" + filepath.Join(t.TempDir(), "r.db")
	if r := walreplay(t, ctx, "restore", "--archive", f.url, "--encryption-key-env", "WALREPLAY_TEST_KEY", "--to", dst); r.code != 0 {
		t.Fatalf("restore with the key: exit %d: %v", r.code, r.err)
	}
	sameReplica(t, dst, expected(t, txns))

	r := walreplay(t, ctx, "verify", "--archive", f.url)
	if r.code != 2 || strings.Contains(r.stdout, "CORRUPT") || !strings.Contains(r.err.Error(), "the archive is encrypted (key id "+key.ID+")") {
		t.Fatalf("verify without the key: exit %d: %v\n%s", r.code, r.err, r.stdout)
	}
	r = walreplay(t, ctx, "restore", "--archive", f.url, "--to", "sqlite://"+filepath.Join(t.TempDir(), "n.db"))
	if r.code != 2 {
		t.Fatalf("restore without the key: exit %d: %v", r.code, r.err)
	}
	r = walreplay(t, ctx, "list", "--archive", f.url, "--encryption-key-file", keyFile, "--encryption-key-env", "X")
	if r.code != 2 || !strings.Contains(r.err.Error(), "both set") {
		t.Fatalf("two keys: exit %d: %v", r.code, r.err)
	}
}

// TestEmptyTargetFlagsAreUsageErrors: a target flag given with an empty
// value (an unset shell variable) is bad usage naming the flag, never a
// quiet restore of the latest state.
func TestEmptyTargetFlagsAreUsageErrors(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, genLog(t, 10), 5)
	dir := t.TempDir()
	for _, flagName := range []string{"target-time", "target-lsn", "target-source-lsn", "target-xid", "target-name", "target"} {
		for _, form := range [][]string{{"--" + flagName, ""}, {"--" + flagName + "="}} {
			for _, mode := range [][]string{{"--to", "sqlite://" + filepath.Join(dir, "r.db")}, {"--dry-run"}} {
				args := append(append([]string{"restore", "--archive", f.url}, mode...), form...)
				r := walreplay(t, ctx, args...)
				if r.code != 2 || r.err == nil || !strings.Contains(r.err.Error(), "--"+flagName+": empty value") {
					t.Errorf("%q: exit %d (%v), want 2 naming --%s", args, r.code, r.err, flagName)
				}
				if r.stdout != "" {
					t.Errorf("%q: printed %q", args, r.stdout)
				}
			}
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "r.db")); err == nil {
		t.Fatal("a refused restore created the destination")
	}
}

// TestVerifyOfADirectoryThatIsNotAnArchive: a directory with nothing of an
// archive in it (a wrong path, a WAL directory) is an error saying what was
// expected (exit 2), not "intact, 0 objects"; an archive whose lineage is
// started but holds no objects yet is intact.
func TestVerifyOfADirectoryThatIsNotAnArchive(t *testing.T) {
	ctx := context.Background()
	empty := t.TempDir()
	other := t.TempDir()
	os.MkdirAll(filepath.Join(other, "wal"), 0o755)
	os.WriteFile(filepath.Join(other, "wal", "0000000000000001.seg"), []byte("not an archive"), 0o644)
	os.WriteFile(filepath.Join(other, "notes.txt"), []byte("hello"), 0o644)
	for _, dir := range []string{empty, other} {
		r := walreplay(t, ctx, "verify", "--archive", "file://"+dir)
		if r.code != 2 || r.err == nil || !strings.Contains(r.err.Error(), "file://"+dir+" is not a walship archive: expected lineage records") {
			t.Errorf("verify of %s: exit %d (%v)\n%s", dir, r.code, r.err, r.stdout)
		}
		if strings.Contains(r.stdout, "intact") {
			t.Errorf("verify of %s said intact:\n%s", dir, r.stdout)
		}
		r = walreplay(t, ctx, "verify", "--archive", "file://"+dir, "--json")
		var vj verifyJSON
		if err := json.Unmarshal([]byte(r.stdout), &vj); err != nil || r.code != 2 || vj.Status != "not_an_archive" {
			t.Errorf("verify --json of %s: exit %d, %v, %s", dir, r.code, err, r.stdout)
		}
	}

	started := t.TempDir()
	a, err := archive.Open(ctx, "file://"+started, archive.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.CreateLineage(ctx, archive.LineageRecord{ID: "main", Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if r := walreplay(t, ctx, "verify", "--archive", "file://"+started); r.code != 0 || !strings.HasPrefix(r.stdout, "intact:") {
		t.Fatalf("verify of a started, empty archive: exit %d (%v)\n%s", r.code, r.err, r.stdout)
	}
}

// TestHelpOfEveryCommand: each command's -h has its summary, a usage line
// naming only flags that exist, every flag, and an example; and each
// example runs as printed (against a fixture archive in place of the
// example's paths).
func TestHelpOfEveryCommand(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, genLog(t, 20), 5)
	tmp := t.TempDir()
	kafka := startKafka(t)
	for _, c := range program.Commands {
		if c.Summary == "" || c.Usage == "" || c.Example == "" {
			t.Errorf("%s: summary %q, usage %q, example %q", c.Name, c.Summary, c.Usage, c.Example)
			continue
		}
		r := walreplay(t, ctx, c.Name, "-h")
		if r.code != 0 || !strings.HasPrefix(r.stderr, "walreplay "+c.Name+": "+c.Summary+"\n\nusage: walreplay "+c.Name+" "+c.Usage+"\n\nflags:\n") ||
			!strings.Contains(r.stderr, "\nexample:\n  walreplay "+c.Name) {
			t.Errorf("%s -h: exit %d\n%s", c.Name, r.code, r.stderr)
		}
		flagsPart, _, _ := strings.Cut(r.stderr, "\nexample:\n")
		for _, word := range strings.Fields(c.Usage) {
			if word = strings.Trim(word, "[]()"); strings.HasPrefix(word, "-") && !strings.Contains(flagsPart, "\n  "+word+" ") && !strings.Contains(flagsPart, "\n  "+word+"\n") {
				t.Errorf("%s: the usage line names %s, which is not among the flags", c.Name, word)
			}
		}
		for _, line := range strings.Split(c.Example, "\n") {
			if strings.Contains(line, "--follow") {
				continue // runs until interrupted; TestFollowAppliesNewObjects covers it
			}
			line = strings.ReplaceAll(line, "/tmp/", tmp+"/")
			line = strings.ReplaceAll(line, "file:///var/backups/walship", f.url)
			line = strings.ReplaceAll(line, "localhost:9092", kafka.Addr)
			args := strings.Fields(line)
			if args[0] != "walreplay" {
				t.Fatalf("%s: example %q", c.Name, line)
			}
			if args[1] == "restore" && slices.Contains(args, "--target-time") {
				i := slices.Index(args, "--target-time")
				args[i+1] = f.txns[10].CommitTime.Format(time.RFC3339Nano) // a time inside the fixture
			}
			if r := walreplay(t, ctx, args[1:]...); r.code != 0 {
				t.Errorf("example %q: exit %d: %v", line, r.code, r.err)
			}
		}
	}
}

// TestVersion: `walreplay version` and `--version` print the version, the
// commit and the Go version.
func TestVersion(t *testing.T) {
	for _, arg := range []string{"version", "--version"} {
		r := walreplay(t, context.Background(), arg)
		if r.code != 0 || !strings.HasPrefix(r.stdout, "walreplay ") || !strings.Contains(r.stdout, "\ncommit: ") ||
			!strings.HasSuffix(r.stdout, "\ngo: "+runtime.Version()+"\n") {
			t.Errorf("%s: exit %d\n%s", arg, r.code, r.stdout)
		}
	}
}

// TestEmptyStateAsListed: the way `list` names to the empty state works: it
// restores an empty replica (exit 0), while --target-lsn 0 and a time
// before the first commit are refused.
func TestEmptyStateAsListed(t *testing.T) {
	ctx := context.Background()
	txns := genLog(t, 10)
	f := newFixture(t, txns, 5)
	r := walreplay(t, ctx, "list", "--archive", f.url)
	_, hint, ok := strings.Cut(r.stdout, "from the empty state (")
	hint, _, _ = strings.Cut(hint, ")")
	if !ok || hint != "--target-lsn 1 --exclusive" {
		t.Fatalf("list names no way to the empty state:\n%s", r.stdout)
	}
	dst := "sqlite://" + filepath.Join(t.TempDir(), "empty.db")
	r = walreplay(t, ctx, append([]string{"restore", "--archive", f.url, "--to", dst}, strings.Fields(hint)...)...)
	if r.code != 0 || !strings.Contains(r.stdout, "0 transactions") || !strings.Contains(r.stdout, "position LSN 0") {
		t.Fatalf("restore %s: exit %d (%v)\n%s", hint, r.code, r.err, r.stdout)
	}
	if r := walreplay(t, ctx, "restore", "--archive", f.url, "--dry-run", "--target-lsn", "0"); r.code != 2 || !strings.Contains(r.err.Error(), "lsn 0") {
		t.Errorf("--target-lsn 0: exit %d (%v), want 2", r.code, r.err)
	}
	before := txns[0].CommitTime.Add(-time.Second).Format(time.RFC3339Nano)
	if r := walreplay(t, ctx, "restore", "--archive", f.url, "--dry-run", "--target-time", before); r.code != 4 || !strings.Contains(r.err.Error(), "before the first archived commit") {
		t.Errorf("a time before the first commit: exit %d (%v), want 4", r.code, r.err)
	}
}
