package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/walship/walship/archive"
	"github.com/walship/walship/archivesink"
	"github.com/walship/walship/change"
	"github.com/walship/walship/internal/seal"
	"github.com/walship/walship/pitr"
	"github.com/walship/walship/replica"
	"github.com/walship/walship/walerr"
)

// TestEncryptedArchive: with archive.encryption_key_file set, no archive
// object holds the data in clear; with the key a restore equals what was
// appended; without it, reading fails with an error naming the key id.
func TestEncryptedArchive(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "key")
	if err := os.WriteFile(keyFile, []byte(strings.Repeat("ab01", 16)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	arch := filepath.Join(dir, "archive")
	cfg := testConfig(t, fmt.Sprintf("archive: {url: \"file://%s\", timeout: 200ms, encryption_key_file: %q}\n", arch, keyFile))
	r := start(t, cfg)
	appendN(t, r.d.Addr("source.http"), 0, 50)
	last := r.d.wal.Durable()
	for deadline := time.Now().Add(20 * time.Second); r.d.Positions().Sinks[archivesink.CheckpointName] < last; {
		if time.Now().After(deadline) {
			t.Fatal("archive did not catch up")
		}
		time.Sleep(50 * time.Millisecond)
	}
	r.stop(t)

	// appendN pads every row with 200 'x': nothing stored may show them.
	err := filepath.WalkDir(arch, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, _ := os.ReadFile(p)
		if bytes.Contains(b, []byte("xxxxxxxxxxxxxxxx")) {
			t.Errorf("%s holds row data in clear", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	key, err := seal.LoadKeyFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	sealer, err := seal.New(seal.Options{}, key)
	if err != nil {
		t.Fatal(err)
	}
	restore := func(opts archive.Options) (replica.Tables, error) {
		a, err := archive.Open(ctx, "file://"+arch, opts)
		if err != nil {
			return nil, err
		}
		src := pitr.NewArchiveSource(a)
		plan, err := pitr.PlanRestore(ctx, src, pitr.Target{Kind: pitr.Latest}, pitr.PlanOptions{})
		if err != nil {
			return nil, err
		}
		url := "sqlite://" + filepath.Join(t.TempDir(), "r.db")
		if _, err := pitr.Restore(ctx, src, plan, url, pitr.RestoreOptions{}); err != nil {
			return nil, err
		}
		return replica.Dump(ctx, url)
	}
	got, err := restore(archive.Options{Seal: sealer})
	if err != nil {
		t.Fatalf("restore with the key: %v", err)
	}
	if len(got["t"]) != 50 {
		t.Fatalf("restored %d rows, want 50", len(got["t"]))
	}
	_, err = restore(archive.Options{})
	t.Logf("without the key: %v", err)
	if err == nil || !strings.Contains(err.Error(), key.ID) {
		t.Fatalf("restore without the key: %v; want an error naming key id %s", err, key.ID)
	}
	if errors.Is(err, walerr.ErrCorruption) {
		t.Fatalf("a missing key reported as corruption: %v", err)
	}
}

// TestEncryptedArchiveRefusesForgedNewestSegment: the daemon's own read of
// its encrypted archive (where the archiver resumes) refuses a newest
// segment replaced by one written without the key, naming it, instead of
// archiving after it.
func TestEncryptedArchiveRefusesForgedNewestSegment(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "key")
	if err := os.WriteFile(keyFile, []byte(strings.Repeat("cd02", 16)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	arch := filepath.Join(dir, "archive")
	cfg := testConfig(t, fmt.Sprintf("archive: {url: \"file://%s\", timeout: 200ms, encryption_key_file: %q}\n", arch, keyFile))
	r := start(t, cfg)
	appendN(t, r.d.Addr("source.http"), 0, 10)
	last := r.d.wal.Durable()
	for deadline := time.Now().Add(20 * time.Second); r.d.Positions().Sinks[archivesink.CheckpointName] < last; {
		if time.Now().After(deadline) {
			t.Fatal("archive did not catch up")
		}
		time.Sleep(50 * time.Millisecond)
	}
	r.stop(t)

	// Replace the newest segment (object and manifest) by one written
	// without the key, covering the same LSNs.
	sealed, err := OpenArchive(ctx, cfg.Archive, nil)
	if err != nil {
		t.Fatal(err)
	}
	newest, ok, err := sealed.LastSegment(ctx, Lineage)
	if err != nil || !ok {
		t.Fatalf("newest segment: %v %v", ok, err)
	}
	plain, err := archive.Open(ctx, "file://"+arch, archive.Options{})
	if err != nil {
		t.Fatal(err)
	}
	forged := change.Committed{FirstLSN: newest.LastLSN, CommitLSN: newest.LastLSN, CommitTime: newest.LastCommitTime, Txn: change.Txn{Changes: []change.Change{{
		Table: change.Table{Schema: "public", Name: "t"}, Op: change.Insert, Key: change.Row{{Name: "id", Value: change.IntValue(666)}},
		After: change.Row{{Name: "id", Value: change.IntValue(666)}}}}}}
	enc, err := plain.EncodeSegment(Lineage, newest.FirstLSN, []change.Committed{forged})
	if err != nil {
		t.Fatal(err)
	}
	m := enc.Manifest
	os.Remove(filepath.Join(arch, archive.ManifestKey(m.Key)))
	os.Remove(filepath.Join(arch, m.Key))
	if m, err = plain.StoreSegment(ctx, enc); err != nil || m.Key != newest.Key {
		t.Fatalf("forging %s: %v (%s)", newest.Key, err, m.Key)
	}

	d, err := New(ctx, cfg, nil)
	if err == nil {
		runCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		err = d.Run(runCtx)
	}
	if !errors.Is(err, archive.ErrUnsealed) || !strings.Contains(err.Error(), archive.ManifestKey(m.Key)) {
		t.Fatalf("daemon on an archive with a forged newest segment: %v; want it refused naming %s", err, archive.ManifestKey(m.Key))
	}
}
