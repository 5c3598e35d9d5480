package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// TestSnapshotCommand: walship snapshot reads http.listen and http.token
// from the config and posts the request to the daemon's /v1/snapshot:
// exit 0 printing the daemon's answer when queued, 1 with the daemon's
// reason when refused, 2 without --table.
func TestSnapshotCommand(t *testing.T) {
	const token = "0123456789abcdef0123"
	var mu sync.Mutex
	var got []map[string]string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/snapshot" || r.Header.Get("Authorization") != "Bearer "+token {
			http.Error(w, "unexpected request", http.StatusTeapot)
			return
		}
		var body map[string]string
		json.NewDecoder(r.Body).Decode(&body)
		mu.Lock()
		got = append(got, body)
		mu.Unlock()
		if body["table"] == "public.missing" {
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"error": "incremental snapshot of public.missing: no such table"}`)
			return
		}
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprintf(w, `{"id":"x-1","table":%q,"where":%q}`+"\n", body["table"], body["where"])
	}))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "walship.yaml")
	y := fmt.Sprintf("wal: {dir: %q}\nsource:\n  postgres: {dsn: \"postgres://u@127.0.0.1:1/db\"}\nhttp: {listen: \"0.0.0.0:%s\", token: %q}\n",
		filepath.Join(dir, "wal"), port, token)
	if err := os.WriteFile(cfgPath, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	res := walship(t, nil, "snapshot", "--config", cfgPath, "--table", "public.orders", "--where", "id > 5")
	if res.code != 0 || !strings.Contains(res.stdout, `"table":"public.orders"`) {
		t.Errorf("snapshot: %s", res)
	}
	res = walship(t, nil, "snapshot", "--config", cfgPath, "--table", "public.missing")
	if res.code != 1 || !strings.Contains(res.stderr, "no such table") {
		t.Errorf("snapshot of a missing table: %s", res)
	}
	res = walship(t, nil, "snapshot", "--config", cfgPath)
	if res.code != 2 {
		t.Errorf("snapshot without --table: %s", res)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 || got[0]["table"] != "public.orders" || got[0]["where"] != "id > 5" {
		t.Errorf("daemon received %v", got)
	}
}
