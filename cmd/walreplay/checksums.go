package main

import (
	"context"
	"fmt"
	"io"

	"github.com/walship/walship/checksum"
	"github.com/walship/walship/replica"
)

// restoreChecksums tallies the checks (walship.checksum messages) that a
// restore applied to the destination to, which held before results
// before it: the replica code verified each in the transaction that
// applied it. nil when the restore applied none.
func restoreChecksums(ctx context.Context, to string, before int) (*checksum.Tally, error) {
	res, err := replica.ReadChecksums(ctx, to)
	if err != nil {
		return nil, err
	}
	t := checksum.Count(res[min(before, len(res)):])
	if t.Equal+t.Different+t.Unsettled == 0 {
		return nil, nil
	}
	return &t, nil
}

// printChecksums adds the checks to the restore's summary.
func printChecksums(w io.Writer, t *checksum.Tally) {
	if t == nil {
		return
	}
	fmt.Fprintf(w, "checksums: %d chunks equal, %d different, %d unsettled\n", t.Equal, t.Different, t.Unsettled)
	for _, d := range t.Differences {
		fmt.Fprintf(w, "  DIFFERENT: %s\n", d)
	}
}
