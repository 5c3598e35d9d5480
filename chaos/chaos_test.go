package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/walship/walship/replica"
)

// TestChaos runs the group (-chaos.group, Kafka by default) under the
// nemesis and then proves, once every fault is healed and the pipeline has
// caught up, that no acknowledged transaction was lost or duplicated: in
// the ordered topic, in the replica, in the archive and its restores; that
// at most one member wrote to the archive at any moment, each only within
// its term; and that a zombie leader wrote nothing and exited 4
// (docs/RELIABILITY.md).
func TestChaos(t *testing.T) {
	switch *flagGroup {
	case groupKafka, groupArchive:
	default:
		t.Fatalf("-chaos.group %q: want %s or %s", *flagGroup, groupKafka, groupArchive)
	}
	runChaos(t, *flagGroup)
}

// TestChaosArchiveGroup runs a group without Kafka under the nemesis: the
// lease, the heartbeats and the history are in the archive, and the checks
// are the archive's: every acknowledged transaction once and in order in
// the archive, the bank conserved at point-in-time restores, every
// member's log identical to the archive, one writer of the lineage at a
// time, and no zombie PUT after its term (docs/RELIABILITY.md). With
// -chaos.group=archive TestChaos is this run, and this test skips.
func TestChaosArchiveGroup(t *testing.T) {
	if *flagGroup == groupArchive {
		t.Skip("-chaos.group=archive: TestChaos runs the archive-only group")
	}
	runChaos(t, groupArchive)
}

func runChaos(t *testing.T, group string) {
	withKafka := group == groupKafka
	t.Logf("chaos group: %s", group)
	if !withKafka {
		// Refused before anything starts (plan refuses them too).
		for _, k := range strings.Split(*flagKinds, ",") {
			if kafkaFaults[strings.TrimSpace(k)] {
				t.Fatalf("-chaos.kinds: %q needs Kafka, and an archive-only group (-chaos.group=archive) has none", strings.TrimSpace(k))
			}
		}
	}
	seed := runSeed(t)
	rng := rand.New(rand.NewPCG(seed, 1))
	root := t.TempDir()
	if *flagKeep {
		var err error
		if root, err = os.MkdirTemp("", "walship-chaos-"); err != nil {
			t.Fatal(err)
		}
		t.Logf("run directory kept: %s", root)
	}
	srv := startServers(t, root, withKafka)
	ctx := context.Background()
	createBank(ctx, t, srv.pg.DSN(bankDB))

	ha := *flagMembers > 1
	var members []*member
	for i := range *flagMembers {
		members = append(members, newMember(t, srv, root, fmt.Sprintf("m%d", i+1), ha))
	}
	// The replica is kept from the ordered topic: a Kafka group's only.
	replicaDB := filepath.Join(root, "replica.db")
	var others []*member
	if withKafka {
		others = append(others, newConsumer(t, srv, root, replicaDB))
	}

	// The processes live until runCtx ends; the supervisors then stop them
	// cleanly and return.
	runCtx, stopRun := context.WithCancel(ctx)
	var procs sync.WaitGroup
	for _, m := range append(others, members...) {
		procs.Add(1)
		go func() { defer procs.Done(); m.supervise(runCtx, t) }()
	}
	defer func() { stopRun(); procs.Wait() }()
	obs := newObserver(members, ha)
	procs.Add(1)
	go func() { defer procs.Done(); obs.run(runCtx) }()

	rep := newReport()
	wr := newWriters(t, members, obs)
	nem := &nemesis{t: t, rng: rng, srv: srv, members: members, others: others, obs: obs, wr: wr, rep: rep, ha: ha, noKafka: !withKafka}
	nem.waitLeader()

	// Workloads until the nemesis is done; writers then finish the request
	// they have in flight (hardCtx bounds that).
	workCtx, stopWork := context.WithCancel(ctx)
	hardCtx, stopHard := context.WithTimeout(ctx, time.Hour)
	defer stopHard()
	bk := &bank{dsn: srv.pg.DSN(bankDB)}
	var work sync.WaitGroup
	work.Add(2)
	go func() { defer work.Done(); bk.run(workCtx, seed, 2) }()
	go func() { defer work.Done(); wr.run(workCtx, hardCtx, seed, 3) }()

	func() {
		defer nem.heal()
		nem.run(ctx, nem.plan(*flagFaults))
	}()
	stopWork()
	finished := make(chan struct{})
	go func() { work.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(120 * time.Second):
		stopHard()
		<-finished
		t.Errorf("the writers did not finish their last requests within 120s of the faults' end")
	}
	if msg := wr.bad.Load(); msg != nil {
		rep.fail("a writer got an answer the contract never gives: %s", *msg)
	}
	rep.transfers = bk.transfers.Load()

	// Quiesce: PostgreSQL no longer changes, so the replica catches up to it
	// and the leader's sinks to its log; only then is anything compared.
	// No client is in a transaction on the bank any more (one whose
	// worker gave up waiting would still commit).
	waitFor(t, "PostgreSQL's bank clients to be idle", 120*time.Second, func() (bool, string) {
		n, err := busyClients(ctx, srv.pg.DSN(bankDB))
		if err != nil {
			return false, err.Error()
		}
		return n == 0, fmt.Sprintf("%d client backends of the bank database not idle", n)
	})
	want, err := accounts(ctx, srv.pg.DSN(bankDB))
	must(t, err)
	if why := conserved(want); why != "" {
		t.Fatalf("PostgreSQL itself: %s", why)
	}
	if withKafka {
		waitFor(t, "the replica to equal PostgreSQL", 120*time.Second, func() (bool, string) {
			got, err := accounts(ctx, "sqlite://"+replicaDB)
			if err != nil {
				return false, err.Error()
			}
			return fmt.Sprint(got) == fmt.Sprint(want), fmt.Sprintf("replica %v, PostgreSQL %v", got, want)
		})
	}
	if !withKafka {
		// No replica tells when capture has caught up with PostgreSQL: the
		// archive's latest restore does (the archive is the sink that
		// counts, so all of the leader's log is there once shipped).
		attempt := 0
		waitFor(t, "the archive's latest restore to equal PostgreSQL", 180*time.Second, func() (bool, string) {
			attempt++
			dst := "sqlite://" + filepath.Join(root, fmt.Sprintf("caught-up-%d.db", attempt))
			res, err := runTool(ctx, walreplayBin, append(append([]string{"restore"}, srv.archiveArgs()...), "--to", dst)...)
			if err != nil || res.code != 0 {
				return false, fmt.Sprintf("walreplay restore: %v %v", err, res)
			}
			got, err := accounts(ctx, dst)
			if err != nil {
				return false, err.Error()
			}
			return fmt.Sprint(got) == fmt.Sprint(want), fmt.Sprintf("restore %v, PostgreSQL %v", got, want)
		})
	}
	var through uint64
	waitFor(t, "the leader's sinks to ship its whole log", 120*time.Second, func() (bool, string) {
		m, _, ok := obs.leader()
		if !ok {
			return false, "no leader"
		}
		st, err := m.positions(ctx)
		if err != nil {
			return false, err.Error()
		}
		through = st.durable()
		return (!withKafka || st.Sinks["kafka"] >= through) && st.Sinks["archive"] >= through, fmt.Sprintf("%s: durable %d, sinks %v", m.name, through, st.Sinks)
	})

	// Every standby too, whatever happened to it (disk-full): its log ends
	// where the leader's does.
	waitFor(t, "every member's log to end at the leader's", 120*time.Second, func() (bool, string) {
		var behind []string
		for _, m := range members {
			st, err := m.positions(ctx)
			if err != nil {
				behind = append(behind, err.Error())
			} else if st.durable() != through {
				behind = append(behind, fmt.Sprintf("%s (%s) at %d, last log line: %s", m.name, st.Role, st.durable(), m.logTail()))
			}
		}
		return len(behind) == 0, fmt.Sprintf("leader at %d; %v", through, behind)
	})

	var tl *topicLog
	if withKafka {
		checkOrderedTopic(ctx, t, srv)
		if tl, err = readTopic(ctx, srv.brokers, through); err != nil {
			t.Fatal(err)
		}
		checkKcat(t, srv, tl)
		rep.checkAcked(wr.requests(), tl, ha)
		rep.checkReplicaRows(ctx, replicaDB, wr.requests())
	} else {
		// The archive is the history: the acknowledged transactions are
		// checked there, in order, as in the topic.
		if tl, err = readArchive(ctx, srv); err != nil {
			t.Fatal(err)
		}
		if len(tl.txns) == 0 {
			t.Fatalf("the archive holds no transaction; the leader's log ends at LSN %d", through)
		}
		rep.checkArchiveOrder(tl)
		rep.checkAcked(wr.requests(), tl, false)
	}
	rep.checkArchive(ctx, srv, tl, rng, root, want)

	stopRun()
	procs.Wait()
	if !withKafka {
		rep.checkMemberLogs(ctx, members, tl)
	}
	var exits []exit
	var puts []put
	for _, m := range members {
		exits = append(exits, m.exits()...)
		puts = append(puts, m.s3.puts()...)
	}
	if *flagKeep {
		keepPuts(t, filepath.Join(root, "puts.tsv"), puts)
	}
	rep.checkPuts(puts, obs.intervals(time.Now(), exits), nem.zombies)

	t.Logf("chaos summary (seed %d):\n%s", seed, rep.summary(exits))
	for _, f := range rep.failures {
		t.Error(f)
	}
	if rep.acked == 0 || rep.transfers == 0 {
		t.Errorf("nothing was acknowledged (%d requests) or transferred (%d): the run proves nothing", rep.acked, rep.transfers)
	}
}

// checkReplicaRows checks that the replica holds every acknowledged row of
// the HTTP writers (the topic check proves each is there once).
func (r *report) checkReplicaRows(ctx context.Context, db string, reqs []*request) {
	tables, err := replica.Dump(ctx, "sqlite://"+db)
	if err != nil {
		r.fail("replica: %v", err)
		return
	}
	have := map[string]bool{}
	for _, row := range tables["events"] {
		var e struct{ ID string }
		if err := json.Unmarshal([]byte(row), &e); err != nil {
			r.fail("replica events row %s: %v", row, err)
			return
		}
		have[e.ID] = true
	}
	for _, q := range reqs {
		if !q.acked {
			continue
		}
		for _, ids := range q.rows {
			for _, id := range ids {
				if !have[id] {
					r.losses++
					r.fail("request %s: acknowledged row %s is not in the replica", q.key, id)
				}
			}
		}
	}
}

// keepPuts writes the PUT log, in arrival order, for a post-mortem.
func keepPuts(t *testing.T, path string, puts []put) {
	sorted := slices.Clone(puts)
	slices.SortFunc(sorted, func(a, b put) int { return a.start.Compare(b.start) })
	var b strings.Builder
	b.WriteString("member\tstart\tend\tstatus\tpath\n")
	for _, p := range sorted {
		fmt.Fprintf(&b, "%s\t%s\t%s\t%d\t%s\n", p.member, p.start.Format(time.RFC3339Nano), p.end.Format(time.RFC3339Nano), p.status, p.path)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Errorf("keep the PUT log: %v", err)
	}
}
