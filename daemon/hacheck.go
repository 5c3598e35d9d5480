package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/walship/walship/config"
)

// haCheckTimeout bounds `walship ha check`: Kafka unreachable is an error,
// not a hang.
const haCheckTimeout = time.Minute

// HALosses reads the loss reports recorded in the HA group's lease topic
// (by new leaders that found transactions lost: LossReport), oldest term
// first. With acknowledge, it then deletes them (a tombstone per report,
// so the compacted topic forgets them) and returns what it deleted.
func HALosses(ctx context.Context, cfg *config.Config, acknowledge bool) ([]LossReport, error) {
	ctx, cancel := context.WithTimeout(ctx, haCheckTimeout)
	defer cancel()
	if cfg.Kafka == nil {
		return nil, fmt.Errorf("kafka: the HA group's records live in Kafka: configure kafka")
	}
	kopts, err := kafkaClientOptions(cfg.Kafka)
	if err != nil {
		return nil, fmt.Errorf("kafka: %w", err)
	}
	topic := haTopic(cfg.Kafka.TopicPrefix)
	cl, err := kgo.NewClient(kopts...)
	if err != nil {
		return nil, fmt.Errorf("kafka: %w", err)
	}
	defer cl.Close()
	// The last stable offset: the end of what a read_committed reader
	// can read (the lease topic's renewals are transactional).
	ends, err := kadm.NewClient(cl).ListCommittedOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("kafka: the end of %s: %w", topic, err)
	}
	if err := ends.Error(); err != nil {
		if strings.Contains(err.Error(), "UNKNOWN_TOPIC") {
			return nil, nil // no group has run with this prefix
		}
		return nil, fmt.Errorf("kafka: the end of %s: %w", topic, err)
	}
	end, ok := ends.Lookup(topic, 0)
	if !ok || end.Offset <= 0 {
		return nil, nil
	}
	rd, err := kgo.NewClient(append(kopts, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}),
		// Markers too: the topic may end with one.
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())...)
	if err != nil {
		return nil, fmt.Errorf("kafka: %w", err)
	}
	defer rd.Close()
	found := map[string]LossReport{}
	for done := false; !done; {
		fs := rd.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("kafka: reading %s to offset %d: %w", topic, end.Offset, err)
		}
		if err := fs.Err0(); err != nil {
			return nil, fmt.Errorf("kafka: reading %s: %w", topic, err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if r.Offset >= end.Offset-1 {
				done = true
			}
			if r.Attrs.IsControl() {
				return
			}
			k := string(r.Key)
			if !strings.HasPrefix(k, "loss/") {
				return
			}
			if r.Value == nil {
				delete(found, k)
				return
			}
			var lr LossReport
			if json.Unmarshal(r.Value, &lr) == nil {
				found[k] = lr
			}
		})
	}
	out := make([]LossReport, 0, len(found))
	for _, r := range found {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Term < out[j].Term })
	if acknowledge {
		for _, r := range out {
			if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Key: []byte(lossKey(r.Term))}).FirstErr(); err != nil {
				return nil, fmt.Errorf("kafka: acknowledging the loss of term %d: %w", r.Term, err)
			}
		}
	}
	return out, nil
}
