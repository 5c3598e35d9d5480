package checksum_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/walship/walship/change"
	"github.com/walship/walship/checksum"
	"github.com/walship/walship/pgsource"
	"github.com/walship/walship/replica"
)

// sourceRepairer repairs through the source directly (the daemon's POST
// /v1/snapshot does the same).
type sourceRepairer struct{ s *pgsource.Source }

func (r sourceRepairer) RepairRange(ctx context.Context, t change.Table, after, hi []string) error {
	_, err := r.s.RequestRepair(ctx, t.String(), after, hi)
	return err
}

// TestRepairMakesReplicasEqual: rows changed, deleted and inserted by hand
// in a chunk of the replicas (SQLite and PostgreSQL; in the PostgreSQL
// replica also a row inserted into a chunk of the text-keyed table) are
// reported; a repair of the differing chunks, through the stream, makes
// the replicas hold the source's rows again: the inserted rows are deleted,
// and the next round finds every chunk equal.
func TestRepairMakesReplicasEqual(t *testing.T) {
	p := newPipe(t)
	ctx := context.Background()
	// A free key inside the second chunk, for the replicas' extra row.
	exec(t, p.dsn, `DELETE FROM acct WHERE id = 170`)
	r := checksum.New(checksum.Options{DSN: p.dsn, ChunkRows: 100, Logger: quiet})
	if _, err := r.Round(ctx, ""); err != nil {
		t.Fatal(err)
	}
	for u, res := range p.waitRound(r.Status().LastRound) {
		if rep := checksum.Summarize(res); rep.Exit() != checksum.ExitEqual {
			t.Fatalf("replica %s before the changes: %+v", u, rep)
		}
	}
	hand := []string{`UPDATE acct SET bal = -1 WHERE id = 150`, `DELETE FROM acct WHERE id = 160`, `INSERT INTO acct (id, bal) VALUES (170, 7)`}
	exec(t, p.pg, append(hand, `INSERT INTO kv VALUES ('B1', 99, 'hand')`)...)
	sq, err := replicaSQLite(p.sqlite)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hand {
		if _, err := sq.ExecContext(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	sq.Close()
	if _, err := r.Round(ctx, ""); err != nil {
		t.Fatal(err)
	}
	got := p.waitRound(r.Status().LastRound)
	different := func(rep checksum.Report) string {
		var out []string
		for _, tb := range rep.Tables {
			for _, d := range tb.Different {
				out = append(out, tb.Table+" "+d.String())
			}
		}
		return strings.Join(out, "; ")
	}
	acct := "public.acct (100, 201]" // 170 is gone at the source: the chunk reaches 201
	if rep := checksum.Summarize(got[p.sqlite]); rep.Exit() != checksum.ExitDifferent || different(rep) != acct {
		t.Fatalf("SQLite replica: exit %d, different %q, want %q", rep.Exit(), different(rep), acct)
	}
	pgRep := checksum.Summarize(got[p.pg])
	if pgRep.Exit() != checksum.ExitDifferent || !strings.HasPrefix(different(pgRep), acct+"; public.kv ") {
		t.Fatalf("PostgreSQL replica: exit %d, different %q, want %q and a kv chunk", pgRep.Exit(), different(pgRep), acct)
	}
	// The PostgreSQL replica's report covers the SQLite replica's chunk.
	n, err := checksum.Repair(ctx, pgRep, sourceRepairer{p.src})
	if err != nil || n != 2 {
		t.Fatalf("Repair: %d chunks, %v; want 2", n, err)
	}
	for _, u := range []string{p.sqlite, p.pg} {
		waitEqual(t, p, u)
	}
	if _, err := r.Round(ctx, ""); err != nil {
		t.Fatal(err)
	}
	for u, res := range p.waitRound(r.Status().LastRound) {
		if rep := checksum.Summarize(res); rep.Exit() != checksum.ExitEqual {
			t.Fatalf("replica %s after the repair: exit %d, different %q", u, rep.Exit(), different(rep))
		}
		if diff, err := replica.Compare(ctx, p.dsn, u); err != nil || diff != "" {
			t.Fatalf("replica %s after the repair: %v\n%s", u, err, diff)
		}
	}
}

// waitEqual waits until the replica at u holds the source's rows.
func waitEqual(t *testing.T, p *pipe, u string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		diff, err := replica.Compare(context.Background(), p.dsn, u)
		if err != nil {
			t.Fatal(err)
		}
		if diff == "" {
			return
		}
		select {
		case err := <-p.applyErr:
			t.Fatalf("applying the log stopped: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica %s not repaired within 3 minutes:\n%s", u, diff)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestRepairUnderLoad: repairs in small chunks, while a workload
// inserts (also into the chunk being copied, between its watermarks),
// updates and deletes, delete only the rows added by hand to the
// replicas: once the workload stops, a round finds every chunk equal and
// the replicas equal the source.
func TestRepairUnderLoad(t *testing.T) {
	p := newPipeWith(t, func(o *pgsource.Options) { o.SnapshotChunkRows = 30 })
	ctx := context.Background()
	// Sparse keys: concurrent inserts land inside the chunks' ranges.
	exec(t, p.dsn, `CREATE TABLE sparse (id int PRIMARY KEY, v int)`, `INSERT INTO sparse SELECT g * 1000, g FROM generate_series(1, 600) g`)
	for _, u := range []string{p.sqlite, p.pg} {
		waitEqual(t, p, u)
	}
	hand := []string{`INSERT INTO acct (id, bal) VALUES (-2000000, 1), (100500, 2)`, `DELETE FROM acct WHERE id = 77`,
		`INSERT INTO sparse VALUES (1500, 0), (300500, 0), (700000, 0)`, `UPDATE sparse SET v = -1 WHERE id = 5000`}
	exec(t, p.pg, hand...)
	sq, err := replicaSQLite(p.sqlite)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hand {
		if _, err := sq.ExecContext(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	sq.Close()
	stop := make(chan struct{})
	wg := load(t, p.dsn, stop, 7)
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := pgx.Connect(ctx, p.dsn)
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close(ctx)
		rng := rand.New(rand.NewPCG(7, 7))
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			id := 1 + rng.IntN(600000)
			sql := fmt.Sprintf(`INSERT INTO sparse VALUES (%d, 1) ON CONFLICT (id) DO UPDATE SET v = sparse.v + 1`, id)
			if id%3 == 0 {
				sql = fmt.Sprintf(`DELETE FROM sparse WHERE id = %d`, id-id%1000)
			}
			if _, err := c.Exec(ctx, sql); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for _, tb := range []string{"public.acct", "public.sparse"} {
		req, err := p.src.RequestRepair(ctx, tb, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(3 * time.Minute)
		for repairing(p.src, req.ID) {
			if time.Now().After(deadline) {
				st := p.src.Stats()
				t.Fatalf("repair %s not done within 3 minutes: %d chunks, %d rows, %+v", req.ID, st.IncrementalChunks, st.IncrementalRows, p.src.SnapshotRequests())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	close(stop)
	wg.Wait()
	r := checksum.New(checksum.Options{DSN: p.dsn, ChunkRows: 100, Logger: quiet})
	if _, err := r.Round(ctx, ""); err != nil {
		t.Fatal(err)
	}
	for u, res := range p.waitRound(r.Status().LastRound) {
		if rep := checksum.Summarize(res); rep.Exit() != checksum.ExitEqual {
			var b strings.Builder
			rep.Print(&b)
			t.Fatalf("replica %s after the repair: exit %d\n%s", u, rep.Exit(), b.String())
		}
		if diff, err := replica.Compare(ctx, p.dsn, u); err != nil || diff != "" {
			t.Fatalf("replica %s after the repair: %v\n%s", u, err, diff)
		}
	}
}

// repairing reports whether request id is still queued or under way.
func repairing(s *pgsource.Source, id string) bool {
	for _, r := range s.SnapshotRequests() {
		if r.ID == id {
			return true
		}
	}
	return false
}
