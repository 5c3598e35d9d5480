// Package pgcluster runs private PostgreSQL 15 clusters: for `walship
// demo`'s throwaway source database, and, through package pgtest, for
// tests and benchmarks. It is a package of its own, not a test helper,
// because the demo ships in the walship binary.
//
// A cluster lives in its own directory: data dir, unix socket dir and server
// log. It listens on a free loopback port and the unix socket only, with
// wal_level=logical and room for replication slots and WAL senders, and trusts
// local and 127.0.0.1 connections except for roles made with a password by
// CreateRole, which must authenticate (for error tests).
//
// initdb runs once per machine: the result is cached as a template under
// os.TempDir()/walship-pgtemplate-15 (built under a file lock, so concurrent
// processes share it) and copied for each cluster, which makes New take
// well under a second plus the server's own start-up.
//
// PostgreSQL refuses to run as root. When the process runs as root, every
// server binary runs through `runuser -u postgres --` and the cluster
// directory is owned by postgres.
package pgcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// How to install the server when it is missing, said in every start error.
const installHint = "PostgreSQL 15 server binaries are needed (Debian: apt-get install postgresql-15; " +
	"or run scripts/deps.sh); pg_config --bindir must name them"

// passwordGroup is the role whose members must authenticate with a password
// (pg_hba.conf rule); CreateRole with a password adds the new role to it.
const passwordGroup = "walship_password_auth"

type options struct {
	fsync    bool
	settings [][2]string
}

// Option configures a cluster.
type Option func(*options)

// WithoutFsync turns fsync, synchronous_commit and full_page_writes off:
// faster, but a server crash or SIGKILL may lose or corrupt data. Never use it
// in tests that restart or kill the server and expect data to survive.
func WithoutFsync() Option { return func(o *options) { o.fsync = false } }

// WithSetting adds one postgresql.conf setting (value as written in the file,
// e.g. "'16MB'" or "on"); later settings override earlier ones and the
// defaults.
func WithSetting(name, value string) Option {
	return func(o *options) { o.settings = append(o.settings, [2]string{name, value}) }
}

// Cluster is one private PostgreSQL server. Its methods are safe for
// concurrent use.
type Cluster struct {
	dir     string // owned cluster directory: data/, server.log
	data    string
	sockDir string
	ownSock bool // sockDir was created outside dir and is removed by Close
	port    int
	bin     string
	asPG    bool // run server binaries as the postgres user

	mu      sync.Mutex
	running bool
	closed  bool
}

// New creates and starts a cluster in dir (created if absent; its data goes
// to dir/data, its log to dir/server.log). Close stops it; nothing outside dir
// is left behind (a socket dir made elsewhere because dir's path is too long
// for a unix socket is removed by Close). dir and its parents must be
// searchable by the postgres user when running as root.
func New(dir string, opts ...Option) (*Cluster, error) {
	o := options{fsync: true}
	for _, opt := range opts {
		opt(&o)
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	c := &Cluster{dir: dir, data: filepath.Join(dir, "data"), bin: bin, asPG: os.Geteuid() == 0}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if c.asPG {
		if err := searchable(filepath.Dir(dir)); err != nil {
			return nil, err
		}
	}
	if _, err := os.Stat(c.data); err == nil {
		return nil, fmt.Errorf("pgcluster: %s already exists: New wants a fresh directory", c.data)
	}
	// Unix socket paths are limited to 107 bytes: "/.s.PGSQL.65535" needs 15.
	c.sockDir = filepath.Join(dir, "s")
	if len(c.sockDir)+16 > 107 {
		if c.sockDir, err = os.MkdirTemp("", "pgs"); err != nil {
			return nil, err
		}
		c.ownSock = true
	} else if err := os.Mkdir(c.sockDir, 0o755); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok && c.ownSock {
			os.RemoveAll(c.sockDir)
		}
	}()

	tmpl, err := template(bin)
	if err != nil {
		return nil, err
	}
	if out, err := exec.Command("cp", "-a", tmpl, c.data).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("pgcluster: copy template %s: %v: %s", tmpl, err, out)
	}
	if err := c.writeConfig(o); err != nil {
		return nil, err
	}
	if c.asPG {
		if err := chownPostgres(dir, c.sockDir); err != nil {
			return nil, err
		}
	}
	// A free port can be taken between probe and bind: retry a few times.
	for attempt := 0; ; attempt++ {
		if c.port, err = freePort(); err != nil {
			return nil, err
		}
		if err = c.setPort(); err != nil {
			return nil, err
		}
		err = c.Start()
		if err == nil || attempt == 3 || !strings.Contains(err.Error(), "could not bind") {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	ok = true
	return c, nil
}

// binDir finds the server binaries: pg_config --bindir, else the Debian path.
func binDir() (string, error) {
	candidates := []string{}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		candidates = append(candidates, strings.TrimSpace(string(out)))
	}
	candidates = append(candidates, "/usr/lib/postgresql/15/bin")
	for _, d := range candidates {
		if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
			if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
				return d, nil
			}
		}
	}
	return "", fmt.Errorf("pgcluster: no postgres/initdb found in %v: %s", candidates, installHint)
}

// command builds an exec.Cmd for a server binary, as postgres when root.
func (c *Cluster) command(name string, args ...string) *exec.Cmd {
	return pgCommand(c.asPG, c.dir, filepath.Join(c.bin, name), args...)
}

func pgCommand(asPG bool, dir, path string, args ...string) *exec.Cmd {
	var cmd *exec.Cmd
	if asPG {
		cmd = exec.Command("runuser", append([]string{"-u", "postgres", "--", path}, args...)...)
	} else {
		cmd = exec.Command(path, args...)
	}
	cmd.Dir = dir
	// Keep the server out of the test's process group signals (Ctrl-C goes
	// to the test; Cleanup stops the server).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

// template returns the cached initdb'ed data dir, building it once.
func template(bin string) (string, error) {
	base := filepath.Join(os.TempDir(), "walship-pgtemplate-15")
	data := filepath.Join(base, "data")
	marker := filepath.Join(base, "ready")
	if _, err := os.Stat(marker); err == nil {
		return data, nil
	}
	lock, err := os.OpenFile(base+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", fmt.Errorf("pgcluster: template lock: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("pgcluster: template lock: %w", err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if _, err := os.Stat(marker); err == nil {
		return data, nil // built by another process while we waited
	}
	os.RemoveAll(base)
	if err := os.MkdirAll(base, 0o755); err != nil {
		return "", err
	}
	asPG := os.Geteuid() == 0
	if asPG {
		if err := chownPostgres(base); err != nil {
			return "", err
		}
	}
	cmd := pgCommand(asPG, base, filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres",
		"-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync", "--no-instructions")
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(base)
		return "", fmt.Errorf("pgcluster: initdb: %v: %s\n%s", err, bytes.TrimSpace(out), installHint)
	}
	if err := os.WriteFile(marker, []byte("ok\n"), 0o644); err != nil {
		return "", err
	}
	return data, nil
}

func chownPostgres(paths ...string) error {
	u, err := user.Lookup("postgres")
	if err != nil {
		return fmt.Errorf("pgcluster: running as root needs a postgres user: %w (%s)", err, installHint)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	for _, p := range paths {
		err := filepath.Walk(p, func(path string, _ os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(path, uid, gid)
		})
		if err != nil {
			return fmt.Errorf("pgcluster: chown %s to postgres: %w", p, err)
		}
	}
	return nil
}

// searchable checks that the postgres user can reach dir: every directory
// from / down must be searchable by others (postgres is not its owner).
func searchable(dir string) error {
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("pgcluster: directory %s is not searchable by the postgres user (mode %v): "+
				"PostgreSQL runs as postgres, so every parent of the cluster directory needs o+x", d, fi.Mode().Perm())
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgcluster: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// writeConfig appends walship's settings to postgresql.conf (later lines win)
// and replaces pg_hba.conf.
func (c *Cluster) writeConfig(o options) error {
	onOff := map[bool]string{true: "on", false: "off"}
	var b strings.Builder
	b.WriteString("\n# pgcluster\n")
	set := func(k, v string) { fmt.Fprintf(&b, "%s = %s\n", k, v) }
	set("listen_addresses", "'127.0.0.1'")
	set("unix_socket_directories", quoteConf(c.sockDir))
	set("wal_level", "logical")
	set("max_replication_slots", "20")
	set("max_wal_senders", "20")
	set("max_connections", "60")
	set("shared_buffers", "'64MB'")
	set("max_wal_size", "'2GB'")
	set("fsync", onOff[o.fsync])
	set("synchronous_commit", onOff[o.fsync])
	set("full_page_writes", onOff[o.fsync])
	set("logging_collector", "off")
	set("log_min_messages", "warning")
	set("dynamic_shared_memory_type", "posix")
	for _, s := range o.settings {
		set(s[0], s[1])
	}
	f, err := os.OpenFile(filepath.Join(c.data, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(b.String()); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	hba := "# pgcluster: trust everything local except members of " + passwordGroup + "\n" +
		"local all all trust\n" +
		"local replication all trust\n" +
		"host all +" + passwordGroup + " 127.0.0.1/32 scram-sha-256\n" +
		"host replication +" + passwordGroup + " 127.0.0.1/32 scram-sha-256\n" +
		"host all all 127.0.0.1/32 trust\n" +
		"host replication all 127.0.0.1/32 trust\n"
	return os.WriteFile(filepath.Join(c.data, "pg_hba.conf"), []byte(hba), 0o600)
}

// setPort writes the port into postgresql.conf (the last port line wins).
func (c *Cluster) setPort() error {
	f, err := os.OpenFile(filepath.Join(c.data, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(f, "port = %d\n", c.port)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func quoteConf(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// DSN returns a URL for database db as the postgres superuser over TCP.
func (c *Cluster) DSN(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.port, url.PathEscape(db))
}

// Port returns the TCP port; it stays the same across Stop and Start.
func (c *Cluster) Port() int { return c.port }

// SocketDir returns the unix socket directory.
func (c *Cluster) SocketDir() string { return c.sockDir }

// DataDir returns the data directory.
func (c *Cluster) DataDir() string { return c.data }

// BinDir returns the directory of the server binaries (pg_recvlogical, psql, ...).
func (c *Cluster) BinDir() string { return c.bin }

// Command returns a command running the PostgreSQL binary name (e.g.
// "pg_recvlogical") from BinDir, as the postgres user when root.
func (c *Cluster) Command(name string, args ...string) *exec.Cmd { return c.command(name, args...) }

// Start starts the server (again) on the same port, waiting until it accepts
// connections. Starting a running cluster is a no-op.
func (c *Cluster) Start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.New("pgcluster: cluster closed")
	}
	if c.running {
		return nil
	}
	logFile := filepath.Join(c.dir, "server.log")
	out, err := c.command("pg_ctl", "-D", c.data, "-l", logFile, "-w", "-t", "120", "start").CombinedOutput()
	if err != nil {
		return fmt.Errorf("pgcluster: pg_ctl start (port %d, dir %s): %v: %s\nserver log:\n%s",
			c.port, c.dir, err, bytes.TrimSpace(out), tail(logFile, 20))
	}
	c.running = true
	return nil
}

// Stop shuts the server down (fast mode: clients disconnected, a clean
// checkpoint written); the data are kept for Start.
func (c *Cluster) Stop() error { return c.stop("fast") }

// Crash stops the server in immediate mode, like a power cut for the server
// process (no checkpoint; crash recovery runs at the next Start). Data
// committed with fsync on survive.
func (c *Cluster) Crash() error { return c.stop("immediate") }

func (c *Cluster) stop(mode string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.running {
		return nil
	}
	out, err := c.command("pg_ctl", "-D", c.data, "-m", mode, "-w", "-t", "120", "stop").CombinedOutput()
	if err != nil {
		return fmt.Errorf("pgcluster: pg_ctl stop -m %s: %v: %s", mode, err, bytes.TrimSpace(out))
	}
	c.running = false
	return nil
}

// Close stops the server and removes a socket dir made outside the cluster
// directory; the cluster directory itself is left to the caller. Idempotent.
func (c *Cluster) Close() error {
	err := c.Stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	if c.ownSock {
		os.RemoveAll(c.sockDir)
	}
	return err
}

// Connect opens a connection to database db as postgres.
func (c *Cluster) Connect(ctx context.Context, db string) (*pgx.Conn, error) {
	return pgx.Connect(ctx, c.DSN(db))
}

// CreateDB creates database name.
func (c *Cluster) CreateDB(ctx context.Context, name string) error {
	return c.exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
}

// CreateRole creates a login role with the given attributes (e.g.
// "REPLICATION", "SUPERUSER", "CREATEDB"). With a non-empty password the role
// must authenticate with it over TCP (scram-sha-256); without, it is trusted
// like every other role.
func (c *Cluster) CreateRole(ctx context.Context, name, password string, attrs ...string) error {
	for _, a := range attrs {
		for _, r := range a {
			if (r < 'A' || r > 'Z') && r != '_' {
				return fmt.Errorf("pgcluster: CreateRole: bad attribute %q", a)
			}
		}
	}
	sql := "CREATE ROLE " + pgx.Identifier{name}.Sanitize() + " LOGIN " + strings.Join(attrs, " ")
	if password != "" {
		if err := c.exec(ctx, `DO $$ BEGIN CREATE ROLE `+passwordGroup+` NOLOGIN;
			EXCEPTION WHEN duplicate_object THEN NULL; END $$`); err != nil {
			return err
		}
		sql += " PASSWORD '" + strings.ReplaceAll(password, "'", "''") + "' IN ROLE " + passwordGroup
	}
	return c.exec(ctx, sql)
}

func (c *Cluster) exec(ctx context.Context, sql string) error {
	conn, err := c.Connect(ctx, "postgres")
	if err != nil {
		return fmt.Errorf("pgcluster: connect: %w", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("pgcluster: %s: %w", firstLine(sql), err)
	}
	return nil
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// tail returns the last n lines of a file, for error messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// WaitReady polls until the server accepts a query or ctx ends.
func (c *Cluster) WaitReady(ctx context.Context) error {
	for {
		conn, err := c.Connect(ctx, "postgres")
		if err == nil {
			conn.Close(context.Background())
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pgcluster: server on port %d not ready: %w", c.port, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
