package obs

import (
	"log/slog"
	"testing"
	"time"
)

// TestComponentThresholds: a component with its own thresholds (the
// archive, whose lag archive.timeout bounds by design) is judged by them,
// every other by the global objective.
func TestComponentThresholds(t *testing.T) {
	opts := LagOptions{Components: map[string]ComponentThresholds{
		ComponentArchive: {Warn: Thresholds{P50: time.Second, P95: 2 * time.Second, P99: 2 * time.Second, P999: 3 * time.Second}},
	}}
	if err := opts.setDefaults(); err != nil {
		t.Fatal(err)
	}
	if got := opts.Components[ComponentArchive].Critical.P50; got != 10*time.Second {
		t.Fatalf("archive critical p50 default = %v, want 10× its warn", got)
	}
	tr := newLagTracker(opts, slog.New(slog.DiscardHandler), nil)
	now := time.Now()
	for i := range 100 {
		at := now.Add(time.Duration(i) * time.Millisecond)
		tr.add(ComponentArchive, at, 500*time.Millisecond)
		tr.add(SinkComponent("kafka"), at, 500*time.Millisecond)
	}
	levels := map[string]Level{}
	for _, s := range tr.evaluate(now.Add(time.Second)) {
		levels[s.Component] = s.Level
	}
	if levels[ComponentArchive] != LevelOK {
		t.Errorf("archive at 500ms lag with a 1s objective: %v, want ok", levels[ComponentArchive])
	}
	if levels[SinkComponent("kafka")] != LevelCritical {
		t.Errorf("kafka at 500ms lag (p50 critical 100ms): %v, want critical", levels[SinkComponent("kafka")])
	}
	bad := LagOptions{Components: map[string]ComponentThresholds{"x": {Warn: Thresholds{P50: time.Second}, Critical: Thresholds{P50: time.Millisecond}}}}
	if err := bad.setDefaults(); err == nil {
		t.Fatal("critical below warn accepted for a component")
	}
}
