package obs

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// exactQuantile is the nearest-rank percentile of samples truncated to µs.
func exactQuantile(samples []time.Duration, q float64) time.Duration {
	s := make([]time.Duration, len(samples))
	for i, v := range samples {
		s[i] = v.Truncate(time.Microsecond)
	}
	slices.Sort(s)
	rank := int(math.Ceil(q * float64(len(s))))
	rank = min(max(rank, 1), len(s))
	return s[rank-1]
}

func TestBuckets(t *testing.T) {
	prev := -1
	for _, v := range []uint64{0, 1, 511, 512, 1023, 1024, 1025, 2047, 2048, 1e6, 1e9, 1<<40 - 1} {
		b := bucketOf(v)
		if b < prev || b >= numBuckets {
			t.Fatalf("bucketOf(%d) = %d (prev %d, n %d)", v, b, prev, numBuckets)
		}
		prev = b
		hi := bucketHigh(b)
		if hi < v || float64(hi-v) > float64(v)*RelativeError {
			t.Fatalf("bucketHigh(bucketOf(%d)) = %d: outside the error bound", v, hi)
		}
		if bucketOf(hi) != b || bucketOf(hi+1) == b && hi+1 < 1<<40 {
			t.Fatalf("bucket %d upper edge %d is not tight", b, hi)
		}
	}
	if bucketOf(1<<50) != bucketOf(1<<40-1) {
		t.Fatal("huge values are not clamped")
	}
}

func TestWindowQuantilesExactSmall(t *testing.T) {
	// 1..1000 µs: all in the exact range; nearest-rank is exact.
	w := NewWindow(time.Minute, 60)
	now := time.Unix(1_000_000, 0)
	var samples []time.Duration
	for i := 1000; i >= 1; i-- { // insertion order must not matter
		d := time.Duration(i) * time.Microsecond
		samples = append(samples, d)
		w.Add(now, d)
	}
	got, ok := w.Quantiles(now, quantiles)
	if !ok {
		t.Fatal("empty")
	}
	want := []time.Duration{500 * time.Microsecond, 950 * time.Microsecond, 990 * time.Microsecond, 999 * time.Microsecond}
	for i := range want {
		if got[i] != want[i] || got[i] != exactQuantile(samples, quantiles[i]) {
			t.Errorf("q%v = %v, want %v", quantiles[i], got[i], want[i])
		}
	}
}

func TestWindowQuantilesBoundedError(t *testing.T) {
	// In a fixed order, each with its own seeded generator, so that a
	// failure reproduces.
	dists := []struct {
		name string
		gen  func(rng *rand.Rand) time.Duration
	}{
		{"uniform 0-2s", func(rng *rand.Rand) time.Duration { return time.Duration(rng.Int64N(int64(2 * time.Second))) }},
		{"lognormal", func(rng *rand.Rand) time.Duration {
			return time.Duration(math.Exp(rng.NormFloat64()*1.5 + math.Log(20e6)))
		}},
		{"bimodal", func(rng *rand.Rand) time.Duration {
			if rng.IntN(100) < 2 {
				return 3*time.Second + time.Duration(rng.Int64N(1e9))
			}
			return time.Duration(rng.Int64N(5e6))
		}},
		{"constant 42ms", func(*rand.Rand) time.Duration { return 42 * time.Millisecond }},
		{"one sample", nil},
	}
	qs := []float64{0.5, 0.9, 0.95, 0.99, 0.999, 1}
	for di, dist := range dists {
		name, rng := dist.name, rand.New(rand.NewPCG(1, uint64(di)))
		gen := func() time.Duration { return dist.gen(rng) }
		if dist.gen == nil {
			gen = nil
		}
		w := NewWindow(5*time.Minute, 60)
		now := time.Unix(2_000_000, 0)
		var samples []time.Duration
		n := 20000
		if gen == nil {
			n, gen = 1, func() time.Duration { return 1234567 * time.Microsecond }
		}
		for i := 0; i < n; i++ {
			d := gen()
			samples = append(samples, d)
			w.Add(now.Add(time.Duration(i)*time.Millisecond), d) // 20 s of samples
		}
		got, _ := w.Quantiles(now.Add(30*time.Second), qs)
		for i, q := range qs {
			exact := exactQuantile(samples, q)
			if got[i] < exact || float64(got[i]-exact) > float64(exact)*RelativeError {
				t.Errorf("%s: q%v = %v, exact %v: outside [exact, exact*(1+%v)]", name, q, got[i], exact, RelativeError)
			}
			if q == 1 && got[i] != exact {
				t.Errorf("%s: max = %v, want exactly %v", name, got[i], exact)
			}
		}
	}
}

func TestWindowSlides(t *testing.T) {
	w := NewWindow(60*time.Second, 60) // 1 s slots
	t0 := time.Unix(3_000_000, 0)
	for i := 0; i < 60; i++ { // one sample per second: 1 ms, 2 ms, ... 60 ms
		w.Add(t0.Add(time.Duration(i)*time.Second), time.Duration(i+1)*time.Millisecond)
	}
	now := t0.Add(59 * time.Second)
	if n := w.Count(now); n != 60 {
		t.Fatalf("count %d, want 60", n)
	}
	// 10 s later the first 10 samples (1..10 ms) have left the window.
	now = now.Add(10 * time.Second)
	if n := w.Count(now); n != 50 {
		t.Fatalf("count after 10 s: %d, want 50", n)
	}
	got, _ := w.Quantiles(now, []float64{0, 0.5, 1})
	// Remaining 11..60 ms: min 11 ms, median (rank 25) 35 ms, max 60 ms.
	want := []time.Duration{11 * time.Millisecond, 35 * time.Millisecond, 60 * time.Millisecond}
	for i := range want {
		if got[i] < want[i] || float64(got[i]-want[i]) > float64(want[i])*RelativeError {
			t.Errorf("quantile %d: %v, want %v", i, got[i], want[i])
		}
	}
	// A sample far in the past is ignored; the window empties after a
	// full window of silence.
	w.Add(t0, time.Hour)
	if _, ok := w.Quantiles(now.Add(61*time.Second), quantiles); ok {
		t.Fatal("window not empty after a window of silence")
	}
	w.Add(now.Add(70*time.Second), -5*time.Second)
	if got, _ := w.Quantiles(now.Add(70*time.Second), []float64{1}); got[0] != 0 {
		t.Fatalf("negative lag counted as %v", got[0])
	}
}
