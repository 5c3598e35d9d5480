package groupcommit

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/walship/walship/segment"
)

// TestGateFailsExactlyItsBatch: the transactions queued behind a flush
// form the next batch; when the gate refuses it, exactly their appenders
// fail (Wait too), nothing of them is written, the appender of the flush
// before succeeds, and the next append, once the gate passes, gets the
// refused LSNs and is written.
func TestGateFailsExactlyItsBatch(t *testing.T) {
	ctx := context.Background()
	fsys := newBlockFS(make(chan struct{}, 1))
	l := openLog(t, t.TempDir(), segment.Options{FS: fsys})
	defer l.Close()
	errGate := errors.New("lease lost")
	var refuse atomic.Bool
	c, err := New(l, Options{Gate: func() error {
		if refuse.CompareAndSwap(true, false) {
			return errGate
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fsys.blocked.Store(true)
	a, err := c.AppendAsync(ctx, [][]byte{[]byte("a")}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	<-fsys.entered // a's flush hangs in fdatasync
	b, err := c.AppendAsync(ctx, [][]byte{[]byte("b1"), []byte("b2")}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := c.AppendAsync(ctx, [][]byte{[]byte("c")}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	waits := make(chan error, 2)
	for _, lsn := range []uint64{b.Last, cc.Last} {
		go func() { waits <- c.Wait(ctx, lsn) }()
	}
	refuse.Store(true)
	fsys.blocked.Store(false)
	close(fsys.release)
	if err := c.Wait(ctx, a.Last); err != nil {
		t.Fatalf("the flush before the refused batch: %v", err)
	}
	for range 2 {
		if err := <-waits; !errors.Is(err, ErrRefused) || !errors.Is(err, errGate) {
			t.Fatalf("Wait on the refused batch: %v, want ErrRefused wrapping the gate's error", err)
		}
	}
	d, err := c.Append(ctx, [][]byte{[]byte("d")}, time.Time{})
	if err != nil {
		t.Fatalf("append once the gate passes: %v", err)
	}
	if d.First != b.First {
		t.Fatalf("the next append got LSN %d, want the refused %d", d.First, b.First)
	}
	if err := c.Wait(ctx, cc.Last); !errors.Is(err, ErrRefused) {
		t.Fatalf("a later Wait on a refused LSN not given again: %v, want ErrRefused", err)
	}
	if c.Err() != nil {
		t.Fatalf("the refusal is sticky: %v", c.Err())
	}
	datas, _ := readAll(t, l)
	if got := len(datas); got != 2 || datas[0] != "a" || datas[1] != "d" {
		t.Fatalf("the log holds %q, want a and d", datas)
	}
}
