package smoke

import (
	"context"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/walship/walship/groupcommit"
	"github.com/walship/walship/segment"
)

func TestSmoke(t *testing.T) {
	dir := t.TempDir()
	for round := 0; round < 3; round++ {
		l, rep, err := segment.Open(dir, segment.Options{SegmentSize: 64 << 10, Codec: segment.Codec(round)})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("open: %v", rep)
		c, err := groupcommit.New(l, groupcommit.Options{})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 200; i++ {
					recs := [][]byte{[]byte(fmt.Sprintf("g%d-%d-a", g, i)), []byte(fmt.Sprintf("g%d-%d-b %0100d", g, i, i))}
					if _, err := c.Append(context.Background(), recs, time.Time{}); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		r, err := l.NewReader(1, false)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		var lastT int64
		for {
			rec, err := r.Next(context.Background())
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			n++
			if rec.LSN != uint64(n) {
				t.Fatalf("lsn %d want %d", rec.LSN, n)
			}
			if rec.Commit && rec.CommitTime < lastT {
				t.Fatal("time backwards")
			}
		}
		if n != (round+1)*3200 {
			t.Fatalf("read %d", n)
		}
		r.Close()
		r2, _ := l.NewReader(2000, false)
		rec, err := r2.Next(context.Background())
		if err != nil || rec.LSN != 2000 {
			t.Fatal(rec.LSN, err)
		}
		r2.Close()
		t.Logf("segments %d", len(l.Segments()))
		l.Close()
		vr, err := segment.Verify(nil, dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("verify: records %d last %d torn %v", vr.Records, vr.LastLSN, vr.Torn)
	}
}
