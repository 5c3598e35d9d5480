package config

import (
	"fmt"
	"github.com/walship/walship/change"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/walship/walship/internal/httpx"
	"github.com/walship/walship/internal/secret"
	"github.com/walship/walship/wal"
)

// Defaults filled in by validation.
const (
	DefaultSegmentSize    = 64 << 20
	DefaultArchiveTimeout = 60 * time.Second
	DefaultMaxBody        = 64 << 20
	// DefaultMaxInflightBytes is source.http.max_inflight_bytes's default:
	// two bodies of the default largest size.
	DefaultMaxInflightBytes = 128 << 20
	// DefaultIdempotencyWindow is source.http.idempotency_window's
	// default.
	DefaultIdempotencyWindow = 24 * time.Hour
	// DefaultSyncTimeout is source.http.sync_timeout's default.
	DefaultSyncTimeout  = 30 * time.Second
	DefaultSnapshotKeep = 7
	DefaultLagWindow    = 5 * time.Minute
	// DefaultMaxCommitTimeSkew is wal.max_commit_time_skew's default, the
	// log's own (wal.DefaultMaxCommitTimeSkew).
	DefaultMaxCommitTimeSkew = 5 * time.Minute
)

// The HTTP source's limits filled in or enforced by validation.
const (
	// MinIdempotencyWindow is the shortest source.http.idempotency_window
	// accepted: a shorter one forgets a key before a client's retry.
	MinIdempotencyWindow = time.Minute
	// DefaultHTTPReadTimeout is source.http.read_timeout's default.
	DefaultHTTPReadTimeout = 30 * time.Second
	// DefaultHTTPMaxConnections is source.http.max_connections's default.
	DefaultHTTPMaxConnections = 512
)

// MaxKafkaPartitions bounds kafka.partitions: far above what a table's
// topic needs, low enough that a typo does not ask the brokers for
// millions.
const MaxKafkaPartitions = 10000

// validator collects the first error, with the key's line.
type validator struct {
	lines map[string]int
	err   error
}

func (v *validator) fail(key, format string, args ...any) {
	if v.err != nil {
		return
	}
	// An absent key is reported at its nearest present parent.
	line := 0
	for k := key; k != "" && line == 0; {
		line = v.lines[k]
		i := strings.LastIndexAny(k, ".[")
		if i < 0 {
			break
		}
		k = k[:i]
	}
	v.err = &Error{Key: key, Line: line, Msg: fmt.Sprintf(format, args...)}
}

func (v *validator) oneOf(key string, val *string, def string, allowed ...string) {
	if *val == "" {
		*val = def
		return
	}
	if !slices.Contains(allowed, *val) {
		v.fail(key, "%q is not one of %s", *val, strings.Join(allowed, ", "))
	}
}

func (v *validator) nonNegative(key string, d time.Duration) {
	if d < 0 {
		v.fail(key, "must not be negative, got %v", d)
	}
}

func (v *validator) listener(key string, l *Listener, def string) {
	if l.Listen == "" {
		l.Listen = def
	}
	if _, port, err := net.SplitHostPort(l.Listen); err != nil || port == "" {
		v.fail(key+".listen", "%q is not host:port (for example 127.0.0.1:7070)", secret.Addr(l.Listen))
		return
	}
	if (l.TLSCert == "") != (l.TLSKey == "") {
		v.fail(key+".tls_cert", "tls_cert and tls_key must be given together")
	}
	if !IsLoopback(l.Listen) && l.Token == "" {
		v.fail(key+".token", "listening on %s (not loopback) requires a bearer token; set %s.token (for example \"${WALSHIP_TOKEN}\") or listen on 127.0.0.1", l.Listen, key)
	}
	// The length rule is the listener's own (httpx.MinTokenLen), checked
	// here too so that a short token stops the daemon before anything
	// starts, not after another listener has opened.
	if l.Token != "" && len(l.Token) < httpx.MinTokenLen {
		v.fail(key+".token", "too short (%d characters), want at least %d (for example: openssl rand -hex 32)", len(l.Token), httpx.MinTokenLen)
	}
}

// IsLoopback reports whether the host of addr is a loopback address or
// "localhost". An empty host (all interfaces) is not loopback.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ForRun checks what `walship run` needs beyond a valid file: the WAL
// directory and at least one source.
func (c *Config) ForRun() error {
	switch {
	case c.WAL.Dir == "":
		return c.missing("wal.dir", "required by walship run: the directory of the local log")
	case c.Source.Postgres == nil && c.Source.HTTP == nil:
		return c.missing("source", "walship run needs a source: add source.postgres and/or source.http")
	}
	return nil
}

// ForConsume checks what `walship consume` needs: kafka brokers and a
// replica.
func (c *Config) ForConsume() error {
	switch {
	case c.Kafka == nil:
		return c.missing("kafka", "walship consume reads Kafka: add kafka.brokers (and kafka.topic_prefix if not walship)")
	case c.Replica == nil:
		return c.missing("replica", "walship consume needs replica.url (sqlite:///abs/path.db or postgres://...)")
	}
	return nil
}

func (c *Config) missing(key, msg string) error {
	return &Error{File: c.Path, Key: key, Line: c.lines[key], Msg: msg}
}

func (c *Config) validate(lines map[string]int) error {
	c.lines = lines
	v := &validator{lines: lines}
	c.validateWAL(v)
	c.validateSources(v)
	c.validateArchive(v)
	c.validateKafka(v)
	c.validateShipped(v)
	c.validateHA(v)
	c.validateChecksum(v)
	if r := c.Replica; r != nil {
		if r.URL == "" {
			v.fail("replica.url", "required: sqlite:///abs/path.db or postgres://...")
		} else if !strings.HasPrefix(r.URL, "sqlite://") && !strings.HasPrefix(r.URL, "postgres://") && !strings.HasPrefix(r.URL, "postgresql://") {
			v.fail("replica.url", "%q: want sqlite:///abs/path.db or postgres://...", secret.URL(r.URL))
		}
		if r.MaxBatchTxns < 0 {
			v.fail("replica.max_batch_txns", "must not be negative")
		}
	}
	v.listener("http", &c.HTTP.Listener, "127.0.0.1:7071")
	v.oneOf("log.format", &c.Log.Format, "auto", "auto", "text", "json")
	v.oneOf("log.level", &c.Log.Level, "info", "debug", "info", "warn", "error")
	if c.Lag.Window == 0 {
		c.Lag.Window = DefaultLagWindow
	}
	v.nonNegative("lag.window", c.Lag.Window)
	c.Lag.fillDefaults()
	return v.err
}

func (c *Config) validateWAL(v *validator) {
	w := &c.WAL
	if w.Dir != "" && !filepath.IsAbs(w.Dir) && c.Path != "" {
		w.Dir = filepath.Join(filepath.Dir(c.Path), w.Dir)
	}
	v.oneOf("wal.sync", &w.Sync, "local", "local", "off", "shipped", "applied")
	v.oneOf("wal.compression", &w.Compression, "none", "none", "s2", "zstd")
	v.oneOf("wal.retention_policy", &w.RetentionPolicy, "keep", "keep", "drop")
	if w.SegmentSize == 0 {
		w.SegmentSize = DefaultSegmentSize
	}
	if w.ZeroFill == nil {
		t := true
		w.ZeroFill = &t
	}
	if w.SegmentSize < 1<<20 || w.SegmentSize > 1<<32 {
		v.fail("wal.segment_size", "%v is outside 1MiB..4GiB", w.SegmentSize)
	}
	if w.MaxBytes != 0 && w.MaxBytes < 2*w.SegmentSize {
		v.fail("wal.max_bytes", "%v is less than two segments (%v each)", w.MaxBytes, w.SegmentSize)
	}
	v.nonNegative("wal.min_interval", w.MinInterval)
	v.nonNegative("wal.max_commit_time_skew", w.MaxCommitTimeSkew)
	if w.MaxCommitTimeSkew == 0 {
		w.MaxCommitTimeSkew = DefaultMaxCommitTimeSkew
	}
}

// validateShipped checks wal.shipped_sinks against the sinks configured
// and fills in its default, every configured sink; wal.sync: shipped
// needs at least one.
func (c *Config) validateShipped(v *validator) {
	w := &c.WAL
	configured := map[string]bool{"kafka": c.Kafka != nil, "archive": c.Archive != nil}
	if w.ShippedSinks == nil {
		for _, s := range []string{"kafka", "archive"} {
			if configured[s] {
				w.ShippedSinks = append(w.ShippedSinks, s)
			}
		}
	} else if len(w.ShippedSinks) == 0 {
		v.fail("wal.shipped_sinks", "empty: name kafka and/or archive, or leave it out to count every configured sink")
	}
	seen := map[string]bool{}
	for i, s := range w.ShippedSinks {
		key := fmt.Sprintf("wal.shipped_sinks[%d]", i)
		switch {
		case s != "kafka" && s != "archive":
			v.fail(key, "%q is not one of kafka, archive", s)
		case !configured[s]:
			v.fail(key, "%s is not configured: add the %s section or leave %s out", s, s, s)
		case seen[s]:
			v.fail(key, "%s is named twice", s)
		}
		seen[s] = true
	}
	if w.Sync == "shipped" && len(w.ShippedSinks) == 0 {
		v.fail("wal.sync", "shipped needs a sink to ship to: configure kafka and/or archive")
	}
	if w.AppliedQuorum != "" {
		if _, err := wal.ParseQuorum(w.AppliedQuorum); err != nil {
			v.fail("wal.applied_quorum", "%v", err)
		} else if c.Kafka == nil {
			v.fail("wal.applied_quorum", "replicas report what they applied through Kafka: configure kafka")
		}
	}
	if w.Sync == "applied" && w.AppliedQuorum == "" {
		v.fail("wal.sync", "applied needs wal.applied_quorum, such as \"ANY 1 (replica-a, replica-b)\"")
	}
	if n := c.Consumer.Name; n != "" && (len(n) > 128 || strings.IndexFunc(n, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0) {
		v.fail("consumer.name", "%q: want 1 to 128 printable characters", n)
	}
}

func (c *Config) validateSources(v *validator) {
	if p := c.Source.Postgres; p != nil {
		if p.DSN == "" {
			v.fail("source.postgres.dsn", "required: a connection string such as postgres://user@host:5432/db")
		}
		if p.Slot == "" {
			p.Slot = "walship"
		}
		if p.Publication == "" {
			p.Publication = "walship"
		}
		v.oneOf("source.postgres.snapshot", &p.Snapshot, "initial", "initial", "never")
		validatePostgresTables(v, p)
		if p.SignalTable != "" {
			if _, err := change.ParseTable(p.SignalTable); err != nil {
				v.fail("source.postgres.signal_table", "%v", err)
			}
		}
		v.nonNegative("source.postgres.heartbeat", p.Heartbeat)
		v.nonNegative("source.postgres.status_interval", p.StatusInterval)
		if p.SnapshotChunkRows < 0 {
			v.fail("source.postgres.snapshot_chunk_rows", "must not be negative")
		}
	}
	if h := c.Source.HTTP; h != nil {
		v.listener("source.http", &h.Listener, "127.0.0.1:7070")
		if h.MaxBody == 0 {
			h.MaxBody = DefaultMaxBody
		}
		if h.MaxInflightBytes == 0 {
			h.MaxInflightBytes = max(DefaultMaxInflightBytes, h.MaxBody)
		}
		if h.MaxInflightBytes < h.MaxBody {
			v.fail("source.http.max_inflight_bytes", "%s is below source.http.max_body (%s): a largest request could never be served", h.MaxInflightBytes, h.MaxBody)
		}
		v.nonNegative("source.http.idempotency_window", h.IdempotencyWindow)
		switch {
		case h.IdempotencyWindow == 0:
			h.IdempotencyWindow = DefaultIdempotencyWindow
		case h.IdempotencyWindow < MinIdempotencyWindow:
			v.fail("source.http.idempotency_window", "%v is below the minimum of %v: a key would be forgotten before a client's retry (0 means the default, %v)", h.IdempotencyWindow, MinIdempotencyWindow, DefaultIdempotencyWindow)
		}
		v.nonNegative("source.http.read_timeout", h.ReadTimeout)
		if h.ReadTimeout == 0 {
			h.ReadTimeout = DefaultHTTPReadTimeout
		}
		switch {
		case h.MaxConnections < 0:
			v.fail("source.http.max_connections", "must not be negative, got %d", h.MaxConnections)
		case h.MaxConnections == 0:
			h.MaxConnections = DefaultHTTPMaxConnections
		}
		v.nonNegative("source.http.sync_timeout", h.SyncTimeout)
		if h.SyncTimeout == 0 {
			h.SyncTimeout = DefaultSyncTimeout
		}
	}
}

func (c *Config) validateArchive(v *validator) {
	a := c.Archive
	if a == nil {
		return
	}
	if a.URL == "" {
		v.fail("archive.url", "required: file:///abs/dir or s3://bucket/prefix")
	} else if u, err := url.Parse(a.URL); err != nil || (u.Scheme != "file" && u.Scheme != "s3") {
		v.fail("archive.url", "%q: want file:///abs/dir or s3://bucket/prefix", secret.URL(a.URL))
	} else if u.Scheme == "file" && (u.Host != "" || !filepath.IsAbs(u.Path)) {
		v.fail("archive.url", "%q: a file archive needs an absolute path (file:///abs/dir)", secret.URL(a.URL))
	} else if u.Scheme == "s3" && u.Host == "" {
		v.fail("archive.url", "%q: no bucket (s3://bucket/prefix)", secret.URL(a.URL))
	}
	if a.Timeout == 0 {
		a.Timeout = DefaultArchiveTimeout
	}
	if a.Timeout < 100*time.Millisecond {
		v.fail("archive.timeout", "%v is too small (at least 100ms; 1s is a practical minimum)", a.Timeout)
	}
	if a.EncryptionKeyFile != "" && a.EncryptionKeyEnv != "" {
		v.fail("archive.encryption_key_env", "give encryption_key_file or encryption_key_env, not both")
	}
	v.nonNegative("archive.snapshot_interval", a.SnapshotInterval)
	if a.SnapshotKeep == 0 {
		a.SnapshotKeep = DefaultSnapshotKeep
	}
	if a.SnapshotKeep < 0 {
		v.fail("archive.snapshot_keep", "must be positive")
	}
}

func (c *Config) validateKafka(v *validator) {
	k := c.Kafka
	if k == nil {
		return
	}
	if len(k.Brokers) == 0 {
		v.fail("kafka.brokers", "required: a list of host:port")
	}
	for i, b := range k.Brokers {
		if _, port, err := net.SplitHostPort(b); err != nil || port == "" || strings.Contains(b, "@") {
			// A broker given as user:password@host:port is refused without
			// echoing the password: credentials belong in kafka.sasl.
			v.fail(fmt.Sprintf("kafka.brokers[%d]", i), "%q is not host:port (credentials go in kafka.sasl)", secret.Addr(b))
		}
	}
	if k.TopicPrefix == "" {
		k.TopicPrefix = "walship"
	}
	v.oneOf("kafka.mode", &k.Mode, "ordered", "ordered", "tables")
	switch {
	case k.Partitions < 0 || k.Partitions > MaxKafkaPartitions:
		v.fail("kafka.partitions", "%d: want 1 to %d", k.Partitions, MaxKafkaPartitions)
	case k.Partitions > 1 && k.Mode != "tables":
		v.fail("kafka.partitions", "%d: only for mode: tables (the ordered topic has exactly one partition, for total order)", k.Partitions)
	}
	v.oneOf("kafka.format", &k.Format, "json", "json", "json-schemas")
	v.oneOf("kafka.compression", &k.Compression, "zstd", "none", "gzip", "snappy", "lz4", "zstd")
	v.nonNegative("kafka.linger", k.Linger)
	if k.SASL.Mechanism != "" {
		v.oneOf("kafka.sasl.mechanism", &k.SASL.Mechanism, "", "plain", "scram-sha-256", "scram-sha-512")
		if k.SASL.Username == "" {
			v.fail("kafka.sasl.username", "required with kafka.sasl.mechanism")
		}
	}
	if (k.TLS.CertFile == "") != (k.TLS.KeyFile == "") {
		v.fail("kafka.tls.cert_file", "cert_file and key_file must be given together")
	}
}

// Limits of the ha section.
const (
	DefaultHALease = 6 * time.Second
	MinHALease     = time.Second
	MaxHALease     = 5 * time.Minute
)

func (c *Config) validateHA(v *validator) {
	h := c.HA
	if h == nil {
		return
	}
	if !validMemberName(h.Name) {
		v.fail("ha.name", "%q: want 1 to 64 of A-Z a-z 0-9 . _ - (unique in the group)", h.Name)
	}
	switch {
	case h.Lease == 0:
		h.Lease = DefaultHALease
	case h.Lease < MinHALease || h.Lease > MaxHALease:
		v.fail("ha.lease", "%v: want %v to %v", h.Lease, MinHALease, MaxHALease)
	}
	switch {
	case c.Kafka == nil && c.Archive == nil:
		v.fail("ha", "the group's lease and its shared log live in Kafka (mode ordered) or, without Kafka, in the archive: configure kafka or archive")
	case c.Kafka != nil && c.Kafka.Mode != "ordered":
		v.fail("kafka.mode", "%q: ha needs mode ordered (followers copy the log from the ordered topic)", c.Kafka.Mode)
	}
}

// validMemberName: what ha.name may be (it travels in Kafka keys, metrics
// and headers).
func validMemberName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// The classic replication-lag objective: p50/p95/p99/p99.9 under
// 10ms/100ms/500ms/2s.
var defaultLagWarn = Percentiles{P50: 10 * time.Millisecond, P95: 100 * time.Millisecond, P99: 500 * time.Millisecond, P999: 2 * time.Second}

// fillDefaults sets unset warning thresholds to the classic objective and
// unset critical ones to ten times the warning.
func (l *Lag) fillDefaults() {
	w, c := []*time.Duration{&l.Warn.P50, &l.Warn.P95, &l.Warn.P99, &l.Warn.P999},
		[]*time.Duration{&l.Critical.P50, &l.Critical.P95, &l.Critical.P99, &l.Critical.P999}
	d := []time.Duration{defaultLagWarn.P50, defaultLagWarn.P95, defaultLagWarn.P99, defaultLagWarn.P999}
	for i := range w {
		if *w[i] == 0 {
			*w[i] = d[i]
		}
		if *c[i] == 0 {
			*c[i] = 10 * *w[i]
		}
	}
}
