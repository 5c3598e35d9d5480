package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	toxiclient "github.com/Shopify/toxiproxy/v2/client"
)

// Fault kinds. The first three are the ones every run injects first.
const (
	faultHostLoss    = "host-loss"    // SIGKILL the leader, its wal.dir deleted
	faultZombie      = "zombie"       // SIGSTOP the leader for 2-3 leases, then SIGCONT
	faultPGCut       = "pg-cut"       // the leader's PostgreSQL connection cut for a few seconds
	faultPGRestart   = "pg-restart"   // PostgreSQL stopped (fast or immediate) and started
	faultPGLatency   = "pg-latency"   // latency on the leader's PostgreSQL connection
	faultPGSlice     = "pg-slice"     // the leader's PostgreSQL stream sliced into small delayed pieces
	faultS3SlowDown  = "s3-503"       // the leader's archive answers 503 SlowDown
	faultS3Latency   = "s3-latency"   // the leader's archive answers late
	faultKafkaOutage = "kafka-outage" // every broker unreachable from every process for a few seconds
	faultKafkaCut    = "kafka-cut"    // the leader's Kafka connections cut for a few seconds
	faultKafkaLat    = "kafka-latency"
	faultKafkaSlice  = "kafka-slice"
	faultS3Cut       = "s3-cut" // the leader's archive connections cut for a few seconds
	faultS3Slice     = "s3-slice"
	faultDiskFull    = "disk-full" // a follower's wal.dir full for a few seconds
)

// leaderFaults need a group: with one member they would lose what the
// operator contract says only a group keeps.
var leaderFaults = map[string]bool{faultHostLoss: true, faultZombie: true}

// groupFaults are the faults that need a group: the leader faults, and
// those that hit a follower.
var groupFaults = map[string]bool{faultHostLoss: true, faultZombie: true, faultDiskFull: true}

// kafkaFaults need Kafka: an archive-only group has none, so they are not
// drawn, and asking for one with -chaos.kinds fails the run.
var kafkaFaults = map[string]bool{faultKafkaOutage: true, faultKafkaCut: true, faultKafkaLat: true, faultKafkaSlice: true}

// nsFaults need the mount namespaces and tmpfs of servers.ns.
var nsFaults = map[string]bool{faultDiskFull: true}

var allFaults = []string{faultHostLoss, faultZombie, faultPGCut, faultPGRestart, faultPGLatency, faultPGSlice,
	faultS3SlowDown, faultS3Latency, faultS3Cut, faultS3Slice, faultKafkaOutage, faultKafkaCut, faultKafkaLat, faultKafkaSlice,
	faultDiskFull}

// zombie records one paused leader: its term, when it resumed and when it
// then exited (zero if it did not).
type zombie struct {
	member  string
	term    int64
	paused  time.Time
	resumed time.Time
	exited  time.Time
	code    int
}

// nemesis injects faults at random moments, from its seed.
type nemesis struct {
	t       *testing.T
	rng     *rand.Rand
	srv     *servers
	members []*member
	others  []*member // the other processes that reach Kafka (the consumer)
	obs     *observer
	wr      *writers
	rep     *report
	ha      bool
	noKafka bool // an archive-only group: no Kafka fault applies
	zombies []zombie
}

// plan returns the kinds of n faults: the mandatory ones first (those a
// single member can take), then random ones.
func (n *nemesis) plan(count int) []string {
	var kinds []string
	var refused []string
	for _, k := range allFaults {
		if kafkaFaults[k] && n.noKafka {
			refused = append(refused, k)
			continue
		}
		if nsFaults[k] && !n.srv.ns {
			n.rep.note("WARNING: %s left out of the plan: %s", k, n.srv.nsWhy)
			n.t.Logf("WARNING: %s left out of the plan: %s", k, n.srv.nsWhy)
			continue
		}
		if n.ha || !groupFaults[k] {
			kinds = append(kinds, k)
		}
	}
	var out []string
	for _, k := range []string{faultHostLoss, faultZombie, faultPGCut} {
		if len(out) < count && (n.ha || !groupFaults[k]) {
			out = append(out, k)
		}
	}
	if *flagKinds != "" {
		// Given kinds are injected in turn, so that a long run has as many
		// of each as it asks for.
		given := strings.Split(*flagKinds, ",")
		for i, k := range given {
			given[i] = strings.TrimSpace(k)
			if slices.Contains(refused, given[i]) {
				n.t.Fatalf("-chaos.kinds: %q needs Kafka, and an archive-only group (-chaos.group=archive) has none; the kinds that apply: %s", given[i], strings.Join(kinds, ", "))
			}
			if !slices.Contains(kinds, given[i]) {
				n.t.Fatalf("-chaos.kinds: %q is not one of %s", given[i], strings.Join(kinds, ", "))
			}
		}
		for i := 0; len(out) < count; i++ {
			out = append(out, given[i%len(given)])
		}
		return out
	}
	for len(out) < count {
		out = append(out, kinds[n.rng.IntN(len(kinds))])
	}
	return out
}

// run injects the planned faults one after another, each after a random
// quiet time, and measures how long the group took to answer again.
func (n *nemesis) run(ctx context.Context, kinds []string) {
	for i, kind := range kinds {
		quiet := time.Duration(1000+n.rng.IntN(2000)) * time.Millisecond
		select { // the random moment of the next fault, not a wait for an event
		case <-ctx.Done():
			return
		case <-time.After(quiet):
		}
		leader, term := n.waitLeader()
		n.t.Logf("fault %d/%d: %s (leader %s, term %d)", i+1, len(kinds), kind, leader.name, term)
		at := time.Now()
		// The takeover is timed while the fault goes on (a zombie is
		// paused for longer than a takeover takes).
		var took chan time.Duration
		if leaderFaults[kind] {
			took = make(chan time.Duration, 1)
			go func() { took <- n.untilNewLeader(at, term) }()
		}
		n.inject(kind, leader, term)
		n.rep.faults[kind]++
		n.measure(kind, at, took)
	}
}

// waitLeader waits until the group has a leader that answers.
func (n *nemesis) waitLeader() (*member, int64) {
	var m *member
	var term int64
	waitFor(n.t, "a leader", 90*time.Second, func() (bool, string) {
		var ok bool
		m, term, ok = n.obs.leader()
		why := "no member says it leads"
		for _, m := range n.members {
			if ex := m.exits(); len(ex) > 0 {
				why += fmt.Sprintf("; %s exited %d times, last %s: %s", m.name, len(ex), ex[len(ex)-1], m.logTail())
			}
		}
		return ok, why
	})
	return m, term
}

// untilNewLeader polls until a leader of a higher term than oldTerm
// answers and returns the time since at, or -1 after 90 s.
func (n *nemesis) untilNewLeader(at time.Time, oldTerm int64) time.Duration {
	for time.Since(at) < 90*time.Second {
		if _, term, ok := n.obs.leader(); ok && term > oldTerm {
			return time.Since(at)
		}
		time.Sleep(20 * time.Millisecond) // polling the observer's last answers
	}
	return -1
}

// measure records the takeover time (took: to a leader of a higher term,
// for faults that remove the leader) and the write outage (to the first
// acknowledged write that started after the fault).
func (n *nemesis) measure(kind string, at time.Time, took chan time.Duration) {
	if took != nil {
		d := <-took
		if d < 0 {
			n.t.Fatalf("%s: no new leader within 90s of the fault; last polls: %v", kind, n.obs.lastObs())
		}
		n.rep.takeovers[kind] = append(n.rep.takeovers[kind], d)
	}
	var ackAt time.Time
	waitFor(n.t, kind+": an acknowledged write", 90*time.Second, func() (bool, string) {
		var ok bool
		ackAt, ok = n.wr.firstAckAfter(at)
		return ok, "no write acknowledged since the fault"
	})
	n.rep.outages[kind] = append(n.rep.outages[kind], ackAt.Sub(at))
}

func (n *nemesis) between(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(n.rng.Int64N(int64(hi-lo)))
}

// hold keeps a fault on for d: the fault's length is part of its
// definition, so this is a timer, not a wait for a condition.
func hold(d time.Duration) { <-time.After(d) }

func (n *nemesis) inject(kind string, leader *member, term int64) {
	t := n.t
	switch kind {
	case faultHostLoss:
		leader.signal(syscall.SIGKILL, kind, true)
	case faultZombie:
		n.zombie(leader, term)
	case faultPGCut:
		must(t, leader.pg.Disable())
		hold(n.between(2*time.Second, 5*time.Second))
		must(t, leader.pg.Enable())
	case faultPGRestart:
		if n.rng.IntN(2) == 0 {
			must(t, n.srv.pg.Crash())
		} else {
			must(t, n.srv.pg.Stop())
		}
		hold(n.between(500*time.Millisecond, 2*time.Second))
		must(t, n.srv.pg.Start())
	case faultPGLatency:
		n.toxic([]*toxiclient.Proxy{leader.pg}, "latency", "downstream", toxiclient.Attributes{"latency": 300, "jitter": 200})
	case faultPGSlice:
		n.toxic([]*toxiclient.Proxy{leader.pg}, "slicer", "downstream", toxiclient.Attributes{"average_size": 64, "size_variation": 48, "delay": 2000})
	case faultS3SlowDown:
		leader.s3.set(s3SlowDown)
		hold(n.between(2*time.Second, 5*time.Second))
		leader.s3.set(s3Pass)
	case faultS3Latency:
		leader.s3.set(s3Latency)
		hold(n.between(2*time.Second, 5*time.Second))
		leader.s3.set(s3Pass)
	case faultS3Cut:
		n.cut([]*toxiclient.Proxy{leader.s3toxi})
	case faultS3Slice:
		// Both ways: a segment's PUT crawls up in ~1 KiB pieces, the
		// answers come back in small ones.
		n.toxic([]*toxiclient.Proxy{leader.s3toxi}, "slicer", "upstream", toxiclient.Attributes{"average_size": 1024, "size_variation": 512, "delay": 500})
	case faultKafkaOutage:
		// The leader's first: the write outage is timed from the fault's start.
		n.cut(n.proxies(nil, leader))
	case faultKafkaCut:
		n.cut(leader.kafka.proxies)
	case faultKafkaLat:
		n.toxic(leader.kafka.proxies, "latency", "downstream", toxiclient.Attributes{"latency": 200, "jitter": 100})
	case faultKafkaSlice:
		n.toxic(leader.kafka.proxies, "slicer", "downstream", toxiclient.Attributes{"average_size": 64, "size_variation": 48, "delay": 1000})
	case faultDiskFull:
		n.diskFull(leader)
	default:
		t.Fatalf("unknown fault %q", kind)
	}
}

// toxic adds a Toxiproxy toxic to every proxy of ps on stream (downstream:
// from the server to the member) for a few seconds.
func (n *nemesis) toxic(ps []*toxiclient.Proxy, typ, stream string, attrs toxiclient.Attributes) {
	for _, p := range ps {
		_, err := p.AddToxic("chaos", typ, stream, 1, attrs)
		must(n.t, err)
	}
	hold(n.between(3*time.Second, 5*time.Second))
	for _, p := range ps {
		must(n.t, p.RemoveToxic("chaos"))
	}
}

// cut disables every proxy of ps for a few seconds: their connections are
// cut and new ones refused.
func (n *nemesis) cut(ps []*toxiclient.Proxy) {
	for _, p := range ps {
		must(n.t, p.Disable())
	}
	hold(n.between(2*time.Second, 5*time.Second))
	for _, p := range ps {
		must(n.t, p.Enable())
	}
}

// proxies returns every Kafka proxy of the run once (views may share
// theirs), and the proxies also returns for each member; first's come
// first.
func (n *nemesis) proxies(also func(*member) []*toxiclient.Proxy, first ...*member) []*toxiclient.Proxy {
	seen := map[string]bool{}
	var ps []*toxiclient.Proxy
	for _, m := range slices.Concat(first, n.members, n.others) {
		more := m.kafka.proxies
		if also != nil {
			more = append(slices.Clone(more), also(m)...)
		}
		for _, p := range more {
			if !seen[p.Name] {
				seen[p.Name] = true
				ps = append(ps, p)
			}
		}
	}
	return ps
}

// diskFull fills the wal.dir disk of a follower, then frees it. Segments
// are preallocated, so a follower only needs new space when it starts
// one: the disk stays full for 3 to 5 s and then until the follower shows
// it ran out (it exited, or its log stood still for 3 s while the
// leader's grew), at most 90 s. The follower may fail (and be restarted);
// it must not corrupt its log: the final checks want it caught up.
func (n *nemesis) diskFull(leader *member) {
	var followers []*member
	for _, m := range n.members {
		if m != leader && m.disk != "" {
			followers = append(followers, m)
		}
	}
	if len(followers) == 0 {
		n.t.Fatalf("disk-full: no follower with a tmpfs wal.dir")
	}
	m := followers[n.rng.IntN(len(followers))]
	before := len(m.exits())
	at := time.Now()
	path, size, err := fillDisk(m.disk)
	if err != nil {
		n.t.Fatalf("%s: %v", m.name, err)
	}
	hold(n.between(3*time.Second, 5*time.Second))
	felt := ""
	var lsn uint64
	moved := time.Now()
	for felt == "" && time.Since(at) < 90*time.Second {
		obs := n.obs.lastObs()
		f, l := obs[m.name], obs[leader.name]
		switch {
		case len(m.exits()) > before:
			felt = fmt.Sprintf("it exited (%s)", m.exits()[len(m.exits())-1])
		case f.up && f.durable != lsn:
			lsn, moved = f.durable, time.Now()
		case time.Since(moved) > 3*time.Second && l.durable > lsn:
			felt = fmt.Sprintf("its log stood still at LSN %d while the leader's reached %d", lsn, l.durable)
		}
		time.Sleep(100 * time.Millisecond) // polling the observer's last answers
	}
	must(n.t, os.Remove(path))
	if felt == "" {
		felt = "WARNING: it neither exited nor stalled"
		n.rep.note("disk-full on %s at %s: %s within 90 s", m.name, stamp(at), felt)
	}
	n.t.Logf("disk-full: %s's disk full (%d MiB of filler) for %v: %s", m.name, size>>20, time.Since(at).Round(100*time.Millisecond), felt)
}

// zombie pauses the leader past its lease, lets it run again and waits for
// it to exit with status 4 ("ha: lost the lease"), as the contract says.
func (n *nemesis) zombie(leader *member, term int64) {
	drain(leader.exited)
	paused := time.Now()
	leader.signal(syscall.SIGSTOP, "", false)
	hold(n.between(2*leaseLength, 3*leaseLength))
	z := zombie{member: leader.name, term: term, paused: paused, resumed: time.Now(), code: -2}
	leader.signal(syscall.SIGCONT, "", false)
	select {
	case e := <-leader.exited:
		z.exited, z.code = e.at, e.code
	case <-time.After(60 * time.Second):
	}
	if z.code != 4 {
		n.rep.fail("zombie %s (term %d): after SIGCONT it exited with %d, want 4 (lost the lease); -2: it did not exit within 60s", z.member, term, z.code)
	}
	n.zombies = append(n.zombies, z)
}

// heal undoes every fault that may still be on (the run ended in the middle
// of one, or a step failed).
func (n *nemesis) heal() {
	for _, m := range n.members {
		m.signal(syscall.SIGCONT, "", false)
		m.s3.set(s3Pass)
		if m.disk != "" {
			_ = os.Remove(filepath.Join(m.disk, "chaos-filler"))
		}
	}
	for _, p := range n.proxies(func(m *member) []*toxiclient.Proxy {
		if m.pg == nil {
			return nil
		}
		return []*toxiclient.Proxy{m.pg, m.s3toxi}
	}) {
		_ = p.Enable()
		_ = p.RemoveToxic("chaos")
	}
	_ = n.srv.pg.Start()
}

func drain(c chan exit) {
	for {
		select {
		case <-c:
		default:
			return
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
