package archive

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// TestListSegments: ListSegments names exactly the segments whose
// manifest exists, in LSN order, from their keys — not an orphan object,
// not another lineage's, not an object outside the lineages (the HA
// group's ha/ keys) — and SegmentManifestOf fetches the manifest of one,
// ErrNotFound once it is deleted.
func TestListSegments(t *testing.T) {
	eachBackend(t, func(t *testing.T, tb testBackend) {
		ctx := testCtx(t)
		a := openArchive(t, tb, Options{})
		t0 := time.Unix(1700000000, 0)
		var want []SegmentRange
		next := uint64(1)
		for i := range 3 {
			txns := mkTxns(next+uint64(i), 4, t0) // LSNs skipped before each but the first: aborted
			enc := must(a.EncodeSegment("main", next, txns))
			if _, err := a.StoreSegment(ctx, enc); err != nil {
				t.Fatal(err)
			}
			want = append(want, SegmentRange{next, enc.Manifest.LastLSN})
			next = enc.Manifest.LastLSN + 1
		}
		orphan := must(a.EncodeSegment("main", next, mkTxns(next, 2, t0)))
		for k, v := range map[string][]byte{orphan.Manifest.Key: orphan.Object, "ha/lease/00000000000000000001": []byte("{}")} {
			if err := a.Backend().Put(ctx, k, v); err != nil {
				t.Fatal(err)
			}
		}
		other := must(a.EncodeSegment("other", 1, mkTxns(1, 2, t0)))
		if _, err := a.StoreSegment(ctx, other); err != nil {
			t.Fatal(err)
		}
		got, err := a.ListSegments(ctx, "main")
		if err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("ListSegments = %v, %v; want %v", got, err, want)
		}
		m, err := a.SegmentManifestOf(ctx, "main", want[1])
		if err != nil || m.FirstLSN != want[1].FirstLSN || m.LastLSN != want[1].LastLSN || m.Txns != 4 {
			t.Fatalf("SegmentManifestOf(%v) = %+v, %v", want[1], m, err)
		}
		if err := a.DeleteSegment(ctx, m); err != nil {
			t.Fatal(err)
		}
		if _, err := a.SegmentManifestOf(ctx, "main", want[1]); !errors.Is(err, ErrNotFound) {
			t.Fatalf("SegmentManifestOf a deleted segment: %v, want ErrNotFound", err)
		}
		if _, err := a.ListSegments(ctx, "Bad/"); err == nil {
			t.Fatal("ListSegments of an invalid lineage: no error")
		}
	})
}
