// Package config reads walship's YAML configuration file (docs/DESIGN.md §5.4,
// docs/CONFIG.md).
//
// Guarantees:
//   - Unknown keys are errors, never ignored: a misspelt key names its full
//     path and line ("wal.segmnt_size (line 3): unknown key").
//   - ${VAR} and ${VAR:-default} in scalar values are expanded from the
//     environment after parsing, so a variable's value can never change the
//     structure of the file; an unset variable without a default is an
//     error naming the key and the variable. $$ is a literal $.
//   - Validate checks every value and names the bad key; a Config that
//     passed Load is ready to use (defaults filled in).
//
// The reference of every key is docs/CONFIG.md; a test checks that the
// two agree.
//
// Only daemon and cmd read this package; everything else takes Options.
// The daemon translates each section into its component's options (one
// function per component), so a component never depends on the file's
// layout and can be used without it; a test enforces the rule.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/walship/walship/internal/bytesize"
	"github.com/walship/walship/internal/secret"
)

// Config is the whole file. Sections that are absent are nil (or zero) and
// their component is off.
type Config struct {
	WAL     WAL      `yaml:"wal"`
	Source  Source   `yaml:"source"`
	Archive *Archive `yaml:"archive"`
	Kafka   *Kafka   `yaml:"kafka"`
	Replica *Replica `yaml:"replica"`
	// Checksum runs consistency checks in the stream (checksum.go).
	Checksum *Checksum `yaml:"checksum"`
	// Consumer names this walship consume (consumer.name) for the
	// primary's replication level applied.
	Consumer Consumer `yaml:"consumer"`
	HTTP     HTTP     `yaml:"http"`
	// HA makes this walship run a member of a group of standbys: one
	// leads, the others follow (docs/HA.md). nil: a single daemon.
	HA  *HA `yaml:"ha"`
	Log Log `yaml:"log"`
	Lag Lag `yaml:"lag"`

	// Path is the file the config was read from ("" if from bytes).
	Path string `yaml:"-"`
	// lines maps key paths to their lines, for errors found later.
	lines map[string]int
}

// WAL is the local log.
type WAL struct {
	Dir string `yaml:"dir"`
	// Sync is the replication level (off | local | shipped): when a
	// transaction is acknowledged over HTTP and confirmed to PostgreSQL.
	// off also stops the log's fsyncs.
	Sync string `yaml:"sync"`
	// ShippedSinks names the sinks (kafka, archive) whose stored position
	// counts for the level shipped; default every configured one.
	ShippedSinks []string `yaml:"shipped_sinks"`
	// AppliedQuorum is the quorum of named consumers the level applied
	// waits for, as PostgreSQL's synchronous_standby_names:
	// "FIRST n (a, b)" or "ANY n (a, b)".
	AppliedQuorum string        `yaml:"applied_quorum"`
	SegmentSize   ByteSize      `yaml:"segment_size"` // default 64MiB
	Compression   string        `yaml:"compression"`  // none | s2 | zstd
	MinInterval   time.Duration `yaml:"min_interval"` // least time between fsyncs
	// MaxCommitTimeSkew is how far ahead of this host's clock a source
	// commit time may be (wal.Options.MaxCommitTimeSkew); 0 or unset =
	// DefaultMaxCommitTimeSkew.
	MaxCommitTimeSkew time.Duration `yaml:"max_commit_time_skew"`
	// ZeroFill writes zeros over new segments before use (default true):
	// see segment.Options.ZeroFill.
	ZeroFill *bool `yaml:"zero_fill"`
	// MaxBytes bounds the local log; 0 = unbounded. See RetentionPolicy.
	MaxBytes ByteSize `yaml:"max_bytes"`
	// RetentionPolicy says what happens when MaxBytes is reached while a
	// sink still needs the oldest segment: "keep" (default) keeps it and
	// reports the overrun loudly (log, metric, /readyz) until the sink
	// catches up; "drop" removes the oldest segments anyway, logging what
	// the sink lost, and the lagging sink then fails instead of skipping.
	RetentionPolicy string `yaml:"retention_policy"`
}

// Source lists the sources; at least one is required by walship run.
type Source struct {
	Postgres *Postgres   `yaml:"postgres"`
	HTTP     *HTTPSource `yaml:"http"`
}

// Postgres is the logical-replication source.
type Postgres struct {
	DSN         string `yaml:"dsn"`
	Slot        string `yaml:"slot"`
	Publication string `yaml:"publication"`
	// Tables lists the tables to capture: "schema.table" or a mapping
	// with per-table options (PostgresTable); empty: FOR ALL TABLES.
	Tables []PostgresTable `yaml:"tables"`
	// HashSalt is prefixed to the values of hashed columns before
	// hashing (a secret: it never prints).
	HashSalt secret.Secret `yaml:"hash_salt"`
	// MaskString replaces the values of masked columns; default "****".
	MaskString        string        `yaml:"mask_string"`
	Snapshot          string        `yaml:"snapshot"` // initial | never
	SnapshotChunkRows int           `yaml:"snapshot_chunk_rows"`
	Heartbeat         time.Duration `yaml:"heartbeat"`
	StatusInterval    time.Duration `yaml:"status_interval"`
	MaxTxnMemory      ByteSize      `yaml:"max_txn_memory"`
	// SignalTable is a published schema.table (id text, type text, data
	// text) whose execute-snapshot rows start incremental snapshots.
	SignalTable string `yaml:"signal_table"`
}

// PostgresTable is one entry of source.postgres.tables: written as a
// plain "schema.table" string or as a mapping
//
//	{table: s.t, where: "<row filter>", columns: [a, b], hash: [c], mask: [d]}
type PostgresTable struct {
	Table   string   `yaml:"table"`
	Where   string   `yaml:"where"`   // publication row filter (PostgreSQL 15)
	Columns []string `yaml:"columns"` // publication column list; must hold the key
	Hash    []string `yaml:"hash"`    // replaced by hex SHA-256(hash_salt + value)
	Mask    []string `yaml:"mask"`    // replaced by mask_string
}

// UnmarshalYAML takes a plain "schema.table" or the mapping.
func (t *PostgresTable) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*t = PostgresTable{Table: n.Value}
		return nil
	}
	type plain PostgresTable
	return n.Decode((*plain)(t))
}

// HTTPSource takes transactions over HTTP (POST /v1/append).
type HTTPSource struct {
	Listener `yaml:",inline"`
	MaxBody  ByteSize `yaml:"max_body"` // default 64MiB
	// MaxInflightBytes bounds the body bytes of all requests being served
	// at once; default 128MiB (at least max_body).
	MaxInflightBytes ByteSize `yaml:"max_inflight_bytes"`
	// IdempotencyWindow is how long an Idempotency-Key is remembered;
	// default 24h (also when 0), at least MinIdempotencyWindow.
	IdempotencyWindow time.Duration `yaml:"idempotency_window"`
	// SyncTimeout bounds a request's wait for a replication level beyond
	// local; default 30s.
	SyncTimeout time.Duration `yaml:"sync_timeout"`
	// ReadTimeout ends a request whose body sends nothing for that long;
	// default 30s.
	ReadTimeout time.Duration `yaml:"read_timeout"`
	// MaxConnections caps the connections open at once; default 512.
	MaxConnections int `yaml:"max_connections"`
}

// Listener is an HTTP listen address with its security settings.
type Listener struct {
	Listen string `yaml:"listen"`
	// Token is the bearer token clients must send; required when Listen is
	// not a loopback address.
	Token   string `yaml:"token"`
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
}

// Archive is the archive sink.
type Archive struct {
	URL     string        `yaml:"url"`
	Timeout time.Duration `yaml:"timeout"` // newest archived change is never older; default 60s
	S3      S3            `yaml:"s3"`
	// EncryptionKeyFile or EncryptionKeyEnv name a 256-bit key; objects
	// are then encrypted client-side (AES-256-GCM).
	EncryptionKeyFile string `yaml:"encryption_key_file"`
	EncryptionKeyEnv  string `yaml:"encryption_key_env"`
	// SnapshotInterval is how often a base snapshot is stored; 0 = never.
	SnapshotInterval time.Duration `yaml:"snapshot_interval"`
	// SnapshotKeep is how many base snapshots retention keeps (default 7).
	SnapshotKeep int `yaml:"snapshot_keep"`
}

// S3 holds the settings of an s3:// archive; the standard AWS environment
// fills what is empty.
type S3 struct {
	Endpoint  string `yaml:"endpoint"`
	Region    string `yaml:"region"`
	PathStyle bool   `yaml:"path_style"`
	AccessKey string `yaml:"access_key"`
	SecretKey string `yaml:"secret_key"`
	CAFile    string `yaml:"ca_file"`
}

// Kafka is the Kafka sink (walship run) or source (walship consume).
type Kafka struct {
	Brokers     []string      `yaml:"brokers"`
	TopicPrefix string        `yaml:"topic_prefix"` // default walship
	Mode        string        `yaml:"mode"`         // ordered | tables
	Format      string        `yaml:"format"`       // json | json-schemas; default json
	Partitions  int           `yaml:"partitions"`   // of each topic created in tables mode; default 1
	Compression string        `yaml:"compression"`  // none|gzip|snappy|lz4|zstd; default zstd
	Linger      time.Duration `yaml:"linger"`
	Tombstones  *bool         `yaml:"tombstones"` // default true
	// TransactionTopic: Debezium's transaction metadata on <prefix>.transaction.
	TransactionTopic bool      `yaml:"transaction_topic"`
	Group            string    `yaml:"group"` // consumer group (walship consume)
	TLS              KafkaTLS  `yaml:"tls"`
	SASL             KafkaSASL `yaml:"sasl"`
}

// KafkaTLS enables TLS to the brokers.
type KafkaTLS struct {
	Enabled            bool   `yaml:"enabled"`
	CAFile             string `yaml:"ca_file"`
	CertFile           string `yaml:"cert_file"`
	KeyFile            string `yaml:"key_file"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// KafkaSASL enables SASL authentication.
type KafkaSASL struct {
	Mechanism string `yaml:"mechanism"` // plain | scram-sha-256 | scram-sha-512
	Username  string `yaml:"username"`
	Password  string `yaml:"password"`
}

// Replica is the database walship consume applies to.
type Replica struct {
	URL          string `yaml:"url"` // sqlite:///abs/path.db | postgres://...
	MaxBatchTxns int    `yaml:"max_batch_txns"`
}

// Consumer is walship consume's identity.
type Consumer struct {
	// Name is reported with the applied position on the positions topic;
	// empty: none is reported.
	Name string `yaml:"name"`
}

// HTTP is the operator listener: /metrics, /healthz, /readyz, /status and,
// for walship consume, /v1/wait.
type HTTP struct {
	Listener `yaml:",inline"`
}

// HA is the membership of a group of walship run instances that share one
// pipeline (the same source, kafka and archive sections): exactly one
// leads, the others keep an LSN-identical copy of the log and take over
// when the leader's lease lapses. The group is kafka.topic_prefix.
type HA struct {
	// Name identifies this member, unique in the group.
	Name string `yaml:"name"`
	// Lease is how long a leader leads without renewing; default 6s.
	Lease time.Duration `yaml:"lease"`
}

// Log configures logging.
type Log struct {
	Format string `yaml:"format"` // auto | text | json
	Level  string `yaml:"level"`  // debug | info | warn | error
}

// Lag configures the replication-lag objectives.
type Lag struct {
	Window   time.Duration `yaml:"window"` // default 5m
	Warn     Percentiles   `yaml:"warn"`
	Critical Percentiles   `yaml:"critical"`
}

// Percentiles are lag thresholds; zero means unset.
type Percentiles struct {
	P50  time.Duration `yaml:"p50"`
	P95  time.Duration `yaml:"p95"`
	P99  time.Duration `yaml:"p99"`
	P999 time.Duration `yaml:"p999"`
}

// ByteSize is a size written as "64MiB", "1GB" or a plain number of bytes.
type ByteSize int64

// UnmarshalYAML parses the size.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("want a size such as 64MiB")
	}
	v, err := bytesize.Parse(n.Value)
	if err != nil {
		return err
	}
	*b = ByteSize(v)
	return nil
}

// String formats the size ("64MiB").
func (b ByteSize) String() string { return bytesize.Format(int64(b)) }

// Error is a configuration error: the key path (e.g. "wal.sync"), the
// line in the file when known, and what is wrong.
type Error struct {
	File string
	Key  string
	Line int
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		b.WriteString(": ")
	}
	if e.Key != "" {
		b.WriteString(e.Key)
		if e.Line > 0 {
			fmt.Fprintf(&b, " (line %d)", e.Line)
		}
		b.WriteString(": ")
	} else if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Load reads, expands, decodes and validates the file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := parse(data, os.LookupEnv, path)
	if err != nil {
		var ce *Error
		if errors.As(err, &ce) {
			ce.File = path
		}
		return nil, err
	}
	return c, nil
}

// Parse decodes and validates a config; lookup resolves ${VAR} references.
// A relative wal.dir is taken as relative to the working directory.
func Parse(data []byte, lookup func(string) (string, bool)) (*Config, error) {
	return parse(data, lookup, "")
}

func parse(data []byte, lookup func(string) (string, bool), path string) (*Config, error) {
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &Error{Msg: "empty configuration"}
		}
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		if strings.Contains(msg, "cannot start any token") && bytes.ContainsRune(data, '\t') {
			msg += " (YAML does not allow tabs for indentation: use spaces)"
		}
		return nil, &Error{Msg: msg}
	}
	doc := &root
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		doc = doc.Content[0]
	}
	if doc.Kind != yaml.MappingNode {
		return nil, &Error{Line: doc.Line, Msg: "the configuration must be a mapping of sections (wal:, source:, ...)"}
	}
	lines := map[string]int{}
	if err := walk(doc, typeOfConfig, "", lines, lookup); err != nil {
		return nil, err
	}
	c := Config{Path: path}
	if err := doc.Decode(&c); err != nil {
		return nil, decodeError(err, lines)
	}
	if err := c.validate(lines); err != nil {
		return nil, err
	}
	return &c, nil
}
