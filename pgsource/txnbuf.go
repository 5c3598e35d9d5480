package pgsource

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/walship/walship/change"
	"github.com/walship/walship/wal"
)

// txnBuf collects the changes of one transaction. Up to maxMem bytes
// (estimated) stay in memory; beyond that every change is encoded into a
// temporary spill file, so a transaction of millions of rows needs constant
// memory. The spill file is unlinked at once: it disappears with the
// process, whatever happens.
type txnBuf struct {
	hdr     change.TxHeader
	changes []change.Change
	mem     int64
	maxMem  int64
	dir     string
	n       int // changes in total

	spill *os.File
	bw    *bufio.Writer
	rec   []byte
}

func newTxnBuf(hdr change.TxHeader, maxMem int64, dir string) *txnBuf {
	return &txnBuf{hdr: hdr, maxMem: maxMem, dir: dir, changes: make([]change.Change, 0, 16)}
}

// estimate approximates the memory a change holds.
func estimate(c *change.Change) int64 {
	n := int64(200)
	for _, r := range []change.Row{c.Key, c.Before, c.After} {
		for _, col := range r {
			n += 48 + int64(len(col.Name)) + valueSize(col.Value)
		}
	}
	return n
}

// valueSize approximates the bytes a value holds, without copying it.
func valueSize(v change.Value) int64 {
	switch v.Kind() {
	case change.KindText:
		s, _ := v.Text()
		return int64(len(s))
	case change.KindNumeric:
		s, _ := v.Numeric()
		return int64(len(s))
	case change.KindUnknown:
		_, s, _ := v.Unknown()
		return int64(len(s))
	case change.KindBytes:
		b, _ := v.Bytes()
		return int64(len(b))
	case change.KindJSON:
		b, _ := v.JSON()
		return int64(len(b))
	case change.KindArray:
		a, _ := v.Array()
		n := int64(24)
		for _, e := range a {
			n += 32 + valueSize(e)
		}
		return n
	}
	return 0
}

func (b *txnBuf) add(c change.Change) error {
	b.n++
	if b.spill == nil {
		b.changes = append(b.changes, c)
		b.mem += estimate(&c)
		if b.mem <= b.maxMem {
			return nil
		}
		f, err := os.CreateTemp(b.dir, "walship-pgspill-*")
		if err != nil {
			return fmt.Errorf("spill transaction %d: %w", b.hdr.XID, err)
		}
		os.Remove(f.Name())
		b.spill, b.bw = f, bufio.NewWriterSize(f, 1<<20)
		for i := range b.changes {
			if err := b.write(&b.changes[i]); err != nil {
				return err
			}
		}
		b.changes, b.mem = nil, 0
		return nil
	}
	return b.write(&c)
}

func (b *txnBuf) write(c *change.Change) error {
	b.rec = change.AppendRecord(b.rec[:0], nil, c)
	var l [binary.MaxVarintLen64]byte
	b.bw.Write(l[:binary.PutUvarint(l[:], uint64(len(b.rec)))])
	if _, err := b.bw.Write(b.rec); err != nil {
		return fmt.Errorf("spill transaction %d: %w", b.hdr.XID, err)
	}
	return nil
}

// close releases the spill file, if any.
func (b *txnBuf) close() {
	if b.spill != nil {
		b.spill.Close()
		b.spill = nil
	}
	b.changes = nil
}

// appendTo queues the transaction in w without waiting for durability. A
// spilled transaction is streamed from its file through w.AppendStream,
// which holds the log exclusively while next yields the changes and never
// exposes part of a transaction, so it is never read back into memory
// whole.
func (b *txnBuf) appendTo(ctx context.Context, w *wal.WAL) (wal.Ticket, error) {
	if b.spill == nil {
		txn := change.Txn{Header: b.hdr, Changes: b.changes}
		return w.AppendAsync(ctx, &txn)
	}
	if err := b.bw.Flush(); err != nil {
		return wal.Ticket{}, fmt.Errorf("spill transaction %d: %w", b.hdr.XID, err)
	}
	if _, err := b.spill.Seek(0, io.SeekStart); err != nil {
		return wal.Ticket{}, err
	}
	br := bufio.NewReaderSize(b.spill, 1<<20)
	var buf []byte
	var c change.Change
	next := func() (*change.Change, error) {
		n, err := binary.ReadUvarint(br)
		if err == io.EOF {
			return nil, io.EOF
		}
		if err != nil {
			return nil, fmt.Errorf("read spill file: %w", err)
		}
		if n > 1<<31 {
			return nil, errors.New("read spill file: record too large")
		}
		if uint64(cap(buf)) < n {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		if _, err := io.ReadFull(br, buf); err != nil {
			return nil, fmt.Errorf("read spill file: %w", err)
		}
		_, c, err = change.DecodeRecord(buf)
		if err != nil {
			return nil, fmt.Errorf("read spill file: %w", err)
		}
		return &c, nil
	}
	return w.AppendStream(ctx, b.hdr, next)
}
