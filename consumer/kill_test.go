package consumer

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/walship/walship/change"
	"github.com/walship/walship/checkpoint"
	"github.com/walship/walship/kafkasink"
	"github.com/walship/walship/kafkasink/kafkatest"
	"github.com/walship/walship/kafkawire"
	"github.com/walship/walship/vfs"
	"github.com/walship/walship/wal"
)

const childEnv = "WALSHIP_KAFKA_TEST_CHILD"

// childMain runs a child process of TestKilledManyTimes:
//
//	run:     the primary — appends the deterministic workload to the WAL
//	         (resuming after the transactions already there) while the Kafka
//	         sink ships it; like `walship run` with a source.
//	consume: the replica daemon — like `walship consume`.
//
// Both run until killed.
func childMain(role string) int {
	ctx := context.Background()
	brokers := strings.Split(os.Getenv("BROKERS"), ",")
	fail := func(err error) int { fmt.Fprintln(os.Stderr, role+":", err); return 1 }
	switch role {
	case "run":
		dir := os.Getenv("DIR")
		total, _ := strconv.Atoi(os.Getenv("TOTAL"))
		w, err := openWAL(dir)
		if err != nil {
			return fail(err)
		}
		ck, err := checkpoint.Open(ctx, vfs.Default, filepath.Join(dir, "ckpt"), checkpoint.Options{})
		if err != nil {
			return fail(err)
		}
		s, err := kafkasink.New(kafkasink.Options{Brokers: brokers, Linger: time.Millisecond, CheckpointInterval: 20 * time.Millisecond}, w, ck, "L1")
		if err != nil {
			return fail(err)
		}
		errc := make(chan error, 1)
		go func() { errc <- s.Run(ctx) }()
		// Count what is there, regenerate it, append the rest.
		rd, err := w.NewReader(1, false)
		if err != nil {
			return fail(err)
		}
		have := 0
		for {
			if _, err := rd.Next(ctx); err != nil {
				break
			}
			have++
		}
		rd.Close()
		wl := kafkatest.NewWorkload(21)
		wl.NoKinds = true
		for i := 0; i < total; i++ {
			txn := wl.Next()
			if i < have {
				continue
			}
			if _, err := w.Append(ctx, &txn); err != nil {
				return fail(err)
			}
			time.Sleep(3 * time.Millisecond)
		}
		return fail(<-errc)
	case "consume":
		c, err := New(ctx, Options{Brokers: brokers, ReplicaURL: os.Getenv("URL"), Lineage: "L1", Group: "kill",
			InstanceID: "replica-1", SessionTimeout: time.Second, MaxBatchTxns: 50})
		if err != nil {
			return fail(err)
		}
		return fail(c.Run(ctx))
	}
	return fail(fmt.Errorf("unknown role"))
}

type child struct {
	cmd *exec.Cmd
	out *strings.Builder
}

func spawn(t *testing.T, role string, env ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append(env, childEnv+"="+role)...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return &child{cmd, &out}
}

func (c *child) kill() string {
	c.cmd.Process.Kill() // SIGKILL
	c.cmd.Wait()
	return c.out.String()
}

// TestKilledManyTimes SIGKILLs the primary (WAL + sink) and the consumer
// many times while the workload runs; afterwards the replica equals the WAL
// applied directly and walship_applied counts each source transaction once.
func TestKilledManyTimes(t *testing.T) {
	kc := startCluster(t)
	dir := t.TempDir()
	url := "sqlite://" + filepath.Join(dir, "replica.db")
	const total = 1500
	env := []string{"BROKERS=" + kc.Addr, "DIR=" + dir, "TOTAL=" + strconv.Itoa(total), "URL=" + url}
	run := spawn(t, "run", env...)
	cons := spawn(t, "consume", env...)
	defer func() { run.kill(); cons.kill() }()
	rng := rand.New(rand.NewPCG(5, 6))
	kills := 0
	for i := range 16 {
		time.Sleep(time.Duration(150+rng.IntN(450)) * time.Millisecond)
		if i%2 == 0 {
			if out := run.kill(); strings.Contains(out, "panic") {
				t.Fatalf("primary output:\n%s", out)
			}
			run = spawn(t, "run", env...)
		} else {
			if out := cons.kill(); strings.Contains(out, "panic") {
				t.Fatalf("consumer output:\n%s", out)
			}
			cons = spawn(t, "consume", env...)
		}
		kills++
	}
	// Let both finish: the WAL reaches total transactions, the replica
	// its last commit.
	// The deadline is for progress, not for the whole: a loaded machine
	// (two suites at once) slows every fsync of the primary's appends.
	var txns []change.Committed
	deadline, had := time.Now().Add(60*time.Second), 0
	for {
		txns = readOnly(t, dir)
		if len(txns) == total {
			break
		}
		if len(txns) > had {
			deadline, had = time.Now().Add(60*time.Second), len(txns)
		}
		if time.Now().After(deadline) {
			t.Fatalf("WAL has %d of %d transactions, none added for 60 s; primary output:\n%s", len(txns), total, run.out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	last := txns[len(txns)-1].CommitLSN
	for {
		_, lsn, _ := dump(t, url)
		if lsn == last {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica at %d, want %d; consumer output:\n%s\nprimary output:\n%s", lsn, last, cons.out, run.out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	cons.kill()
	run.kill()
	want := "sqlite://" + filepath.Join(dir, "want.db")
	applyDirect(t, want, txns)
	sameReplica(t, url, want, txns)
	t.Logf("%d SIGKILLs, %d transactions, %d records in the topic", kills, len(txns), topicEnd(t, kc.Addr))
}

func readOnly(t *testing.T, dir string) []change.Committed {
	t.Helper()
	l, _, err := wal.OpenReadOnly(vfs.Default, filepath.Join(dir, "wal"))
	if err != nil {
		return nil // not created yet
	}
	defer l.Close()
	rd, err := l.NewReader(1, false)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	var out []change.Committed
	for {
		txn, err := rd.Next(context.Background())
		if err != nil {
			return out
		}
		out = append(out, *txn)
	}
}

func topicEnd(t *testing.T, addr string) int64 {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	topic := kafkawire.OrderedTopic("walship")
	offs, err := kadm.NewClient(cl).ListEndOffsets(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	o, _ := offs.Lookup(topic, 0)
	return o.Offset
}
