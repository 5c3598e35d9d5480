package daemon

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/walship/walship/change"
)

// TestRunWALOverLimitOnStatus: with wal.max_bytes exceeded (a sink holds
// every segment, retention_policy keep) /readyz is 503 naming the WAL, and
// /status.json says the same: the WAL's state is critical with the same
// reason, and a warning names it. Released, both return to ok.
func TestRunWALOverLimitOnStatus(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, "")
	cfg.WAL.MaxBytes = 2 << 20
	r := start(t, cfg)
	defer r.stop(t)
	addr := r.d.Addr("http")
	ctx := context.Background()
	if err := r.d.sinkCkpts.Register("held"); err != nil {
		t.Fatal(err)
	}
	waitObserved(t, addr, "wal", "wal ok", func(o observed) bool {
		return o.code == 200 && o.snap.WAL != nil && o.snap.WAL.State == "ok" && !hasWarning(o.snap, "wal")
	})
	big := change.TextValue(strings.Repeat("y", 4000))
	var last uint64
	for i := range 1500 {
		txn := change.Txn{Changes: []change.Change{{Table: change.Table{Schema: "public", Name: "t"}, Op: change.Insert,
			After: change.Row{{Name: "id", Value: change.IntValue(int64(i))}, {Name: "v", Value: big}}}}}
		lsn, err := r.d.wal.AppendAsync(ctx, &txn)
		if err != nil {
			t.Fatal(err)
		}
		last = lsn.Last
	}
	if err := r.d.wal.Wait(ctx, last); err != nil {
		t.Fatal(err)
	}
	const reason = "wal.max_bytes exceeded"
	o := waitObserved(t, addr, "wal", "wal over its bound", func(o observed) bool {
		return o.code == 503 && strings.Contains(o.readyz, "wal: "+reason)
	})
	// The page reads the same check as /readyz: no poll between them.
	if o.snap.WAL == nil || o.snap.WAL.State != "critical" || !strings.HasPrefix(o.snap.WAL.Error, reason) {
		t.Errorf("/readyz says %q but status.json's wal is %+v", o.readyz, o.snap.WAL)
	}
	if !hasWarning(o.snap, "wal") {
		t.Errorf("no warning for the wal: %+v", o.snap.Warnings)
	}

	if err := r.d.sinkCkpts.Set(ctx, "held", last, nil); err != nil {
		t.Fatal(err)
	}
	waitObserved(t, addr, "wal", "wal ok again", func(o observed) bool {
		return o.code == 200 && o.snap.WAL != nil && o.snap.WAL.State == "ok" && o.snap.WAL.Error == "" && !hasWarning(o.snap, "wal")
	})
}

// TestRunArchiveNotReachedNotOK: an object store that accepts connections
// and never answers is not reached yet: the archive dependency is
// "unknown", and the archive sink's state must not be "ok" meanwhile.
func TestRunArchiveNotReachedNotOK(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	defer func() { close(done); l.Close() }()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { <-done; c.Close() }()
		}
	}()
	cfg := testConfig(t, fmt.Sprintf("archive: {url: \"s3://silent/walship\", timeout: 1s, s3: {endpoint: \"http://%s\", region: us-east-1, path_style: true, access_key: ak, secret_key: sk}}\n", l.Addr()))
	r := start(t, cfg)
	defer r.stop(t)
	o := observe(t, r.d.Addr("http"), "archive")
	if o.dep.State == "up" {
		t.Fatalf("archive up against a server that never answers: %+v", o.dep)
	}
	for _, s := range o.snap.Sinks {
		if s.Kind == "archive" && (s.State == "ok" || s.State == "") {
			t.Errorf("archive sink %q while its store is %q", s.State, o.dep.State)
		}
	}
	if o.dep.State == "unknown" {
		// The page draws it amber, and so the sink (status package tests).
		for _, s := range o.snap.Sinks {
			if s.Kind == "archive" && s.State != "unknown" {
				t.Errorf("archive sink %q while its store is not reached yet", s.State)
			}
		}
	}
}
