package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	toxiclient "github.com/Shopify/toxiproxy/v2/client"

	"github.com/walship/walship/internal/miniotest"
)

// leaseLength is ha.lease of every member: short, so that a run sees many
// takeovers, yet at least the contract's minimum of 1s.
const leaseLength = 2 * time.Second

// member is one `walship run` of the group, its proxies and its
// supervisor's record.
type member struct {
	name     string
	dir      string // the member's own directory: config, logs
	walDir   string
	config   string
	args     []string // the walship command line
	httpAddr string   // operator listener: /v1/positions
	srcAddr  string   // source.http: POST /v1/append
	pg       *toxiclient.Proxy
	s3       *s3Proxy          // the archive's HTTP fault proxy and PUT log
	s3toxi   *toxiclient.Proxy // in front of s3: the member's TCP connections to the archive
	kafka    *kafkaView
	disk     string // the tmpfs that holds wal.dir ("" without namespaces)

	mu struct {
		sync.Mutex
		cmd     *exec.Cmd
		starts  int
		wipe    bool // host loss: remove wal.dir before the next start
		planned string
		exits   []exit
	}
	exited chan exit // every exit, as it happens (buffered; the nemesis reads it)
}

// exit is one end of a member's process, as the supervisor saw it.
type exit struct {
	member  string
	at      time.Time
	code    int    // -1 when a signal ended it
	signal  string // the signal, if one did
	planned string // the fault that ended it on purpose, "" if none
}

func (e exit) String() string {
	s := fmt.Sprintf("%s exit %d", e.member, e.code)
	if e.signal != "" {
		s += " (" + e.signal + ")"
	}
	if e.planned != "" {
		s += " [" + e.planned + "]"
	}
	return s
}

// newMember writes the member's configuration. Every member has the same
// source, kafka (none in an archive-only group) and archive sections; only the directories, listeners,
// proxies and ha.name differ (docs/CONFIG.md, the operator contract).
func newMember(t *testing.T, s *servers, root, name string, ha bool) *member {
	t.Helper()
	m := &member{name: name, dir: filepath.Join(root, name), exited: make(chan exit, 64)}
	m.walDir = filepath.Join(m.dir, "wal")
	m.httpAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	m.srcAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	if err := os.MkdirAll(m.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if s.ns {
		m.disk = filepath.Join(m.dir, "disk")
		mountTmpfs(t, m.disk)
		// A subdirectory: a host loss removes wal.dir, never the mount point.
		m.walDir = filepath.Join(m.disk, "wal")
	}
	var pgAddr, s3Addr string
	m.pg, pgAddr = s.proxy(t, "pg-"+name, fmt.Sprintf("127.0.0.1:%d", s.pg.Port()))
	m.s3 = newS3Proxy(t, name, s.minio.Endpoint)
	// Toxiproxy in front of the HTTP proxy: the member's own connections are
	// cut and sliced, and the PUT log still sees every request MinIO gets.
	m.s3toxi, s3Addr = s.proxy(t, "s3-"+name, m.s3.addr)
	m.kafka = s.kafkaView(t, name)
	// An archive-only group has no kafka section: the archive is the sink
	// that counts for shipped, and the group's lease and history.
	shipped, kafka := "archive", ""
	if s.kafka != nil {
		shipped = "kafka"
		kafka = fmt.Sprintf("kafka: {brokers: [%s], topic_prefix: %s, mode: ordered}\n", quoted(m.kafka.seeds), topicPrefix)
	}
	y := fmt.Sprintf(`wal: {dir: %q, sync: shipped, shipped_sinks: [%s], segment_size: 1MiB, zero_fill: false}
source:
  postgres: {dsn: "postgres://postgres@%s/%s?sslmode=disable&connect_timeout=5", tables: [public.accounts], heartbeat: 1s, status_interval: 200ms}
  http: {listen: %q, sync_timeout: 20s}
archive: {url: "s3://%s/%s", timeout: 1s, s3: {endpoint: %q, path_style: true, region: %s, access_key: %s, secret_key: %s}}
%shttp: {listen: %q}
log: {format: json, level: info}
`, m.walDir, shipped, pgAddr, bankDB, m.srcAddr, s.bucket, archiveRoot, "http://"+s3Addr, miniotest.Region, miniotest.AccessKey, miniotest.SecretKey,
		kafka, m.httpAddr)
	if ha {
		y += fmt.Sprintf("ha: {name: %s, lease: %s}\n", name, leaseLength)
	}
	m.writeConfig(t, "run", y)
	return m
}

// newConsumer writes the configuration of the `walship consume` that keeps
// a SQLite replica from the ordered topic; it runs under the same
// supervisor as the members.
func newConsumer(t *testing.T, s *servers, root, db string) *member {
	t.Helper()
	m := &member{name: "consume", dir: filepath.Join(root, "consume"), exited: make(chan exit, 64)}
	m.httpAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	if err := os.MkdirAll(m.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	m.kafka = s.kafkaView(t, m.name)
	m.writeConfig(t, "consume", fmt.Sprintf("kafka: {brokers: [%s], topic_prefix: %s}\nreplica: {url: \"sqlite://%s\"}\nhttp: {listen: %q}\nlog: {format: json}\n",
		quoted(m.kafka.seeds), topicPrefix, db, m.httpAddr))
	return m
}

// quoted is a YAML flow sequence's items: every string quoted.
func quoted(ss []string) string {
	var q []string
	for _, s := range ss {
		q = append(q, strconv.Quote(s))
	}
	return strings.Join(q, ", ")
}

func (m *member) writeConfig(t *testing.T, cmd, y string) {
	t.Helper()
	m.config = filepath.Join(m.dir, "walship.yaml")
	if err := os.WriteFile(m.config, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	m.args = []string{cmd, "--config", m.config}
}

// supervise runs the member until ctx ends, starting it again whenever it
// exits, as systemd's Restart=always would (with RestartSec=200ms). Every
// exit is recorded with its code. It returns once the last process is gone.
func (m *member) supervise(ctx context.Context, t *testing.T) {
	logf, err := os.OpenFile(filepath.Join(m.dir, "walship.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Errorf("%s: %v", m.name, err)
		return
	}
	defer logf.Close()
	for ctx.Err() == nil {
		m.mu.Lock()
		if m.mu.wipe {
			// The host's disk is gone: the member comes back empty and must
			// rebuild its log from the group's topic.
			if err := os.RemoveAll(m.walDir); err != nil {
				t.Errorf("%s: host loss: %v", m.name, err)
			}
			m.mu.wipe = false
		}
		if m.disk != "" {
			if err := keepDiverged(m); err != nil {
				t.Errorf("%s: %v", m.name, err)
			}
		}
		name, args := m.kafka.command(walshipBin, m.args...)
		cmd := exec.Command(name, args...)
		cmd.Stdout, cmd.Stderr = logf, logf
		// Its own process group, so a SIGSTOP of the member stops no one else;
		// Pdeathsig so a crashed test leaves no member behind.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		fmt.Fprintf(logf, "=== chaos supervisor: start %d at %s\n", m.mu.starts+1, time.Now().Format(time.RFC3339Nano))
		if err := cmd.Start(); err != nil {
			m.mu.Unlock()
			t.Errorf("%s: start: %v", m.name, err)
			return
		}
		m.mu.cmd = cmd
		m.mu.starts++
		m.mu.Unlock()

		done := make(chan struct{})
		go func() {
			select {
			case <-ctx.Done():
				// The end of the run: a clean stop, as systemctl stop does.
				_ = cmd.Process.Signal(syscall.SIGTERM)
				select {
				case <-done:
				case <-time.After(30 * time.Second):
					_ = cmd.Process.Kill()
				}
			case <-done:
			}
		}()
		_ = cmd.Wait()
		close(done)
		e := exit{member: m.name, at: time.Now(), code: cmd.ProcessState.ExitCode()}
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			e.signal = ws.Signal().String()
		}
		m.mu.Lock()
		e.planned, m.mu.planned = m.mu.planned, ""
		m.mu.cmd = nil
		m.mu.exits = append(m.mu.exits, e)
		m.mu.Unlock()
		fmt.Fprintf(logf, "=== chaos supervisor: %s at %s\n", e, e.at.Format(time.RFC3339Nano))
		select {
		case m.exited <- e:
		default:
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// signal sends sig to the member's current process, naming the fault that
// did it so its exit is recorded as planned. It reports whether a process
// was there to receive it.
func (m *member) signal(sig syscall.Signal, fault string, wipe bool) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.mu.cmd == nil {
		return false
	}
	if sig == syscall.SIGKILL {
		m.mu.planned = fault
		m.mu.wipe = wipe
	}
	return m.mu.cmd.Process.Signal(sig) == nil
}

func (m *member) exits() []exit {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]exit(nil), m.mu.exits...)
}

// status is what a member's /v1/positions says (the operator contract's
// fields; durable_lsn is today's name of the log position).
type status struct {
	Role       string            `json:"role"`
	DurableLSN uint64            `json:"durable_lsn"`
	Durable    uint64            `json:"durable"`
	Sinks      map[string]uint64 `json:"sinks"`
	HA         struct {
		Name      string `json:"name"`
		Term      int64  `json:"term"`
		Leader    string `json:"leader"`
		ExpiresMS int64  `json:"lease_expires_in_ms"`
	} `json:"ha"`
}

func (s status) durable() uint64 { return max(s.DurableLSN, s.Durable) }

var pollClient = &http.Client{Timeout: 500 * time.Millisecond}

// positions asks the member for its /v1/positions.
func (m *member) positions(ctx context.Context) (status, error) {
	var st status
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+m.httpAddr+"/v1/positions", nil)
	if err != nil {
		return st, err
	}
	resp, err := pollClient.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("%s /v1/positions: %s", m.name, resp.Status)
	}
	err = json.NewDecoder(resp.Body).Decode(&st)
	return st, err
}

// logTail returns the last line the member's processes wrote before the
// supervisor's last note, for failure messages.
func (m *member) logTail() string {
	b, err := os.ReadFile(filepath.Join(m.dir, "walship.log"))
	if err != nil {
		return err.Error()
	}
	var last string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if !strings.HasPrefix(l, "=== chaos supervisor") {
			last = l
		}
	}
	return clip(last)
}
