package chaos

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	toxiclient "github.com/Shopify/toxiproxy/v2/client"
	"github.com/rs/zerolog"

	"github.com/walship/walship/internal/miniotest"
	"github.com/walship/walship/internal/pgtest"
	"github.com/walship/walship/kafkasink/kafkatest"
)

// servers are the shared dependencies of the group, each with the knob the
// nemesis turns.
type servers struct {
	pg     *pgtest.Cluster
	kafka  *kafkatest.Cluster
	kproxy *kafkatest.Proxy // Down/Up: the broker vanishes and returns with its data
	minio  *miniotest.Server
	toxi   *toxiclient.Client
	bucket string
}

const (
	bankDB      = "bank"
	topicPrefix = "chaos"
)

func startServers(t *testing.T) *servers {
	t.Helper()
	ctx := context.Background()
	s := &servers{bucket: "chaos"}
	// fsync stays on: the nemesis restarts PostgreSQL in immediate mode and
	// the bank's committed transfers must survive it.
	s.pg = pgtest.Start(t, pgtest.WithSetting("max_wal_senders", "20"), pgtest.WithSetting("max_replication_slots", "10"))
	if err := s.pg.CreateDB(ctx, bankDB); err != nil {
		t.Fatal(err)
	}
	kc, kp, err := kafkatest.StartBehindProxy()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kp.Close(); kc.Close() })
	s.kafka, s.kproxy = kc, kp
	s.minio = miniotest.Start(t, miniotest.Options{})
	if err := s.minio.MakeBucket(ctx, s.bucket); err != nil {
		t.Fatal(err)
	}
	s.toxi = startToxiproxy(t)
	return s
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

// pgProxy creates the Toxiproxy proxy through which one member reaches
// PostgreSQL and returns it and its address.
func (s *servers) pgProxy(t *testing.T, member string) (*toxiclient.Proxy, string) {
	t.Helper()
	listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p, err := s.toxi.CreateProxy("pg-"+member, listen, fmt.Sprintf("127.0.0.1:%d", s.pg.Port()))
	if err != nil {
		t.Fatalf("toxiproxy: create pg-%s: %v", member, err)
	}
	return p, listen
}
