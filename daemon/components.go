package daemon

import (
	"context"
	"fmt"
	"log/slog"

	"encoding/json"
	"errors"
	"github.com/walship/walship/archive"
	"github.com/walship/walship/config"
	"github.com/walship/walship/internal/seal"
	"github.com/walship/walship/internal/secret"
	"github.com/walship/walship/kafkasink"
	"net/http"
)

func (d *Daemon) buildPostgres(ctx context.Context) error {
	return errors.New("source.postgres: not available in this build")
}

// Lineage is the lineage id the daemon archives and ships under.
const Lineage = "main"

func (d *Daemon) buildSinks(ctx context.Context) error {
	if a := d.cfg.Archive; a != nil {
		ar, err := OpenArchive(ctx, a, d.log)
		if err != nil {
			return err
		}
		arc, err := archive.NewArchiver(ar, d.wal, d.sinkCkpts, archive.ArchiverOptions{Lineage: Lineage, Timeout: a.Timeout, Logger: d.log})
		if err != nil {
			return fmt.Errorf("archive: %w", err)
		}
		d.archiver = arc
		d.sinks = append(d.sinks, component{"archive", arc.Run})
	}
	if k := d.cfg.Kafka; k != nil {
		ks, err := kafkasink.New(KafkaSinkConfig(k, d.log), d.wal, d.sinkCkpts, Lineage)
		if err != nil {
			return fmt.Errorf("kafka: %w", err)
		}
		d.kafka = ks
		d.sinks = append(d.sinks, component{"kafka", ks.Run})
	}
	return nil
}

// OpenArchive opens the archive of an archive: section, with its S3
// settings and client-side encryption key.
func OpenArchive(ctx context.Context, a *config.Archive, log *slog.Logger) (*archive.Archive, error) {
	opts := archive.Options{Logger: log, Backend: archive.BackendOptions{Endpoint: a.S3.Endpoint, Region: a.S3.Region,
		PathStyle: a.S3.PathStyle, AccessKey: a.S3.AccessKey, SecretKey: a.S3.SecretKey, CAFile: a.S3.CAFile, Logger: log}}
	if a.EncryptionKeyFile != "" || a.EncryptionKeyEnv != "" {
		var key seal.Key
		var err error
		if a.EncryptionKeyFile != "" {
			key, err = seal.LoadKeyFile(a.EncryptionKeyFile)
		} else {
			key, err = seal.LoadKeyEnv(a.EncryptionKeyEnv)
		}
		if err != nil {
			return nil, fmt.Errorf("archive encryption key: %w", err)
		}
		s, err := seal.New(seal.Options{}, key)
		if err != nil {
			return nil, fmt.Errorf("archive encryption key: %w", err)
		}
		opts.Seal = s
	}
	ar, err := archive.Open(ctx, a.URL, opts)
	if err != nil {
		return nil, fmt.Errorf("archive.url %s: %w", secret.URL(a.URL), err)
	}
	return ar, nil
}

// KafkaSinkConfig maps the kafka: section to the sink's config.
func KafkaSinkConfig(k *config.Kafka, log *slog.Logger) kafkasink.Config {
	return kafkasink.Config{Brokers: k.Brokers, TopicPrefix: k.TopicPrefix, Mode: k.Mode, Compression: k.Compression,
		Linger: k.Linger, Tombstones: k.Tombstones, Logger: log,
		TLS: kafkasink.TLSConfig{Enabled: k.TLS.Enabled, CAFile: k.TLS.CAFile, CertFile: k.TLS.CertFile, KeyFile: k.TLS.KeyFile,
			InsecureSkipVerify: k.TLS.InsecureSkipVerify},
		SASL: kafkasink.SASLConfig{Mechanism: k.SASL.Mechanism, Username: k.SASL.Username, Password: k.SASL.Password}}
}

// buildHTTP binds the operator listener: /healthz, /readyz, /v1/positions.
func (d *Daemon) buildHTTP() error {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-d.ready:
		default:
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		if d.retention.overLimit.Load() {
			http.Error(w, "wal.max_bytes exceeded: a sink is behind", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("/v1/positions", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(d.Positions())
	})
	_, err := d.listen("http", d.cfg.HTTP.Listener, mux)
	return err
}

// Positions is a summary of where every part of the pipeline is.
type Positions struct {
	DurableLSN uint64            `json:"durable_lsn"`
	FirstLSN   uint64            `json:"first_lsn"`
	WALBytes   int64             `json:"wal_bytes"`
	Sinks      map[string]uint64 `json:"sinks"`
}

// Positions returns the current positions.
func (d *Daemon) Positions() Positions {
	p := Positions{DurableLSN: d.wal.Durable(), FirstLSN: d.wal.Log.FirstLSN(), WALBytes: d.retention.walBytes.Load(), Sinks: map[string]uint64{}}
	for _, c := range d.sinkCkpts.All() {
		p.Sinks[c.Name] = c.Pos
	}
	return p
}
