package kafkasink

import (
	"math/rand/v2"
	"testing"
	"time"
)

func TestWatermarkOutOfOrderAcks(t *testing.T) {
	w := newWatermark(10)
	// LSNs 11..20; 13 has two records (delete + tombstone), 15 none.
	for lsn := uint64(11); lsn <= 20; lsn++ {
		n := 1
		switch lsn {
		case 13:
			n = 2
		case 15:
			n = 0
		}
		w.issue(lsn, n, true, time.Unix(int64(lsn), 0))
	}
	pos := func() uint64 { p, _, _, _ := w.position(); return p }
	steps := []struct {
		ack  uint64
		want uint64
	}{
		{12, 10}, {14, 10}, {11, 12}, {13, 12}, {16, 12}, {13, 16}, {20, 16}, {18, 16}, {17, 18}, {19, 20},
	}
	for _, s := range steps {
		w.ack(s.ack)
		if got := pos(); got != s.want {
			t.Fatalf("after ack of %d: watermark %d, want %d", s.ack, got, s.want)
		}
	}
	if _, pt, n, _ := w.position(); n != 0 || !pt.Equal(time.Unix(20, 0)) {
		t.Fatalf("in flight %d, commit time %v", n, pt)
	}
	// Re-sent LSNs below the watermark never lower it.
	w.issue(21, 1, true, time.Time{})
	w2 := newWatermark(25)
	w2.issue(21, 1, true, time.Time{})
	w2.ack(21)
	if p, _, _, _ := w2.position(); p != 25 {
		t.Fatalf("watermark lowered to %d", p)
	}
}

// TestWatermarkStopsOnCommits: with transactions 1-3 and 4-6, the
// watermark moves from 0 to 3 to 6, never to an LSN inside a transaction,
// however far the acknowledgements inside it have got.
func TestWatermarkStopsOnCommits(t *testing.T) {
	w := newWatermark(0)
	for lsn := uint64(1); lsn <= 6; lsn++ {
		w.issue(lsn, 1, lsn == 3 || lsn == 6, time.Time{})
	}
	for _, s := range []struct{ ack, want uint64 }{{1, 0}, {2, 0}, {4, 0}, {5, 0}, {3, 3}, {6, 6}} {
		w.ack(s.ack)
		if p, _, _, _ := w.position(); p != s.want {
			t.Fatalf("after ack of %d: watermark %d, want %d", s.ack, p, s.want)
		}
	}
}

func TestWatermarkRandomOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for iter := range 200 {
		w := newWatermark(0)
		n := 1 + rng.IntN(100)
		var acks []uint64
		for lsn := uint64(1); lsn <= uint64(n); lsn++ {
			k := rng.IntN(3)
			w.issue(lsn, k, true, time.Time{})
			for range k {
				acks = append(acks, lsn)
			}
		}
		rng.Shuffle(len(acks), func(i, j int) { acks[i], acks[j] = acks[j], acks[i] })
		left := map[uint64]int{}
		for _, a := range acks {
			left[a]++
		}
		for _, a := range acks {
			w.ack(a)
			left[a]--
			p, _, _, _ := w.position()
			// p is the largest LSN such that everything <= p has no acks left.
			want := uint64(0)
			for lsn := uint64(1); lsn <= uint64(n) && left[lsn] == 0; lsn++ {
				want = lsn
			}
			if p != want {
				t.Fatalf("iteration %d: watermark %d, want %d", iter, p, want)
			}
		}
	}
}
