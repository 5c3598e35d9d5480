package chaos

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

// report gathers the figures of a run (docs/RELIABILITY.md) and the
// failures the checks found; the test fails if there is any failure.
type report struct {
	faults     map[string]int
	takeovers  map[string][]time.Duration // by kind: fault to a new leader (higher term) seen answering
	outages    map[string][]time.Duration // by kind: fault to the first acknowledged write started after it
	requests   int                        // HTTP requests issued
	acked      int                        // ... acknowledged
	ackedTxns  int                        // transactions acknowledged
	history    string                     // where the transactions were checked: the topic or the archive
	topicTxns  int                        // transactions in the history
	losses     int                        // acknowledged transactions not in the history as acknowledged
	duplicates int                        // rows in the history more than once, transactions out of order
	transfers  int64
	puts       int // 2xx PUTs to the lineage
	groupPuts  int // 2xx PUTs of an archive-only group's own objects (ha/)
	restores   int
	// Archive-only groups: zombies whose term's end the PUT log bounds,
	// heartbeats and lease renewals (refused, landed) they sent once
	// resumed, members' logs equal to the archive.
	zombieTerms      int
	zombieHeartbeats int
	zombieRenewals   [2]int
	inFlight         int // lineage writes that reached the proxy after their member stopped saying it leads, within its term's bound
	logsChecked      int
	failures         []string
	notes            []string // what the run could not do on this machine, printed first
}

func newReport() *report {
	return &report{faults: map[string]int{}, takeovers: map[string][]time.Duration{}, outages: map[string][]time.Duration{}}
}

func (r *report) note(format string, args ...any) {
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
}

func (r *report) fail(format string, args ...any) {
	r.failures = append(r.failures, fmt.Sprintf(format, args...))
}

// checkAcked checks that every acknowledged request's LSNs hold its
// transactions, exactly, in the topic, and that no row of any request (so
// no idempotency key) is in the topic twice.
func (r *report) checkAcked(reqs []*request, tl *topicLog, strict bool) {
	r.topicTxns, r.history = len(tl.txns), tl.name()
	if strict {
		// A transactional sink fenced at every takeover leaves nothing of an
		// old leader visible to read_committed: raw LSNs are dense.
		for _, g := range tl.gaps {
			r.fail("ordered topic not dense: %s", g)
			r.duplicates++
		}
	}
	if len(tl.lineages) != 1 {
		r.fail("%s holds %d lineages (%v), want 1", tl.name(), len(tl.lineages), tl.lineages)
	}
	seen := map[string]uint64{} // row id -> commit LSN holding it
	for i := range tl.txns {
		t := &tl.txns[i]
		for _, id := range eventRows(t) {
			if at, dup := seen[id]; dup {
				r.duplicates++
				r.fail("row %s in the %s twice: in the transactions ending at LSN %d and %d", id, tl.name(), at, t.CommitLSN)
				continue
			}
			seen[id] = t.CommitLSN
		}
	}
	for _, q := range reqs {
		r.requests++
		if !q.acked {
			continue
		}
		r.acked++
		r.ackedTxns += len(q.rows)
		if !slices.IsSorted(q.lsns) {
			r.fail("request %s acknowledged with LSNs out of order: %v", q.key, q.lsns)
		}
		for i, lsn := range q.lsns {
			k, ok := tl.byCommit[lsn]
			if !ok {
				r.losses++
				r.fail("request %s: transaction %d acknowledged at LSN %d is not in the %s (lost)", q.key, i, lsn, tl.name())
				continue
			}
			if got := eventRows(&tl.txns[k]); !slices.Equal(got, q.rows[i]) {
				r.losses++
				r.fail("request %s: transaction %d acknowledged at LSN %d holds rows %v in the %s, want %v", q.key, i, lsn, got, tl.name(), q.rows[i])
			}
		}
	}
}

// checkPuts checks the archive's PUT log: writes (2xx PUTs) of two members
// to the lineage never overlap in time, each falls within a leadership
// interval of its member (in an archive-only group, whose lease renewals
// are in the PUT log too: arrives before its term's end bound, termBound;
// one in flight when its member stopped saying it leads is a note), and a
// zombie sends nothing to the lineage from
// SIGCONT until it exits (an archive-only group's zombie may still send a
// heartbeat and one lease renewal, which is how it learns its term is
// over). The group's own objects under ha/ (an archive-only group's lease
// renewals, heartbeats and loss reports) are not writes to the lineage:
// candidates renew before they lead, every member sends heartbeats.
func (r *report) checkPuts(puts []put, ivs []interval, zombies []zombie) {
	var writes []put
	for _, p := range puts {
		if p.status >= 200 && p.status < 300 {
			if groupObject(p.path) {
				r.groupPuts++
			} else {
				writes = append(writes, p)
			}
		}
	}
	r.puts = len(writes)
	sort.Slice(writes, func(i, j int) bool { return writes[i].start.Before(writes[j].start) })
	// Overlaps: keep the latest end per member seen so far.
	for i := range writes {
		for j := i + 1; j < len(writes) && writes[j].start.Before(writes[i].end); j++ {
			if writes[j].member != writes[i].member {
				r.fail("two archive writers at once: %s PUT %s [%s, %s] and %s PUT %s from %s", writes[i].member, writes[i].path,
					stamp(writes[i].start), stamp(writes[i].end), writes[j].member, writes[j].path, stamp(writes[j].start))
			}
		}
	}
	renewals := slices.ContainsFunc(puts, func(p put) bool { return leaseRenewal(p.path) })
	for _, w := range writes {
		ok := false
		for _, iv := range ivs {
			if iv.member == w.member && w.start.After(iv.from) && w.start.Before(iv.to) {
				ok = true
				break
			}
		}
		if !renewals {
			if !ok {
				r.fail("%s PUT %s at %s outside any of its leadership terms", w.member, w.path, stamp(w.start))
			}
			continue
		}
		// An archive-only group: the term itself is in the PUT log.
		bound, last := termBound(puts, w.member, w.start)
		switch {
		case last.IsZero():
			r.fail("%s PUT %s at %s (status %d) with no lease renewal of its own before it", w.member, w.path, stamp(w.start), w.status)
		case w.start.After(bound):
			r.fail("%s PUT %s arrived at %s (status %d), after its term had ended (at %s at the latest: last renewal %s)",
				w.member, w.path, stamp(w.start), w.status, stamp(bound), stamp(last))
		case !ok:
			// The member had stopped saying it leads (it saw its deadline
			// pass) when the PUT reached the proxy, but the PUT log cannot
			// place it after the term: sent before, it was in flight.
			r.inFlight++
			r.note("%s PUT %s arrived at %s (answered %s, status %d), after the member stopped saying it leads, before its term's end bound %s (last renewal %s)",
				w.member, w.path, stamp(w.start), stamp(w.end), w.status, stamp(bound), stamp(last))
		}
	}
	for _, z := range zombies {
		for _, w := range puts {
			if w.member != z.member || w.start.Before(z.resumed) || (!z.exited.IsZero() && !w.start.Before(z.exited)) {
				continue
			}
			if heartbeat(w.path) {
				// A heartbeat says where the member is; it is no write of the
				// lineage or the lease.
				r.zombieHeartbeats++
				continue
			}
			if leaseRenewal(w.path) {
				// How a resumed leader learns it was replaced: a conditional
				// put of its next number, refused (412) when the new leader
				// holds it. One that lands (no one took the number yet) does
				// not count: its deadline check refuses it (docs/HA.md, "The
				// protocol"); the summary says how many did.
				if w.status >= 200 && w.status < 300 {
					r.zombieRenewals[1]++
				} else {
					r.zombieRenewals[0]++
				}
				continue
			}
			landed := ""
			if w.status >= 200 && w.status < 300 {
				landed = `; it landed: the window of docs/HA.md "Limits" (a leader paused between its term check and the write it allows)`
			}
			r.fail("zombie %s (term %d) sent PUT %s at %s, after SIGCONT at %s (status %d)%s", z.member, z.term, w.path,
				stamp(w.start), stamp(z.resumed), w.status, landed)
		}
		r.checkZombieTerm(puts, z)
	}
}

// checkZombieTerm checks, in an archive-only group, that nothing a paused
// leader wrote landed after its term ended, as far as the PUT log can tell.
// The log bounds the end of the term from above: the leader's deadline is
// the start of its last successful renewal on its own clock plus the lease
// less a margin, and it started that renewal before the proxy saw it, so
// the term ended at most leaseLength after the renewal's arrival; it also
// ended before another member's next renewal arrived (written only after
// that member saw the lapse, docs/HA.md). A 2xx PUT to the lineage of
// the zombie's process answered after that bound fails the run: arrived
// after it, it landed after the term (proven); arrived before and answered
// after, it may have landed on either side (the log cannot tell when in
// its request the store committed it). What the log cannot prove: that a
// PUT answered before the bound landed within the term (the bound is an
// upper one), nor anything of what the zombie wrote without reaching the
// proxy (nothing of that landed). A Kafka group holds no renewal in the
// archive; there the check is the SIGCONT one alone.
func (r *report) checkZombieTerm(puts []put, z zombie) {
	if !slices.ContainsFunc(puts, func(p put) bool { return leaseRenewal(p.path) }) {
		return
	}
	bound, last := termBound(puts, z.member, z.paused)
	if last.IsZero() {
		r.fail("zombie %s (term %d): no lease renewal of its own in the PUT log before its pause at %s", z.member, z.term, stamp(z.paused))
		return
	}
	r.zombieTerms++
	for _, w := range puts {
		if w.member != z.member || w.status < 200 || w.status >= 300 || groupObject(w.path) || !w.end.After(bound) ||
			(!z.exited.IsZero() && !w.start.Before(z.exited)) || w.end.Before(z.paused) {
			continue
		}
		if w.start.After(bound) {
			r.fail("zombie %s (term %d): PUT %s arrived at %s, after its term had ended (at %s at the latest: last renewal %s): it landed after the term",
				z.member, z.term, w.path, stamp(w.start), stamp(bound), stamp(last))
		} else {
			r.fail("zombie %s (term %d): PUT %s arrived at %s and was answered at %s, across the end of its term (at %s at the latest): it may have landed after the term",
				z.member, z.term, w.path, stamp(w.start), stamp(w.end), stamp(bound))
		}
	}
}

// termBound bounds from above, from the PUT log, the end of member's term
// as of at: last is the arrival of its last successful lease renewal
// before at (zero if none), and the term ended at most leaseLength after
// it (the leader's deadline is the renewal's start on its own clock plus
// the lease less a margin, and it started the renewal before the proxy saw
// it), and before another member's next successful renewal arrived
// (written only once that member saw the lapse, docs/HA.md).
func termBound(puts []put, member string, at time.Time) (bound, last time.Time) {
	for _, p := range puts {
		if leaseRenewal(p.path) && p.status >= 200 && p.status < 300 && p.member == member && p.start.Before(at) && p.start.After(last) {
			last = p.start
		}
	}
	if last.IsZero() {
		return time.Time{}, last
	}
	bound = last.Add(leaseLength)
	for _, p := range puts {
		if leaseRenewal(p.path) && p.status >= 200 && p.status < 300 && p.member != member && p.start.After(last) && p.start.Before(bound) {
			bound = p.start
		}
	}
	return bound, last
}

// groupObject, leaseRenewal and heartbeat tell an archive-only group's own
// objects (docs/HA.md, "The objects") from the lineage's, by the PUT's path
// ("/bucket/<archiveRoot>/ha/...").
func groupObject(path string) bool  { return strings.Contains(path, "/"+archiveRoot+"/ha/") }
func leaseRenewal(path string) bool { return strings.Contains(path, "/"+archiveRoot+"/ha/lease/") }
func heartbeat(path string) bool    { return strings.Contains(path, "/"+archiveRoot+"/ha/member/") }

func stamp(t time.Time) string { return t.Format("15:04:05.000") }

// summary is the figures docs/RELIABILITY.md asks for.
func (r *report) summary(exits []exit) string {
	var b strings.Builder
	kinds := make([]string, 0, len(r.faults))
	total := 0
	for k, n := range r.faults {
		kinds = append(kinds, k)
		total += n
	}
	sort.Strings(kinds)
	for _, n := range r.notes {
		fmt.Fprintln(&b, n)
	}
	fmt.Fprintf(&b, "faults injected: %d\n", total)
	for _, k := range kinds {
		fmt.Fprintf(&b, "  %-14s %3d  takeover p50 %-8s max %-8s  write outage p50 %-8s max %s\n", k, r.faults[k],
			pct(r.takeovers[k], 50), pct(r.takeovers[k], 100), pct(r.outages[k], 50), pct(r.outages[k], 100))
	}
	var all []time.Duration
	for _, d := range r.takeovers {
		all = append(all, d...)
	}
	fmt.Fprintf(&b, "takeovers: %d, p50 %s, max %s\n", len(all), pct(all, 50), pct(all, 100))
	fmt.Fprintf(&b, "HTTP requests: %d issued, %d acknowledged (%d transactions); %s: %d transactions\n",
		r.requests, r.acked, r.ackedTxns, r.history, r.topicTxns)
	fmt.Fprintf(&b, "bank transfers committed: %d; archive writes (PUT 2xx): %d; restores checked: %d\n", r.transfers, r.puts, r.restores)
	if r.groupPuts > 0 {
		fmt.Fprintf(&b, "group objects (ha/ PUT 2xx): %d; zombie terms bounded by the PUT log: %d; resumed zombies' heartbeats: %d, lease renewals refused: %d, landed (not counted): %d; lineage writes in flight after their member stopped leading: %d; members' logs identical to the archive: %d\n",
			r.groupPuts, r.zombieTerms, r.zombieHeartbeats, r.zombieRenewals[0], r.zombieRenewals[1], r.inFlight, r.logsChecked)
	}
	fmt.Fprintf(&b, "losses: %d, duplicates: %d\n", r.losses, r.duplicates)
	codes := map[string]int{}
	for _, e := range exits {
		k := fmt.Sprintf("exit %d", e.code)
		if e.signal != "" {
			k = e.signal
		}
		if e.planned != "" {
			k += " (" + e.planned + ")"
		}
		codes[k]++
	}
	fmt.Fprintf(&b, "member exits: %v\n", codes)
	return b.String()
}

// pct is the p-th percentile (nearest rank) of ds, "-" if empty.
func pct(ds []time.Duration, p int) string {
	if len(ds) == 0 {
		return "-"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (p*len(s)+99)/100 - 1
	return s[max(i, 0)].Round(10 * time.Millisecond).String()
}
