package kafkasink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/walship/walship/kafkawire"
)

// Topic administration: the sink creates its topics on first use and
// checks that the ordered topic has exactly one partition.

// topicCache creates topics on first use.
type topicCache struct {
	cfg   *Options
	adm   *kadm.Client
	log   *slog.Logger
	known map[string]bool
	// fatal returns a connection error that retrying cannot cure, or nil.
	fatal func() error
}

// ensure creates topic with partitions if it does not exist, retrying
// while the brokers are unreachable (until ctx ends). For the ordered
// topic (partitions == 1 in ordered mode) an existing topic with more than
// one partition is an error: it would lose the total order.
func (tc *topicCache) ensure(ctx context.Context, topic string, partitions int32) error {
	if tc.known[topic] {
		return nil
	}
	for attempt := 0; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := tc.tryEnsure(actx, topic, partitions)
		cancel()
		if err != nil && tc.fatal != nil {
			if ferr := tc.fatal(); ferr != nil {
				return ferr
			}
		}
		if err == nil {
			tc.known[topic] = true
			return nil
		}
		var fatal *fatalTopicError
		if errors.As(err, &fatal) {
			return err
		}
		if attempt%10 == 0 {
			tc.log.Warn("kafka topic not ready; retrying", "topic", topic, "err", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

type fatalTopicError struct{ err error }

func (e *fatalTopicError) Error() string { return e.err.Error() }
func (e *fatalTopicError) Unwrap() error { return e.err }

func (tc *topicCache) tryEnsure(ctx context.Context, topic string, partitions int32) error {
	resp, err := tc.adm.CreateTopic(ctx, partitions, tc.cfg.ReplicationFactor, nil, topic)
	if err == nil {
		err = resp.Err
	}
	switch {
	case err == nil:
		tc.log.Info("created kafka topic", "topic", topic, "partitions", partitions)
	case errors.Is(err, kerr.TopicAlreadyExists):
	default:
		if kafkawire.IsFatal(err) {
			return &fatalTopicError{fmt.Errorf("kafkasink: create topic %s: %w", topic, err)}
		}
		return fmt.Errorf("kafkasink: create topic %s: %w", topic, err)
	}
	if tc.cfg.Mode != kafkawire.ModeOrdered {
		return nil
	}
	details, err := tc.adm.ListTopics(ctx, topic)
	if err != nil {
		return err
	}
	d, ok := details[topic]
	if !ok || d.Err != nil {
		return fmt.Errorf("kafkasink: describe topic %s: %v", topic, d.Err)
	}
	if n := len(d.Partitions); n != 1 {
		return &fatalTopicError{fmt.Errorf("kafka.mode ordered: topic %s has %d partitions; the total order needs exactly 1", topic, n)}
	}
	return nil
}
