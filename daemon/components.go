package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/walship/walship/archive"
	"github.com/walship/walship/archivesink"
	"github.com/walship/walship/config"
	"github.com/walship/walship/internal/health"
	"github.com/walship/walship/internal/seal"
	"github.com/walship/walship/internal/secret"
	"github.com/walship/walship/kafkasink"
	"github.com/walship/walship/kafkawire"
	"github.com/walship/walship/pgsource"
	"github.com/walship/walship/pitr"
	"github.com/walship/walship/vfs"
)

func (d *Daemon) buildPostgres(ctx context.Context) error {
	p := d.cfg.Source.Postgres
	var tables []pgsource.TableSpec
	for _, t := range p.Tables {
		tables = append(tables, pgsource.TableSpec{Name: t.Table, Where: t.Where, Columns: t.Columns, Hash: t.Hash, Mask: t.Mask})
	}
	opts := pgsource.Options{DSN: p.DSN, Slot: p.Slot, Publication: p.Publication, Tables: tables,
		HashSalt: p.HashSalt, MaskString: p.MaskString,
		Snapshot: p.Snapshot, SnapshotChunkRows: p.SnapshotChunkRows, Heartbeat: p.Heartbeat, StatusInterval: p.StatusInterval,
		MaxTxnMemory: int64(p.MaxTxnMemory), SignalTable: p.SignalTable, SpillDir: vfs.Join(d.cfg.WAL.Dir, "spill"), Logger: d.log,
		Confirmable: d.confirmable}
	if d.ha != nil {
		// A new leader ends the old one's walsender if it still holds the
		// slot; no confirmation leaves a member whose term lapsed.
		opts.TakeOverSlot, opts.Gate = true, d.gate
	}
	src, err := pgsource.New(opts, d.wal, d.srcCkpts)
	if err != nil {
		return fmt.Errorf("source.postgres: %w", err)
	}
	d.pg = src
	d.sources = append(d.sources, component{name: "source.postgres", run: src.Run})
	d.buildChecksum(src)
	return nil
}

// Lineage is the lineage id the daemon archives and ships under.
const Lineage = "main"

// archiveGroupNode is the archive owner (archive.Claim) of a group without
// Kafka: the group, whichever member leads.
const archiveGroupNode = "ha:archive"

func (d *Daemon) buildSinks(ctx context.Context) error {
	if a := d.cfg.Archive; a != nil {
		// Every retried attempt of any archive call (the archiver's, the
		// snapshotter's, the catalog's) marks the store down at once:
		// /readyz and /status must not wait for a call to give up.
		backend := &health.Tracker{}
		var gate func() error
		if d.ha != nil {
			gate = d.gate
		}
		ar, err := openArchive(ctx, a, d.log, archivesink.BackendRetried(backend), gate)
		if err != nil {
			return err
		}
		aopts := archivesink.ArchiverOptions{Lineage: Lineage, Timeout: a.Timeout, Logger: d.log,
			Backend: backend, Stored: func(lsn uint64) { d.levels.Report(archivesink.CheckpointName, lsn) }}
		if d.ha != nil {
			// The group owns the lineage, whichever member leads; the
			// archive never holds what the group's history (the ordered
			// topic) lacks, and no put leaves a member whose term lapsed.
			aopts.Gate = d.gate
			if k := d.cfg.Kafka; k != nil {
				aopts.NodeID = "ha:" + k.TopicPrefix
				aopts.Through = d.kafkaShipped.Load
			} else {
				// The archive is the group's history itself: what it holds
				// beyond the leader's catch-up is a replaced leader's.
				aopts.NodeID = archiveGroupNode
				aopts.Copied = d.ha.copied.Load
			}
		}
		arc, err := archivesink.NewArchiver(ar, d.wal, d.sinkCkpts, aopts)
		if err != nil {
			return fmt.Errorf("archive: %w", err)
		}
		d.archiver, d.archiveHandle = arc, ar
		d.sinks = append(d.sinks, component{name: "archive", run: arc.Run})
		if a.SnapshotInterval > 0 && d.ha == nil {
			// A member of a group builds it when it leads (lead): a
			// follower's log is trimmed under a replica that stands still.
			if err := d.buildSnapshotter(); err != nil {
				return err
			}
		}
	}
	if k := d.cfg.Kafka; k != nil {
		opts := KafkaSinkOptions(k, d.log)
		opts.Acked = func(lsn uint64) {
			d.kafkaShipped.Store(lsn)
			d.levels.Report(kafkasink.CheckpointName, lsn)
		}
		if d.ha != nil {
			// Transactions with the group's id: a new leader's producer
			// fences this one's, and readers see only committed records.
			opts.TransactionalID = d.ha.topic
			opts.Gate = d.gate
		}
		ks, err := kafkasink.New(opts, d.wal, d.sinkCkpts, Lineage)
		if err != nil {
			return fmt.Errorf("kafka: %w", err)
		}
		d.kafka = ks
		d.sinks = append(d.sinks, component{name: "kafka", run: ks.Run})
		if d.levels.Quorum() != nil {
			d.sinks = append(d.sinks, component{name: "wal.applied_quorum", run: d.watchApplied})
		}
	}
	return nil
}

// buildSnapshotter makes the snapshotter (archive.snapshot_interval) and
// its archive retention, over the archive the archiver uses. In a group it
// stores only what the group's history holds: what the ordered topic has
// committed, or, without Kafka, what the archiver has stored.
func (d *Daemon) buildSnapshotter() error {
	a := d.cfg.Archive
	sopts := archivesink.SnapshotterOptions{Lineage: Lineage,
		Dir: vfs.Join(d.cfg.WAL.Dir, "snapshotter"), Interval: a.SnapshotInterval, Logger: d.log}
	if d.ha != nil {
		sopts.Gate = d.gate
		if d.cfg.Kafka != nil {
			sopts.Through = d.kafkaShipped.Load
		} else {
			sopts.Through = func() uint64 { return d.archiver.Stats().ArchivedLSN }
		}
	}
	sn, err := archivesink.NewSnapshotter(d.archiveHandle, d.wal, d.sinkCkpts, sopts)
	if err != nil {
		return fmt.Errorf("archive.snapshot_interval: %w", err)
	}
	d.snapshotter = sn
	d.sinks = append(d.sinks, component{name: "snapshotter", run: sn.Run}, component{name: "archive retention", run: d.pruneArchive})
	return nil
}

// watchApplied reads the positions topic, where each named walship
// consume reports what its replica applied, into the replication level
// applied (kafkawire.WatchAppliedPositions).
func (d *Daemon) watchApplied(ctx context.Context) error {
	k := d.cfg.Kafka
	topic := kafkawire.PositionsTopic(k.TopicPrefix)
	opts, err := kafkaClientOptions(k)
	if err != nil {
		return err
	}
	return kafkawire.WatchAppliedPositions(ctx, opts, topic, d.levels.ReportApplied, func(offset int64, err error) {
		d.log.Warn("skipping a malformed applied position", "topic", topic, "offset", offset, "err", err)
	})
}

// kafkaClientOptions are the franz-go options (brokers, TLS, SASL) of the
// kafka: section, for the daemon's own clients.
func kafkaClientOptions(k *config.Kafka) ([]kgo.Opt, error) {
	kc := KafkaSinkOptions(k, nil)
	return kafkawire.ClientOptions(k.Brokers, kc.TLS, kc.SASL)
}

// OpenArchive opens the archive of an archive: section.
func OpenArchive(ctx context.Context, a *config.Archive, log *slog.Logger) (*archive.Archive, error) {
	return openArchive(ctx, a, log, nil, nil)
}

// openArchive is OpenArchive with a hook that hears every retried backend
// call (archive.BackendOptions.OnRetry; nil for none).
// writeGate, when not nil, is checked before every byte written to an S3
// store (BackendOptions.WriteGate).
func openArchive(ctx context.Context, a *config.Archive, log *slog.Logger, onRetry func(archive.RetryEvent), writeGate func() error) (*archive.Archive, error) {
	opts, err := archiveOptions(a, log)
	if err != nil {
		return nil, err
	}
	opts.Backend.OnRetry, opts.Backend.WriteGate = onRetry, writeGate
	ar, err := archive.Open(ctx, a.URL, opts)
	if err != nil {
		return nil, fmt.Errorf("archive.url %s: %w", secret.URL(a.URL), err)
	}
	return ar, nil
}

// archiveOptions maps an archive: section to the archive's options: its
// S3 settings and client-side encryption key (none: objects are stored in
// clear).
func archiveOptions(a *config.Archive, log *slog.Logger) (archive.Options, error) {
	opts := archive.Options{Logger: log, Backend: archive.BackendOptions{Endpoint: a.S3.Endpoint, Region: a.S3.Region,
		PathStyle: a.S3.PathStyle, AccessKey: a.S3.AccessKey, SecretKey: a.S3.SecretKey, CAFile: a.S3.CAFile, Logger: log}}
	s, err := seal.FromConfig(a.EncryptionKeyFile, a.EncryptionKeyEnv)
	if err != nil {
		return archive.Options{}, fmt.Errorf("archive encryption key: %w", err)
	}
	if s != nil {
		opts.Seal = s
	}
	return opts, nil
}

// KafkaSinkOptions maps the kafka: section to the sink's config.
func KafkaSinkOptions(k *config.Kafka, log *slog.Logger) kafkasink.Options {
	return kafkasink.Options{Brokers: k.Brokers, TopicPrefix: k.TopicPrefix, Mode: k.Mode, Format: k.Format, Compression: k.Compression,
		Linger: k.Linger, Tombstones: k.Tombstones, Partitions: int32(k.Partitions), Logger: log, // bounded by config
		TransactionTopic: k.TransactionTopic,
		TLS: kafkawire.TLSOptions{Enabled: k.TLS.Enabled, CAFile: k.TLS.CAFile, CertFile: k.TLS.CertFile, KeyFile: k.TLS.KeyFile,
			InsecureSkipVerify: k.TLS.InsecureSkipVerify},
		SASL: kafkawire.SASLOptions{Mechanism: k.SASL.Mechanism, Username: k.SASL.Username, Password: k.SASL.Password}}
}

// Positions is a summary of where every part of the pipeline is.
type Positions struct {
	DurableLSN uint64            `json:"durable_lsn"`
	FirstLSN   uint64            `json:"first_lsn"`
	WALBytes   int64             `json:"wal_bytes"`
	Sinks      map[string]uint64 `json:"sinks"`
	// Role is "leader" or "follower" in an HA group, "" for a single
	// daemon; HA describes the group as this member sees it.
	Role string      `json:"role,omitempty"`
	HA   *HAPosition `json:"ha,omitempty"`
}

// HAPosition is a member's view of its group.
type HAPosition struct {
	Name   string `json:"name"`
	Term   int64  `json:"term"`
	Leader string `json:"leader"`
	// LeaseExpiresInMS is how long this member's term stays valid
	// without a renewal (0 unless it leads).
	LeaseExpiresInMS int64       `json:"lease_expires_in_ms"`
	Takeovers        int64       `json:"takeovers"`
	TakeoverMS       int64       `json:"takeover_ms"`
	Members          []HAMember  `json:"members"`
	Loss             *LossReport `json:"loss,omitempty"`
}

// HAMember is one member as last heard from.
type HAMember struct {
	Name     string    `json:"name"`
	Role     string    `json:"role"`
	Position uint64    `json:"position"`
	Seen     time.Time `json:"seen"`
}

// Positions returns the current positions.
func (d *Daemon) Positions() Positions {
	p := Positions{DurableLSN: d.wal.Durable(), FirstLSN: d.wal.FirstLSN(), WALBytes: d.retention.walBytes.Load(), Sinks: map[string]uint64{}}
	for _, c := range d.sinkCkpts.All() {
		p.Sinks[c.Name] = c.Pos
	}
	if m := d.ha; m != nil {
		p.Role = m.role()
		p.HA = m.position()
	}
	return p
}

// pruneInterval is how often old base snapshots, and the archived segments
// only they needed, are removed.
const pruneInterval = time.Hour

// pruneArchive keeps archive.snapshot_keep snapshots; segments older than
// the oldest kept snapshot go with the older ones (pitr.Prune).
func (d *Daemon) pruneArchive(ctx context.Context) error {
	t := time.NewTicker(pruneInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		rep, err := pitr.Prune(ctx, d.archiveHandle, pitr.RetentionPolicy{KeepSnapshots: d.cfg.Archive.SnapshotKeep, Lineage: Lineage,
			TempDir: vfs.Join(d.cfg.WAL.Dir, "snapshotter")})
		if err != nil && ctx.Err() == nil {
			d.log.Warn("pruning the archive", "err", err)
			continue
		}
		d.log.Info("archive pruned", "report", rep)
	}
}
