package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/walship/walship/archive"
	"github.com/walship/walship/config"
	"github.com/walship/walship/ha"
)

// haCheckTimeout bounds `walship ha check`: Kafka or the archive
// unreachable is an error, not a hang.
const haCheckTimeout = time.Minute

// lossRecords is where a group keeps its loss reports, next to its lease:
// the lease topic, or the archive of a group without Kafka.
type lossRecords interface {
	record(ctx context.Context, r LossReport) error
	// list returns the reports not yet acknowledged, oldest term first;
	// with acknowledge it then deletes them.
	list(ctx context.Context, acknowledge bool) ([]LossReport, error)
}

// lossKey is the key of a loss report: in the lease topic, and under the
// archive's ha/ prefix.
func lossKey(term int64) string { return "loss/" + strconv.FormatInt(term, 10) }

// HALosses reads the loss reports recorded by the HA group's new leaders
// that found transactions lost (LossReport), oldest term first: in the
// lease topic, or in the archive of a group without Kafka. With
// acknowledge, it then deletes them and returns what it deleted.
func HALosses(ctx context.Context, cfg *config.Config, acknowledge bool) ([]LossReport, error) {
	ctx, cancel := context.WithTimeout(ctx, haCheckTimeout)
	defer cancel()
	switch {
	case cfg.Kafka != nil:
		kopts, err := kafkaClientOptions(cfg.Kafka)
		if err != nil {
			return nil, fmt.Errorf("kafka: %w", err)
		}
		return kafkaLossRecords{kopts: kopts, topic: haTopic(cfg.Kafka.TopicPrefix)}.list(ctx, acknowledge)
	case cfg.Archive != nil:
		ar, err := OpenArchive(ctx, cfg.Archive, nil)
		if err != nil {
			return nil, err
		}
		defer ar.Close()
		return archiveLossRecords{b: ar.Backend()}.list(ctx, acknowledge)
	}
	return nil, errors.New("ha: the HA group's records live in Kafka or in the archive: configure kafka or archive")
}

// kafkaLossRecords keeps loss reports in the lease topic, keyed lossKey
// (the topic is compacted: a tombstone acknowledges one).
type kafkaLossRecords struct {
	kopts []kgo.Opt
	topic string
}

func (k kafkaLossRecords) record(ctx context.Context, r LossReport) error {
	cl, err := kgo.NewClient(k.kopts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	v, _ := json.Marshal(r)
	return cl.ProduceSync(ctx, &kgo.Record{Topic: k.topic, Key: []byte(lossKey(r.Term)), Value: v}).FirstErr()
}

func (k kafkaLossRecords) list(ctx context.Context, acknowledge bool) ([]LossReport, error) {
	kopts, topic := k.kopts, k.topic
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

// archiveLossRecords keeps loss reports in the archive of a group without
// Kafka (ha.ArchiveLease.RecordLoss: ha/loss/<term>); acknowledging one
// deletes it. lease is nil when only reading (walship ha check).
type archiveLossRecords struct {
	b     archive.Backend
	lease *ha.ArchiveLease
}

func (a archiveLossRecords) record(ctx context.Context, r LossReport) error {
	v, _ := json.Marshal(r)
	return a.lease.RecordLoss(ctx, strconv.FormatInt(r.Term, 10), v)
}

func (a archiveLossRecords) list(ctx context.Context, acknowledge bool) ([]LossReport, error) {
	found, err := ha.ArchiveLosses(ctx, a.b)
	if err != nil {
		return nil, err
	}
	out := make([]LossReport, 0, len(found))
	for key, v := range found {
		var r LossReport
		if err := json.Unmarshal(v, &r); err != nil {
			return nil, fmt.Errorf("ha: the archive's loss report %s is not one: %w", key, err)
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Term < out[j].Term })
	if acknowledge {
		for _, r := range out {
			if err := ha.AcknowledgeArchiveLoss(ctx, a.b, strconv.FormatInt(r.Term, 10)); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}
