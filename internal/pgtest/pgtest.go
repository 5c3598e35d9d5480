// Package pgtest gives tests and benchmarks private PostgreSQL 15
// clusters (package pgcluster, which runs them) that live as long as the
// test. It names pgcluster's types and options too, so a test needs only
// this import.
package pgtest

import (
	"os"
	"testing"

	"github.com/walship/walship/internal/pgcluster"
)

// Cluster is one private PostgreSQL server; see pgcluster.Cluster.
type Cluster = pgcluster.Cluster

// Option configures a cluster.
type Option = pgcluster.Option

// WithoutFsync is pgcluster.WithoutFsync: faster, but a server crash or
// SIGKILL may lose or corrupt data.
func WithoutFsync() Option { return pgcluster.WithoutFsync() }

// WithSetting is pgcluster.WithSetting: one postgresql.conf setting.
func WithSetting(name, value string) Option { return pgcluster.WithSetting(name, value) }

// New is pgcluster.New: a cluster in dir that the caller closes.
func New(dir string, opts ...Option) (*Cluster, error) { return pgcluster.New(dir, opts...) }

// Start starts a fresh cluster for the test, with fsync on unless
// WithoutFsync is given. It is stopped and its directory removed by
// t.Cleanup. It fails the test, saying why and how to get PostgreSQL, if the
// cluster cannot start.
func Start(t testing.TB, opts ...Option) *Cluster {
	t.Helper()
	dir, err := os.MkdirTemp("", "walship-pg-")
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	c, err := pgcluster.New(dir, opts...)
	if err != nil {
		os.RemoveAll(dir)
		t.Fatalf("pgtest: cannot start PostgreSQL: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("pgtest: %v", err)
		}
		os.RemoveAll(dir)
	})
	return c
}
