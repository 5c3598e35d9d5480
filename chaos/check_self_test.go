package chaos

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/walship/walship/change"
	"github.com/walship/walship/wal"
)

// eventTxn is a transaction inserting the given public.events rows.
func eventTxn(commit uint64, ids ...string) change.Committed {
	t := change.Committed{FirstLSN: commit - uint64(len(ids)) + 1, CommitLSN: commit}
	for _, id := range ids {
		t.Changes = append(t.Changes, change.Change{Table: change.Table{Schema: "public", Name: "events"}, Op: change.Insert,
			After: change.Row{{Name: "id", Value: change.TextValue(id)}}})
	}
	return t
}

func topicOf(txns ...change.Committed) *topicLog {
	tl := &topicLog{lineages: map[string]bool{"l": true}, byCommit: map[uint64]int{}}
	for i, t := range txns {
		tl.byCommit[t.CommitLSN] = i
		tl.txns = append(tl.txns, t)
	}
	return tl
}

// TestChecksCatchLossAndDuplicates proves the checks of the suite fail
// when they must: an acknowledged transaction missing or holding other
// rows, a row twice, a gap in a strict topic.
func TestChecksCatchLossAndDuplicates(t *testing.T) {
	reqs := []*request{
		{key: "a", rows: [][]string{{"a/0/0"}}, lsns: []uint64{1}, acked: true},
		{key: "b", rows: [][]string{{"b/0/0"}}, lsns: []uint64{5}, acked: true},          // lost
		{key: "c", rows: [][]string{{"c/0/0", "c/0/1"}}, lsns: []uint64{3}, acked: true}, // other rows there
		{key: "d", rows: [][]string{{"d/0/0"}}},                                          // not acknowledged
	}
	tl := topicOf(eventTxn(1, "a/0/0"), eventTxn(3, "c/0/0", "x"), eventTxn(4, "a/0/0"))
	tl.gaps = []string{"offset 9: LSN 7 after 4"}
	r := newReport()
	r.checkAcked(reqs, tl, true)
	want := []string{"request b: transaction 0 acknowledged at LSN 5 is not in the topic",
		"request c: transaction 0 acknowledged at LSN 3 holds rows",
		"row a/0/0 in the topic twice", "ordered topic not dense"}
	expectFailures(t, r, want)
	if r.losses != 2 || r.duplicates != 2 || r.acked != 3 || r.ackedTxns != 3 {
		t.Errorf("losses %d duplicates %d acked %d/%d, want 2 2 3/3", r.losses, r.duplicates, r.acked, r.ackedTxns)
	}

	clean := newReport()
	clean.checkAcked(reqs[:1], topicOf(eventTxn(1, "a/0/0")), true)
	expectFailures(t, clean, nil)
}

// TestChecksCatchTwoWriters proves the PUT-log check fails on overlapping
// writers, a write outside its member's terms and a zombie's write after
// SIGCONT, and passes a clean handover.
func TestChecksCatchTwoWriters(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	ivs := []interval{{member: "m1", term: 1, from: at(0), to: at(1000)}, {member: "m2", term: 2, from: at(1000), to: at(3000)}}
	handover := []put{
		{member: "m1", path: "/a", start: at(100), end: at(200), status: 200},
		{member: "m1", path: "/b", start: at(900), end: at(1100), status: 502}, // cut: not a write
		{member: "m2", path: "/c", start: at(1200), end: at(1300), status: 200},
	}
	r := newReport()
	r.checkPuts(handover, ivs, nil)
	expectFailures(t, r, nil)

	bad := append(handover,
		put{member: "m1", path: "/late", start: at(1250), end: at(1400), status: 200}, // m1 after its term, beside m2
	)
	r = newReport()
	r.checkPuts(bad, ivs, []zombie{{member: "m1", term: 1, resumed: at(1240), exited: at(2500)}})
	expectFailures(t, r, []string{"two archive writers at once", "m1 PUT /late at", "zombie m1 (term 1) sent PUT /late"})
}

// TestChecksCatchZombieArchiveWrites proves the PUT-log checks of an
// archive-only group: the group's own objects (renewals of a candidate not
// yet leading, heartbeats beside the leader's writes, a resumed zombie's
// heartbeat) are no lineage writes, and a zombie's write answered after its
// term's end bound (its last renewal + the lease, or another member's next
// renewal if earlier) or sent after SIGCONT fails the run.
func TestChecksCatchZombieArchiveWrites(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	const lease, hb, data = "/chaos/" + archiveRoot + "/ha/lease/", "/chaos/" + archiveRoot + "/ha/member/", "/chaos/" + archiveRoot + "/main/wal/"
	ivs := []interval{{member: "m1", term: 1, from: at(0), to: at(3000)}, {member: "m2", term: 5, from: at(6000), to: at(20000)}}
	z := []zombie{{member: "m1", term: 1, paused: at(1000), resumed: at(5000), exited: at(5500), code: 4}}
	clean := []put{
		{member: "m1", path: lease + "1", start: at(100), end: at(110), status: 200},
		{member: "m1", path: lease + "2", start: at(600), end: at(610), status: 200}, // the last renewal: the term ends by 2600
		{member: "m1", path: data + "a", start: at(700), end: at(750), status: 200},
		{member: "m2", path: hb + "m2", start: at(720), end: at(730), status: 200},     // beside m1's write
		{member: "m2", path: lease + "3", start: at(2000), end: at(2010), status: 200}, // m2's first renewal: m1's term ended before
		{member: "m2", path: lease + "3", start: at(2000), end: at(2010), status: 412}, // a rival's try
		{member: "m1", path: hb + "m1", start: at(5100), end: at(5110), status: 200},   // the resumed zombie's heartbeat
		{member: "m1", path: lease + "3", start: at(5105), end: at(5110), status: 412}, // ... and its renewal, refused
		{member: "m2", path: lease + "4", start: at(5900), end: at(5910), status: 200},
		{member: "m2", path: data + "b", start: at(6100), end: at(6200), status: 200},
	}
	r := newReport()
	r.checkPuts(clean, ivs, z)
	expectFailures(t, r, nil)
	if r.zombieTerms != 1 || r.zombieHeartbeats != 1 || r.zombieRenewals != [2]int{1, 0} || r.puts != 2 || r.groupPuts != 6 {
		t.Errorf("zombie terms %d, heartbeats %d, renewals %v, writes %d, group objects %d; want 1, 1, [1 0], 2, 6",
			r.zombieTerms, r.zombieHeartbeats, r.zombieRenewals, r.puts, r.groupPuts)
	}

	bad := append(clean,
		put{member: "m1", path: data + "after", start: at(2100), end: at(2150), status: 200}, // after m2's renewal at 2000
		put{member: "m1", path: data + "across", start: at(900), end: at(2700), status: 200}, // answered after the bound
		put{member: "m1", path: data + "resumed", start: at(5050), end: at(5060), status: 200},
	)
	r = newReport()
	r.checkPuts(bad, ivs, z)
	expectFailures(t, r, []string{"PUT " + data + "after arrived at 00:00:02.100, after its term had ended (at 00:00:02.000 at the latest",
		"PUT " + data + "across arrived at 00:00:00.900 and was answered at 00:00:02.700, across the end of its term",
		"zombie m1 (term 1) sent PUT " + data + "resumed", `it landed: the window of docs/HA.md "Limits"`})

	// Any lineage write: one that reached the proxy after its member
	// stopped saying it leads but within its term's bound was in flight (a
	// note); one after the bound fails.
	solo := []put{{member: "m1", path: lease + "1", start: at(100), end: at(110), status: 200},
		{member: "m1", path: data + "inflight", start: at(1100), end: at(1200), status: 200}}
	short := []interval{{member: "m1", term: 1, from: at(0), to: at(1000)}}
	r = newReport()
	r.checkPuts(solo, short, nil)
	expectFailures(t, r, nil)
	if r.inFlight != 1 || len(r.notes) != 1 {
		t.Errorf("in flight %d, notes %q; want one", r.inFlight, r.notes)
	}
	r = newReport()
	r.checkPuts(append(solo, put{member: "m1", path: data + "late", start: at(2200), end: at(2300), status: 200}), short, nil)
	expectFailures(t, r, []string{"m1 PUT " + data + "late arrived at 00:00:02.200 (status 200), after its term had ended (at 00:00:02.100 at the latest"})

	// No renewal of the zombie before its pause: the bound cannot be drawn,
	// which an archive-only group's log must allow.
	r = newReport()
	r.checkPuts(clean[2:], ivs, z)
	expectFailures(t, r, []string{"zombie m1 (term 1): no lease renewal of its own in the PUT log"})
}

func expectFailures(t *testing.T, r *report, want []string) {
	t.Helper()
	if len(want) == 0 && len(r.failures) > 0 {
		t.Errorf("unexpected failures: %q", r.failures)
	}
	for _, w := range want {
		found := false
		for _, f := range r.failures {
			found = found || strings.Contains(f, w)
		}
		if !found {
			t.Errorf("no failure says %q; failures: %q", w, r.failures)
		}
	}
}

// TestIntervalsFromPolls checks how leadership intervals are built from the
// polls: a poll without an answer neither ends nor extends one, an exit
// ends one, and a member seen leading again after a restart starts another.
func TestIntervalsFromPolls(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	o := newObserver([]*member{{name: "m1"}, {name: "m2"}}, true)
	o.mu.obs = []observation{
		{at: at(100), member: "m1", up: true},
		{at: at(200), member: "m1", up: true, leader: true, term: 1},
		{at: at(300), member: "m1"}, // no answer
		{at: at(400), member: "m1", up: true, leader: true, term: 1},
		{at: at(700), member: "m1", up: true, leader: true, term: 1}, // after a restart at 500
		{at: at(800), member: "m1", up: true},
		{at: at(100), member: "m2", up: true},
		{at: at(900), member: "m2", up: true, leader: true, term: 2},
	}
	got := o.intervals(at(1000), []exit{{member: "m1", at: at(500)}})
	want := []interval{
		{member: "m1", term: 1, from: at(100), to: at(500)},
		{member: "m1", term: 1, from: at(500), to: at(800)},
		{member: "m2", term: 2, from: at(100), to: at(1000)},
	}
	if len(got) != len(want) {
		t.Fatalf("intervals %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("interval %d: %+v, want %+v", i, got[i], want[i])
		}
	}
}

// TestChecksCompareMembersLogs proves the end check of an archive-only
// group: a member's log equal to the archive passes, one that ends early or
// holds another transaction at the same LSNs fails, naming the member.
func TestChecksCompareMembersLogs(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	txn := func(commit uint64, sec int, ids ...string) change.Committed {
		c := eventTxn(commit, ids...)
		c.CommitTime = t0.Add(time.Duration(sec) * time.Second)
		return c
	}
	history := []change.Committed{txn(1, 1, "a"), txn(3, 2, "b", "c"), txn(4, 3, "d")}
	logs := map[string][]change.Committed{
		"same":  history,
		"short": history[:2],
		"other": {history[0], txn(3, 2, "b", "x"), history[2]},
	}
	var members []*member
	for _, name := range []string{"same", "short", "other"} {
		m := &member{name: name, walDir: t.TempDir()}
		w, _, err := wal.Open(wal.Options{Dir: m.walDir})
		if err != nil {
			t.Fatal(err)
		}
		for i := range logs[name] {
			if _, err := w.AppendReplica(context.Background(), &logs[name][i]); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		members = append(members, m)
	}
	tl := topicOf(history...)
	tl.what = "archive"
	r := newReport()
	r.checkMemberLogs(context.Background(), members, tl)
	expectFailures(t, r, []string{"short's log ends at LSN 3, the archive at 4", "other's log: transaction 1 at LSNs 2-3"})
	if len(r.failures) != 2 || r.logsChecked != 1 {
		t.Errorf("failures %q, logs equal %d; want 2 failures and 1 log equal", r.failures, r.logsChecked)
	}
}
