package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/walship/walship/archive"
	"github.com/walship/walship/change"
	"github.com/walship/walship/internal/cli"
	"github.com/walship/walship/kafkasink"
	"github.com/walship/walship/kafkawire"
	"github.com/walship/walship/pitr"
	"github.com/walship/walship/walerr"
)

// runPublish reads the archive's log in order from a start and produces
// the records the daemon's Kafka sink produced for it (kafkasink.Publisher),
// skipping those the topics already hold. Each segment object is verified
// just before its transactions are published, so damage stops the command
// (exit 1, naming the object) after everything before it is produced.
func runPublish(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fset := newFlagSet("publish", stderr)
	var af archiveFlags
	af.register(fset)
	brokers := fset.String("brokers", "", "Kafka brokers, host:port[,host:port...] (as kafka.brokers)")
	topics := fset.String("topics", kafkawire.ModeOrdered, "topics to rebuild: ordered (<prefix>.ordered), tables (<prefix>.<schema>.<table>) or both")
	prefix := fset.String("topic-prefix", kafkawire.DefaultTopicPrefix, "topic prefix (as kafka.topic_prefix)")
	partitions := fset.Int("partitions", 1, "partitions of the per-table topics created (as kafka.partitions)")
	tombstones := fset.Bool("tombstones", true, "a null-value record after each delete (as kafka.tombstones)")
	format := fset.String("format", kafkawire.FormatJSON, "record format: json or json-schemas (as kafka.format)")
	compression := fset.String("compression", kafkasink.DefaultCompression, "none, gzip, snappy, lz4 or zstd (as kafka.compression)")
	tlsOn := fset.Bool("kafka-tls", false, "connect to the brokers with TLS (as kafka.tls.enabled)")
	caFile := fset.String("kafka-ca-file", "", "PEM CA certificates for the brokers (as kafka.tls.ca_file)")
	certFile := fset.String("kafka-cert-file", "", "client certificate (as kafka.tls.cert_file)")
	keyFile := fset.String("kafka-key-file", "", "client certificate's key (as kafka.tls.key_file)")
	saslMech := fset.String("kafka-sasl-mechanism", "", "plain, scram-sha-256 or scram-sha-512 (as kafka.sasl.mechanism)")
	saslUser := fset.String("kafka-sasl-username", "", "SASL user name (as kafka.sasl.username)")
	saslPassEnv := fset.String("kafka-sasl-password-env", "", "environment variable holding the SASL password")
	fromLSN := fset.Uint64("from-lsn", 0, "publish the records of LSN N and after (default: after what the topics hold)")
	fromTime := fset.String("from-time", "", "publish the transactions committed at or after this RFC 3339 time")
	toLSN := fset.String("to-lsn", "", "stop after the transactions with a commit LSN at or before N (default: the end of the archive)")
	toTime := fset.String("to-time", "", "stop after the transactions committed at or before this RFC 3339 time")
	force := fset.Bool("force", false, "produce every selected record even if the topics hold it, and allow a hole, another lineage or a topic with a transaction open (a live HA group's)")
	parallel := fset.Int("parallel", 4, "segment objects fetched at once")
	if help, err := parseFlags(fset, args); help || err != nil {
		return err
	}
	if err := requireFlag("brokers", *brokers); err != nil {
		return err
	}
	if err := rejectEmptyFlags(fset, "from-time", "to-lsn", "to-time"); err != nil {
		return err
	}
	var modes []string
	switch *topics {
	case kafkawire.ModeOrdered, kafkawire.ModeTables:
		modes = []string{*topics}
	case "both":
		modes = []string{kafkawire.ModeOrdered, kafkawire.ModeTables}
	default:
		return usageError("--topics %q: want ordered, tables or both", *topics)
	}
	if *parallel < 1 {
		return usageError("--parallel %d: want at least 1", *parallel)
	}
	var from time.Time
	if *fromTime != "" {
		t, err := time.Parse(time.RFC3339Nano, *fromTime)
		if err != nil {
			return usageError("--from-time %q: want an RFC 3339 time", *fromTime)
		}
		from = t
	}
	target, err := parseTarget(map[string]string{"lsn": *toLSN, "time": *toTime}, false)
	if err != nil {
		return err
	}
	kopts := kafkasink.Options{Brokers: strings.Split(*brokers, ","), TopicPrefix: *prefix, Format: *format, Compression: *compression,
		Tombstones: tombstones, Partitions: int32(min(*partitions, 1<<20)),
		TLS:  kafkawire.TLSOptions{Enabled: *tlsOn, CAFile: *caFile, CertFile: *certFile, KeyFile: *keyFile},
		SASL: kafkawire.SASLOptions{Mechanism: *saslMech, Username: *saslUser}}
	if *saslPassEnv != "" {
		kopts.SASL.Password = os.Getenv(*saslPassEnv)
	}
	if *partitions < 1 {
		return usageError("--partitions %d: want at least 1", *partitions)
	}
	for _, m := range modes {
		check := kopts
		check.Mode = m
		if err := check.Validate(); err != nil {
			return usageError("the Kafka settings (named as the config keys they mirror): %v", err)
		}
	}

	src, err := openArchive(ctx, af, stderr)
	if err != nil {
		return err
	}
	if err := requireKey(ctx, src, af); err != nil {
		return err
	}
	cat, err := src.Catalog(ctx)
	if err != nil {
		return catalogExit(err)
	}
	lineage, err := cat.ChooseLineage(af.lineage)
	if err != nil {
		return restoreExit(err)
	}
	popts := kafkasink.PublishOptions{Kafka: kopts, Modes: modes, Lineage: lineage, FromLSN: *fromLSN, FromTime: from,
		Force: *force, Timeout: af.timeout}
	if !from.IsZero() {
		// Start reading at the first segment that commits at or after the
		// time: commit times never decrease along the log.
		popts.FromLSN = max(popts.FromLSN, firstLSNAt(cat, lineage, from))
	}
	pub, err := kafkasink.NewPublisher(ctx, popts)
	if err != nil {
		return cli.Exit(exitFailure, err)
	}
	defer pub.Close()
	readFrom := pub.ReadFrom()
	if target.Kind == pitr.LSN && readFrom > target.LSN {
		// Everything up to the target is in the topics already, or before
		// the start asked for.
		fmt.Fprintf(stdout, "published lineage %s to %s topics: 0 records produced: nothing to publish up to LSN %d (the topics end after it, or the start asked for is after it)\n", lineage, *topics, target.LSN)
		return nil
	}
	// Read from the start of the segment holding readFrom: an aborted
	// range ending at or after readFrom is then seen whole (see
	// publishApplier).
	planFrom := segmentStart(cat, lineage, readFrom)
	plan, err := pitr.PlanRestore(ctx, src, target, pitr.PlanOptions{Lineage: lineage, FromLSN: planFrom,
		Retry: archive.RetryPolicy{MaxElapsed: af.timeout}})
	if err != nil {
		return restoreExit(err)
	}
	bar := newProgressBar(stderr)
	opts := pitr.Options{Parallel: *parallel, StreamVerify: true, Progress: bar.update, Retry: archive.RetryPolicy{MaxElapsed: af.timeout},
		Logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	start := time.Now()
	res, err := pitr.Execute(ctx, src, plan, func(context.Context, string) (pitr.Applier, error) {
		return &publishApplier{pub: pub, pos: plan.FromLSN - 1, from: readFrom}, nil
	}, opts)
	bar.done()
	st := pub.Stats()
	summary := fmt.Sprintf("published lineage %s to %s topics: %d records produced, %d already there", lineage, *topics, st.Produced, st.Skipped)
	if st.Produced > 0 {
		summary += fmt.Sprintf(", last LSN %d", st.LastLSN)
	}
	if res != nil {
		summary += fmt.Sprintf("; read %d transactions from %d objects in %s", res.Txns, res.Objects, time.Since(start).Round(time.Millisecond))
	}
	fmt.Fprintln(stdout, summary)
	return publishExit(err)
}

// publishApplier hands the transactions pitr reads to the Publisher, with
// the aborted ranges between them: in the archive, LSNs a segment covers
// that no transaction of it holds belong to transactions the log aborted
// midway (docs/ARCHIVE.md), and pitr refuses a hole between segments, so
// every LSN between two transactions it delivers is such a range. The
// Publisher makes them the ordered topic's aborted-range markers, as the
// Sink does. Transactions and ranges ending before from (where reading
// needed to start) are not published.
type publishApplier struct {
	pub  *kafkasink.Publisher
	pos  uint64 // the commit LSN of the last transaction read
	from uint64
	out  []change.Committed
}

func (a *publishApplier) Position(context.Context) (uint64, error) { return a.pos, nil }

func (a *publishApplier) Apply(ctx context.Context, txns []change.Committed) error {
	out := a.out[:0]
	pos := a.pos
	for i := range txns {
		t := &txns[i]
		if t.FirstLSN > pos+1 {
			if t.FirstLSN == pos+2 {
				// An aborted transaction takes at least two LSNs (a record
				// and its abort record): this is no range of the log.
				return fmt.Errorf("walreplay: publish: the archive holds no transaction at LSN %d, which cannot be an aborted transaction's alone (it ends before LSN %d)", pos+1, t.FirstLSN)
			}
			if r := (change.Committed{FirstLSN: pos + 1, CommitLSN: t.FirstLSN - 1, CommitTime: t.CommitTime, Aborted: true}); r.CommitLSN >= a.from {
				// The abort's time is not archived: the next commit's,
				// which is no earlier, stands for it.
				out = append(out, r)
			}
		}
		if t.CommitLSN >= a.from {
			out = append(out, *t)
		}
		pos = max(pos, t.CommitLSN)
	}
	a.out = out
	if len(out) > 0 {
		if err := a.pub.Publish(ctx, out); err != nil {
			return err
		}
	}
	a.pos = pos
	clear(a.out)
	return nil
}

// segmentStart is the first LSN of lineage's segment that covers lsn, or
// lsn if none does.
func segmentStart(cat *pitr.Catalog, lineage string, lsn uint64) uint64 {
	for _, s := range cat.Segments {
		if s.Lineage == lineage && s.FirstLSN <= lsn && lsn <= s.LastLSN {
			return s.FirstLSN
		}
	}
	return lsn
}

// firstLSNAt is the first LSN of lineage's first segment that holds a
// commit at or after t (one past the last segment if none does).
func firstLSNAt(cat *pitr.Catalog, lineage string, t time.Time) uint64 {
	first, last := uint64(0), uint64(0)
	for _, s := range cat.Segments {
		if s.Lineage != lineage {
			continue
		}
		last = max(last, s.LastLSN)
		if !s.LastCommitTime.Before(t) && (first == 0 || s.FirstLSN < first) {
			first = s.FirstLSN
		}
	}
	if first == 0 {
		return last + 1
	}
	return first
}

// publishExit maps an error to walreplay's exit codes: a hole in the
// archive or in a topic is 3, damage 1, the rest as restore's.
func publishExit(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, kafkasink.ErrTopicHole):
		return cli.Exit(exitHole, err)
	case errors.Is(err, walerr.ErrCorruption), errors.Is(err, pitr.ErrHole), errors.Is(err, pitr.ErrMissing),
		errors.Is(err, pitr.ErrOutOfRange), errors.Is(err, pitr.ErrTargetNotFound), errors.Is(err, pitr.ErrUnreadable):
		return restoreExit(err)
	}
	return cli.Exit(exitFailure, err)
}
