package ha

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/walship/walship/archive"
	"github.com/walship/walship/internal/miniotest"
)

// archLeaseEach runs f once on a directory archive and once on MinIO (one
// server for all of f's subtests, a fresh prefix for each call of open).

// archLeaseTestLength is the archive lease's length in these tests: twice
// the Kafka tests' (an object store's put under -race on a loaded machine
// can take most of a second, and a term ends 0.9 lease after its last
// renewal started).
const archLeaseTestLength = 2 * time.Second

func archLeaseEach(t *testing.T, f func(t *testing.T, open func(t *testing.T) archive.Backend)) {
	t.Run("dir", func(t *testing.T) {
		t.Parallel()
		f(t, func(t *testing.T) archive.Backend {
			b, err := archive.OpenBackend(context.Background(), "file://"+t.TempDir(), archive.BackendOptions{})
			if err != nil {
				t.Fatal(err)
			}
			return b
		})
	})
	t.Run("minio", func(t *testing.T) {
		t.Parallel()
		srv := miniotest.Start(t, miniotest.Options{})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := srv.MakeBucket(ctx, "halease"); err != nil {
			t.Fatal(err)
		}
		var seq atomic.Int64
		f(t, func(t *testing.T) archive.Backend {
			b, err := archive.OpenBackend(context.Background(), fmt.Sprintf("s3://halease/t%d", seq.Add(1)), archive.BackendOptions{
				Endpoint: srv.Endpoint, Region: miniotest.Region, PathStyle: true,
				AccessKey: miniotest.AccessKey, SecretKey: miniotest.SecretKey,
			})
			if err != nil {
				t.Fatal(err)
			}
			return b
		})
	})
}

type archLeaseMember struct {
	*ArchiveLease
	pos atomic.Uint64
}

func archLeaseOpen(t *testing.T, b archive.Backend, name string, pos uint64) *archLeaseMember {
	t.Helper()
	m := &archLeaseMember{}
	m.pos.Store(pos)
	l, err := OpenArchiveLease(context.Background(), ArchiveLeaseOptions{
		Backend:  b,
		Member:   name,
		Lease:    archLeaseTestLength,
		Info:     func() json.RawMessage { return json.RawMessage(fmt.Sprintf(`{"http":%q}`, name+".example:8080")) },
		Position: m.pos.Load,
	})
	if err != nil {
		t.Fatal(err)
	}
	m.ArchiveLease = l
	t.Cleanup(func() { l.Close() })
	return m
}

func archLeaseCampaign(t *testing.T, m *archLeaseMember) *Term {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	term, err := m.Campaign(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return term
}

// archLeaseCampaignAsync campaigns in the background; the term arrives on
// the channel.
func archLeaseCampaignAsync(t *testing.T, m *archLeaseMember) <-chan *Term {
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

// archLeaseRenewals returns the renewals in b by sequence number.
func archLeaseRenewals(t *testing.T, b archive.Backend) map[int64]renewal {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	keys, err := b.List(ctx, archiveLeasePrefix)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int64]renewal{}
	for _, k := range keys {
		seq, ok := parseArchiveLeaseKey(k)
		if !ok {
			t.Fatalf("stray key %s", k)
		}
		v, err := b.Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		var r renewal
		if err := json.Unmarshal(v, &r); err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		out[seq] = r
	}
	return out
}

func TestArchiveLease(t *testing.T) {
	archLeaseEach(t, func(t *testing.T, open func(t *testing.T) archive.Backend) {
		t.Run("OneMemberLeads", func(t *testing.T) { archLeaseOneMember(t, open(t)) })
		t.Run("OneTermValidAtATime", func(t *testing.T) { archLeaseOneTermAtATime(t, open(t)) })
		t.Run("FrozenLeaderIsFenced", func(t *testing.T) { archLeaseFrozen(t, open(t)) })
		t.Run("ResignHandsOverQuickly", func(t *testing.T) { archLeaseResign(t, open(t)) })
		t.Run("RetriedPutIsOurs", func(t *testing.T) { archLeaseRetriedPut(t, open(t)) })
		t.Run("LossReports", func(t *testing.T) { archLeaseLosses(t, open(t)) })
	})
}

func archLeaseOneMember(t *testing.T, b archive.Backend) {
	a := archLeaseOpen(t, b, "a", 42)
	term := archLeaseCampaign(t, a)
	t.Logf("takeover on an empty archive: %v", term.Takeover())
	if !term.Valid() || term.Gate() != nil || leaseTestClosed(term.Lost()) || term.Number() != 1 {
		t.Fatalf("fresh term %d: Valid %v, Gate %v", term.Number(), term.Valid(), term.Gate())
	}
	if _, ok := term.Previous(); ok {
		t.Fatal("the group's first term has a previous one")
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
	// It keeps leading over many leases, and keeps only the newest renewals.
	deadline := time.Now().Add(6 * archLeaseTestLength)
	for time.Now().Before(deadline) {
		if err := term.Gate(); err != nil {
			t.Fatalf("term lost while renewing alone: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	term.mu.Lock()
	renewals := term.mu.renewals
	term.mu.Unlock()
	if renewals < keepRenewals+4 {
		t.Fatalf("%d renewals in over six leases, want one every quarter lease", renewals)
	}
	rs := archLeaseRenewals(t, b)
	if len(rs) > keepRenewals+2 {
		t.Fatalf("%d renewals kept after %d, want about %d", len(rs), renewals, keepRenewals)
	}
	for seq, r := range rs {
		if r.Member != "a" || r.Term != term.Number() || r.LeaseMS != archLeaseTestLength.Milliseconds() || r.Nonce == "" {
			t.Fatalf("renewal %d: %+v", seq, r)
		}
	}

	// The group's objects are no lineage of the archive and no problem.
	arch, err := archive.New(b, archive.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cat, err := arch.Catalog(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(cat.Lineages) != 0 {
		t.Fatalf("the catalog sees the HA objects as lineages: %+v", cat.Lineages)
	}

	a.Close()
	if term.Valid() || !leaseTestClosed(term.Lost()) {
		t.Fatal("term still valid after Close")
	}
	err = term.Gate()
	if !errors.Is(err, ErrLeaseLost) || !strings.Contains(err.Error(), fmt.Sprintf("member a, term %d", term.Number())) {
		t.Fatalf("Gate after Close: %v, want ErrLeaseLost naming member a and term %d", err, term.Number())
	}
	rs = archLeaseRenewals(t, b)
	var newest int64
	for seq := range rs {
		newest = max(newest, seq)
	}
	if r := rs[newest]; r.LeaseMS != 0 || r.Member != "a" {
		t.Fatalf("newest renewal after Close %+v, want a's release", r)
	}
}

// archLeaseOneTermAtATime mirrors TestOneTermValidAtATime: three members
// take turns, each leader resigning or frozen until it loses its term; no
// two validity intervals overlap, a sampler never sees two valid terms,
// and term numbers increase.
func archLeaseOneTermAtATime(t *testing.T, b archive.Backend) {
	ms := []*archLeaseMember{archLeaseOpen(t, b, "a", 1), archLeaseOpen(t, b, "b", 2), archLeaseOpen(t, b, "c", 3)}
	const want = 6
	var (
		mu    sync.Mutex
		terms []*Term
		live  = map[*Term]bool{}
	)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
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
				case <-time.After(archLeaseTestLength):
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
	maxValid := 0
	for ctx.Err() == nil {
		mu.Lock()
		valid := 0
		for term := range live {
			if term.Valid() {
				valid++
			}
		}
		mu.Unlock()
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
		// A term that never led (lost while waiting out its predecessor)
		// may come in between.
		if p, ok := term.Previous(); !ok || p.Term < prev.Number() || p.Term >= term.Number() {
			t.Errorf("term %d's previous is %+v, want a renewal of term %d or later", term.Number(), p, prev.Number())
		}
	}
}

// archLeaseFrozen: a leader frozen right before writing a renewal loses to
// another member within about two leases plus jitter; unfrozen, its
// renewal finds the sequence number taken (archive.ErrExists), its term is
// invalid, and the object holds the new leader's renewal.
func archLeaseFrozen(t *testing.T, b archive.Backend) {
	a := archLeaseOpen(t, b, "a", 1)
	bm := archLeaseOpen(t, b, "b", 2)
	ta := archLeaseCampaign(t, a)
	bTerm := archLeaseCampaignAsync(t, bm)

	unfreeze := ta.freezeRenewals()
	defer unfreeze()
	frozen := time.Now()
	var tb *Term
	select {
	case tb = <-bTerm:
	case <-time.After(90 * time.Second):
		t.Fatal("timed out waiting for b to lead")
	}
	took := time.Since(frozen)
	t.Logf("frozen leader replaced after %v (takeover %v)", took, tb.Takeover())
	const slack = 3 * time.Second
	if limit := 2*archLeaseTestLength + archLeaseTestLength/4 + slack; took > limit {
		t.Errorf("takeover from a frozen leader took %v, want at most %v", took, limit)
	}
	if ta.Valid() || ta.Gate() == nil || !leaseTestClosed(ta.Lost()) {
		t.Fatal("frozen leader's term still valid after another member leads")
	}
	if !tb.Valid() || tb.Number() <= ta.Number() {
		t.Fatalf("new term %d (valid %v) after %d", tb.Number(), tb.Valid(), ta.Number())
	}
	if p, ok := tb.Previous(); !ok || p.Name != "a" || p.Term != ta.Number() {
		t.Fatalf("new term's previous %+v, want a's term %d", p, ta.Number())
	}

	unfreeze()
	<-ta.done
	ta.mu.Lock()
	renewErr := ta.mu.renewErr
	ta.mu.Unlock()
	t.Logf("unfrozen leader's renewal: %v", renewErr)
	if !errors.Is(renewErr, archive.ErrExists) {
		t.Fatalf("unfrozen leader's renewal: %v, want archive.ErrExists", renewErr)
	}
	if err := ta.Gate(); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("Gate: %v", err)
	}
	// The frozen renewal's sequence number holds b's first renewal.
	if r, ok := archLeaseRenewals(t, b)[tb.Number()]; !ok || r.Member != "b" || r.Term != tb.Number() {
		t.Fatalf("renewal %d: %+v, want b's", tb.Number(), r)
	}
	if !tb.Valid() {
		t.Fatal("the new leader lost its term to the unfrozen one")
	}
}

func archLeaseResign(t *testing.T, b archive.Backend) {
	a := archLeaseOpen(t, b, "a", 1)
	bm := archLeaseOpen(t, b, "b", 2)
	ta := archLeaseCampaign(t, a)
	bTerm := archLeaseCampaignAsync(t, bm)
	leaseTestWait(t, "b seeing a lead", func() bool {
		l, ok := bm.Leader()
		return ok && l.Name == "a" && l.Term == ta.Number()
	})
	start := time.Now()
	ta.Resign()
	if ta.Valid() || !leaseTestClosed(ta.Lost()) || !errors.Is(ta.Gate(), ErrLeaseLost) {
		t.Fatal("term still valid after Resign")
	}
	var tb *Term
	select {
	case tb = <-bTerm:
	case <-time.After(90 * time.Second):
		t.Fatal("timed out waiting for b to lead")
	}
	took := time.Since(start)
	t.Logf("handover after Resign: %v (takeover %v)", took, tb.Takeover())
	// Without the release b would wait for the lease to lapse and then one
	// more lease: at least two leases.
	if took >= 2*archLeaseTestLength {
		t.Errorf("handover after Resign took %v, want less than %v", took, 2*archLeaseTestLength)
	}
	if tb.Number() <= ta.Number() {
		t.Fatalf("term numbers %d then %d: not increasing", ta.Number(), tb.Number())
	}
}

// archLeaseRetry stands for a backend that retried a PutIfAbsent whose
// first attempt reached the store: the object is written, and the call
// returns ErrExists.
type archLeaseRetry struct {
	archive.Backend
	retried atomic.Int64
}

func (b *archLeaseRetry) PutIfAbsent(ctx context.Context, key string, body []byte) error {
	if err := b.Backend.PutIfAbsent(ctx, key, body); err != nil {
		return err
	}
	b.retried.Add(1)
	return fmt.Errorf("archive: put %s (after a retry): %w", key, archive.ErrExists)
}

// archLeaseRetriedPut: every renewal's put reports ErrExists for the
// member's own object; the member still leads and renews, and a rival
// still sees the lease held.
func archLeaseRetriedPut(t *testing.T, b archive.Backend) {
	rb := &archLeaseRetry{Backend: b}
	a := archLeaseOpen(t, rb, "a", 1)
	bm := archLeaseOpen(t, b, "b", 2)
	ta := archLeaseCampaign(t, a)
	bTerm := archLeaseCampaignAsync(t, bm)
	deadline := time.Now().Add(3 * archLeaseTestLength)
	for time.Now().Before(deadline) {
		if err := ta.Gate(); err != nil {
			t.Fatalf("term lost although every renewal was written: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := rb.retried.Load(); n < 8 {
		t.Fatalf("%d renewals answered ErrExists, want one every quarter lease", n)
	}
	select {
	case tb := <-bTerm:
		t.Fatalf("b leads (term %d) while a renews", tb.Number())
	default:
	}
}

// archLeaseLosses: reports recorded by a member are read back by key
// until acknowledged.
func archLeaseLosses(t *testing.T, b archive.Backend) {
	a := archLeaseOpen(t, b, "a", 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, term := range []string{"3", "7"} {
		if err := a.RecordLoss(ctx, term, []byte(`{"term":`+term+`}`)); err != nil {
			t.Fatal(err)
		}
	}
	got, err := ArchiveLosses(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || string(got["3"]) != `{"term":3}` || string(got["7"]) != `{"term":7}` {
		t.Fatalf("losses %q, want terms 3 and 7", got)
	}
	if err := AcknowledgeArchiveLoss(ctx, b, "3"); err != nil {
		t.Fatal(err)
	}
	if got, err = ArchiveLosses(ctx, b); err != nil || len(got) != 1 || got["7"] == nil {
		t.Fatalf("losses after acknowledging 3: %q, %v; want 7 alone", got, err)
	}
	// The reports are not renewals: the lease is still free.
	term := archLeaseCampaign(t, a)
	if term.Number() != 1 {
		t.Fatalf("first term %d after loss reports, want 1", term.Number())
	}
}
