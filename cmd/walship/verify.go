package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/walship/walship/internal/cli"
	"github.com/walship/walship/vfs"

	"github.com/walship/walship/wal"
	"github.com/walship/walship/walerr"
)

// verifyResult is the --json output of verify.
type verifyResult struct {
	Status       string          `json:"status"` // intact, recoverable, corrupt, unreadable, changed
	Error        string          `json:"error,omitempty"`
	Segment      string          `json:"segment,omitempty"` // where corruption is
	Offset       *int64          `json:"offset,omitempty"`
	Segments     int             `json:"segments"`
	FirstLSN     uint64          `json:"first_lsn"`
	LastLSN      uint64          `json:"last_lsn"`
	Transactions uint64          `json:"transactions"`
	Records      uint64          `json:"records"`
	Aborted      int             `json:"aborted_transactions"`
	Bytes        int64           `json:"bytes"`
	LastCommit   string          `json:"last_commit_time,omitempty"`
	TornTail     *tornJSON       `json:"torn_tail,omitempty"`
	Unfinished   *unfinishedJSON `json:"unfinished_transaction,omitempty"`
	TornCreation string          `json:"torn_creation,omitempty"` // a newest segment whose header was never written
	Acked        *ackedJSON      `json:"acknowledged,omitempty"`  // the acknowledgement watermark; absent in a log without one
	SegmentList  []segmentJSON   `json:"segment_list,omitempty"`
}

// tornJSON, unfinishedJSON and segmentJSON give the segment package's
// report types the snake_case keys of the rest of the --json output.
type tornJSON struct {
	Segment string `json:"segment"`
	Offset  int64  `json:"offset"`
	Bytes   int64  `json:"bytes"`
	Reason  string `json:"reason"`
}

// ackedJSON is the acknowledgement watermark: every transaction up to LSN
// was acknowledged, and the segment was durable up to offset.
type ackedJSON struct {
	LSN     uint64 `json:"lsn"`
	Segment string `json:"segment"`
	Offset  int64  `json:"offset"`
}

type unfinishedJSON struct {
	FirstLSN uint64 `json:"first_lsn"`
	Records  uint64 `json:"records"`
}

type segmentJSON struct {
	Name     string `json:"name"`
	Lineage  uint32 `json:"lineage"`
	ID       string `json:"id"`
	FirstLSN uint64 `json:"first_lsn"`
	NextLSN  uint64 `json:"next_lsn"`
	Frames   int    `json:"frames"`
	DataEnd  int64  `json:"data_end"`
}

// runVerify checks every segment header, frame checksum, LSN, transaction
// boundary and record encoding without changing anything. Exit 0: intact,
// or recoverable (a torn tail or unfinished transaction beyond the
// acknowledgement watermark, which the next writer removes: never called
// intact); 1: corruption, naming the segment file and offset, including
// damage that would remove acknowledged transactions; 2: the log cannot be read, or retention kept removing
// segments while verify read them. A segment removed between listing and
// reading is not damage: verify starts again on the log as it now is, and
// reports what it verified.
func runVerify(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	return verify(ctx, nil, args, stdout, stderr)
}

// verify is `walship verify` reading the log through fsys (nil: the
// operating system's).
func verify(ctx context.Context, fsys vfs.FS, args []string, stdout, stderr io.Writer) error {
	fset := newFlagSet("verify", stderr)
	dir := fset.String("wal", "", "WAL directory")
	asJSON := fset.Bool("json", false, "print the result as JSON")
	verbose := fset.Bool("v", false, "list every segment")
	if help, err := parseFlags(fset, args); help || err != nil {
		return err
	}
	if err := requireFlag("wal", *dir); err != nil {
		return err
	}
	var res verifyResult
	var err error
	for attempt := 1; ; attempt++ {
		res, err = verifyWAL(ctx, fsys, *dir)
		if !vanished(err) && !errors.Is(err, errChanged) {
			break
		}
		if attempt == changedAttempts {
			// Not damage: retention keeps removing segments faster than
			// verify reads them.
			err = fmt.Errorf("verify: the log changed while it was read (retention removed segments) %d times in a row; run verify again: %w", attempt, err)
			res = verifyResult{Status: "changed", Error: err.Error()}
			break
		}
		// Retention removed a segment between listing and reading: verify
		// the log as it now is, and report that.
	}
	if *verbose || *asJSON {
		// keep the list
	} else {
		res.SegmentList = nil
	}
	if *asJSON {
		b, _ := json.MarshalIndent(res, "", "  ")
		fmt.Fprintln(stdout, string(b))
	} else {
		printVerify(stdout, *dir, res, *verbose)
	}
	if err == nil {
		return nil
	}
	if res.Status == "corrupt" {
		return cli.Exit(1, err)
	}
	return cli.Exit(2, err)
}

func verifyWAL(ctx context.Context, fsys vfs.FS, dir string) (verifyResult, error) {
	rep, err := wal.Verify(fsys, dir)
	if err != nil {
		return failed(err), err
	}
	res := verifyResult{Status: "intact", Segments: len(rep.Segments), FirstLSN: rep.FirstLSN, LastLSN: rep.LastLSN,
		Records: rep.Records, Aborted: rep.Aborted, Bytes: rep.Bytes}
	if t := rep.Torn; t != nil {
		res.TornTail = &tornJSON{Segment: t.Segment, Offset: t.Offset, Bytes: t.Bytes, Reason: t.Reason}
	}
	if u := rep.Unfinished; u != nil {
		res.Unfinished = &unfinishedJSON{FirstLSN: u.FirstLSN, Records: u.Records}
	}
	res.TornCreation = rep.TornCreation
	if res.TornTail != nil || res.Unfinished != nil || res.TornCreation != "" {
		// Opening the log would remove something: not intact.
		res.Status = "recoverable"
	}
	if w := rep.Watermark; w != nil {
		res.Acked = &ackedJSON{LSN: w.LSN, Segment: w.Segment, Offset: w.Offset}
	}
	for _, s := range rep.Segments {
		res.SegmentList = append(res.SegmentList, segmentJSON{Name: s.Name, Lineage: s.Lineage, ID: s.ID.String(),
			FirstLSN: s.FirstLSN, NextLSN: s.NextLSN, Frames: s.Frames, DataEnd: s.DataEnd})
	}
	if rep.LastTime != 0 {
		res.LastCommit = time.Unix(0, rep.LastTime).UTC().Format(time.RFC3339Nano)
	}
	// Second pass: every record must decode as a change, and every
	// transaction must begin with a transaction header.
	l, _, err := wal.OpenReadOnly(fsys, dir)
	if err != nil {
		return failed(err), err
	}
	defer l.Close()
	if l.FirstLSN() != rep.FirstLSN {
		// Retention removed segments between the passes: report one
		// state of the log, not parts of two.
		err := fmt.Errorf("%w: it starts at LSN %d, not %d", errChanged, l.FirstLSN(), rep.FirstLSN)
		return verifyResult{Status: "unreadable", Error: err.Error()}, err
	}
	r, err := l.NewReader(l.FirstLSN(), false)
	if err != nil {
		return failed(err), err
	}
	defer r.Close()
	for {
		txn, err := r.Next(ctx)
		if errors.Is(err, io.EOF) || (err == nil && txn.CommitLSN > rep.LastLSN) {
			// A live writer appended after the first pass: count the
			// state that pass described, not more.
			break
		}
		if err != nil {
			e := classify(err)
			r := failed(e)
			if cli.Code(e) == 1 {
				r.Status = "corrupt"
			}
			return r, e
		}
		res.Transactions++
	}
	return res, nil
}

// errChanged is the log changing between verify's two passes.
var errChanged = errors.New("verify: the log changed while it was read")

func failed(err error) verifyResult {
	r := verifyResult{Status: "unreadable", Error: err.Error()}
	var ce *walerr.CorruptionError
	if errors.As(err, &ce) && ce.Offset >= 0 {
		r.Status, r.Segment, r.Offset = "corrupt", ce.Object, &ce.Offset
	} else if errors.Is(err, walerr.ErrCorruption) {
		r.Status = "corrupt"
	}
	return r
}

func printVerify(w io.Writer, dir string, r verifyResult, verbose bool) {
	switch r.Status {
	case "corrupt":
		if r.Offset != nil {
			fmt.Fprintf(w, "CORRUPT: %s: segment %s, offset %d\n", dir, r.Segment, *r.Offset)
		}
		fmt.Fprintf(w, "CORRUPT: %s\n", r.Error)
		return
	case "unreadable":
		fmt.Fprintf(w, "UNREADABLE: %s\n", r.Error)
		return
	case "changed":
		fmt.Fprintf(w, "CHANGED: %s\n", r.Error)
		return
	}
	// "intact" only when opening the log would remove nothing.
	fmt.Fprintf(w, "%s: %s: %d segments, LSN %d..%d, %d transactions, %d records, %d bytes",
		r.Status, dir, r.Segments, r.FirstLSN, r.LastLSN, r.Transactions, r.Records, r.Bytes)
	if r.LastCommit != "" {
		fmt.Fprintf(w, ", last commit %s", r.LastCommit)
	}
	fmt.Fprintln(w)
	if r.Aborted > 0 {
		fmt.Fprintf(w, "%d aborted transaction(s): streamed transactions whose source failed midway; readers skip them\n", r.Aborted)
	}
	beyond := "beyond the acknowledgement watermark"
	if r.Acked == nil {
		beyond = "(no acknowledgement watermark: a log written before walship kept one)"
	}
	if t := r.TornTail; t != nil {
		fmt.Fprintf(w, "torn tail of %d bytes %s: unacknowledged writes, removed on next open: segment %s, offset %d: %s\n",
			t.Bytes, beyond, t.Segment, t.Offset, t.Reason)
	}
	if u := r.Unfinished; u != nil {
		fmt.Fprintf(w, "unfinished transaction %s: %d records from LSN %d with no durable commit, removed on next open\n",
			beyond, u.Records, u.FirstLSN)
	}
	if r.TornCreation != "" {
		fmt.Fprintf(w, "torn segment creation: segment %s, whose header was never written, removed on next open\n", r.TornCreation)
	}
	if a := r.Acked; a != nil && verbose {
		fmt.Fprintf(w, "acknowledged up to LSN %d (segment %s durable up to offset %d)\n", a.LSN, a.Segment, a.Offset)
	}
	if verbose {
		for _, s := range r.SegmentList {
			fmt.Fprintf(w, "  %s lineage %d LSN %d..%d, %d frames, %d bytes\n", s.Name, s.Lineage, s.FirstLSN, s.NextLSN-1, s.Frames, s.DataEnd)
		}
	}
}
