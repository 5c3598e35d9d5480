package kafkawire

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// PositionsTopic is the compacted topic on which each named `walship
// consume` reports what it has applied (the replication level applied
// counts it): "<prefix>.positions", one partition, record key the
// consumer's name, value an AppliedPosition.
func PositionsTopic(prefix string) string { return prefix + ".positions" }

// AppliedPosition is the value of a PositionsTopic record: the commit LSN
// of the last transaction the replica has applied (committed with its
// position), and when the consumer reported it.
type AppliedPosition struct {
	LSN  uint64    `json:"lsn"`
	Time time.Time `json:"time"`
}

// Encode returns the record value.
func (p AppliedPosition) Encode() []byte {
	b, _ := json.Marshal(p) // cannot fail: a number and a time
	return b
}

// DecodeAppliedPosition decodes a PositionsTopic record value.
func DecodeAppliedPosition(b []byte) (AppliedPosition, error) {
	var p AppliedPosition
	if err := json.Unmarshal(b, &p); err != nil {
		return p, fmt.Errorf("kafkawire: applied position %q: %w", b, err)
	}
	return p, nil
}

// EnsurePositionsTopic creates topic as a compacted topic of one partition
// (only the latest position of each consumer matters) if it does not
// exist.
func EnsurePositionsTopic(ctx context.Context, adm *kadm.Client, topic string) error {
	compact := "compact"
	resp, err := adm.CreateTopic(ctx, 1, -1, map[string]*string{"cleanup.policy": &compact}, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("kafkawire: create topic %s: %w", topic, err)
	}
	return nil
}

// WatchAppliedPositions reads topic (a PositionsTopic) from its start, and
// then as it grows, until ctx ends (returning nil), calling report with
// each record's consumer name and applied LSN in topic order. opts are the
// client's connection options (ClientOptions). It creates the topic if
// absent, retrying while the brokers cannot be reached; broker failures
// later are retried by the client. A malformed record is passed to bad
// and skipped: it can only delay what waits for a position.
func WatchAppliedPositions(ctx context.Context, opts []kgo.Opt, topic string, report func(name string, lsn uint64), bad func(offset int64, err error)) error {
	opts = append(append([]kgo.Opt{}, opts...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(100*time.Millisecond))
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("kafkawire: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	for EnsurePositionsTopic(ctx, adm, topic) != nil {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(200 * time.Millisecond):
		}
	}
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		fs.EachRecord(func(r *kgo.Record) {
			p, err := DecodeAppliedPosition(r.Value)
			if err != nil {
				bad(r.Offset, err)
				return
			}
			report(string(r.Key), p.LSN)
		})
	}
}
