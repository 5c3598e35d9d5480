package main

// Suite archive: the archive against bare aws-sdk-go-v2 calls on the same
// MinIO, started by the suite. Cases:
//
//	s3-put/bare          PutObject of the WAL bytes, uncompressed, in objects of
//	                     the archiver's size, one at a time: the upload reference
//	s3-put/bare-stored   PutObject of the archive's stored (compressed) objects
//	archive-upload       the Archiver from a WAL: read, encode, zstd, checksum,
//	                     PutIfAbsent object + manifest, checkpoint; MB/s of WAL
//	                     bytes shipped, vs s3-put/bare (same bytes)
//	archive-upload/zstd-3  the same with zstd level 3 instead of the default 1
//	s3-get/bare-parallel parallel GetObject of the archive's objects
//	archive-fetch        parallel FetchSegment (GET + size + XXH64 check)
//	archive-read         parallel ReadSegment (fetch + verify + unzstd + decode)
//	zstd-ratio           WAL bytes / stored bytes on the CDC-like workload (level 1,
//	                     the default; level 3 as an extra metric)
//	restore/sqlite       pitr plan + restore of the archive into SQLite, changes/s
//	restore/postgres     the same restore into a new PostgreSQL database
//	                     (a local cluster with fsync on), changes/s

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/walship/walship/archive"
	"github.com/walship/walship/archivesink"
	"github.com/walship/walship/change"
	"github.com/walship/walship/checkpoint"
	"github.com/walship/walship/internal/miniotest"
	"github.com/walship/walship/internal/pgtest"
	"github.com/walship/walship/pitr"
	"github.com/walship/walship/vfs"
	"github.com/walship/walship/wal"
)

func init() {
	register("archive", func() *suite {
		return &suite{
			name:    "archive",
			summary: "archive upload/read/restore vs bare S3 PutObject/GetObject on a local MinIO",
			cases:   archiveCases,
			targets: archiveTargets,
		}
	})
}

const (
	arBucket       = "walship-bench"
	arReadLineage  = "read"
	arParallel     = 8
	arObjectBytes  = 16 << 20 // the archiver's default MaxObjectBytes
	mZstdRatio     = "zstd_ratio"
	mChangesPerSec = mRecordsPerSec // one change is one log record
)

type arParams struct {
	walBytes       int64 // CDC workload size (encoded changes)
	restoreChanges int   // changes restored into SQLite
}

func arParamsFor(cfg *config) arParams {
	if cfg.quick {
		return arParams{walBytes: 24 << 20, restoreChanges: 20_000}
	}
	return arParams{walBytes: 256 << 20, restoreChanges: 200_000}
}

// arState is what the setup builds and the cases share.
type arState struct {
	dir        string
	srv        *miniotest.Server
	client     *s3.Client
	a          *archive.Archive
	aLevel3    *archive.Archive // zstd level 3
	sizeLevel3 int64            // what st.size would be at level 3
	walDir     string
	rawObjs    [][]byte                  // WAL bytes in archiver-sized objects (uncompressed)
	objs       []*archive.EncodedSegment // the same transactions, encoded
	stored     []archive.SegmentManifest // objs, stored in lineage arReadLineage
	raw        int64                     // total encoded transaction bytes
	size       int64                     // total stored bytes
	changes    int64
	restoreLSN uint64
	rep        atomic.Int64
	pg         *pgtest.Cluster // restore/postgres's destination server
}

func archiveCases(cfg *config) []*benchCase {
	p := arParamsFor(cfg)
	st := &arState{}
	// Every case carries the shared setup (run once), so any --filter
	// selection works.
	var (
		setupOnce   sync.Once
		setupErr    error
		cleanupOnce sync.Once
	)
	setup := func(ctx context.Context) error {
		setupOnce.Do(func() { setupErr = st.setup(ctx, cfg, p) })
		return setupErr
	}
	cleanup := func() { cleanupOnce.Do(st.cleanup) }
	mb := func(n int64, d time.Duration) float64 { return float64(n) / 1e6 / d.Seconds() }
	cases := []*benchCase{
		{
			name: "s3-put/bare", primary: mMBps,
			run: func(ctx context.Context) (sample, error) {
				d, err := st.barePut(ctx, st.rawObjs)
				return sample{mMBps: mb(st.raw, d)}, err
			},
		},
		{
			name: "s3-put/bare-stored", primary: mMBps,
			run: func(ctx context.Context) (sample, error) {
				objs := make([][]byte, len(st.objs))
				for i, o := range st.objs {
					objs[i] = o.Object
				}
				d, err := st.barePut(ctx, objs)
				return sample{mMBps: mb(st.size, d)}, err
			},
		},
		{
			name: "archive-upload", primary: mMBps, extra: []string{"stored_MBps"},
			compare: []comparison{
				{metric: mMBps, base: "s3-put/bare", baseMetric: mMBps},
				{label: "stored", metric: "stored_MBps", base: "s3-put/bare-stored", baseMetric: mMBps},
			},
			run: func(ctx context.Context) (sample, error) { return st.upload(ctx, cfg, st.a) },
		},
		{
			name: "archive-upload/zstd-3", primary: mMBps, extra: []string{"stored_MBps"},
			compare: []comparison{
				{metric: mMBps, base: "s3-put/bare", baseMetric: mMBps},
			},
			run: func(ctx context.Context) (sample, error) { return st.upload(ctx, cfg, st.aLevel3) },
		},
		{
			name: "s3-get/bare-parallel", primary: mMBps,
			run: func(ctx context.Context) (sample, error) {
				// Into memory, as a restore needs the bytes.
				n, _, d, err := st.parallel(ctx, cfg.duration, func(ctx context.Context, m archive.SegmentManifest) error {
					out, err := st.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(arBucket), Key: aws.String("a/" + m.Key)})
					if err != nil {
						return err
					}
					defer out.Body.Close()
					buf := make([]byte, aws.ToInt64(out.ContentLength))
					_, err = io.ReadFull(out.Body, buf)
					return err
				})
				return sample{mMBps: mb(n, d)}, err
			},
		},
		{
			name: "archive-fetch", primary: mMBps,
			compare: []comparison{{metric: mMBps, base: "s3-get/bare-parallel", baseMetric: mMBps}},
			run: func(ctx context.Context) (sample, error) {
				n, _, d, err := st.parallel(ctx, cfg.duration, func(ctx context.Context, m archive.SegmentManifest) error {
					_, err := st.a.FetchSegment(ctx, m)
					return err
				})
				return sample{mMBps: mb(n, d)}, err
			},
		},
		{
			name: "archive-read", primary: mMBps, extra: []string{mChangesPerSec, "raw_MBps"},
			compare: []comparison{{metric: mMBps, base: "s3-get/bare-parallel", baseMetric: mMBps}},
			run: func(ctx context.Context) (sample, error) {
				n, raw, d, err := st.parallel(ctx, cfg.duration, func(ctx context.Context, m archive.SegmentManifest) error {
					_, err := st.a.ReadSegment(ctx, m)
					return err
				})
				return sample{mMBps: mb(n, d), "raw_MBps": mb(raw, d), mChangesPerSec: float64(n) / float64(st.size) * float64(st.changes) / d.Seconds()}, err
			},
		},
		{
			name: "zstd-ratio", primary: mZstdRatio, extra: []string{"zstd_ratio_level3"},
			run: func(ctx context.Context) (sample, error) {
				return sample{mZstdRatio: float64(st.raw) / float64(st.size), "zstd_ratio_level3": float64(st.raw) / float64(st.sizeLevel3)}, nil
			},
		},
		{
			name: "restore/sqlite", primary: mChangesPerSec,
			run: func(ctx context.Context) (sample, error) { return st.restore(ctx, cfg, "sqlite") },
		},
		{
			name: "restore/postgres", primary: mChangesPerSec,
			run: func(ctx context.Context) (sample, error) { return st.restore(ctx, cfg, "postgres") },
		},
	}
	for _, c := range cases {
		c.setup, c.cleanup = setup, cleanup
		if c.name == "restore/postgres" {
			// Only this case needs a PostgreSQL server.
			c.setup = func(ctx context.Context) error {
				if err := setup(ctx); err != nil {
					return err
				}
				// PostgreSQL runs as its own user: it must reach the
				// cluster's directory.
				if err := os.Chmod(st.dir, 0o755); err != nil {
					return err
				}
				var err error
				if st.pg, err = pgtest.New(filepath.Join(st.dir, "pg")); err != nil {
					return fmt.Errorf("postgres: %w (run scripts/deps.sh)", err)
				}
				return nil
			}
		}
	}
	return cases
}

func (st *arState) setup(ctx context.Context, cfg *config, p arParams) error {
	var err error
	if st.dir, err = cfg.tempDir("archive"); err != nil {
		return err
	}
	st.srv, err = miniotest.StartProcess(miniotest.Options{Dir: filepath.Join(st.dir, "minio")})
	if err != nil {
		return err
	}
	if err := st.srv.MakeBucket(ctx, arBucket); err != nil {
		return err
	}
	if st.client, err = st.srv.Client(); err != nil {
		return err
	}
	st.a, err = archive.Open(ctx, "s3://"+arBucket+"/a", archive.Options{Logger: cfg.logger, Backend: archive.BackendOptions{
		Endpoint: st.srv.Endpoint, Region: miniotest.Region, PathStyle: true,
		AccessKey: miniotest.AccessKey, SecretKey: miniotest.SecretKey, Logger: cfg.logger}})
	if err != nil {
		return err
	}
	st.aLevel3, err = archive.Open(ctx, "s3://"+arBucket+"/a", archive.Options{Logger: cfg.logger, CompressionLevel: 3,
		Backend: archive.BackendOptions{Endpoint: st.srv.Endpoint, Region: miniotest.Region, PathStyle: true,
			AccessKey: miniotest.AccessKey, SecretKey: miniotest.SecretKey, Logger: cfg.logger}})
	if err != nil {
		return err
	}
	// The CDC-like workload, durable in a WAL (the archiver's input).
	st.walDir = filepath.Join(st.dir, "wal")
	w, _, err := wal.Open(wal.Options{Dir: st.walDir, Sync: wal.SyncOff, Logger: cfg.logger})
	if err != nil {
		return err
	}
	gen := newCDCGen(1)
	var (
		raw  int64
		last wal.Ticket
	)
	for raw < p.walBytes {
		t := gen.next()
		for j := range t.Changes {
			var h *change.TxHeader
			if j == 0 {
				h = &t.Header
			}
			raw += int64(change.RecordSize(h, &t.Changes[j]))
		}
		if last, err = w.AppendAsync(ctx, t); err != nil {
			w.Close()
			return err
		}
	}
	if err := w.Wait(ctx, last.Last); err != nil {
		w.Close()
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	// Cut it the archiver's way and store it once for the read cases.
	w, _, err = wal.Open(wal.Options{Dir: st.walDir, Logger: cfg.logger})
	if err != nil {
		return err
	}
	defer w.Close()
	r, err := w.NewReader(1, false)
	if err != nil {
		return err
	}
	defer r.Close()
	var batch []change.Committed
	size := 0
	flush := func() error {
		enc, err := st.a.EncodeSegment(arReadLineage, 0, batch)
		if err != nil {
			return err
		}
		st.objs = append(st.objs, enc)
		st.rawObjs = append(st.rawObjs, make([]byte, enc.Manifest.RawSize))
		st.raw += enc.Manifest.RawSize
		st.size += enc.Manifest.Size
		enc3, err := st.aLevel3.EncodeSegment(arReadLineage, 0, batch)
		if err != nil {
			return err
		}
		st.sizeLevel3 += enc3.Manifest.Size
		st.changes += int64(enc.Manifest.LastLSN - enc.Manifest.FirstLSN + 1)
		if st.restoreLSN == 0 && st.changes >= int64(p.restoreChanges) {
			st.restoreLSN = enc.Manifest.LastLSN
		}
		batch, size = nil, 0
		return nil
	}
	for {
		t, err := r.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		batch = append(batch, *t)
		size += arTxnSize(t)
		if size >= arObjectBytes {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if len(batch) > 0 {
		if err := flush(); err != nil {
			return err
		}
	}
	if st.restoreLSN == 0 {
		st.restoreLSN = st.objs[len(st.objs)-1].Manifest.LastLSN
	}
	// Uncompressed stand-ins of the same sizes for the bare upload: random
	// bytes, so that nothing on the path can compress them.
	for _, b := range st.rawObjs {
		for i := 0; i < len(b); i += 8 {
			v := rand.Uint64()
			for k := 0; k < 8 && i+k < len(b); k++ {
				b[i+k] = byte(v >> (8 * k))
			}
		}
	}
	for _, o := range st.objs {
		m, err := st.a.StoreSegment(ctx, o)
		if err != nil {
			return err
		}
		st.stored = append(st.stored, m)
	}
	cfg.progressf("archive: workload %d changes, %.1f MB encoded, %.1f MB stored in %d objects",
		st.changes, float64(st.raw)/1e6, float64(st.size)/1e6, len(st.objs))
	return nil
}

func (st *arState) cleanup() {
	if st.pg != nil {
		_ = st.pg.Close()
	}
	if st.srv != nil {
		_ = st.srv.Stop()
	}
	if st.dir != "" {
		_ = os.RemoveAll(st.dir)
	}
}

// barePut uploads objs one at a time with PutObject, as the archiver
// stores its objects one at a time.
func (st *arState) barePut(ctx context.Context, objs [][]byte) (time.Duration, error) {
	rep := st.rep.Add(1)
	start := time.Now()
	for i, o := range objs {
		_, err := st.client.PutObject(ctx, &s3.PutObjectInput{
			Bucket: aws.String(arBucket), Key: aws.String(fmt.Sprintf("bare/%d/%08d", rep, i)),
			Body: bytes.NewReader(o), ContentLength: aws.Int64(int64(len(o))),
		})
		if err != nil {
			return 0, err
		}
	}
	return time.Since(start), nil
}

// upload runs an Archiver over the whole WAL into a fresh lineage.
func (st *arState) upload(ctx context.Context, cfg *config, a *archive.Archive) (sample, error) {
	rep := st.rep.Add(1)
	w, _, err := wal.Open(wal.Options{Dir: st.walDir, Logger: cfg.logger})
	if err != nil {
		return nil, err
	}
	defer w.Close()
	ckDir, err := os.MkdirTemp(st.dir, "ckpt-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(ckDir)
	ck, err := checkpoint.Open(ctx, vfs.Default, ckDir, checkpoint.Options{})
	if err != nil {
		return nil, err
	}
	ar, err := archivesink.NewArchiver(a, w, ck, archivesink.ArchiverOptions{
		Lineage: fmt.Sprintf("up%d", rep), Timeout: time.Second, MaxObjectBytes: arObjectBytes, Logger: cfg.logger})
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- ar.Run(rctx) }()
	target := w.Durable()
	for ar.Stats().ArchivedLSN < target {
		select {
		case err := <-done:
			cancel()
			return nil, fmt.Errorf("archiver stopped: %w", err)
		case <-time.After(2 * time.Millisecond):
		}
	}
	d := time.Since(start)
	cancel()
	<-done
	s := ar.Stats()
	return sample{mMBps: float64(s.RawBytes) / 1e6 / d.Seconds(), "stored_MBps": float64(s.Bytes) / 1e6 / d.Seconds()}, nil
}

// parallel calls f on the stored objects with arParallel workers, in
// passes over all of them, until at least minDur has passed and one pass
// is complete; it returns the stored and raw bytes processed.
func (st *arState) parallel(ctx context.Context, minDur time.Duration, f func(context.Context, archive.SegmentManifest) error) (stored, raw int64, d time.Duration, err error) {
	var (
		next      atomic.Int64
		nStored   atomic.Int64
		nRaw      atomic.Int64
		wg        sync.WaitGroup
		mu        sync.Mutex
		firstErr  error
		stopAfter atomic.Int64 // index at which to stop, once minDur passed
	)
	stopAfter.Store(-1)
	start := time.Now()
	for range arParallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if lim := stopAfter.Load(); lim >= 0 && int64(i) >= lim {
					return
				}
				if i >= len(st.stored) && time.Since(start) >= minDur {
					// Finish the pass in progress, then stop.
					lim := int64((i/len(st.stored) + 1) * len(st.stored))
					stopAfter.CompareAndSwap(-1, lim)
					if int64(i) >= stopAfter.Load() {
						return
					}
				}
				m := st.stored[i%len(st.stored)]
				if err := f(ctx, m); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					stopAfter.Store(0)
					return
				}
				nStored.Add(m.Size)
				nRaw.Add(m.RawSize)
			}
		}()
	}
	wg.Wait()
	return nStored.Load(), nRaw.Load(), time.Since(start), firstErr
}

// restore replays the read lineage up to restoreLSN into a new SQLite
// database through package pitr, as walreplay restore does.
func (st *arState) restore(ctx context.Context, cfg *config, kind string) (sample, error) {
	dir, err := os.MkdirTemp(st.dir, "restore-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	url := "sqlite://" + filepath.Join(dir, "r.db")
	if kind == "postgres" {
		db := fmt.Sprintf("restore_%d", st.rep.Add(1))
		if err := st.pg.CreateDB(ctx, db); err != nil {
			return nil, err
		}
		url = st.pg.DSN(db)
	}
	src := pitr.NewArchiveSource(st.a)
	plan, err := pitr.PlanRestore(ctx, src, pitr.Target{Kind: pitr.LSN, LSN: st.restoreLSN}, pitr.PlanOptions{Lineage: arReadLineage})
	if err != nil {
		return nil, err
	}
	start := time.Now()
	res, err := pitr.Restore(ctx, src, plan, url, pitr.RestoreOptions{
		Options: pitr.Options{Parallel: arParallel, TempDir: dir, Logger: cfg.logger}})
	if err != nil {
		return nil, err
	}
	d := time.Since(start)
	return sample{mChangesPerSec: float64(res.Changes) / d.Seconds()}, nil
}

func archiveTargets(cfg *config, rs *resultSet) []target {
	var ts []target
	atLeast := func(what string, v float64, ok bool, want float64, measured, wantText string) {
		t := target{what: what, want: wantText, status: "not measured", measured: "-"}
		if ok {
			t.measured = measured
			t.status = map[bool]string{true: "met", false: "missed"}[v >= want]
		}
		ts = append(ts, t)
	}
	r, ok := rs.compared("archive-upload", mMBps, "s3-put/bare")
	atLeast("upload: WAL MB/s shipped vs bare PutObject of the same bytes", r, ok, 0.8, formatRatio(r), "≥ 0.8x")
	// The read path of a restore is the parallel fetch + verify of objects
	// (archive-fetch); decoding runs at the applier's pace and is reported
	// on its own (archive-read, which adds zstd and record decoding).
	r, ok = rs.compared("archive-fetch", mMBps, "s3-get/bare-parallel")
	atLeast("restore read (parallel FetchSegment: GET + checksum) vs bare parallel GetObject", r, ok, 0.7, formatRatio(r), "≥ 0.7x")
	v, ok := rs.value("archive-fetch", mMBps)
	atLeast("restore read throughput, MB/s of archive on loopback", v, ok, 300, formatNumber(v)+" MB/s", "≥ 300 MB/s")
	r, ok = rs.compared("archive-read", mMBps, "s3-get/bare-parallel")
	v, _ = rs.value("archive-read", mChangesPerSec)
	ts = append(ts, target{what: "read + decode (parallel ReadSegment) vs bare parallel GetObject", measured: fmt.Sprintf("%s (%s changes/s)", formatRatio(r), formatNumber(v)),
		want: "reported", status: map[bool]string{true: "met", false: "not measured"}[ok]})
	v, ok = rs.value("restore/sqlite", mChangesPerSec)
	atLeast("end-to-end restore into SQLite", v, ok, 250_000, formatNumber(v)+" changes/s", "≥ 250,000 /s")
	v, ok = rs.value("restore/postgres", mChangesPerSec)
	atLeast("end-to-end restore into PostgreSQL", v, ok, 100_000, formatNumber(v)+" changes/s", "≥ 100,000 /s")
	v, ok = rs.value("zstd-ratio", mZstdRatio)
	v3, _ := rs.value("zstd-ratio", "zstd_ratio_level3")
	ts = append(ts, target{what: "zstd ratio on the CDC workload (default level 1; level 3)", measured: formatNumber(v) + "x; " + formatNumber(v3) + "x", want: "reported", status: map[bool]string{true: "met", false: "not measured"}[ok]})
	return ts
}

// cdcGen makes a CDC-like workload: accounts updated (key + full after
// image with types), orders inserted, a few deletes; 1 to 5 changes per
// transaction, increasing source LSNs and xids.
type cdcGen struct {
	rnd  *rand.Rand
	xid  uint64
	lsn  uint64
	now  time.Time
	accs int64
}

func newCDCGen(seed uint64) *cdcGen {
	return &cdcGen{rnd: rand.New(rand.NewPCG(seed, seed+1)), xid: 1000, lsn: 0x16_0000_0000,
		now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), accs: 100_000}
}

var (
	cdcAccountTypes = []change.ColumnType{{Name: "id", Type: "bigint"}, {Name: "owner", Type: "text"},
		{Name: "balance", Type: "numeric"}, {Name: "currency", Type: "text"}, {Name: "status", Type: "text"},
		{Name: "updated_at", Type: "timestamp with time zone"}}
	cdcOrderTypes = []change.ColumnType{{Name: "id", Type: "bigint"}, {Name: "account_id", Type: "bigint"},
		{Name: "amount", Type: "numeric"}, {Name: "note", Type: "text"}, {Name: "created_at", Type: "timestamp with time zone"}}
	cdcStatuses = []string{"active", "active", "active", "frozen", "closed"}
	cdcNotes    = []string{"card payment", "transfer", "refund", "subscription renewal", "ATM withdrawal"}
)

func (g *cdcGen) next() *change.Txn {
	g.xid++
	g.lsn += 200 + uint64(g.rnd.IntN(2000))
	g.now = g.now.Add(time.Duration(g.rnd.IntN(2000)) * time.Microsecond)
	t := &change.Txn{Header: change.TxHeader{XID: g.xid, SourceLSN: g.lsn, SourceCommitTime: g.now}}
	n := 1 + g.rnd.IntN(5)
	for range n {
		ts, _ := change.TimestampValue(g.now)
		switch k := g.rnd.IntN(10); {
		case k < 6:
			id := g.rnd.Int64N(g.accs)
			bal, _ := change.NumericValue(fmt.Sprintf("%d.%02d", g.rnd.IntN(1_000_000), g.rnd.IntN(100)))
			t.Changes = append(t.Changes, change.Change{
				Table: change.Table{Schema: "public", Name: "accounts"}, Op: change.Update,
				Key: change.Row{{Name: "id", Value: change.IntValue(id)}},
				After: change.Row{{Name: "id", Value: change.IntValue(id)},
					{Name: "owner", Value: change.TextValue(fmt.Sprintf("customer-%07d@example.com", id))},
					{Name: "balance", Value: bal}, {Name: "currency", Value: change.TextValue("EUR")},
					{Name: "status", Value: change.TextValue(cdcStatuses[g.rnd.IntN(len(cdcStatuses))])},
					{Name: "updated_at", Value: ts}},
				Types: cdcAccountTypes,
			})
		case k < 9:
			id := int64(g.xid)*8 + int64(len(t.Changes))
			amt, _ := change.NumericValue(fmt.Sprintf("%d.%02d", g.rnd.IntN(5000), g.rnd.IntN(100)))
			t.Changes = append(t.Changes, change.Change{
				Table: change.Table{Schema: "public", Name: "orders"}, Op: change.Insert,
				Key: change.Row{{Name: "id", Value: change.IntValue(id)}},
				After: change.Row{{Name: "id", Value: change.IntValue(id)},
					{Name: "account_id", Value: change.IntValue(g.rnd.Int64N(g.accs))},
					{Name: "amount", Value: amt}, {Name: "note", Value: change.TextValue(cdcNotes[g.rnd.IntN(len(cdcNotes))])},
					{Name: "created_at", Value: ts}},
				Types: cdcOrderTypes,
			})
		default:
			id := int64(g.xid-1-uint64(g.rnd.IntN(100)))*8 + 0
			t.Changes = append(t.Changes, change.Change{
				Table: change.Table{Schema: "public", Name: "orders"}, Op: change.Delete,
				Key: change.Row{{Name: "id", Value: change.IntValue(id)}},
			})
		}
	}
	return t
}

// arTxnSize estimates a transaction's encoded size the way the archiver
// does when it closes objects.
func arTxnSize(t *change.Committed) int {
	n := 32
	for j := range t.Changes {
		var h *change.TxHeader
		if j == 0 {
			h = &t.Header
		}
		n += change.RecordSize(h, &t.Changes[j]) + 4
	}
	return n
}
