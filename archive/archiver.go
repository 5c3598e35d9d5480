package archive

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/walship/walship/checkpoint"
	"github.com/walship/walship/wal"
)

// CheckpointName is the checkpoint the archiver registers and advances:
// its position is the last LSN durably archived (0 before the first
// object), so local retention may remove LSNs <= that position.
const CheckpointName = "archive"

// ArchiverOptions configure an Archiver.
type ArchiverOptions struct {
	// Lineage archived into. Default "main".
	Lineage string
	// Timeout bounds how old the newest durable change may be before it is
	// archived (the RPO, config archive.timeout). Default 60s; at least
	// 100ms.
	Timeout time.Duration
	// MaxObjectBytes closes an object once its encoded transactions
	// reach this size. Default 16 MiB.
	MaxObjectBytes int
	// NodeID identifies this node as the lineage's owner. Default: the id
	// kept in the archive checkpoint's payload, generated on first run.
	NodeID string
	// Logger defaults to discard.
	Logger *slog.Logger
}

// ArchiverStats is a snapshot of an Archiver's progress.
type ArchiverStats struct {
	ArchivedLSN        uint64    // last LSN durably archived
	ArchivedCommitTime time.Time // commit time of the newest archived change
	DurableLSN         uint64    // the WAL's durable LSN when sampled
	// Lag is how long the oldest durable but unarchived change has
	// waited (0 when caught up).
	Lag       time.Duration
	Objects   uint64 // objects stored by this Archiver
	Bytes     uint64 // object bytes stored
	RawBytes  uint64 // encoded transaction bytes before compression
	Retries   uint64 // backend calls retried (transient failures)
	Errors    uint64 // failed attempts to store an object (each retried)
	LastError string
}

// Archiver follows the WAL and ships whole transactions to the archive.
type Archiver struct {
	a     *Archive
	w     *wal.WAL
	ckpts *checkpoint.Store
	opts  ArchiverOptions
}

// NewArchiver returns an archiver of w into a. It registers
// CheckpointName in ckpts at once, so retention keeps every local
// segment until the archiver has durably passed it.
func NewArchiver(a *Archive, w *wal.WAL, ckpts *checkpoint.Store, opts ArchiverOptions) (*Archiver, error) {
	return nil, errors.New("archive: NewArchiver: not implemented yet")
}

// Run archives until ctx ends; see the package doc.
func (ar *Archiver) Run(ctx context.Context) error {
	return fmt.Errorf("archive: Run: not implemented yet")
}

// Stats returns the archiver's progress.
func (ar *Archiver) Stats() ArchiverStats { return ArchiverStats{} }
