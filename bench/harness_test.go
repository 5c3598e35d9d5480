package main

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestWALQuickSmoke runs two cases of the wal suite in --quick mode (plus
// the baselines they pull in) and checks the table and the JSON file. It is
// a smoke test of the harness, not a performance assertion.
func TestWALQuickSmoke(t *testing.T) {
	dir := t.TempDir()
	jsonPath := filepath.Join(dir, "out.json")
	var stdout, stderr bytes.Buffer
	args := []string{"wal", "--quick", "--duration", "50ms", "--dir", dir, "--json", jsonPath,
		"--filter", `^(wal-sync/N=16/128B|wal-pipeline/1KiB)$`}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := run(ctx, args, &stdout, &stderr); err != nil {
		t.Fatalf("run: %v\nstderr:\n%s", err, stderr.String())
	}

	// The selected cases and the baselines they are compared against.
	wantCases := []string{"raw-fsync/128B", "raw-seqwrite", "wal-sync/N=1/128B", "wal-sync/N=16/128B", "wal-pipeline/1KiB"}
	for _, c := range wantCases {
		if !strings.Contains(stdout.String(), c) {
			t.Errorf("table lacks case %s:\n%s", c, stdout.String())
		}
	}
	if !strings.Contains(stdout.String(), "targets") {
		t.Errorf("table lacks the targets section:\n%s", stdout.String())
	}

	b, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var raw []map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatalf("JSON: %v\n%s", err, b)
	}
	required := []string{"suite", "name", "value", "unit", "baseline_name", "baseline_value", "ratio"}
	allowed := append(slices.Clone(required), "reps", "values")
	for i, m := range raw {
		for _, k := range required {
			if _, ok := m[k]; !ok {
				t.Errorf("result %d lacks key %q: %v", i, k, m)
			}
		}
		for k := range m {
			if !slices.Contains(allowed, k) {
				t.Errorf("result %d has unexpected key %q", i, k)
			}
		}
	}

	var results []jsonResult
	if err := json.Unmarshal(b, &results); err != nil {
		t.Fatal(err)
	}
	byName := map[string]jsonResult{}
	for _, r := range results {
		if r.Suite != "wal" || r.Unit == "" {
			t.Errorf("%s: suite %q unit %q", r.Name, r.Suite, r.Unit)
		}
		if math.IsNaN(r.Value) || r.Value < 0 || r.Reps != 1 || len(r.Values) != 1 {
			t.Errorf("%s: value %v reps %d values %v", r.Name, r.Value, r.Reps, r.Values)
		}
		if (r.BaselineName == nil) != (r.BaselineValue == nil) || (r.BaselineName == nil) != (r.Ratio == nil) {
			t.Errorf("%s: baseline name, value and ratio must be all set or all null", r.Name)
		}
		if r.Ratio != nil && (*r.Ratio <= 0 || *r.BaselineValue <= 0) {
			t.Errorf("%s: baseline %v ratio %v", r.Name, *r.BaselineValue, *r.Ratio)
		}
		byName[r.Name] = r
	}
	// Primary metrics and their ratios are positive.
	for _, name := range append(wantCases, "wal-sync/N=16/128B:p99", "wal-sync/N=16/128B:scaling", "wal-pipeline/1KiB:MBps",
		"wal-sync/N=16/128B:records_per_fsync", "wal-sync/N=16/128B:flush_ms", "raw-seqwrite:sync_phase_MBps") {
		r, ok := byName[name]
		if !ok {
			t.Errorf("JSON lacks %s", name)
			continue
		}
		if r.Value <= 0 {
			t.Errorf("%s: value %v, want > 0", name, r.Value)
		}
	}
	for name, base := range map[string]string{
		"wal-sync/N=16/128B":         "raw-fsync/128B",
		"wal-sync/N=16/128B:p99":     "raw-fsync/128B:p99",
		"wal-sync/N=16/128B:scaling": "wal-sync/N=1/128B",
		"wal-pipeline/1KiB:MBps":     "raw-seqwrite-stream",
	} {
		r := byName[name]
		if r.BaselineName == nil || *r.BaselineName != base || r.Ratio == nil {
			t.Errorf("%s: baseline %v, want %s with a ratio", name, r.BaselineName, base)
		}
	}

	// Nothing is left behind in --dir but the JSON file.
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() != "out.json" {
			t.Errorf("left behind in --dir: %s", e.Name())
		}
	}
}

func TestUnknownSuite(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), []string{"nope"}, &out, &out)
	if err == nil || !strings.Contains(err.Error(), "wal") {
		t.Fatalf("err = %v, want one listing the suites", err)
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
	if got := median(nil); !math.IsNaN(got) {
		t.Errorf("median(nil) = %v, want NaN", got)
	}
}

func TestHistogramQuantile(t *testing.T) {
	h := new(histogram)
	for i := 1; i <= 1000; i++ {
		h.record(time.Duration(i) * time.Microsecond)
	}
	for _, tc := range []struct{ q, want float64 }{{0.5, 500}, {0.99, 990}} {
		got := h.quantile(tc.q)
		if math.Abs(got-tc.want)/tc.want > 0.04 {
			t.Errorf("quantile(%v) = %vµs, want %vµs within 4%%", tc.q, got, tc.want)
		}
	}
}
