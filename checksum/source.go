package checksum

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/walship/walship/change"
	"github.com/walship/walship/checkpoint"
	"github.com/walship/walship/internal/secret"
	"github.com/walship/walship/replica"
)

// Defaults of Options.
const (
	DefaultChunkRows = 1000
	DefaultRate      = 20 // chunks a second
	// CheckpointName is the checkpoint that holds a round's progress.
	CheckpointName = "checksum"
)

// ErrBusy is returned by Start while a round is running or queued.
var ErrBusy = errors.New("checksum: a round is already running or queued")

// Options configure a Runner.
type Options struct {
	DSN string
	// Publication is the source's publication: its tables (and, with a
	// column list, its columns) are checked. Default "walship".
	Publication string
	// ChunkRows is the rows a chunk holds; default DefaultChunkRows.
	ChunkRows int
	// Rate bounds the chunks checked a second; default DefaultRate.
	Rate float64
	// Schedule starts a round that often (after the previous one ends);
	// 0: rounds start on demand only (Start).
	Schedule time.Duration
	// Store keeps a round's progress so that it resumes after a restart;
	// nil: a round cut short is lost.
	Store *checkpoint.Store
	// Ready reports whether rounds may run: a round waits until it does
	// (the daemon's source has finished its initial snapshot: a replica
	// still being filled would differ). nil: always.
	Ready func() bool
	// Protected lists, per table ("schema.name"), the columns walship
	// hashes or masks before they leave the source (source.postgres.tables
	// hash and mask): they are not compared.
	Protected map[string][]string
	Logger    *slog.Logger
}

// Runner runs check rounds against a PostgreSQL source.
type Runner struct {
	opts    Options
	trigger chan string
	mu      sync.Mutex
	status  Status
}

// Status is what a Runner is doing, for /status.
type Status struct {
	Running   bool      `json:"running"`
	Round     string    `json:"round,omitempty"`
	Table     string    `json:"table,omitempty"`
	Chunks    int       `json:"chunks"` // emitted in the current or last round
	LastRound string    `json:"last_round,omitempty"`
	LastEnd   time.Time `json:"last_end,omitzero"`
	LastError string    `json:"last_error,omitempty"`
}

// New returns a Runner; Run runs it.
func New(opts Options) *Runner {
	if opts.Publication == "" {
		opts.Publication = "walship"
	}
	if opts.ChunkRows <= 0 {
		opts.ChunkRows = DefaultChunkRows
	}
	if opts.Rate <= 0 {
		opts.Rate = DefaultRate
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Runner{opts: opts, trigger: make(chan string, 1)}
}

// Status returns what the Runner is doing.
func (r *Runner) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.status
}

// Start queues a round over table ("schema.name" or "name"; "" for every
// table) for Run to start. It fails with ErrBusy if a round is running or
// queued.
func (r *Runner) Start(table string) error {
	if r.Status().Running {
		return ErrBusy
	}
	select {
	case r.trigger <- table:
		return nil
	default:
		return ErrBusy
	}
}

// progress is a round's position, stored under CheckpointName.
type progress struct {
	Round  string   `json:"round"`
	Only   string   `json:"only,omitempty"`
	Tables []string `json:"tables"`
	Index  int      `json:"index"` // table being checked
	After  []string `json:"after,omitempty"`
	Chunk  int      `json:"chunk"`  // chunks of Tables[Index] done
	Chunks int      `json:"chunks"` // chunks of the round done
}

// Run resumes a round cut short, then starts rounds on demand and on the
// schedule until ctx ends. A table whose check the source refuses is
// logged and left out of its round (Status.LastError names it when the
// round ends); a round failed otherwise (the connection lost) is logged
// and retried after a pause from where it stopped.
func (r *Runner) Run(ctx context.Context) error {
	var p *progress
	if r.opts.Store != nil {
		if ck, ok := r.opts.Store.Get(CheckpointName); ok && len(ck.Payload) > 0 {
			var st progress
			if err := json.Unmarshal(ck.Payload, &st); err == nil && st.Round != "" {
				p = &st
			}
		}
	}
	for {
		if p == nil {
			var sched <-chan time.Time
			if r.opts.Schedule > 0 {
				sched = time.After(r.opts.Schedule)
			}
			select {
			case <-ctx.Done():
				return nil
			case only := <-r.trigger:
				p = &progress{Round: NewRoundID(), Only: only}
			case <-sched:
				p = &progress{Round: NewRoundID()}
			}
		}
		for r.opts.Ready != nil && !r.opts.Ready() {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Second):
			}
		}
		if err := r.run(ctx, p); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			r.opts.Logger.Warn("checksum: round failed; retrying", "round", p.Round, "err", err)
			r.setErr(err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(5 * time.Second):
			}
			continue
		}
		p = nil
	}
}

// NewRoundID returns a round id: the UTC time, which orders rounds.
func NewRoundID() string { return time.Now().UTC().Format("20060102T150405.000000Z") }

func (r *Runner) setErr(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status.Running = false
	r.status.LastError = err.Error()
}

// Round runs one whole round over table ("" for every table) and returns
// the number of chunks it emitted.
func (r *Runner) Round(ctx context.Context, table string) (int, error) {
	p := &progress{Round: NewRoundID(), Only: table}
	if err := r.run(ctx, p); err != nil {
		return 0, err
	}
	return p.Chunks, nil
}

func (r *Runner) save(ctx context.Context, p *progress) error {
	if r.opts.Store == nil {
		return nil
	}
	var payload []byte
	if p != nil {
		payload, _ = json.Marshal(p)
	}
	// The position is unused (0): this name holds back nothing.
	return r.opts.Store.SetBackward(ctx, CheckpointName, 0, payload)
}

// run runs or resumes the round p.
func (r *Runner) run(ctx context.Context, p *progress) error {
	conn, err := pgx.Connect(ctx, r.opts.DSN)
	if err != nil {
		return fmt.Errorf("checksum: connecting to the source %s: %w", secret.URL(r.opts.DSN), secret.DSNError(r.opts.DSN, err))
	}
	defer conn.Close(context.WithoutCancel(ctx))
	tables, err := LoadTables(ctx, conn, r.opts.Publication, r.opts.Protected, r.opts.Logger)
	if err != nil {
		return err
	}
	byName := map[string]replica.SourceTable{}
	for _, t := range tables {
		byName[t.Table.String()] = t
	}
	if p.Tables == nil {
		for _, t := range tables {
			if p.Only == "" || t.Table.String() == p.Only || (t.Table.Schema == change.DefaultSchema && t.Table.Name == p.Only) {
				p.Tables = append(p.Tables, t.Table.String())
			}
		}
		if p.Only != "" && len(p.Tables) == 0 {
			return fmt.Errorf("checksum: table %q is not in publication %q with a usable primary key", p.Only, r.opts.Publication)
		}
	}
	r.mu.Lock()
	r.status = Status{Running: true, Round: p.Round, Chunks: p.Chunks, LastRound: r.status.LastRound, LastEnd: r.status.LastEnd}
	r.mu.Unlock()
	r.opts.Logger.Info("checksum: round", "round", p.Round, "tables", len(p.Tables), "from_table", p.Index, "from_chunk", p.Chunk)
	pause := time.Duration(float64(time.Second) / r.opts.Rate)
	var skipped []string
	for ; p.Index < len(p.Tables); p.Index, p.After, p.Chunk = p.Index+1, nil, 0 {
		t, ok := byName[p.Tables[p.Index]]
		if !ok {
			r.opts.Logger.Warn("checksum: table left the publication during the round", "table", p.Tables[p.Index])
			continue
		}
		r.mu.Lock()
		r.status.Table = t.Table.String()
		r.mu.Unlock()
		if err := r.checkTable(ctx, conn, t, p, pause); err != nil {
			// The source refused this table's statements (a PostgreSQL
			// error; the connection is fine): the table is left out of
			// this round and the others are still checked, rather than
			// the round failing at this table again at every retry.
			var pe *pgconn.PgError
			if ctx.Err() != nil || conn.IsClosed() || !errors.As(err, &pe) {
				return err
			}
			r.opts.Logger.Warn("checksum: table not checked in this round", "round", p.Round, "table", t.Table.String(), "chunk", p.Chunk+1, "err", err)
			skipped = append(skipped, fmt.Sprintf("%s: %v", t.Table, err))
		}
		if err := r.save(ctx, &progress{Round: p.Round, Only: p.Only, Tables: p.Tables, Index: p.Index + 1, Chunks: p.Chunks}); err != nil {
			return err
		}
	}
	done, _ := json.Marshal(replica.ChecksumMessage{Round: p.Round, Done: true, Chunks: p.Chunks, Tables: p.Tables})
	if _, err := conn.Exec(ctx, `SELECT pg_logical_emit_message(true, $1, $2::text)`, replica.ChecksumPrefix, string(done)); err != nil {
		return fmt.Errorf("checksum: round %s: emitting its end: %w", p.Round, err)
	}
	if err := r.save(ctx, nil); err != nil {
		return err
	}
	r.mu.Lock()
	r.status = Status{LastRound: p.Round, LastEnd: time.Now().UTC(), Chunks: p.Chunks}
	if len(skipped) > 0 {
		r.status.LastError = "round " + p.Round + ": not checked: " + strings.Join(skipped, "; ")
	}
	r.mu.Unlock()
	r.opts.Logger.Info("checksum: round done", "round", p.Round, "chunks", p.Chunks)
	return nil
}

// checkTable checks the chunks of t from p's position to the table's end,
// saving p after each chunk but the last.
func (r *Runner) checkTable(ctx context.Context, conn *pgx.Conn, t replica.SourceTable, p *progress, pause time.Duration) error {
	for {
		m := replica.ChecksumMessage{Round: p.Round, Table: t.Table.String(), Chunk: p.Chunk + 1, Key: t.Key}
		for _, c := range t.Columns {
			m.Columns = append(m.Columns, c.Name)
		}
		sum, err := retryLocked(ctx, func() (replica.ChunkSum, error) {
			return emitChunk(ctx, conn, t, m, p.After, nil, 1, r.opts.ChunkRows)
		})
		if err != nil {
			return err
		}
		// Rechecks of the same range, each in a new transaction, until
		// two in a row agree at the source (see the package doc).
		prev := sum
		for attempt := 2; attempt <= MaxAttempts; attempt++ {
			next, err := retryLocked(ctx, func() (replica.ChunkSum, error) {
				return emitChunk(ctx, conn, t, m, p.After, sum.Hi, attempt, 0)
			})
			if err != nil {
				return err
			}
			if next.Rows == prev.Rows && next.Hash == prev.Hash {
				break
			}
			prev = next
		}
		p.Chunk++
		p.Chunks++
		p.After = sum.Hi
		r.mu.Lock()
		r.status.Chunks = p.Chunks
		r.mu.Unlock()
		if !sum.Truncated {
			break
		}
		if err := r.save(ctx, p); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pause):
		}
	}
	return nil
}

// MaxAttempts bounds the checks of one chunk's range in a round: a check
// and rechecks until two in a row agree at the source.
const MaxAttempts = 8

// LockTimeout bounds how long a chunk's transaction waits for a row lock.
// It is below PostgreSQL's default deadlock_timeout (1s), so in a lock
// cycle with an application's transaction the check gives up first and
// the application never sees a deadlock error caused by a check.
const LockTimeout = 200 * time.Millisecond

// retryLocked runs f again while it fails on a lock (timeout, deadlock,
// serialization), up to a limit.
func retryLocked(ctx context.Context, f func() (replica.ChunkSum, error)) (replica.ChunkSum, error) {
	for i := 0; ; i++ {
		sum, err := f()
		var pe *pgconn.PgError
		if err == nil || i == 100 || !errors.As(err, &pe) || (pe.Code != "55P03" && pe.Code != "40P01" && pe.Code != "40001") {
			return sum, err
		}
		select {
		case <-ctx.Done():
			return sum, ctx.Err()
		case <-time.After(time.Duration(10+rand.IntN(50*min(i+1, 10))) * time.Millisecond):
		}
	}
}

// emitChunk hashes the range (after, hi] of t (at most limit rows when
// limit > 0) in one source transaction, emitting the message m with it.
func emitChunk(ctx context.Context, conn *pgx.Conn, t replica.SourceTable, m replica.ChecksumMessage, after, hi []string, attempt, limit int) (replica.ChunkSum, error) {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return replica.ChunkSum{}, err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, fmt.Sprintf(`SET LOCAL lock_timeout = %d`, LockTimeout.Milliseconds())); err != nil {
		return replica.ChunkSum{}, err
	}
	sum, err := replica.SourceChunk(ctx, tx, t, after, hi, limit)
	if err != nil {
		return replica.ChunkSum{}, err
	}
	m.Attempt, m.After, m.Hi, m.Lo, m.Last, m.Rows, m.Hash = attempt, after, sum.Hi, sum.Lo, sum.Last, sum.Rows, sum.Hash
	b, err := json.Marshal(m)
	if err != nil {
		return replica.ChunkSum{}, err
	}
	if _, err := tx.Exec(ctx, `SELECT pg_logical_emit_message(true, $1, $2::text)`, replica.ChecksumPrefix, string(b)); err != nil {
		return replica.ChunkSum{}, fmt.Errorf("checksum: %s chunk %d: %w", m.Table, m.Chunk, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return replica.ChunkSum{}, fmt.Errorf("checksum: %s chunk %d: commit: %w", m.Table, m.Chunk, err)
	}
	return sum, nil
}

// LoadTables returns the tables of publication pub that can be checked:
// with a primary key of supported types (integers, text, uuid); the
// others are logged and left out. Columns are the published ones.
func LoadTables(ctx context.Context, conn *pgx.Conn, pub string, protected map[string][]string, log *slog.Logger) ([]replica.SourceTable, error) {
	var version int
	if err := conn.QueryRow(ctx, `SELECT current_setting('server_version_num')::int`).Scan(&version); err != nil {
		return nil, fmt.Errorf("checksum: reading the server version: %w", err)
	}
	attnames, rowfilter := `NULL::text[]`, `NULL::text`
	if version >= 150000 {
		attnames, rowfilter = `pt.attnames::text[]`, `pt.rowfilter`
	}
	// Generated columns are not replicated (pgoutput leaves them out in
	// PostgreSQL 15), so replicas do not hold them.
	rows, err := conn.Query(ctx, `
SELECT pt.schemaname::text, pt.tablename::text, a.attname::text, ty.typname::text,
       coalesce((SELECT k.n FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(att, n) WHERE k.att = a.attnum), 0)::int,
       coalesce(`+rowfilter+`, '')
FROM pg_publication_tables pt
JOIN pg_namespace n ON n.nspname = pt.schemaname
JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_type ty ON ty.oid = a.atttypid
LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary
WHERE pt.pubname = $1 AND a.attgenerated = '' AND (`+attnames+` IS NULL OR a.attname = ANY(`+attnames+`))
ORDER BY 1, 2, a.attnum`, pub)
	if err != nil {
		return nil, fmt.Errorf("checksum: reading the tables of publication %q: %w", pub, err)
	}
	defer rows.Close()
	var out []replica.SourceTable
	keys := map[int]string{}
	finish := func() {
		if len(out) == 0 {
			return
		}
		t := &out[len(out)-1]
		for i := 1; i <= len(keys); i++ {
			k, ok := keys[i]
			if !ok {
				t.Key = nil // a key column is not published
				break
			}
			t.Key = append(t.Key, k)
		}
		clear(keys)
	}
	for rows.Next() {
		var schema, name, col, typ, filter string
		var keyPos int
		if err := rows.Scan(&schema, &name, &col, &typ, &keyPos, &filter); err != nil {
			return nil, err
		}
		tb := change.Table{Schema: schema, Name: name}
		if len(out) == 0 || out[len(out)-1].Table != tb {
			finish()
			out = append(out, replica.SourceTable{Table: tb, Filter: filter})
		}
		t := &out[len(out)-1]
		if keyPos > 0 {
			keys[keyPos] = col
		}
		// A hashed or masked column holds, in replicas, what walship
		// wrote in its place: it is left out of the hash on both sides
		// (the message names the columns hashed).
		if slices.Contains(protected[tb.String()], col) {
			continue
		}
		t.Columns = append(t.Columns, replica.SourceColumn{Name: col, Type: typ})
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	finish()
	usable := out[:0]
	for _, t := range out {
		ok := len(t.Key) > 0
		for _, k := range t.Key {
			for _, c := range t.Columns {
				if c.Name == k && !replica.KeySupported(c.Type) {
					ok = false
				}
			}
		}
		if !ok {
			log.Warn("checksum: table not checked: no primary key of integer, text or uuid columns", "table", t.Table.String())
			continue
		}
		usable = append(usable, t)
	}
	return usable, nil
}
