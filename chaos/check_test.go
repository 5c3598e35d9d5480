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
	topicTxns  int                        // transactions in the ordered topic
	losses     int                        // acknowledged transactions not in the topic as acknowledged
	duplicates int                        // rows in the topic more than once
	transfers  int64
	puts       int
	restores   int
	failures   []string
	notes      []string // what the run could not do on this machine, printed first
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
	r.topicTxns = len(tl.txns)
	if strict {
		// A transactional sink fenced at every takeover leaves nothing of an
		// old leader visible to read_committed: raw LSNs are dense.
		for _, g := range tl.gaps {
			r.fail("ordered topic not dense: %s", g)
			r.duplicates++
		}
	}
	if len(tl.lineages) != 1 {
		r.fail("ordered topic holds %d lineages (%v), want 1", len(tl.lineages), tl.lineages)
	}
	seen := map[string]uint64{} // row id -> commit LSN holding it
	for i := range tl.txns {
		t := &tl.txns[i]
		for _, id := range eventRows(t) {
			if at, dup := seen[id]; dup {
				r.duplicates++
				r.fail("row %s in the topic twice: in the transactions ending at LSN %d and %d", id, at, t.CommitLSN)
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
				r.fail("request %s: transaction %d acknowledged at LSN %d is not in the topic (lost)", q.key, i, lsn)
				continue
			}
			if got := eventRows(&tl.txns[k]); !slices.Equal(got, q.rows[i]) {
				r.losses++
				r.fail("request %s: transaction %d acknowledged at LSN %d holds rows %v in the topic, want %v", q.key, i, lsn, got, q.rows[i])
			}
		}
	}
}

// checkPuts checks the archive's PUT log: writes (2xx PUTs) of two members
// never overlap in time, each falls within a leadership interval of its
// member, and a zombie writes nothing from SIGCONT until it exits.
func (r *report) checkPuts(puts []put, ivs []interval, zombies []zombie) {
	var writes []put
	for _, p := range puts {
		if p.status >= 200 && p.status < 300 {
			writes = append(writes, p)
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
	for _, w := range writes {
		ok := false
		for _, iv := range ivs {
			if iv.member == w.member && w.start.After(iv.from) && w.start.Before(iv.to) {
				ok = true
				break
			}
		}
		if !ok {
			r.fail("%s PUT %s at %s outside any of its leadership terms", w.member, w.path, stamp(w.start))
		}
	}
	for _, z := range zombies {
		for _, w := range puts {
			if w.member == z.member && !w.start.Before(z.resumed) && (z.exited.IsZero() || w.start.Before(z.exited)) {
				r.fail("zombie %s (term %d) sent PUT %s at %s, after SIGCONT at %s (status %d)", z.member, z.term, w.path,
					stamp(w.start), stamp(z.resumed), w.status)
			}
		}
	}
}

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
	fmt.Fprintf(&b, "HTTP requests: %d issued, %d acknowledged (%d transactions); topic: %d transactions\n",
		r.requests, r.acked, r.ackedTxns, r.topicTxns)
	fmt.Fprintf(&b, "bank transfers committed: %d; archive writes (PUT 2xx): %d; restores checked: %d\n", r.transfers, r.puts, r.restores)
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
