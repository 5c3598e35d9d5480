package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/walship/walship/change"
	"github.com/walship/walship/config"
	"github.com/walship/walship/internal/bytesize"
	"github.com/walship/walship/wal"
)

// walFlags are the flags shared by commands that open the WAL for writing.
type walFlags struct {
	dir, sync, segmentSize, compression, maxSkew string
}

func (f *walFlags) register(fs interface {
	StringVar(p *string, name, value, usage string)
}) {
	fs.StringVar(&f.dir, "wal", "", "WAL directory (created if missing)")
	fs.StringVar(&f.sync, "sync", "local", "local: acknowledge after fdatasync; off: after write(2)")
	fs.StringVar(&f.segmentSize, "segment-size", "64MiB", "size at which a segment is sealed")
	fs.StringVar(&f.compression, "compression", "none", "frame compression: none, s2 or zstd")
	fs.StringVar(&f.maxSkew, "max-commit-time-skew", "5m", "refuse a commit_time further ahead of this host's clock (like wal.max_commit_time_skew)")
}

func (f *walFlags) options() (wal.Options, error) {
	if err := requireFlag("wal", f.dir); err != nil {
		return wal.Options{}, err
	}
	sm, err := wal.ParseSyncMode(f.sync)
	if err != nil {
		return wal.Options{}, usageError("--sync: %v", err)
	}
	size, err := bytesize.Parse(f.segmentSize)
	if err == nil {
		err = (&wal.Options{SegmentSize: size}).Validate() // range: a usage error too
	}
	if err != nil {
		return wal.Options{}, usageError("--segment-size: %v", err)
	}
	codec, err := wal.ParseCompression(f.compression)
	if err != nil {
		return wal.Options{}, usageError("--compression: %v", err)
	}
	skew, err := time.ParseDuration(f.maxSkew)
	if err == nil && skew <= 0 {
		err = errors.New("must be positive")
	}
	if err != nil {
		return wal.Options{}, usageError("--max-commit-time-skew %q: %v", f.maxSkew, err)
	}
	return wal.Options{Dir: f.dir, Sync: sm, SegmentSize: size, Compression: codec, MaxCommitTimeSkew: skew}, nil
}

// runAppend reads NDJSON transactions from stdin and appends them. Input is
// parsed and queued while earlier transactions are being synced
// (pipelining); each acknowledgement line is printed, in input order, only
// once its transaction is durable. On bad input, everything before the bad
// line is still made durable and acknowledged, then the command fails
// naming the line.
//
// With --idempotency-key the whole input is one request instead, appended
// all or nothing (appendKeyed).
func runAppend(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("append", stderr)
	var wf walFlags
	wf.register(fs)
	var key, window string
	fs.StringVar(&key, "idempotency-key", "", "append the whole input as one request, all or nothing, remembered under this key (1 to 128 printable ASCII bytes): a retry with the same key and input appends nothing and prints the original acknowledgements")
	fs.StringVar(&window, "idempotency-window", "24h", "how long --idempotency-key is remembered (like source.http.idempotency_window)")
	if help, err := parseFlags(fs, args); help || err != nil {
		return err
	}
	opts, err := wf.options()
	if err != nil {
		return err
	}
	// An empty key given explicitly is refused like any other bad key,
	// rather than quietly meaning "no key".
	keyed := false
	fs.Visit(func(f *flag.Flag) { keyed = keyed || f.Name == "idempotency-key" })
	var win time.Duration
	if keyed {
		if err := change.ValidateIdempotencyKey(key); err != nil {
			return usageError("--idempotency-key: %v", err)
		}
		win, err = time.ParseDuration(window)
		if err == nil && win < config.MinIdempotencyWindow {
			err = fmt.Errorf("below the minimum of %v: the key would be forgotten before a retry", config.MinIdempotencyWindow)
		}
		if err != nil {
			return usageError("--idempotency-window %q: %v", window, err)
		}
	}
	w, rep, err := wal.Open(opts)
	if err != nil {
		return err
	}
	if !rep.Clean() {
		fmt.Fprintf(stderr, "walship: recovered %s: %s\n", opts.Dir, rep)
	}
	if keyed {
		err := appendKeyed(ctx, w, key, win, stdin, stdout, stderr)
		return errors.Join(err, w.Close())
	}

	acks := make(chan wal.Ticket, 1<<14)
	printed := make(chan error, 1)
	go func() { printed <- printAcks(w, acks, stdout) }()

	type parsed struct {
		line int
		txn  change.Txn
		err  error
	}
	lines := make(chan parsed, 256)
	go func() {
		dec := change.NewDecoder(stdin)
		for {
			line, txn, err := dec.Next()
			select {
			case lines <- parsed{line, txn, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				close(lines)
				return
			}
		}
	}()

	var inErr error
loop:
	for {
		select {
		case <-ctx.Done():
			inErr = fmt.Errorf("interrupted: %w", ctx.Err())
			break loop
		case p := <-lines:
			if errors.Is(p.err, io.EOF) {
				break loop
			}
			if p.err != nil {
				inErr = fmt.Errorf("input: %w", p.err)
				break loop
			}
			t, err := w.AppendAsync(context.Background(), &p.txn)
			if err != nil {
				if errors.Is(err, change.ErrInvalid) {
					inErr = fmt.Errorf("input: line %d: %w", p.line, err)
				} else {
					inErr = fmt.Errorf("line %d: append: %w", p.line, err)
				}
				break loop
			}
			acks <- t
		}
	}
	close(acks)
	perr := <-printed
	cerr := w.Close()
	return errors.Join(inErr, perr, cerr)
}

// appendKeyed appends all of stdin as one request under an idempotency
// key: every line is decoded, validated and encoded first, and on bad input
// nothing is appended. A key already used for the same input appends
// nothing and prints the original acknowledgements; for other input it
// fails.
func appendKeyed(ctx context.Context, w *wal.WAL, key string, window time.Duration, stdin io.Reader, stdout, stderr io.Writer) error {
	keys, err := w.LoadKeys(ctx, window)
	if err != nil {
		return err
	}
	h := sha256.New()
	dec := change.NewDecoder(io.TeeReader(stdin, h))
	b := w.NewBatch()
	var lines []int32 // of each transaction
	for {
		line, txn, err := dec.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err == nil {
			err = b.Add(&txn)
		}
		if err == nil {
			lines = append(lines, int32(line))
		}
		if err != nil {
			if ie, ok := errors.AsType[*change.InvalidError](err); ok && ie.Line == 0 {
				ie.Line = line
			}
			return fmt.Errorf("input: %w (nothing appended)", err)
		}
	}
	if b.Len() == 0 {
		return errors.New("input: no transactions (nothing appended)")
	}
	var sum [32]byte
	h.Sum(sum[:0])
	claim, err := keys.Claim(ctx, key, sum, b.Len())
	if errors.Is(err, wal.ErrKeyConflict) {
		return fmt.Errorf("--idempotency-key was already used, within --idempotency-window, for different input: nothing appended")
	}
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(stdout, 64<<10)
	var buf []byte
	print := func(t wal.Ticket) { buf = appendAck(buf[:0], t); bw.Write(buf) }
	if claim.Replayed {
		fmt.Fprintln(stderr, "walship: this input was already appended under --idempotency-key: printing the original acknowledgements, appending nothing")
		if err := claim.Tickets(ctx, print); err != nil {
			return err
		}
		return bw.Flush()
	}
	if claim.Start > 0 {
		if err := b.Skip(int(claim.Start)); err != nil {
			claim.Release()
			return err
		}
	}
	if err := b.SetMark(claim.Mark()); err != nil {
		claim.Release()
		return err
	}
	if err := w.AppendBatchAsync(context.WithoutCancel(ctx), b); err != nil {
		claim.Release()
		if ie, ok := errors.AsType[*change.InvalidError](err); ok {
			// The mark made the first transaction appended too large.
			ie.Line = int(lines[claim.Start])
			return fmt.Errorf("input: %w (nothing appended)", err)
		}
		return fmt.Errorf("append: %w (nothing appended)", err)
	}
	err = w.Wait(context.WithoutCancel(ctx), b.Last())
	claim.Done(b)
	if err != nil {
		return fmt.Errorf("append: %w", err)
	}
	if claim.Start > 0 {
		err = claim.Tickets(ctx, print)
	} else {
		b.Tickets(print)
	}
	return errors.Join(err, bw.Flush())
}

// appendAck appends an acknowledgement line.
func appendAck(buf []byte, t wal.Ticket) []byte {
	buf = append(buf, `{"lsn":`...)
	buf = strconv.AppendUint(buf, t.Last, 10)
	buf = append(buf, `,"commit_time":"`...)
	buf = t.Time().AppendFormat(buf, time.RFC3339Nano)
	return append(buf, "\"}\n"...)
}

// printAcks prints one line per ticket once it is durable, flushing stdout
// before each wait so an acknowledgement is never held back.
func printAcks(w *wal.WAL, acks <-chan wal.Ticket, stdout io.Writer) error {
	bw := bufio.NewWriterSize(stdout, 64<<10)
	var buf []byte
	var err error
	for t := range acks {
		if err != nil {
			continue // drain
		}
		if w.Durable() < t.Last {
			if err = bw.Flush(); err != nil {
				continue
			}
			if err = w.Wait(context.Background(), t.Last); err != nil {
				continue
			}
		}
		buf = appendAck(buf[:0], t)
		_, err = bw.Write(buf)
	}
	if ferr := bw.Flush(); err == nil {
		err = ferr
	}
	return err
}
