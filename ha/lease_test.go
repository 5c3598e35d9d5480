package ha

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/walship/walship/kafkasink/kafkatest"
)

const leaseTestLength = time.Second

// leaseTestMember is one test member: its Lease and the position it announces.
type leaseTestMember struct {
	*Lease
	pos atomic.Uint64
}

func leaseTestOpen(t *testing.T, c *kafkatest.Cluster, topic, name string, pos uint64) *leaseTestMember {
	t.Helper()
	m := &leaseTestMember{}
	m.pos.Store(pos)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l, err := OpenLease(ctx, LeaseOptions{
		Topic:    topic,
		Member:   name,
		Lease:    leaseTestLength,
		Client:   []kgo.Opt{kgo.SeedBrokers(c.Addr)},
		Info:     func() json.RawMessage { return json.RawMessage(fmt.Sprintf(`{"http":%q}`, name+".example:8080")) },
		Position: m.pos.Load,
	})
	if err != nil {
		t.Fatal(err)
	}
	m.Lease = l
	t.Cleanup(func() { l.Close() })
	return m
}

// leaseTestWait polls cond until it holds or a generous deadline passes.
func leaseTestWait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func leaseTestCampaign(t *testing.T, m *leaseTestMember) *Term {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	term, err := m.Campaign(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return term
}

// leaseTestCampaignAsync campaigns in the background; the term arrives on the
// channel.
func leaseTestCampaignAsync(t *testing.T, m *leaseTestMember) <-chan *Term {
	ch := make(chan *Term, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		term, err := m.Campaign(ctx)
		if err != nil {
			if ctx.Err() == nil {
				t.Errorf("campaign of %s: %v", m.o.Member, err)
			}
			return
		}
		ch <- term
	}()
	return ch
}

func leaseTestAwait(t *testing.T, ch <-chan *Term) *Term {
	t.Helper()
	select {
	case term := <-ch:
		return term
	case <-time.After(90 * time.Second):
		t.Fatal("timed out waiting for a term")
		return nil
	}
}

// freezeRenewals stands for SIGSTOP: the term's next renewal stops between
// its produce and its commit until unfreeze is called.
func (t *Term) freezeRenewals() (unfreeze func()) {
	ch := make(chan struct{})
	t.freeze.Store(&ch)
	var once sync.Once
	return func() {
		once.Do(func() {
			t.freeze.Store(nil)
			close(ch)
		})
	}
}

// interval is when a term was valid.
func (t *Term) interval() (from, to time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.mu.validFrom, t.mu.validTo
}

func leaseTestClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestOneMemberLeads(t *testing.T) {
	c := leaseTestKafka(t)
	a := leaseTestOpen(t, c, "one.ha", "a", 42)
	term := leaseTestCampaign(t, a)
	t.Logf("takeover on an empty topic: %v", term.Takeover())
	if !term.Valid() || term.Gate() != nil || leaseTestClosed(term.Lost()) {
		t.Fatalf("fresh term: Valid %v, Gate %v", term.Valid(), term.Gate())
	}
	leaseTestWait(t, "a seen as leader", func() bool {
		l, ok := a.Leader()
		return ok && l.Name == "a" && l.Term == term.Number() && strings.Contains(string(l.Info), "a.example:8080")
	})
	leaseTestWait(t, "a's heartbeat as leader", func() bool {
		ms := a.Members()
		return len(ms) == 1 && ms[0].Name == "a" && ms[0].Role == RoleLeader && ms[0].Position == 42 &&
			ms[0].Term == term.Number()
	})
	// It keeps leading over several leases.
	deadline := time.Now().Add(3 * leaseTestLength)
	for time.Now().Before(deadline) {
		if err := term.Gate(); err != nil {
			t.Fatalf("term lost while renewing alone: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	term.mu.Lock()
	renewals := term.mu.renewals
	term.mu.Unlock()
	if renewals < 8 {
		t.Fatalf("%d renewals in over three leases, want one every quarter lease", renewals)
	}

	a.Close()
	if term.Valid() || !leaseTestClosed(term.Lost()) {
		t.Fatal("term still valid after Close")
	}
	err := term.Gate()
	if !errors.Is(err, ErrLeaseLost) || !strings.Contains(err.Error(), "member a") ||
		!strings.Contains(err.Error(), fmt.Sprintf("term %d", term.Number())) {
		t.Fatalf("Gate after Close: %v, want ErrLeaseLost naming member a and term %d", err, term.Number())
	}
}

func TestMembersShowHeartbeats(t *testing.T) {
	c := leaseTestKafka(t)
	ms := []*leaseTestMember{
		leaseTestOpen(t, c, "members.ha", "a", 10),
		leaseTestOpen(t, c, "members.ha", "b", 20),
		leaseTestOpen(t, c, "members.ha", "c", 30),
	}
	term := leaseTestCampaign(t, ms[1])
	ms[2].pos.Store(35)
	for _, m := range ms {
		leaseTestWait(t, m.o.Member+" seeing every heartbeat", func() bool {
			got := m.Members()
			return len(got) == 3 &&
				got[0].Name == "a" && got[0].Position == 10 && got[0].Role == RoleFollower && got[0].Term == 0 &&
				got[1].Name == "b" && got[1].Position == 20 && got[1].Role == RoleLeader && got[1].Term == term.Number() &&
				got[2].Name == "c" && got[2].Position == 35 && got[2].Role == RoleFollower
		})
	}
}

// TestOneTermValidAtATime runs three members that take turns: each leader
// either resigns or is frozen (its renewals stop, as under SIGSTOP) until it
// loses its term. No two terms' validity intervals overlap, a sampler never
// sees two valid terms, and term numbers increase.
func TestOneTermValidAtATime(t *testing.T) {
	c := leaseTestKafka(t)
	ms := []*leaseTestMember{
		leaseTestOpen(t, c, "turns.ha", "a", 1),
		leaseTestOpen(t, c, "turns.ha", "b", 2),
		leaseTestOpen(t, c, "turns.ha", "c", 3),
	}
	const want = 6
	var (
		mu    sync.Mutex
		terms []*Term
		live  = map[*Term]bool{}
	)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for _, m := range ms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				term, err := m.Campaign(ctx)
				if err != nil {
					if ctx.Err() == nil {
						t.Errorf("campaign of %s: %v", m.o.Member, err)
					}
					return
				}
				mu.Lock()
				terms = append(terms, term)
				live[term] = true
				n := len(terms)
				mu.Unlock()
				select { // lead for a while
				case <-ctx.Done():
				case <-time.After(leaseTestLength):
				}
				if n%2 == 0 {
					term.Resign()
				} else {
					unfreeze := term.freezeRenewals()
					select {
					case <-term.Lost():
					case <-ctx.Done():
					}
					unfreeze()
					<-term.done
				}
				mu.Lock()
				delete(live, term)
				if n >= want {
					cancel()
				}
				mu.Unlock()
			}
		}()
	}
	samples, maxValid := 0, 0
	for ctx.Err() == nil {
		mu.Lock()
		valid := 0
		for term := range live {
			if term.Valid() {
				valid++
			}
		}
		mu.Unlock()
		samples++
		maxValid = max(maxValid, valid)
		time.Sleep(time.Millisecond)
	}
	wg.Wait()
	if maxValid > 1 {
		t.Errorf("a sampler saw %d valid terms at once", maxValid)
	}
	if len(terms) < want {
		t.Fatalf("%d terms, want %d", len(terms), want)
	}
	slices.SortFunc(terms, func(x, y *Term) int {
		a, _ := x.interval()
		b, _ := y.interval()
		return a.Compare(b)
	})
	for i, term := range terms {
		from, to := term.interval()
		t.Logf("term %d of %s: valid %v, takeover %v", term.Number(), term.member, to.Sub(from), term.Takeover())
		if to.Before(from) {
			t.Errorf("term %d: validity ends before it starts", term.Number())
		}
		if i == 0 {
			continue
		}
		prev := terms[i-1]
		_, prevTo := prev.interval()
		if from.Before(prevTo) {
			t.Errorf("term %d of %s valid from %v, before term %d of %s ended (%v later)",
				term.Number(), term.member, from, prev.Number(), prev.member, prevTo.Sub(from))
		}
		if term.Number() <= prev.Number() {
			t.Errorf("term numbers %d then %d: not increasing", prev.Number(), term.Number())
		}
	}
	t.Logf("%d samples", samples)
}

// TestFrozenLeaderLosesAndIsFenced: a leader frozen in the middle of a
// renewal (produced, not committed) loses to another member within two
// leases plus jitter; once unfrozen it is invalid, its renewal fails
// fenced, and nothing of it beyond its committed renewals is visible.
func TestFrozenLeaderLosesAndIsFenced(t *testing.T) {
	c := leaseTestKafka(t)
	a := leaseTestOpen(t, c, "frozen.ha", "a", 1)
	b := leaseTestOpen(t, c, "frozen.ha", "b", 2)
	ta := leaseTestCampaign(t, a)
	bTerm := leaseTestCampaignAsync(t, b)

	unfreeze := ta.freezeRenewals()
	defer unfreeze()
	frozen := time.Now()
	tb := leaseTestAwait(t, bTerm)
	took := time.Since(frozen)
	t.Logf("frozen leader replaced after %v (takeover, lapse seen to leading: %v)", took, tb.Takeover())
	const slack = 3 * time.Second
	if limit := 2*leaseTestLength + leaseTestLength/4 + slack; took > limit {
		t.Errorf("takeover from a frozen leader took %v, want at most %v", took, limit)
	}
	if ta.Valid() || ta.Gate() == nil || !leaseTestClosed(ta.Lost()) {
		t.Fatalf("frozen leader's term: Valid %v, Lost closed %v, after another member leads", ta.Valid(), leaseTestClosed(ta.Lost()))
	}
	if !tb.Valid() {
		t.Fatal("the new leader's term is not valid")
	}
	if tb.Number() <= ta.Number() {
		t.Fatalf("term numbers %d then %d: not increasing", ta.Number(), tb.Number())
	}

	unfreeze()
	<-ta.done
	if ta.Valid() {
		t.Fatal("unfrozen leader's term valid")
	}
	ta.mu.Lock()
	renewErr, renewals := ta.mu.renewErr, ta.mu.renewals
	ta.mu.Unlock()
	t.Logf("unfrozen leader's renewal: %v", renewErr)
	if !leaseTestFenced(renewErr) {
		t.Fatalf("unfrozen leader's renewal: %v, want it fenced", renewErr)
	}
	if err := ta.Gate(); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("Gate: %v", err)
	}

	visible := 0
	for _, r := range leaseTestCommitted(t, c, "frozen.ha") {
		var v renewal
		if string(r.Key) != keyLease || json.Unmarshal(r.Value, &v) != nil || v.Member != "a" {
			continue
		}
		if v.Term == ta.Number() || (v.Term == 0 && r.Offset+1 == ta.Number()) {
			visible++
		}
	}
	if visible != renewals {
		t.Fatalf("read_committed sees %d renewals of the frozen term, want its %d committed ones", visible, renewals)
	}
	if !tb.Valid() {
		t.Fatal("the new leader lost its term to the unfrozen one")
	}
}

func TestResignHandsOverQuickly(t *testing.T) {
	c := leaseTestKafka(t)
	a := leaseTestOpen(t, c, "resign.ha", "a", 1)
	b := leaseTestOpen(t, c, "resign.ha", "b", 2)
	ta := leaseTestCampaign(t, a)
	bTerm := leaseTestCampaignAsync(t, b)
	// b must have read a's renewals, so it is waiting on a live lease.
	leaseTestWait(t, "b seeing a lead", func() bool {
		l, ok := b.Leader()
		return ok && l.Name == "a" && l.Term == ta.Number()
	})
	start := time.Now()
	ta.Resign()
	if ta.Valid() || !leaseTestClosed(ta.Lost()) || !errors.Is(ta.Gate(), ErrLeaseLost) {
		t.Fatal("term still valid after Resign")
	}
	tb := leaseTestAwait(t, bTerm)
	took := time.Since(start)
	t.Logf("handover after Resign: %v (takeover %v)", took, tb.Takeover())
	// Without the release b would wait for the lease to lapse and then one
	// more lease: at least two leases.
	if took >= 2*leaseTestLength {
		t.Errorf("handover after Resign took %v, want less than %v", took, 2*leaseTestLength)
	}
	if tb.Number() <= ta.Number() {
		t.Fatalf("term numbers %d then %d: not increasing", ta.Number(), tb.Number())
	}
}

// TestValidSeesTheDeadlineBeforeAnyTimer stands for the first instant after
// SIGCONT: the deadline has passed on the monotonic clock but no timer or
// renewal has run yet. The first check already sees the term lost.
func TestValidSeesTheDeadlineBeforeAnyTimer(t *testing.T) {
	term := &Term{
		member: "a",
		log:    slog.New(slog.DiscardHandler),
		number: 7,
		lease:  leaseTestLength,
		lost:   make(chan struct{}),
	}
	term.mu.returned = true
	term.mu.deadline = time.Now().Add(50 * time.Millisecond)
	if !term.Valid() || term.Gate() != nil {
		t.Fatal("term not valid before its deadline")
	}
	for time.Now().Before(term.mu.deadline) {
		time.Sleep(time.Millisecond) // let the deadline pass: the process is "stopped"
	}
	if leaseTestClosed(term.Lost()) {
		t.Fatal("Lost closed before anything looked")
	}
	if term.Valid() {
		t.Fatal("term valid after its deadline")
	}
	if !leaseTestClosed(term.Lost()) {
		t.Fatal("Lost not closed by the check that saw the deadline")
	}
	err := term.Gate()
	if !errors.Is(err, ErrLeaseLost) || !strings.Contains(err.Error(), "member a, term 7") ||
		!strings.Contains(err.Error(), "deadline") {
		t.Fatalf("Gate: %v", err)
	}
}
