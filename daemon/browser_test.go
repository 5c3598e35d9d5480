package daemon

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/walship/walship/kafkasink/kafkatest"
)

// TestStatusPageDuringWorkload loads the real daemon's /status in headless
// Chromium while transactions flow to Kafka and the archive, and checks
// that the pipeline and live positions are drawn. (status/ tests the
// charts' pixels on a synthetic feed.)
func TestStatusPageDuringWorkload(t *testing.T) {
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium not found (%v): run scripts/deps.sh", err)
	}
	kc, err := kafkatest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	cfg := testConfig(t, fmt.Sprintf("archive: {url: \"file://%s\", timeout: 200ms}\nkafka: {brokers: [%q], topic_prefix: s}\n", t.TempDir(), kc.Addr))
	r := start(t, cfg)
	defer r.stop(t)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i += 20 {
			select {
			case <-stop:
				return
			default:
			}
			appendN(t, r.d.Addr("source.http"), i, 20)
			time.Sleep(20 * time.Millisecond)
		}
	})
	// Wait until both sinks have a position, then for a poll of the
	// metrics (every pollInterval) that the page reads to see it.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		p := r.d.Positions()
		if p.Sinks["kafka"] > 0 && p.Sinks["archive"] > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sinks have no position after 30s: %+v", p)
		}
	}
	time.Sleep(pollInterval + 500*time.Millisecond)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
		"--user-data-dir="+t.TempDir(), "--virtual-time-budget=3000", "--dump-dom", "http://"+r.d.Addr("http")+"/status")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var dom, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &dom, &stderr
	err = cmd.Run()
	if cmd.Process != nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("chromium: %v\n%s", err, stderr.String())
	}
	page := dom.String()
	for _, want := range []string{`data-rendered=`, `id="node-wal"`, `id="node-source"`, `chart-lag`, `chart-rate`} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %s", want)
		}
	}
	for _, comp := range []string{"kafka/s.ordered", "archive/main"} {
		m := regexp.MustCompile(`<tr data-component="` + regexp.QuoteMeta(comp) + `">.*?<td class="num lsn">([0-9,]+)</td>`).FindStringSubmatch(page)
		if m == nil {
			t.Errorf("no %s row in the page:\n%.3000s", comp, page)
			continue
		}
		if lsn, _ := strconv.ParseUint(strings.ReplaceAll(m[1], ",", ""), 10, 64); lsn == 0 {
			t.Errorf("%s position shown as 0 during the workload", comp)
		}
	}
}
