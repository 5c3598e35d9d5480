package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/walship/walship/change"
	"github.com/walship/walship/checksum"
	"github.com/walship/walship/config"
	"github.com/walship/walship/internal/pgtest"
	"github.com/walship/walship/replica"
)

// TestChecksumRoundOnDemand: POST /v1/checksum on the operator listener
// (with its token) starts a round over the source's tables; the log then
// holds the round, and a replica built from the log finds every chunk
// equal.
func TestChecksumRoundOnDemand(t *testing.T) {
	t.Parallel()
	pg := pgtest.Start(t, pgtest.WithoutFsync())
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pg.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 50) g"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	const token = "0123456789abcdef0123"
	y := fmt.Sprintf("wal: {dir: %q}\nsource:\n  postgres: {dsn: %q, heartbeat: 200ms, status_interval: 100ms}\nchecksum: {chunk_rows: 10, rate: 1000}\nhttp: {listen: \"127.0.0.1:0\", token: %q}\n",
		t.TempDir(), pg.DSN("postgres"), token)
	cfg, err := config.Parse([]byte(y), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, cfg)
	defer r.stop(t)
	url := "http://" + r.d.Addr("http") + "/v1/checksum"
	post := func(tok string) int {
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(`{"table":"public.t"}`))
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post(""); code != http.StatusUnauthorized {
		t.Fatalf("POST without the token: %d, want 401", code)
	}
	if code := post(token); code != http.StatusAccepted {
		t.Fatalf("POST: %d, want 202", code)
	}
	// The round waits for the initial snapshot, then lands in the log.
	var txns []change.Committed
	deadline := time.Now().Add(2 * time.Minute)
	for done := false; !done; {
		if time.Now().After(deadline) {
			t.Fatalf("no round end in the log within 2 minutes; runner %+v", r.d.checksum.Status())
		}
		time.Sleep(100 * time.Millisecond)
		txns = txns[:0]
		rd, err := r.d.wal.NewReader(r.d.wal.FirstLSN(), false)
		if err != nil {
			t.Fatal(err)
		}
		for {
			txn, err := rd.Next(ctx)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			txns = append(txns, *txn)
			for _, c := range txn.Changes {
				if c.Op == change.Message && c.Message.Prefix == replica.ChecksumPrefix && strings.Contains(string(c.Message.Content), `"done":true`) {
					done = true
				}
			}
		}
		rd.Close()
	}
	dst := "sqlite://" + filepath.Join(t.TempDir(), "r.db")
	app, err := replica.Open(ctx, dst, replica.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := app.Apply(ctx, txns); err != nil {
		t.Fatal(err)
	}
	app.Close()
	res, err := replica.ReadChecksums(ctx, dst)
	if err != nil {
		t.Fatal(err)
	}
	rep := checksum.Summarize(res)
	if rep.Exit() != checksum.ExitEqual || len(rep.Tables) != 1 || rep.Tables[0].Chunks != 6 || rep.Tables[0].Equal != 6 {
		t.Fatalf("report: exit %d, %+v", rep.Exit(), rep)
	}
}
