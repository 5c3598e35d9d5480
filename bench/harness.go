// Command bench measures walship against reference limits measured on the
// same machine in the same run (docs/DESIGN.md §7):
//
//	go run ./bench <suite> [--reps N] [--duration D] [--quick] [--filter RE]
//	                       [--dir DIR] [--json FILE] [--cpuprofile FILE] [--memprofile FILE]
//
// A suite is a list of cases. Every repetition runs every selected case once,
// in order, so a case and its baseline are measured minutes apart at most and
// under the same background load. Each printed figure is the median of the
// repetitions; each ratio is the median of the per-repetition ratios (a case
// divided by its baseline measured in the same repetition). The harness
// reports; it never passes or fails a measurement.
//
// This file is the shared harness: flags, the repetition loop, the result
// model, the table printer, the JSON writer and medians. Each suite lives in
// its own file (wal.go).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/bits"
	"os"
	"os/signal"
	"regexp"
	"runtime"
	"runtime/pprof"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// suite is one named benchmark suite.
type suite struct {
	name    string
	summary string
	// cases returns the suite's cases in run order: a case's baselines come
	// before it.
	cases func(cfg *config) []*benchCase
	// targets states the acceptance targets of the suite's issue against
	// the measured results. It never fails the run.
	targets func(cfg *config, rs *resultSet) []target
}

// registry holds the suites; each suite's file adds itself with register
// from an init function, so suites live in separate files (wal.go, cdc.go,
// archive.go, kafka.go, ...).
var registry = map[string]func() *suite{}

// register adds a suite constructor under name. It panics on a duplicate.
func register(name string, s func() *suite) {
	if _, dup := registry[name]; dup {
		panic("bench: duplicate suite " + name)
	}
	registry[name] = s
}

// suites returns the registered suites sorted by name.
func suites() []*suite {
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]*suite, 0, len(names))
	for _, n := range names {
		out = append(out, registry[n]())
	}
	return out
}

// config is the parsed command line, shared by every case of a run.
type config struct {
	suite      string
	reps       int
	duration   time.Duration
	dir        string
	quick      bool
	filter     *regexp.Regexp
	jsonPath   string
	cpuProfile string
	memProfile string

	// logger is handed to the components under test: warnings and errors
	// only, so that the table stays readable.
	logger *slog.Logger
	// progress receives one line per measurement (stderr).
	progress io.Writer
}

func (cfg *config) progressf(format string, args ...any) {
	fmt.Fprintf(cfg.progress, format+"\n", args...)
}

// tempDir makes a fresh directory for one measurement under --dir. The
// caller removes it.
func (cfg *config) tempDir(prefix string) (string, error) {
	return os.MkdirTemp(cfg.dir, "walship-bench-"+sanitize(prefix)+"-")
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-':
			return r
		}
		return '_'
	}, s)
}

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	cfg := &config{progress: stderr}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&cfg.reps, "reps", 3, "repetitions of every case (minimum 1); figures are medians")
	fs.DurationVar(&cfg.duration, "duration", 2*time.Second, "length of one timed measurement")
	fs.StringVar(&cfg.dir, "dir", os.TempDir(), "directory for temporary files (use the disk you want to measure)")
	fs.BoolVar(&cfg.quick, "quick", false, "smoke run: tiny durations and sizes, 1 repetition (explicit --reps/--duration win)")
	filter := fs.String("filter", "", "regular expression selecting case names (their baselines run too)")
	fs.StringVar(&cfg.jsonPath, "json", "", "write the results as a JSON array to this file")
	fs.StringVar(&cfg.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run to this file")
	fs.StringVar(&cfg.memProfile, "memprofile", "", "write an allocation profile at the end of the run to this file")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: go run ./bench <suite> [flags]\n\nsuites:\n")
		for _, s := range suites() {
			fmt.Fprintf(stderr, "  %-8s %s\n", s.name, s.summary)
		}
		fmt.Fprintf(stderr, "\nflags:\n")
		fs.PrintDefaults()
	}
	// Accept flags before and after the suite name.
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		cfg.suite = fs.Arg(0)
		if err := fs.Parse(fs.Args()[1:]); err != nil {
			return nil, err
		}
		if fs.NArg() > 0 {
			return nil, fmt.Errorf("unexpected arguments %q after the suite name", fs.Args())
		}
	}
	if cfg.quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["reps"] {
			cfg.reps = 1
		}
		if !set["duration"] {
			cfg.duration = 100 * time.Millisecond
		}
	}
	if cfg.reps < 1 {
		return nil, fmt.Errorf("--reps %d: must be at least 1", cfg.reps)
	}
	if cfg.duration <= 0 {
		return nil, fmt.Errorf("--duration %v: must be positive", cfg.duration)
	}
	if *filter != "" {
		re, err := regexp.Compile(*filter)
		if err != nil {
			return nil, fmt.Errorf("--filter: %w", err)
		}
		cfg.filter = re
	}
	cfg.logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return cfg, nil
}

// run is the whole command: it parses args, runs the suite, and prints the
// table to stdout (progress goes to stderr).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	var names []string
	var s *suite
	for _, x := range suites() {
		names = append(names, x.name)
		if x.name == cfg.suite {
			s = x
		}
	}
	if cfg.suite == "" {
		return fmt.Errorf("no suite given; suites: %s", strings.Join(names, ", "))
	}
	if s == nil {
		return fmt.Errorf("unknown suite %q; suites: %s", cfg.suite, strings.Join(names, ", "))
	}
	if err := os.MkdirAll(cfg.dir, 0o755); err != nil {
		return err
	}
	cases, err := selectCases(s.cases(cfg), cfg.filter)
	if err != nil {
		return err
	}

	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return err
		}
		defer func() {
			pprof.StopCPUProfile()
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}()
	}

	rs, err := runCases(ctx, cfg, cases)
	if err != nil {
		return err
	}

	if cfg.memProfile != "" {
		if err := writeHeapProfile(cfg.memProfile); err != nil {
			return err
		}
	}
	printHeader(stdout, cfg)
	printTable(stdout, rs)
	printOtherRatios(stdout, rs)
	if s.targets != nil {
		printTargets(stdout, s.targets(cfg, rs))
	}
	if cfg.jsonPath != "" {
		if err := writeJSON(cfg.jsonPath, cfg.suite, rs); err != nil {
			return err
		}
	}
	return nil
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	runtime.GC()
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// selectCases keeps the cases whose names match re, plus every case they
// are compared against (transitively), in suite order.
func selectCases(all []*benchCase, re *regexp.Regexp) ([]*benchCase, error) {
	byName := map[string]*benchCase{}
	for _, c := range all {
		byName[c.name] = c
	}
	keep := map[string]bool{}
	var mark func(c *benchCase) error
	mark = func(c *benchCase) error {
		if keep[c.name] {
			return nil
		}
		keep[c.name] = true
		for _, cmp := range c.compare {
			b, ok := byName[cmp.base]
			if !ok {
				return fmt.Errorf("case %s compares against unknown case %s", c.name, cmp.base)
			}
			if err := mark(b); err != nil {
				return err
			}
		}
		return nil
	}
	for _, c := range all {
		if re == nil || re.MatchString(c.name) {
			if err := mark(c); err != nil {
				return nil, err
			}
		}
	}
	var out []*benchCase
	for _, c := range all {
		if keep[c.name] {
			out = append(out, c)
		}
	}
	if len(out) == 0 {
		var names []string
		for _, c := range all {
			names = append(names, c.name)
		}
		return nil, fmt.Errorf("--filter %q matches no case; cases: %s", re, strings.Join(names, ", "))
	}
	return out, nil
}

// runCases runs setup for every case, then cfg.reps repetitions of every
// case in order, then cleanup.
func runCases(ctx context.Context, cfg *config, cases []*benchCase) (*resultSet, error) {
	rs := &resultSet{byName: map[string]*caseResult{}}
	for _, c := range cases {
		r := &caseResult{c: c}
		rs.cases = append(rs.cases, r)
		rs.byName[c.name] = r
	}
	defer func() {
		for _, c := range cases {
			if c.cleanup != nil {
				c.cleanup()
			}
		}
	}()
	setups := false
	for _, c := range cases {
		if c.setup == nil {
			continue
		}
		start := time.Now()
		if err := c.setup(ctx); err != nil {
			return nil, fmt.Errorf("%s: setup: %w", c.name, err)
		}
		cfg.progressf("setup %-28s %v", c.name, time.Since(start).Round(time.Millisecond))
		setups = true
	}
	if setups && !cfg.quick {
		// Let the write-back of what setup wrote leave the disk before the
		// first measurement.
		syncAll()
		select {
		case <-time.After(settleTime):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	for rep := 1; rep <= cfg.reps; rep++ {
		for _, r := range rs.cases {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			resetPeakRSS()
			s, err := r.c.run(ctx)
			if err != nil {
				return nil, fmt.Errorf("%s (repetition %d): %w", r.c.name, rep, err)
			}
			if _, own := s[mPeakRSS]; !own {
				// A case whose work runs in a child process reports the
				// child's peak itself.
				s[mPeakRSS] = peakRSSMiB()
			}
			r.reps = append(r.reps, s)
			cfg.progressf("rep %d/%d %-28s %s %s", rep, cfg.reps, r.c.name,
				formatValue(s[r.c.primary], r.c.primary), metricUnit(r.c.primary))
			// Between measurements only the previous case's garbage is
			// collected. A sync(2) here (tried) commits the deletion of
			// its files just before the next case starts, and on a file
			// system mounted with discard (the project machine's) that
			// made the 256-appender case ~30% slower in 3 of 8 full runs
			// (none of 10 without; bench/README.md).
			runtime.GC()
		}
	}
	return rs, nil
}

// settleTime is the pause after setups (not with --quick).
const settleTime = 2 * time.Second

// ---- Result model ----

// Metric keys. A case reports a sample: one value per metric it measures.
const (
	mOpsPerSec     = "ops_per_s"
	mAppendsPerSec = "appends_per_s"
	mRecordsPerSec = "records_per_s"
	mMBps          = "MBps"
	mMillis        = "ms"
	mP50           = "p50"
	mP99           = "p99"
	mRecsPerFsync  = "records_per_fsync"
	mAllocsPerApp  = "allocs_per_append"
	// raw-seqwrite's two phases: writes into the page cache, then the
	// fdatasync that takes the data to the disk.
	mWriteMBps = "write_phase_MBps"
	mSyncMBps  = "sync_phase_MBps"
	// flusher_busy is the share of the window the group committer's
	// flusher spent in write + fdatasync; flush_ms the mean of one flush.
	mFlushBusy = "flusher_busy"
	mFlushMs   = "flush_ms"
	// pwrite_ms and fdatasync_ms split flush_ms: the mean time per flush
	// spent in the segment file's WriteAt and Sync calls.
	mWriteMs = "pwrite_ms"
	mSyncMs  = "fdatasync_ms"
	// pwrite_p99_ms and fdatasync_p99_ms are the p99 of the active
	// segment's single WriteAt and fdatasync calls in the window: what a
	// waiter's latency is built from.
	mWriteP99Ms = "pwrite_p99_ms"
	mSyncP99Ms  = "fdatasync_p99_ms"
	// peak_rss_MiB is the peak resident set of the process doing the
	// case's work during one measurement (the bench process, or the
	// reference tool's own process); every case reports it.
	mPeakRSS = "peak_rss_MiB"
	// cpu_s_per_M is CPU seconds (user plus system) of the process doing
	// the work, per million changes.
	mCPUPerM = "cpu_s_per_M"
	// inc_rows_per_s is the rows an incremental snapshot copied per second
	// while another metric was measured.
	mIncRows = "inc_rows_per_s"
	// checksum_chunks is the checksum chunks checked during a measurement.
	mCkChunks = "checksum_chunks"
)

// extras is the case's extra metrics and peak_rss_MiB, which every case
// reports.
func (c *benchCase) extras() []string {
	if slices.Contains(c.extra, mPeakRSS) || c.primary == mPeakRSS {
		return c.extra
	}
	return append(slices.Clip(c.extra), mPeakRSS)
}

// metricUnit returns the unit of a metric (as written to JSON).
func metricUnit(key string) string {
	switch key {
	case mOpsPerSec:
		return "ops/s"
	case mAppendsPerSec:
		return "appends/s"
	case mRecordsPerSec, mIncRows:
		return "records/s"
	case mMBps, mWriteMBps, mSyncMBps:
		return "MB/s"
	case mMillis, mFlushMs, mWriteMs, mSyncMs, mWriteP99Ms, mSyncP99Ms:
		return "ms"
	case mFlushBusy:
		return "%"
	case mP50, mP99:
		return "us"
	case mRecsPerFsync:
		return "records"
	case mAllocsPerApp:
		return "allocs"
	case "zstd_ratio", "zstd_ratio_level3":
		return "x"
	case "stored_MBps", "raw_MBps":
		return "MB/s"
	case "changes":
		return "changes"
	case mCkChunks:
		return "chunks"
	case mPeakRSS:
		return "MiB"
	case mCPUPerM:
		return "s"
	case "lag_p50_ms", "lag_p95_ms", "lag_p99_ms", "lag_p999_ms", mAckP50:
		return "ms"
	}
	return ""
}

// tableColumns are the secondary metrics shown as table columns, in order.
var tableColumns = []struct{ key, title string }{
	{mP50, "p50"},
	{mP99, "p99"},
	{mRecsPerFsync, "rec/fsync"},
	{mMBps, "MB/s"},
	{mAllocsPerApp, "allocs/op"},
}

// sample is one repetition's measurement of a case: metric key -> value.
type sample map[string]float64

// comparison relates a metric of a case to a metric of a baseline case.
// Its ratio is value / baseline, taken per repetition.
type comparison struct {
	// label names the comparison in JSON ("<case>:<label>") when the same
	// metric has another comparison already; empty for a metric's own
	// baseline (JSON name "<case>" or "<case>:<metric>").
	label      string
	metric     string
	base       string // baseline case name
	baseMetric string
}

// benchCase is one measurement of a suite.
type benchCase struct {
	name    string
	primary string // metric shown as the case's value
	// compare lists the comparisons; the first is the one shown in the
	// table's baseline and ratio columns, the others below the table.
	compare []comparison
	// extra lists metrics beyond the table's columns, printed below the
	// table and written to JSON.
	extra []string
	// setup runs once before the first repetition (not timed); cleanup
	// runs once at the end, also after a failure.
	setup   func(ctx context.Context) error
	cleanup func()
	// run performs one measurement.
	run func(ctx context.Context) (sample, error)
}

type caseResult struct {
	c    *benchCase
	reps []sample
}

// values returns the metric's value in each repetition that measured it.
func (r *caseResult) values(metric string) []float64 {
	var vs []float64
	for _, s := range r.reps {
		if v, ok := s[metric]; ok && !math.IsNaN(v) && !math.IsInf(v, 0) {
			vs = append(vs, v)
		}
	}
	return vs
}

// median returns the metric's median over repetitions, or NaN.
func (r *caseResult) median(metric string) float64 { return median(r.values(metric)) }

// spread returns (max-min)/median of the metric over repetitions.
func (r *caseResult) spread(metric string) float64 {
	vs := r.values(metric)
	if len(vs) < 2 {
		return math.NaN()
	}
	m := median(vs)
	if m == 0 {
		return math.NaN()
	}
	return (slices.Max(vs) - slices.Min(vs)) / m
}

type resultSet struct {
	cases  []*caseResult
	byName map[string]*caseResult
}

// ratio returns the median over repetitions of r's metric divided by the
// baseline's metric in the same repetition, and the per-repetition ratios.
func (rs *resultSet) ratio(r *caseResult, cmp comparison) (float64, []float64) {
	b := rs.byName[cmp.base]
	if b == nil {
		return math.NaN(), nil
	}
	var ratios []float64
	for i := range min(len(r.reps), len(b.reps)) {
		v, ok1 := r.reps[i][cmp.metric]
		bv, ok2 := b.reps[i][cmp.baseMetric]
		if !ok1 || !ok2 || bv == 0 || math.IsNaN(v) || math.IsNaN(bv) {
			continue
		}
		ratios = append(ratios, v/bv)
	}
	return median(ratios), ratios
}

// compared returns the median ratio of the named case's comparison of
// metric against base, for targets.
func (rs *resultSet) compared(name, metric, base string) (float64, bool) {
	r := rs.byName[name]
	if r == nil {
		return math.NaN(), false
	}
	for _, cmp := range r.c.compare {
		if cmp.metric == metric && cmp.base == base {
			v, _ := rs.ratio(r, cmp)
			return v, !math.IsNaN(v)
		}
	}
	return math.NaN(), false
}

// value returns the median of a case's metric, for targets.
func (rs *resultSet) value(name, metric string) (float64, bool) {
	r := rs.byName[name]
	if r == nil {
		return math.NaN(), false
	}
	v := r.median(metric)
	return v, !math.IsNaN(v)
}

// median returns the median of vs (the mean of the middle two for an even
// count), or NaN for none.
func median(vs []float64) float64 {
	if len(vs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(vs)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// ---- Output ----

func printHeader(w io.Writer, cfg *config) {
	fsType := fsTypeName(cfg.dir)
	if fsType != "" {
		fsType = " (" + fsType + ")"
	}
	fmt.Fprintf(w, "suite %s: %d repetition(s), %v per measurement%s, dir %s%s\n",
		cfg.suite, cfg.reps, cfg.duration, map[bool]string{true: ", quick", false: ""}[cfg.quick], cfg.dir, fsType)
	fmt.Fprintf(w, "%s %s/%s, %d CPUs, GOMAXPROCS %d\n", runtime.Version(), runtime.GOOS, runtime.GOARCH,
		runtime.NumCPU(), runtime.GOMAXPROCS(0))
	fmt.Fprintf(w, "every figure is the median of the repetitions; ratio = case / baseline, the median of per-repetition ratios\n\n")
}

// printTable prints one aligned row per case.
func printTable(w io.Writer, rs *resultSet) {
	header := []string{"case", "value", "unit", "spread", "baseline", "ratio"}
	for _, col := range tableColumns {
		header = append(header, col.title)
	}
	rows := [][]string{header}
	for _, r := range rs.cases {
		c := r.c
		row := []string{c.name, formatValue(r.median(c.primary), c.primary), metricUnit(c.primary), formatPercent(r.spread(c.primary))}
		if len(c.compare) > 0 {
			cmp := c.compare[0]
			ratio, _ := rs.ratio(r, cmp)
			base := rs.baselineName(cmp, " ")
			if cmp.metric != c.primary {
				base = metricUnit(cmp.metric) + " vs " + base
			}
			row = append(row, base, formatRatio(ratio))
		} else {
			row = append(row, "-", "-")
		}
		for _, col := range tableColumns {
			row = append(row, formatValue(r.median(col.key), col.key))
		}
		rows = append(rows, row)
	}
	// Left-align the text columns, right-align the numbers.
	left := map[int]bool{0: true, 2: true, 4: true}
	writeAligned(w, rows, left)
}

// baselineName names a comparison's baseline: the case name, followed by
// sep and the metric unless the metric is that case's primary one.
func (rs *resultSet) baselineName(cmp comparison, sep string) string {
	if b := rs.byName[cmp.base]; b != nil && b.c.primary == cmp.baseMetric {
		return cmp.base
	}
	return cmp.base + sep + cmp.baseMetric
}

// printOtherRatios lists the comparisons not shown in the table, and the
// extra metrics.
func printOtherRatios(w io.Writer, rs *resultSet) {
	rows := [][]string{{"case", "comparison", "value", "baseline", "baseline value", "ratio"}}
	for _, r := range rs.cases {
		for _, cmp := range r.c.compare[min(1, len(r.c.compare)):] {
			ratio, _ := rs.ratio(r, cmp)
			b := rs.byName[cmp.base]
			what := cmp.metric
			if u := metricUnit(cmp.metric); u != "us" {
				what = u
			}
			if cmp.label != "" {
				what = cmp.label + " (" + what + ")"
			}
			rows = append(rows, []string{r.c.name, what, formatValue(r.median(cmp.metric), cmp.metric),
				rs.baselineName(cmp, " "), formatValue(b.median(cmp.baseMetric), cmp.baseMetric), formatRatio(ratio)})
		}
	}
	if len(rows) > 1 {
		fmt.Fprintf(w, "\nother ratios:\n")
		writeAligned(w, rows, map[int]bool{0: true, 1: true, 3: true})
	}
	rows = [][]string{{"case", "metric", "value", "unit", "spread"}}
	for _, r := range rs.cases {
		for _, m := range r.c.extras() {
			rows = append(rows, []string{r.c.name, m, formatValue(r.median(m), m), metricUnit(m), formatPercent(r.spread(m))})
		}
	}
	if len(rows) > 1 {
		fmt.Fprintf(w, "\nother metrics:\n")
		writeAligned(w, rows, map[int]bool{0: true, 1: true, 3: true})
	}
}

// target is one acceptance target of a suite's issue, with the measured
// figure. The harness states it; it does not fail on it.
type target struct {
	what     string
	measured string
	want     string
	status   string // "met", "missed", or "not measured"
}

func printTargets(w io.Writer, ts []target) {
	if len(ts) == 0 {
		return
	}
	rows := [][]string{{"target", "measured", "target", "status"}}
	for _, t := range ts {
		rows = append(rows, []string{t.what, t.measured, t.want, t.status})
	}
	fmt.Fprintf(w, "\ntargets (reported, never enforced):\n")
	writeAligned(w, rows, map[int]bool{0: true, 2: true, 3: true})
}

func writeAligned(w io.Writer, rows [][]string, left map[int]bool) {
	var widths []int
	for _, row := range rows {
		for i, cell := range row {
			if i >= len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], len([]rune(cell)))
		}
	}
	for _, row := range rows {
		var b strings.Builder
		for i, cell := range row {
			pad := strings.Repeat(" ", widths[i]-len([]rune(cell)))
			if i > 0 {
				b.WriteString("  ")
			}
			if left[i] {
				b.WriteString(cell)
				if i < len(row)-1 {
					b.WriteString(pad)
				}
			} else {
				b.WriteString(pad)
				b.WriteString(cell)
			}
		}
		fmt.Fprintln(w, b.String())
	}
}

// formatValue formats a metric value for the table.
func formatValue(v float64, metric string) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "-"
	}
	switch metric {
	case mP50, mP99:
		return formatMicros(v)
	case mAllocsPerApp, mRecsPerFsync:
		return formatNumber(v)
	}
	return formatNumber(v)
}

// formatNumber prints three significant digits, with k/M suffixes.
func formatNumber(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 1e9:
		return sig3(v/1e9) + "G"
	case a >= 1e6:
		return sig3(v/1e6) + "M"
	case a >= 1e4:
		return sig3(v/1e3) + "k"
	case a >= 1000:
		return fmt.Sprintf("%.0f", v)
	}
	return sig3(v)
}

func sig3(v float64) string {
	a := math.Abs(v)
	switch {
	case a == 0:
		return "0"
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	case a >= 0.01:
		return fmt.Sprintf("%.3f", v)
	}
	return fmt.Sprintf("%.2g", v)
}

func formatMicros(us float64) string {
	switch {
	case us >= 1e6:
		return sig3(us/1e6) + "s"
	case us >= 1000:
		return sig3(us/1000) + "ms"
	}
	return sig3(us) + "µs"
}

func formatRatio(r float64) string {
	if math.IsNaN(r) || math.IsInf(r, 0) {
		return "-"
	}
	return sig3(r) + "x"
}

func formatPercent(p float64) string {
	if math.IsNaN(p) {
		return "-"
	}
	return fmt.Sprintf("±%.0f%%", p*50) // half the range, around the median
}

// jsonResult is one line of the --json output.
type jsonResult struct {
	Suite         string    `json:"suite"`
	Name          string    `json:"name"`
	Value         float64   `json:"value"`
	Unit          string    `json:"unit"`
	BaselineName  *string   `json:"baseline_name"`
	BaselineValue *float64  `json:"baseline_value"`
	Ratio         *float64  `json:"ratio"`
	Reps          int       `json:"reps"`
	Values        []float64 `json:"values"`
}

// jsonResults flattens the results: for each case one entry per metric
// (named "<case>" for the primary metric, "<case>:<metric>" otherwise)
// carrying that metric's own baseline if it has one, plus one entry per
// labelled comparison ("<case>:<label>").
func jsonResults(suiteName string, rs *resultSet) []jsonResult {
	var out []jsonResult
	add := func(r *caseResult, name, metric string, cmp *comparison) {
		vs := r.values(metric)
		if len(vs) == 0 {
			return
		}
		j := jsonResult{Suite: suiteName, Name: name, Value: median(vs), Unit: metricUnit(metric), Reps: len(r.reps), Values: vs}
		if cmp != nil {
			b := rs.byName[cmp.base]
			bv := b.median(cmp.baseMetric)
			ratio, _ := rs.ratio(r, *cmp)
			bn := rs.baselineName(*cmp, ":")
			j.BaselineName = &bn
			if !math.IsNaN(bv) {
				j.BaselineValue = &bv
			}
			if !math.IsNaN(ratio) {
				j.Ratio = &ratio
			}
		}
		out = append(out, j)
	}
	for _, r := range rs.cases {
		metrics := []string{r.c.primary}
		for _, col := range tableColumns {
			if col.key != r.c.primary {
				metrics = append(metrics, col.key)
			}
		}
		metrics = append(metrics, r.c.extras()...)
		for _, m := range metrics {
			name := r.c.name
			if m != r.c.primary {
				name += ":" + m
			}
			var own *comparison
			for i := range r.c.compare {
				if cmp := &r.c.compare[i]; cmp.label == "" && cmp.metric == m {
					own = cmp
					break
				}
			}
			add(r, name, m, own)
		}
		for i := range r.c.compare {
			if cmp := &r.c.compare[i]; cmp.label != "" {
				add(r, r.c.name+":"+cmp.label, cmp.metric, cmp)
			}
		}
	}
	return out
}

func writeJSON(path, suiteName string, rs *resultSet) error {
	b, err := json.MarshalIndent(jsonResults(suiteName, rs), "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// ---- Latency histogram ----

// histogram is a log-linear histogram of durations in nanoseconds with 32
// sub-buckets per power of two (quantiles within ~3%). It never allocates
// after creation, so recording does not disturb allocation counts.
type histogram struct {
	counts [64 + 59*32]uint64
	n      uint64
}

const histSubBits = 5

func histIndex(ns uint64) int {
	if ns < 2<<histSubBits {
		return int(ns)
	}
	shift := bits.Len64(ns) - (histSubBits + 1)
	m := ns >> shift // in [32, 64)
	return 2<<histSubBits + (shift-1)<<histSubBits + int(m) - 1<<histSubBits
}

// histMid returns the midpoint of bucket i, in nanoseconds.
func histMid(i int) float64 {
	if i < 2<<histSubBits {
		return float64(i)
	}
	j := i - 2<<histSubBits
	shift := j>>histSubBits + 1
	m := uint64(j&(1<<histSubBits-1)) + 1<<histSubBits
	lo := m << shift
	return float64(lo) + float64(uint64(1)<<shift)/2
}

func (h *histogram) record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.counts[histIndex(uint64(d))]++
	h.n++
}

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
}

// quantile returns the q-quantile in microseconds, or NaN if empty.
func (h *histogram) quantile(q float64) float64 {
	if h.n == 0 {
		return math.NaN()
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = max(rank, 1)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return histMid(i) / 1e3
		}
	}
	return math.NaN()
}
