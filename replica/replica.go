package replica

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/walship/walship/change"
	"github.com/walship/walship/internal/secret"
)

// Applier applies transactions of the log to a replica database.
type Applier interface {
	// Position returns the commit LSN of the last applied transaction (0 if
	// none), read from the replica.
	Position(ctx context.Context) (uint64, error)
	// Apply applies txns in log order. Each txn is atomic and its position
	// is stored in the same DB transaction as its data (several txns may
	// share one DB transaction for throughput: all or none). Txns with
	// CommitLSN <= Position are skipped (counted, never re-applied).
	// Apply blocks until the DB transactions are committed. On error
	// nothing of the failed DB transaction is applied; earlier batches of
	// the same call (at most MaxBatchTxns txns each) stay committed, and
	// Position tells where the replica stands.
	Apply(ctx context.Context, txns []change.Committed) error
	// Stats returns counters since Open.
	Stats() Stats
	// Close releases the database; an open DB transaction is never left
	// behind (Apply commits or rolls back before it returns). With
	// Options.Unsynced it first makes every applied transaction durable.
	// Idempotent.
	Close() error
}

// Stats counts what an Applier did since it was opened.
type Stats struct {
	Applied       uint64 // transactions applied
	Changes       uint64 // changes of applied transactions (messages included)
	Skipped       uint64 // transactions skipped: CommitLSN at or below the position
	SchemaChanges uint64 // tables created, columns added, dropped or retyped
	// Checksum chunks verified (ChecksumPrefix messages): equal to the
	// source's, or different (a recheck may still clear a difference).
	ChecksumsEqual, ChecksumsDifferent uint64
	// RepairDeleted counts rows deleted by repair chunks (RepairPrefix
	// messages): rows of a repaired range that the source does not have.
	RepairDeleted uint64
}

// State is the bookkeeping row of a replica (table walship_applied).
type State struct {
	LSN        uint64    // commit LSN of the last applied transaction; 0 if none
	CommitTime time.Time // its commit time; zero if none
	Txns       uint64    // transactions applied over the replica's life
	Changes    uint64    // changes of those transactions
	Lineage    string    // lineage of the applied log; "" until one is set
}

// Options configure an Applier. The zero value is valid.
type Options struct {
	// MaxBatchTxns is the largest number of transactions applied in one
	// database transaction; default 1000. 1 commits every transaction on
	// its own.
	MaxBatchTxns int
	// Lineage, if set, is the lineage of the log being applied. Open
	// stores it in a replica that has none, and fails with ErrLineage if
	// the replica holds another one.
	Lineage string
	// KeepDroppedColumns keeps a column that the source dropped (it is no
	// longer in a full row image with types) instead of dropping it from
	// the replica; its values stay and new rows get NULL. Default false:
	// the replica mirrors the source, and each drop is logged at Warn.
	KeepDroppedColumns bool
	// BusyTimeout is how long SQLite waits for a lock held by another
	// connection (a reader, a snapshot); default 10s.
	BusyTimeout time.Duration
	// Unsynced lets commits return before they are on disk: SQLite runs
	// with synchronous=NORMAL, PostgreSQL with synchronous_commit off. A
	// crash can then take back the last applied transactions, with their
	// position (never one without the other), and Close makes everything
	// applied durable, returning an error if it cannot. For appliers
	// whose position is acknowledged to no one, such as a restore; never
	// for a consumer that commits its position upstream.
	Unsynced bool
	// Logger receives schema changes; default discard.
	Logger *slog.Logger
}

// Validate reports an invalid option.
func (o Options) Validate() error {
	if o.MaxBatchTxns < 0 {
		return fmt.Errorf("replica: MaxBatchTxns %d is negative", o.MaxBatchTxns)
	}
	if o.BusyTimeout < 0 {
		return fmt.Errorf("replica: BusyTimeout %v is negative", o.BusyTimeout)
	}
	return nil
}

func (o Options) withDefaults() Options {
	if o.MaxBatchTxns == 0 {
		o.MaxBatchTxns = 1000
	}
	if o.BusyTimeout == 0 {
		o.BusyTimeout = defaultBusy
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

const defaultBusy = 10 * time.Second

// ErrLineage is returned by Open when the replica holds the position of
// another lineage than Options.Lineage.
var ErrLineage = errors.New("replica belongs to another lineage")

// ErrOrder is returned by Apply, before anything is applied, when the
// CommitLSNs of its txns do not strictly increase.
var ErrOrder = errors.New("transactions out of log order")

// Open opens a replica by URL: sqlite:///abs/path.db (the file is created
// if absent) or postgres://... (the database must exist); creates the
// bookkeeping table. Errors name the URL with its password redacted.
func Open(ctx context.Context, rawURL string, opts Options) (Applier, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	kind, path, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	var b backend
	switch kind {
	case "sqlite":
		b, err = openSQLite(ctx, path, opts)
	case "postgres":
		b, err = openPostgres(ctx, rawURL, opts)
	}
	if err != nil {
		return nil, fmt.Errorf("replica %s: %w", secret.URL(rawURL), secret.DSNError(rawURL, err))
	}
	a, err := newApplier(ctx, b, opts)
	if err != nil {
		b.close()
		return nil, fmt.Errorf("replica %s: %w", secret.URL(rawURL), secret.DSNError(rawURL, err))
	}
	return a, nil
}

// ParseURL checks a replica URL and returns its kind, "sqlite" or
// "postgres", and for SQLite the absolute file path.
func ParseURL(rawURL string) (kind, path string, err error) {
	fail := func(why string) (string, string, error) {
		return "", "", fmt.Errorf("replica URL %q: %s (want sqlite:///abs/path.db or postgres://...)", secret.URL(rawURL), why)
	}
	if rawURL == "" {
		return fail("empty")
	}
	i := strings.Index(rawURL, "://")
	if i < 0 {
		return fail("no scheme")
	}
	switch scheme := strings.ToLower(rawURL[:i]); scheme {
	case "sqlite", "sqlite3":
		u, err := url.Parse(rawURL)
		if err != nil {
			return fail("malformed URL")
		}
		if u.Host != "" {
			return fail(fmt.Sprintf("host %q given; an absolute path needs three slashes", u.Host))
		}
		if u.RawQuery != "" || u.Fragment != "" {
			return fail("query and fragment are not supported")
		}
		if u.Path == "" || !filepath.IsAbs(u.Path) {
			return fail("the path must be absolute")
		}
		if strings.HasSuffix(u.Path, "/") {
			return fail("the path names a directory")
		}
		return "sqlite", filepath.Clean(u.Path), nil
	case "postgres", "postgresql":
		if _, err := url.Parse(rawURL); err != nil {
			return fail("malformed URL")
		}
		return "postgres", "", nil
	default:
		return fail(fmt.Sprintf("unsupported scheme %q", scheme))
	}
}
