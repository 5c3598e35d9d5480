package archive

import (
	"context"
	"fmt"
	"strings"
)

// SegmentRange is a segment as the key of its manifest names it: the LSNs
// FirstLSN..LastLSN it covers.
type SegmentRange struct{ FirstLSN, LastLSN uint64 }

// ListSegments returns the segments of lineage whose manifest exists —
// those that are part of the archive; an object without a manifest is
// not — sorted by FirstLSN, from one listing of the lineage's wal/
// prefix. It fetches no manifest: a follower polls the archive's end this
// way, then reads (SegmentManifestOf) only the segments it lacks.
func (a *Archive) ListSegments(ctx context.Context, lineage string) ([]SegmentRange, error) {
	if err := CheckLineage(lineage); err != nil {
		return nil, err
	}
	prefix := lineage + walDir
	keys, err := a.b.List(ctx, prefix)
	if err != nil {
		return nil, err
	}
	var out []SegmentRange
	for _, k := range keys {
		name, isManifest := strings.CutSuffix(strings.TrimPrefix(k, prefix), manifestSuffix)
		if first, last, ok := parseSegmentName(name); isManifest && ok {
			out = append(out, SegmentRange{first, last})
		}
	}
	// Fixed-width lower-case hex names sort bytewise as by LSN.
	return out, nil
}

// SegmentManifestOf fetches and checks the manifest of lineage's segment
// covering r: errors.Is(err, ErrNotFound) if it is gone (retention), a
// *walerr.CorruptionError naming the key if it does not verify.
func (a *Archive) SegmentManifestOf(ctx context.Context, lineage string, r SegmentRange) (SegmentManifest, error) {
	if err := CheckLineage(lineage); err != nil {
		return SegmentManifest{}, err
	}
	key := ManifestKey(SegmentKey(lineage, r.FirstLSN, r.LastLSN))
	m, err := a.getSegmentManifest(ctx, key)
	if err != nil {
		return m, fmt.Errorf("archive: segment manifest %s: %w", key, err)
	}
	return m, nil
}
