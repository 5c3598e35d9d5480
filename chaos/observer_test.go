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

// interval is one stretch of leadership of one member, widened to the polls
// around it: the member was not seen leading at from (or nothing was seen
// before), nor at to (or the run ended), and led in between.
type interval struct {
	member   string
	term     int64
	from, to time.Time
}

// intervals returns every member's leadership intervals.
func (o *observer) intervals(end time.Time) []interval {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []interval
	for _, m := range o.members {
		var cur *interval
		var lastNot time.Time
		for _, ob := range o.mu.obs {
			if ob.member != m.name {
				continue
			}
			switch {
			case ob.leader && cur != nil && cur.term == ob.term:
			case ob.leader:
				if cur != nil {
					cur.to = ob.at
					out = append(out, *cur)
				}
				cur = &interval{member: m.name, term: ob.term, from: lastNot}
			default:
				lastNot = ob.at
				if cur != nil {
					cur.to = ob.at
					out = append(out, *cur)
					cur = nil
				}
			}
		}
		if cur != nil {
			cur.to = end
			out = append(out, *cur)
		}
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
