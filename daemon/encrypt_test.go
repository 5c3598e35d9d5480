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
	"github.com/walship/walship/wal"
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
	waitArchivedAll(t, r)
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
	waitArchivedAll(t, r)
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

// TestArchiveForeignKeyBeyondCheckpoint: a newest segment sealed with a key
// the daemon does not hold is trusted to say where archiving resumes only
// within the node's archive checkpoint (the daemon's own objects from
// before a key change). One placed beyond it by someone else, covering
// transactions this node has not archived, would make the archiver skip
// them for good: the daemon refuses to start, naming the object. After the
// forgery is removed, a real key change resumes after the old key's
// segments and archives on.
func TestArchiveForeignKeyBeyondCheckpoint(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	keyA, keyB := filepath.Join(dir, "keyA"), filepath.Join(dir, "keyB")
	for f, hex := range map[string]string{keyA: "0123456789abcdef", keyB: "fedcba9876543210"} {
		if err := os.WriteFile(f, []byte(strings.Repeat(hex, 4)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	arch := filepath.Join(dir, "archive")
	cfg := testConfig(t, fmt.Sprintf("archive: {url: \"file://%s\", timeout: 200ms, encryption_key_file: %q}\n", arch, keyA))
	r := start(t, cfg)
	appendN(t, r.d.Addr("source.http"), 0, 10)
	waitArchivedAll(t, r)
	archived := r.d.wal.Durable()
	r.stop(t)

	// Three more transactions in the log, not archived (the daemon is
	// down), and a segment covering them sealed with a stranger's key.
	w, _, err := wal.Open(wal.Options{Dir: cfg.WAL.Dir})
	if err != nil {
		t.Fatal(err)
	}
	var txns []change.Committed
	for i := range 3 {
		row := change.Row{{Name: "id", Value: change.IntValue(int64(100 + i))}}
		txn := change.Txn{Changes: []change.Change{{Table: change.Table{Schema: "public", Name: "t"}, Op: change.Insert, Key: row, After: row}}}
		tk, err := w.Append(ctx, &txn)
		if err != nil {
			t.Fatal(err)
		}
		txns = append(txns, change.Committed{FirstLSN: tk.First, CommitLSN: tk.Last, CommitTime: tk.Time(), Txn: txn})
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	stranger, err := seal.New(seal.Options{}, seal.GenerateKey())
	if err != nil {
		t.Fatal(err)
	}
	forger, err := archive.Open(ctx, "file://"+arch, archive.Options{Seal: stranger})
	if err != nil {
		t.Fatal(err)
	}
	enc, err := forger.EncodeSegment(Lineage, archived+1, txns)
	if err != nil {
		t.Fatal(err)
	}
	forged, err := forger.StoreSegment(ctx, enc)
	if err != nil {
		t.Fatal(err)
	}

	d, err := New(ctx, cfg, nil)
	if err == nil {
		runCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		err = d.Run(runCtx)
	}
	var se *archive.SealError
	if !errors.As(err, &se) || !errors.Is(err, seal.ErrUnknownKey) || !strings.Contains(err.Error(), archive.ManifestKey(forged.Key)) {
		t.Fatalf("daemon over a stranger's newest segment beyond its checkpoint: %v; want it refused naming %s", err, archive.ManifestKey(forged.Key))
	}

	// Without the forgery, a key change: the newest segment is the
	// daemon's own, sealed with key A, within its checkpoint.
	for _, k := range []string{forged.Key, archive.ManifestKey(forged.Key)} {
		if err := os.Remove(filepath.Join(arch, k)); err != nil {
			t.Fatal(err)
		}
	}
	cfg.Archive.EncryptionKeyFile = keyB
	r = start(t, cfg)
	waitArchivedAll(t, r)
	r.stop(t)
	b, err := archive.Open(ctx, "file://"+arch, archive.Options{Seal: mustSealer(t, keyB)})
	if err != nil {
		t.Fatal(err)
	}
	newest, ok, err := b.LastSegment(ctx, Lineage)
	if err != nil || !ok || newest.FirstLSN != archived+1 || newest.LastLSN < txns[2].CommitLSN {
		t.Fatalf("after the key change the newest segment is %+v (%v, %v); want one sealed with the new key from LSN %d through %d",
			newest, ok, err, archived+1, txns[2].CommitLSN)
	}
}

func mustSealer(t *testing.T, keyFile string) *seal.Sealer {
	t.Helper()
	key, err := seal.LoadKeyFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	s, err := seal.New(seal.Options{}, key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// waitArchivedAll waits until r's archive checkpoint covers every durable
// LSN of its log.
func waitArchivedAll(t *testing.T, r *running) {
	t.Helper()
	last := r.d.wal.Durable()
	for deadline := time.Now().Add(90 * time.Second); r.d.Positions().Sinks[archivesink.CheckpointName] < last; {
		if time.Now().After(deadline) {
			t.Fatal("archive did not catch up")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
