package replica

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/walship/walship/internal/pgtest"
)

// One PostgreSQL cluster serves every test of the package (a database per
// test); it starts on first use.
var pg struct {
	once    sync.Once
	cluster *pgtest.Cluster
	dir     string
	err     error
	n       atomic.Int64
}

func TestMain(m *testing.M) {
	code := m.Run()
	if pg.cluster != nil {
		pg.cluster.Close()
		os.RemoveAll(pg.dir)
	}
	os.Exit(code)
}

// pgURL returns the URL of a new, empty database for t. It fails the test
// if PostgreSQL cannot start.
func pgURL(t testing.TB) string {
	t.Helper()
	pg.once.Do(func() {
		pg.dir, pg.err = os.MkdirTemp("", "walship-replica-pg-")
		if pg.err != nil {
			return
		}
		if pg.err = os.Chmod(pg.dir, 0o755); pg.err != nil {
			return
		}
		pg.cluster, pg.err = pgtest.New(pg.dir, pgtest.WithoutFsync())
	})
	if pg.err != nil {
		t.Fatalf("cannot start PostgreSQL 15 (its binaries come with the machine image; see docs/DESIGN.md §6.1 and scripts/deps.sh): %v", pg.err)
	}
	name := fmt.Sprintf("r%d", pg.n.Add(1))
	if err := pg.cluster.CreateDB(context.Background(), name); err != nil {
		t.Fatalf("create database: %v", err)
	}
	return pg.cluster.DSN(name)
}

// backends runs f against a fresh SQLite replica and a fresh Postgres one.
func backends(t *testing.T, f func(t *testing.T, url string)) {
	t.Run("sqlite", func(t *testing.T) { f(t, sqliteURL(t)) })
	t.Run("postgres", func(t *testing.T) { f(t, pgURL(t)) })
}
