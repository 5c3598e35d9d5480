package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/walship/walship/change"
	"github.com/walship/walship/config"
	"github.com/walship/walship/ha"
	"github.com/walship/walship/internal/secret"
	"github.com/walship/walship/kafkasink"
	"github.com/walship/walship/kafkawire"
	"github.com/walship/walship/pgsource"
	"github.com/walship/walship/status"
	"github.com/walship/walship/wal"
)

// ExitHA is the exit status of a walship run that stopped because of its
// place in an HA group: it lost its lease, or its log diverged from the
// group's. Started again, it rejoins as a follower (docs/HA.md).
const ExitHA = 4

// ErrHA marks the errors Run returns for ExitHA.
var ErrHA = errors.New("ha")

// Roles of a member of an HA group.
const (
	RoleFollower = "follower"
	RoleLeader   = "leader"
)

// groupLease is where a group's lease lives: a Kafka topic (ha.Lease) or
// the archive (ha.ArchiveLease, for groups without Kafka). Both give the
// same ha.Term.
type groupLease interface {
	Campaign(ctx context.Context) (*ha.Term, error)
	Leader() (ha.Member, bool)
	Members() []ha.Member
	Close() error
}

// groupLog keeps the member's log a copy of the group's history: the
// ordered topic (ha.Follower) or the archive (ha.ArchiveFollower).
type groupLog interface {
	Run(ctx context.Context) error
	CatchUp(ctx context.Context) error
	Position() uint64
}

// haMember is the daemon's part in a group of standbys (config ha): the
// lease, the follower that keeps the log a copy of the group's history,
// and, once leading, the term every write checks.
type haMember struct {
	name     string
	lease    groupLease
	follower groupLog
	// history names what the follower copies, for logs: the ordered
	// topic, or the archive.
	history string
	// fence stops the previous leader's writes to the history before the
	// new leader reads it to its end (Kafka: its data producer's epoch);
	// nil when the history has no fence beyond the lease (the archive).
	fence func(ctx context.Context) error
	// records stores loss reports and reads them back (walship ha check).
	records lossRecords
	// closeHistory closes what the lease and the follower use.
	closeHistory func()
	// topic is the ordered topic, the Kafka sink's transactional id;
	// empty in a group without Kafka.
	topic string
	// copied is the log's durable LSN when this member's catch-up ended
	// (archivesink.ArchiverOptions.Copied).
	copied atomic.Uint64

	term   atomic.Pointer[ha.Term]
	leader atomic.Bool
	// allowed is the allowance of this member's last committed renewal
	// (leaderInfo.LogLSN): how far its source may confirm.
	allowed atomic.Uint64
	// inherited and checked: see leaderInfo.Inherited.
	inherited atomic.Uint64
	checked   atomic.Bool
	takeovers atomic.Int64
	// started is set once lead runs the components (which then close
	// what they use themselves).
	started atomic.Bool
	// takeoverSeconds is the last takeover's time, from the lease's lapse
	// seen to leading, in milliseconds.
	takeoverSeconds atomic.Int64
	loss            atomic.Pointer[LossReport]

	// handler is the source.http handler: 503 naming the leader while
	// following, the HTTP source once leading.
	handler atomic.Pointer[http.Handler]
}

// LossReport is a range of source positions that the previous leader
// confirmed to PostgreSQL and that are not in the group's log: the
// transactions committed there are lost (wal.sync local lets this happen
// when a leader's host dies between its fsync and its shipping).
type LossReport struct {
	Term int64 `json:"term"`
	// After and Through bound the range (After, Through] of source
	// positions (PostgreSQL LSNs as X/Y).
	After    string    `json:"after"`
	Through  string    `json:"through"`
	Member   string    `json:"member"`
	Detected time.Time `json:"detected"`
}

func (r LossReport) String() string {
	return fmt.Sprintf("source positions after %s through %s (term %d)", r.After, r.Through, r.Term)
}

// leaderInfo is what a leader puts in each lease renewal. LogLSN is its
// allowance: once the renewal has committed, the PostgreSQL source may
// confirm transactions up to that log LSN, never beyond (so the next leader
// knows, from the previous term's last renewal, how far the old leader can
// have confirmed). SourceConfirmed and Shipped are what it had confirmed to
// PostgreSQL and shipped to Kafka then, for people reading the topic.
type leaderInfo struct {
	LogLSN uint64 `json:"log_lsn"`
	// Inherited is the allowance of the terms before this one that no
	// loss check has covered yet: a member carries it on from the last
	// renewal it read until its own check is done (and recorded), so that
	// a term that ends before checking (fenced by a rival, failed while
	// catching up, killed) does not hide the loss of the term before.
	Inherited       uint64 `json:"inherited,omitempty"`
	SourceConfirmed uint64 `json:"source_confirmed"`
	Shipped         uint64 `json:"shipped"`
	// KeepFrom is the first LSN the leader's log still holds: its
	// retention keeps what a sink has not stored yet (the archive may lag
	// the ordered topic) and what live idempotency keys need. Followers
	// remove what is below it, so that a follower's log holds what the
	// leader's does, and not the whole history.
	KeepFrom uint64 `json:"keep_from,omitempty"`
	// Snapshot is the LSN of the newest base snapshot this leader stored
	// (archive.snapshot_interval). A follower keeps the log from just
	// after it, so that once it leads its snapshotter can start from that
	// snapshot and continue from its log.
	Snapshot uint64 `json:"snapshot,omitempty"`
}

// gate is what every write checks when the daemon is in a group: nil
// while this member holds a valid term (or has never led: a follower's
// copies are not gated), the term's error after it lapsed.
func (d *Daemon) gate() error {
	if d.ha == nil {
		return nil
	}
	if t := d.ha.term.Load(); t != nil {
		return t.Gate()
	}
	return nil
}

// buildHA makes the lease and the follower: in Kafka when the pipeline
// ships to Kafka (mode ordered), else in the archive. The log was opened;
// nothing runs until Run.
func (d *Daemon) buildHA(ctx context.Context) error {
	var m *haMember
	var err error
	if d.cfg.Kafka != nil {
		m, err = d.kafkaGroup(ctx)
	} else {
		m, err = d.archiveGroup(ctx)
	}
	if err != nil {
		return fmt.Errorf("ha: %w", err)
	}
	var follow http.Handler = http.HandlerFunc(m.notLeader)
	m.handler.Store(&follow)
	d.ha = m
	return nil
}

// kafkaGroup is a group whose lease is the topic <prefix>.ha and whose
// history is the ordered topic.
func (d *Daemon) kafkaGroup(ctx context.Context) (*haMember, error) {
	h, k := d.cfg.HA, d.cfg.Kafka
	kopts, err := kafkaClientOptions(k)
	if err != nil {
		return nil, fmt.Errorf("kafka: %w", err)
	}
	topic := kafkawire.OrderedTopic(k.TopicPrefix)
	m := &haMember{name: h.Name, topic: topic, history: "topic " + topic,
		fence:        func(ctx context.Context) error { return ha.Fence(ctx, kopts, topic) },
		records:      kafkaLossRecords{kopts: kopts, topic: haTopic(k.TopicPrefix)},
		closeHistory: func() {}}
	if m.follower, err = ha.NewFollower(d.wal, ha.FollowOptions{Topic: topic, Lineage: Lineage, Client: kopts, Logger: d.log}); err != nil {
		return nil, err
	}
	lease, err := ha.OpenLease(ctx, ha.LeaseOptions{Topic: haTopic(k.TopicPrefix), Member: h.Name, Lease: h.Lease, Client: kopts,
		Logger: d.log, Position: d.wal.Durable, Info: d.leaderInfo, Renewed: m.renewed})
	if err != nil {
		return nil, err
	}
	m.lease = lease
	return m, nil
}

// archiveGroup is a group without Kafka: the lease and the history are in
// the archive. It opens its own handle on the archive, without the term's
// gate: renewals and copies are not the leader's data writes.
func (d *Daemon) archiveGroup(ctx context.Context) (*haMember, error) {
	h := d.cfg.HA
	ar, err := OpenArchive(ctx, d.cfg.Archive, d.log)
	if err != nil {
		return nil, err
	}
	m := &haMember{name: h.Name, history: "archive " + secret.URL(d.cfg.Archive.URL),
		closeHistory: func() { ar.Close() }}
	if m.follower, err = ha.NewArchiveFollower(d.wal, ha.ArchiveFollowOptions{Archive: ar, Lineage: Lineage, Logger: d.log}); err != nil {
		ar.Close()
		return nil, err
	}
	lease, err := ha.OpenArchiveLease(ctx, ha.ArchiveLeaseOptions{Backend: ar.Backend(), Member: h.Name, Lease: h.Lease,
		Logger: d.log, Position: d.wal.Durable, Info: d.leaderInfo, Renewed: m.renewed})
	if err != nil {
		ar.Close()
		return nil, err
	}
	m.lease = lease
	m.records = archiveLossRecords{b: ar.Backend(), lease: lease}
	return m, nil
}

// haTopic is the group's lease topic.
func haTopic(prefix string) string { return prefix + ".ha" }

// leaderInfo is the renewal's payload (see leaderInfo): the allowance is
// the replication level's position, what the source could confirm now
// without the allowance.
func (d *Daemon) leaderInfo() json.RawMessage {
	li := leaderInfo{LogLSN: d.levels.Position(d.levels.Level()), Shipped: d.kafkaShipped.Load(), KeepFrom: d.wal.FirstLSN()}
	if m := d.ha; m != nil && !m.checked.Load() {
		// Until this member's loss check is done: the allowance of the
		// renewal before (Leader is the last one read; this member's own
		// once it has renewed, which carries it on).
		if l, _ := m.lease.Leader(); l.Name != "" {
			var prev leaderInfo
			if json.Unmarshal(l.Info, &prev) == nil {
				m.inherited.Store(max(m.inherited.Load(), prev.LogLSN, prev.Inherited))
			}
		}
		li.Inherited = m.inherited.Load()
	}
	if d.pg != nil {
		li.SourceConfirmed = d.pg.Stats().ConfirmedLSN
	}
	if m := d.ha; m != nil && m.started.Load() && d.snapshotter != nil {
		// started is set after lead built the snapshotter.
		li.Snapshot = d.snapshotter.Last().LSN
	}
	b, _ := json.Marshal(li)
	return b
}

// renewed records the allowance of a renewal that committed.
func (m *haMember) renewed(info json.RawMessage) {
	var li leaderInfo
	if json.Unmarshal(info, &li) == nil {
		m.allowed.Store(li.LogLSN)
	}
}

// confirmable is how far, in log LSNs, the PostgreSQL source of a group
// member may confirm: the replication level's position, capped by the
// allowance of its term's last committed renewal (leaderInfo).
func (d *Daemon) confirmable() uint64 {
	pos := d.levels.Position(d.levels.Level())
	if d.ha != nil {
		pos = min(pos, d.ha.allowed.Load())
	}
	return pos
}

// notLeader answers source.http requests on a follower: the client must
// send them to the leader (docs/OPERATIONS.md, "Clients of an HA group").
func (m *haMember) notLeader(w http.ResponseWriter, r *http.Request) {
	leader := ""
	if l, ok := m.lease.Leader(); ok {
		leader = l.Name
	}
	w.Header().Set("Walship-Leader", leader)
	w.Header().Set("Retry-After", "1")
	msg := "this walship is a follower in its HA group: send writes to the leader"
	if leader != "" {
		msg += " (" + leader + ")"
	}
	http.Error(w, msg, http.StatusServiceUnavailable)
}

// serveSource is the source.http listener's handler in a group.
func (m *haMember) serveSource(w http.ResponseWriter, r *http.Request) {
	(*m.handler.Load()).ServeHTTP(w, r)
}

// runHA follows the group's log until this member wins the lease, takes
// over, then runs every component as a single daemon would, until the term
// is lost (ErrHA, exit status ExitHA) or ctx ends.
func (d *Daemon) runHA(ctx context.Context) error {
	m := d.ha
	defer m.closeHistory()
	defer m.lease.Close()
	go d.observe(ctx) // the metrics and the status page, whatever the role
	close(d.ready)    // a follower is doing its job
	d.log.Info("walship following its HA group", "member", m.name, "history", m.history, "wal", d.cfg.WAL.Dir)

	term, err := d.follow(ctx)
	if err != nil {
		d.closeForExit()
		if errors.Is(err, ha.ErrDiverged) || errors.Is(err, kafkawire.ErrGap) {
			// A log that is not a prefix of the group's history, or that
			// needs records the topic no longer holds: rebuilt from the
			// topic at the next start.
			return d.divergedExit(err)
		}
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	err = d.lead(ctx, term)
	if !d.ha.started.Load() {
		// lead failed before the components ran (and closed what they use).
		term.Resign()
		d.closeForExit()
	}
	return err
}

// follow tails the group's log while campaigning; it returns the term
// when this member leads, after fencing the old leader's producer and
// reading the log to the end of the group's history.
func (d *Daemon) follow(ctx context.Context) (*ha.Term, error) {
	m := d.ha
	fctx, stopFollowing := context.WithCancel(ctx)
	defer stopFollowing()
	followed := make(chan error, 1)
	go func() { followed <- m.follower.Run(fctx) }()
	trimmed := make(chan struct{})
	go func() {
		defer close(trimmed)
		d.trimAsFollower(fctx)
	}()
	// Stop following before waiting for the trimmer: an error return
	// reaches here before the deferred stopFollowing would.
	defer func() {
		stopFollowing()
		<-trimmed
	}()
	type won struct {
		t   *ha.Term
		err error
	}
	cctx, stopCampaign := context.WithCancel(ctx)
	defer stopCampaign()
	campaign := make(chan won, 1)
	go func() {
		t, err := m.lease.Campaign(cctx)
		campaign <- won{t, err}
	}()
	var w won
	select {
	case err := <-followed:
		stopCampaign()
		if w := <-campaign; w.t != nil {
			w.t.Resign()
		}
		if err == nil {
			err = ctx.Err()
		}
		return nil, err
	case w = <-campaign:
	}
	stopFollowing()
	if err := <-followed; err != nil && !errors.Is(err, context.Canceled) {
		w.t.Resign()
		return nil, err
	}
	if w.err != nil {
		return nil, w.err
	}
	start := time.Now()
	// Fence the old leader's data producer first: from here nothing more
	// of its can commit, so the end of the topic is the end of history.
	// (An archive's history has no fence of its own: the old leader's
	// term, which every put checks, ended before Campaign returned.)
	if m.fence != nil {
		if err := m.fence(ctx); err != nil {
			w.t.Resign()
			return nil, fmt.Errorf("ha: fencing the previous leader's producer: %w", err)
		}
	}
	if err := m.follower.CatchUp(ctx); err != nil {
		w.t.Resign()
		return nil, err
	}
	m.copied.Store(d.wal.Durable())
	// From the lapse seen to leading: the campaign's part (waiting out the
	// old term) and this one (fencing, catching up).
	m.takeoverSeconds.Store((w.t.Takeover() + time.Since(start)).Milliseconds())
	return w.t, nil
}

// trimAsFollower is a follower's retention, every retentionInterval until
// ctx ends: it removes the segments below the first LSN the leader's log
// holds (leaderInfo.KeepFrom), never beyond its own durable end. What the
// leader keeps for a lagging sink or for live idempotency keys, the
// follower keeps too, so that it can serve both once it leads.
func (d *Daemon) trimAsFollower(ctx context.Context) {
	t := time.NewTicker(retentionInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		l, ok := d.ha.lease.Leader()
		var li leaderInfo
		if !ok || l.Name == d.ha.name || json.Unmarshal(l.Info, &li) != nil || li.KeepFrom <= 1 {
			continue
		}
		below := min(li.KeepFrom, d.wal.Durable()+1)
		if a := d.cfg.Archive; a != nil && a.SnapshotInterval > 0 {
			// Keep what follows the newest snapshot: the snapshotter this
			// member builds when it leads starts from it.
			below = min(below, li.Snapshot+1)
		}
		if below <= d.wal.FirstLSN() {
			continue
		}
		// The follower reads its last transaction back to check that the
		// log is a prefix of the history: keep all of it.
		last, err := d.lastTxnStart(ctx)
		if err != nil {
			d.log.Warn("ha: reading the log's last transaction", "err", err)
			continue
		}
		below = min(below, last)
		names, err := d.wal.RemoveBefore(below)
		d.retention.removed.Add(uint64(len(names)))
		if err != nil {
			d.log.Warn("ha: removing the segments the leader no longer holds", "below_lsn", below, "err", err)
			continue
		}
		if len(names) > 0 {
			d.log.Debug("ha: removed the segments the leader no longer holds", "count", len(names), "below_lsn", below)
		}
		if size, err := wal.DiskBytes(d.cfg.WAL.Dir); err == nil {
			d.retention.walBytes.Store(size)
		}
	}
}

// lastTxnStart is the first LSN of the log's last durable transaction
// (aborted range included), or the next LSN if the log holds none.
func (d *Daemon) lastTxnStart(ctx context.Context) (uint64, error) {
	durable := d.wal.Durable()
	if durable == 0 || durable < d.wal.FirstLSN() {
		return durable + 1, nil
	}
	rd, err := d.wal.NewReader(durable, false)
	if err != nil {
		return 0, err
	}
	defer rd.Close()
	rd.ReportAborted()
	t, err := rd.Next(ctx)
	if err != nil {
		return 0, err
	}
	return t.FirstLSN, nil
}

// lead runs the daemon's components under term.
func (d *Daemon) lead(ctx context.Context, term *ha.Term) error {
	m := d.ha
	m.term.Store(term)
	durable := d.wal.Durable()
	// Everything in the log came from the topic: the Kafka sink resumes
	// after it. The archive checks where it really ends itself.
	if d.kafka != nil {
		if err := d.sinkCkpts.Set(ctx, kafkasink.CheckpointName, durable, nil); err != nil {
			return fmt.Errorf("ha: %w", err)
		}
		d.levels.Report(kafkasink.CheckpointName, durable)
		d.kafkaShipped.Store(durable)
	}
	if err := d.reportLoss(ctx, term); err != nil {
		return err
	}
	if d.pg != nil {
		// The source's checkpoint describes the log as it was when this
		// member last led; the log has grown since under other leaders.
		// Without it the source reads its resume point and its snapshot's
		// state from the log itself.
		if err := d.srcCkpts.Reset(ctx, "pg."+d.cfg.Source.Postgres.Slot); err != nil {
			return fmt.Errorf("ha: %w", err)
		}
	}
	if err := d.startHTTPSource(ctx); err != nil {
		return err
	}
	if a := d.cfg.Archive; a != nil && a.SnapshotInterval > 0 {
		// Built now, over the log as this member holds it (a replica
		// the trimmed log cannot continue starts again from a snapshot).
		if err := d.buildSnapshotter(); err != nil {
			return fmt.Errorf("ha: %w", err)
		}
	}
	// Leader from here on: the HTTP source takes requests, and the
	// sources' and sinks' dependencies count for readiness.
	d.addDependencies()
	m.leader.Store(true)
	m.takeovers.Add(1)
	d.log.Info("walship leads its HA group", "member", m.name, "term", term.Number(), "durable_lsn", durable)
	lost := make(chan error, 1)
	m.started.Store(true)
	go func() {
		select {
		case <-term.Lost():
			m.leader.Store(false) // no longer, whatever the shutdown takes
			err := term.Gate()
			if err == nil {
				err = ha.ErrLeaseLost
			}
			lost <- fmt.Errorf("%w: lost the lease (term %d): stopped writing; start it again to rejoin as a follower: %w", ErrHA, term.Number(), err)
		case <-ctx.Done():
		}
	}()
	err := d.runComponents(ctx, lost)
	if err != nil && !errors.Is(err, ErrHA) && term.Gate() != nil {
		// A component stopped by its gate (an archive put, a batch)
		// before the watcher above said why: the cause is the lost term.
		err = fmt.Errorf("%w: lost the lease (term %d): stopped writing; start it again to rejoin as a follower: %w", ErrHA, term.Number(), err)
	}
	return err
}

// reportLoss looks for transactions the previous leader confirmed to
// PostgreSQL that are not in the group's log, and reports them loudly: the
// log, the metric, the status page, and a record in the lease topic that
// `walship ha check` reads. The previous term's last renewal says how far
// its source could have confirmed (its allowance, a log LSN): if this log
// reaches it, nothing confirmed is missing. If it does not (wal.sync local
// and a host lost before shipping), the transactions the slot will not send
// again are those that committed after the newest source position in this
// log and before the slot's confirmed position.
func (d *Daemon) reportLoss(ctx context.Context, term *ha.Term) error {
	if d.pg == nil {
		d.ha.checked.Store(true) // nothing is confirmed to a source
		return nil
	}
	m := d.ha
	have, err := d.pg.NewestInLog(ctx)
	if err != nil {
		return fmt.Errorf("ha: %w", err)
	}
	confirmed, err := d.pg.SlotConfirmed(ctx)
	if errors.Is(err, pgsource.ErrSlotNotFound) {
		if have == 0 {
			return nil // nothing captured yet: the source creates the slot
		}
		// The slot the group captured through is gone (dropped, or lost
		// with a PostgreSQL failover): a new one would silently skip what
		// committed in between. Walship never recreates it behind the
		// user's back (docs/POSTGRES.md).
		return fmt.Errorf("ha: source.postgres: the replication slot %q is gone but the group's log holds transactions captured through it (the newest at source position %s): changes since may be lost; recreate the slot on purpose (a new initial snapshot) after checking",
			d.cfg.Source.Postgres.Slot, change.FormatSourceLSN(have))
	}
	if err != nil {
		return fmt.Errorf("ha: reading the slot's confirmed position: %w", err)
	}
	prev, ok := term.Previous()
	var li leaderInfo
	if !ok || json.Unmarshal(prev.Info, &li) != nil {
		m.checked.Store(true)
		return nil // the group's first term, or a leader that confirmed nothing
	}
	if allowance := max(li.LogLSN, li.Inherited); d.wal.Durable() >= allowance || confirmed <= have {
		m.checked.Store(true)
		return nil
	}
	r := LossReport{Term: term.Number(), After: change.FormatSourceLSN(have), Through: change.FormatSourceLSN(confirmed),
		Member: m.name, Detected: time.Now().UTC()}
	m.loss.Store(&r)
	d.log.Error("ha: transactions lost: the previous leader confirmed source positions to PostgreSQL that are not in the group's log (wal.sync local lets a leader's lost host take them)",
		"after", r.After, "through", r.Through, "term", r.Term, "previous_leader", prev.Name, "log_lsn", d.wal.Durable(), "previous_allowance", li.LogLSN)
	var rerr error
	for attempt := range 5 {
		if rerr = m.records.record(ctx, r); rerr == nil {
			break
		}
		time.Sleep(time.Duration(attempt+1) * 200 * time.Millisecond) // backoff between attempts, not a wait for a condition
	}
	if rerr != nil {
		d.log.Error("ha: could not record the loss with the group's lease: walship ha check will not show it; the log line above and the status page do", "err", rerr)
	} else {
		m.checked.Store(true)
	}
	return nil
}

// divergedExit moves the log aside after ha.ErrDiverged, so that the next
// start rebuilds it from the group's history, and returns the exit error.
func (d *Daemon) divergedExit(cause error) error {
	dir := d.cfg.WAL.Dir
	aside := fmt.Sprintf("%s.diverged-%s", dir, time.Now().UTC().Format("20060102T150405Z"))
	if err := os.Rename(dir, aside); err != nil {
		return fmt.Errorf("%w: %w; and moving the log aside failed: %w", ErrHA, cause, err)
	}
	d.log.Error("ha: this member's log diverged from the group's (a tail written after it lost the lease); moved aside: start it again to rebuild from the group's log",
		"moved_to", aside, "err", cause)
	return fmt.Errorf("%w: %w: the log was moved to %s; start walship again to rebuild it from the group's log", ErrHA, cause, aside)
}

// startHTTPSource builds the HTTP source when this member leads (keys read
// back from the log as it is now, a copy of the group's) and switches the
// listener from answering 503 to it.
func (d *Daemon) startHTTPSource(ctx context.Context) error {
	if d.cfg.Source.HTTP == nil {
		return nil
	}
	src, err := d.newHTTPSource(ctx)
	if err != nil {
		return err
	}
	d.retention.floor = d.keys.Floor
	h := src.Handler()
	d.ha.handler.Store(&h)
	return nil
}

// closeForExit ends a Run that stops before any component started.
func (d *Daemon) closeForExit() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d.levels.Close()
	if err := d.closeRest(ctx); err != nil {
		d.log.Error("during shutdown", "err", err)
	}
}

// haFirstLSN is the first LSN of a member's new log: where the group's
// history starts in the ordered topic, or in the archive of a group
// without Kafka (1 unless retention removed its head). An existing log
// keeps its own.
func haFirstLSN(ctx context.Context, cfg *config.Config) (uint64, error) {
	if !walIsNew(cfg.WAL.Dir) {
		return 0, nil
	}
	var first uint64
	var empty bool
	if k := cfg.Kafka; k != nil {
		kopts, err := kafkaClientOptions(k)
		if err != nil {
			return 0, fmt.Errorf("kafka: %w", err)
		}
		first, empty, err = ha.TopicStart(ctx, ha.FollowOptions{Topic: kafkawire.OrderedTopic(k.TopicPrefix), Lineage: Lineage, Client: kopts})
		if err != nil {
			return 0, fmt.Errorf("ha: where the group's log starts: %w", err)
		}
	} else {
		ar, err := OpenArchive(ctx, cfg.Archive, nil)
		if err != nil {
			return 0, err
		}
		defer ar.Close()
		if first, empty, err = ha.ArchiveStart(ctx, ar, Lineage); err != nil {
			return 0, fmt.Errorf("ha: where the group's log starts: %w", err)
		}
	}
	if empty {
		return 0, nil
	}
	return first, nil
}

// walIsNew reports whether dir holds no log yet (absent, or nothing in it
// but the checkpoints directory).
func walIsNew(dir string) bool {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return errors.Is(err, os.ErrNotExist)
	}
	for _, e := range ents {
		if e.Name() != "checkpoints" {
			return false
		}
	}
	return true
}

// role is this member's role now.
func (m *haMember) role() string {
	if m.leader.Load() {
		return RoleLeader
	}
	return RoleFollower
}

// position is the member's view of the group for /v1/positions and the
// status page.
func (m *haMember) position() *HAPosition {
	p := &HAPosition{Name: m.name, Takeovers: m.takeovers.Load(), TakeoverMS: m.takeoverSeconds.Load(), Loss: m.loss.Load(),
		Members: []HAMember{}}
	if l, ok := m.lease.Leader(); ok {
		p.Leader, p.Term = l.Name, l.Term
	}
	if t := m.term.Load(); t != nil {
		p.Term = t.Number()
		if left := time.Until(t.Deadline()); left > 0 && t.Valid() {
			p.LeaseExpiresInMS = left.Milliseconds()
		}
	}
	for _, mb := range m.lease.Members() {
		p.Members = append(p.Members, HAMember{Name: mb.Name, Role: mb.Role, Position: mb.Position, Seen: mb.Seen})
	}
	return p
}

// statusGroup is the group for the status page.
func (m *haMember) statusGroup(group string) *status.Group {
	p := m.position()
	g := &status.Group{Name: group, Member: m.name, Role: m.role(), Leader: p.Leader, Term: p.Term,
		LeaseLeft: status.Duration(time.Duration(p.LeaseExpiresInMS) * time.Millisecond)}
	for _, mb := range p.Members {
		g.Members = append(g.Members, status.GroupMember{Name: mb.Name, Role: mb.Role, Position: mb.Position, Seen: mb.Seen})
	}
	if p.Loss != nil {
		g.Loss = p.Loss.String()
	}
	return g
}
