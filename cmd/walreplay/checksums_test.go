package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/walship/walship/change"
	"github.com/walship/walship/replica"
	"github.com/walship/walship/wal"
)

// checksumTxn is a transaction holding a check of the whole of public.kv
// (one chunk) with the given source count and hash, its recheck (which
// agrees at the source: settled), and the round's end.
func checksumTxn(round string, rows int64, hash string) []change.Change {
	m := replica.ChecksumMessage{Round: round, Table: "public.kv", Chunk: 1, Attempt: 1,
		Key: []string{"k"}, Columns: []string{"k", "v"}, Rows: rows, Hash: hash}
	chunk, _ := json.Marshal(m)
	m.Attempt = 2
	recheck, _ := json.Marshal(m)
	done, _ := json.Marshal(replica.ChecksumMessage{Round: round, Done: true, Chunks: 1, Tables: []string{"public.kv"}})
	msg := func(b []byte) change.Change {
		return change.Change{Op: change.Message, Message: &change.LogicalMessage{Prefix: replica.ChecksumPrefix, Content: b, Transactional: true}}
	}
	return []change.Change{msg(chunk), msg(recheck), msg(done)}
}

// sourceHash is the count and hash of public.kv after txns, as the source
// would emit them: a replica of txns hashes a probe check (the canonical
// form is the same at the source and in replicas).
func sourceHash(t *testing.T, txns []change.Committed) (int64, string) {
	t.Helper()
	ctx := context.Background()
	url := "sqlite://" + filepath.Join(t.TempDir(), "probe.db")
	app, err := replica.Open(ctx, url, replica.Options{})
	if err != nil {
		t.Fatal(err)
	}
	probe := change.Committed{CommitLSN: txns[len(txns)-1].CommitLSN + 1, CommitTime: txns[len(txns)-1].CommitTime,
		Txn: change.Txn{Header: txns[len(txns)-1].Header, Changes: checksumTxn("probe", 0, "")}}
	if err := app.Apply(ctx, append(append([]change.Committed{}, txns...), probe)); err != nil {
		t.Fatal(err)
	}
	app.Close()
	res, err := replica.ReadChecksums(ctx, url)
	if err != nil || len(res) != 3 {
		t.Fatalf("probe: %v, %d results", err, len(res))
	}
	return res[0].Rows, res[0].Hash
}

// checkedLog is genLog's 40 transactions with a check round after the
// 20th (r1) and after the 40th (r2).
func checkedLog(t *testing.T) []change.Committed {
	t.Helper()
	base := genLog(t, 40)
	r1Rows, r1Hash := sourceHash(t, base[:20])
	r2Rows, r2Hash := sourceHash(t, base)
	w, _, err := wal.Open(wal.Options{Dir: t.TempDir(), Sync: wal.SyncOff})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ctx := context.Background()
	for i, c := range base {
		if _, err := w.Append(ctx, &change.Txn{Header: c.Header, Changes: c.Changes}); err != nil {
			t.Fatal(err)
		}
		var check []change.Change
		switch i {
		case 19:
			check = checksumTxn("r1", r1Rows, r1Hash)
		case 39:
			check = checksumTxn("r2", r2Rows, r2Hash)
		default:
			continue
		}
		h := c.Header
		h.XID += 10000
		if _, err := w.Append(ctx, &change.Txn{Header: h, Changes: check}); err != nil {
			t.Fatal(err)
		}
	}
	r, err := w.NewReader(1, false)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var out []change.Committed
	for range 42 {
		tx, err := r.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, *tx)
	}
	return out
}

func TestRestoreVerifiesChecksums(t *testing.T) {
	ctx := context.Background()
	txns := checkedLog(t)
	f := newFixture(t, txns, 5)

	dst := "sqlite://" + filepath.Join(t.TempDir(), "all.db")
	r := walreplay(t, ctx, "restore", "--archive", f.url, "--to", dst, "--json")
	if r.code != 0 {
		t.Fatalf("restore: %v\n%s", r.err, r.stderr)
	}
	var out restoreJSON
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || out.Result == nil {
		t.Fatalf("--json: %v\n%s", err, r.stdout)
	}
	if c := out.Result.Checksums; c == nil || c.Equal != 2 || c.Different != 0 {
		t.Fatalf("checksums of a faithful restore: %+v, want 2 equal", c)
	}

	// Restore up to the first round, change the destination by hand, then
	// continue: the second round finds the change.
	path := filepath.Join(t.TempDir(), "mid.db")
	dst = "sqlite://" + path
	r = walreplay(t, ctx, "restore", "--archive", f.url, "--to", dst, "--target-lsn", fmt.Sprint(txns[20].CommitLSN))
	if r.code != 0 || !strings.Contains(r.stdout, "checksums: 1 chunks equal, 0 different") {
		t.Fatalf("restore to the first round: exit %d: %v\n%s", r.code, r.err, r.stdout)
	}
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE kv SET v = 'by hand' WHERE k = 3`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	r = walreplay(t, ctx, "restore", "--archive", f.url, "--to", dst, "--continue")
	if r.code != 0 || !strings.Contains(r.stdout, "checksums: 0 chunks equal, 1 different") || !strings.Contains(r.stdout, "DIFFERENT: round r2 public.kv chunk 1") {
		t.Fatalf("restore continued over a changed destination: exit %d: %v\n%s", r.code, r.err, r.stdout)
	}
}
