package kafkasink

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/walship/walship/kafkawire"
)

// Defaults.
const (
	DefaultCompression        = "zstd"
	DefaultLinger             = 5 * time.Millisecond
	DefaultMaxBufferedRecords = 10000
	DefaultMaxBatchBytes      = 1 << 20
	DefaultCheckpointInterval = 200 * time.Millisecond
	// CheckpointName is the name of the sink's position in the checkpoint
	// store (registered by New, so it holds back retention).
	CheckpointName = "kafka"
)

// Options configures a Sink. Validate fills in the defaults.
type Options struct {
	Brokers     []string
	TopicPrefix string // default "walship"
	Mode        string // ordered (default) | tables
	// Format of record keys and values: kafkawire.FormatJSON (default) or
	// kafkawire.FormatJSONSchemas.
	Format      string
	Compression string // none | gzip | snappy | lz4 | zstd (default)
	// Linger is how long the producer waits to fill a batch; default 5ms.
	Linger time.Duration
	// MaxBatchBytes caps a produce batch; default 1 MiB.
	MaxBatchBytes int32
	// MaxBufferedRecords bounds the records produced but not yet
	// acknowledged (memory bound and backpressure); default 10000.
	MaxBufferedRecords int
	// Tombstones: send a null-value record after each delete (default true).
	Tombstones *bool
	// Partitions of the topics created in tables mode; default 1. The
	// ordered topic always has exactly one.
	Partitions int32
	// ReplicationFactor of created topics; default -1 (the broker's).
	ReplicationFactor int16
	TLS               kafkawire.TLSOptions
	SASL              kafkawire.SASLOptions
	Database          string // source.db in the envelope
	Name              string // source.name; default TopicPrefix
	// CheckpointInterval is the least time between two durable checkpoint
	// writes; default 200ms.
	CheckpointInterval time.Duration
	// Acked, if set, is called with the watermark each time it advances:
	// every LSN up to it is acknowledged by the brokers with acks=all (the
	// replication level shipped counts it). It is called from the
	// producer's callbacks, possibly concurrently, so a call may bring a
	// position lower than one already given (to be ignored); it must not
	// block.
	Acked func(lsn uint64)
	// TransactionalID, if set, makes the sink produce in Kafka
	// transactions under this id (docs/KAFKA.md, "Transactional mode"):
	// the checkpoint, Acked and Stats.AckedLSN move only over records whose
	// transaction committed, and another producer initialising the same id
	// ends Run with an error matching ErrFenced. Empty (the default):
	// idempotent, non-transactional producing.
	TransactionalID string
	// Gate, if set, is called before each run of records is produced and,
	// with a TransactionalID, before each transaction begins and before
	// each commit. An error stops the sink: the open transaction is
	// aborted and Run returns the error, wrapped. It must be cheap and must
	// not block (HA: the leader's term, ha.Term.Gate).
	Gate func() error
	// TransactionTopic: also produce Debezium's transaction metadata, a
	// BEGIN and an END event per transaction (snapshot chunks and aborted
	// ranges aside), to "<prefix>.transaction" (kafka.transaction_topic).
	TransactionTopic bool
	Logger           *slog.Logger
}

// Validate checks c and fills in defaults. Errors name the config key
// ("kafka.<key>") and are joined.
func (c *Options) Validate() error {
	var errs []error
	fail := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("kafka.%s: %s", key, fmt.Sprintf(format, args...)))
	}
	errs = append(errs, kafkawire.ValidateBrokers(c.Brokers))
	if c.TopicPrefix == "" {
		c.TopicPrefix = kafkawire.DefaultTopicPrefix
	} else if len(c.TopicPrefix) > 200 || kafkawire.SanitizeTopicPart(c.TopicPrefix) != c.TopicPrefix {
		fail("topic_prefix", "%q: want 1-200 characters of [a-zA-Z0-9._-]", c.TopicPrefix)
	}
	switch c.Mode {
	case "":
		c.Mode = kafkawire.ModeOrdered
	case kafkawire.ModeOrdered, kafkawire.ModeTables:
	default:
		fail("mode", "%q: want ordered or tables", c.Mode)
	}
	switch c.Format {
	case "":
		c.Format = kafkawire.FormatJSON
	case kafkawire.FormatJSON, kafkawire.FormatJSONSchemas:
	default:
		fail("format", "%q: want json or json-schemas", c.Format)
	}
	if c.Compression == "" {
		c.Compression = DefaultCompression
	}
	if _, err := compressionCodec(c.Compression); err != nil {
		fail("compression", "%v", err)
	}
	if c.Linger < 0 {
		fail("linger", "%v: must not be negative", c.Linger)
	} else if c.Linger == 0 {
		c.Linger = DefaultLinger
	}
	if c.MaxBatchBytes < 0 {
		fail("max_batch_bytes", "%d: must not be negative", c.MaxBatchBytes)
	} else if c.MaxBatchBytes == 0 {
		c.MaxBatchBytes = DefaultMaxBatchBytes
	}
	if c.MaxBufferedRecords < 0 {
		fail("max_buffered_records", "%d: must not be negative", c.MaxBufferedRecords)
	} else if c.MaxBufferedRecords == 0 {
		c.MaxBufferedRecords = DefaultMaxBufferedRecords
	}
	if c.Tombstones == nil {
		t := true
		c.Tombstones = &t
	}
	if c.Partitions < 0 {
		fail("partitions", "%d: must not be negative", c.Partitions)
	} else if c.Partitions == 0 {
		c.Partitions = 1
	}
	if c.ReplicationFactor == 0 {
		c.ReplicationFactor = -1
	}
	if c.Name == "" {
		c.Name = c.TopicPrefix
	}
	if c.CheckpointInterval <= 0 {
		c.CheckpointInterval = DefaultCheckpointInterval
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	errs = append(errs, c.TLS.Validate(), c.SASL.Validate())
	return errors.Join(errs...)
}

func compressionCodec(name string) (kgo.CompressionCodec, error) {
	switch name {
	case "none":
		return kgo.NoCompression(), nil
	case "gzip":
		return kgo.GzipCompression(), nil
	case "snappy":
		return kgo.SnappyCompression(), nil
	case "lz4":
		return kgo.Lz4Compression(), nil
	case "zstd":
		return kgo.ZstdCompression(), nil
	}
	return kgo.CompressionCodec{}, fmt.Errorf("%q: want none, gzip, snappy, lz4 or zstd", name)
}
