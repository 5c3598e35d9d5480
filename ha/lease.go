// Package ha makes several walship daemons with the same pipeline one
// high-availability group: one member leads (captures, appends, ships), the
// others follow. This file and fence.go hold leadership: a lease kept in a
// Kafka topic and fenced by a Kafka transactional producer's epoch
// (docs/HA.md, "Leadership and fencing"); archivelease.go holds the same
// lease in the archive, by conditional writes, for groups without Kafka
// (ArchiveLease; docs/HA.md, "Archive-only groups: the lease in the
// archive").
//
// # The lease topic
//
// The topic "<prefix>.ha" has one partition (only partition 0 is used) and
// is compacted. It holds two kinds of records:
//
//   - key "lease": the leader's renewals, JSON {"member", "term",
//     "lease_ms", "info"}, each written in its own committed transaction by
//     a producer whose transactional id is the topic's name. A renewal with
//     lease_ms 0 releases the lease. The first renewal of a term carries no
//     "term": its term number is its own offset plus one.
//   - key "member/<name>": each member's heartbeat, JSON {"name", "role",
//     "position"}, written every Lease/2 by a separate client that is not
//     transactional, so heartbeats never fence anything.
//
// Every member reads the topic read_committed from its start.
//
// # Guarantees
//
//   - At most one Term of a group is Valid at any instant, provided the
//     members' monotonic clocks run at rates within a tenth of each other
//     (the margin); their wall clocks need not agree.
//   - A Term is valid until the start of its last committed renewal plus
//     Lease minus the margin, on its own monotonic clock. Valid, Gate and
//     Lost see the expiry even when no renewal error was seen, such as
//     after the process was paused (SIGSTOP) past its deadline.
//   - Once a new leader's producer is initialised, nothing an older
//     leader's producer writes to the lease topic becomes visible to a
//     read_committed reader: its transaction is aborted and its commits
//     fail with PRODUCER_FENCED or INVALID_PRODUCER_EPOCH.
//   - Term numbers strictly increase from term to term of the group, as
//     long as the lease topic is not deleted: a term's number is one more
//     than the offset of its first renewal.
package ha

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// ErrLeaseLost marks every error a Term returns once it is no longer
// valid: expired, fenced by a newer leader, resigned or closed.
var ErrLeaseLost = errors.New("ha: lost the lease")

// Roles a member announces in its heartbeat.
const (
	RoleLeader   = "leader"
	RoleFollower = "follower"
)

// DefaultLease is LeaseOptions.Lease when it is zero.
const DefaultLease = 6 * time.Second

// keyLease is the key of the leader's renewals; heartbeats are keyed
// keyMemberPrefix + name.
const (
	keyLease        = "lease"
	keyMemberPrefix = "member/"
)

var memberName = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// LeaseOptions configure a member's view of the lease.
type LeaseOptions struct {
	// Topic is the lease topic, "<prefix>.ha"; it is created (one
	// partition, compacted) if absent.
	Topic string
	// Member is this member's name, unique in the group: [A-Za-z0-9._-]{1,64}.
	Member string
	// Lease is how long a renewal keeps the leader's term; at least 1s,
	// default 6s. Every member of a group should use the same value; a
	// new leader waits out the lease the previous renewal announced, so a
	// member with a shorter one is still safe.
	Lease time.Duration
	// Client are the Kafka client options: seeds, TLS, SASL.
	Client []kgo.Opt
	// Info, if set, is called for each renewal; what it returns travels in
	// the renewal record (Member.Info of Leader); invalid JSON is left out.
	// It is called from the renewer's goroutine and must not block.
	Info func() json.RawMessage
	// Renewed, if set, is called after each renewal of this member's
	// terms commits, with the Info it carried: from then on every other
	// member can read it (a new leader reads it as Term.Previous). It is
	// called from the renewer's goroutine and must not block.
	Renewed func(info json.RawMessage)
	// Position, if set, is this member's log position, sent in its
	// heartbeat. It is called from the heartbeat's goroutine and must not
	// block.
	Position func() uint64
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Validate checks the options and fills the defaults.
func (o *LeaseOptions) Validate() error {
	if o.Topic == "" {
		return errors.New("ha: lease: no topic")
	}
	if !memberName.MatchString(o.Member) {
		return fmt.Errorf("ha: lease: member name %q: want [A-Za-z0-9._-]{1,64}", o.Member)
	}
	if o.Lease == 0 {
		o.Lease = DefaultLease
	}
	if o.Lease < time.Second {
		return fmt.Errorf("ha: lease: lease %v: want at least 1s", o.Lease)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return nil
}

// margin is how much earlier than Lease after a renewal's start the leader
// stops trusting its term: it absorbs a difference of up to 10% between
// the rates of two members' monotonic clocks.
func margin(lease time.Duration) time.Duration { return lease / 10 }

// Member is one member as last observed in the lease topic.
type Member struct {
	Name string
	Role string // RoleLeader or RoleFollower, as the member last announced
	// Term is the term of the leader's last renewal (Leader), or of the
	// current leader for the member that is leading (Members); else 0.
	Term     int64
	Position uint64
	Seen     time.Time // when this member received the record
	Info     json.RawMessage
}

// renewal is the JSON of a "lease" record.
type renewal struct {
	Member  string          `json:"member"`
	Term    int64           `json:"term,omitempty"` // Kafka: absent in a term's first renewal (its offset + 1)
	LeaseMS int64           `json:"lease_ms"`
	Info    json.RawMessage `json:"info,omitempty"`
	// Nonce makes each renewal written to the archive unique, so that a
	// writer recognises its own object (ArchiveLease); absent in Kafka.
	Nonce string `json:"nonce,omitempty"`
}

// heartbeat is the JSON of a "member/<name>" record.
type heartbeat struct {
	Name     string `json:"name"`
	Role     string `json:"role"`
	Position uint64 `json:"position"`
	// Nonce changes with every heartbeat written to the archive, where a
	// heartbeat replaces the last (ArchiveLease); absent in Kafka.
	Nonce string `json:"nonce,omitempty"`
}

// Lease is a member's view of its group's lease: it observes the lease
// topic, sends this member's heartbeat and campaigns for leadership.
type Lease struct {
	o      LeaseOptions
	log    *slog.Logger
	obs    *observer
	hb     *kgo.Client
	runCtx context.Context // ends on Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu struct {
		sync.Mutex
		term   *Term // the last term Campaign returned
		closed bool
	}
}

// OpenLease creates the lease topic if absent, starts observing it from
// its start (read_committed) and starts this member's heartbeat. It blocks
// only to create the topic. Close stops both.
func OpenLease(ctx context.Context, o LeaseOptions) (*Lease, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if err := createLeaseTopic(ctx, o.Client, o.Topic); err != nil {
		return nil, err
	}
	obs, err := newObserver(o.Client, o.Topic, o.Member, o.Logger)
	if err != nil {
		return nil, err
	}
	hb, err := kgo.NewClient(append(slices.Clone(o.Client),
		kgo.DefaultProduceTopic(o.Topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerLinger(0),
	)...)
	if err != nil {
		obs.close()
		return nil, fmt.Errorf("ha: lease %s: heartbeat client: %w", o.Topic, err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	l := &Lease{o: o, log: o.Logger, obs: obs, hb: hb, runCtx: runCtx, cancel: cancel}
	l.wg.Add(2)
	go func() {
		defer l.wg.Done()
		obs.run(runCtx)
	}()
	go func() {
		defer l.wg.Done()
		l.heartbeats(runCtx)
	}()
	return l, nil
}

func createLeaseTopic(ctx context.Context, opts []kgo.Opt, topic string) error {
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("ha: lease topic %s: client: %w", topic, err)
	}
	defer cl.Close()
	compact := "compact"
	_, err = kadm.NewClient(cl).CreateTopic(ctx, 1, -1, map[string]*string{"cleanup.policy": &compact}, topic)
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("ha: create lease topic %s: %w", topic, err)
	}
	return nil
}

// heartbeats sends this member's heartbeat every Lease/2 until ctx ends.
func (l *Lease) heartbeats(ctx context.Context) {
	every := l.o.Lease / 2
	var failing bool
	for {
		role := RoleFollower
		l.mu.Lock()
		if t := l.mu.term; t != nil && t.Valid() {
			role = RoleLeader
		}
		l.mu.Unlock()
		var pos uint64
		if l.o.Position != nil {
			pos = l.o.Position()
		}
		v, _ := json.Marshal(heartbeat{Name: l.o.Member, Role: role, Position: pos})
		hctx, cancel := context.WithTimeout(ctx, every)
		err := l.hb.ProduceSync(hctx, &kgo.Record{Key: []byte(keyMemberPrefix + l.o.Member), Value: v}).FirstErr()
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil && !failing: // logged once per outage
			l.log.Warn("ha: heartbeat failed", "member", l.o.Member, "topic", l.o.Topic, "err", err)
		case err == nil && failing:
			l.log.Info("ha: heartbeat sent again", "member", l.o.Member, "topic", l.o.Topic)
		}
		failing = err != nil
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}

// Leader returns the leader as last observed: the member and term of the
// last renewal read, its info, and when it was received. ok is false if no
// renewal was read yet, or if the last one released the lease or is older
// than the lease it announced (the lease has lapsed).
func (l *Lease) Leader() (Member, bool) {
	return l.obs.leader()
}

// Members returns every member heard from, sorted by name: its last
// heartbeat (role, position) and when it was received; the member leading
// according to the last renewal also has its Term set.
func (l *Lease) Members() []Member {
	return l.obs.members()
}

// Close resigns the term Campaign returned if it is still held (so another
// member takes over without waiting for the lease to lapse), stops the heartbeat and the observer, and
// waits for them. It is idempotent.
func (l *Lease) Close() error {
	l.mu.Lock()
	if l.mu.closed {
		l.mu.Unlock()
		return nil
	}
	l.mu.closed = true
	t := l.mu.term
	l.mu.Unlock()
	if t != nil {
		t.Resign()
	}
	l.cancel()
	l.wg.Wait()
	l.hb.Close()
	l.obs.close()
	return nil
}

// Campaign blocks until this member leads, and returns its Term; or until
// ctx ends or the Lease is closed (returning an error wrapping
// context.Canceled or ctx.Err()). It retries Kafka errors and lost contests
// by itself.
//
// In order: it reads the lease topic to its end and waits until no renewal
// has been received for the lease that renewal announced (by this member's
// monotonic clock; at once if the last renewal released the lease or none
// exists); waits a random jitter of up to Lease/4 and checks again; then
// initialises the lease's transactional producer (InitProducerID, which
// fences the previous leader's producer), commits its first renewal, and
// renews every Lease/4 while it waits, from that commit, for the lease the
// renewal before its own announced (none if that one released the lease; a
// whole Lease if none was read). Only then is the previous leader's term
// surely over by the previous leader's own clock, and the Term is
// returned, valid. It also waits at least Lease/2, and for a renewal that
// started more than Lease/4 after the first one: a rival that saw the same
// lapse and is still in its jitter fences this member while it campaigns,
// not once it leads.
func (l *Lease) Campaign(ctx context.Context) (*Term, error) {
	return campaign(ctx, l.runCtx, leaseContest{l}, l.o.Member, l.o.Lease, l.log, "the lease topic")
}

// leaseContest is the Kafka lease's side of a campaign.
type leaseContest struct{ l *Lease }

func (c leaseContest) refresh(ctx context.Context) error { return c.l.obs.catchUp(ctx, c.l.o.Lease) }
func (c leaseContest) expiry() time.Time                 { return c.l.obs.expiry() }
func (c leaseContest) renewedCh() <-chan struct{}        { return c.l.obs.renewedCh() }
func (c leaseContest) tryLead(ctx context.Context, lapse time.Time) (*Term, error) {
	return c.l.tryLead(ctx, lapse)
}

// tryLead fences the lease's producer, commits the first renewal and waits
// until the previous term is surely over.
func (l *Lease) tryLead(ctx context.Context, lapse time.Time) (*Term, error) {
	cl, err := kgo.NewClient(append(slices.Clone(l.o.Client),
		kgo.TransactionalID(l.o.Topic),
		kgo.TransactionTimeout(l.o.Lease),
		kgo.DefaultProduceTopic(l.o.Topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerLinger(0),
	)...)
	if err != nil {
		return nil, fmt.Errorf("lease producer: %w", err)
	}
	// InitProducerID: from here on the previous leader's producer is fenced.
	ictx, cancel := context.WithTimeout(ctx, l.o.Lease)
	_, _, err = cl.ProducerID(ictx)
	cancel()
	if err != nil {
		cl.Close()
		return nil, fmt.Errorf("fence the lease (InitProducerID %q): %w", l.o.Topic, err)
	}
	t := newTerm(&kafkaStore{cl: cl, lease: l.o.Lease}, l.o.Member, l.o.Lease, l.log, l.o.Info, l.o.Renewed)
	if err := t.renew(true); err != nil {
		t.cancel()
		cl.Close()
		return nil, fmt.Errorf("first renewal: %w", err)
	}
	committed := time.Now()
	go t.run()

	prev, err := l.obs.awaitFirst(ctx, t.number-1, t.lost)
	if err != nil {
		t.abandon()
		return nil, err
	}
	waited, err := t.waitOutPrevious(ctx, committed, prev, lapse)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	closed := l.mu.closed
	if !closed {
		l.mu.term = t
	}
	l.mu.Unlock()
	if closed {
		t.Resign()
		return nil, errors.New("lease closed")
	}
	l.log.Info("ha: leading", "member", l.o.Member, "term", t.number,
		"takeover", t.Takeover(), "waited", waited)
	return t, nil
}

// waitOutPrevious waits, from committed (when the term's first renewal
// was written), until the term prev (the renewal before the term's first;
// nil: none read) is surely over, then marks the term returned and valid.
// On failure the term is abandoned.
func (t *Term) waitOutPrevious(ctx context.Context, committed time.Time, prev *renewal, lapse time.Time) (time.Duration, error) {
	// Wait out the lease announced by the renewal before ours (none if it
	// released the lease), and at least half a lease: a member that saw
	// the lapse when we did and is still within its jitter may fence us
	// yet, and it should do so while we campaign, not once we lead. So
	// also wait for a renewal that started after the jitter window.
	wait := t.lease // no renewal before ours was read: assume one
	if prev != nil {
		wait = time.Duration(prev.LeaseMS) * time.Millisecond
		t.prev = &Member{Name: prev.Member, Role: RoleLeader, Term: prev.Term, Info: prev.Info}
	}
	wait = max(wait, t.lease/2)
	until, settleAfter := committed.Add(wait), committed.Add(t.lease/4)
	for {
		t.mu.Lock()
		renewed, settled := t.mu.renewed, t.mu.lastStart.After(settleAfter)
		t.mu.Unlock()
		var timeout <-chan time.Time
		if d := time.Until(until); d > 0 {
			timeout = time.After(d)
		} else if settled {
			break
		}
		select {
		case <-ctx.Done():
			t.abandon()
			return 0, ctx.Err()
		case <-t.lost:
			t.abandon()
			return 0, t.Gate()
		case <-renewed:
		case <-timeout:
		}
	}
	now := time.Now()
	t.mu.Lock()
	valid := t.validLocked(now)
	if valid {
		t.mu.returned = true
		t.mu.validFrom = now
		t.mu.takeover = now.Sub(lapse)
	}
	t.mu.Unlock()
	if !valid {
		t.abandon()
		return 0, fmt.Errorf("term %d expired while waiting out the previous lease", t.number)
	}
	return wait, nil
}

// Term is one leadership term of this member, returned by Campaign (of a
// Lease or an ArchiveLease). Its methods are safe for concurrent use.
type Term struct {
	member  string
	log     *slog.Logger
	infoFn  func() json.RawMessage     // LeaseOptions.Info
	renewFn func(info json.RawMessage) // LeaseOptions.Renewed
	// prev is the last renewal of the group before this term's first,
	// set before Campaign returns the term (nil: none).
	prev   *Member
	store  leaseStore // where renewals are written; used only by the renewer
	number int64
	lease  time.Duration
	ctx    context.Context // ends when the renewer exits, or on abandon (stopping it)
	cancel context.CancelFunc
	lost   chan struct{}
	done   chan struct{} // closed when the renewer has exited and closed the store

	// freeze, a test seam standing for SIGSTOP: while it holds a channel,
	// the renewer stops inside a renewal's write (Kafka: between producing
	// it and committing; archive: before the conditional put), until the
	// channel is closed.
	freeze atomic.Pointer[chan struct{}]

	mu struct {
		sync.Mutex
		deadline  time.Time // monotonic: last committed renewal's start + lease − margin
		returned  bool      // Campaign returned this term
		resign    bool      // release the lease when the renewer stops
		cause     error     // why the term was lost
		validFrom time.Time
		validTo   time.Time // when it stopped being valid (≤ deadline)
		takeover  time.Duration
		renewals  int           // committed renewals
		lastStart time.Time     // start of the last committed renewal
		renewed   chan struct{} // closed and replaced on each committed renewal
		renewErr  error         // the error of the last renewal that failed
		watchdog  *time.Timer
	}
}

// Number is the term's number, at least 1 and strictly increasing from
// term to term of the group: one more than the offset of the term's first
// renewal in the lease topic (Lease), or its first renewal's sequence
// number (ArchiveLease).
func (t *Term) Number() int64 { return t.number }

// Takeover is how long this member took from seeing the lease lapse to
// leading (the value of the walship_ha_takeover_seconds metric).
func (t *Term) Takeover() time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.mu.takeover
}

// Previous is the last renewal the group's lease held before this
// term's first (the previous term's last word: its member, term and
// Info), and false if there was none (this is the group's first term).
func (t *Term) Previous() (Member, bool) {
	if t.prev == nil {
		return Member{}, false
	}
	return *t.prev, true
}

// Deadline is when the term stops being valid unless a renewal commits
// first (on the monotonic clock; see Valid).
func (t *Term) Deadline() time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.mu.deadline
}

// Valid reports whether the term still holds: it was not lost and its
// deadline, on the monotonic clock, has not passed. A term whose deadline
// passed is lost from the first call that sees it, even if no renewal
// failed (after a pause of the process, say).
func (t *Term) Valid() bool {
	now := time.Now()
	t.mu.Lock()
	ok := t.mu.returned && t.validLocked(now)
	t.mu.Unlock()
	return ok
}

// validLocked also records the loss if it sees the deadline passed.
func (t *Term) validLocked(now time.Time) bool {
	if t.mu.cause != nil {
		return false
	}
	if !now.Before(t.mu.deadline) {
		t.loseLocked(now, fmt.Errorf("no renewal committed before the deadline (%v after the last one started)", t.lease-margin(t.lease)))
		return false
	}
	return true
}

// Gate returns nil while the term is valid, else an error wrapping
// ErrLeaseLost that names the member, the term and why it was lost. Every
// external write checks it right before writing.
func (t *Term) Gate() error {
	if t.Valid() {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	cause := t.mu.cause
	if cause == nil {
		cause = errors.New("not yet won")
	}
	return fmt.Errorf("%w: member %s, term %d: %v", ErrLeaseLost, t.member, t.number, cause)
}

// Lost is closed once the term is lost: expired (closed at the deadline by
// a timer), fenced, resigned.
func (t *Term) Lost() <-chan struct{} { return t.lost }

// Resign ends the term at once (Valid is false when it returns) and
// releases the lease: the renewer stops and commits a renewal with
// lease_ms 0, so another member takes over without waiting for the lease
// to lapse. It blocks until that release is committed or failed (at most
// about two lease lengths); it is idempotent.
func (t *Term) Resign() {
	t.mu.Lock()
	t.mu.resign = t.mu.returned
	t.loseLocked(time.Now(), errors.New("resigned"))
	t.mu.Unlock()
	<-t.done
}

// abandon ends a term Campaign does not return, without releasing the
// lease: the previous leader's term may still run, and a release would let
// the next member skip waiting it out.
func (t *Term) abandon() {
	t.mu.Lock()
	t.loseLocked(time.Now(), errors.New("campaign abandoned"))
	t.mu.Unlock()
	t.cancel()
	<-t.done
}

func (t *Term) loseLocked(now time.Time, cause error) {
	if t.mu.cause != nil {
		return
	}
	t.mu.cause = cause
	t.mu.validTo = now
	if t.mu.deadline.Before(now) {
		t.mu.validTo = t.mu.deadline
	}
	if t.mu.watchdog != nil {
		t.mu.watchdog.Stop()
	}
	close(t.lost)
	if t.mu.returned {
		t.log.Warn("ha: lost the lease", "member", t.member, "term", t.number, "err", cause)
	}
}

// run is the renewer: one renewal every Lease/4 until the term is lost,
// then the release if Resign asked for it, then closing the producer.
func (t *Term) run() {
	defer close(t.done)
	defer t.store.close()
	defer t.cancel()
	next := time.NewTimer(t.lease / 4)
	defer next.Stop()
	for {
		select {
		case <-t.lost:
			t.mu.Lock()
			resign := t.mu.resign
			t.mu.Unlock()
			if resign {
				t.release()
			}
			return
		case <-next.C:
		}
		start := time.Now()
		if err := t.renew(false); err != nil {
			t.mu.Lock()
			t.mu.renewErr = err
			t.loseLocked(time.Now(), fmt.Errorf("renewal: %w", err))
			t.mu.Unlock()
			continue // to the release check
		}
		next.Reset(time.Until(start.Add(t.lease / 4)))
	}
}

// renew commits one renewal and, if it committed before the deadline,
// moves the deadline to its start + lease − margin. The first renewal
// (first) sets the term's number.
func (t *Term) renew(first bool) error {
	start := time.Now()
	r := renewal{Member: t.member, Term: t.number, LeaseMS: t.lease.Milliseconds(), Info: t.info()}
	number, err := t.store.commit(t.ctx, r, t.hold)
	if err != nil {
		return err
	}
	if t.renewFn != nil {
		defer t.renewFn(r.Info)
	}
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if first {
		t.number = number
	} else if !t.validLocked(now) {
		return fmt.Errorf("committed after the term's deadline")
	}
	t.mu.renewals++
	t.mu.lastStart = start
	close(t.mu.renewed)
	t.mu.renewed = make(chan struct{})
	t.mu.deadline = start.Add(t.lease - margin(t.lease))
	d := time.Until(t.mu.deadline)
	if t.mu.watchdog == nil {
		t.mu.watchdog = time.AfterFunc(d, func() {
			t.mu.Lock()
			t.validLocked(time.Now())
			t.mu.Unlock()
		})
	} else {
		t.mu.watchdog.Reset(d)
	}
	return nil
}

// info is LeaseOptions.Info's answer, nil if none or invalid JSON (which
// would fail the renewal, and the term with it).
func (t *Term) info() json.RawMessage {
	if t.infoFn != nil {
		if info := t.infoFn(); json.Valid(info) {
			return info
		}
	}
	return nil
}

// release commits a renewal with lease_ms 0. It carries Info too: it is
// the term's last word, which the next leader reads (Previous).
func (t *Term) release() {
	if _, err := t.store.commit(context.Background(), renewal{Member: t.member, Term: t.number, Info: t.info()}, t.hold); err != nil {
		t.log.Warn("ha: releasing the lease failed; the others wait for it to lapse",
			"member", t.member, "term", t.number, "err", err)
	}
}

// hold is the freeze test seam: it blocks while a freeze is set.
func (t *Term) hold() {
	if f := t.freeze.Load(); f != nil {
		<-*f
	}
}

// leaseStore is where a term writes its renewals: the lease topic through
// a transactional producer (kafkaStore), or the archive through
// conditional puts (archiveStore).
type leaseStore interface {
	// commit writes r as the term's next renewal, calling hold (the
	// freeze test seam) at the point of the write where a paused process
	// is most exposed, and returns the number a term whose first renewal
	// this is gets. An error means the renewal may not count: the term is
	// lost.
	commit(ctx context.Context, r renewal, hold func()) (int64, error)
	// close releases the store once the renewer stops.
	close()
}

// newTerm returns a term that is not valid yet, writing its renewals to
// store; its renewer is not started.
func newTerm(store leaseStore, member string, lease time.Duration, log *slog.Logger, info func() json.RawMessage, renewed func(json.RawMessage)) *Term {
	t := &Term{
		member:  member,
		log:     log,
		infoFn:  info,
		renewFn: renewed,
		store:   store,
		lease:   lease,
		lost:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	t.mu.renewed = make(chan struct{})
	t.ctx, t.cancel = context.WithCancel(context.Background())
	return t
}

// kafkaStore writes renewals to the lease topic, each in its own
// transaction of the lease's transactional producer.
type kafkaStore struct {
	cl    *kgo.Client
	lease time.Duration
}

func (s *kafkaStore) close() { s.cl.Close() }

// commit writes r in one transaction and returns its offset plus one. The
// produce and the commit each get a lease's time; the commit is sent even
// if the term expired meanwhile (the process was paused between the two,
// say): the broker's answer then says whether a newer leader fenced this
// one.
func (s *kafkaStore) commit(ctx context.Context, r renewal, hold func()) (int64, error) {
	v, err := json.Marshal(r)
	if err != nil {
		return 0, err
	}
	if err := s.cl.BeginTransaction(); err != nil {
		return 0, err
	}
	pctx, cancel := context.WithTimeout(ctx, s.lease)
	rec, err := s.cl.ProduceSync(pctx, &kgo.Record{Key: []byte(keyLease), Value: v}).First()
	cancel()
	if err == nil {
		hold()
	}
	cctx, cancel := context.WithTimeout(ctx, s.lease)
	defer cancel()
	if err != nil {
		// The abort's own error adds nothing: the producer is closed
		// with the term.
		_ = s.cl.EndTransaction(cctx, kgo.TryAbort)
		return 0, err
	}
	if err := s.cl.EndTransaction(cctx, kgo.TryCommit); err != nil {
		return 0, err
	}
	return rec.Offset + 1, nil
}

// observer reads the lease topic read_committed and keeps what it says.
type observer struct {
	cl    *kgo.Client
	topic string
	self  string
	log   *slog.Logger

	mu struct {
		sync.Mutex
		next     int64 // offset after the last record read, control records included
		advanced chan struct{}
		renewed  chan struct{}

		last     *renewal // the last renewal read, its term filled in
		received time.Time
		members  map[string]Member
		// firsts maps the offsets of this member's first renewals to the
		// renewal read just before (nil: none).
		firsts map[int64]*renewal
	}
}

func newObserver(opts []kgo.Opt, topic, self string, log *slog.Logger) (*observer, error) {
	cl, err := kgo.NewClient(append(slices.Clone(opts),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// Control records tell where committed transactions end, so the
		// reader knows when it has reached the last stable offset.
		kgo.KeepControlRecords(),
	)...)
	if err != nil {
		return nil, fmt.Errorf("ha: lease %s: observer client: %w", topic, err)
	}
	o := &observer{cl: cl, topic: topic, self: self, log: log}
	o.mu.advanced = make(chan struct{})
	o.mu.renewed = make(chan struct{})
	o.mu.members = map[string]Member{}
	o.mu.firsts = map[int64]*renewal{}
	return o, nil
}

func (o *observer) close() { o.cl.Close() }

func (o *observer) run(ctx context.Context) {
	var failing bool
	for {
		fs := o.cl.PollFetches(ctx)
		if ctx.Err() != nil || fs.IsClientClosed() {
			return
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) { ferr = err })
		if ferr != nil && !failing {
			o.log.Warn("ha: reading the lease topic", "topic", o.topic, "err", ferr)
		}
		failing = ferr != nil
		fs.EachRecord(o.apply)
	}
}

func (o *observer) apply(r *kgo.Record) {
	now := time.Now()
	o.mu.Lock()
	defer o.mu.Unlock()
	o.mu.next = r.Offset + 1
	close(o.mu.advanced)
	o.mu.advanced = make(chan struct{})
	if r.Attrs.IsControl() {
		return
	}
	key := string(r.Key)
	switch {
	case key == keyLease:
		var v renewal
		if err := json.Unmarshal(r.Value, &v); err != nil {
			o.log.Warn("ha: unreadable renewal in the lease topic", "topic", o.topic, "offset", r.Offset, "err", err)
			return
		}
		if v.Term == 0 {
			v.Term = r.Offset + 1
			if v.Member == o.self {
				o.mu.firsts[r.Offset] = o.mu.last
			}
		}
		o.mu.last, o.mu.received = &v, now
		close(o.mu.renewed)
		o.mu.renewed = make(chan struct{})
	case strings.HasPrefix(key, keyMemberPrefix):
		var v heartbeat
		if err := json.Unmarshal(r.Value, &v); err != nil || v.Name == "" {
			o.log.Warn("ha: unreadable heartbeat in the lease topic", "topic", o.topic, "offset", r.Offset, "err", err)
			return
		}
		o.mu.members[v.Name] = Member{Name: v.Name, Role: v.Role, Position: v.Position, Seen: now}
	}
}

// catchUp blocks until everything committed in the topic when it was
// called has been read, or ctx ends, or timeout passes.
func (o *observer) catchUp(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	lso, err := lastStableOffset(ctx, o.cl, o.topic)
	if err != nil {
		return err
	}
	for {
		o.mu.Lock()
		next, advanced := o.mu.next, o.mu.advanced
		o.mu.Unlock()
		if next >= lso {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("ha: lease topic %s: read up to offset %d of %d: %w", o.topic, next, lso, ctx.Err())
		case <-advanced:
		}
	}
}

// lastStableOffset asks for partition 0's last stable offset: the end of
// what a read_committed reader can read now (the lease topic's, and the
// ordered topic's for a follower).
func lastStableOffset(ctx context.Context, cl *kgo.Client, topic string) (int64, error) {
	ends, err := kadm.NewClient(cl).ListCommittedOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return 0, fmt.Errorf("ha: %s: list the last stable offset: %w", topic, err)
	}
	e, ok := ends.Lookup(topic, 0)
	if !ok {
		return 0, fmt.Errorf("ha: %s has no partition 0", topic)
	}
	return e.Offset, nil
}

func (o *observer) renewedCh() <-chan struct{} {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.mu.renewed
}

// expiry is when the lease lapses by this member's clock: the last
// renewal's receipt plus the lease it announced; the zero time if none was
// read.
func (o *observer) expiry() time.Time {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.mu.last == nil {
		return time.Time{}
	}
	return o.mu.received.Add(time.Duration(o.mu.last.LeaseMS) * time.Millisecond)
}

// awaitFirst waits until this member's first renewal at offset has been
// read and returns the renewal read before it (nil: none).
func (o *observer) awaitFirst(ctx context.Context, offset int64, lost <-chan struct{}) (*renewal, error) {
	for {
		o.mu.Lock()
		prev, ok := o.mu.firsts[offset]
		delete(o.mu.firsts, offset)
		read := o.mu.next > offset
		advanced := o.mu.advanced
		o.mu.Unlock()
		switch {
		case ok:
			return prev, nil
		case read:
			return nil, fmt.Errorf("ha: lease topic %s: our first renewal at offset %d was not read back", o.topic, offset)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-lost:
			return nil, errors.New("term lost before our first renewal was read back")
		case <-advanced:
		}
	}
}

func (o *observer) leader() (Member, bool) {
	now := time.Now()
	o.mu.Lock()
	defer o.mu.Unlock()
	r := o.mu.last
	if r == nil {
		return Member{}, false
	}
	m := Member{Name: r.Member, Role: RoleLeader, Term: r.Term, Seen: o.mu.received, Info: r.Info}
	return m, now.Before(o.mu.received.Add(time.Duration(r.LeaseMS) * time.Millisecond))
}

func (o *observer) members() []Member {
	leader, ok := o.leader()
	o.mu.Lock()
	out := make([]Member, 0, len(o.mu.members))
	for _, m := range o.mu.members {
		if ok && m.Name == leader.Name {
			m.Term = leader.Term
		}
		out = append(out, m)
	}
	o.mu.Unlock()
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}
