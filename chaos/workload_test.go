package chaos

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// The bank: accounts in PostgreSQL whose balances always sum to bankTotal,
// moved by concurrent transfers. Any restore, any replica, at any
// transaction boundary after the accounts were captured, must sum to it too.
const (
	bankAccounts = 20
	bankOpening  = 1000
	bankTotal    = bankAccounts * bankOpening
)

func createBank(ctx context.Context, t *testing.T, dsn string) {
	t.Helper()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL)`); err != nil {
		t.Fatalf("bank: %v", err)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO accounts SELECT g, $1 FROM generate_series(1, $2) g`, bankOpening, bankAccounts); err != nil {
		t.Fatalf("bank: %v", err)
	}
}

// bank runs transfer workers against PostgreSQL directly (not through a
// member's Toxiproxy: the database's clients are not what fails) until ctx
// ends. A transfer that fails (PostgreSQL restarting) is simply not done;
// the worker reconnects.
type bank struct {
	dsn       string
	transfers atomic.Int64
	errors    atomic.Int64
}

func (b *bank) run(ctx context.Context, seed uint64, workers int) {
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.worker(ctx, rand.New(rand.NewPCG(seed, uint64(w))))
		}()
	}
	wg.Wait()
}

func (b *bank) worker(ctx context.Context, rng *rand.Rand) {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	tick := time.NewTicker(20 * time.Millisecond) // pace: the machine has 2 cores for everything
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if conn == nil {
			c, err := connectBank(ctx, b.dsn)
			if err != nil {
				b.errors.Add(1)
				continue
			}
			conn = c
		}
		from, to := 1+rng.IntN(bankAccounts), 1+rng.IntN(bankAccounts-1)
		if to >= from {
			to++
		}
		amount := 1 + rng.IntN(50)
		// A transfer under way is not cut when the run ends: a COMMIT sent,
		// then interrupted by ctx, may still commit on the server after the
		// run has read the final balances it compares every copy with.
		tctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := pgx.BeginFunc(tctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(tctx, `UPDATE accounts SET balance = balance - $1 WHERE id = $2`, amount, from); err != nil {
				return err
			}
			_, err := tx.Exec(tctx, `UPDATE accounts SET balance = balance + $1 WHERE id = $2`, amount, to)
			return err
		})
		cancel()
		if err != nil {
			b.errors.Add(1)
			conn.Close(context.Background())
			conn = nil
			continue
		}
		b.transfers.Add(1)
	}
}

// request is one HTTP append request of the writers: its idempotency key,
// the row ids of each of its transactions, and, once acknowledged, the
// commit LSN of each transaction.
type request struct {
	key      string
	rows     [][]string
	body     []byte
	lsns     []uint64
	acked    bool
	start    time.Time
	ackedAt  time.Time
	attempts int
}

// writers post NDJSON transactions with an Idempotency-Key to the members,
// retrying the same request with the same key against the other members on
// failure or 503 (the client side of the operator contract), and record
// every acknowledgement.
type writers struct {
	t       *testing.T
	members []*member
	obs     *observer
	client  *http.Client
	mu      struct {
		sync.Mutex
		reqs []*request
		hint string // last Walship-Leader seen
	}
	bad atomic.Pointer[string] // a status the contract never allows (4xx)
}

func newWriters(t *testing.T, members []*member, obs *observer) *writers {
	return &writers{t: t, members: members, obs: obs, client: &http.Client{Timeout: 30 * time.Second}}
}

// run starts n writers; each issues requests until stop ends, and finishes
// (acknowledges or gives up on when hard ends) the request it has in flight.
func (w *writers) run(stop, hard context.Context, seed uint64, n int) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, 1000+uint64(i)))
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for seq := 0; ; seq++ {
				select {
				case <-stop.Done():
					return
				case <-tick.C:
				}
				w.do(hard, newRequest(fmt.Sprintf("w%d-%d", i, seq), rng))
			}
		}()
	}
	wg.Wait()
}

// newRequest makes 1 to 3 transactions of 1 or 2 inserts into public.events
// whose row ids name the key, so the topic shows which request each row
// came from.
func newRequest(key string, rng *rand.Rand) *request {
	r := &request{key: key}
	var body bytes.Buffer
	for i := range 1 + rng.IntN(3) {
		var ids, changes []string
		for j := range 1 + rng.IntN(2) {
			id := fmt.Sprintf("%s/%d/%d", key, i, j)
			ids = append(ids, id)
			changes = append(changes, fmt.Sprintf(`{"table":"public.events","op":"c","key":{"id":%q},"after":{"id":%q,"request":%q}}`, id, id, key))
		}
		r.rows = append(r.rows, ids)
		fmt.Fprintf(&body, `{"changes":[%s]}`+"\n", strings.Join(changes, ","))
	}
	r.body = body.Bytes()
	return r
}

// do sends r until a member acknowledges it or ctx ends.
func (w *writers) do(ctx context.Context, r *request) {
	r.start = time.Now()
	w.mu.Lock()
	w.mu.reqs = append(w.mu.reqs, r)
	w.mu.Unlock()
	for ctx.Err() == nil {
		for _, m := range w.order() {
			if ctx.Err() != nil {
				return
			}
			r.attempts++
			lsns, leader, err := w.post(ctx, m, r)
			if leader != "" {
				w.mu.Lock()
				w.mu.hint = leader
				w.mu.Unlock()
			}
			if err == nil {
				w.mu.Lock()
				r.lsns, r.acked, r.ackedAt = lsns, true, time.Now()
				w.mu.Unlock()
				return
			}
		}
		select { // a round of every member failed: Retry-After, shortened to the lease's scale
		case <-ctx.Done():
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// order is the members to try: the leader as last seen by the observer or
// named by a 503, then the others.
func (w *writers) order() []*member {
	w.mu.Lock()
	first := w.mu.hint
	w.mu.Unlock()
	if m, _, ok := w.obs.leader(); ok {
		first = m.name
	}
	out := make([]*member, 0, len(w.members))
	for _, m := range w.members {
		if m.name == first {
			out = append(out, m)
		}
	}
	for _, m := range w.members {
		if m.name != first {
			out = append(out, m)
		}
	}
	return out
}

// post sends r to m once: the LSNs on 200, else an error; and the leader a
// follower's 503 names.
func (w *writers) post(ctx context.Context, m *member, r *request) ([]uint64, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+m.srcAddr+"/v1/append", bytes.NewReader(r.body))
	if err != nil {
		return nil, "", err
	}
	req.Header.Set("Idempotency-Key", r.key)
	resp, err := w.client.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, "", err
	}
	switch {
	case resp.StatusCode == http.StatusOK:
	case resp.StatusCode >= 400 && resp.StatusCode < 500 && resp.StatusCode != http.StatusRequestTimeout && resp.StatusCode != http.StatusTooManyRequests:
		// 400, 409, 422...: the request or its key was refused, which a retry
		// of an unchanged request with its own key must never be.
		msg := fmt.Sprintf("request %s to %s: %s: %s", r.key, m.name, resp.Status, bytes.TrimSpace(body))
		w.bad.CompareAndSwap(nil, &msg)
		return nil, "", fmt.Errorf("%s", msg)
	default:
		return nil, resp.Header.Get("Walship-Leader"), fmt.Errorf("%s: %s", m.name, resp.Status)
	}
	var lsns []uint64
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		var a struct {
			LSN uint64 `json:"lsn"`
		}
		if err := json.Unmarshal(sc.Bytes(), &a); err != nil {
			return nil, "", fmt.Errorf("%s: acknowledgement %q: %v", m.name, sc.Text(), err)
		}
		lsns = append(lsns, a.LSN)
	}
	if len(lsns) != len(r.rows) {
		msg := fmt.Sprintf("request %s to %s: %d acknowledgements for %d transactions: %s", r.key, m.name, len(lsns), len(r.rows), body)
		w.bad.CompareAndSwap(nil, &msg)
		return nil, "", fmt.Errorf("%s", msg)
	}
	return lsns, "", nil
}

// requests returns every request issued, acknowledged or not.
func (w *writers) requests() []*request {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]*request(nil), w.mu.reqs...)
}

// firstAckAfter is when the first request started after at was
// acknowledged: the end of a write outage that began at at.
func (w *writers) firstAckAfter(at time.Time) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var best time.Time
	for _, r := range w.mu.reqs {
		if r.acked && !r.start.Before(at) && (best.IsZero() || r.ackedAt.Before(best)) {
			best = r.ackedAt
		}
	}
	return best, !best.IsZero()
}

// bankApp is the application_name of the bank workers' connections.
const bankApp = "chaos-bank"

// connectBank connects a bank worker, named bankApp.
func connectBank(ctx context.Context, dsn string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	cfg.RuntimeParams["application_name"] = bankApp
	return pgx.ConnectConfig(ctx, cfg)
}

// busyClients counts the bank workers' backends that are not idle: a
// transfer still under way on the server, whatever its client saw.
func busyClients(ctx context.Context, dsn string) (int, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	var n int
	err = conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
		WHERE application_name = $1 AND state <> 'idle'`, bankApp).Scan(&n)
	return n, err
}
