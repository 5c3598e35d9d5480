package groupcommit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/walship/walship/segment"
)

// TestStreamCloseAborts: Close during a stream makes the stream's Add fail
// with ErrClosed and waits for its owner to abort it; the abort frame is
// written, so the log reopens clean and its readers see only the
// transactions committed before.
func TestStreamCloseAborts(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	l := openLog(t, dir, segment.Options{SegmentSize: 16 << 10})
	c, err := New(l, Options{MaxBatchBytes: 2 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Append(ctx, [][]byte{[]byte("a1"), []byte("a2")}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	s, err := c.BeginStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.First() != 3 {
		t.Fatalf("stream starts at LSN %d, want 3", s.First())
	}
	rec := make([]byte, 500)
	for range 20 {
		if err := s.Add(ctx, rec); err != nil {
			t.Fatal(err)
		}
	}
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		err := s.Add(ctx, rec)
		if errors.Is(err, ErrClosed) {
			break
		}
		if err != nil || time.Now().After(deadline) {
			t.Fatalf("Add during Close: %v", err)
		}
	}
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while the stream was active", err)
	case <-time.After(50 * time.Millisecond):
	}
	if err := s.Abort(); err != nil {
		t.Fatal(err)
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if _, err := s.Commit(ctx, time.Time{}); !errors.Is(err, ErrStreamEnded) {
		t.Fatalf("Commit after Abort: %v", err)
	}
	l.Close()

	rep, err := segment.Verify(nil, dir)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Aborted != 1 || rep.Unfinished != nil {
		t.Fatalf("verify: %+v, want one aborted transaction", rep)
	}
	l = openLog(t, dir, segment.Options{SegmentSize: 16 << 10})
	defer l.Close()
	datas, commits := readAll(t, l)
	if fmt.Sprint(commits) != fmt.Sprint([]uint64{2, l.NextLSN() - 1}) || datas[0] != "a1" || datas[1] != "a2" {
		t.Fatalf("commits %v (next LSN %d)", commits, l.NextLSN())
	}
}

// newStream opens a log in a new directory with a committer, closed at
// the test's end, and begins a stream on it.
func newStream(t *testing.T) (string, *segment.Log, *Committer, *Stream) {
	t.Helper()
	dir := t.TempDir()
	l := openLog(t, dir, segment.Options{})
	t.Cleanup(func() { l.Close() })
	c, err := New(l, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s, err := c.BeginStream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return dir, l, c, s
}

// TestStreamAbortBeforeFlushReusesLSNs: a stream aborted before the flusher
// took any of its records leaves nothing behind and its LSNs are reused.
// The test holds the flushing token so that the flusher cannot take them.
func TestStreamAbortBeforeFlushReusesLSNs(t *testing.T) {
	ctx := context.Background()
	_, l, c, s := newStream(t)
	c.flushing <- struct{}{}
	for range 3 {
		if err := s.Add(ctx, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	err := s.Abort()
	<-c.flushing
	if err != nil {
		t.Fatal(err)
	}
	tk, err := c.Append(ctx, [][]byte{[]byte("b")}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if tk.First != 1 {
		t.Fatalf("append after the abort got LSN %d, want 1", tk.First)
	}
	if datas, _ := readAll(t, l); fmt.Sprint(datas) != "[b]" {
		t.Fatalf("log holds %q", datas)
	}
}

// TestStreamAbortAfterFlushWritesAbortFrame: once the flusher took some of
// a stream's records, Abort ends them with an abort record that takes the
// next LSN (dense LSNs) and carries a real commit time, never the empty
// log's sentinel; verify counts the transaction as aborted.
func TestStreamAbortAfterFlushWritesAbortFrame(t *testing.T) {
	ctx := context.Background()
	dir, l, c, s := newStream(t)
	for range 3 { // two encoded (LSNs 1, 2), the third held by the stream
		if err := s.Add(ctx, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	c.signal()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		c.mu.Lock()
		taken := c.mu.takes > 0
		c.mu.Unlock()
		if taken {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the flusher never took the stream's records")
		}
	}
	before := time.Now().UnixNano()
	if err := s.Abort(); err != nil {
		t.Fatal(err)
	}
	tk, err := c.Append(ctx, [][]byte{[]byte("b")}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if tk.First != 4 {
		t.Fatalf("append after the abort got LSN %d, want 4 (x, x, abort, b)", tk.First)
	}
	r, err := l.NewReader(1, false)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var got []string
	for {
		rec, err := r.Next(ctx)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if rec.Aborted && rec.CommitTime < before {
			t.Fatalf("abort record at LSN %d has commit time %d, before the abort (%d)", rec.LSN, rec.CommitTime, before)
		}
		got = append(got, fmt.Sprintf("%d:%s:%v:%v", rec.LSN, rec.Data, rec.Commit, rec.Aborted))
	}
	if want := "[1:x:false:false 2:x:false:false 3::true:true 4:b:true:false]"; fmt.Sprint(got) != want {
		t.Fatalf("log holds %v, want %s", got, want)
	}
	rep, err := segment.Verify(nil, dir)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if rep.Aborted != 1 || rep.LastLSN != 4 {
		t.Fatalf("verify: %+v, want one aborted transaction and LSNs up to 4", rep)
	}
}
