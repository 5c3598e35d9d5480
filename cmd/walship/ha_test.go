package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/walship/walship/kafkasink/kafkatest"
)

// TestHACheck: `walship ha check` names each loss a new leader recorded in
// the group's lease topic and exits 1 until they are acknowledged, then 0;
// bad usage and a config without ha exit 2.
func TestHACheck(t *testing.T) {
	t.Parallel()
	kc, err := kafkatest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "run.yaml")
	y := fmt.Sprintf("wal: {dir: %q}\nsource: {http: {listen: \"127.0.0.1:0\"}}\nkafka: {brokers: [%q], topic_prefix: hc}\nha: {name: a}\n", filepath.Join(dir, "wal"), kc.Addr)
	if err := os.WriteFile(cfg, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}

	// No group has run yet: nothing recorded.
	if r := walship(t, nil, "ha", "check", "--config", cfg); r.code != 0 || !strings.Contains(r.stdout, "no loss recorded") {
		t.Fatalf("check of a new group: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	cl, err := kgo.NewClient(kgo.SeedBrokers(kc.Addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := kadm.NewClient(cl).CreateTopic(context.Background(), 1, 1, nil, "hc.ha"); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	loss := &kgo.Record{Topic: "hc.ha", Key: []byte("loss/7"), Value: []byte(`{"term":7,"after":"0/10","through":"0/20","member":"b","detected":"2026-12-07T10:00:00Z"}`)}
	if err := cl.ProduceSync(ctx, loss).FirstErr(); err != nil {
		t.Fatal(err)
	}
	// A renewal, in a transaction as leaders write them: the topic then
	// ends with a commit marker, which a reader never gets as a record.
	tx, err := kgo.NewClient(kgo.SeedBrokers(kc.Addr), kgo.TransactionalID("hc.ha"), kgo.DefaultProduceTopic("hc.ha"))
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	if err := tx.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := tx.ProduceSync(ctx, &kgo.Record{Key: []byte("lease"), Value: []byte(`{"member":"b","lease_ms":1000}`)}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := tx.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	r := walship(t, nil, "ha", "check", "--config", cfg)
	if r.code != 1 || !strings.Contains(r.stdout, "LOST: source positions after 0/10 through 0/20 (term 7), found by b") {
		t.Fatalf("check with a loss: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = walship(t, nil, "ha", "check", "--config", cfg, "--json")
	var out struct {
		Losses []struct {
			Term    int64  `json:"term"`
			Through string `json:"through"`
		} `json:"losses"`
	}
	if r.code != 1 || json.Unmarshal([]byte(r.stdout), &out) != nil || len(out.Losses) != 1 || out.Losses[0].Through != "0/20" {
		t.Fatalf("--json: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := walship(t, nil, "ha", "check", "--config", cfg, "--acknowledge"); r.code != 1 || !strings.Contains(r.stdout, "acknowledged 1") {
		t.Fatalf("--acknowledge: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := walship(t, nil, "ha", "check", "--config", cfg); r.code != 0 {
		t.Fatalf("check after acknowledging: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	if r := walship(t, nil, "ha", "--config", cfg); r.code != 2 {
		t.Fatalf("ha without check: exit %d, want 2", r.code)
	}
	plain := filepath.Join(dir, "plain.yaml")
	if err := os.WriteFile(plain, []byte(fmt.Sprintf("wal: {dir: %q}\nsource: {http: {listen: \"127.0.0.1:0\"}}\n", dir)), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := walship(t, nil, "ha", "check", "--config", plain); r.code != 2 || !strings.Contains(r.stderr, "no ha section") {
		t.Fatalf("config without ha: exit %d\n%s", r.code, r.stderr)
	}
}
