package main

// Suite cdc: PostgreSQL change data capture against pg_recvlogical
// on the same server and the same WAL, in one run. See README.md.
//
// One private PostgreSQL 15 cluster (internal/pgtest) serves every case. Its
// setup creates one logical slot per repetition for walship and one for
// pg_recvlogical *before* generating the workload, so that every
// measurement decodes exactly the same stretch of WAL from its own slot:
//
//	pg_recvlogical/stream  pg_recvlogical -o proto_version=1 -o publication_names=...
//	                       --endpos <end of workload> -f <file>: the source's limit
//	walship/stream         pgsource.Source into a fresh WAL (sync local) until it has
//	                       confirmed the end of the workload (so all of it is durable)
//	pg-copy/snapshot       COPY of the snapshot table to /dev/null: the copy limit
//	walship/snapshot       pgsource initial snapshot of the same table (new slot each time)
//	walship/latency        10,000 row changes/s committed; commit-to-durable latency
//	                       = when a following WAL reader sees the transaction minus
//	                       the source commit timestamp
//	walship/incremental    incremental snapshot (RequestSnapshot) of the snapshot table
//	                       by a streaming source, against walship/snapshot
//	walship/incremental-lag  walship/latency while incremental snapshots of the
//	                       snapshot table run in the same source, against it
//	walship/checksum       one checksum round over the snapshot table, unthrottled
//	walship/stream+checksum  walship/stream while checksum rounds run over the
//	                       snapshot table at the default rate, against it

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/walship/walship/change"
	"github.com/walship/walship/checkpoint"
	"github.com/walship/walship/checksum"
	"github.com/walship/walship/internal/pgtest"
	"github.com/walship/walship/pgsource"
	"github.com/walship/walship/vfs"
	"github.com/walship/walship/wal"
)

func init() { register("cdc", cdcSuite) }

const (
	cdcRecv      = "pg_recvlogical/stream"
	cdcStream    = "walship/stream"
	cdcCopy      = "pg-copy/snapshot"
	cdcSnapshot  = "walship/snapshot"
	cdcLatency   = "walship/latency@10k"
	cdcInc       = "walship/incremental"
	cdcIncLag    = "walship/incremental-lag"
	cdcChecksum  = "walship/checksum"
	cdcStreamCk  = "walship/stream+checksum"
	cdcCkLag     = "walship/checksum-lag"
	cdcSnapTable = "public.snap_rows"
	cdcRowBytes  = 200
	cdcTxnRows   = 100
	cdcLatencyPS = 10000 // row changes per second of the latency case
)

func cdcSuite() *suite {
	return &suite{
		name:    "cdc",
		summary: "PostgreSQL CDC (pgsource) vs pg_recvlogical and COPY on the same server",
		cases:   cdcCases,
		targets: cdcTargets,
	}
}

type cdcParams struct {
	streamRows   int // row changes of the streamed workload
	snapshotRows int
}

func cdcParamsFor(cfg *config) cdcParams {
	if cfg.quick {
		return cdcParams{streamRows: 50000, snapshotRows: 50000}
	}
	return cdcParams{streamRows: 500000, snapshotRows: 500000}
}

// cdcEnv is the cluster and workload shared by the suite's cases.
type cdcEnv struct {
	cfg    *config
	dir    string
	c      *pgtest.Cluster
	dsn    string
	endPos pglogrepl.LSN // end of the streamed workload
	rows   int           // row changes in it
	// snapRows and snapBytes are the snapshot table's rows and the bytes
	// of its COPY text, the measure of pgsource's SnapshotBytes.
	snapRows  int
	snapBytes int64
	rep       map[string]int
	refs      int
}

var (
	cdcMu     sync.Mutex
	cdcShared *cdcEnv
)

// getCDCEnv starts the shared cluster and generates the workload once.
func getCDCEnv(ctx context.Context, cfg *config) (*cdcEnv, error) {
	cdcMu.Lock()
	defer cdcMu.Unlock()
	if cdcShared != nil {
		cdcShared.refs++
		return cdcShared, nil
	}
	dir, err := cfg.tempDir("cdc")
	if err != nil {
		return nil, err
	}
	os.Chmod(dir, 0o755) // PostgreSQL runs as postgres
	c, err := pgtest.New(filepath.Join(dir, "pg"), pgtest.WithoutFsync(), pgtest.WithSetting("synchronous_commit", "on"),
		pgtest.WithSetting("max_replication_slots", "64"), pgtest.WithSetting("max_wal_senders", "64"),
		pgtest.WithSetting("shared_buffers", "'256MB'"))
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	e := &cdcEnv{cfg: cfg, dir: dir, c: c, dsn: c.DSN("postgres"), rep: map[string]int{}, refs: 1}
	if err := e.prepare(ctx); err != nil {
		e.close()
		return nil, err
	}
	cdcShared = e
	return e, nil
}

func releaseCDCEnv() {
	cdcMu.Lock()
	defer cdcMu.Unlock()
	if cdcShared == nil {
		return
	}
	if cdcShared.refs--; cdcShared.refs <= 0 {
		cdcShared.close()
		cdcShared = nil
	}
}

func (e *cdcEnv) close() {
	e.c.Close()
	os.RemoveAll(e.dir)
}

func (e *cdcEnv) exec(ctx context.Context, sqls ...string) error {
	conn, err := pgx.Connect(ctx, e.dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	for _, sql := range sqls {
		if _, err := conn.Exec(ctx, sql); err != nil {
			return fmt.Errorf("%s: %w", sql, err)
		}
	}
	return nil
}

// prepare creates the tables, the slots of every repetition, then the
// streamed workload (inserts and updates of 200-byte rows, 100 per
// transaction) and the snapshot table.
func (e *cdcEnv) prepare(ctx context.Context) error {
	p := cdcParamsFor(e.cfg)
	pad := cdcRowBytes - 8 - 24 // int8 id + tuple header: the row is about 200 bytes
	err := e.exec(ctx,
		`CREATE TABLE stream_rows (id int8 PRIMARY KEY, payload text NOT NULL)`,
		`CREATE TABLE snap_rows (id int8 PRIMARY KEY, payload text NOT NULL)`,
		`CREATE TABLE lat_rows (id int8 PRIMARY KEY, payload text NOT NULL)`,
		`CREATE PUBLICATION stream_pub FOR TABLE stream_rows`,
		`CREATE PUBLICATION snap_pub FOR TABLE snap_rows`,
		`CREATE PUBLICATION lat_pub FOR TABLE lat_rows`,
		`CREATE PUBLICATION latinc_pub FOR TABLE lat_rows, snap_rows`,
		fmt.Sprintf(`INSERT INTO snap_rows SELECT g, rpad(md5(g::text), %d, 'x') FROM generate_series(1, %d) g`, pad, p.snapshotRows),
	)
	if err != nil {
		return err
	}
	for rep := 1; rep <= e.cfg.reps; rep++ {
		for _, who := range []string{"walship", "recv", "walshipck"} {
			if err := e.exec(ctx, fmt.Sprintf(`SELECT pg_create_logical_replication_slot('bench_%s_%d', 'pgoutput')`, who, rep)); err != nil {
				return err
			}
		}
	}
	conn, err := pgx.Connect(ctx, e.dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	cw := &countWriter{}
	if _, err := conn.PgConn().CopyTo(ctx, cw, "COPY snap_rows TO STDOUT"); err != nil {
		return err
	}
	e.snapRows, e.snapBytes = p.snapshotRows, cw.n
	inserts := p.streamRows * 4 / 5
	for lo := 1; lo <= inserts; lo += cdcTxnRows {
		if _, err := conn.Exec(ctx, fmt.Sprintf(`INSERT INTO stream_rows SELECT g, rpad(md5(g::text), %d, 'y') FROM generate_series(%d, %d) g`,
			pad, lo, lo+cdcTxnRows-1)); err != nil {
			return err
		}
	}
	updates := p.streamRows - inserts
	for lo := 1; lo <= updates; lo += cdcTxnRows {
		if _, err := conn.Exec(ctx, fmt.Sprintf(`UPDATE stream_rows SET payload = rpad(md5((id + 1)::text), %d, 'z') WHERE id BETWEEN %d AND %d`,
			pad, lo, lo+cdcTxnRows-1)); err != nil {
			return err
		}
	}
	e.rows = inserts/cdcTxnRows*cdcTxnRows + updates/cdcTxnRows*cdcTxnRows
	return conn.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()").Scan(&e.endPos)
}

// nextRep returns the repetition number of a case's next measurement.
func (e *cdcEnv) nextRep(name string) int {
	cdcMu.Lock()
	defer cdcMu.Unlock()
	e.rep[name]++
	return e.rep[name]
}

func (e *cdcEnv) logger() *slog.Logger { return e.cfg.logger }

// openWAL opens a fresh WAL and checkpoint store.
func (e *cdcEnv) openWAL(name string) (*wal.WAL, *checkpoint.Store, string, error) {
	dir, err := e.cfg.tempDir(name)
	if err != nil {
		return nil, nil, "", err
	}
	w, _, err := wal.Open(wal.Options{Dir: filepath.Join(dir, "wal"), Logger: e.logger()})
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, "", err
	}
	ck, err := checkpoint.Open(context.Background(), vfs.Default, filepath.Join(dir, "ckpt"), checkpoint.Options{})
	if err != nil {
		w.Close()
		os.RemoveAll(dir)
		return nil, nil, "", err
	}
	return w, ck, dir, nil
}

func cdcCases(cfg *config) []*benchCase {
	// Every case's setup takes a reference to the shared cluster and its
	// cleanup gives one back, so the cluster stops after the last case.
	var e *cdcEnv
	held := 0
	setup := func(ctx context.Context) (err error) {
		if e, err = getCDCEnv(ctx, cfg); err == nil {
			held++
		}
		return err
	}
	cleanup := func() {
		if held > 0 {
			held--
			releaseCDCEnv()
		}
	}
	return []*benchCase{
		{name: cdcRecv, primary: mRecordsPerSec, extra: []string{mMBps, mCPUPerM}, setup: setup, cleanup: cleanup,
			run: func(ctx context.Context) (sample, error) { return e.recvlogical(ctx) }},
		{name: cdcStream, primary: mRecordsPerSec, extra: []string{mCPUPerM}, setup: setup, cleanup: cleanup,
			compare: []comparison{{metric: mRecordsPerSec, base: cdcRecv, baseMetric: mRecordsPerSec},
				{label: "cpu", metric: mCPUPerM, base: cdcRecv, baseMetric: mCPUPerM}},
			run: func(ctx context.Context) (sample, error) { return e.stream(ctx) }},
		{name: cdcCopy, primary: mMBps, setup: setup, cleanup: cleanup,
			run: func(ctx context.Context) (sample, error) { return e.copyBaseline(ctx) }},
		{name: cdcSnapshot, primary: mMBps, setup: setup, cleanup: cleanup, extra: []string{mRecordsPerSec},
			compare: []comparison{{metric: mMBps, base: cdcCopy, baseMetric: mMBps}},
			run:     func(ctx context.Context) (sample, error) { return e.snapshot(ctx) }},
		{name: cdcLatency, primary: mP99, setup: setup, cleanup: cleanup, extra: []string{mRecordsPerSec},
			run: func(ctx context.Context) (sample, error) { return e.latency(ctx, latPlain) }},
		{name: cdcInc, primary: mRecordsPerSec, extra: []string{mMBps}, setup: setup, cleanup: cleanup,
			compare: []comparison{{metric: mRecordsPerSec, base: cdcSnapshot, baseMetric: mRecordsPerSec},
				{metric: mMBps, base: cdcCopy, baseMetric: mMBps}},
			run: func(ctx context.Context) (sample, error) { return e.incremental(ctx) }},
		{name: cdcIncLag, primary: mP99, setup: setup, cleanup: cleanup, extra: []string{mRecordsPerSec, mIncRows},
			compare: []comparison{{metric: mP99, base: cdcLatency, baseMetric: mP99}},
			run:     func(ctx context.Context) (sample, error) { return e.latency(ctx, latIncremental) }},
		{name: cdcChecksum, primary: mRecordsPerSec, setup: setup, cleanup: cleanup,
			run: func(ctx context.Context) (sample, error) { return e.checksumRound(ctx) }},
		{name: cdcStreamCk, primary: mRecordsPerSec, extra: []string{mCkChunks}, setup: setup, cleanup: cleanup,
			compare: []comparison{{metric: mRecordsPerSec, base: cdcStream, baseMetric: mRecordsPerSec}},
			run:     func(ctx context.Context) (sample, error) { return e.streamChecksum(ctx) }},
		{name: cdcCkLag, primary: mP99, setup: setup, cleanup: cleanup, extra: []string{mRecordsPerSec, mCkChunks},
			compare: []comparison{{metric: mP99, base: cdcLatency, baseMetric: mP99}},
			run:     func(ctx context.Context) (sample, error) { return e.latency(ctx, latChecksum) }},
	}
}

// What runs beside the latency case's load.
const (
	latPlain       = iota
	latIncremental // incremental snapshots of the snapshot table, back to back
	latChecksum    // checksum rounds over the snapshot table at the default rate
)

// recvlogical runs pg_recvlogical over the workload from its own slot.
func (e *cdcEnv) recvlogical(ctx context.Context) (sample, error) {
	rep := e.nextRep(cdcRecv)
	dir, err := e.cfg.tempDir("recvlogical")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	out := filepath.Join(dir, "out")
	start := time.Now()
	cmd := execCommand(ctx, filepath.Join(e.c.BinDir(), "pg_recvlogical"), "-d", e.dsn,
		"--slot", fmt.Sprintf("bench_recv_%d", rep), "--start", "--no-loop", "-f", out,
		"-o", "proto_version=1", "-o", "publication_names=stream_pub", "--endpos", e.endPos.String())
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("pg_recvlogical: %v: %s", err, b)
	}
	el := time.Since(start).Seconds()
	fi, err := os.Stat(out)
	if err != nil {
		return nil, err
	}
	cpu, peak := childUsage(cmd)
	return sample{mRecordsPerSec: float64(e.rows) / el, mMBps: float64(fi.Size()) / el / 1e6,
		mCPUPerM: cpu / (float64(e.rows) / 1e6), mPeakRSS: peak}, nil
}

// stream captures the workload with pgsource into a fresh WAL, until the
// end of the workload is confirmed (durable).
func (e *cdcEnv) stream(ctx context.Context) (sample, error) {
	return e.streamSlot(ctx, fmt.Sprintf("bench_walship_%d", e.nextRep(cdcStream)))
}

// streamSlot is stream from the given slot.
func (e *cdcEnv) streamSlot(ctx context.Context, slot string) (sample, error) {
	w, ck, dir, err := e.openWAL("cdc-stream")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	defer w.Close()
	src, err := pgsource.New(pgsource.Options{DSN: e.dsn, Slot: slot,
		Publication: "stream_pub", Snapshot: "never", Logger: e.logger()}, w, ck)
	if err != nil {
		return nil, err
	}
	cpu0 := cpuSeconds()
	el, err := runUntil(ctx, src, func(s pgsource.Stats) bool { return s.ConfirmedLSN >= uint64(e.endPos) })
	if err != nil {
		return nil, err
	}
	cpu := cpuSeconds() - cpu0 // the bench process runs nothing else meanwhile
	// More is fine: the checksum rounds of other cases write logical
	// messages after the workload, which the source may receive before it
	// stops.
	if got := src.Stats().Changes; got < uint64(e.rows) {
		return nil, fmt.Errorf("walship captured %d changes, the workload has %d", got, e.rows)
	}
	return sample{mRecordsPerSec: float64(e.rows) / el.Seconds(), mCPUPerM: cpu / (float64(e.rows) / 1e6)}, nil
}

// runUntil runs src until done holds, then stops it gracefully; it returns
// the time until done held.
func runUntil(ctx context.Context, src *pgsource.Source, done func(pgsource.Stats) bool) (time.Duration, error) {
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	start := time.Now()
	go func() { errc <- src.Run(rctx) }()
	deadline := start.Add(10 * time.Minute)
	for !done(src.Stats()) {
		select {
		case err := <-errc:
			return 0, fmt.Errorf("source stopped: %v", err)
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(time.Millisecond):
		}
		if time.Now().After(deadline) {
			return 0, errors.New("source did not finish in 10 minutes")
		}
	}
	el := time.Since(start)
	cancel()
	if err := <-errc; err != nil {
		return 0, err
	}
	return el, nil
}

// copyBaseline reads the snapshot table with one COPY into io.Discard.
func (e *cdcEnv) copyBaseline(ctx context.Context) (sample, error) {
	conn, err := pgx.Connect(ctx, e.dsn)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	cw := &countWriter{}
	start := time.Now()
	if _, err := conn.PgConn().CopyTo(ctx, cw, "COPY snap_rows TO STDOUT"); err != nil {
		return nil, err
	}
	el := time.Since(start).Seconds()
	return sample{mMBps: float64(cw.n) / el / 1e6}, nil
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}

// snapshot takes an initial snapshot of snap_rows with a new slot.
func (e *cdcEnv) snapshot(ctx context.Context) (sample, error) {
	rep := e.nextRep(cdcSnapshot)
	slot := fmt.Sprintf("bench_snap_%d", rep)
	w, ck, dir, err := e.openWAL("cdc-snapshot")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	defer w.Close()
	src, err := pgsource.New(pgsource.Options{DSN: e.dsn, Slot: slot, Publication: "snap_pub", Logger: e.logger()}, w, ck)
	if err != nil {
		return nil, err
	}
	el, err := runUntil(ctx, src, func(s pgsource.Stats) bool { return s.SnapshotDone })
	if err != nil {
		return nil, err
	}
	st := src.Stats()
	e.dropSlot(ctx, slot)
	return sample{mMBps: float64(st.SnapshotBytes) / el.Seconds() / 1e6, mRecordsPerSec: float64(st.SnapshotRows) / el.Seconds()}, nil
}

// dropSlot drops a slot once its walsender has gone (best effort).
func (e *cdcEnv) dropSlot(ctx context.Context, slot string) {
	for i := 0; i < 50; i++ {
		if e.exec(ctx, fmt.Sprintf("SELECT pg_drop_replication_slot('%s')", slot)) == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// latency commits 10-row transactions at 10,000 row changes/s while
// pgsource captures them, and measures for each transaction the time from
// its source commit timestamp until a following reader of the WAL (which
// sees only durable transactions) returns it. With inc, the source also
// publishes the snapshot table and copies it by incremental snapshots
// during the whole measurement (one is requested whenever none is
// pending); their chunks are not counted as transactions.
func (e *cdcEnv) latency(ctx context.Context, beside int) (sample, error) {
	inc := beside == latIncremental
	name, slot, pub, base := cdcLatency, "bench_lat_%d", "lat_pub", int64(0)
	switch beside {
	case latIncremental:
		name, slot, pub, base = cdcIncLag, "bench_inclat_%d", "latinc_pub", 50_000_000
	case latChecksum:
		name, slot, base = cdcCkLag, "bench_cklat_%d", 75_000_000
	}
	rep := e.nextRep(name)
	slot = fmt.Sprintf(slot, rep)
	w, ck, dir, err := e.openWAL("cdc-latency")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	defer w.Close()
	defer e.dropSlot(context.Background(), slot)
	src, err := pgsource.New(pgsource.Options{DSN: e.dsn, Slot: slot, Publication: pub, Snapshot: "never",
		Logger: e.logger()}, w, ck)
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc, err := startSource(rctx, src)
	if err != nil {
		return nil, err
	}

	d := max(e.cfg.duration, 2*time.Second)
	if e.cfg.quick {
		d = time.Second
	}
	const rowsPerTxn = 10
	txns := int(d.Seconds() * cdcLatencyPS / rowsPerTxn)
	var h histogram
	readDone := make(chan error, 1)
	go func() {
		r, err := w.NewReader(w.FirstLSN(), true)
		if err != nil {
			readDone <- err
			return
		}
		defer r.Close()
		for i := 0; i < txns; {
			t, err := r.Next(rctx)
			if err != nil {
				readDone <- err
				return
			}
			if t.Header.Snapshot&change.SnapshotIncremental != 0 || isMessageTxn(t) {
				continue // a chunk, or a check round's message: not the load's
			}
			h.record(time.Since(t.Header.SourceCommitTime))
			i++
		}
		readDone <- nil
	}()

	conn, err := pgx.Connect(ctx, e.dsn)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	base += int64(rep) * 100_000_000
	var incRows0 uint64
	incDone := make(chan error, 1)
	stopInc := make(chan struct{})
	if inc {
		incRows0 = src.Stats().IncrementalRows
		go func() { incDone <- keepSnapshotting(rctx, src, stopInc) }()
	} else {
		close(incDone)
	}
	ckDone := make(chan result, 1)
	if beside == latChecksum {
		go func() { ckDone <- keepChecking(rctx, e.dsn, e.logger(), stopInc) }()
	} else {
		close(ckDone)
	}
	start := time.Now()
	interval := time.Second * rowsPerTxn / cdcLatencyPS
	for i := 0; i < txns; i++ {
		if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
			time.Sleep(wait)
		}
		lo := base + int64(i*rowsPerTxn)
		if _, err := conn.Exec(ctx, fmt.Sprintf(`INSERT INTO lat_rows SELECT g, rpad(md5(g::text), 168, 'l') FROM generate_series(%d, %d) g`,
			lo, lo+rowsPerTxn-1)); err != nil {
			return nil, err
		}
	}
	el := time.Since(start).Seconds()
	rate := float64(txns*rowsPerTxn) / el
	incRate := float64(src.Stats().IncrementalRows-incRows0) / el
	close(stopInc)
	if err := <-incDone; err != nil {
		return nil, err
	}
	rounds := <-ckDone
	if rounds.err != nil {
		return nil, fmt.Errorf("checksum round: %w", rounds.err)
	}
	select {
	case err := <-readDone:
		if err != nil {
			return nil, err
		}
	case <-time.After(30 * time.Second):
		return nil, errors.New("not every transaction reached the WAL within 30s")
	}
	cancel()
	if err := <-errc; err != nil {
		return nil, err
	}
	s := sample{mP50: h.quantile(0.5), mP99: h.quantile(0.99), mRecordsPerSec: rate}
	if inc {
		s[mIncRows] = incRate
	}
	if beside == latChecksum {
		s[mCkChunks] = float64(rounds.chunks)
	}
	return s, nil
}

// isMessageTxn reports whether t holds only logical messages.
func isMessageTxn(t *change.Committed) bool {
	for _, c := range t.Changes {
		if c.Op != change.Message {
			return false
		}
	}
	return len(t.Changes) > 0
}

// result is what a background round loop did.
type result struct {
	chunks int
	err    error
}

// keepChecking runs checksum rounds over the snapshot table back to back
// at the default rate until stop is closed; it returns the chunks checked.
func keepChecking(ctx context.Context, dsn string, log *slog.Logger, stop <-chan struct{}) result {
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-stop:
		case <-cctx.Done():
		}
		cancel()
	}()
	r := checksum.New(checksum.Options{DSN: dsn, Publication: "snap_pub", Logger: log})
	total := 0
	for {
		n, err := r.Round(cctx, cdcSnapTable)
		switch {
		case err == nil:
			total += n
		case cctx.Err() != nil: // cut short at the end of the measurement
			return result{chunks: total + r.Status().Chunks}
		default:
			return result{err: err}
		}
	}
}

// startSource runs src until ctx ends and waits until its slot streams
// (its confirmed position is set). The channel receives Run's result.
func startSource(ctx context.Context, src *pgsource.Source) (<-chan error, error) {
	errc := make(chan error, 1)
	go func() { errc <- src.Run(ctx) }()
	deadline := time.Now().Add(time.Minute)
	for src.Stats().ConfirmedLSN == 0 {
		select {
		case err := <-errc:
			return nil, fmt.Errorf("source stopped: %v", err)
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, errors.New("source did not start streaming in a minute")
		}
	}
	return errc, nil
}

// keepSnapshotting requests an incremental snapshot of the snapshot table
// whenever src has none pending, until stop is closed.
func keepSnapshotting(ctx context.Context, src *pgsource.Source, stop <-chan struct{}) error {
	for {
		if src.Stats().IncrementalPending == 0 {
			if _, err := src.RequestSnapshot(ctx, cdcSnapTable, ""); err != nil {
				return err
			}
		}
		select {
		case <-stop:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// incremental copies the snapshot table by one incremental snapshot of a
// streaming source (no initial snapshot, nothing else to stream), from the
// request until the last chunk is durable.
func (e *cdcEnv) incremental(ctx context.Context) (sample, error) {
	slot := fmt.Sprintf("bench_inc_%d", e.nextRep(cdcInc))
	w, ck, dir, err := e.openWAL("cdc-incremental")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	defer w.Close()
	defer e.dropSlot(context.Background(), slot)
	src, err := pgsource.New(pgsource.Options{DSN: e.dsn, Slot: slot, Publication: "snap_pub", Snapshot: "never",
		Logger: e.logger()}, w, ck)
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc, err := startSource(rctx, src)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	if _, err := src.RequestSnapshot(ctx, cdcSnapTable, ""); err != nil {
		return nil, err
	}
	deadline := start.Add(10 * time.Minute)
	// Pending counts a request until its last chunk is durable.
	for src.Stats().IncrementalPending > 0 {
		select {
		case err := <-errc:
			return nil, fmt.Errorf("source stopped: %v", err)
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, errors.New("incremental snapshot did not finish in 10 minutes")
		}
	}
	el := time.Since(start).Seconds()
	cancel()
	if err := <-errc; err != nil {
		return nil, err
	}
	if got := src.Stats().IncrementalRows; got != uint64(e.snapRows) {
		return nil, fmt.Errorf("incremental snapshot copied %d rows, the table has %d", got, e.snapRows)
	}
	return sample{mRecordsPerSec: float64(e.snapRows) / el, mMBps: float64(e.snapBytes) / el / 1e6}, nil
}

// checksumRound runs one checksum round over the snapshot table with no
// throttle: rows of the table per second of the round. Every chunk is
// hashed at least twice (a check and a recheck that must agree).
func (e *cdcEnv) checksumRound(ctx context.Context) (sample, error) {
	r := checksum.New(checksum.Options{DSN: e.dsn, Publication: "snap_pub", Rate: 1e9, Logger: e.logger()})
	start := time.Now()
	if _, err := r.Round(ctx, cdcSnapTable); err != nil {
		return nil, err
	}
	return sample{mRecordsPerSec: float64(e.snapRows) / time.Since(start).Seconds()}, nil
}

// streamChecksum is stream (from a slot of its own) while checksum rounds
// over the snapshot table run back to back at the default rate. Their
// messages come after the streamed stretch of WAL: what is measured is
// the load of the rounds on the server and the machine.
func (e *cdcEnv) streamChecksum(ctx context.Context) (sample, error) {
	slot := fmt.Sprintf("bench_walshipck_%d", e.nextRep(cdcStreamCk))
	r := checksum.New(checksum.Options{DSN: e.dsn, Publication: "snap_pub", Logger: e.logger()})
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan result, 1)
	go func() {
		total := 0
		for {
			n, err := r.Round(cctx, cdcSnapTable)
			switch {
			case err == nil:
				total += n
			case cctx.Err() != nil: // cut short by the end of the stream
				total += r.Status().Chunks
			default:
				done <- result{err: err}
				return
			}
			if cctx.Err() != nil {
				done <- result{chunks: total}
				return
			}
		}
	}()
	// Let the round begin before the stream does.
	for r.Status().Chunks == 0 {
		select {
		case res := <-done:
			return nil, fmt.Errorf("checksum round: %v", res.err)
		case <-time.After(5 * time.Millisecond):
		}
	}
	s, err := e.streamSlot(ctx, slot)
	cancel()
	res := <-done
	if err != nil {
		return nil, err
	}
	if res.err != nil {
		return nil, fmt.Errorf("checksum round: %w", res.err)
	}
	s[mCkChunks] = float64(res.chunks)
	return s, nil
}

func execCommand(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, name, args...)
}

func cdcTargets(cfg *config, rs *resultSet) []target {
	var ts []target
	add := func(what string, v float64, ok, met bool, measured, want string) {
		t := target{what: what, want: want, status: "not measured", measured: "-"}
		if ok {
			t.measured = measured
			t.status = map[bool]string{true: "met", false: "missed"}[met]
		}
		ts = append(ts, t)
	}
	r, ok := rs.compared(cdcStream, mRecordsPerSec, cdcRecv)
	a, _ := rs.value(cdcStream, mRecordsPerSec)
	b, _ := rs.value(cdcRecv, mRecordsPerSec)
	add("streaming throughput vs pg_recvlogical (pgoutput)", r, ok, r >= 1,
		fmt.Sprintf("%s (%s vs %s /s)", formatRatio(r), formatNumber(a), formatNumber(b)), "≥ 1.0x")
	r, ok = rs.compared(cdcStream, mCPUPerM, cdcRecv)
	a, _ = rs.value(cdcStream, mCPUPerM)
	b, _ = rs.value(cdcRecv, mCPUPerM)
	add("CPU per million changes vs pg_recvlogical (each process's getrusage)", r, ok, r <= 1,
		fmt.Sprintf("%s (%.2f s vs %.2f s)", formatRatio(r), a, b), "≤ 1x")
	a, ok = rs.value(cdcStream, mRecordsPerSec)
	add("row changes/s, 200-byte rows", a, ok, a >= 50000, formatNumber(a)+" /s", "≥ 50,000 /s")
	r, ok = rs.compared(cdcSnapshot, mMBps, cdcCopy)
	a, _ = rs.value(cdcSnapshot, mMBps)
	b, _ = rs.value(cdcCopy, mMBps)
	add("initial snapshot vs a raw COPY of the same table", r, ok, r >= 0.8,
		fmt.Sprintf("%s (%s vs %s MB/s)", formatRatio(r), formatNumber(a), formatNumber(b)), "≥ 0.8x")
	a, ok = rs.value(cdcLatency, mP99)
	p50, _ := rs.value(cdcLatency, mP50)
	add("commit-to-durable p99 at 10,000 changes/s", a, ok, a < 50000,
		fmt.Sprintf("%s (p50 %s)", formatMicros(a), formatMicros(p50)), "< 50 ms")
	// Of the next four the issue sets only the last (≥ 0.9x); the lag
	// during an incremental snapshot keeps the streaming p99 target, and
	// the incremental (≥ 0.5x of the initial snapshot) and checksum
	// (≥ 50,000 rows/s) figures are this suite's own yardsticks.
	r, ok = rs.compared(cdcInc, mRecordsPerSec, cdcSnapshot)
	a, _ = rs.value(cdcInc, mRecordsPerSec)
	b, _ = rs.value(cdcSnapshot, mRecordsPerSec)
	add("incremental snapshot vs the initial snapshot (rows/s)", r, ok, r >= 0.5,
		fmt.Sprintf("%s (%s vs %s rows/s)", formatRatio(r), formatNumber(a), formatNumber(b)), "≥ 0.5x")
	a, ok = rs.value(cdcIncLag, mP99)
	r, _ = rs.compared(cdcIncLag, mP99, cdcLatency)
	add("commit-to-durable p99 at 10,000 changes/s during an incremental snapshot", a, ok, a < 50000,
		fmt.Sprintf("%s (%s of without)", formatMicros(a), formatRatio(r)), "< 50 ms")
	a, ok = rs.value(cdcChecksum, mRecordsPerSec)
	add("checksum round, rows hashed per second (no throttle)", a, ok, a >= 50000, formatNumber(a)+" rows/s", "≥ 50,000 /s")
	r, ok = rs.compared(cdcStreamCk, mRecordsPerSec, cdcStream)
	a, _ = rs.value(cdcStreamCk, mRecordsPerSec)
	b, _ = rs.value(cdcStream, mRecordsPerSec)
	add("streaming throughput during a checksum round (default rate) vs without", r, ok, r >= 0.9,
		fmt.Sprintf("%s (%s vs %s /s)", formatRatio(r), formatNumber(a), formatNumber(b)), "≥ 0.9x")
	a, ok = rs.value(cdcCkLag, mP99)
	r, _ = rs.compared(cdcCkLag, mP99, cdcLatency)
	add("commit-to-durable p99 at 10,000 changes/s during a checksum round (default rate)", a, ok, a < 50000,
		fmt.Sprintf("%s (%s of without)", formatMicros(a), formatRatio(r)), "< 50 ms")
	return ts
}
