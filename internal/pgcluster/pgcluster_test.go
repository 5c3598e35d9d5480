package pgcluster

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestStartConnectRestartKeepsData(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := start(t)
	if err := c.CreateDB(ctx, "app db"); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, c.DSN("app db"))
	if err != nil {
		t.Fatal(err)
	}
	var walLevel, slots string
	if err := conn.QueryRow(ctx, "SELECT current_setting('wal_level'), current_setting('max_replication_slots')").
		Scan(&walLevel, &slots); err != nil {
		t.Fatal(err)
	}
	if walLevel != "logical" || slots != "20" {
		t.Fatalf("wal_level=%s max_replication_slots=%s, want logical, 20", walLevel, slots)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'kept')"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)

	port := c.Port()
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := pgx.Connect(ctx, c.DSN("app db")); err == nil {
		t.Fatal("connected to a stopped cluster")
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	if c.Port() != port {
		t.Fatalf("port changed %d -> %d", port, c.Port())
	}
	conn, err = pgx.Connect(ctx, c.DSN("app db"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var v string
	if err := conn.QueryRow(ctx, "SELECT v FROM t WHERE id = 1").Scan(&v); err != nil || v != "kept" {
		t.Fatalf("after restart: v=%q err=%v, want kept", v, err)
	}
}

func TestCrashKeepsCommittedData(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := start(t)
	conn, err := c.Connect(ctx, "postgres")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 1000)"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	if err := c.Crash(); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	conn, err = c.Connect(ctx, "postgres")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil || n != 1000 {
		t.Fatalf("after crash: n=%d err=%v, want 1000", n, err)
	}
}

func TestPasswordRoleMustAuthenticate(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := start(t, WithoutFsync())
	if err := c.CreateRole(ctx, "secret", "s3cr'et", "REPLICATION"); err != nil {
		t.Fatal(err)
	}
	if err := c.CreateRole(ctx, "plain", ""); err != nil {
		t.Fatal(err)
	}
	base := strings.Replace(c.DSN("postgres"), "postgres@", "%s@", 1)
	if _, err := pgx.Connect(ctx, strings.Replace(base, "%s@", "secret@", 1)); err == nil ||
		!strings.Contains(err.Error(), "password") {
		t.Fatalf("no password: err=%v, want a password error", err)
	}
	conn, err := pgx.Connect(ctx, strings.Replace(base, "%s@", "secret:s3cr%27et@", 1))
	if err != nil {
		t.Fatalf("with password: %v", err)
	}
	conn.Close(ctx)
	conn, err = pgx.Connect(ctx, strings.Replace(base, "%s@", "plain@", 1))
	if err != nil {
		t.Fatalf("trusted role: %v", err)
	}
	conn.Close(ctx)
	if err := c.CreateRole(ctx, "x", "", "SUPERUSER; DROP"); err == nil {
		t.Fatal("bad attribute accepted")
	}
}

func TestNewInLongDirAndClose(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	root, err := os.MkdirTemp("", "walship-pgnew-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(root)
	if os.Geteuid() == 0 {
		if _, err := New(filepath.Join(root, "x")); err == nil || !strings.Contains(err.Error(), "not searchable") {
			t.Fatalf("cluster under a 0700 dir: err=%v, want not searchable", err)
		}
		os.Chmod(root, 0o755)
	}
	dir := filepath.Join(root, strings.Repeat("long-directory-name-", 5))
	c, err := New(dir, WithoutFsync())
	if err != nil {
		t.Fatal(err)
	}
	sock := c.SocketDir()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Fatalf("socket dir %s left behind: %v", sock, err)
	}
	if _, err := New(dir); err == nil {
		t.Fatal("New over an existing data dir succeeded")
	}
}

// start is pgtest.Start, which this package cannot import: a fresh
// cluster, closed and removed when the test ends.
func start(t *testing.T, opts ...Option) *Cluster {
	t.Helper()
	dir, err := os.MkdirTemp("", "walship-pg-")
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(dir, opts...)
	if err != nil {
		os.RemoveAll(dir)
		t.Fatalf("cannot start PostgreSQL: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
		os.RemoveAll(dir)
	})
	return c
}
