package pitr

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/walship/walship/archive"
	"github.com/walship/walship/change"
)

// ArchiveSource is the Source of an *archive.Archive: it converts the
// catalog to manifests-only planning input and classifies the archive's
// errors (archive.ErrNotFound → ErrMissing; a corrupt object already
// satisfies errors.Is(err, walerr.ErrCorruption)). Objects are looked up by the manifests of the last Catalog
// call. Safe for concurrent use.
type ArchiveSource struct {
	a  *archive.Archive
	mu struct {
		sync.Mutex
		segs  map[string]archive.SegmentManifest
		snaps map[string]archive.SnapshotManifest
	}
}

var _ Source = (*ArchiveSource)(nil)

// NewArchiveSource returns the Source of a.
func NewArchiveSource(a *archive.Archive) *ArchiveSource {
	s := &ArchiveSource{a: a}
	s.mu.segs = map[string]archive.SegmentManifest{}
	s.mu.snaps = map[string]archive.SnapshotManifest{}
	return s
}

// Archive returns the underlying archive.
func (s *ArchiveSource) Archive() *archive.Archive { return s.a }

// Catalog lists the archive (manifests only). Objects whose manifest says
// they exist but whose object is missing are listed (a restore that needs
// them fails with ErrMissing naming the key); manifests that do not verify
// are left out, which shows their range as a hole, and reported in
// Catalog.Problems.
func (s *ArchiveSource) Catalog(ctx context.Context) (*Catalog, error) {
	ac, err := s.a.Catalog(ctx)
	if err != nil {
		return nil, err
	}
	c := &Catalog{}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range ac.Problems {
		c.Problems = append(c.Problems, convProblem("", p))
	}
	for _, l := range ac.Lineages {
		c.Lineages = append(c.Lineages, l.ID)
		for _, m := range l.Segments {
			s.mu.segs[m.Key] = m
			g := Segment{Lineage: m.Lineage, FirstLSN: m.FirstLSN, LastLSN: m.LastLSN,
				FirstCommitTime: m.FirstCommitTime, LastCommitTime: m.LastCommitTime,
				FirstSourceLSN: m.FirstSourceLSN, LastSourceLSN: m.LastSourceLSN,
				MinXID: m.MinXID, MaxXID: m.MaxXID, Txns: m.Txns, Key: m.Key, Size: m.Size, Checksum: m.Checksum, KeyID: m.KeyID}
			for _, rp := range m.RestorePoints {
				g.RestorePoints = append(g.RestorePoints, RestorePoint{Name: rp.Name, LSN: rp.LSN})
			}
			c.Segments = append(c.Segments, g)
		}
		for _, m := range l.Snapshots {
			s.mu.snaps[m.Key] = m
			c.Snapshots = append(c.Snapshots, Snapshot{Lineage: m.Lineage, LSN: m.LSN, CommitTime: m.CommitTime, Key: m.Key, Size: m.Size, KeyID: m.KeyID})
		}
		for _, p := range l.Problems {
			c.Problems = append(c.Problems, convProblem(l.ID, p))
		}
		if r := l.Record; r != nil && r.Parent != "" {
			c.Parents = append(c.Parents, LineageParent{Lineage: l.ID, Parent: r.Parent, ParentLSN: r.ParentLSN})
		}
	}
	slices.Sort(c.Lineages)
	return c, nil
}

func convProblem(lineage string, p archive.Problem) CatalogProblem {
	kind := p.Kind.String()
	msg := ""
	if p.Err != nil {
		msg = p.Err.Error()
	}
	return CatalogProblem{Lineage: lineage, Key: p.Key, Kind: kind, Error: msg}
}

// FetchSegment downloads and verifies g's object.
func (s *ArchiveSource) FetchSegment(ctx context.Context, g Segment) ([]byte, error) {
	m, err := s.segment(g)
	if err != nil {
		return nil, err
	}
	obj, err := s.a.FetchSegment(ctx, m)
	return obj, classify(err)
}

// DecodeSegment decodes an object FetchSegment returned.
func (s *ArchiveSource) DecodeSegment(g Segment, obj []byte) ([]change.Committed, error) {
	m, err := s.segment(g)
	if err != nil {
		return nil, err
	}
	txns, err := s.a.DecodeSegment(m, obj)
	return txns, classify(err)
}

// GetSnapshot downloads and verifies the snapshot into dst.
func (s *ArchiveSource) GetSnapshot(ctx context.Context, sn Snapshot, dst string) error {
	s.mu.Lock()
	m, ok := s.mu.snaps[sn.Key]
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("pitr: snapshot %s is not in the catalog", sn.Key)
	}
	return classify(s.a.GetSnapshot(ctx, m, dst))
}

func (s *ArchiveSource) segment(g Segment) (archive.SegmentManifest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.mu.segs[g.Key]
	if !ok {
		return m, fmt.Errorf("pitr: segment %s is not in the catalog", g.Key)
	}
	return m, nil
}

// classify maps the archive's errors to this package's.
func classify(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, archive.ErrNotFound):
		return fmt.Errorf("%w: %w", ErrMissing, err)
	}
	return err
}
