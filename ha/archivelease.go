package ha

// The lease in the archive (docs/HA.md, "Archive-only groups: the lease in
// the archive"), for groups without Kafka. Every object is under "ha/" in
// the archive's root:
//
//   - "ha/lease/<seq>", seq 20 decimal digits: the renewals, the JSON of a
//     Kafka renewal plus a "nonce", each written once with PutIfAbsent.
//     Sequence numbers are contiguous: a term's first renewal takes the
//     newest seen plus one, and its number is that sequence number; a
//     leader's next renewal takes its last plus one. Whoever writes a
//     sequence number first wins it; a leader that finds its next one
//     taken was replaced (fenced) and its term is lost. The newest
//     renewal is the lease; the leader deletes those more than keepRenewals
//     older, so that observing stays cheap.
//   - "ha/member/<name>": each member's heartbeat (the Kafka heartbeat's
//     JSON plus a "nonce"), replaced every Lease/2 with a plain Put.
//   - "ha/loss/<key>": loss reports (RecordLoss), removed when acknowledged.
//
// The guarantees are the Lease's: at most one Term valid at any instant
// (same clock assumptions), term numbers strictly increasing as long as
// "ha/lease/" is not emptied by hand, and a replaced leader's renewal
// fails (archive.ErrExists) instead of being written.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/walship/walship/archive"
)

// Keys of the group's objects in the archive.
const (
	archiveLeasePrefix  = "ha/lease/"
	archiveMemberPrefix = "ha/member/"
	archiveLossPrefix   = "ha/loss/"
	// keepRenewals is how many of the newest renewals the leader keeps.
	// A renewal older than that is long lapsed: one in progress that
	// writes a deleted sequence number again either fails its deadline
	// check or, for a campaign, sees the newer ones and gives up.
	keepRenewals = 16
)

func archiveLeaseKey(seq int64) string { return fmt.Sprintf("%s%020d", archiveLeasePrefix, seq) }

// parseArchiveLeaseKey returns the sequence number of a renewal's key.
func parseArchiveLeaseKey(key string) (int64, bool) {
	s, ok := strings.CutPrefix(key, archiveLeasePrefix)
	if !ok || len(s) != 20 {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil && n > 0
}

// newestRenewal is the highest sequence number among keys (0: none).
func newestRenewal(keys []string) int64 {
	var newest int64
	for _, k := range keys {
		if n, ok := parseArchiveLeaseKey(k); ok && n > newest {
			newest = n
		}
	}
	return newest
}

func nonce() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// ArchiveLeaseOptions configure a member's view of a lease held in the
// archive.
type ArchiveLeaseOptions struct {
	// Backend is the group's archive; the lease's objects are under "ha/".
	Backend archive.Backend
	// Member is this member's name, unique in the group: [A-Za-z0-9._-]{1,64}.
	Member string
	// Lease is as in LeaseOptions: at least 1s, default 6s.
	Lease time.Duration
	// Info, Renewed and Position are as in LeaseOptions.
	Info     func() json.RawMessage
	Renewed  func(info json.RawMessage)
	Position func() uint64
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Poll is how often the renewals are listed: at most Lease/2, default
	// Lease/8. A renewal is seen up to Poll late, which delays a takeover
	// and never hastens one.
	Poll time.Duration
}

// Validate checks the options and fills the defaults.
func (o *ArchiveLeaseOptions) Validate() error {
	if o.Backend == nil {
		return errors.New("ha: archive lease: no archive backend")
	}
	if !memberName.MatchString(o.Member) {
		return fmt.Errorf("ha: archive lease: member name %q: want [A-Za-z0-9._-]{1,64}", o.Member)
	}
	if o.Lease == 0 {
		o.Lease = DefaultLease
	}
	if o.Lease < time.Second {
		return fmt.Errorf("ha: archive lease: lease %v: want at least 1s", o.Lease)
	}
	if o.Poll == 0 {
		o.Poll = o.Lease / 8
	}
	if o.Poll < 0 || o.Poll > o.Lease/2 {
		return fmt.Errorf("ha: archive lease: poll %v: want at most half the lease (%v)", o.Poll, o.Lease/2)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return nil
}

// ArchiveLease is a member's view of its group's lease held in the
// archive: it observes the renewals, sends this member's heartbeat and
// campaigns for leadership. Its methods are those of Lease, and its
// Campaign returns the same Term.
type ArchiveLease struct {
	o      ArchiveLeaseOptions
	log    *slog.Logger
	obs    *archiveObserver
	runCtx context.Context // ends on Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu struct {
		sync.Mutex
		term   *Term // the last term Campaign returned
		closed bool
	}
}

// OpenArchiveLease starts observing the lease in the archive and sending
// this member's heartbeat; it does no I/O itself. Close stops both.
func OpenArchiveLease(ctx context.Context, o ArchiveLeaseOptions) (*ArchiveLease, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	obs := &archiveObserver{b: o.Backend, lease: o.Lease, log: o.Logger}
	obs.mu.renewed = make(chan struct{})
	obs.mu.members = map[string]Member{}
	obs.mu.nonces = map[string]string{}
	runCtx, cancel := context.WithCancel(context.Background())
	l := &ArchiveLease{o: o, log: o.Logger, obs: obs, runCtx: runCtx, cancel: cancel}
	l.wg.Add(2)
	go func() {
		defer l.wg.Done()
		l.observe(runCtx)
	}()
	go func() {
		defer l.wg.Done()
		l.heartbeats(runCtx)
	}()
	return l, nil
}

// observe lists the renewals every Poll, and reads the heartbeats every
// Lease/2, until ctx ends.
func (l *ArchiveLease) observe(ctx context.Context) {
	var failing bool
	var membersAt time.Time
	tick := time.NewTicker(l.o.Poll)
	defer tick.Stop()
	for {
		err := l.obs.poll(ctx)
		if err == nil && time.Since(membersAt) >= l.o.Lease/2 {
			membersAt = time.Now()
			err = l.obs.pollMembers(ctx)
		}
		switch {
		case ctx.Err() != nil:
			return
		case err != nil && !failing: // logged once per outage
			l.log.Warn("ha: reading the lease in the archive", "member", l.o.Member, "err", err)
		case err == nil && failing:
			l.log.Info("ha: reading the lease in the archive again", "member", l.o.Member)
		}
		failing = err != nil
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// heartbeats writes this member's heartbeat every Lease/2 until ctx ends.
func (l *ArchiveLease) heartbeats(ctx context.Context) {
	every := l.o.Lease / 2
	key := archiveMemberPrefix + l.o.Member
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
		v, _ := json.Marshal(heartbeat{Name: l.o.Member, Role: role, Position: pos, Nonce: nonce()})
		hctx, cancel := context.WithTimeout(ctx, every)
		err := l.o.Backend.Put(hctx, key, v)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil && !failing:
			l.log.Warn("ha: heartbeat failed", "member", l.o.Member, "key", key, "err", err)
		case err == nil && failing:
			l.log.Info("ha: heartbeat sent again", "member", l.o.Member, "key", key)
		}
		failing = err != nil
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}

// Leader is as Lease.Leader: the newest renewal observed, and whether its
// lease still runs by this member's clock.
func (l *ArchiveLease) Leader() (Member, bool) { return l.obs.leader() }

// Members is as Lease.Members: every member whose heartbeat was read,
// sorted by name; Seen is when this member last saw it change.
func (l *ArchiveLease) Members() []Member { return l.obs.members() }

// Close resigns the term Campaign returned if it is still held, stops the
// heartbeat and the observer, and waits for them. It is idempotent.
func (l *ArchiveLease) Close() error {
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
	return nil
}

// Campaign blocks until this member leads and returns its Term, or until
// ctx ends or the lease is closed; it retries archive errors and lost
// contests by itself.
//
// In order: it lists the renewals and waits until no new one has been
// seen for the lease the newest announced (by this member's monotonic
// clock, from when it first listed it; at once if it released the lease
// or there is none), waits a random jitter of up to Lease/4 and lists
// again; then writes the next sequence number with PutIfAbsent (a rival
// that wrote it first wins: this member observes again), checks that no
// newer renewal exists, and renews every Lease/4 while it waits, from its
// first renewal, for the lease the renewal before announced, as
// Lease.Campaign does.
func (l *ArchiveLease) Campaign(ctx context.Context) (*Term, error) {
	return campaign(ctx, l.runCtx, archiveContest{l}, l.o.Member, l.o.Lease, l.log, "the lease in the archive")
}

// archiveContest is the archive lease's side of a campaign.
type archiveContest struct{ l *ArchiveLease }

func (c archiveContest) refresh(ctx context.Context) error { return c.l.obs.poll(ctx) }
func (c archiveContest) expiry() time.Time                 { return c.l.obs.expiry() }
func (c archiveContest) renewedCh() <-chan struct{}        { return c.l.obs.renewedCh() }
func (c archiveContest) tryLead(ctx context.Context, lapse time.Time) (*Term, error) {
	return c.l.tryLead(ctx, lapse)
}

// tryLead writes the first renewal after the newest observed, checks that
// it is the newest, and waits until the previous term is surely over.
func (l *ArchiveLease) tryLead(ctx context.Context, lapse time.Time) (*Term, error) {
	seq, prev := l.obs.newest()
	store := &archiveStore{b: l.o.Backend, lease: l.o.Lease, next: seq + 1, log: l.log, member: l.o.Member}
	t := newTerm(store, l.o.Member, l.o.Lease, l.log, l.o.Info, l.o.Renewed)
	if err := t.renew(true); err != nil {
		t.cancel()
		return nil, fmt.Errorf("first renewal: %w", err)
	}
	committed := time.Now()
	go t.run()
	// A campaign paused between its listing and its write may have won a
	// sequence number the leader since deleted: newer renewals then exist.
	lctx, cancel := context.WithTimeout(ctx, l.o.Lease)
	keys, err := l.o.Backend.List(lctx, archiveLeasePrefix)
	cancel()
	if err != nil {
		t.abandon()
		return nil, fmt.Errorf("list the renewals after ours: %w", err)
	}
	if newest := newestRenewal(keys); newest > t.number {
		t.abandon()
		return nil, fmt.Errorf("renewal %d is newer than our first, %d", newest, t.number)
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

// RecordLoss writes a loss report under "ha/loss/<key>" (replacing one
// with the same key), where ArchiveLosses reads it.
func (l *ArchiveLease) RecordLoss(ctx context.Context, key string, v []byte) error {
	if err := l.o.Backend.Put(ctx, archiveLossPrefix+key, v); err != nil {
		return fmt.Errorf("ha: record the loss report %s in the archive: %w", key, err)
	}
	return nil
}

// ArchiveLosses returns the loss reports recorded in the archive b
// (RecordLoss) and not acknowledged, by key.
func ArchiveLosses(ctx context.Context, b archive.Backend) (map[string][]byte, error) {
	keys, err := b.List(ctx, archiveLossPrefix)
	if err != nil {
		return nil, fmt.Errorf("ha: list the loss reports in the archive: %w", err)
	}
	out := make(map[string][]byte, len(keys))
	for _, k := range keys {
		v, err := b.Get(ctx, k)
		if errors.Is(err, archive.ErrNotFound) {
			continue // acknowledged meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("ha: read the loss report %s: %w", k, err)
		}
		out[strings.TrimPrefix(k, archiveLossPrefix)] = v
	}
	return out, nil
}

// AcknowledgeArchiveLoss deletes the loss report key from the archive b,
// as a tombstone does in the lease topic; a missing one is not an error.
func AcknowledgeArchiveLoss(ctx context.Context, b archive.Backend, key string) error {
	if err := b.Delete(ctx, archiveLossPrefix+key); err != nil {
		return fmt.Errorf("ha: acknowledge the loss report %s in the archive: %w", key, err)
	}
	return nil
}

// archiveStore writes a term's renewals to the archive, each with
// PutIfAbsent at the sequence number after the last.
type archiveStore struct {
	b     archive.Backend
	lease time.Duration
	next  int64 // used only by the renewer
	// tidy is false after a term's first renewal and after a failed
	// prune: the next prune lists what to delete.
	tidy   bool
	log    *slog.Logger
	member string
}

func (s *archiveStore) close() {}

// commit writes r at the next sequence number and returns that number. A
// renewal found there already is ours only if it holds our bytes (the
// backend retried a put that had reached the store); anything else was
// written by a newer leader: the error wraps archive.ErrExists.
func (s *archiveStore) commit(ctx context.Context, r renewal, hold func()) (int64, error) {
	seq := s.next
	if r.Term == 0 {
		r.Term = seq
	}
	r.Nonce = nonce()
	v, err := json.Marshal(r)
	if err != nil {
		return 0, err
	}
	hold()
	ctx, cancel := context.WithTimeout(ctx, s.lease)
	defer cancel()
	key := archiveLeaseKey(seq)
	if err := s.b.PutIfAbsent(ctx, key, v); err != nil {
		if !errors.Is(err, archive.ErrExists) {
			return 0, err
		}
		got, gerr := s.b.Get(ctx, key)
		if gerr != nil {
			return 0, fmt.Errorf("%w; reading it back: %w", err, gerr)
		}
		if !bytes.Equal(got, v) {
			var other renewal
			_ = json.Unmarshal(got, &other)
			return 0, fmt.Errorf("renewal %s written by member %q, term %d: %w", key, other.Member, other.Term, err)
		}
	}
	s.next = seq + 1
	s.prune(ctx, seq)
	return seq, nil
}

// prune deletes, best effort, the renewals keepRenewals older than seq:
// after a term's first renewal or a failed prune all of them (earlier
// leaders may have left some), else the one. It gives up after Lease/8, so
// that a slow delete never delays the next renewal much.
func (s *archiveStore) prune(ctx context.Context, seq int64) {
	old := seq - keepRenewals
	if old <= 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, s.lease/8)
	defer cancel()
	doomed := []string{archiveLeaseKey(old)}
	if !s.tidy {
		keys, err := s.b.List(ctx, archiveLeasePrefix)
		if err != nil {
			s.log.Debug("ha: listing old renewals to delete", "member", s.member, "err", err)
			return
		}
		doomed = slices.DeleteFunc(keys, func(k string) bool {
			n, ok := parseArchiveLeaseKey(k)
			return !ok || n > old
		})
	}
	for _, k := range doomed {
		if err := s.b.Delete(ctx, k); err != nil {
			s.log.Debug("ha: deleting an old renewal", "member", s.member, "key", k, "err", err)
			return
		}
	}
	s.tidy = true
}

// archiveObserver keeps what the listed renewals and heartbeats say.
type archiveObserver struct {
	b     archive.Backend
	lease time.Duration
	log   *slog.Logger
	poll1 sync.Mutex // one poll at a time

	mu struct {
		sync.Mutex
		seq      int64    // the newest renewal's sequence number; 0: none seen
		last     *renewal // the newest renewal, its term filled in
		received time.Time
		renewed  chan struct{} // closed and replaced when a newer renewal is seen
		members  map[string]Member
		nonces   map[string]string // each member's last heartbeat nonce
	}
}

// poll lists the renewals and reads the newest if it is new.
func (o *archiveObserver) poll(ctx context.Context) error {
	o.poll1.Lock()
	defer o.poll1.Unlock()
	ctx, cancel := context.WithTimeout(ctx, o.lease)
	defer cancel()
	keys, err := o.b.List(ctx, archiveLeasePrefix)
	if err != nil {
		return fmt.Errorf("list the renewals: %w", err)
	}
	newest := newestRenewal(keys)
	o.mu.Lock()
	seen := o.mu.seq
	o.mu.Unlock()
	if newest <= seen {
		return nil
	}
	key := archiveLeaseKey(newest)
	v, err := o.b.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("read the newest renewal: %w", err)
	}
	var r renewal
	if err := json.Unmarshal(v, &r); err != nil {
		// Still a renewal: count it as one of a whole lease, so that an
		// unreadable object delays a takeover rather than hastens it.
		o.log.Warn("ha: unreadable renewal in the archive", "key", key, "err", err)
		r = renewal{LeaseMS: o.lease.Milliseconds()}
	}
	if r.Term == 0 {
		r.Term = newest
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.mu.seq, o.mu.last, o.mu.received = newest, &r, time.Now()
	close(o.mu.renewed)
	o.mu.renewed = make(chan struct{})
	return nil
}

// pollMembers reads every heartbeat.
func (o *archiveObserver) pollMembers(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, o.lease)
	defer cancel()
	keys, err := o.b.List(ctx, archiveMemberPrefix)
	if err != nil {
		return fmt.Errorf("list the heartbeats: %w", err)
	}
	for _, k := range keys {
		v, err := o.b.Get(ctx, k)
		if errors.Is(err, archive.ErrNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read a heartbeat: %w", err)
		}
		var h heartbeat
		if err := json.Unmarshal(v, &h); err != nil || h.Name == "" {
			o.log.Warn("ha: unreadable heartbeat in the archive", "key", k, "err", err)
			continue
		}
		o.mu.Lock()
		if m, ok := o.mu.members[h.Name]; !ok || o.mu.nonces[h.Name] != h.Nonce || m.Role != h.Role || m.Position != h.Position {
			o.mu.members[h.Name] = Member{Name: h.Name, Role: h.Role, Position: h.Position, Seen: time.Now()}
			o.mu.nonces[h.Name] = h.Nonce
		}
		o.mu.Unlock()
	}
	return nil
}

func (o *archiveObserver) renewedCh() <-chan struct{} {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.mu.renewed
}

// newest returns the newest renewal's sequence number (0: none) and the
// renewal.
func (o *archiveObserver) newest() (int64, *renewal) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.mu.seq, o.mu.last
}

// expiry is when the lease lapses by this member's clock: when the newest
// renewal was first seen plus the lease it announced; the zero time if
// none was seen.
func (o *archiveObserver) expiry() time.Time {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.mu.last == nil {
		return time.Time{}
	}
	return o.mu.received.Add(time.Duration(o.mu.last.LeaseMS) * time.Millisecond)
}

func (o *archiveObserver) leader() (Member, bool) {
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

func (o *archiveObserver) members() []Member {
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
