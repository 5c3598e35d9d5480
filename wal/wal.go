// Package wal is walship's transaction log, the facade over the layers
// that write it: a segment.Log (files, frames, recovery) written through a
// groupcommit.Committer (batching concurrent appends into one write and
// one fdatasync). It stores change.Txn transactions as one record per
// change and reads them back as change.Committed. Sources append to it;
// the sinks and the operator tools read it. Its users need no other
// package of the log: options, tickets, reports and verification are
// named here.
//
// # Guarantees
//
//   - Append returns only after the transaction is durable (SyncLocal:
//     an fdatasync covering it completed) or written (SyncOff).
//   - A transaction's changes get consecutive LSNs; LSNs are dense along
//     the log.
//   - A Batch of several transactions (a client's request) is validated
//     and encoded whole before AppendBatchAsync queues all of it as one
//     unit, or none of it; KeyIndex remembers, from the log itself, the
//     idempotency keys such requests carried within a window.
//   - Readers see whole committed, durable transactions only, in LSN
//     order, never a transaction aborted midway (AppendStream).
//   - Commit times never decrease along the log, and a source commit time
//     more than Options.MaxCommitTimeSkew ahead of this host's clock is
//     refused, so one outlier cannot hold every later commit time in the
//     future.
//   - A failed write or fsync is sticky: that append and every later one
//     fail until the log is reopened, and recovery then truncates what was
//     never acknowledged (docs/FORMAT.md §4).
//   - A batch Options.Gate refuses writes nothing: exactly its appends fail
//     (ErrGateRefused) and the log goes on; the refusal is not sticky.
//   - AppendReplica copies a transaction of another log of the same history
//     exactly — LSNs, commit time, whole header — or refuses it, appending
//     nothing: a standby's log reads back as its leader's (docs/HA.md). It
//     copies an aborted range (Reader.ReportAborted) at exactly its LSNs.
//
// # Use
//
// One process opens the log and appends; each Append returns the LSNs the
// transaction got, once it is durable:
//
//	w, _, err := wal.Open(wal.Options{Dir: dir})
//	t, err := w.Append(ctx, &change.Txn{Header: hdr, Changes: changes})
//
// Readers (the sinks, the tools) read whole committed transactions from an
// LSN on, following the log or stopping at its end with io.EOF:
//
//	r, err := w.NewReader(from, follow)
//	tx, err := r.Next(ctx) // a *change.Committed, with its LSNs
//
// The examples are a runnable tour: Example opens a log, appends, reads the
// transactions back and reopens it; WAL.AppendStream's example streams a
// large transaction and shows an aborted one skipped; OpenReadOnly's reads a
// log beside its live writer, as `walship dump` does.
package wal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/walship/walship/change"
	"github.com/walship/walship/groupcommit"
	"github.com/walship/walship/segment"
	"github.com/walship/walship/vfs"
)

// SyncMode says when an append is acknowledged.
type SyncMode uint8

const (
	// SyncLocal acknowledges after an fdatasync covering the transaction:
	// durable against power loss. The default.
	SyncLocal SyncMode = iota
	// SyncOff acknowledges after write(2): durable against a crash of the
	// process only. Readers see data once written.
	SyncOff
)

// ParseSyncMode parses the config and flag spelling: "local" (or "") and
// "off".
func ParseSyncMode(s string) (SyncMode, error) {
	switch s {
	case "", "local":
		return SyncLocal, nil
	case "off":
		return SyncOff, nil
	}
	return 0, fmt.Errorf("wal: unknown sync mode %q (want local or off)", s)
}

func (m SyncMode) String() string {
	if m == SyncOff {
		return "off"
	}
	return "local"
}

func (m SyncMode) committer() (groupcommit.SyncMode, error) {
	switch m {
	case SyncLocal:
		return groupcommit.SyncLocal, nil
	case SyncOff:
		return groupcommit.SyncOff, nil
	}
	return 0, fmt.Errorf("wal: unknown sync mode %d", m)
}

// Compression is the codec new frames' payloads are compressed with
// (docs/FORMAT.md §3). Each frame records its own codec, so a log can be
// reopened with another one.
type Compression uint8

const (
	CompressionNone Compression = iota // the default
	CompressionS2                      // github.com/klauspost/compress/s2: fast
	CompressionZstd                    // github.com/klauspost/compress/zstd: smaller
)

// ParseCompression parses the config and flag spelling: "none" (or ""),
// "s2" and "zstd".
func ParseCompression(s string) (Compression, error) {
	switch s {
	case "", "none":
		return CompressionNone, nil
	case "s2":
		return CompressionS2, nil
	case "zstd":
		return CompressionZstd, nil
	}
	return 0, fmt.Errorf("wal: unknown compression %q (want none, s2 or zstd)", s)
}

func (c Compression) String() string {
	switch c {
	case CompressionNone:
		return "none"
	case CompressionS2:
		return "s2"
	case CompressionZstd:
		return "zstd"
	}
	return fmt.Sprintf("compression(%d)", uint8(c))
}

func (c Compression) codec() (segment.Codec, error) {
	switch c {
	case CompressionNone:
		return segment.CodecNone, nil
	case CompressionS2:
		return segment.CodecS2, nil
	case CompressionZstd:
		return segment.CodecZstd, nil
	}
	return 0, fmt.Errorf("wal: unknown compression %d", c)
}

// ErrRemoved is wrapped by the error of a reader positioned in, or a
// verification reaching, a segment that retention removed meanwhile: the
// log changed under it, it is not damaged.
var ErrRemoved = segment.ErrRemoved

// DefaultSegmentSize is the size segments are cut at when Options leave
// it zero.
const DefaultSegmentSize = segment.DefaultSegmentSize

// Ticket is what an append returns: the LSNs the log gave the transaction
// and the commit time it recorded.
type Ticket struct {
	First, Last uint64 // LSNs of its first and last (commit) record
	CommitTime  int64  // Unix nanoseconds, as recorded in the log
}

// Time returns the commit time as a time.Time in UTC.
func (t Ticket) Time() time.Time { return time.Unix(0, t.CommitTime).UTC() }

func ticket(t groupcommit.Ticket) Ticket {
	return Ticket{First: t.First, Last: t.Last, CommitTime: t.CommitTime}
}

// RecoveryReport says what opening the log found and repaired: a torn
// tail truncated, an unfinished transaction discarded, files removed.
// SegmentInfo describes one retained segment file. Both are the segment
// layer's own descriptions, named here so that users of the log need not
// import it.
type (
	RecoveryReport = segment.RecoveryReport
	SegmentInfo    = segment.SegmentInfo
)

// Options configure a WAL. The zero value is valid except for Dir.
type Options struct {
	Dir         string
	FS          vfs.FS        // default vfs.Default
	Sync        SyncMode      // default SyncLocal
	SegmentSize int64         // default DefaultSegmentSize (64 MiB)
	Compression Compression   // default none
	MinInterval time.Duration // least time between fsyncs; default 0
	// ZeroFill zero-fills each new segment file before it becomes the
	// active one, so that appends never extend a file's size and an
	// fdatasync need not write the file's metadata.
	ZeroFill bool
	Logger   *slog.Logger
	// Observe is called after each flush with the records and bytes it
	// wrote and how long the write and fsync took.
	Observe func(records, bytes int, took time.Duration)
	// MaxPendingBytes bounds the encoded bytes waiting to be flushed (an
	// append beyond it waits); MaxBatchBytes bounds one flush's write.
	// Zero selects the committer's defaults.
	MaxPendingBytes int
	MaxBatchBytes   int
	// MaxCommitTimeSkew is how far ahead of this host's clock a source's
	// commit time may be: an append whose SourceCommitTime is later than
	// now plus this is refused (CheckCommitTime), because commit times
	// never decrease along the log and one far-future time would be given
	// to every later transaction. Zero selects DefaultMaxCommitTimeSkew;
	// negative disables the check.
	MaxCommitTimeSkew time.Duration
	// MaxRecordBytes bounds one encoded change in a Batch (WAL.NewBatch):
	// a larger one is refused as invalid input. Zero (or anything larger)
	// selects MaxRecordBytes, the most a record can hold; a smaller bound
	// suits callers whose readers take smaller records.
	MaxRecordBytes int
	// FirstLSN is the LSN of the first record of a new log (default 1): a
	// follower starting its log where the Kafka topic it copies begins
	// (AppendReplica). It is ignored when the log exists.
	FirstLSN uint64
	// Gate, if set, is checked right before each batch is written: if it
	// returns an error, nothing of that batch reaches the disk and exactly
	// the appends of that batch fail, with an error wrapping
	// ErrGateRefused and the gate's error. It is not sticky: the next batch
	// is written if Gate then returns nil. A leader of a group uses it to
	// write nothing once its lease is lost (docs/HA.md). It is called with
	// the committer's lock held: it must be quick and must not use the WAL.
	Gate func() error
}

// ErrGateRefused is wrapped by the error of an append whose batch
// Options.Gate refused: nothing of it was written, and its LSNs are given
// to later appends.
var ErrGateRefused = groupcommit.ErrRefused

// ErrNotNext and ErrCommitTimeOrder are wrapped by AppendReplica's refusal
// of a transaction not at the log's next LSN (a gap or an overlap) and of
// a commit time before the log's last.
var (
	ErrNotNext         = groupcommit.ErrNotNext
	ErrCommitTimeOrder = groupcommit.ErrCommitTimeOrder
)

// DefaultMaxCommitTimeSkew is the default Options.MaxCommitTimeSkew.
const DefaultMaxCommitTimeSkew = 5 * time.Minute

// Validate checks the options without opening anything: the segment
// size's range, the sync mode and the compression.
func (o *Options) Validate() error {
	if _, err := o.Sync.committer(); err != nil {
		return err
	}
	codec, err := o.Compression.codec()
	if err != nil {
		return err
	}
	return (&segment.Options{SegmentSize: o.SegmentSize, Codec: codec}).Validate()
}

// VerifyReport describes a log that Verify found readable: its segments,
// LSNs, frames and any torn tail.
type VerifyReport = segment.VerifyReport

// Verify checks the whole log in dir without changing it (segment.Verify):
// every header and frame checksum, LSN density, transaction boundaries
// and commit-time order. Corruption is reported as an error naming the
// segment and offset; a torn tail of the newest segment is not corruption
// and is described in the report. fsys nil means vfs.Default.
func Verify(fsys vfs.FS, dir string) (*VerifyReport, error) { return segment.Verify(fsys, dir) }

// DiskBytes is the size on disk of the segment files in dir; files
// removed while it runs are skipped. It reads only the directory, so it
// may run beside a live writer.
func DiskBytes(dir string) (int64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, e := range ents {
		if _, ok := segment.ParseSegmentName(e.Name()); !ok {
			continue
		}
		fi, err := os.Stat(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // removed meanwhile
		}
		n += fi.Size()
	}
	return n, nil
}

// log is the read side shared by a WAL and a read-only view.
type log struct{ seg *segment.Log }

// NewReader returns a reader of the whole committed transactions whose
// records have LSNs from from on (see Reader). With follow, the reader
// waits for new durable transactions instead of returning io.EOF.
func (l log) NewReader(from uint64, follow bool) (*Reader, error) {
	return newReader(l.seg, from, follow)
}

// Dir returns the log's directory.
func (l log) Dir() string { return l.seg.Dir() }

// FirstLSN returns the first LSN retention has kept.
func (l log) FirstLSN() uint64 { return l.seg.FirstLSN() }

// Visible returns the last LSN readers may see: the last durable commit.
func (l log) Visible() uint64 { return l.seg.Visible() }

// Segments lists the retained segments, oldest first.
func (l log) Segments() []SegmentInfo { return l.seg.Segments() }

// WAL is an open transaction log, owned by one writer.
type WAL struct {
	log
	c *groupcommit.Committer
	// sync is Options.Sync: whether the log fsyncs at all.
	sync SyncMode
	// maxSkew is Options.MaxCommitTimeSkew with the default applied;
	// negative: no bound.
	maxSkew time.Duration
	// maxRecord is Options.MaxRecordBytes with the default applied.
	maxRecord int

	scratch sync.Pool // *encodeBuf
	once    sync.Once
	err     error
}

type encodeBuf struct {
	buf  []byte
	recs [][]byte
}

// Open opens (recovering) or creates the log in opts.Dir.
func Open(opts Options) (*WAL, *RecoveryReport, error) {
	if opts.Dir == "" {
		return nil, nil, fmt.Errorf("wal: no directory given")
	}
	sm, err := opts.Sync.committer()
	if err != nil {
		return nil, nil, err
	}
	codec, err := opts.Compression.codec()
	if err != nil {
		return nil, nil, err
	}
	l, rep, err := segment.Open(opts.Dir, segment.Options{FS: opts.FS, SegmentSize: opts.SegmentSize,
		Codec: codec, Logger: opts.Logger, ZeroFill: opts.ZeroFill, FirstLSN: opts.FirstLSN})
	if err != nil {
		return nil, nil, err
	}
	c, err := groupcommit.New(l, groupcommit.Options{Sync: sm, MinInterval: opts.MinInterval,
		Logger: opts.Logger, Observe: opts.Observe, MaxPendingBytes: opts.MaxPendingBytes, MaxBatchBytes: opts.MaxBatchBytes, Gate: opts.Gate})
	if err != nil {
		l.Close()
		return nil, nil, err
	}
	skew := opts.MaxCommitTimeSkew
	if skew == 0 {
		skew = DefaultMaxCommitTimeSkew
	}
	maxRecord := opts.MaxRecordBytes
	if maxRecord <= 0 || maxRecord > MaxRecordBytes {
		maxRecord = MaxRecordBytes
	}
	w := &WAL{log: log{l}, c: c, sync: opts.Sync, maxSkew: skew, maxRecord: maxRecord}
	w.scratch.New = func() any { return &encodeBuf{} }
	return w, rep, nil
}

// CommitTimeBound returns the latest source commit time an append made
// now accepts (now plus Options.MaxCommitTimeSkew), and false if there is
// no bound.
func (w *WAL) CommitTimeBound() (time.Time, bool) {
	if w.maxSkew < 0 {
		return time.Time{}, false
	}
	return time.Now().Add(w.maxSkew), true
}

// CheckCommitTime refuses a header whose SourceCommitTime is beyond
// CommitTimeBound, with a *change.InvalidError naming commit_time and the
// bound (so it matches change.ErrInvalid: the input is at fault). Append,
// AppendAsync and AppendStream call it; a source that validates a batch
// before appending any of it calls it too, so that nothing of a refused
// batch is appended.
func (w *WAL) CheckCommitTime(hdr *change.TxHeader) error {
	bound, ok := w.CommitTimeBound()
	if !ok || hdr.SourceCommitTime.IsZero() || !hdr.SourceCommitTime.After(bound) {
		return nil
	}
	return &change.InvalidError{Path: "commit_time", Reason: fmt.Sprintf(
		"%s is more than %s ahead of this host's clock (now %s); commit times never decrease along the log, so every later transaction would get it (bound: wal.max_commit_time_skew; walship append --max-commit-time-skew)",
		hdr.SourceCommitTime.UTC().Format(time.RFC3339Nano), w.maxSkew, time.Now().UTC().Format(time.RFC3339))}
}

// encode validates txn and encodes its changes, the header on the first.
func (w *WAL) encode(txn *change.Txn) (*encodeBuf, error) {
	if err := txn.Validate(); err != nil {
		return nil, err
	}
	if err := w.CheckCommitTime(&txn.Header); err != nil {
		return nil, err
	}
	return w.encodeRecords(txn), nil
}

// encodeRecords encodes txn's changes, the header on the first, into a
// scratch buffer the caller puts back.
func (w *WAL) encodeRecords(txn *change.Txn) *encodeBuf {
	eb := w.scratch.Get().(*encodeBuf)
	eb.buf, eb.recs = eb.buf[:0], eb.recs[:0]
	ends := make([]int, 0, 8)
	for i := range txn.Changes {
		var hdr *change.TxHeader
		if i == 0 {
			hdr = &txn.Header
		}
		eb.buf = change.AppendRecord(eb.buf, hdr, &txn.Changes[i])
		ends = append(ends, len(eb.buf))
	}
	start := 0
	for _, e := range ends {
		eb.recs = append(eb.recs, eb.buf[start:e])
		start = e
	}
	return eb
}

// Append validates and appends txn and waits until it is durable. The
// commit time recorded is txn.Header.SourceCommitTime if set (raised to
// the previous commit's if earlier), else now. A SourceCommitTime beyond
// CommitTimeBound is refused (CheckCommitTime) and nothing is appended.
func (w *WAL) Append(ctx context.Context, txn *change.Txn) (Ticket, error) {
	t, err := w.AppendAsync(ctx, txn)
	if err != nil {
		return t, err
	}
	return t, w.c.Wait(ctx, t.Last)
}

// AppendAsync validates and queues txn, returning its LSNs without waiting
// for durability; Wait(ctx, t.Last) waits.
func (w *WAL) AppendAsync(ctx context.Context, txn *change.Txn) (Ticket, error) {
	eb, err := w.encode(txn)
	if err != nil {
		return Ticket{}, err
	}
	t, err := w.c.AppendAsync(ctx, eb.recs, txn.Header.SourceCommitTime)
	w.scratch.Put(eb)
	return ticket(t), err
}

// AppendReplica appends t, a transaction read from another log of the same
// history (a leader's, through the Kafka topic), exactly as that log holds
// it: at its LSNs (t.FirstLSN must be this log's next LSN, else an error
// naming both), with its commit time (recorded as is: it must not be
// before this log's last, else an error naming both) and its whole header,
// idempotency mark and in-request flag included, so that KeyIndex finds the
// same keys at the same LSNs. It waits until t is durable, like Append.
// t must be whole: CommitLSN-FirstLSN+1 == len(t.Changes). The source
// commit time is not bounded by MaxCommitTimeSkew: the other log's writer
// did that.
//
// An aborted range (t.Aborted: LSNs the other log used for a transaction
// it aborted midway, read there with Reader.ReportAborted) is written as
// such at exactly t.FirstLSN..t.CommitLSN (docs/FORMAT.md §3, aborted-range
// frame): readers of this log skip it as they skip it in the other, and
// LSNs continue after it. t then has no changes, and its commit time (the
// abort's, which readers skip) is raised to this log's last if earlier.
func (w *WAL) AppendReplica(ctx context.Context, t *change.Committed) (Ticket, error) {
	tk, err := w.AppendReplicaAsync(ctx, t)
	if err != nil {
		return tk, err
	}
	return tk, w.c.Wait(ctx, tk.Last)
}

// AppendReplicaAsync is AppendReplica without waiting for durability;
// Wait(ctx, t.Last) waits. A follower queues the transactions of a fetch
// this way and waits once for the last.
func (w *WAL) AppendReplicaAsync(ctx context.Context, t *change.Committed) (Ticket, error) {
	if t.Aborted {
		if len(t.Changes) != 0 || t.CommitLSN <= t.FirstLSN {
			return Ticket{}, fmt.Errorf("wal: replica aborted range at LSNs %d-%d with %d changes: want at least 2 LSNs and no change", t.FirstLSN, t.CommitLSN, len(t.Changes))
		}
		if t.CommitTime.IsZero() {
			return Ticket{}, fmt.Errorf("wal: replica aborted range at LSN %d has no time", t.FirstLSN)
		}
		tk, err := w.c.AppendAbortedAt(ctx, t.FirstLSN, t.CommitLSN, t.CommitTime.UnixNano())
		if err != nil {
			return Ticket{}, fmt.Errorf("wal: replica aborted range: %w", err)
		}
		return ticket(tk), nil
	}
	if n := uint64(len(t.Changes)); n == 0 || t.CommitLSN < t.FirstLSN || t.CommitLSN-t.FirstLSN+1 != n {
		return Ticket{}, fmt.Errorf("wal: replica transaction at LSNs %d-%d has %d changes", t.FirstLSN, t.CommitLSN, n)
	}
	if t.CommitTime.IsZero() {
		return Ticket{}, fmt.Errorf("wal: replica transaction at LSN %d has no commit time", t.FirstLSN)
	}
	if err := t.Txn.Validate(); err != nil {
		return Ticket{}, fmt.Errorf("wal: replica transaction at LSN %d: %w", t.FirstLSN, err)
	}
	eb := w.encodeRecords(&t.Txn)
	defer w.scratch.Put(eb)
	tk, err := w.c.AppendAt(ctx, t.FirstLSN, eb.recs, t.CommitTime.UnixNano())
	if err != nil {
		return Ticket{}, fmt.Errorf("wal: replica transaction: %w", err)
	}
	return ticket(tk), nil
}

// AppendStream appends one transaction whose changes come from next
// (io.EOF ends it), without holding it all in memory, and waits until it is
// durable, like Append. It takes the WAL exclusively: other appends (and
// streams) wait until it ends; transactions queued before it stay before
// it. Changes are validated and encoded one at a time and written in
// frames as they come, with at most groupcommit.StreamPendingBytes of them
// queued; next is called from the calling goroutine. The first change
// carries hdr. The commit time is hdr.SourceCommitTime if set (raised to
// the previous commit's if earlier), else now; one beyond CommitTimeBound
// is refused before anything is written.
//
// If next fails, a change is invalid, or ctx ends before the commit record
// is queued, the transaction is aborted: nothing of it ever becomes
// visible to readers, now or after recovery. Records it had already
// written keep their LSNs and are ended by an abort record that readers
// skip (docs/FORMAT.md §3), so LSNs stay dense; records not yet written
// are dropped and their LSNs reused. The WAL remains usable. Only a write
// or fsync failure puts it in the failed state, as for Append: every later
// append fails with the same error until it is reopened, and recovery
// then removes the unfinished transaction. Once the commit is queued the
// transaction is committed even if ctx ends while waiting for durability.
func (w *WAL) AppendStream(ctx context.Context, hdr change.TxHeader, next func() (*change.Change, error)) (Ticket, error) {
	if err := hdr.Validate(); err != nil {
		return Ticket{}, err
	}
	if err := w.CheckCommitTime(&hdr); err != nil {
		return Ticket{}, err
	}
	s, err := w.c.BeginStream(ctx)
	if err != nil {
		return Ticket{}, err
	}
	defer s.Abort() // a no-op once committed; also covers a panic in next
	abort := func(err error) (Ticket, error) {
		if aerr := s.Abort(); aerr != nil {
			err = errors.Join(err, fmt.Errorf("wal: aborting the streamed transaction: %w", aerr))
		}
		return Ticket{}, err
	}
	var buf []byte
	n := 0
	for ; ; n++ {
		if err := ctx.Err(); err != nil {
			return abort(fmt.Errorf("wal: streamed transaction aborted after %d changes: %w", n, err))
		}
		c, err := next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return abort(fmt.Errorf("wal: streamed transaction aborted: change %d: %w", n, err))
		}
		if c == nil {
			return abort(fmt.Errorf("wal: streamed transaction aborted: change %d is nil", n))
		}
		if err := c.Validate(); err != nil {
			return abort(fmt.Errorf("wal: streamed transaction aborted: change %d: %w", n, err))
		}
		var h *change.TxHeader
		if n == 0 {
			h = &hdr
		}
		buf = change.AppendRecord(buf[:0], h, c)
		if err := s.Add(ctx, buf); err != nil {
			return abort(fmt.Errorf("wal: streamed transaction aborted: change %d: %w", n, err))
		}
	}
	if n == 0 {
		return abort(&change.InvalidError{Path: "changes", Reason: "empty transaction"})
	}
	t, err := s.Commit(ctx, hdr.SourceCommitTime)
	if err != nil {
		return abort(fmt.Errorf("wal: streamed transaction aborted at its commit: %w", err))
	}
	return ticket(t), w.c.Wait(ctx, t.Last)
}

// Wait blocks until LSN lsn is durable.
func (w *WAL) Wait(ctx context.Context, lsn uint64) error { return w.c.Wait(ctx, lsn) }

// Durable returns the LSN of the last durable commit.
func (w *WAL) Durable() uint64 { return w.c.Durable() }

// NextLSN returns the LSN the next append's first record gets (unless
// another append comes first): Options.FirstLSN for a new log, one past
// the last record otherwise (an aborted stream's records count).
func (w *WAL) NextLSN() uint64 { return w.c.NextLSN() }

// Close flushes and syncs queued transactions and closes the log. It is
// idempotent.
func (w *WAL) Close() error {
	w.once.Do(func() {
		err := w.c.Close()
		if cerr := w.seg.Close(); err == nil {
			err = cerr
		}
		w.err = err
	})
	return w.err
}

// RemoveBefore removes the sealed segments all of whose records have LSNs
// below lsn, the retention primitive: the caller decides lsn from what
// every consumer has durably passed. The active segment is never removed.
// It returns the names of the files removed.
func (w *WAL) RemoveBefore(lsn uint64) ([]string, error) { return w.seg.RemoveBefore(lsn) }

// ReadOnly is a log opened for reading only (OpenReadOnly).
type ReadOnly struct{ log }

// OpenReadOnly opens the log in dir for reading only: it repairs nothing,
// takes no lock and may run beside a live writer; readers see what was
// durable when it was opened. fsys nil means vfs.Default.
func OpenReadOnly(fsys vfs.FS, dir string) (*ReadOnly, *RecoveryReport, error) {
	l, rep, err := segment.Open(dir, segment.Options{FS: fsys, ReadOnly: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return nil, nil, err
	}
	return &ReadOnly{log{l}}, rep, nil
}

// Close releases the log.
func (r *ReadOnly) Close() error { return r.seg.Close() }
