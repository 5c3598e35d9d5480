package pitr

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/walship/walship/change"
	"github.com/walship/walship/walerr"
)

// Segment is what planning needs of one archived segment object: its
// manifest. The object holds whole transactions: FirstLSN is the first LSN
// of its first transaction and LastLSN the commit LSN of its last.
type Segment struct {
	Lineage                         string
	FirstLSN, LastLSN               uint64
	FirstCommitTime, LastCommitTime time.Time
	FirstSourceLSN, LastSourceLSN   uint64 // the first and last non-zero; 0 if none
	MinXID, MaxXID                  uint64 // bound the non-zero xids; 0 if none
	Txns                            int    // number of transactions
	Key                             string
	Size                            int64 // stored (compressed) bytes
	Checksum                        string
	KeyID                           string // encryption key id; "" if not sealed
	RestorePoints                   []RestorePoint
}

// RestorePoint is a named restore point recorded in a segment; LSN is the
// commit LSN of the transaction that holds it.
type RestorePoint struct {
	Name string
	LSN  uint64
}

// Snapshot is a base snapshot: a SQLite replica holding exactly the
// transactions with commit LSN <= LSN.
type Snapshot struct {
	Lineage    string
	LSN        uint64
	CommitTime time.Time // commit time of the transaction at LSN
	Key        string
	Size       int64
	KeyID      string // encryption key id; "" if not sealed
}

// Catalog is the content of an archive as manifests describe it.
type Catalog struct {
	Lineages  []string
	Segments  []Segment // any order
	Snapshots []Snapshot
	// Problems the listing found: Kind "missing" (a manifest whose object
	// is absent), "corrupt" (a manifest that does not verify; its segment
	// is not in Segments), "overlap", "orphan" (an object without a
	// manifest, left by an interrupted upload; harmless).
	Problems []CatalogProblem
	// Parents of the lineages that branched from another.
	Parents []LineageParent
}

// CatalogProblem is something wrong the catalog listing found.
type CatalogProblem struct {
	Lineage string // "" if not tied to one
	Key     string
	Kind    string // missing, corrupt, overlap, orphan
	Error   string
}

// LineageParent records that Lineage branched from Parent after ParentLSN.
type LineageParent struct {
	Lineage, Parent string
	ParentLSN       uint64
}

// Source is what restore needs of an archive; NewArchiveSource adapts an
// *archive.Archive.
//
// Errors must be classified: errors.Is(err, ErrMissing) for an object that
// does not exist, errors.Is(err, walerr.ErrCorruption) for one whose checksum or
// content is wrong; every other error is taken as transient and retried.
type Source interface {
	Catalog(ctx context.Context) (*Catalog, error)
	// FetchSegment downloads s's object and verifies its checksum against
	// the manifest.
	FetchSegment(ctx context.Context, s Segment) ([]byte, error)
	// DecodeSegment decodes an object FetchSegment returned.
	DecodeSegment(s Segment, obj []byte) ([]change.Committed, error)
	// GetSnapshot downloads and verifies s into the new file dst.
	GetSnapshot(ctx context.Context, s Snapshot, dst string) error
}

// Errors of planning and restore, for errors.Is.
var (
	// ErrOutOfRange: the target is before the first restorable state or
	// after the last archived commit.
	ErrOutOfRange = errors.New("pitr: target out of the archive's range")
	// ErrTargetNotFound: no transaction has the target xid, or no restore
	// point the target name.
	ErrTargetNotFound = errors.New("pitr: target not found in the archive")
	// ErrHole: the archive lacks a range of LSNs the restore needs.
	ErrHole = errors.New("pitr: hole in the archive")
	// ErrMissing: a manifest names an object that does not exist.
	ErrMissing = errors.New("pitr: archive object missing")
	// ErrUnreadable: the catalog could not be listed, or an object could
	// not be fetched before the retry policy gave up (transient errors):
	// nothing is known to be wrong with the archive.
	ErrUnreadable = errors.New("pitr: archive cannot be read")
)

// HoleError names the LSN range a restore needs and the archive lacks.
// To is 0 when the range is open-ended (nothing archived after From).
type HoleError struct {
	Lineage  string
	From, To uint64
}

func (e *HoleError) Error() string {
	if e.To == 0 {
		return fmt.Sprintf("pitr: hole in the archive: lineage %s has no segment from LSN %d on", e.Lineage, e.From)
	}
	return fmt.Sprintf("pitr: hole in the archive: lineage %s lacks LSNs %d-%d", e.Lineage, e.From, e.To)
}

func (e *HoleError) Is(target error) bool { return target == ErrHole }

// ObjectError is a failure of one archive object; it wraps the cause,
// which is ErrMissing, walerr.ErrCorruption or a transient error that retries did not
// overcome.
type ObjectError struct {
	Key string
	Op  string // "read segment", "get snapshot"
	Err error
}

func (e *ObjectError) Error() string { return fmt.Sprintf("pitr: %s %s: %v", e.Op, e.Key, e.Err) }
func (e *ObjectError) Unwrap() error { return e.Err }

// permanent reports whether retrying err cannot help.
func permanent(err error) bool {
	return errors.Is(err, ErrMissing) || errors.Is(err, walerr.ErrCorruption) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}
