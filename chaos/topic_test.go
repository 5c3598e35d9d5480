package chaos

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/walship/walship/change"
	"github.com/walship/walship/kafkawire"
)

// topicLog is the ordered topic as a read_committed consumer sees it, or
// the archive's lineage in an archive-only group (what says which).
type topicLog struct {
	what     string // "" for the ordered topic
	records  int
	lineages map[string]bool
	txns     []change.Committed // assembled, in order
	byCommit map[uint64]int     // commit LSN -> index in txns
	skipped  uint64             // records the assembler dropped as re-sent
	// gaps lists every place where a record's LSN is not the one after the
	// previous record's (tombstones aside): in a group with a
	// transactional sink there must be none.
	gaps []string
}

// readTopic reads the ordered topic from its start, read_committed, until it
// has the transaction ending at LSN through (the group's durable end once
// quiesced) or ctx ends.
func readTopic(ctx context.Context, brokers []string, through uint64) (*topicLog, error) {
	topic := kafkawire.OrderedTopic(topicPrefix)
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.Dialer(directDial),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	out := &topicLog{lineages: map[string]bool{}, byCommit: map[uint64]int{}}
	asm := kafkawire.NewAssembler(0)
	var prev uint64
	for asm.Done() < through {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return out, fmt.Errorf("topic %s: read through LSN %d of %d: %w", topic, asm.Done(), through, ctx.Err())
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) {
				ferr = err
			}
		})
		if ferr != nil && kafkawire.IsFatal(ferr) {
			return out, fmt.Errorf("topic %s: %w", topic, ferr)
		}
		for _, r := range fs.Records() {
			out.records++
			ev, err := kafkawire.Decode(r)
			if err != nil {
				return out, fmt.Errorf("topic %s offset %d: %w", topic, r.Offset, err)
			}
			out.lineages[ev.Lineage] = true
			if !ev.Tombstone {
				if ev.LSN != prev+1 && prev != 0 {
					out.gaps = append(out.gaps, fmt.Sprintf("offset %d: LSN %d after %d", r.Offset, ev.LSN, prev))
				}
				prev = ev.LSN
				if ev.Aborted {
					prev = ev.CommitLSN // a marker stands for its whole range
				}
			}
			txn, complete, err := asm.Add(&ev)
			if err != nil {
				return out, fmt.Errorf("topic %s offset %d: %w", topic, r.Offset, err)
			}
			if complete && !txn.Aborted {
				out.byCommit[txn.CommitLSN] = len(out.txns)
				out.txns = append(out.txns, txn)
			}
		}
	}
	out.skipped = asm.Skipped
	return out, nil
}

// name is what the failure messages call the history: the topic or the
// archive.
func (tl *topicLog) name() string {
	if tl.what == "" {
		return "topic"
	}
	return tl.what
}

// eventRows returns the ids of the public.events rows a transaction
// inserts, in order ("" for other changes).
func eventRows(t *change.Committed) []string {
	var ids []string
	for i := range t.Changes {
		c := &t.Changes[i]
		if c.Table.Name != "events" || c.Table.Schema != "public" {
			continue
		}
		for _, col := range c.After {
			if s, ok := col.Value.Text(); ok && col.Name == "id" {
				ids = append(ids, s)
			}
		}
	}
	return ids
}

// checkKcat reads the ordered topic with kcat (librdkafka, an independent
// client), read_committed, and checks that it sees the records the suite's
// reader saw: the group's transactional topic is readable by stock
// clients, and what they read is what was checked.
func checkKcat(t *testing.T, s *servers, tl *topicLog) {
	t.Helper()
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		t.Fatal("kcat not found: run scripts/deps.sh (Debian package kcat)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	name, args := s.directCommand(kcat, "-C", "-b", strings.Join(s.brokers, ","), "-t", kafkawire.OrderedTopic(topicPrefix), "-o", "beginning", "-e", "-q",
		"-X", "isolation.level=read_committed", "-f", "%h\n")
	out, err := exec.CommandContext(ctx, name, args...).Output()
	if err != nil {
		t.Fatalf("kcat: %v", err)
	}
	lines := strings.Count(string(out), "\n")
	if lines != tl.records {
		t.Errorf("kcat read %d committed records of the ordered topic, the suite's reader %d", lines, tl.records)
	}
	if !strings.Contains(string(out), "walship.lsn=") {
		t.Errorf("kcat's records carry no walship.lsn header:\n%.300s", out)
	}
}

// checkOrderedTopic checks what the group's order rests on with several
// brokers: the ordered topic has one partition, replicated to every broker.
func checkOrderedTopic(ctx context.Context, t *testing.T, s *servers) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.brokers...), kgo.Dialer(directDial))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	topic := kafkawire.OrderedTopic(topicPrefix)
	td, err := kadm.NewClient(cl).ListTopics(ctx, topic)
	if err != nil {
		t.Fatalf("describe %s: %v", topic, err)
	}
	d, ok := td[topic]
	if !ok || d.Err != nil {
		t.Fatalf("describe %s: %v", topic, d.Err)
	}
	if len(d.Partitions) != 1 {
		t.Errorf("ordered topic %s has %d partitions, want 1", topic, len(d.Partitions))
	}
	for _, p := range d.Partitions {
		if len(p.Replicas) != numBrokers || len(p.ISR) != numBrokers {
			t.Errorf("ordered topic %s partition %d: replicas %v, in-sync %v; want all %d brokers", topic, p.Partition, p.Replicas, p.ISR, numBrokers)
		}
	}
}
