package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/walship/walship/archive"
	"github.com/walship/walship/archivesink"
	"github.com/walship/walship/internal/miniotest"
	"github.com/walship/walship/pitr"
	"github.com/walship/walship/replica"
)

// TestArchiveSurvivesS3Outage: with `walship run` capturing all along, the
// S3 server answers 503 SlowDown for 15 s and then refuses connections for
// 15 s. Capture never stops; afterwards the archive has no hole, verifies
// whole, and a restore to the latest point equals the log.
func TestArchiveSurvivesS3Outage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := miniotest.Start(t, miniotest.Options{})
	if err := srv.MakeBucket(ctx, "arch"); err != nil {
		t.Fatal(err)
	}
	proxy, err := miniotest.NewProxy(srv.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	s3 := fmt.Sprintf("{endpoint: %q, region: %s, path_style: true, access_key: %s, secret_key: %q}", proxy.Endpoint, miniotest.Region, miniotest.AccessKey, miniotest.SecretKey)
	cfg := testConfig(t, fmt.Sprintf("archive: {url: \"s3://arch/walship\", timeout: 1s, s3: %s}\n", s3))
	r := start(t, cfg)

	var acked atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i += 10 {
			select {
			case <-stop:
				return
			default:
			}
			appendN(t, r.d.Addr("source.http"), i, 10)
			acked.Add(10)
			time.Sleep(10 * time.Millisecond)
		}
	})
	outage := 15 * time.Second
	if testing.Short() {
		outage = 3 * time.Second
	}
	time.Sleep(2 * time.Second)
	proxy.Set(miniotest.SlowDown)
	before := acked.Load()
	time.Sleep(outage)
	proxy.Set(miniotest.Down)
	time.Sleep(outage)
	during := acked.Load() - before
	proxy.Set(miniotest.Pass)
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()
	if during < 100 {
		t.Fatalf("capture stalled during the S3 outage: %d transactions acknowledged", during)
	}
	if proxy.Faults() == 0 {
		t.Fatal("the proxy injected no faults")
	}
	last := r.d.wal.Durable()
	deadline := time.Now().Add(60 * time.Second)
	for r.d.Positions().Sinks[archivesink.CheckpointName] < last {
		if time.Now().After(deadline) {
			t.Fatalf("archive stuck at %d of %d after S3 came back", r.d.Positions().Sinks[archivesink.CheckpointName], last)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Retention (every 2 s) follows the archive's checkpoint.
	for r.d.wal.FirstLSN() == 1 && len(r.d.wal.Segments()) > 1 {
		if time.Now().After(deadline) {
			t.Fatalf("local retention removed nothing although the archive passed LSN %d", last)
		}
		time.Sleep(100 * time.Millisecond)
	}
	stats := r.d.archiver.Stats()
	r.stop(t)
	if stats.Retries == 0 {
		t.Errorf("no retries counted through a 503/refused outage: %+v", stats)
	}

	a, err := archive.Open(ctx, "s3://arch/walship", archive.Options{Backend: archive.BackendOptions{Endpoint: srv.Endpoint, Region: miniotest.Region,
		PathStyle: true, AccessKey: miniotest.AccessKey, SecretKey: miniotest.SecretKey}})
	if err != nil {
		t.Fatal(err)
	}
	src := pitr.NewArchiveSource(a)
	rep, err := pitr.VerifyArchive(ctx, src, pitr.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Intact() || len(rep.Gaps) > 0 {
		t.Fatalf("archive not intact after the outage: %+v", rep)
	}
	plan, err := pitr.PlanRestore(ctx, src, pitr.Target{Kind: pitr.Latest}, pitr.PlanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	restored := "sqlite://" + filepath.Join(t.TempDir(), "restored.db")
	if _, err := pitr.Restore(ctx, src, plan, restored, pitr.RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	// Every acknowledged transaction (one row each, ids 0..n-1) is in the
	// restore, once. (The local log no longer holds them all: retention
	// removed what the archive had passed.)
	got, err := replica.Dump(ctx, restored)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[int64]bool{}
	for _, row := range got["t"] {
		var v struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal([]byte(row), &v); err != nil {
			t.Fatalf("row %s: %v", row, err)
		}
		id, _ := strconv.ParseInt(v.ID, 10, 64)
		ids[id] = true
	}
	if int64(len(ids)) != acked.Load() || int64(len(got["t"])) != acked.Load() {
		t.Fatalf("restored %d rows (%d ids), %d transactions were acknowledged", len(got["t"]), len(ids), acked.Load())
	}
	for id := range acked.Load() {
		if !ids[id] {
			t.Fatalf("acknowledged id %d missing from the restore", id)
		}
	}
}
