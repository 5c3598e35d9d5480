package wal_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"

	"github.com/walship/walship/change"
	"github.com/walship/walship/wal"
)

// insert is an insert of one row {id, name} into public.<table>.
func insert(table string, id int64, name string) change.Change {
	return change.Change{
		Table: change.Table{Schema: "public", Name: table},
		Op:    change.Insert,
		Key:   change.Row{{Name: "id", Value: change.IntValue(id)}},
		After: change.Row{
			{Name: "id", Value: change.IntValue(id)},
			{Name: "name", Value: change.TextValue(name)},
		},
	}
}

// This tour opens a log, appends two transactions, reads them back whole
// and reopens the log, which recovers it and continues its LSNs.
func Example() {
	dir, err := os.MkdirTemp("", "wal-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()

	// Open creates the log (or recovers an existing one). One process
	// writes a log at a time.
	w, _, err := wal.Open(wal.Options{Dir: dir})
	if err != nil {
		log.Fatal(err)
	}

	// Append returns once the transaction is durable. Each change is one
	// record with its own LSN, so a transaction of two changes takes two.
	for _, txn := range []*change.Txn{
		{
			Header:  change.TxHeader{XID: 700, Origin: "example"},
			Changes: []change.Change{insert("users", 1, "ada"), insert("users", 2, "grace")},
		},
		{
			Header:  change.TxHeader{XID: 701, Origin: "example"},
			Changes: []change.Change{insert("orders", 10, "book")},
		},
	} {
		t, err := w.Append(ctx, txn)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("appended LSNs %d-%d\n", t.First, t.Last)
	}

	// A reader returns whole committed transactions from an LSN on; without
	// follow it stops with io.EOF at the end of the durable log.
	r, err := w.NewReader(1, false)
	if err != nil {
		log.Fatal(err)
	}
	for {
		tx, err := r.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("read xid %d, LSNs %d-%d:", tx.Header.XID, tx.FirstLSN, tx.CommitLSN)
		for _, c := range tx.Changes {
			fmt.Printf(" %c %s", c.Op, c.Table)
		}
		fmt.Println()
	}
	r.Close()
	if err := w.Close(); err != nil {
		log.Fatal(err)
	}

	// Reopening recovers the log: appends continue after the last LSN.
	w, _, err = wal.Open(wal.Options{Dir: dir})
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()
	fmt.Println("durable after reopening:", w.Durable())
	t, err := w.Append(ctx, &change.Txn{Changes: []change.Change{insert("users", 3, "edsger")}})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("appended LSNs %d-%d\n", t.First, t.Last)
	// Output:
	// appended LSNs 1-2
	// appended LSNs 3-3
	// read xid 700, LSNs 1-2: c public.users c public.users
	// read xid 701, LSNs 3-3: c public.orders
	// durable after reopening: 3
	// appended LSNs 4-4
}

// AppendStream appends a transaction too large to hold in memory, change by
// change. If next fails, nothing of the transaction becomes visible.
func ExampleWAL_AppendStream() {
	dir, err := os.MkdirTemp("", "wal-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()
	w, _, err := wal.Open(wal.Options{Dir: dir})
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()

	// A bulk load of 1000 rows, produced one at a time.
	id := int64(0)
	t, err := w.AppendStream(ctx, change.TxHeader{XID: 800}, func() (*change.Change, error) {
		if id == 1000 {
			return nil, io.EOF // the end of the transaction: commit it
		}
		id++
		c := insert("events", id, fmt.Sprint("event ", id))
		return &c, nil
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("committed LSNs %d-%d\n", t.First, t.Last)

	// A stream that fails midway is aborted: its records keep their LSNs
	// (LSNs stay dense) but readers skip it whole.
	failed := errors.New("source gone")
	n := 0
	_, err = w.AppendStream(ctx, change.TxHeader{XID: 801}, func() (*change.Change, error) {
		if n == 3 {
			return nil, failed
		}
		n++
		c := insert("events", 2000+int64(n), "lost")
		return &c, nil
	})
	fmt.Println("aborted:", errors.Is(err, failed))

	r, err := w.NewReader(1, false)
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	for {
		tx, err := r.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("read xid %d: %d changes\n", tx.Header.XID, len(tx.Changes))
	}
	// Output:
	// committed LSNs 1-1000
	// aborted: true
	// read xid 800: 1000 changes
}

// OpenReadOnly reads a log without taking it from its writer, as
// `walship dump` and `walship verify` do.
func ExampleOpenReadOnly() {
	dir, err := os.MkdirTemp("", "wal-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()
	w, _, err := wal.Open(wal.Options{Dir: dir})
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()
	for id := int64(1); id <= 3; id++ {
		if _, err := w.Append(ctx, &change.Txn{Changes: []change.Change{insert("users", id, "u")}}); err != nil {
			log.Fatal(err)
		}
	}

	// The writer stays open: a read-only log takes no lock and sees what
	// was durable when it was opened.
	ro, _, err := wal.OpenReadOnly(nil, dir)
	if err != nil {
		log.Fatal(err)
	}
	defer ro.Close()
	fmt.Printf("LSNs %d-%d in %d segment(s)\n", ro.FirstLSN(), ro.Visible(), len(ro.Segments()))
	r, err := ro.NewReader(2, false) // from LSN 2 on
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	for {
		tx, err := r.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println("commit LSN", tx.CommitLSN)
	}
	// Output:
	// LSNs 1-3 in 1 segment(s)
	// commit LSN 2
	// commit LSN 3
}
