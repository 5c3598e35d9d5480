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
	"github.com/walship/walship/vfs"
	"github.com/walship/walship/wal"
	"github.com/walship/walship/walerr"
)

// runDump prints every change of committed, durable transactions as NDJSON,
// one line per change. It opens the log read-only, so it is safe beside a
// running writer. Corruption fails the command (exit 1) naming segment and
// offset, after every whole transaction before it; it never stops
// silently. A segment that retention removes while dump reads is not
// damage: before anything is printed dump reads the log again as it now
// is; after, it stops at the end of a whole transaction with exit 2,
// naming the LSN to go on from.
func runDump(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	return dump(ctx, nil, args, stdout, stderr)
}

// dump is `walship dump` reading the log through fsys (nil: the operating
// system's); tests pass one that changes the log between listing and
// reading it.
func dump(ctx context.Context, fsys vfs.FS, args []string, stdout, stderr io.Writer) error {
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
	bw := bufio.NewWriterSize(stdout, 256<<10)
	d := dumper{fsys: fsys, dir: *dir, from: *from, to: *to, out: bw, stderr: stderr}
	for attempt := 1; ; attempt++ {
		err := d.run(ctx)
		if err == nil {
			return bw.Flush()
		}
		if !d.printed && vanished(err) && attempt < changedAttempts {
			// Retention removed a segment between listing the log and
			// reading it. Nothing is printed yet, so reading the log as it
			// now is gives the same output as a dump started a moment later.
			continue
		}
		if ferr := bw.Flush(); ferr != nil {
			return ferr
		}
		if errors.Is(err, wal.ErrRemoved) && d.printed {
			return cli.Exit(2, fmt.Errorf("dump: retention removed segments while dump read them (not damage): the output stops after LSN %d, the end of a whole transaction; to go on, dump again with --from %d: %w",
				d.lastCommit, d.lastCommit+1, err))
		}
		return classify(err)
	}
}

// changedAttempts bounds how often dump and verify start again when
// retention removes a segment under them (a segment file that was listed
// is gone when it is opened).
const changedAttempts = 5

// vanished reports whether err means that a segment file listed moments
// before is gone: the log changed under a reader, it is not damaged.
func vanished(err error) bool {
	return errors.Is(err, wal.ErrRemoved) && errors.Is(err, fs.ErrNotExist)
}

// dumper is one dump; run may be called again after a failure while
// nothing is printed, and then reads the log afresh.
type dumper struct {
	fsys     vfs.FS // nil: the operating system's
	dir      string
	from, to uint64
	out      *bufio.Writer
	stderr   io.Writer

	noted      bool   // the recovery note is printed
	printed    bool   // something is written to out
	lastCommit uint64 // commit LSN of the last transaction written
}

func (d *dumper) run(ctx context.Context) error {
	l, rep, err := wal.OpenReadOnly(d.fsys, d.dir)
	if err != nil {
		return err
	}
	defer l.Close()
	if (rep.Torn != nil || rep.Discarded != nil) && !d.noted {
		fmt.Fprintf(d.stderr, "walship: note: %s (not shown; repaired by the next writer)\n", rep)
		d.noted = true
	}
	start := d.from
	if start == 0 {
		start = l.FirstLSN()
	}
	r, err := l.NewReader(start, false)
	if err != nil {
		return err
	}
	defer r.Close()
	var buf []byte
	for {
		t, err := r.Next(ctx)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		for i := range t.Changes {
			lsn := t.FirstLSN + uint64(i)
			if lsn < start {
				continue
			}
			if d.to != 0 && lsn > d.to {
				return nil
			}
			buf = change.AppendDumpJSON(buf[:0], change.DumpLine{LSN: lsn, CommitLSN: t.CommitLSN,
				CommitTime: t.CommitTime, Header: t.Header, Change: &t.Changes[i]})
			buf = append(buf, '\n')
			if _, err := d.out.Write(buf); err != nil {
				return err
			}
			d.printed = true
		}
		d.lastCommit = t.CommitLSN
	}
}

// classify maps errors to exit codes: 1 means damage and nothing else;
// every other failure (a missing or unreadable log, a segment that
// retention removed while it was read) is 2.
func classify(err error) error {
	if errors.Is(err, walerr.ErrCorruption) {
		return cli.Exit(1, err)
	}
	return cli.Exit(2, err)
}
