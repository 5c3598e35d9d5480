package chaos

import (
	"context"
	"sync"
	"time"
)

// pollEvery is how often the observer asks every member for its role. The
// leadership intervals it builds are exact to one poll.
const pollEvery = 100 * time.Millisecond

// observation is what one poll of one member found.
type observation struct {
	at      time.Time
	member  string
	up      bool // it answered
	leader  bool
	term    int64
	durable uint64
}

// observer polls every member's /v1/positions for the whole run: the
// nemesis asks it who leads, the takeover times come from it, and the PUT
// check reads the leadership intervals it recorded.
type observer struct {
	members []*member
	ha      bool // without ha (one member) an answering member leads
	mu      struct {
		sync.Mutex
		obs  []observation
		last map[string]observation
	}
}

func newObserver(members []*member, ha bool) *observer {
	o := &observer{members: members, ha: ha}
	o.mu.last = map[string]observation{}
	return o
}

func (o *observer) run(ctx context.Context) {
	t := time.NewTicker(pollEvery)
	defer t.Stop()
	for {
		var wg sync.WaitGroup
		for _, m := range o.members {
			wg.Add(1)
			go func() {
				defer wg.Done()
				st, err := m.positions(ctx)
				ob := observation{at: time.Now(), member: m.name, up: err == nil}
				if err == nil {
					ob.leader = st.Role == "leader" || (!o.ha && st.Role == "")
					ob.term, ob.durable = st.HA.Term, st.durable()
				}
				o.mu.Lock()
				o.mu.obs = append(o.mu.obs, ob)
				o.mu.last[m.name] = ob
				o.mu.Unlock()
			}()
		}
		wg.Wait()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// leader returns the member that leads now (as of the last poll, within a
// second) and its term; with two claimants, the higher term.
func (o *observer) leader() (*member, int64, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	var best *member
	var term int64 = -1
	for _, m := range o.members {
		ob, ok := o.mu.last[m.name]
		if ok && ob.leader && time.Since(ob.at) < time.Second && ob.term > term {
			best, term = m, ob.term
		}
	}
	return best, term, best != nil
}

// interval is one stretch of leadership of one member, widened to what
// the polls can tell: the member was not seen leading at from (or nothing
// was seen before), and at to it was seen not leading, or its process
// exited, or the run ended. A poll that got no answer says nothing.
type interval struct {
	member   string
	term     int64
	from, to time.Time
}

// intervals returns every member's leadership intervals; exits are the
// supervisors' records (a process that exits leads no more).
func (o *observer) intervals(end time.Time, exits []exit) []interval {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []interval
	for _, m := range o.members {
		var cur *interval
		var lastNot, prev time.Time
		closeAt := func(at time.Time) {
			if cur != nil {
				cur.to = at
				out = append(out, *cur)
				cur = nil
			}
			lastNot = at
		}
		for _, ob := range o.mu.obs {
			if ob.member != m.name {
				continue
			}
			for _, e := range exits {
				if e.member == m.name && e.at.After(prev) && !e.at.After(ob.at) {
					closeAt(e.at)
				}
			}
			switch {
			case !ob.up:
			case ob.leader && cur != nil && cur.term == ob.term:
			case ob.leader:
				from := lastNot
				if cur != nil { // a new term without a poll in between: it began after the last poll of the old one
					from = prev
					closeAt(ob.at)
				}
				cur = &interval{member: m.name, term: ob.term, from: from}
			default:
				closeAt(ob.at)
			}
			prev = ob.at
		}
		for _, e := range exits {
			if e.member == m.name && e.at.After(prev) {
				closeAt(e.at)
				break
			}
		}
		closeAt(end)
	}
	return out
}

// lastObs returns the newest observation of every member.
func (o *observer) lastObs() map[string]observation {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := map[string]observation{}
	for k, v := range o.mu.last {
		out[k] = v
	}
	return out
}
