package daemon

import (
	"os"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/walship/walship/checksum"
	"github.com/walship/walship/config"
	"github.com/walship/walship/consumer"
	"github.com/walship/walship/httpsource"
	"github.com/walship/walship/internal/bytesize"
	"github.com/walship/walship/wal"
)

// TestConfigDocDefaults keeps the defaults docs/CONFIG.md gives equal to
// the ones in effect: those validation fills into the config, and those the
// components apply to what the daemon passes them.
func TestConfigDocDefaults(t *testing.T) {
	doc, err := os.ReadFile("../docs/CONFIG.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]string{}
	for _, m := range regexp.MustCompile("(?m)^\\| `([a-z0-9_.]+)` \\| `([^`]*)` \\|").FindAllStringSubmatch(string(doc), -1) {
		documented[m[1]] = m[2]
	}
	c, err := config.Parse([]byte("wal: {dir: /tmp/w}\nsource: {http: {}}\narchive: {url: \"file:///tmp/a\"}\n"+
		"kafka: {brokers: [\"b:9092\"], mode: tables}\nreplica: {url: \"sqlite:///tmp/r.db\"}\n"), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	ck, err := config.Parse([]byte("wal: {dir: /tmp/w}\nsource: {postgres: {dsn: x}}\nchecksum: {}\n"), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	sink := KafkaSinkOptions(c.Kafka, nil)
	if err := sink.Validate(); err != nil {
		t.Fatal(err)
	}
	cons := consumer.Options{Brokers: c.Kafka.Brokers, ReplicaURL: c.Replica.URL, MaxBatchTxns: c.Replica.MaxBatchTxns}
	if err := cons.Validate(); err != nil {
		t.Fatal(err)
	}
	duration := func(d time.Duration) func(string) bool {
		return func(s string) bool { v, err := time.ParseDuration(s); return err == nil && v == d }
	}
	integer := func(n int64) func(string) bool {
		return func(s string) bool { v, err := strconv.ParseInt(s, 10, 64); return err == nil && v == n }
	}
	size := func(n int64) func(string) bool {
		return func(s string) bool { v, err := bytesize.Parse(s); return err == nil && v == n }
	}
	text := func(want string) func(string) bool { return func(s string) bool { return s == want } }
	for key, inEffect := range map[string]func(string) bool{
		"wal.segment_size":     size(int64(c.WAL.SegmentSize)),
		"wal.sync":             text(c.WAL.Sync),
		"source.http.max_body": size(int64(c.Source.HTTP.MaxBody)),
		"source.http.sync_timeout": func(s string) bool {
			return duration(c.Source.HTTP.SyncTimeout)(s) && duration(httpsource.DefaultSyncTimeout)(s)
		},
		"archive.timeout":        duration(c.Archive.Timeout),
		"archive.snapshot_keep":  integer(int64(c.Archive.SnapshotKeep)),
		"kafka.topic_prefix":     text(c.Kafka.TopicPrefix),
		"kafka.compression":      text(c.Kafka.Compression),
		"kafka.format":           text(c.Kafka.Format),
		"kafka.partitions":       integer(int64(sink.Partitions)),
		"replica.max_batch_txns": integer(int64(cons.MaxBatchTxns)),
		"lag.window":             duration(c.Lag.Window),
		"checksum.chunk_rows": func(s string) bool {
			return integer(int64(ck.Checksum.ChunkRows))(s) && integer(checksum.DefaultChunkRows)(s)
		},
		"checksum.rate": func(s string) bool {
			return integer(int64(ck.Checksum.Rate))(s) && integer(checksum.DefaultRate)(s)
		},
		"checksum.schedule":              duration(ck.Checksum.Schedule),
		"source.http.read_timeout":       duration(c.Source.HTTP.ReadTimeout),
		"source.http.max_connections":    integer(int64(c.Source.HTTP.MaxConnections)),
		"source.http.idempotency_window": duration(c.Source.HTTP.IdempotencyWindow),
		"wal.max_commit_time_skew": func(s string) bool {
			return duration(c.WAL.MaxCommitTimeSkew)(s) && duration(wal.DefaultMaxCommitTimeSkew)(s)
		},
	} {
		d, ok := documented[key]
		if !ok {
			t.Errorf("docs/CONFIG.md gives no default for `%s`", key)
		} else if !inEffect(d) {
			t.Errorf("docs/CONFIG.md gives `%s` the default `%s`; the code's differs", key, d)
		}
	}
}

// TestKafkaSinkOptionsPartitions: kafka.partitions reaches the sink.
func TestKafkaSinkOptionsPartitions(t *testing.T) {
	c, err := config.Parse([]byte("wal: {dir: /tmp/w}\nkafka: {brokers: [\"b:9092\"], mode: tables, partitions: 12}\n"), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	if o := KafkaSinkOptions(c.Kafka, nil); o.Partitions != 12 {
		t.Fatalf("partitions %d, want 12", o.Partitions)
	}
}
