package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"

	"github.com/walship/walship/internal/cli"

	"github.com/walship/walship/change"
	"github.com/walship/walship/wal"
	"github.com/walship/walship/walerr"
)

// runDump prints every change of committed, durable transactions as NDJSON,
// one line per change. It opens the log read-only, so it is safe beside a
// running writer. Corruption fails the command (exit 1) naming segment and
// offset; it never stops silently.
func runDump(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fset := newFlagSet("dump", stderr)
	dir := fset.String("wal", "", "WAL directory")
	from := fset.Uint64("from", 0, "first LSN to print (default: the oldest retained)")
	to := fset.Uint64("to", 0, "last LSN to print (default: the newest committed)")
	if help, err := parseFlags(fset, args); help || err != nil {
		return err
	}
	if err := requireFlag("wal", *dir); err != nil {
		return err
	}
	if *to != 0 && *to < *from {
		return usageError("--to %d is before --from %d", *to, *from)
	}
	l, rep, err := wal.OpenReadOnly(nil, *dir)
	if err != nil {
		return classify(err)
	}
	defer l.Close()
	if rep.Torn != nil || rep.Discarded != nil {
		fmt.Fprintf(stderr, "walship: note: %s (not shown; repaired by the next writer)\n", rep)
	}
	start := *from
	if start == 0 {
		start = l.FirstLSN()
	}
	r, err := l.NewReader(start, false)
	if err != nil {
		return classify(err)
	}
	defer r.Close()
	bw := bufio.NewWriterSize(stdout, 256<<10)
	var buf []byte
	for {
		t, err := r.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			bw.Flush()
			return classify(err)
		}
		for i := range t.Changes {
			lsn := t.FirstLSN + uint64(i)
			if lsn < start {
				continue
			}
			if *to != 0 && lsn > *to {
				return bw.Flush()
			}
			buf = change.AppendDumpJSON(buf[:0], change.DumpLine{LSN: lsn, CommitLSN: t.CommitLSN,
				CommitTime: t.CommitTime, Header: t.Header, Change: &t.Changes[i]})
			buf = append(buf, '\n')
			if _, err := bw.Write(buf); err != nil {
				return err
			}
		}
	}
	return bw.Flush()
}

// classify maps errors to exit codes: corruption 1, unreadable 2.
func classify(err error) error {
	switch {
	case errors.Is(err, walerr.ErrCorruption):
		return cli.Exit(1, err)
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, fs.ErrPermission):
		return cli.Exit(2, err)
	}
	return err
}
