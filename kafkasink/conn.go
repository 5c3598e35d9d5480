package kafkasink

import (
	"fmt"
	"net"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/walship/walship/kafkawire"
)

// Broker connection health: franz-go retries failed connections and
// writes forever, so the sink watches them to count an outage (Stats) and
// to stop on errors that retrying cannot cure (kafkawire.IsFatal).

// retryHook counts failed broker connections and writes: franz-go retries
// them, and the count shows a broker outage in Stats.
type retryHook struct{ s *Sink }

func (h retryHook) OnBrokerConnect(_ kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	if err != nil {
		h.s.retries.Add(1)
		h.s.connErr.Store(&err)
	} else {
		h.s.connErr.Store(nil)
	}
	h.s.brokers.Fail(err)
}

// fatalConnErr returns the last broker connection error if no connection
// has succeeded since and retrying cannot cure it (bad credentials or
// certificates): franz-go retries those like any other, forever.
func (s *Sink) fatalConnErr() error {
	if p := s.connErr.Load(); p != nil && kafkawire.IsFatal(*p) {
		return fmt.Errorf("kafkasink: connect to the brokers: %w", *p)
	}
	return nil
}

func (h retryHook) OnBrokerWrite(_ kgo.BrokerMetadata, _ int16, _ int, _, _ time.Duration, err error) {
	if err != nil {
		h.s.retries.Add(1)
		h.s.brokers.Fail(err)
	}
}
