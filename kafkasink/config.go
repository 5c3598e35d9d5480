package kafkasink

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// Modes.
const (
	ModeOrdered = "ordered"
	ModeTables  = "tables"
)

// Defaults.
const (
	DefaultTopicPrefix        = "walship"
	DefaultCompression        = "zstd"
	DefaultLinger             = 5 * time.Millisecond
	DefaultMaxBufferedRecords = 10000
	DefaultMaxBatchBytes      = 1 << 20
	DefaultCheckpointInterval = 200 * time.Millisecond
	// CheckpointName is the name of the sink's position in the checkpoint
	// store (registered by New, so it holds back retention).
	CheckpointName = "kafka"
)

// OrderedTopic is the topic of ordered mode: "<prefix>.ordered". The suffix
// keeps it apart from the tables-mode topics "<prefix>.<schema>.<table>",
// which always have two more dot-separated parts.
func OrderedTopic(prefix string) string { return prefix + ".ordered" }

// TablesTopic is the topic of table t in tables mode:
// "<prefix>.<schema>.<table>", characters Kafka does not allow in topic
// names ([a-zA-Z0-9._-]) replaced by '_' as Debezium does.
func TablesTopic(prefix, schema, table string) string {
	return prefix + "." + sanitizeTopicPart(schema) + "." + sanitizeTopicPart(table)
}

func sanitizeTopicPart(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
			return r
		}
		return '_'
	}, s)
}

// TLSConfig enables TLS to the brokers.
type TLSConfig struct {
	Enabled            bool
	CAFile             string // PEM; default: the system roots
	CertFile, KeyFile  string // client certificate (both or neither)
	InsecureSkipVerify bool
}

// SASLConfig enables SASL authentication.
type SASLConfig struct {
	Mechanism          string // "" (none) | plain | scram-sha-256 | scram-sha-512
	Username, Password string
}

// Config configures a Sink. Validate fills in the defaults.
type Config struct {
	Brokers     []string
	TopicPrefix string // default "walship"
	Mode        string // ordered (default) | tables
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
	TLS               TLSConfig
	SASL              SASLConfig
	Database          string // source.db in the envelope
	Name              string // source.name; default TopicPrefix
	// CheckpointInterval is the least time between two durable checkpoint
	// writes; default 200ms.
	CheckpointInterval time.Duration
	Logger             *slog.Logger
}

// Validate checks c and fills in defaults. Errors name the config key
// ("kafka.<key>") and are joined.
func (c *Config) Validate() error {
	var errs []error
	fail := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("kafka.%s: %s", key, fmt.Sprintf(format, args...)))
	}
	errs = append(errs, validateBrokers(c.Brokers))
	if c.TopicPrefix == "" {
		c.TopicPrefix = DefaultTopicPrefix
	} else if len(c.TopicPrefix) > 200 || sanitizeTopicPart(c.TopicPrefix) != c.TopicPrefix {
		fail("topic_prefix", "%q: want 1-200 characters of [a-zA-Z0-9._-]", c.TopicPrefix)
	}
	switch c.Mode {
	case "":
		c.Mode = ModeOrdered
	case ModeOrdered, ModeTables:
	default:
		fail("mode", "%q: want ordered or tables", c.Mode)
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
	errs = append(errs, c.TLS.validate(), c.SASL.validate())
	return errors.Join(errs...)
}

func validateBrokers(brokers []string) error {
	if len(brokers) == 0 {
		return errors.New("kafka.brokers: required: a list of host:port")
	}
	var errs []error
	for i, b := range brokers {
		if _, port, err := net.SplitHostPort(b); err != nil || port == "" {
			errs = append(errs, fmt.Errorf("kafka.brokers[%d]: %q is not host:port", i, b))
		}
	}
	return errors.Join(errs...)
}

func (t *TLSConfig) validate() error {
	if (t.CertFile == "") != (t.KeyFile == "") {
		return errors.New("kafka.tls.cert_file: cert_file and key_file must be given together")
	}
	return nil
}

func (s *SASLConfig) validate() error {
	switch s.Mechanism {
	case "":
		return nil
	case "plain", "scram-sha-256", "scram-sha-512":
		if s.Username == "" {
			return errors.New("kafka.sasl.username: required with kafka.sasl.mechanism")
		}
		return nil
	}
	return fmt.Errorf("kafka.sasl.mechanism: %q: want plain, scram-sha-256 or scram-sha-512", s.Mechanism)
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

// ClientOptions returns the kgo options for connecting to brokers with
// tlsCfg and saslCfg: seed brokers, TLS dialer, SASL mechanism. The consumer
// package uses it too. Certificate files are read now; an error names the
// config key and the file.
func ClientOptions(brokers []string, tlsCfg TLSConfig, saslCfg SASLConfig) ([]kgo.Opt, error) {
	if err := validateBrokers(brokers); err != nil {
		return nil, err
	}
	if err := errors.Join(tlsCfg.validate(), saslCfg.validate()); err != nil {
		return nil, err
	}
	opts := []kgo.Opt{kgo.SeedBrokers(brokers...)}
	if tlsCfg.Enabled || tlsCfg.CAFile != "" || tlsCfg.CertFile != "" || tlsCfg.InsecureSkipVerify {
		tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: tlsCfg.InsecureSkipVerify}
		if tlsCfg.CAFile != "" {
			pem, err := os.ReadFile(tlsCfg.CAFile)
			if err != nil {
				return nil, fmt.Errorf("kafka.tls.ca_file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("kafka.tls.ca_file: %s: no PEM certificate found", tlsCfg.CAFile)
			}
			tc.RootCAs = pool
		}
		if tlsCfg.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(tlsCfg.CertFile, tlsCfg.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("kafka.tls.cert_file: %s / %s: %w", tlsCfg.CertFile, tlsCfg.KeyFile, err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	switch saslCfg.Mechanism {
	case "plain":
		opts = append(opts, kgo.SASL(plain.Auth{User: saslCfg.Username, Pass: saslCfg.Password}.AsMechanism()))
	case "scram-sha-256":
		opts = append(opts, kgo.SASL(scram.Auth{User: saslCfg.Username, Pass: saslCfg.Password}.AsSha256Mechanism()))
	case "scram-sha-512":
		opts = append(opts, kgo.SASL(scram.Auth{User: saslCfg.Username, Pass: saslCfg.Password}.AsSha512Mechanism()))
	}
	return opts, nil
}
