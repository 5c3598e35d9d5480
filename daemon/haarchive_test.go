package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/walship/walship/archive"
	"github.com/walship/walship/change"
	"github.com/walship/walship/config"
	"github.com/walship/walship/ha"
)

// archiveHAConfig is a member of a group without Kafka: the lease and the
// history are in the archive at url.
func archiveHAConfig(t *testing.T, url, name string) *config.Config {
	t.Helper()
	y := fmt.Sprintf("wal: {dir: %q, segment_size: 1MiB, sync: shipped}\nhttp: {listen: \"127.0.0.1:0\"}\n"+
		"source:\n  http: {listen: \"127.0.0.1:0\"}\narchive: {url: %q, timeout: 1s}\nha: {name: %s, lease: 3s}\n", t.TempDir(), url, name)
	cfg, err := config.Parse([]byte(y), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestHAArchiveOnlyTakeover: a group without Kafka. The leader holds its
// lease in the archive and acknowledges a write once it is archived; the
// follower copies the archive into an identical log and answers writes
// with 503 naming the leader. When the leader stops, the follower takes
// over: a keyed retry gets the original answer, new writes continue the
// same LSNs, and the archive holds every LSN exactly once. The old leader,
// started again, follows and catches up; no loss is recorded.
func TestHAArchiveOnlyTakeover(t *testing.T) {
	t.Parallel()
	url := "file://" + t.TempDir()
	cfgA, cfgB := archiveHAConfig(t, url, "a"), archiveHAConfig(t, url, "b")

	a := start(t, cfgA)
	waitFor(t, "a leads", func() bool { return a.role() == RoleLeader })
	b := start(t, cfgB)
	defer func() { b.stop(t) }()
	if got := b.role(); got != RoleFollower {
		t.Fatalf("second member: role %q, want follower", got)
	}
	code, _, _, first := postKeyed(t, a.d.Addr("source.http"), "import-1", rows(1, 20))
	if code != 200 {
		t.Fatalf("keyed post to the leader: %d %s", code, first)
	}
	if code, _, _, msg := postKeyed(t, a.d.Addr("source.http"), "", rows(100, 30)); code != 200 {
		t.Fatalf("post to the leader: %d %s", code, msg)
	}
	waitFor(t, "b knows a leads", func() bool { return b.d.Positions().HA.Leader == "a" })
	if code, leader, _, msg := postKeyed(t, b.d.Addr("source.http"), "", rows(500, 1)); code != http.StatusServiceUnavailable || leader != "a" {
		t.Fatalf("post to the follower: %d, Walship-Leader %q, want 503 naming a: %s", code, leader, msg)
	}
	endA := a.d.wal.Durable()
	waitFor(t, "the follower has the leader's log", func() bool { return b.d.wal.Durable() == endA })

	a.stop(t)
	waitFor(t, "b takes over", func() bool { return b.role() == RoleLeader })
	code, _, replayed, again := postKeyed(t, b.d.Addr("source.http"), "import-1", rows(1, 20))
	if code != 200 || replayed == "" || again != first {
		t.Fatalf("retry against the new leader: %d, replayed %q:\n%s\nwant the original answer:\n%s", code, replayed, again, first)
	}
	code, _, _, next := postKeyed(t, b.d.Addr("source.http"), "", rows(1000, 1))
	var ack struct {
		LSN uint64 `json:"lsn"`
	}
	if code != 200 || json.Unmarshal([]byte(strings.TrimSpace(next)), &ack) != nil || ack.LSN != endA+1 {
		t.Fatalf("first write to the new leader: %d %q, want LSN %d", code, next, endA+1)
	}
	end := b.d.wal.Durable()

	// The archive holds LSNs 1..end once each, in order (shipped: the
	// write was acknowledged only once archived).
	ctx := context.Background()
	ar, err := OpenArchive(ctx, cfgA.Archive, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ar.Close()
	var next1 uint64 = 1
	for _, tx := range archivedTxns(t, ctx, ar) {
		if tx.FirstLSN != next1 || tx.CommitLSN < tx.FirstLSN {
			t.Fatalf("archived transaction at LSNs %d-%d, want it to start at %d", tx.FirstLSN, tx.CommitLSN, next1)
		}
		next1 = tx.CommitLSN + 1
	}
	if next1 != end+1 {
		t.Fatalf("the archive ends at LSN %d, want %d", next1-1, end)
	}

	a = start(t, cfgA)
	defer func() { a.stop(t) }()
	waitFor(t, "the old leader rejoins as a follower and catches up", func() bool {
		return a.role() == RoleFollower && a.d.wal.Durable() == end
	})
	if ha := b.d.Positions().HA; ha == nil || ha.Leader != "b" || ha.Takeovers != 1 {
		t.Fatalf("b's view of the group: %+v", ha)
	}
	losses, err := HALosses(ctx, cfgA, false)
	if err != nil || len(losses) != 0 {
		t.Fatalf("walship ha check on the group: %v %v, want no loss", losses, err)
	}
}

// archivedTxns reads every transaction of the archive's lineage, segment
// by segment.
func archivedTxns(t *testing.T, ctx context.Context, ar *archive.Archive) []change.Committed {
	t.Helper()
	lin, err := ar.LineageCatalog(ctx, Lineage)
	if err != nil {
		t.Fatal(err)
	}
	var out []change.Committed
	for _, m := range lin.Segments {
		txns, err := ar.ReadSegment(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, txns...)
	}
	return out
}

// TestHALossesInArchive: a group without Kafka keeps its loss reports in
// the archive; HALosses (walship ha check) lists them oldest term first,
// and with acknowledge forgets them.
func TestHALossesInArchive(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg := archiveHAConfig(t, "file://"+t.TempDir(), "a")
	ar, err := OpenArchive(ctx, cfg.Archive, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ar.Close()
	lease, err := ha.OpenArchiveLease(ctx, ha.ArchiveLeaseOptions{Backend: ar.Backend(), Member: "a"})
	if err != nil {
		t.Fatal(err)
	}
	defer lease.Close()
	rec := archiveLossRecords{b: ar.Backend(), lease: lease}
	for _, term := range []int64{12, 3} {
		if err := rec.record(ctx, LossReport{Term: term, After: "0/10", Through: "0/20", Member: "a"}); err != nil {
			t.Fatal(err)
		}
	}
	for _, ack := range []bool{false, true} {
		got, err := HALosses(ctx, cfg, ack)
		if err != nil || len(got) != 2 || got[0].Term != 3 || got[1].Term != 12 || got[0].Through != "0/20" {
			t.Fatalf("HALosses(acknowledge %v) = %+v, %v; want terms 3 and 12", ack, got, err)
		}
	}
	if got, err := HALosses(ctx, cfg, false); err != nil || len(got) != 0 {
		t.Fatalf("after acknowledging: %+v, %v; want none", got, err)
	}
}

// archiveHAConfigWith is archiveHAConfig with other archive settings.
func archiveHAConfigWith(t *testing.T, url, name, sync, archiveExtra string) *config.Config {
	t.Helper()
	y := fmt.Sprintf("wal: {dir: %q, segment_size: 1MiB, sync: %s}\nhttp: {listen: \"127.0.0.1:0\"}\n"+
		"source:\n  http: {listen: \"127.0.0.1:0\"}\narchive: {url: %q, %s}\nha: {name: %s, lease: 3s}\n", t.TempDir(), sync, url, archiveExtra, name)
	cfg, err := config.Parse([]byte(y), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestHAArchiveSnapshotsStayBehindHistory: in a group without Kafka the
// archive's segments are the group's history; a base snapshot is never
// stored at an LSN they do not reach yet (a leader lost before archiving
// would leave a snapshot of transactions the history lacks).
func TestHAArchiveSnapshotsStayBehindHistory(t *testing.T) {
	t.Parallel()
	cfg := archiveHAConfigWith(t, "file://"+t.TempDir(), "a", "local", "timeout: 8s, snapshot_interval: 300ms")
	a := start(t, cfg)
	defer a.stop(t)
	waitFor(t, "a leads", func() bool { return a.role() == RoleLeader })
	if code, _, _, msg := postKeyed(t, a.d.Addr("source.http"), "", rows(1, 20)); code != 200 {
		t.Fatalf("post: %d %s", code, msg)
	}
	end := a.d.wal.Durable()
	ctx := context.Background()
	ar, err := OpenArchive(ctx, cfg.Archive, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ar.Close()
	catalog := func() *archive.Lineage {
		lin, err := ar.LineageCatalog(ctx, Lineage)
		if err != nil {
			t.Fatal(err)
		}
		return lin
	}
	waitFor(t, "a snapshot at the log's end, once archived", func() bool {
		snaps := catalog().Snapshots
		// Segments read after the snapshots: they only grow, so a
		// snapshot beyond them was stored beyond the history.
		var segEnd uint64
		for _, m := range catalog().Segments {
			segEnd = max(segEnd, m.LastLSN)
		}
		for _, s := range snaps {
			if s.LSN > segEnd {
				t.Fatalf("snapshot at LSN %d stored while the archive's segments end at LSN %d", s.LSN, segEnd)
			}
		}
		return len(snaps) > 0 && snaps[len(snaps)-1].LSN == end
	})
}

// TestHAFollowerTrimKeepsSnapshotter: with base snapshots on, a follower
// trims its log only up to the leader's newest snapshot, and builds its
// snapshotter when it leads: its replica, which stood still while it
// followed, starts again from that snapshot and the new leader goes on
// taking snapshots.
func TestHAFollowerTrimKeepsSnapshotter(t *testing.T) {
	t.Parallel()
	url := "file://" + t.TempDir()
	extra := "timeout: 1s, snapshot_interval: 1s"
	a := start(t, archiveHAConfigWith(t, url, "a", "shipped", extra))
	waitFor(t, "a leads", func() bool { return a.role() == RoleLeader })
	b := start(t, archiveHAConfigWith(t, url, "b", "shipped", extra))
	defer func() { b.stop(t) }()
	pad := strings.Repeat("x", 1000)
	for i := 0; a.d.wal.FirstLSN() == 1; i++ {
		if i > 50 {
			t.Fatalf("the leader's log still starts at LSN 1 after %d requests of 1 MiB", i)
		}
		var body strings.Builder
		for j := range 1000 {
			fmt.Fprintf(&body, `{"table":"public.t","op":"c","key":{"id":%d},"after":{"id":%d,"pad":%q}}`+"\n", i*1000+j, i*1000+j, pad)
		}
		if code, _, _, msg := postKeyed(t, a.d.Addr("source.http"), "", body.String()); code != 200 {
			t.Fatalf("post to the leader: %d %s", code, msg)
		}
		if i >= 3 {
			waitFor(t, "the leader's retention removes archived segments", func() bool { return a.d.wal.FirstLSN() > 1 })
		}
	}
	endA := a.d.wal.Durable()
	waitFor(t, "the follower copies the log and trims it", func() bool {
		return b.d.wal.Durable() == endA && b.d.wal.FirstLSN() > 1
	})
	a.stop(t)
	waitFor(t, "b takes over", func() bool { return b.role() == RoleLeader })
	if code, _, _, msg := postKeyed(t, b.d.Addr("source.http"), "", rows(1_000_000, 1)); code != 200 {
		t.Fatalf("post to the new leader: %d %s", code, msg)
	}
	waitFor(t, "the new leader's snapshotter stores a snapshot of its writes", func() bool {
		select {
		case err := <-b.done:
			t.Fatalf("the new leader stopped: %v", err)
		default:
		}
		return b.d.snapshotter.Last().LSN > endA
	})
}

// TestHAFollowerErrorStopsMember: a follower that cannot go on copying the
// history (here: the archive holds two overlapping segments) stops with
// the error, so that its supervisor sees it, instead of standing still.
func TestHAFollowerErrorStopsMember(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	url := "file://" + dir
	a := start(t, archiveHAConfig(t, url, "a"))
	defer a.stop(t)
	waitFor(t, "a leads", func() bool { return a.role() == RoleLeader })
	if code, _, _, msg := postKeyed(t, a.d.Addr("source.http"), "", rows(1, 20)); code != 200 {
		t.Fatalf("post: %d %s", code, msg)
	}
	b := start(t, archiveHAConfig(t, url, "b"))
	end := a.d.wal.Durable()
	waitFor(t, "b copies the log", func() bool { return b.d.wal.Durable() == end })
	late := archive.ManifestKey(archive.SegmentKey(Lineage, 1, end+5))
	if err := os.WriteFile(filepath.Join(dir, filepath.FromSlash(late)), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-b.done:
		if err == nil || !strings.Contains(err.Error(), "overlaps") {
			t.Fatalf("the follower stopped with %v, want the overlap named", err)
		}
	case <-time.After(time.Minute):
		b.stop(t)
		t.Fatal("the follower did not stop within a minute of the archive holding two histories")
	}
	b.cancel()
}
