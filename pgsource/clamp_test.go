package pgsource

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/walship/walship/change"
	"github.com/walship/walship/wal"
)

// TestFarFutureCommitTimeIsClamped: a database commit time beyond
// wal.max_commit_time_skew is not refused (that would stop capture for
// good) but replaced by this host's clock and logged with the xid and the
// database's time; the log accepts the transaction and a later one is not
// dragged into the future. A time within the bound is kept as given.
func TestFarFutureCommitTimeIsClamped(t *testing.T) {
	w, _, err := wal.Open(wal.Options{Dir: t.TempDir(), Sync: wal.SyncOff})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var logs bytes.Buffer
	s := &Source{w: w, log: slog.New(slog.NewTextHandler(&logs, nil))}

	future := time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)
	hdr := change.TxHeader{XID: 42, SourceLSN: 0x16_B374D848, SourceCommitTime: future}
	before := time.Now()
	s.clampCommitTime(&hdr)
	if hdr.SourceCommitTime.Before(before) || hdr.SourceCommitTime.After(time.Now()) {
		t.Fatalf("clamped commit time %v, want this host's clock", hdr.SourceCommitTime)
	}
	for _, want := range []string{"wal.max_commit_time_skew", "xid=42", "16/B374D848", "2099-01-01"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log %q does not name %q", logs.String(), want)
		}
	}
	ins := change.Change{Table: change.Table{Schema: "public", Name: "t"}, Op: change.Insert,
		Key: change.Row{{Name: "id", Value: change.IntValue(1)}}, After: change.Row{{Name: "id", Value: change.IntValue(1)}}}
	tk, err := w.Append(context.Background(), &change.Txn{Header: hdr, Changes: []change.Change{ins}})
	if err != nil {
		t.Fatalf("append of the clamped transaction: %v", err)
	}
	if tk.Time().Year() == 2099 {
		t.Fatalf("recorded commit time %v", tk.Time())
	}

	logs.Reset()
	near := time.Now().Add(time.Minute).UTC()
	hdr = change.TxHeader{XID: 43, SourceCommitTime: near}
	s.clampCommitTime(&hdr)
	if !hdr.SourceCommitTime.Equal(near) || logs.Len() != 0 {
		t.Fatalf("commit time within the bound: got %v (want %v), log %q", hdr.SourceCommitTime, near, logs.String())
	}
}
