package status

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/png"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/walship/walship/obs"
)

// chromium runs headless Chromium with args plus url and returns stdout.
// It fails the test (never skips) when Chromium is missing. The browser
// runs in its own process group, which is killed when it returns.
func chromium(t *testing.T, url string, args ...string) []byte {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium not found (%v): run scripts/deps.sh (Debian package chromium)", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	all := append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
		"--disable-extensions", "--hide-scrollbars", "--force-device-scale-factor=1", "--window-size=1280,2000",
		"--user-data-dir=" + t.TempDir(), "--virtual-time-budget=3000"}, args...)
	all = append(all, url)
	cmd := exec.CommandContext(ctx, bin, all...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	if cmd.Process != nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // helpers left behind, if any
	}
	if err != nil {
		t.Fatalf("chromium %v: %v\n%s", args, err, stderr.String())
	}
	return stdout.Bytes()
}

// feed is a synthetic pipeline: a WAL, a Kafka sink, an archive and a
// replica moving forward, reported through obs as walship run will.
type feed struct {
	mu     sync.Mutex
	clk    time.Time
	lsn    uint64
	kafka  uint64
	m      *obs.Metrics
	ticks  int
	stopCh chan struct{}
	done   chan struct{}
}

const archiveLSN = 123456

func (f *feed) now() time.Time { f.mu.Lock(); defer f.mu.Unlock(); return f.clk }

// step advances the synthetic clock 5 s and reports every component.
func (f *feed) step() {
	f.mu.Lock()
	f.ticks++
	n := f.ticks
	f.clk = f.clk.Add(5 * time.Second)
	f.lsn += uint64(500 + 300*(n%7))
	f.kafka = f.lsn - uint64(20+n%13)
	lsn, kafka := f.lsn, f.kafka
	f.mu.Unlock()
	f.m.ObserveWAL(int(500+300*(n%7)), 100*int(500+300*(n%7)), time.Millisecond)
	f.m.SinkPosition("orders", obs.Position{LSN: kafka, LagRecords: lsn - kafka, Lag: time.Duration(5+n%20) * time.Millisecond})
	f.m.ConsumerPosition("replica", obs.Position{LSN: kafka - 100, LagRecords: lsn - kafka + 100, Lag: time.Duration(30+(n*7)%50) * time.Millisecond})
	f.m.ArchiveState(obs.Archive{Position: obs.Position{LSN: archiveLSN, LagRecords: lsn - archiveLSN, Lag: 2 * time.Second}})
	f.m.Tick(f.now())
}

func (f *feed) snapshot(context.Context) (Snapshot, error) {
	f.mu.Lock()
	now, lsn, kafka := f.clk, f.lsn, f.kafka
	f.mu.Unlock()
	s := Snapshot{
		Title: "walship run", Role: "primary", Host: "test", Time: now,
		Source: &Source{Kind: "postgres", Name: "slot walship", Position: "0/16B3748", LSN: lsn, SlotBytes: 8192, State: "ok"},
		WAL:    &WAL{Dir: "/tmp/wal", FirstLSN: 1, VisibleLSN: lsn, Segments: 4, SizeBytes: 200 << 20},
		Sinks: []Sink{
			{Name: "orders", Kind: "kafka", Target: "127.0.0.1:9092 walship.orders", LSN: kafka, LagRecords: lsn - kafka, Lag: Duration(12 * time.Millisecond), State: "ok"},
			{Name: "archive", Kind: "archive", Target: "file:///tmp/archive", LSN: archiveLSN, LagRecords: lsn - archiveLSN, Lag: Duration(2 * time.Second), State: "ok"},
			{Name: "replica", Kind: "replica", Target: "postgres://walship:hunter2@replica/app", LSN: kafka - 100, State: "ok"},
		},
		Archive: &Archive{URL: "file:///tmp/archive", Oldest: now.Add(-2 * time.Hour), Newest: now.Add(-3 * time.Second), Segments: 12,
			Encrypted: true, KeyID: "0123456789abcdef", Snapshots: []SnapshotInfo{{LSN: 4242, Time: now.Add(-90 * time.Minute), Size: 5 << 20}}},
		Warnings: []Warning{{Level: "warning", Component: "sink/orders", Message: "broker 127.0.0.1:9093 unreachable, retrying", Since: now.Add(-time.Minute)}},
	}
	s.AddMetrics(f.m)
	return s, nil
}

func startFeed(t *testing.T) (*feed, *httptest.Server) {
	t.Helper()
	f := &feed{clk: time.Now().Add(-time.Hour), lsn: 1000, stopCh: make(chan struct{}), done: make(chan struct{})}
	m, err := obs.New(obs.Options{NoProcessCollectors: true, Now: f.now, Logger: slog.New(slog.DiscardHandler),
		Lag: obs.LagOptions{Warn: obs.Thresholds{P50: time.Hour, P95: time.Hour, P99: time.Hour, P999: time.Hour}}})
	if err != nil {
		t.Fatal(err)
	}
	f.m = m
	for i := 0; i < 600; i++ { // 50 minutes of history
		f.step()
	}
	go func() { // keep feeding while the browser loads the page
		defer close(f.done)
		tk := time.NewTicker(100 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-f.stopCh:
				return
			case <-tk.C:
				f.step()
			}
		}
	}()
	mux := m.Mux()
	Register(mux, f.snapshot)
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		srv.Close()
		close(f.stopCh)
		<-f.done
	})
	return f, srv
}

// coloredPixels counts saturated pixels in r: series lines are drawn in
// saturated colours; background, grid and labels are white or grey.
func coloredPixels(t *testing.T, img image.Image, r image.Rectangle) int {
	t.Helper()
	if !r.In(img.Bounds()) {
		t.Fatalf("box %v outside the screenshot %v", r, img.Bounds())
	}
	n := 0
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			cr, cg, cb, _ := img.At(x, y).RGBA()
			if max(cr, cg, cb)>>8-min(cr, cg, cb)>>8 > 60 {
				n++
			}
		}
	}
	return n
}

func chartBoxes(t *testing.T, dom string) map[string]image.Rectangle {
	t.Helper()
	boxes := map[string]image.Rectangle{}
	for _, bm := range bboxRe.FindAllStringSubmatch(dom, -1) {
		var x, y, w, h int
		if _, err := fmt.Sscanf(bm[2], "%d,%d,%d,%d", &x, &y, &w, &h); err != nil || w < 100 || h < 50 {
			t.Fatalf("%s bbox %q", bm[1], bm[2])
		}
		boxes[bm[1]] = image.Rect(x, y, x+w, y+h)
	}
	if len(boxes) != 2 {
		t.Fatalf("chart boxes %v in\n%.2000s", boxes, dom)
	}
	return boxes
}

func screenshot(t *testing.T, url string) image.Image {
	t.Helper()
	shot := filepath.Join(t.TempDir(), "status.png")
	chromium(t, url, "--screenshot="+shot)
	fh, err := os.Open(shot)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	img, err := png.Decode(fh)
	if err != nil {
		t.Fatal(err)
	}
	if keep := os.Getenv("WALSHIP_STATUS_SCREENSHOT"); keep != "" { // to look at it
		if b, err := os.ReadFile(shot); err == nil {
			os.WriteFile(keep, b, 0o644)
		}
	}
	return img
}

// TestStatusPageEmptyCharts is the control of the pixel check: with no
// history the plot areas hold no series colour and say "no data yet".
func TestStatusPageEmptyCharts(t *testing.T) {
	mux := http.NewServeMux()
	Register(mux, func(context.Context) (Snapshot, error) {
		return Snapshot{Title: "walship consume", Role: "replica", Sinks: []Sink{{Name: "replica", Kind: "replica", LSN: 7, State: "ok"}}}, nil
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	dom := string(chromium(t, srv.URL+"/status", "--dump-dom"))
	if !strings.Contains(dom, "no data yet") {
		t.Errorf("empty charts do not say so")
	}
	img := screenshot(t, srv.URL+"/status")
	for name, r := range chartBoxes(t, dom) {
		if n := coloredPixels(t, img, r); n != 0 {
			t.Errorf("%s: %d coloured pixels in an empty chart", name, n)
		}
	}
}

var (
	kafkaRow = regexp.MustCompile(`<tr data-component="kafka/orders">.*?<td class="num lsn">([0-9,]+)</td>`)
	bboxRe   = regexp.MustCompile(`<svg id="(chart-lag|chart-rate)"[^>]*data-bbox="([0-9,.-]+)"`)
	pointsRe = regexp.MustCompile(`<svg id="(chart-lag|chart-rate)"[^>]*data-points="(\d+)"`)
)

// TestStatusPageInChromium loads /status in headless Chromium during a
// synthetic feed, checks the positions in the DOM, then takes a
// screenshot and checks the charts' plot areas hold drawn lines.
func TestStatusPageInChromium(t *testing.T) {
	f, srv := startFeed(t)
	before := f.now()
	f.mu.Lock()
	lsnBefore := f.kafka
	f.mu.Unlock()

	dom := string(chromium(t, srv.URL+"/status", "--dump-dom"))
	if !strings.Contains(dom, `data-rendered=`) {
		t.Fatalf("page did not render:\n%.2000s", dom)
	}
	f.mu.Lock()
	lsnAfter := f.kafka
	f.mu.Unlock()

	// Positions: the Kafka sink's LSN is one the feed reported during the load.
	m := kafkaRow.FindStringSubmatch(dom)
	if m == nil {
		t.Fatalf("no kafka/orders row in the DOM:\n%.3000s", dom)
	}
	got, _ := strconv.ParseUint(strings.ReplaceAll(m[1], ",", ""), 10, 64)
	if got < lsnBefore || got > lsnAfter {
		t.Errorf("kafka LSN shown %d, want within the feed's [%d, %d]", got, lsnBefore, lsnAfter)
	}
	for _, want := range []string{"123,456", `id="node-kafka-orders"`, `id="node-wal"`, `id="node-source"`, `id="node-replica-replica"`,
		"broker 127.0.0.1:9093 unreachable", "4,242", "walship:REDACTED@replica/app", `id="pitr-oldest"`} {
		if !strings.Contains(dom, want) {
			t.Errorf("DOM lacks %q", want)
		}
	}
	if strings.Contains(dom, "hunter2") {
		t.Error("the DOM shows a password")
	}
	for _, pm := range pointsRe.FindAllStringSubmatch(dom, -1) {
		if n, _ := strconv.Atoi(pm[2]); n < 100 {
			t.Errorf("%s drew %d points, want the hour's history", pm[1], n)
		}
	}
	boxes := chartBoxes(t, dom)

	// Screenshot: count saturated (series-coloured) pixels inside each
	// plot area.
	img := screenshot(t, srv.URL+"/status")
	for name, r := range boxes {
		colored := coloredPixels(t, img, r)
		// Several series across most of the plot's width, 2 px wide.
		if colored < r.Dx() {
			t.Errorf("%s: %d coloured pixels in the plot area %v: charts not drawn", name, colored, r)
		}
		t.Logf("%s: %d coloured pixels in %v", name, colored, r)
	}
	if f.now().Sub(before) <= 0 {
		t.Error("the feed did not run during the test")
	}
}

var (
	nodeRe  = regexp.MustCompile(`<g id="(node-[^"]+)" data-state="([^"]*)"><rect [^>]*stroke="(#[0-9a-f]+)"`)
	rowRe   = regexp.MustCompile(`<tr data-component="([^"]+)">(?:<td[^>]*>[^<]*</td>)*<td><span class="badge ([^"]+)">`)
	depRowR = regexp.MustCompile(`<tr data-dependency="([^"]+)" data-state="([^"]*)">`)
)

// TestStatusPageNeverGreenUnlessOK: in the browser, only a state that says
// all is well is drawn green. A WAL over its bound (its state from the
// readiness check), a sink whose dependency was not reached yet
// ("unknown"), a sink without a state and a retrying one are not; an ok
// one is.
func TestStatusPageNeverGreenUnlessOK(t *testing.T) {
	mux := http.NewServeMux()
	Register(mux, func(context.Context) (Snapshot, error) {
		return Snapshot{Title: "walship run", Role: "primary",
			WAL: &WAL{Dir: "/w", State: "critical", Error: "wal.max_bytes exceeded"},
			Sinks: []Sink{{Name: "main", Kind: "archive", State: "unknown"}, {Name: "t", Kind: "kafka", State: ""},
				{Name: "r", Kind: "replica", State: "retrying"}, {Name: "ok", Kind: "replica", State: "ok"}},
			Dependencies: []Dependency{{Name: "archive", State: "unknown"}}}, nil
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	dom := string(chromium(t, srv.URL+"/status", "--dump-dom"))
	const green, red, amber = "#1a9a5b", "#d0312d", "#d48806"
	wantBox := map[string][2]string{
		"node-wal":          {"critical", red},
		"node-archive-main": {"unknown", amber},
		"node-kafka-t":      {"unknown", amber},
		"node-replica-r":    {"retrying", amber},
		"node-replica-ok":   {"ok", green},
	}
	seen := 0
	for _, m := range nodeRe.FindAllStringSubmatch(dom, -1) {
		if w, ok := wantBox[m[1]]; ok {
			seen++
			if m[2] != w[0] || m[3] != w[1] {
				t.Errorf("%s: state %q stroke %s, want %q %s", m[1], m[2], m[3], w[0], w[1])
			}
		}
	}
	if seen != len(wantBox) {
		t.Errorf("found %d of %d boxes in:\n%.3000s", seen, len(wantBox), dom)
	}
	wantRow := map[string]string{"wal": "critical", "archive/main": "unknown", "kafka/t": "unknown", "replica/ok": "ok"}
	seen = 0
	for _, m := range rowRe.FindAllStringSubmatch(dom, -1) {
		if w, ok := wantRow[m[1]]; ok {
			seen++
			if m[2] != w {
				t.Errorf("row %s: badge %q, want %q", m[1], m[2], w)
			}
		}
	}
	if seen != len(wantRow) {
		t.Errorf("found %d of %d rows in:\n%.3000s", seen, len(wantRow), dom)
	}
	if m := depRowR.FindStringSubmatch(dom); m == nil || m[2] != "unknown" {
		t.Errorf("dependency row %v", m)
	}
	if !strings.Contains(dom, "wal: not ready: wal.max_bytes exceeded") {
		t.Errorf("no warning for the wal")
	}
}
