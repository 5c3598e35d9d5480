package kafkasink

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Transactional mode (Options.TransactionalID): the sink produces in Kafka
// transactions, one open at a time, so that what a read_committed reader
// sees, and what the sink reports shipped, is only what was committed
// under the id's current epoch. A producer that initialises the same id
// (a new leader, ha.Fence) bumps the epoch: from then on the broker
// refuses this sink's produces and commits, and Run ends with ErrFenced.
//
// A transaction holds whole runs of encoded records (jobs) and is
// committed at a log-transaction boundary when the sink has caught up with
// the log, when it holds commitRecordsFactor × MaxBufferedRecords records
// or when it has been open minCommitAge (or Linger); inside a log transaction only when it has been open
// maxTxnAge, so that a very large log transaction never outlives
// txnTimeout. Committing is Flush (every record acknowledged), Gate, then
// EndTransaction(TryCommit); the committed position is the watermark after
// the Flush, a commit LSN.

// ErrFenced marks Run's error when another producer took the sink's
// transactional id (its epoch is newer): this sink can no longer write, and
// nothing it produced after its last commit is visible to read_committed
// readers or reported shipped.
var ErrFenced = errors.New("kafkasink: fenced: another producer took the transactional id")

const (
	// txnTimeout is the transaction timeout the sink asks the broker for:
	// a transaction open longer is aborted by the broker.
	txnTimeout = 60 * time.Second
	// maxTxnAge: a transaction open this long is committed even inside a
	// log transaction (a consumer reassembles the log transaction from
	// two Kafka transactions), well before txnTimeout.
	maxTxnAge = 10 * time.Second
	// minCommitAge is the least commit interval under a constant backlog
	// (at least Linger): fewer, larger transactions keep the throughput
	// close to the non-transactional sink's (bench/README.md, kafka suite).
	minCommitAge = 100 * time.Millisecond
	// commitRecordsFactor: a transaction of this many times
	// MaxBufferedRecords is committed (at a boundary) whatever its age.
	commitRecordsFactor = 4
	// maxRewindBackoff caps the wait between aborted transactions that
	// follow each other without a commit between them.
	maxRewindBackoff = 5 * time.Second
)

// txn is the state of the sink's Kafka transaction, owned by Run's
// goroutine except failed, which the produce promises set.
type txn struct {
	id       string
	open     bool
	began    time.Time
	records  int
	boundary bool // the last record produced ends a log transaction
	failed   atomic.Pointer[error]
	backoff  time.Duration // before producing again after an abort
}

// fail records the first error a promise saw in the open transaction.
func (t *txn) fail(err error) { t.failed.CompareAndSwap(nil, &err) }

func (t *txn) err() error {
	if p := t.failed.Load(); p != nil {
		return *p
	}
	return nil
}

// rewindError: the open transaction must be aborted and its records
// produced again, from the committed position, in a new one.
type rewindError struct{ cause error }

func (e *rewindError) Error() string {
	return "kafkasink: transaction failed, producing again from the committed position: " + e.cause.Error()
}

func (e *rewindError) Unwrap() error { return e.cause }

// isFenced reports whether err says a newer producer holds the
// transactional id.
func isFenced(err error) bool {
	return errors.Is(err, kerr.ProducerFenced) || errors.Is(err, kerr.InvalidProducerEpoch)
}

// isAbortable reports whether a record that failed with err in a
// transaction is cured by aborting the transaction and producing again.
func isAbortable(err error) bool {
	return errors.Is(err, kerr.TransactionAbortable) || errors.Is(err, kerr.UnknownProducerID) ||
		errors.Is(err, kerr.OutOfOrderSequenceNumber) || errors.Is(err, kerr.InvalidTxnState) ||
		errors.Is(err, kerr.ConcurrentTransactions) || errors.Is(err, kerr.UnknownServerError) ||
		errors.Is(err, kerr.OperationNotAttempted) || errors.Is(err, kgo.ErrRecordTimeout)
}

func (s *Sink) fencedErr(err error) error {
	return fmt.Errorf("%w %q: %w", ErrFenced, s.cfg.TransactionalID, err)
}

// gate calls Options.Gate; its error is wrapped naming the sink.
func (s *Sink) gate() error {
	if s.cfg.Gate == nil {
		return nil
	}
	if err := s.cfg.Gate(); err != nil {
		if s.cfg.TransactionalID != "" {
			return fmt.Errorf("kafkasink (transactional id %q): gate closed: %w", s.cfg.TransactionalID, err)
		}
		return fmt.Errorf("kafkasink: gate closed: %w", err)
	}
	return nil
}

// beginTxn opens a transaction, once Gate allows it.
func (s *Sink) beginTxn(cl *kgo.Client, tx *txn) error {
	if err := s.gate(); err != nil {
		return err
	}
	if err := cl.BeginTransaction(); err != nil {
		if isFenced(err) {
			return s.fencedErr(err)
		}
		return &rewindError{fmt.Errorf("begin transaction: %w", err)}
	}
	tx.open, tx.began, tx.records, tx.boundary = true, time.Now(), 0, true
	return nil
}

// commitDue reports whether the open transaction is to be committed before
// the next job: caughtUp says no job is waiting.
func (s *Sink) commitDue(tx *txn, caughtUp bool) bool {
	if !tx.open {
		return false
	}
	age := time.Since(tx.began)
	if age >= maxTxnAge {
		return true
	}
	return tx.boundary && (caughtUp || tx.records >= commitRecordsFactor*s.cfg.MaxBufferedRecords || age >= max(s.cfg.Linger, minCommitAge))
}

// commitTxn flushes the open transaction, checks Gate and commits it; then
// the committed position moves to the watermark (every record produced is
// acknowledged by then). It blocks until the brokers acknowledged every
// record or ctx ends.
func (s *Sink) commitTxn(ctx context.Context, cl *kgo.Client, wm *watermark, tx *txn) error {
	if err := cl.Flush(ctx); err != nil {
		return fmt.Errorf("kafkasink: flush transaction: %w", err)
	}
	if err := tx.err(); err != nil {
		if isFenced(err) {
			return s.fencedErr(err)
		}
		return &rewindError{err}
	}
	if err := s.gate(); err != nil {
		return err
	}
	pos, _, _, _ := wm.position()
	if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
		if isFenced(err) {
			return s.fencedErr(err)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("kafkasink: commit transaction: %w", err)
		}
		return &rewindError{fmt.Errorf("commit: %w", err)}
	}
	tx.open, tx.backoff = false, 0
	s.committedTo(pos)
	return nil
}

// committedTo moves the committed position (checkpoint, Acked, Stats) to
// pos, a commit LSN whose records are all in committed transactions.
func (s *Sink) committedTo(pos uint64) {
	for {
		cur := s.committed.Load()
		if pos <= cur {
			return
		}
		if s.committed.CompareAndSwap(cur, pos) {
			break
		}
	}
	if s.cfg.Acked != nil {
		s.cfg.Acked(pos)
	}
}

// abortTxn fails the records not yet sent, waits for those in flight and
// aborts the open transaction. The client asks for an abort to be retried
// (a commit whose outcome is unknown, OperationNotAttempted): a few tries.
func (s *Sink) abortTxn(ctx context.Context, cl *kgo.Client, tx *txn) error {
	if err := cl.AbortBufferedRecords(ctx); err != nil {
		return fmt.Errorf("kafkasink: abort transaction: %w", err)
	}
	var err error
	for range 3 {
		if err = cl.EndTransaction(ctx, kgo.TryAbort); err == nil || isFenced(err) || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("kafkasink: abort transaction: %w", err)
	}
	tx.open = false
	tx.failed.Store(nil)
	return nil
}

// rewindTxn aborts the failed transaction, retrying until the broker
// confirms the abort, and waits a backoff that grows while transactions
// keep failing. It returns nil when Run may produce again from the
// committed position (or runCtx ended), ErrFenced if the id was taken.
func (s *Sink) rewindTxn(runCtx, produceCtx context.Context, cl *kgo.Client, tx *txn) error {
	for {
		tx.backoff = min(max(2*tx.backoff, 100*time.Millisecond), maxRewindBackoff)
		err := s.abortTxn(produceCtx, cl, tx)
		if err != nil && isFenced(err) {
			return s.fencedErr(err)
		}
		if err != nil {
			s.retries.Add(1)
			s.log.Warn("kafka transaction abort failed; retrying", "transactional_id", tx.id, "err", err)
		}
		select {
		case <-runCtx.Done():
			return nil
		case <-time.After(tx.backoff):
		}
		if err == nil {
			return nil
		}
	}
}

// finishTxn ends the open transaction when Run stops: committed if Run
// stops cleanly at a log-transaction boundary (so a restart re-sends
// nothing), aborted otherwise, left alone if the sink was fenced. It
// returns ErrFenced if the broker says so.
func (s *Sink) finishTxn(ctx context.Context, cl *kgo.Client, wm *watermark, tx *txn, loopErr error) error {
	if !tx.open || errors.Is(loopErr, ErrFenced) {
		// Fenced: the broker aborted the open transaction when the id was
		// taken. The sink sends nothing more under the id: ending the
		// transaction would have the client re-initialise its producer
		// id, and a broker that accepts a stale epoch (kfake does) would
		// hand the id back to this sink, fencing the new producer.
		return nil
	}
	if loopErr == nil && tx.boundary {
		err := s.commitTxn(ctx, cl, wm, tx)
		if err == nil {
			return nil
		}
		if errors.Is(err, ErrFenced) {
			return err
		}
		s.log.Warn("kafka transaction not committed at shutdown; aborting it", "transactional_id", tx.id, "err", err)
	}
	if err := s.abortTxn(ctx, cl, tx); err != nil {
		if isFenced(err) {
			return s.fencedErr(err)
		}
		s.log.Warn("kafka transaction not aborted at shutdown; the broker aborts it after its timeout", "transactional_id", tx.id, "err", err)
	}
	return nil
}
