package pgsource

import (
	"errors"
	"fmt"
	"github.com/walship/walship/change"
	"log/slog"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/walship/walship/internal/secret"
)

// Options configures a Source. Zero fields take the documented defaults
// (Validate fills them in).
type Options struct {
	// DSN is a libpq URL or key=value string; it must name a database.
	DSN string
	// Slot is the logical replication slot (default "walship"); letters
	// a-z, digits and '_', at most 61 characters.
	Slot string
	// Publication is the publication (default "walship"), created on first
	// start if absent; one walship created is kept in step with Tables.
	Publication string
	// Tables lists the tables to publish, each with its options
	// (TableSpec); empty means FOR ALL TABLES. A publication walship
	// manages is kept in step with it on every start (docs/POSTGRES.md,
	// "Publication management").
	Tables []TableSpec
	// HashSalt is prefixed to a value before it is hashed
	// (TableSpec.Hash); required when a table hashes a column.
	HashSalt secret.Secret
	// MaskString replaces the value of a masked column (TableSpec.Mask);
	// default "****".
	MaskString string
	// Snapshot is "initial" (default: copy the tables, then stream) or
	// "never" (stream from the slot's creation on).
	Snapshot string
	// SnapshotChunkRows is the number of rows per snapshot transaction
	// (default 10000).
	SnapshotChunkRows int
	// SignalTable, if set, is a published "schema.table" with columns id
	// text, type text and data text (as Debezium's signalling table): a
	// row inserted with type "execute-snapshot" queues incremental
	// snapshots (docs/POSTGRES.md, "Incremental snapshots").
	SignalTable string
	// Heartbeat is the interval of pg_logical_emit_message heartbeats
	// (default 10s).
	Heartbeat time.Duration
	// StatusInterval is the interval of standby status updates (default 1s).
	StatusInterval time.Duration
	// MaxTxnMemory bounds the memory held by one transaction being
	// received; beyond it the transaction spills to a file (default 64 MiB).
	MaxTxnMemory int64
	// SpillDir holds spill files (default os.TempDir()).
	SpillDir string
	// ToastCacheBytes bounds the cache of large column values used to fill
	// in unchanged TOAST values (default 64 MiB; negative disables it).
	ToastCacheBytes int64
	// Confirmable, if set, returns the log position up to which
	// transactions may be confirmed to the server: the configured
	// replication level's position (wal.Levels.Position). A transaction
	// is confirmed only once it is durable in the log and at or below
	// this position. Nil: durable is enough (the level local).
	Confirmable func() uint64
	// TakeOverSlot makes the source take the slot from whoever holds it:
	// before START_REPLICATION, a backend holding the slot
	// (pg_replication_slots.active_pid) is terminated with
	// pg_terminate_backend (logged at WARN with its pid) and the source
	// waits, up to 30s, until the slot is free. For a new HA leader whose
	// predecessor may still be connected, paused or dead. Without it a
	// busy slot is waited for: START_REPLICATION fails with "replication
	// slot is active" and the session is retried with backoff until the
	// holder lets go. Needs superuser, the role that holds the slot or
	// pg_signal_backend.
	TakeOverSlot bool
	// Gate, if set, is called right before each standby status update
	// (every one confirms a flush position to the server) and before each
	// append to the log. An error sends nothing and appends nothing more:
	// Run stops and returns it wrapped in a *FatalError (errors.Is finds
	// it). For an HA leader, the term's validity (docs/POSTGRES.md,
	// "Takeover").
	Gate func() error
	// Logger receives operational messages (default: discard).
	Logger *slog.Logger
}

// Defaults.
const (
	DefaultSlot              = "walship"
	DefaultPublication       = "walship"
	DefaultSnapshotChunkRows = 10000
	DefaultHeartbeat         = 10 * time.Second
	DefaultStatusInterval    = time.Second
	DefaultMaxTxnMemory      = 64 << 20
	DefaultToastCacheBytes   = 64 << 20
	DefaultMaskString        = "****"
)

var slotRE = regexp.MustCompile(`^[a-z0-9_]{1,61}$`)

// ConfigError names the configuration key that is wrong, as
// "source.postgres.<key>".
type ConfigError struct {
	Key    string
	Reason string
}

func (e *ConfigError) Error() string { return e.Key + ": " + e.Reason }

func cfgErr(key, format string, args ...any) error {
	return &ConfigError{Key: "source.postgres." + key, Reason: fmt.Sprintf(format, args...)}
}

// Validate fills in defaults and checks every field; the error is a
// *ConfigError naming the key (several are joined).
func (c *Options) Validate() error {
	var errs []error
	if c.Slot == "" {
		c.Slot = DefaultSlot
	}
	if c.Publication == "" {
		c.Publication = DefaultPublication
	}
	if c.Snapshot == "" {
		c.Snapshot = "initial"
	}
	if c.SnapshotChunkRows == 0 {
		c.SnapshotChunkRows = DefaultSnapshotChunkRows
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = DefaultHeartbeat
	}
	if c.StatusInterval == 0 {
		c.StatusInterval = DefaultStatusInterval
	}
	if c.MaxTxnMemory == 0 {
		c.MaxTxnMemory = DefaultMaxTxnMemory
	}
	if c.ToastCacheBytes == 0 {
		c.ToastCacheBytes = DefaultToastCacheBytes
	}
	if c.MaskString == "" {
		c.MaskString = DefaultMaskString
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.DSN == "" {
		errs = append(errs, cfgErr("dsn", "missing"))
	} else if pc, err := pgconn.ParseConfig(c.DSN); err != nil {
		errs = append(errs, cfgErr("dsn", "%v", secret.DSNError(c.DSN, err)))
	} else if pc.Database == "" {
		errs = append(errs, cfgErr("dsn", "names no database"))
	}
	if !slotRE.MatchString(c.Slot) {
		errs = append(errs, cfgErr("slot", "%q is not a valid slot name: use 1-61 characters a-z, 0-9 and _", c.Slot))
	}
	if len(c.Publication) > 63 {
		errs = append(errs, cfgErr("publication", "%q is longer than 63 bytes", c.Publication))
	}
	errs = append(errs, validateTables(c.Tables, c.HashSalt != "")...)
	if c.SignalTable != "" {
		if _, err := change.ParseTable(c.SignalTable); err != nil {
			errs = append(errs, cfgErr("signal_table", "%q: %v", c.SignalTable, err))
		}
	}
	if c.Snapshot != "initial" && c.Snapshot != "never" {
		errs = append(errs, cfgErr("snapshot", "%q: want initial or never", c.Snapshot))
	}
	if c.SnapshotChunkRows < 1 {
		errs = append(errs, cfgErr("snapshot_chunk_rows", "%d: must be at least 1", c.SnapshotChunkRows))
	}
	if c.Heartbeat < 0 {
		errs = append(errs, cfgErr("heartbeat", "%v: must be positive", c.Heartbeat))
	}
	if c.StatusInterval < 0 || c.StatusInterval > time.Minute {
		errs = append(errs, cfgErr("status_interval", "%v: must be between 0 and 1m", c.StatusInterval))
	}
	if c.MaxTxnMemory < 1<<20 {
		errs = append(errs, cfgErr("max_txn_memory", "%d: must be at least 1MiB", c.MaxTxnMemory))
	}
	return errors.Join(errs...)
}
