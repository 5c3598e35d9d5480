package kafkasink

import (
	"testing"
	"time"

	"github.com/walship/walship/kafkasink/kafkatest"
)

// waitStats polls the sink's Stats until ok holds or within passes.
func waitStats(t *testing.T, s *Sink, within time.Duration, what string, ok func(Stats) bool) Stats {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		st := s.Stats()
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v (stats %+v)", what, within, st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestBrokersDownFromStart: a sink started while no broker is reachable
// reports the brokers down with the connection error, and its lag in
// seconds is the age of the oldest transaction not shipped and grows,
// although it has read nothing yet; once the brokers are back they are up,
// everything is shipped and the lag is 0.
func TestBrokersDownFromStart(t *testing.T) {
	c, proxy, err := kafkatest.StartBehindProxy()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close(); c.Close() })
	proxy.Down()
	e := newEnv(t)
	wl := kafkatest.NewWorkload(7)
	e.append(wl, 20)
	firstCommit := e.walTxns()[0].CommitTime
	s, err := New(Options{Brokers: []string{proxy.Addr}, CheckpointInterval: 10 * time.Millisecond}, e.w, e.ckpts, "L1")
	if err != nil {
		t.Fatal(err)
	}
	runSink(t, s)
	st := waitStats(t, s, 60*time.Second, "brokers reported down", func(st Stats) bool {
		return st.Brokers.Known && !st.Brokers.Up && st.Brokers.LastError != ""
	})
	if st.LagRecords == 0 {
		t.Fatalf("no lag records while nothing is shipped: %+v", st)
	}
	// The lag is measured from the oldest unshipped commit: at least its
	// age when sampled, and it keeps growing while the brokers are down.
	if min := time.Since(firstCommit).Seconds() - 1; st.LagSeconds < min {
		t.Fatalf("lag %vs, want at least the age of the oldest pending commit (%vs)", st.LagSeconds, min)
	}
	first := st.LagSeconds
	waitStats(t, s, 60*time.Second, "lag grows while the brokers are down", func(st Stats) bool { return st.LagSeconds > first+1 })

	if err := proxy.Up(); err != nil {
		t.Fatal(err)
	}
	want := e.walTxns()
	waitAcked(t, s, want[len(want)-1].CommitLSN, 60*time.Second)
	st = waitStats(t, s, 60*time.Second, "brokers reported up", func(st Stats) bool { return st.Brokers.Up })
	if st.LagRecords != 0 || st.LagSeconds != 0 || st.Brokers.LastError == "" {
		t.Fatalf("after recovery: %+v", st)
	}
}
