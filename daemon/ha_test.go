package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/walship/walship/change"
	"github.com/walship/walship/config"
	"github.com/walship/walship/internal/pgtest"
	"github.com/walship/walship/kafkasink/kafkatest"
	"github.com/walship/walship/kafkawire"
)

// haConfig is a member's config: its own log and listeners, the group's
// Kafka (prefix) and the sections in extra.
func haConfig(t *testing.T, broker, prefix, name, extra string) *config.Config {
	t.Helper()
	y := fmt.Sprintf("wal: {dir: %q, segment_size: 1MiB, sync: shipped}\nhttp: {listen: \"127.0.0.1:0\"}\n"+
		"kafka: {brokers: [%q], topic_prefix: %s, linger: 5ms}\nha: {name: %s, lease: 3s}\n%s", t.TempDir(), broker, prefix, name, extra)
	cfg, err := config.Parse([]byte(y), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func (r *running) role() string { return r.d.Positions().Role }

// postKeyed posts body with an Idempotency-Key and returns the status, the
// Walship-Leader and Idempotency-Replayed headers and the body.
func postKeyed(t *testing.T, addr, key, body string) (code int, leader, replayed, answer string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/append", strings.NewReader(body))
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Walship-Leader"), resp.Header.Get("Idempotency-Replayed"), string(b)
}

func rows(from, n int) string {
	var b strings.Builder
	for i := from; i < from+n; i++ {
		fmt.Fprintf(&b, `{"table":"public.t","op":"c","key":{"id":%d},"after":{"id":%d}}`+"\n", i, i)
	}
	return b.String()
}

// TestHATakeoverKeepsHistory: two members of a group; the leader ships,
// the follower keeps an identical log and answers writes with 503 naming
// the leader. When the leader stops, the follower takes over: a client's
// retry of a keyed request gets the original LSNs, new writes continue the
// same LSNs, and the ordered topic holds every LSN exactly once. The old
// leader, started again, rejoins as a follower and catches up.
func TestHATakeoverKeepsHistory(t *testing.T) {
	t.Parallel()
	kc, err := kafkatest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	src := "source:\n  http: {listen: \"127.0.0.1:0\"}\n"
	cfgA := haConfig(t, kc.Addr, "hg", "a", src)
	cfgB := haConfig(t, kc.Addr, "hg", "b", src)

	a := start(t, cfgA)
	waitFor(t, "a leads", func() bool { return a.role() == RoleLeader })
	b := start(t, cfgB)
	defer func() { b.stop(t) }()
	if got := b.role(); got != RoleFollower {
		t.Fatalf("second member: role %q, want follower", got)
	}

	code, _, _, first := postKeyed(t, a.d.Addr("source.http"), "import-1", rows(1, 20))
	if code != 200 {
		t.Fatalf("keyed post to the leader: %d %s", code, first)
	}
	code, _, _, _ = postKeyed(t, a.d.Addr("source.http"), "", rows(100, 30))
	if code != 200 {
		t.Fatalf("post to the leader: %d", code)
	}
	waitFor(t, "b knows a leads", func() bool { return b.d.Positions().HA.Leader == "a" })
	code, leader, _, msg := postKeyed(t, b.d.Addr("source.http"), "", rows(500, 1))
	if code != http.StatusServiceUnavailable || leader != "a" {
		t.Fatalf("post to the follower: %d, Walship-Leader %q, want 503 naming a: %s", code, leader, msg)
	}
	endA := a.d.wal.Durable()
	waitFor(t, "the follower has the leader's log", func() bool { return b.d.wal.Durable() == endA })

	a.stop(t)
	waitFor(t, "b takes over", func() bool { return b.role() == RoleLeader })
	code, _, replayed, again := postKeyed(t, b.d.Addr("source.http"), "import-1", rows(1, 20))
	if code != 200 || replayed == "" || again != first {
		t.Fatalf("retry against the new leader: %d, replayed %q:\n%s\nwant the original answer:\n%s", code, replayed, again, first)
	}
	code, _, _, next := postKeyed(t, b.d.Addr("source.http"), "", rows(1000, 1))
	var ack struct {
		LSN uint64 `json:"lsn"`
	}
	if code != 200 || json.Unmarshal([]byte(strings.TrimSpace(next)), &ack) != nil || ack.LSN != endA+1 {
		t.Fatalf("first write to the new leader: %d %q, want LSN %d", code, next, endA+1)
	}
	end := b.d.wal.Durable()

	// Every LSN once, in order, in the ordered topic (committed records).
	recs := readCommitted(t, kc.Addr, kafkawire.OrderedTopic("hg"), int(end))
	for i, r := range recs {
		if got := header(r, "walship.lsn"); got != fmt.Sprint(i+1) {
			t.Fatalf("ordered topic record %d has LSN %s, want %d", i, got, i+1)
		}
	}

	a = start(t, cfgA)
	defer func() { a.stop(t) }()
	waitFor(t, "the old leader rejoins as a follower and catches up", func() bool {
		return a.role() == RoleFollower && a.d.wal.Durable() == end
	})
	if ha := b.d.Positions().HA; ha == nil || ha.Leader != "b" || ha.Takeovers != 1 {
		t.Fatalf("b's view of the group: %+v", ha)
	}
}

// readCommitted reads n records of partition 0 of topic, read_committed.
func readCommitted(t *testing.T, broker, topic string, n int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), levelWait)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d records of %s", len(out), n, topic)
		}
		fs.EachRecord(func(r *kgo.Record) { out = append(out, r) })
	}
	// These tests write inserts only: no tombstones repeat an LSN.
	return out[:n]
}

func header(r *kgo.Record, k string) string {
	for _, h := range r.Headers {
		if h.Key == k {
			return string(h.Value)
		}
	}
	return ""
}

// TestHALossReported: a leader confirms to PostgreSQL what its log holds
// (wal.sync local) and its host is lost before it ships: here the lost
// confirmation is made by advancing the slot past transactions no member
// has. The member that takes over finds that range, reports it (the
// positions, the status page, the metric) and `walship ha check` names it
// until acknowledged.
func TestHALossReported(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn, kc, src := pgGroup(t)
	m1 := leadAndCapture(t, conn, syncAt(haConfig(t, kc.Addr, "hl", "m1", src), "local"))
	m1.stop(t)

	// What m1 "confirmed and lost": three more transactions that were
	// durable in m1's log (its last renewal allowed confirming up to LSN
	// 8) and never shipped, the slot advanced past them. m1's host is
	// gone: its last word in the lease topic says so.
	cl, err := kgo.NewClient(kgo.SeedBrokers(kc.Addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	last := `{"member":"m1","term":99,"lease_ms":1000,"info":{"log_lsn":8,"source_confirmed":0,"shipped":5}}`
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "hl.ha", Key: []byte("lease"), Value: []byte(last)}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := conn.Exec(ctx, "INSERT INTO t VALUES ($1)", 100+i); err != nil {
			t.Fatal(err)
		}
	}
	var target string
	if err := conn.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&target); err != nil {
		t.Fatal(err)
	}
	targetLSN, err := pglogrepl.ParseLSN(target)
	if err != nil {
		t.Fatal(err)
	}
	// The slot advances only as far as the server has flushed its WAL.
	var throughLSN pglogrepl.LSN
	waitFor(t, "the slot advanced past the three transactions", func() bool {
		var through string
		if err := conn.QueryRow(ctx, "SELECT end_lsn::text FROM pg_replication_slot_advance('walship', $1::pg_lsn)", target).Scan(&through); err != nil {
			t.Fatal(err)
		}
		throughLSN, _ = pglogrepl.ParseLSN(through)
		return throughLSN >= targetLSN
	})

	cfg2 := syncAt(haConfig(t, kc.Addr, "hl", "m2", src), "local")
	m2 := start(t, cfg2)
	defer m2.stop(t)
	waitFor(t, "m2 leads", func() bool { return m2.role() == RoleLeader })
	loss := m2.d.Positions().HA.Loss
	if loss == nil || loss.Through != change.FormatSourceLSN(uint64(throughLSN)) || loss.Member != "m2" {
		t.Fatalf("loss report %+v, want one through %s", loss, change.FormatSourceLSN(uint64(throughLSN)))
	}
	if !strings.Contains(get(t, "http://"+m2.d.Addr("http")+"/status.json"), "transactions lost at takeover") {
		t.Fatal("the status page does not warn of the loss")
	}
	waitFor(t, "walship_ha_lost_ranges 1", func() bool {
		return scrape(t, "http://"+m2.d.Addr("http")+"/metrics")["walship_ha_lost_ranges"] == 1
	})
	// The lost transactions are lost; capture goes on after them.
	if _, err := conn.Exec(ctx, "INSERT INTO t VALUES (200)"); err != nil {
		t.Fatal(err)
	}
	var ids []int64
	waitFor(t, "m2 captures a new transaction", func() bool {
		ids = capturedIDs(t, m2.d)
		return len(ids) > 0 && ids[len(ids)-1] == 200
	})
	if want := []int64{0, 1, 2, 3, 4, 200}; fmt.Sprint(ids) != fmt.Sprint(want) {
		t.Fatalf("m2's log holds ids %v, want %v", ids, want)
	}
	got, err := HALosses(ctx, cfg2, false)
	if err != nil || len(got) != 1 || got[0].Through != loss.Through || got[0].After != loss.After {
		t.Fatalf("HALosses: %+v, %v; want [%+v]", got, err, *loss)
	}
	if _, err := HALosses(ctx, cfg2, true); err != nil {
		t.Fatal(err)
	}
	if got, err := HALosses(ctx, cfg2, false); err != nil || len(got) != 0 {
		t.Fatalf("after acknowledging: %+v, %v", got, err)
	}
}

// pgGroup starts PostgreSQL with a table t and a broker for a group whose
// members capture t; src is their source section.
func pgGroup(t *testing.T) (conn *pgx.Conn, kc *kafkatest.Cluster, src string) {
	t.Helper()
	pg := pgtest.Start(t, pgtest.WithoutFsync())
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pg.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(ctx) })
	if _, err := conn.Exec(ctx, "CREATE TABLE t (id int PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	if kc, err = kafkatest.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kc.Close)
	src = fmt.Sprintf("source:\n  postgres: {dsn: %q, snapshot: never, heartbeat: 1h, status_interval: 50ms}\n", pg.DSN("postgres"))
	return conn, kc, src
}

// syncAt sets cfg's wal.sync.
func syncAt(cfg *config.Config, level string) *config.Config {
	cfg.WAL.Sync = level
	return cfg
}

// leadAndCapture starts the first member of a pgGroup, waits until it
// leads and streams, inserts ids 0 to 4 and waits until they are shipped.
func leadAndCapture(t *testing.T, conn *pgx.Conn, cfg *config.Config) *running {
	t.Helper()
	ctx := context.Background()
	m := start(t, cfg)
	waitFor(t, cfg.HA.Name+" leads", func() bool { return m.role() == RoleLeader })
	waitFor(t, "the slot streaming", func() bool {
		var n int
		err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'walship' AND active").Scan(&n)
		return err == nil && n == 1
	})
	for i := range 5 {
		if _, err := conn.Exec(ctx, "INSERT INTO t VALUES ($1)", i); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, cfg.HA.Name+" captured and shipped five transactions", func() bool {
		return m.d.wal.Durable() >= 5 && m.d.kafkaShipped.Load() == m.d.wal.Durable()
	})
	return m
}

// TestHATakeoverWithPostgresNoLoss: a takeover of a PostgreSQL source's
// group reports no loss when nothing was lost (the previous term's last
// renewal allows no more than the group's log holds, whatever the slot's
// confirmed position says), and the new leader goes on capturing, each
// transaction once.
func TestHATakeoverWithPostgresNoLoss(t *testing.T) {
	t.Parallel()
	for _, level := range []string{"shipped", "local"} {
		t.Run(level, func(t *testing.T) { takeoverWithoutLoss(t, level) })
	}
}

// takeoverWithoutLoss is TestHATakeoverWithPostgresNoLoss at one level.
func takeoverWithoutLoss(t *testing.T, level string) {
	ctx := context.Background()
	conn, kc, src := pgGroup(t)
	m1 := leadAndCapture(t, conn, syncAt(haConfig(t, kc.Addr, "hn", "m1", src), level))
	m2 := start(t, syncAt(haConfig(t, kc.Addr, "hn", "m2", src), level))
	m1.stop(t)
	waitFor(t, "m2 leads", func() bool { return m2.role() == RoleLeader })
	if _, err := conn.Exec(ctx, "INSERT INTO t VALUES (200)"); err != nil {
		t.Fatal(err)
	}
	var ids []int64
	waitFor(t, "m2 captures a new transaction", func() bool {
		ids = capturedIDs(t, m2.d)
		return len(ids) > 0 && ids[len(ids)-1] == 200
	})
	if want := []int64{0, 1, 2, 3, 4, 200}; fmt.Sprint(ids) != fmt.Sprint(want) {
		t.Fatalf("%s: m2's log holds ids %v, want %v", level, ids, want)
	}
	if loss := m2.d.Positions().HA.Loss; loss != nil {
		t.Fatalf("%s: a loss reported where none happened: %+v", level, *loss)
	}
	m2.stop(t)
}

// capturedIDs returns the id of every insert in d's log, in log order.
func capturedIDs(t *testing.T, d *Daemon) []int64 {
	t.Helper()
	r, err := d.wal.NewReader(d.wal.FirstLSN(), false)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var ids []int64
	for {
		txn, err := r.Next(context.Background())
		if err == io.EOF {
			return ids
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range txn.Changes {
			if v, ok := c.After.Get("id"); ok {
				id, _ := v.Int()
				ids = append(ids, id)
			}
		}
	}
}

// TestHAFollowerTrimsItsLog: a follower removes the segments the leader's
// log no longer holds (what every sink has stored), so that its log does
// not keep the whole history; it keeps its last transaction, and it takes
// over with a log that continues at the same LSNs.
func TestHAFollowerTrimsItsLog(t *testing.T) {
	t.Parallel()
	kc, err := kafkatest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	src := "source:\n  http: {listen: \"127.0.0.1:0\"}\n"
	cfgA := haConfig(t, kc.Addr, "trim", "a", src)
	cfgB := haConfig(t, kc.Addr, "trim", "b", src)
	a := start(t, cfgA)
	waitFor(t, "a leads", func() bool { return a.role() == RoleLeader })
	b := start(t, cfgB)
	defer func() { b.stop(t) }()

	// Rows of about 1 KiB: a request of 1000 fills a 1 MiB segment, and
	// the leader's retention removes what Kafka has stored.
	pad := strings.Repeat("x", 1000)
	for i := 0; a.d.wal.FirstLSN() == 1; i++ {
		if i > 50 {
			t.Fatalf("the leader's log still starts at LSN 1 after %d requests of 1 MiB", i)
		}
		var body strings.Builder
		for j := range 1000 {
			fmt.Fprintf(&body, `{"table":"public.t","op":"c","key":{"id":%d},"after":{"id":%d,"pad":%q}}`+"\n", i*1000+j, i*1000+j, pad)
		}
		if code, _, _, msg := postKeyed(t, a.d.Addr("source.http"), "", body.String()); code != 200 {
			t.Fatalf("post to the leader: %d %s", code, msg)
		}
		if i >= 3 {
			// Four segments: wait for the retention pass (every 2s).
			waitFor(t, "the leader's retention removes shipped segments", func() bool { return a.d.wal.FirstLSN() > 1 })
		}
	}
	endA := a.d.wal.Durable()
	waitFor(t, "the follower copies the log and removes what the leader no longer holds", func() bool {
		return b.d.wal.Durable() == endA && b.d.wal.FirstLSN() > 1
	})
	if fb, fa := b.d.wal.FirstLSN(), a.d.wal.FirstLSN(); fb > fa {
		t.Fatalf("the follower's log starts at LSN %d, after the leader's (%d)", fb, fa)
	}

	a.stop(t)
	waitFor(t, "b takes over", func() bool { return b.role() == RoleLeader })
	code, _, _, next := postKeyed(t, b.d.Addr("source.http"), "", rows(1_000_000, 1))
	var ack struct {
		LSN uint64 `json:"lsn"`
	}
	if code != 200 || json.Unmarshal([]byte(strings.TrimSpace(next)), &ack) != nil || ack.LSN != endA+1 {
		t.Fatalf("first write to the new leader: %d %q, want LSN %d", code, next, endA+1)
	}
}
