package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/walship/walship/config"
	"github.com/walship/walship/internal/pgtest"
	"github.com/walship/walship/pgsource"
	"github.com/walship/walship/status"
)

// TestSnapshotEndpoint: POST /v1/snapshot on the operator listener (with
// its token) queues an incremental snapshot that runs to the end, shown
// on /status.json and in the metrics; bad requests get 400 or 404 with
// the reason, and no token 401.
func TestSnapshotEndpoint(t *testing.T) {
	t.Parallel()
	pg := pgtest.Start(t, pgtest.WithoutFsync())
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pg.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	for _, sql := range []string{`CREATE TABLE t (id int PRIMARY KEY, v text)`, `CREATE TABLE other (id int PRIMARY KEY)`,
		`CREATE TABLE nokey (v int)`, `INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 1000) g`} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	conn.Close(ctx)
	const token = "0123456789abcdef0123"
	y := fmt.Sprintf("wal: {dir: %q}\nsource:\n  postgres: {dsn: %q, heartbeat: 200ms, status_interval: 100ms, snapshot: never, "+
		"snapshot_chunk_rows: 100, tables: [public.t, public.nokey]}\nhttp: {listen: \"127.0.0.1:0\", token: %q}\n",
		t.TempDir(), pg.DSN("postgres"), token)
	cfg, err := config.Parse([]byte(y), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, cfg)
	defer r.stop(t)
	// The listener answers before the source has made its publication:
	// wait until it holds both configured tables.
	deadline := time.Now().Add(time.Minute)
	for {
		conn, err := pgx.Connect(ctx, pg.DSN("postgres"))
		if err != nil {
			t.Fatal(err)
		}
		var n int
		err = conn.QueryRow(ctx, `SELECT count(*) FROM pg_publication_tables WHERE pubname = 'walship'`).Scan(&n)
		conn.Close(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the publication holds %d tables after a minute, want 2", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	url := "http://" + r.d.Addr("http")
	post := func(body, tok string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, url+"/v1/snapshot", strings.NewReader(body))
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, c := range []struct {
		body, tok string
		code      int
		says      string
	}{
		{`{"table": "public.t"}`, "", http.StatusUnauthorized, "unauthorized"},
		{`{"table": "public.missing"}`, token, http.StatusNotFound, "no such table"},
		{`{"table": "public.other"}`, token, http.StatusNotFound, "not in the publication"},
		{`{"table": "public.nokey"}`, token, http.StatusBadRequest, "no primary key"},
		{`{"table": "public.t", "where": "nope > 1"}`, token, http.StatusBadRequest, "where clause"},
		{`{"tabel": "public.t"}`, token, http.StatusBadRequest, "body"},
		{`{"table": "public.t", "repair": {"after": ["x"]}}`, token, http.StatusBadRequest, "for key column id"},
		{`{"table": "public.t", "repair": {"hi": ["1", "2"]}}`, token, http.StatusBadRequest, "hi has 2 values"},
		{`{"table": "public.t", "where": "id > 1", "repair": {}}`, token, http.StatusBadRequest, "where must be empty"},
	} {
		if code, body := post(c.body, c.tok); code != c.code || !strings.Contains(body, c.says) {
			t.Errorf("POST %s: %d %s, want %d saying %q", c.body, code, body, c.code, c.says)
		}
	}
	code, body := post(`{"table": "public.t", "where": "id > 100"}`, token)
	var req pgsource.SnapshotRequest
	if code != http.StatusAccepted || json.Unmarshal([]byte(body), &req) != nil || req.Table != "public.t" || req.Where != "id > 100" || req.ID == "" {
		t.Fatalf("POST: %d %s", code, body)
	}
	deadline = time.Now().Add(2 * time.Minute)
	for st := r.d.pg.Stats(); st.IncrementalPending > 0 || st.IncrementalRows < 900; st = r.d.pg.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("incremental snapshot not done: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st := r.d.pg.Stats(); st.IncrementalRows != 900 {
		t.Errorf("copied %d rows, want 900 (id > 100)", st.IncrementalRows)
	}
	sreq, _ := http.NewRequest(http.MethodGet, url+"/status.json", nil)
	sreq.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(sreq)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var snap struct {
		Source *struct{ Incremental *status.Incremental }
	}
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &snap); err != nil || snap.Source == nil || snap.Source.Incremental == nil ||
		snap.Source.Incremental.Rows != 900 || snap.Source.Incremental.Pending != 0 {
		t.Errorf("status.json source: %s", b)
	}
	r.d.pollOnce()
	mreq, _ := http.NewRequest(http.MethodGet, url+"/metrics", nil)
	mreq.Header.Set("Authorization", "Bearer "+token)
	resp, err = http.DefaultClient.Do(mreq)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ = io.ReadAll(resp.Body)
	if !bytes.Contains(b, []byte(`walship_postgres_incremental_snapshot_rows{slot="walship"} 900`)) {
		t.Errorf("metrics lack the incremental snapshot rows:\n%s", b)
	}
}
