package archive

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/walship/walship/walerr"
)

// ProblemKind classifies what Catalog found wrong.
type ProblemKind int

const (
	// ProblemMissing: a manifest whose object is absent (a deleted
	// object). The data is lost from the archive.
	ProblemMissing ProblemKind = iota + 1
	// ProblemCorrupt: a manifest or lineage record that does not verify.
	ProblemCorrupt
	// ProblemOverlap: two segments cover a common LSN.
	ProblemOverlap
	// ProblemOrphan: an object without a manifest, left by an interrupted
	// upload. Harmless: it is not part of the archive and is adopted or
	// ignored.
	ProblemOrphan
)

var problemNames = [...]string{"", "missing", "corrupt", "overlap", "orphan"}

func (k ProblemKind) String() string {
	if int(k) < len(problemNames) && k > 0 {
		return problemNames[k]
	}
	return fmt.Sprintf("problem(%d)", int(k))
}

// Problem is one thing wrong in the archive, naming the key.
type Problem struct {
	Key  string
	Kind ProblemKind
	Err  error
}

func (p Problem) String() string { return p.Kind.String() + " " + p.Key + ": " + p.Err.Error() }

// Gap is a range of LSNs, inclusive, that no segment covers.
type Gap struct{ FirstLSN, LastLSN uint64 }

// Lineage is one lineage as Catalog found it.
type Lineage struct {
	ID string
	// Record is the stored lineage record; nil if missing.
	Record *LineageRecord
	// Owner is the node id that archives into the lineage ("" if none).
	Owner string
	// Segments are sorted by FirstLSN; only segments whose manifest
	// verified are listed (those with a missing object are included and
	// also reported in Problems).
	Segments  []SegmentManifest
	Snapshots []SnapshotManifest // sorted by LSN
	// Gaps are LSN ranges between segments that no segment covers.
	Gaps     []Gap
	Problems []Problem
}

// FirstLSN and LastLSN bound the archived LSNs (0, 0 if none).
func (l *Lineage) FirstLSN() uint64 {
	if len(l.Segments) == 0 {
		return 0
	}
	return l.Segments[0].FirstLSN
}

// LastLSN is the last archived LSN (0 if none).
func (l *Lineage) LastLSN() uint64 {
	if len(l.Segments) == 0 {
		return 0
	}
	return l.Segments[len(l.Segments)-1].LastLSN
}

// Catalog is the contents of an archive, read from listings and
// manifests only.
type Catalog struct {
	Lineages []*Lineage // sorted by ID
	// Problems not tied to a lineage (unreadable lineage records...).
	Problems []Problem
}

// Lineage returns the lineage id, or nil.
func (c *Catalog) Lineage(id string) *Lineage {
	for _, l := range c.Lineages {
		if l.ID == id {
			return l
		}
	}
	return nil
}

// Intact reports whether no lineage has gaps or problems other than
// orphans.
func (c *Catalog) Intact() bool {
	for _, p := range c.Problems {
		if p.Kind != ProblemOrphan {
			return false
		}
	}
	for _, l := range c.Lineages {
		if len(l.Gaps) > 0 {
			return false
		}
		for _, p := range l.Problems {
			if p.Kind != ProblemOrphan {
				return false
			}
		}
	}
	return true
}

// Catalog lists the whole archive and fetches every manifest and lineage
// record (Options.Concurrency at a time) to describe lineages, segments,
// snapshots, gaps and problems. It downloads no segment or snapshot.
// Object integrity (checksums) is checked by FetchSegment/ReadSegment,
// not here. An error is returned only when the archive cannot be read
// (listing or a manifest fetch fails after retries); damage is reported
// in Problems.
func (a *Archive) Catalog(ctx context.Context) (*Catalog, error) {
	keys, err := a.b.List(ctx, "")
	if err != nil {
		return nil, err
	}
	return a.catalogOf(ctx, keys, "")
}

// LineageCatalog is Catalog restricted to one lineage (one listing of its
// prefix).
func (a *Archive) LineageCatalog(ctx context.Context, id string) (*Lineage, error) {
	if err := CheckLineage(id); err != nil {
		return nil, err
	}
	keys, err := a.b.List(ctx, id+"/")
	if err != nil {
		return nil, err
	}
	for _, k := range []string{lineageKey(id), ownerKey(id)} {
		if _, err := a.b.Get(ctx, k); err == nil {
			keys = append(keys, k)
		} else if !errors.Is(err, ErrNotFound) {
			return nil, err
		}
	}
	sort.Strings(keys)
	c, err := a.catalogOf(ctx, keys, id)
	if err != nil {
		return nil, err
	}
	if l := c.Lineage(id); l != nil {
		return l, nil
	}
	return &Lineage{ID: id}, nil
}

func (a *Archive) catalogOf(ctx context.Context, keys []string, only string) (*Catalog, error) {
	c := &Catalog{}
	byID := map[string]*Lineage{}
	get := func(id string) *Lineage {
		l := byID[id]
		if l == nil {
			l = &Lineage{ID: id}
			byID[id] = l
		}
		return l
	}
	present := make(map[string]bool, len(keys))
	for _, k := range keys {
		present[k] = true
	}
	type job struct {
		key  string
		kind int // 0 segment manifest, 1 snapshot manifest, 2 lineage record, 3 owner
		l    *Lineage
	}
	var jobs []job
	for _, k := range keys {
		if rest, ok := strings.CutPrefix(k, lineagesDir); ok {
			switch {
			case strings.HasSuffix(rest, lineageSuffix) && CheckLineage(strings.TrimSuffix(rest, lineageSuffix)) == nil:
				jobs = append(jobs, job{k, 2, get(strings.TrimSuffix(rest, lineageSuffix))})
			case strings.HasSuffix(rest, ownerSuffix) && CheckLineage(strings.TrimSuffix(rest, ownerSuffix)) == nil:
				jobs = append(jobs, job{k, 3, get(strings.TrimSuffix(rest, ownerSuffix))})
			}
			continue
		}
		id, rest, ok := strings.Cut(k, "/")
		if !ok || CheckLineage(id) != nil {
			continue // not ours: ignored
		}
		switch {
		case strings.HasPrefix(rest, "wal/"):
			name := strings.TrimPrefix(rest, "wal/")
			switch {
			case strings.HasSuffix(name, manifestSuffix):
				if _, _, ok := parseSegmentName(strings.TrimSuffix(name, manifestSuffix)); ok {
					jobs = append(jobs, job{k, 0, get(id)})
				}
			case strings.HasSuffix(name, segmentSuffix):
				if _, _, ok := parseSegmentName(strings.TrimSuffix(name, segmentSuffix)); ok && !present[ManifestKey(k)] {
					l := get(id)
					l.Problems = append(l.Problems, Problem{Key: k, Kind: ProblemOrphan, Err: errors.New("object without manifest (interrupted upload)")})
				}
			}
		case strings.HasPrefix(rest, "snap/"):
			name := strings.TrimPrefix(rest, "snap/")
			switch {
			case strings.HasSuffix(name, manifestSuffix):
				if _, ok := parseSnapshotName(strings.TrimSuffix(name, manifestSuffix)); ok {
					jobs = append(jobs, job{k, 1, get(id)})
				}
			case strings.HasSuffix(name, snapshotSuffix):
				if _, ok := parseSnapshotName(strings.TrimSuffix(name, snapshotSuffix)); ok && !present[ManifestKey(k)] {
					l := get(id)
					l.Problems = append(l.Problems, Problem{Key: k, Kind: ProblemOrphan, Err: errors.New("snapshot without manifest (interrupted upload)")})
				}
			}
		}
	}

	var (
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
	)
	sem := make(chan struct{}, a.opts.Concurrency)
	for _, j := range jobs {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			var (
				seg  SegmentManifest
				snap SnapshotManifest
				rec  LineageRecord
				own  ownerRecord
				err  error
			)
			switch j.kind {
			case 0:
				seg, err = a.getSegmentManifest(ctx, j.key)
			case 1:
				snap, err = a.getSnapshotManifest(ctx, j.key)
			case 2:
				err = a.getJSON(ctx, j.key, &rec)
				if err == nil && rec.ID != j.l.ID {
					err = corruptf(j.key, "record names lineage %q", rec.ID)
				}
			case 3:
				err = a.getJSON(ctx, j.key, &own)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if errors.Is(err, walerr.ErrCorruption) {
					j.l.Problems = append(j.l.Problems, Problem{Key: j.key, Kind: ProblemCorrupt, Err: err})
				} else if errors.Is(err, ErrNotFound) {
					// Listed, then gone: deleted meanwhile; the gap check
					// reports any hole this leaves.
				} else if firstErr == nil {
					firstErr = err
				}
				return
			}
			switch j.kind {
			case 0:
				if !present[seg.Key] {
					j.l.Problems = append(j.l.Problems, Problem{Key: seg.Key, Kind: ProblemMissing,
						Err: fmt.Errorf("segment object of LSNs %d..%d is missing: %w", seg.FirstLSN, seg.LastLSN, ErrNotFound)})
				}
				j.l.Segments = append(j.l.Segments, seg)
			case 1:
				if !present[snap.Key] {
					j.l.Problems = append(j.l.Problems, Problem{Key: snap.Key, Kind: ProblemMissing,
						Err: fmt.Errorf("snapshot object at LSN %d is missing: %w", snap.LSN, ErrNotFound)})
				} else {
					j.l.Snapshots = append(j.l.Snapshots, snap)
				}
			case 2:
				j.l.Record = &rec
			case 3:
				j.l.Owner = own.Node
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	for id, l := range byID {
		if only != "" && id != only {
			continue
		}
		sort.Slice(l.Segments, func(i, j int) bool { return l.Segments[i].FirstLSN < l.Segments[j].FirstLSN })
		sort.Slice(l.Snapshots, func(i, j int) bool { return l.Snapshots[i].LSN < l.Snapshots[j].LSN })
		for i := 1; i < len(l.Segments); i++ {
			p, s := &l.Segments[i-1], &l.Segments[i]
			switch {
			case s.FirstLSN > p.LastLSN+1:
				l.Gaps = append(l.Gaps, Gap{p.LastLSN + 1, s.FirstLSN - 1})
			case s.FirstLSN <= p.LastLSN:
				l.Problems = append(l.Problems, Problem{Key: s.Key, Kind: ProblemOverlap,
					Err: fmt.Errorf("LSNs %d..%d overlap %s", s.FirstLSN, s.LastLSN, p.Key)})
			}
		}
		sort.Slice(l.Problems, func(i, j int) bool { return l.Problems[i].Key < l.Problems[j].Key })
		c.Lineages = append(c.Lineages, l)
	}
	sort.Slice(c.Lineages, func(i, j int) bool { return c.Lineages[i].ID < c.Lineages[j].ID })
	return c, nil
}

func (a *Archive) getJSON(ctx context.Context, key string, v any) error {
	b, err := a.b.Get(ctx, key)
	if err != nil {
		return err
	}
	// Lineage and owner records are plain even in an encrypted archive:
	// they decide nothing a restore applies (docs/ARCHIVE.md §10).
	return decodeManifest(key, b, v)
}

// LastSegment returns the manifest of lineage's newest segment (the one
// with the highest LSNs) from one listing and one manifest fetch; ok is
// false if the lineage has no segment. A newest manifest that does not
// verify is an error (*walerr.CorruptionError), not skipped.
//
// A newest manifest sealed with another key than a's is the one case that
// returns both: m holds only the range its name gives (FirstLSN, LastLSN,
// Key), ok is true, and err is the *SealError. Nothing authenticates that
// range; a writer may trust it only where it knows by other means that
// it stored that object itself before its key changed (the archiver
// checks its checkpoint).
func (a *Archive) LastSegment(ctx context.Context, lineage string) (m SegmentManifest, ok bool, err error) {
	if err := CheckLineage(lineage); err != nil {
		return m, false, err
	}
	keys, err := a.b.List(ctx, lineage+walDir[:len(walDir)-1]+"/")
	if err != nil {
		return m, false, err
	}
	for i := len(keys) - 1; i >= 0; i-- {
		name, isManifest := strings.CutSuffix(strings.TrimPrefix(keys[i], lineage+walDir), manifestSuffix)
		if _, _, valid := parseSegmentName(name); !isManifest || !valid {
			continue
		}
		m, err = a.getSegmentManifest(ctx, keys[i])
		var se *SealError
		if errors.As(err, &se) && se.KeyID != "" && se.KeyID != a.opts.Seal.KeyID() {
			// Perhaps sealed with the key this writer had before a key
			// change, perhaps by anyone else: the caller decides.
			first, last, _ := parseSegmentName(name)
			return SegmentManifest{Lineage: lineage, FirstLSN: first, LastLSN: last, Key: SegmentKey(lineage, first, last)}, true, err
		}
		if err != nil {
			return m, false, fmt.Errorf("archive: newest segment manifest of lineage %q: %w", lineage, err)
		}
		return m, true, nil
	}
	return m, false, nil
}

// CreateLineage stores rec as a new lineage's record (PutIfAbsent). If
// the record exists with the same ID, Parent and ParentLSN it returns
// nil; if it exists and differs, an error wrapping ErrExists.
func (a *Archive) CreateLineage(ctx context.Context, rec LineageRecord) error {
	if err := CheckLineage(rec.ID); err != nil {
		return err
	}
	if rec.Parent != "" {
		if err := CheckLineage(rec.Parent); err != nil {
			return fmt.Errorf("archive: parent: %w", err)
		}
	}
	if rec.Created.IsZero() {
		rec.Created = a.opts.Now().UTC()
	}
	b, err := encodeManifest(&rec)
	if err != nil {
		return err
	}
	err = a.b.PutIfAbsent(ctx, lineageKey(rec.ID), b)
	if !errors.Is(err, ErrExists) {
		return err
	}
	var old LineageRecord
	if err := a.getJSON(ctx, lineageKey(rec.ID), &old); err != nil {
		return err
	}
	if old.ID != rec.ID || old.Parent != rec.Parent || old.ParentLSN != rec.ParentLSN {
		return fmt.Errorf("archive: lineage %q exists with parent %q at LSN %d, not %q at %d: %w",
			rec.ID, old.Parent, old.ParentLSN, rec.Parent, rec.ParentLSN, ErrExists)
	}
	return nil
}

// ErrNotOwner matches every *OwnerError.
var ErrNotOwner = errors.New("archive: lineage owned by another node")

// OwnerError is returned when a node tries to archive into a lineage
// another node owns.
type OwnerError struct {
	Lineage, Owner, Node string
}

func (e *OwnerError) Error() string {
	return fmt.Sprintf("archive: lineage %q is owned by node %q (%s), not by this node %q: "+
		"refusing to write into it; use another lineage, or if that node is gone for good, delete %s",
		e.Lineage, e.Owner, ownerKey(e.Lineage), e.Node, ownerKey(e.Lineage))
}

// Is reports whether target is ErrNotOwner.
func (e *OwnerError) Is(target error) bool { return target == ErrNotOwner }

// Claim makes node the owner of lineage, creating the owner object with
// PutIfAbsent; it succeeds if node already owns it and fails with an
// *OwnerError if another node does.
func (a *Archive) Claim(ctx context.Context, lineage, node string) error {
	if err := CheckLineage(lineage); err != nil {
		return err
	}
	if node == "" {
		return errors.New("archive: Claim: empty node id")
	}
	b, err := encodeManifest(&ownerRecord{Lineage: lineage, Node: node, Created: a.opts.Now().UTC()})
	if err != nil {
		return err
	}
	err = a.b.PutIfAbsent(ctx, ownerKey(lineage), b)
	if !errors.Is(err, ErrExists) {
		return err
	}
	var own ownerRecord
	if err := a.getJSON(ctx, ownerKey(lineage), &own); err != nil {
		return fmt.Errorf("archive: read owner of lineage %q: %w", lineage, err)
	}
	if own.Node != node {
		return &OwnerError{Lineage: lineage, Owner: own.Node, Node: node}
	}
	return nil
}

// DeleteSegment removes a segment from the archive: its manifest first,
// so that an interruption leaves an orphan object, never a manifest
// without its object. Used by retention.
func (a *Archive) DeleteSegment(ctx context.Context, m SegmentManifest) error {
	if err := a.b.Delete(ctx, ManifestKey(m.Key)); err != nil {
		return err
	}
	return a.b.Delete(ctx, m.Key)
}

// DeleteSnapshot removes a snapshot, manifest first.
func (a *Archive) DeleteSnapshot(ctx context.Context, s SnapshotManifest) error {
	if err := a.b.Delete(ctx, ManifestKey(s.Key)); err != nil {
		return err
	}
	return a.b.Delete(ctx, s.Key)
}
