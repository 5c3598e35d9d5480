package chaos

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	toxiclient "github.com/Shopify/toxiproxy/v2/client"
	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/walship/walship/internal/miniotest"
	"github.com/walship/walship/internal/pgtest"
)

// servers are the shared dependencies of the group, each with the knob the
// nemesis turns.
type servers struct {
	pg    *pgtest.Cluster
	kafka *kfake.Cluster
	// brokers are the addresses the brokers advertise, one per broker.
	brokers []string
	// direct is the host file that resolves the brokers' names to the
	// brokers themselves: the suite's own readers use it.
	direct string
	// ns: this machine lets the suite give each process its own mount
	// namespace (and so its own /etc/hosts) and mount a tmpfs. Without it
	// every member reaches Kafka through the same proxies and disk-full is
	// left out (said loudly in the log and the summary).
	ns     bool
	nsWhy  string // why not, when !ns
	views  int    // Kafka views handed out so far
	shared *kafkaView
	minio  *miniotest.Server
	toxi   *toxiclient.Client
	bucket string
	dir    string
}

const (
	bankDB      = "bank"
	topicPrefix = "chaos"
	numBrokers  = 3
	// brokerHost is the name broker i advertises (with %d its index): each
	// member resolves it, through its own /etc/hosts, to its own proxies.
	brokerHost = "walship-chaos-kafka-%d"
)

// startServers starts the group's dependencies; an archive-only group
// (withKafka false) gets no Kafka cluster.
func startServers(t *testing.T, dir string, withKafka bool) *servers {
	t.Helper()
	ctx := context.Background()
	s := &servers{bucket: "chaos", dir: dir}
	s.nsWhy = probeNamespaces(dir)
	s.ns = s.nsWhy == ""
	if !s.ns {
		t.Logf("WARNING: %s: every member reaches Kafka through the same proxies (the Kafka faults hit the whole group, not only the leader) and disk-full is left out of the plan", s.nsWhy)
	}
	// fsync stays on: the nemesis restarts PostgreSQL in immediate mode and
	// the bank's committed transfers must survive it.
	s.pg = pgtest.Start(t, pgtest.WithSetting("max_wal_senders", "20"), pgtest.WithSetting("max_replication_slots", "10"))
	if err := s.pg.CreateDB(ctx, bankDB); err != nil {
		t.Fatal(err)
	}
	s.toxi = startToxiproxy(t)
	if withKafka {
		s.startKafka(t)
	}
	s.minio = miniotest.Start(t, miniotest.Options{})
	if err := s.minio.MakeBucket(ctx, s.bucket); err != nil {
		t.Fatal(err)
	}
	return s
}

// probeNamespaces says why the suite cannot give a process its own mount
// namespace and mount a tmpfs on this machine ("" if it can): it tries
// both, as the members and disk-full will.
func probeNamespaces(dir string) string {
	mnt := filepath.Join(dir, "probe-tmpfs")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return err.Error()
	}
	defer os.Remove(mnt)
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m"); err != nil {
		return fmt.Sprintf("mount -t tmpfs %s: %v (the suite needs root with CAP_SYS_ADMIN)", mnt, err)
	}
	if err := syscall.Unmount(mnt, 0); err != nil {
		return fmt.Sprintf("umount %s: %v", mnt, err)
	}
	hosts := filepath.Join(dir, "probe-hosts")
	if err := os.WriteFile(hosts, []byte("127.0.0.1 walship-chaos-probe\n"), 0o644); err != nil {
		return err.Error()
	}
	defer os.Remove(hosts)
	name, args := nsCommand(hosts, "getent", "hosts", "walship-chaos-probe")
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil || !strings.Contains(string(out), "127.0.0.1") {
		return fmt.Sprintf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return ""
}

// nsCommand returns the command line that runs bin with args in a mount
// namespace of its own where hosts is /etc/hosts. The shell execs bin, so
// the process the supervisor signals is bin itself.
func nsCommand(hosts, bin string, args ...string) (string, []string) {
	return "unshare", append([]string{"--mount", "--propagation", "private", "sh", "-c",
		`mount --bind "$0" /etc/hosts && exec "$@"`, hosts, bin}, args...)
}

// startKafka starts kfake with three brokers. With namespaces each broker
// listens on 127.0.0.1 and advertises a name that each member resolves to
// its own Toxiproxy proxies (kafkaView); without, each advertises one
// Toxiproxy proxy that every member shares. kfake keeps each partition once,
// in process: its "replicas" are metadata (replication factor
// min(3, brokers) by default), which is what the clients see.
func (s *servers) startKafka(t *testing.T) {
	t.Helper()
	var listens []string
	i := 0
	c, err := kfake.NewCluster(
		kfake.NumBrokers(numBrokers),
		kfake.DefaultNumPartitions(1),
		kfake.GroupMinSessionTimeout(100*time.Millisecond),
		kfake.ListenFn(func(network, _ string) (net.Listener, error) {
			l, err := net.Listen(network, "127.0.0.1:0")
			if err != nil {
				return nil, err
			}
			port := l.Addr().(*net.TCPAddr).Port
			adv := fmt.Sprintf(brokerHost+":%d", i, port)
			if !s.ns {
				adv = fmt.Sprintf("127.0.0.1:%d", freePort(t))
			}
			i++
			listens = append(listens, l.Addr().String())
			s.brokers = append(s.brokers, adv)
			return advertised{l, hostAddr(adv)}, nil
		}),
	)
	if err != nil {
		t.Fatalf("kfake: %v", err)
	}
	t.Cleanup(c.Close)
	s.kafka = c
	hosts, err := os.ReadFile("/etc/hosts")
	if err != nil {
		t.Fatal(err)
	}
	s.direct = filepath.Join(s.dir, "hosts-direct")
	if err := os.WriteFile(s.direct, append(hosts, []byte(s.hostsLine("127.0.0.1"))...), 0o644); err != nil {
		t.Fatal(err)
	}
	if !s.ns {
		v := &kafkaView{name: "all", seeds: s.brokers}
		for b, adv := range s.brokers {
			p, err := s.toxi.CreateProxy(fmt.Sprintf("kafka%d", b), adv, listens[b])
			if err != nil {
				t.Fatalf("toxiproxy: create kafka%d: %v", b, err)
			}
			v.proxies = append(v.proxies, p)
		}
		s.shared = v
	}
}

func (s *servers) hostsLine(ip string) string {
	l := "\n" + ip
	for b := range numBrokers {
		l += " " + fmt.Sprintf(brokerHost, b)
	}
	return l + "\n"
}

// advertised is a broker's listener that reports the address clients must
// use, which kfake advertises in its metadata.
type advertised struct {
	net.Listener
	addr net.Addr
}

func (a advertised) Addr() net.Addr { return a.addr }

type hostAddr string

func (hostAddr) Network() string  { return "tcp" }
func (a hostAddr) String() string { return string(a) }

// kafkaView is how one process reaches the brokers: one Toxiproxy proxy per
// broker, its own (with namespaces: the process's /etc/hosts, hosts,
// resolves every broker's name to an address of its own, 127.0.N.1, where
// its proxies listen on the brokers' ports) or shared.
type kafkaView struct {
	name    string
	hosts   string // "" without namespaces
	seeds   []string
	proxies []*toxiclient.Proxy
}

func (s *servers) kafkaView(t *testing.T, name string) *kafkaView {
	t.Helper()
	if s.kafka == nil {
		// An archive-only group: no brokers, nothing to reach them through.
		return &kafkaView{name: name}
	}
	if !s.ns {
		return s.shared
	}
	s.views++
	ip := fmt.Sprintf("127.0.%d.1", 10+s.views)
	v := &kafkaView{name: name, seeds: s.brokers, hosts: filepath.Join(s.dir, "hosts-"+name)}
	for b, adv := range s.brokers {
		_, port, _ := net.SplitHostPort(adv)
		p, err := s.toxi.CreateProxy(fmt.Sprintf("kafka%d-%s", b, name), net.JoinHostPort(ip, port), "127.0.0.1:"+port)
		if err != nil {
			t.Fatalf("toxiproxy: create kafka%d-%s: %v", b, name, err)
		}
		v.proxies = append(v.proxies, p)
	}
	hosts, err := os.ReadFile("/etc/hosts")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(v.hosts, append(hosts, []byte(s.hostsLine(ip))...), 0o644); err != nil {
		t.Fatal(err)
	}
	return v
}

// command returns the command line that runs bin with args so that it
// reaches Kafka through the view.
func (v *kafkaView) command(bin string, args ...string) (string, []string) {
	if v.hosts == "" {
		return bin, args
	}
	return nsCommand(v.hosts, bin, args...)
}

// directDial is the dialer of the suite's own Kafka clients: a broker's name
// is the broker itself, on 127.0.0.1.
func directDial(ctx context.Context, network, addr string) (net.Conn, error) {
	if host, port, err := net.SplitHostPort(addr); err == nil && strings.HasPrefix(host, "walship-chaos-kafka-") {
		addr = net.JoinHostPort("127.0.0.1", port)
	}
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

// directCommand is command for the suite's own tools (kcat): the brokers
// without any proxy in between when there are namespaces.
func (s *servers) directCommand(bin string, args ...string) (string, []string) {
	if !s.ns {
		return bin, args
	}
	return nsCommand(s.direct, bin, args...)
}

// startToxiproxy runs a real Toxiproxy API server inside the test process
// (the library the toxiproxy-server binary wraps) and returns a client of
// its HTTP API: the nemesis drives it exactly as an operator's tooling
// would. Listen has no shutdown; its goroutine ends with the test binary.
func startToxiproxy(t *testing.T) *toxiclient.Client {
	t.Helper()
	port := freePort(t)
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	go srv.Listen("127.0.0.1", strconv.Itoa(port))
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	waitFor(t, "the Toxiproxy API", 30*time.Second, func() (bool, string) {
		resp, err := http.Get("http://" + addr + "/version")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})
	t.Cleanup(func() { _ = toxiclient.NewClient(addr).ResetState() })
	return toxiclient.NewClient(addr)
}

// proxy creates a Toxiproxy proxy named name in front of upstream and
// returns it and its address.
func (s *servers) proxy(t *testing.T, name, upstream string) (*toxiclient.Proxy, string) {
	t.Helper()
	listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p, err := s.toxi.CreateProxy(name, listen, upstream)
	if err != nil {
		t.Fatalf("toxiproxy: create %s: %v", name, err)
	}
	return p, listen
}
