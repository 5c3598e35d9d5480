package pgsource

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/walship/walship/change"
	"github.com/walship/walship/checkpoint"
	"github.com/walship/walship/internal/health"
	"github.com/walship/walship/internal/secret"
	"github.com/walship/walship/wal"
)

// HeartbeatPrefix is the logical message prefix of walship's heartbeats;
// they are never written to the log.
const HeartbeatPrefix = "walship.heartbeat"

// FatalError is an error that retrying cannot fix (configuration, missing
// privileges, a dropped or invalidated slot). Run returns it; other errors
// (connection loss, server restart) are retried by Run itself.
type FatalError struct{ Err error }

func (e *FatalError) Error() string { return e.Err.Error() }
func (e *FatalError) Unwrap() error { return e.Err }

func fatalf(format string, args ...any) error {
	return &FatalError{Err: fmt.Errorf(format, args...)}
}

// GateError is the error of Options.Gate (Unwrap gives it) with what was
// not done; Run returns it inside a *FatalError.
type GateError struct {
	What string // e.g. "confirm 0/16B3748 to the server", "append transaction 7 (commit 0/16B3700) to the log"
	Err  error
}

func (e *GateError) Error() string {
	return "pgsource: gate shut, did not " + e.What + ": " + e.Err.Error()
}
func (e *GateError) Unwrap() error { return e.Err }

// ErrSlotLost matches (errors.Is) the error of a replication slot that was
// dropped or invalidated after walship began using it: the changes it
// retained are gone and the log cannot be continued without a new snapshot.
var ErrSlotLost = errors.New("replication slot lost")

// ErrSlotNotFound matches (errors.Is) the error of SlotConfirmed when the
// slot does not exist.
var ErrSlotNotFound = errors.New("replication slot not found")

// Stats is a point-in-time view of a Source.
type Stats struct {
	SlotLagBytes  int64  // pg_current_wal_lsn() - confirmed_flush_lsn, from the last health check
	ConfirmedLSN  uint64 // source LSN last confirmed (flushed) to Postgres
	LastSourceLSN uint64 // commit LSN of the last transaction received
	Txns          uint64 // transactions appended to the log (snapshot chunks included)
	Changes       uint64 // changes appended to the log
	Skipped       uint64 // received transactions already in the log (restart dedup)
	Reconnects    uint64
	// OpenTxnChanges counts the changes received of the transaction being
	// received (not yet committed); 0 between transactions.
	OpenTxnChanges uint64
	// LoggedSourceLSN is the commit LSN (change.TxHeader.SourceLSN) of this
	// source's newest transaction in the log: found by the scan of the
	// log on start (LogScanned), then moved by each append. Received
	// transactions at or below it are skipped. A new HA leader compares it
	// with SlotConfirmed to find transactions confirmed but not in its log.
	LoggedSourceLSN uint64
	// LogScanned: Run's start-up scan of the log is done; LoggedSourceLSN
	// is meaningful.
	LogScanned bool

	SnapshotTables     int    // tables to copy
	SnapshotTablesDone int    // tables copied
	SnapshotRows       uint64 // rows copied by this process
	SnapshotBytes      uint64 // text bytes copied by this process
	SnapshotDone       bool

	// Incremental snapshots (RequestSnapshot): the table being copied
	// ("" if none), rows and chunks copied by this process, and the
	// requests queued or under way, and those abandoned by this process
	// (their SELECT failed on the SQL or the data; see SnapshotRequests).
	IncrementalTable   string
	IncrementalRows    uint64
	IncrementalChunks  uint64
	IncrementalPending int
	IncrementalFailed  int

	// Server is the PostgreSQL server's health: every session's connection
	// and stream, and the slot check every few seconds, report to it.
	Server health.State
}

// Source captures one PostgreSQL database into a WAL. Create it with New
// and call Run once; Stats may be called concurrently.
type Source struct {
	cfg      Options
	w        *wal.WAL
	ckpts    *checkpoint.Store
	log      *slog.Logger
	ckptName string
	origin   string

	types *typeCache
	toast *toastCache
	rels  map[uint32]*relation
	// protected: the hashed and masked columns of each table (Options.Tables).
	protected map[change.Table]protection
	// signalTable is Options.SignalTable parsed (zero if none): compared
	// with every streamed insert.
	signalTable change.Table
	// serverVersion is server_version_num, read by check.
	serverVersion int
	// pubAdded: the tables the publication gained at this session's start.
	pubAdded []change.Table
	// pubTables: how the publication publishes each table (the snapshot
	// copies the same rows and columns).
	pubTables map[change.Table]pubTable

	// floor is the newest commit LSN of this source's transactions already
	// in the log: received transactions at or below it are skipped.
	floor uint64
	// recoveredEnd is the last log LSN recovery scanned: a skipped
	// transaction's copy lies at or below it.
	recoveredEnd uint64
	state        ckptState
	// ckptPos is the WAL LSN the state is valid up to (scan start).
	ckptPos      uint64
	lastCkptSave time.Time

	st struct {
		slotLag, confirmed, lastSource, txns, changes, skipped, reconnects, openTxn atomic.Int64
		snapRows, snapBytes                                                         atomic.Int64
		snapTables, snapTablesDone                                                  atomic.Int64
		logged                                                                      atomic.Int64
		snapDone, scanned                                                           atomic.Bool
	}
	ran    atomic.Bool
	server health.Tracker
	// takeOverWait bounds the wait for a terminated slot holder to let go.
	takeOverWait time.Duration
	inc          incState
}

// ckptState is the checkpoint payload (JSON). Pos of the checkpoint is a WAL
// LSN: every transaction of this source at a lower LSN has a commit LSN at
// most SourceLSN.
type ckptState struct {
	SourceLSN uint64 `json:"source_lsn"`
	// Started: the slot was created (or adopted) by walship. A missing slot
	// is then an error, never silently recreated.
	Started  bool       `json:"started"`
	Snapshot *snapState `json:"snapshot,omitempty"`
	// Incremental holds the incremental snapshots not yet done, with the
	// key of the last row durable in the log (incsnap.go).
	Incremental []SnapshotRequest `json:"incremental,omitempty"`
}

type snapState struct {
	Done   bool                      `json:"done"`
	Tables map[string]*tableProgress `json:"tables"`
	// XSnap is the slot's exported snapshot as pg_current_snapshot text: a
	// resumed copy of a table without a key keeps only rows it shows.
	XSnap string `json:"xsnap,omitempty"`
	// Stopped: the last run stopped with the progress of every chunk it
	// appended recorded (a crash may leave chunks in the log beyond it).
	Stopped bool `json:"stopped,omitempty"`
	// resumed: this run reads a fresh snapshot, not the exported one;
	// exact: it follows a stop, not a crash.
	resumed, exact bool
}

type tableProgress struct {
	Done bool     `json:"done"`
	Last []string `json:"last,omitempty"` // text of the primary key of the last row copied
	// Removed: the table left the publication after the snapshot; if it
	// comes back it is backfilled (its changes meanwhile were not captured).
	Removed bool `json:"removed,omitempty"`
	// Spec is what the publication published of the table when it was
	// last copied: its row filter and column list ("filter|columns"). A
	// change copies the table again; "" when not known.
	Spec string `json:"spec,omitempty"`
	// Page is the next heap page to copy of a table without a key copied
	// by ctid ranges, FileNode the table's storage it belongs to.
	Page     int64  `json:"page,omitempty"`
	FileNode uint32 `json:"filenode,omitempty"`
}

// New validates cfg (filling in defaults) and returns a Source appending
// to w and keeping its resume state in ckpts under "pg.<slot>". It does no
// I/O.
func New(cfg Options, w *wal.WAL, ckpts *checkpoint.Store) (*Source, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if w == nil || ckpts == nil {
		return nil, errors.New("pgsource: New needs a WAL and a checkpoint store")
	}
	return &Source{cfg: cfg, w: w, ckpts: ckpts, log: cfg.Logger.With("source", "postgres", "slot", cfg.Slot),
		ckptName: "pg." + cfg.Slot, origin: "pg/" + cfg.Slot, types: newTypeCache(),
		toast: newToastCache(cfg.ToastCacheBytes), rels: map[uint32]*relation{}, takeOverWait: 30 * time.Second,
		protected: protections(cfg.Tables), signalTable: signalTableOf(cfg.SignalTable)}, nil
}

// Stats returns current counters; safe for concurrent use.
func (s *Source) Stats() Stats {
	st := Stats{
		SlotLagBytes: s.st.slotLag.Load(), ConfirmedLSN: uint64(s.st.confirmed.Load()),
		LastSourceLSN: uint64(s.st.lastSource.Load()), Txns: uint64(s.st.txns.Load()),
		Changes: uint64(s.st.changes.Load()), Skipped: uint64(s.st.skipped.Load()),
		Reconnects: uint64(s.st.reconnects.Load()), OpenTxnChanges: uint64(s.st.openTxn.Load()),
		SnapshotTables: int(s.st.snapTables.Load()), SnapshotTablesDone: int(s.st.snapTablesDone.Load()),
		SnapshotRows: uint64(s.st.snapRows.Load()), SnapshotBytes: uint64(s.st.snapBytes.Load()),
		SnapshotDone: s.st.snapDone.Load(), Server: s.server.State(),
		LoggedSourceLSN: uint64(s.st.logged.Load()), LogScanned: s.st.scanned.Load(),
	}
	s.incStats(&st)
	return st
}

// Run captures until ctx ends, then stops reading, waits until everything
// appended is durable, sends Postgres a last standby status confirming the
// newest durable commit, saves its checkpoint and returns nil.
//
// On start it checks the server (wal_level, REPLICATION privilege, tables),
// creates the publication and slot if absent, recognises the transactions
// already in the log, copies the tables if a snapshot is due (resuming a
// snapshot cut short), then streams. Errors that a retry cannot fix are
// returned as *FatalError; a lost connection or server restart is retried
// with backoff (transactions in flight are received again and deduplicated).
// The first connection failing is returned, so that a bad DSN is reported.
func (s *Source) Run(ctx context.Context) error {
	if !s.ran.CompareAndSwap(false, true) {
		return errors.New("pgsource: Run called twice")
	}
	if err := s.recover(ctx); err != nil {
		return err
	}
	backoff := 250 * time.Millisecond
	for attempt := 0; ; attempt++ {
		err := s.session(ctx, attempt == 0)
		if err != nil && ctx.Err() == nil {
			s.server.Fail(err)
		}
		if err == nil {
			return nil // stopped: everything appended is durable and confirmed
		}
		if ctx.Err() != nil {
			// Stopping. A failure of the log itself still counts.
			var fe *FatalError
			if errors.As(err, &fe) && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
				return err
			}
			return nil
		}
		var fe *FatalError
		if errors.As(err, &fe) || !retryable(err) {
			if !errors.As(err, &fe) {
				err = &FatalError{Err: err}
			}
			return err
		}
		s.st.reconnects.Add(1)
		s.log.Warn("postgres source: connection lost, reconnecting", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

// retryable says whether err is transient: network failures, the server
// shutting down or starting up, too many connections.
func retryable(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case strings.HasPrefix(pe.Code, "08"), pe.Code == "57P01", pe.Code == "57P02",
			pe.Code == "57P03", pe.Code == "53300", pe.Code == "55006": // slot active elsewhere (old session)
			return true
		}
		return false
	}
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		pgconn.SafeToRetry(err) || strings.Contains(err.Error(), "conn closed") ||
		strings.Contains(err.Error(), "connection refused") || strings.Contains(err.Error(), "unexpected EOF")
}

// recover loads the checkpoint and scans the log from its position for this
// source's newest commit already written (docs/DESIGN.md §4.4).
//
// Without the checkpoint (a new HA leader's log, built by a follower, has
// the old leader's transactions but not its checkpoints) the whole log is
// scanned, and the state of the initial snapshot is read from it too
// (snapshotInLog).
func (s *Source) recover(ctx context.Context) error {
	c, haveCkpt := s.ckpts.Get(s.ckptName)
	// A reset checkpoint (no payload: a new HA leader resets it, the log
	// having grown under other leaders) is none.
	haveCkpt = haveCkpt && len(c.Payload) > 0
	if haveCkpt {
		if err := json.Unmarshal(c.Payload, &s.state); err != nil {
			return fatalf("pgsource: checkpoint %s: %v", s.ckptName, err)
		}
		s.ckptPos = c.Pos
	}
	s.floor = s.state.SourceLSN
	s.ckptPos = max(s.ckptPos, s.w.FirstLSN())
	r, err := s.w.NewReader(s.ckptPos, false)
	if err != nil {
		return fmt.Errorf("pgsource: scan the log for transactions already captured: %w", err)
	}
	defer r.Close()
	end := s.ckptPos
	snap := snapUnknown
	for {
		t, err := r.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("pgsource: scan the log for transactions already captured: %w", err)
		}
		end = t.CommitLSN + 1
		if !s.mine(&t.Header) {
			continue
		}
		if t.Header.SourceLSN > s.floor {
			s.floor = t.Header.SourceLSN
		}
		if e := snapshotEvent(t); e != snapUnknown {
			snap = e
		}
	}
	scannedFrom := s.ckptPos
	s.state.SourceLSN, s.ckptPos = s.floor, end
	if end > 0 {
		s.recoveredEnd = end - 1
	}
	if !haveCkpt {
		switch snap {
		case snapDone:
			s.state.Snapshot = &snapState{Done: true, Tables: map[string]*tableProgress{}}
			s.log.Info("postgres source: no checkpoint " + s.ckptName + "; the log shows this source's initial snapshot complete, it is not taken again")
		case snapPartial:
			s.log.Warn("postgres source: no checkpoint " + s.ckptName + " and the log holds part of this source's initial snapshot: " +
				"if the slot exists, the snapshot is taken again whole, from a fresh snapshot (docs/POSTGRES.md, \"Takeover\")")
		}
	}
	s.st.lastSource.Store(int64(s.floor))
	s.st.logged.Store(int64(s.floor))
	s.st.scanned.Store(true)
	s.log.Info("postgres source: resuming", "log_scanned_from", scannedFrom, "newest_commit_in_log", pglogrepl.LSN(s.floor))
	return nil
}

// SnapshotDonePrefix is the prefix of the logical message that ends an
// initial snapshot in the log: one transaction of one `m` change (origin
// "pg/<slot>", no source LSN, content {"tables":N}), appended once
// every chunk is durable. Appliers ignore it like any logical message; it
// lets any copy of the log (a follower's, built from Kafka) know that the
// snapshot finished, without the checkpoint (docs/POSTGRES.md, "Takeover").
const SnapshotDonePrefix = "walship.snapshot_done"

// logSnap is what a transaction of this source says about its initial
// snapshot.
type logSnap int

const (
	snapUnknown logSnap = iota // says nothing
	snapPartial                // a snapshot chunk: a snapshot was under way
	snapDone                   // the end marker, or a streamed transaction
)

// snapshotEvent classifies a transaction of this source. A streamed
// transaction (it has a source LSN) means the snapshot was done: a session
// streams only after its snapshot finished. The last event in log order
// wins, so chunks after a marker (a slot dropped and recreated) mean a
// snapshot under way again.
func snapshotEvent(t *change.Committed) logSnap {
	switch {
	case t.Header.SourceLSN != 0:
		return snapDone
	case len(t.Changes) == 1 && t.Changes[0].Op == change.Message && t.Changes[0].Message != nil &&
		t.Changes[0].Message.Prefix == SnapshotDonePrefix:
		return snapDone
	case len(t.Changes) > 0 && t.Changes[0].Op == change.Read:
		return snapPartial
	}
	return snapUnknown
}

// SlotConfirmed returns the slot's confirmed_flush_lsn: every transaction
// whose commit LSN (change.TxHeader.SourceLSN) is below it has been
// confirmed to the server by some holder of the slot, and the server will
// not send it again. With Stats.LoggedSourceLSN it gives a new HA leader
// the range confirmed but missing from its log. It opens a connection of
// its own (blocks for one query); safe to call at any time, before Run or
// concurrently with it. A slot that does not exist gives an error matching
// ErrSlotNotFound.
func (s *Source) SlotConfirmed(ctx context.Context) (uint64, error) {
	q, err := s.connect(ctx, false)
	if err != nil {
		return 0, fmt.Errorf("pgsource: read the confirmed position of slot %q: %w", s.cfg.Slot, err)
	}
	defer q.Close(context.Background())
	if s.cfg.TakeOverSlot {
		// End any other holder first: a confirmation it sent before its
		// term lapsed, still in flight, must not move the slot after the
		// position is read (a new HA leader's loss check).
		if err := s.takeOver(ctx, q, 0); err != nil {
			return 0, err
		}
	}
	var lsn pglogrepl.LSN
	err = q.QueryRow(ctx, "SELECT coalesce(confirmed_flush_lsn, '0/0') FROM pg_replication_slots WHERE slot_name = $1",
		s.cfg.Slot).Scan(&lsn)
	if err == pgx.ErrNoRows {
		return 0, fmt.Errorf("source.postgres.slot: %w: slot %q does not exist", ErrSlotNotFound, s.cfg.Slot)
	}
	if err != nil {
		return 0, fmt.Errorf("pgsource: read the confirmed position of slot %q: %w", s.cfg.Slot, err)
	}
	return uint64(lsn), nil
}

// takeOver terminates the backend holding the slot, unless it is own (this
// session's replication connection), and waits until the slot is free,
// terminating again whoever takes it meanwhile (an old leader that
// reconnects). A missing slot is left to START_REPLICATION to report.
func (s *Source) takeOver(ctx context.Context, q *pgx.Conn, own uint32) error {
	deadline := time.Now().Add(s.takeOverWait)
	var last int32 // the last holder terminated
	for {
		var pid *int32
		err := q.QueryRow(ctx, "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1", s.cfg.Slot).Scan(&pid)
		if err == pgx.ErrNoRows || err == nil && (pid == nil || uint32(*pid) == own) {
			if last != 0 {
				s.log.Info("postgres source: replication slot taken over", "old_pid", last)
			}
			return nil
		}
		if err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fatalf("source.postgres.slot: take over slot %q: the backend holding it (pid %d) was terminated "+
				"but still holds it after %v", s.cfg.Slot, *pid, s.takeOverWait)
		}
		if *pid != last {
			s.log.Warn("postgres source: taking over the replication slot: terminating the backend holding it",
				"pid", *pid)
			var ok bool
			if err := q.QueryRow(ctx, "SELECT pg_terminate_backend($1)", *pid).Scan(&ok); err != nil {
				var pe *pgconn.PgError
				if errors.As(err, &pe) && pe.Code == "42501" {
					return fatalf("source.postgres.slot: take over slot %q: cannot terminate the backend holding it "+
						"(pid %d): %s: the role needs superuser, pg_signal_backend, or to be the holder's role", s.cfg.Slot, *pid, pe.Message)
				}
				return err
			}
			last = *pid
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// NewestInLog returns the newest source commit position among this
// source's transactions in the log, 0 if it holds none. It reads the
// segments from the newest back, each up to the next, and stops at the
// first that holds one: what a new HA leader compares with the slot's
// confirmed position before the source runs (the same position Run's
// start-up scan finds, LoggedSourceLSN). Transactions of other sources
// (another slot, the HTTP source's, whatever source_lsn they carry) do
// not count.
func (s *Source) NewestInLog(ctx context.Context) (uint64, error) {
	segs := s.w.Segments()
	for i := len(segs) - 1; i >= 0; i-- {
		end := uint64(math.MaxUint64)
		if i+1 < len(segs) {
			end = segs[i+1].BaseLSN
		}
		newest, err := s.newestIn(ctx, max(segs[i].BaseLSN, s.w.FirstLSN()), end)
		if err != nil || newest != 0 {
			return newest, err
		}
	}
	return 0, nil
}

// newestIn is NewestInLog over the transactions that begin in [from, end).
func (s *Source) newestIn(ctx context.Context, from, end uint64) (uint64, error) {
	r, err := s.w.NewReader(from, false)
	if err != nil {
		return 0, fmt.Errorf("pgsource: read the log for this source's newest commit: %w", err)
	}
	defer r.Close()
	var newest uint64
	for {
		t, err := r.Next(ctx)
		if errors.Is(err, io.EOF) {
			return newest, nil
		}
		if err != nil {
			return 0, fmt.Errorf("pgsource: read the log for this source's newest commit: %w", err)
		}
		if t.FirstLSN >= end {
			return newest, nil
		}
		if s.mine(&t.Header) {
			newest = max(newest, t.Header.SourceLSN)
		}
	}
}

func (s *Source) mine(h *change.TxHeader) bool {
	return h.Origin == s.origin || strings.HasPrefix(h.Origin, s.origin+"/")
}

// saveCheckpoint durably records the state, valid up to WAL LSN pos.
func (s *Source) saveCheckpoint(ctx context.Context) error {
	s.state.Incremental = s.incStateForCheckpoint()
	b, err := json.Marshal(&s.state)
	if err != nil {
		return err
	}
	if err := s.ckpts.SetBackward(ctx, s.ckptName, s.ckptPos, b); err != nil {
		return fmt.Errorf("pgsource: save checkpoint: %w", err)
	}
	s.lastCkptSave = time.Now()
	return nil
}

// connConfig parses the DSN with the session settings the text decoding
// relies on (UTC, ISO dates, exact floats, hex bytea).
func (s *Source) connConfig(replication bool) (*pgconn.Config, error) {
	pc, err := pgconn.ParseConfig(s.cfg.DSN)
	if err != nil {
		return nil, &FatalError{Err: cfgErr("dsn", "%v", secret.DSNError(s.cfg.DSN, err))}
	}
	for k, v := range map[string]string{"TimeZone": "UTC", "DateStyle": "ISO, YMD", "extra_float_digits": "3",
		"IntervalStyle": "postgres", "bytea_output": "hex", "application_name": "walship"} {
		pc.RuntimeParams[k] = v
	}
	if replication {
		pc.RuntimeParams["replication"] = "database"
		// Large reads: the stream is a flood of small messages.
		pc.BuildFrontend = func(r io.Reader, w io.Writer) *pgproto3.Frontend {
			return pgproto3.NewFrontend(bufio.NewReaderSize(r, 256<<10), w)
		}
	}
	return pc, nil
}

func (s *Source) connect(ctx context.Context, first bool) (*pgx.Conn, error) {
	pc, err := s.connConfig(false)
	if err != nil {
		return nil, err
	}
	cc, err := pgx.ParseConfig("")
	if err != nil {
		return nil, err
	}
	cc.Config = *pc
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return nil, s.connectErr(err, first)
	}
	return conn, nil
}

func (s *Source) connectRepl(ctx context.Context, first bool) (*pgconn.PgConn, error) {
	pc, err := s.connConfig(true)
	if err != nil {
		return nil, err
	}
	conn, err := pgconn.ConnectConfig(ctx, pc)
	if err != nil {
		return nil, s.connectErr(err, first)
	}
	return conn, nil
}

func (s *Source) connectErr(err error, first bool) error {
	// The driver's errors name the host, and a password with an unencoded
	// '@' makes part of it the host.
	err = secret.DSNError(s.cfg.DSN, err)
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "28000", "28P01", "3D000", "42501":
			if pe.Code == "28000" && strings.Contains(pe.Message, "replication") {
				return fatalf("source.postgres.dsn: the server refuses replication connections for this role (%s): "+
					"allow them in pg_hba.conf (a \"replication\" line) and grant the role REPLICATION", pe.Message)
			}
			return fatalf("source.postgres.dsn: cannot connect: %w", err)
		}
	}
	if first {
		return fatalf("source.postgres.dsn: cannot connect: %w", err)
	}
	return err
}

// session connects, prepares, snapshots if due and streams until ctx ends
// (returning nil) or an error.
func (s *Source) session(ctx context.Context, first bool) error {
	q, err := s.connect(ctx, first)
	if err != nil {
		return err
	}
	defer q.Close(context.Background())
	if err := s.check(ctx, q); err != nil {
		return err
	}
	repl, err := s.connectRepl(ctx, first)
	if err != nil {
		return err
	}
	defer repl.Close(context.Background())
	s.server.OK() // both connections are made

	snapName, err := s.ensureSlot(ctx, q, repl)
	if err != nil {
		return err
	}
	if s.cfg.Snapshot == "initial" && (s.state.Snapshot == nil || !s.state.Snapshot.Done) {
		if err := s.snapshot(ctx, q, snapName); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return nil
		}
	} else {
		s.st.snapDone.Store(s.state.Snapshot != nil && s.state.Snapshot.Done)
	}
	if err := s.incPrepare(ctx, q); err != nil {
		return err
	}
	return s.stream(ctx, q, repl)
}

// check verifies the server settings, the role and the tables, and creates
// the publication if absent.
func (s *Source) check(ctx context.Context, q *pgx.Conn) error {
	var walLevel string
	if err := q.QueryRow(ctx, "SHOW wal_level").Scan(&walLevel); err != nil {
		return err
	}
	if walLevel != "logical" {
		return fatalf("source.postgres: the server's wal_level is %q but logical replication needs wal_level = logical: "+
			"run ALTER SYSTEM SET wal_level = logical (or set it in postgresql.conf) and restart PostgreSQL", walLevel)
	}
	var role string
	var canRepl bool
	if err := q.QueryRow(ctx, "SELECT current_user::text, rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user").
		Scan(&role, &canRepl); err != nil {
		return err
	}
	if !canRepl {
		return fatalf("source.postgres.dsn: role %q lacks the REPLICATION attribute needed for logical replication: "+
			"run ALTER ROLE %s REPLICATION (as a superuser)", role, pgx.Identifier{role}.Sanitize())
	}
	if err := s.checkTables(ctx, q); err != nil {
		return err
	}
	if err := s.ensurePublication(ctx, q); err != nil {
		return err
	}
	// Tables whose updates and deletes Postgres itself refuses to publish.
	rows, err := q.Query(ctx, `SELECT n.nspname, c.relname, c.relreplident::text FROM pg_publication_tables p
		JOIN pg_namespace n ON n.nspname = p.schemaname JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = p.tablename
		WHERE p.pubname = $1 AND (c.relreplident = 'n' OR (c.relreplident = 'd' AND NOT EXISTS
			(SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)))`, s.cfg.Publication)
	if err != nil {
		return err
	}
	for rows.Next() {
		var nsp, rel, ident string
		if err := rows.Scan(&nsp, &rel, &ident); err != nil {
			return err
		}
		what := "has no primary key and REPLICA IDENTITY DEFAULT"
		if ident == "n" {
			what = "has REPLICA IDENTITY NOTHING"
		}
		s.log.Warn(fmt.Sprintf("postgres source: table %s %s: its inserts are captured, but PostgreSQL rejects "+
			"UPDATE and DELETE on it while it is published (no replica identity to send); "+
			"add a primary key or run ALTER TABLE ... REPLICA IDENTITY FULL", quoteTable(change.Table{Schema: nsp, Name: rel}), what),
			"table", nsp+"."+rel)
	}
	return rows.Err()
}

func quoteTable(t change.Table) string { return pgx.Identifier{t.Schema, t.Name}.Sanitize() }

// ensureSlot checks the slot, creating it if absent. It returns the name
// of the exported snapshot when it just created the slot with one (then
// repl must run no other command until the snapshot is used).
func (s *Source) ensureSlot(ctx context.Context, q *pgx.Conn, repl *pgconn.PgConn) (string, error) {
	var plugin, db, walStatus string
	var confirmed pglogrepl.LSN
	err := q.QueryRow(ctx, `SELECT plugin::text, coalesce(database::text, ''), coalesce(wal_status, ''),
		coalesce(confirmed_flush_lsn, '0/0') FROM pg_replication_slots WHERE slot_name = $1`, s.cfg.Slot).
		Scan(&plugin, &db, &walStatus, &confirmed)
	switch {
	case err == pgx.ErrNoRows:
		if s.state.Started {
			return "", &FatalError{Err: fmt.Errorf("source.postgres.slot: %w: slot %q no longer exists but walship "+
				"was streaming from it (checkpoint %s): changes made since it was dropped are lost. To start over "+
				"with a new snapshot, delete the checkpoint %s and restart", ErrSlotLost, s.cfg.Slot, s.ckptName, s.ckptName)}
		}
	case err != nil:
		return "", err
	default:
		if plugin != "pgoutput" {
			return "", fatalf("source.postgres.slot: slot %q uses plugin %q, not pgoutput", s.cfg.Slot, plugin)
		}
		if walStatus == "lost" {
			return "", &FatalError{Err: fmt.Errorf("source.postgres.slot: %w: slot %q was invalidated by the server "+
				"(wal_status lost, see max_slot_wal_keep_size): the WAL it needed is gone; drop the slot, delete "+
				"checkpoint %s and restart to take a new snapshot", ErrSlotLost, s.cfg.Slot, s.ckptName)}
		}
		if !s.state.Started {
			s.state.Started = true
			if err := s.saveCheckpoint(ctx); err != nil {
				return "", err
			}
		}
		s.st.confirmed.Store(int64(confirmed))
		return "", nil
	}
	action := "NOEXPORT_SNAPSHOT"
	if s.cfg.Snapshot == "initial" {
		action = "EXPORT_SNAPSHOT"
	}
	res, err := pglogrepl.CreateReplicationSlot(ctx, repl, pgx.Identifier{s.cfg.Slot}.Sanitize(), "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{SnapshotAction: action, Mode: pglogrepl.LogicalReplication})
	if err != nil {
		return "", fmt.Errorf("source.postgres.slot: create slot %q: %w", s.cfg.Slot, err)
	}
	s.log.Info("postgres source: replication slot created", "consistent_point", res.ConsistentPoint)
	s.state.Started = true
	// A new slot starts a new history: whatever the log said of an
	// earlier snapshot, this slot's must be taken (from its export).
	s.state.Snapshot = nil
	if err := s.saveCheckpoint(ctx); err != nil {
		return "", err
	}
	return res.SnapshotName, nil
}

// health sends heartbeats and reads the slot's lag on its own connection
// until ctx ends. A vanished or invalidated slot cancels the session with
// ErrSlotLost.
func (s *Source) health(ctx context.Context, cancel context.CancelCauseFunc, wg *sync.WaitGroup) {
	defer wg.Done()
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	lagEvery := min(s.cfg.StatusInterval*2, 2*time.Second)
	if lagEvery <= 0 {
		lagEvery = 2 * time.Second
	}
	lagT := time.NewTicker(lagEvery)
	defer lagT.Stop()
	hbT := time.NewTicker(s.cfg.Heartbeat)
	defer hbT.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-lagT.C:
		case <-hbT.C:
			if conn != nil {
				if _, err := conn.Exec(ctx, "SELECT pg_logical_emit_message(false, $1, '')", HeartbeatPrefix); err != nil && ctx.Err() == nil {
					s.log.Warn("postgres source: heartbeat failed", "err", err)
					conn.Close(context.Background())
					conn = nil
				}
			}
			continue
		}
		if conn == nil {
			c, err := s.connect(ctx, false)
			if err != nil {
				if ctx.Err() == nil {
					s.server.Fail(err)
				}
				continue // the stream will notice a dead server
			}
			conn = c
		}
		var lag int64
		var walStatus string
		err := conn.QueryRow(ctx, `SELECT coalesce((pg_current_wal_lsn() - confirmed_flush_lsn)::int8, 0),
			coalesce(wal_status, '') FROM pg_replication_slots WHERE slot_name = $1`, s.cfg.Slot).Scan(&lag, &walStatus)
		switch {
		case err == pgx.ErrNoRows:
			cancel(&FatalError{Err: fmt.Errorf("source.postgres.slot: %w: slot %q was dropped while walship was "+
				"streaming from it; delete checkpoint %s and restart to take a new snapshot", ErrSlotLost, s.cfg.Slot, s.ckptName)})
			return
		case err != nil:
			if ctx.Err() == nil {
				s.server.Fail(err)
				conn.Close(context.Background())
				conn = nil
			}
		case walStatus == "lost":
			cancel(&FatalError{Err: fmt.Errorf("source.postgres.slot: %w: slot %q was invalidated (wal_status lost, "+
				"see max_slot_wal_keep_size)", ErrSlotLost, s.cfg.Slot)})
			return
		default:
			s.server.OK()
			s.st.slotLag.Store(lag)
		}
	}
}

// signalTableOf parses a validated Options.SignalTable ("" gives zero).
func signalTableOf(name string) change.Table {
	t, _ := change.ParseTable(name)
	return t
}
