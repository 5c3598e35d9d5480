package checksum

import (
	"context"
	"fmt"

	"github.com/walship/walship/change"
)

// Repairer copies a key range of a source table to the replicas again,
// through the stream: an incremental snapshot of the rows whose key is
// greater than after (nil: from the start) and at most hi (nil: to the
// end), compared as the checks compare keys (integers by value, text by
// bytes). Rows the replica holds in that range but the source does not
// must be deleted by the copy, or the next round still finds the chunk
// different.
type Repairer interface {
	RepairRange(ctx context.Context, table change.Table, after, hi []string) error
}

// Repair asks r to copy again every chunk that rep (a finished round)
// found different, and returns how many it asked for. The next round
// then tells whether the replica holds the source's rows again. It stops
// at r's first error.
func Repair(ctx context.Context, rep Report, r Repairer) (int, error) {
	n := 0
	for _, t := range rep.Tables {
		tb, err := change.ParseTable(t.Table)
		if err != nil {
			return n, fmt.Errorf("checksum: repair of %q: %w", t.Table, err)
		}
		for _, d := range t.Different {
			if err := r.RepairRange(ctx, tb, d.After, d.Hi); err != nil {
				return n, fmt.Errorf("checksum: repair of %s keys %s: %w", t.Table, d, err)
			}
			n++
		}
	}
	return n, nil
}
