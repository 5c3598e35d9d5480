package kafkawire

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
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
