package wal

import (
	"context"
	"errors"
	"io"
	"time"
)

// CommitTimeAfter returns the commit time of the first committed
// transaction whose commit LSN is above lsn, and false if the visible log
// holds none. Sinks use it to measure their lag as the age of the oldest
// transaction they have not shipped while they have not read it yet (a
// sink stuck before reading must still show its lag growing). It reads
// records without decoding or copying them.
func (l log) CommitTimeAfter(lsn uint64) (time.Time, bool, error) {
	from := max(lsn+1, l.seg.FirstLSN())
	if from > l.seg.Visible() {
		return time.Time{}, false, nil
	}
	r, err := l.seg.NewReader(from, false)
	if err != nil {
		return time.Time{}, false, err
	}
	defer r.Close()
	for {
		rec, err := r.Next(context.Background())
		if errors.Is(err, io.EOF) {
			return time.Time{}, false, nil
		}
		if err != nil {
			return time.Time{}, false, err
		}
		if rec.Commit && !rec.Aborted {
			return time.Unix(0, rec.CommitTime).UTC(), true, nil
		}
	}
}
