package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/walship/walship/archive"
	"github.com/walship/walship/change"
	"github.com/walship/walship/internal/seal"
	"github.com/walship/walship/replica"
)

// newSealedFixture archives txns in segments of per, sealed with a new
// key, and returns the fixture and the path of a file holding the key.
func newSealedFixture(t *testing.T, txns []change.Committed, per int) (*fixture, string) {
	t.Helper()
	k, keyFile := newKeyFile(t)
	f := &fixture{dir: t.TempDir(), txns: txns}
	f.url = "file://" + f.dir
	var err error
	if f.a, err = archive.Open(context.Background(), f.url, archive.Options{Seal: mustSealer(t, k)}); err != nil {
		t.Fatal(err)
	}
	f.add(t, 0, len(txns), per)
	return f, keyFile
}

func mustSealer(t *testing.T, k seal.Key) *seal.Sealer {
	t.Helper()
	s, err := seal.New(seal.Options{}, k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// newKeyFile makes a random key and writes it, in hex, to a new file.
func newKeyFile(t *testing.T) (seal.Key, string) {
	t.Helper()
	raw := make([]byte, seal.KeySize)
	rand.Read(raw)
	k, err := seal.ParseKey([]byte(hex.EncodeToString(raw)))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(p, []byte(hex.EncodeToString(raw)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return k, p
}

// forgeTxns returns txns with every public.kv value replaced: what a
// bucket writer would rather have restored.
func forgeTxns(txns []change.Committed) []change.Committed {
	out := make([]change.Committed, len(txns))
	for i, tx := range txns {
		tx.Changes = append([]change.Change(nil), tx.Changes...)
		for j, c := range tx.Changes {
			if c.Table.Name == "kv" {
				c.After = change.Row{c.After[0], {Name: "v", Value: change.TextValue("forged")}}
				tx.Changes[j] = c
			}
		}
		out[i] = tx
	}
	return out
}

// storeAt archives txns as one segment of lineage "main" in the archive at
// dir, opened with opts, and returns its manifest.
func storeAt(t *testing.T, dir string, opts archive.Options, txns []change.Committed) archive.SegmentManifest {
	t.Helper()
	ctx := context.Background()
	a, err := archive.Open(ctx, "file://"+dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	enc, err := a.EncodeSegment("main", 0, txns)
	if err != nil {
		t.Fatal(err)
	}
	m, err := a.StoreSegment(ctx, enc)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// copyObject writes the object and manifest of srcKey in srcDir under
// dstKey's names in dstDir, replacing what is there.
func copyObject(t *testing.T, srcDir, srcKey, dstDir, dstKey string) {
	t.Helper()
	for _, p := range [][2]string{{srcKey, dstKey}, {archive.ManifestKey(srcKey), archive.ManifestKey(dstKey)}} {
		b, err := os.ReadFile(filepath.Join(srcDir, p[0]))
		if err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(filepath.Dir(filepath.Join(dstDir, p[1])), 0o755)
		if err := os.WriteFile(filepath.Join(dstDir, p[1]), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestEncryptedArchiveRefusesForgedObjects is a bucket writer's attack on
// an encrypted archive: one segment's object and manifest replaced by ones
// written without a key, or sealed with another key, or an authentic pair
// copied over another segment's names or into another lineage. With the key,
// verify exits 1 naming the manifest and saying why, and restore refuses
// (exit 1) before it creates the destination; without the key, both exit 2
// saying that the archive is encrypted.
func TestEncryptedArchiveRefusesForgedObjects(t *testing.T) {
	ctx := context.Background()
	txns := genLog(t, 30)
	other := seal.GenerateKey()
	for _, c := range []struct {
		name    string
		attack  func(t *testing.T, f *fixture) (refused string) // returns the key refused
		lineage string
		want    string
	}{
		{"written without a key", func(t *testing.T, f *fixture) string {
			dir := t.TempDir()
			m := storeAt(t, dir, archive.Options{}, forgeTxns(txns[10:15]))
			copyObject(t, dir, m.Key, f.dir, f.segs[2].Key)
			return archive.ManifestKey(f.segs[2].Key)
		}, "", "not sealed, but an encryption key is configured"},
		{"sealed with another key", func(t *testing.T, f *fixture) string {
			dir := t.TempDir()
			m := storeAt(t, dir, archive.Options{Seal: mustSealer(t, other)}, forgeTxns(txns[10:15]))
			copyObject(t, dir, m.Key, f.dir, f.segs[2].Key)
			return archive.ManifestKey(f.segs[2].Key)
		}, "", "sealed with key id " + other.ID + ", not among the configured keys"},
		{"authentic, copied over another segment", func(t *testing.T, f *fixture) string {
			copyObject(t, f.dir, f.segs[3].Key, f.dir, f.segs[2].Key)
			return archive.ManifestKey(f.segs[2].Key)
		}, "", "failed authentication"},
		{"authentic, copied into another lineage", func(t *testing.T, f *fixture) string {
			for _, m := range f.segs {
				copyObject(t, f.dir, m.Key, f.dir, archive.SegmentKey("copy", m.FirstLSN, m.LastLSN))
			}
			return archive.ManifestKey(archive.SegmentKey("copy", f.segs[0].FirstLSN, f.segs[0].LastLSN))
		}, "copy", "failed authentication"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f, keyFile := newSealedFixture(t, txns, 5)
			refused := c.attack(t, f)

			r := walreplay(t, ctx, "verify", "--archive", f.url, "--encryption-key-file", keyFile)
			if r.code != 1 || !strings.Contains(r.stdout, "CORRUPT: "+refused+": ") || !strings.Contains(r.stdout, c.want) || strings.Contains(r.stdout, "intact") {
				t.Fatalf("verify: exit %d (%v), want 1 naming %s and saying %q:\n%s", r.code, r.err, refused, c.want, r.stdout)
			}
			dst := filepath.Join(t.TempDir(), "r.db")
			args := []string{"restore", "--archive", f.url, "--encryption-key-file", keyFile, "--to", "sqlite://" + dst}
			if c.lineage != "" {
				args = append(args, "--lineage", c.lineage)
			}
			r = walreplay(t, ctx, args...)
			if r.code != 1 || r.err == nil || !strings.Contains(r.err.Error(), refused) {
				t.Fatalf("restore: exit %d (%v), want 1 naming %s", r.code, r.err, refused)
			}
			if _, err := os.Stat(dst); !os.IsNotExist(err) {
				t.Fatalf("a refused restore created or changed the destination (%v)", err)
			}

			for _, cmd := range [][]string{{"verify"}, {"list"}, {"restore", "--to", "sqlite://" + dst}} {
				r = walreplay(t, ctx, append(cmd, "--archive", f.url)...)
				if r.code != 2 || r.err == nil || !strings.Contains(r.err.Error(), "the archive is encrypted") || !strings.Contains(r.err.Error(), "--encryption-key-file") {
					t.Fatalf("%s without the key: exit %d (%v), want 2: the archive is encrypted", cmd[0], r.code, r.err)
				}
			}
		})
	}
}

// TestFollowRefusesForgedObjects: a standby following an encrypted archive
// stops (exit 1) at a newer segment written without the key, naming it, and
// applies nothing of it.
func TestFollowRefusesForgedObjects(t *testing.T) {
	txns := genLog(t, 30)
	f, keyFile := newSealedFixture(t, txns[:20], 5)
	dst := "sqlite://" + filepath.Join(t.TempDir(), "standby.db")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan result, 1)
	go func() {
		done <- walreplay(t, ctx, "restore", "--archive", f.url, "--encryption-key-file", keyFile, "--to", dst, "--follow", "--poll-interval", "20ms")
	}()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if st, err := replica.ReadState(ctx, dst); err == nil && st.LSN == txns[19].CommitLSN {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("standby did not reach LSN %d", txns[19].CommitLSN)
		}
	}
	forged := storeAt(t, f.dir, archive.Options{}, forgeTxns(txns[20:25]))
	var r result
	select {
	case r = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("follow did not stop at the forged segment")
	}
	if r.code != 1 || r.err == nil || !strings.Contains(r.err.Error(), archive.ManifestKey(forged.Key)) || !strings.Contains(r.err.Error(), "not sealed") {
		t.Fatalf("follow: exit %d (%v), want 1 naming %s", r.code, r.err, archive.ManifestKey(forged.Key))
	}
	if st, err := replica.ReadState(context.Background(), dst); err != nil || st.LSN != txns[19].CommitLSN {
		t.Fatalf("standby at LSN %d (%v), want %d: the forged segment was applied", st.LSN, err, txns[19].CommitLSN)
	}
	sameReplica(t, dst, expected(t, txns[:20]))
}

// TestListAndPruneNameRefusedObjects: with the key, list and prune of an
// encrypted archive whose manifests were replaced by plain ones name
// every refused manifest and exit 1, in text and --json, whether one
// segment (which would otherwise show only as a gap) or every object was
// replaced (which would otherwise look like an empty lineage). Prune
// deletes none of them.
func TestListAndPruneNameRefusedObjects(t *testing.T) {
	ctx := context.Background()
	txns := genLog(t, 30)
	for _, c := range []struct {
		name   string
		forged func(f *fixture) []archive.SegmentManifest
	}{
		{"one segment", func(f *fixture) []archive.SegmentManifest { return f.segs[2:3] }},
		{"every segment", func(f *fixture) []archive.SegmentManifest { return f.segs }},
	} {
		t.Run(c.name, func(t *testing.T) {
			f, keyFile := newSealedFixture(t, txns, 5)
			f.snapshot(t, 4)
			f.snapshot(t, 24)
			plain := t.TempDir()
			var refused []string
			for _, m := range c.forged(f) {
				i := slicesIndex(f.segs, m)
				forged := storeAt(t, plain, archive.Options{}, forgeTxns(txns[i*5:i*5+5]))
				copyObject(t, plain, forged.Key, f.dir, m.Key)
				refused = append(refused, archive.ManifestKey(m.Key))
			}
			if c.name == "every segment" { // and the snapshots: every object of the archive
				for _, lsn := range []uint64{txns[4].CommitLSN, txns[24].CommitLSN} {
					key := archive.SnapshotKey("main", lsn)
					pa, err := archive.Open(ctx, "file://"+plain, archive.Options{})
					if err != nil {
						t.Fatal(err)
					}
					snapshotInto(t, pa, txns, lsn)
					pa.Close()
					copyObject(t, plain, key, f.dir, key)
					refused = append(refused, archive.ManifestKey(key))
				}
			}

			r := walreplay(t, ctx, "list", "--archive", f.url, "--encryption-key-file", keyFile)
			if r.code != 1 || r.err == nil {
				t.Fatalf("list: exit %d (%v), want 1\n%s", r.code, r.err, r.stdout)
			}
			for _, k := range refused {
				if !strings.Contains(r.stdout, "CORRUPT: "+k+": ") || !strings.Contains(r.stdout, "not sealed, but an encryption key is configured") {
					t.Fatalf("list does not name %s as refused:\n%s", k, r.stdout)
				}
			}
			r = walreplay(t, ctx, "list", "--archive", f.url, "--encryption-key-file", keyFile, "--json")
			var out listJSON
			if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || r.code != 1 {
				t.Fatalf("list --json: exit %d (%v) %v\n%s", r.code, r.err, err, r.stdout)
			}
			var got []string
			for _, p := range out.Problems {
				if p.Kind == "corrupt" && strings.Contains(p.Error, "not sealed") {
					got = append(got, p.Key)
				}
			}
			slices.Sort(got)
			slices.Sort(refused)
			if !slices.Equal(got, refused) {
				t.Fatalf("list --json problems name %v, want %v:\n%s", got, refused, r.stdout)
			}

			r = walreplay(t, ctx, "prune", "--archive", f.url, "--encryption-key-file", keyFile, "--keep-snapshots", "1")
			if r.code != 1 || r.err == nil {
				t.Fatalf("prune: exit %d (%v), want 1\n%s", r.code, r.err, r.stderr)
			}
			for _, k := range refused {
				if !strings.Contains(r.stderr, "walreplay: prune: ignored "+k+": ") {
					t.Fatalf("prune does not name %s as ignored:\n%s", k, r.stderr)
				}
				if _, err := os.Stat(filepath.Join(f.dir, k)); err != nil {
					t.Fatalf("prune deleted the refused %s: %v", k, err)
				}
			}
		})
	}
}

func slicesIndex(segs []archive.SegmentManifest, m archive.SegmentManifest) int {
	return slices.IndexFunc(segs, func(s archive.SegmentManifest) bool { return s.Key == m.Key })
}

// snapshotInto stores in a a snapshot of the replica holding the
// transactions up to lsn.
func snapshotInto(t *testing.T, a *archive.Archive, txns []change.Committed, lsn uint64) {
	t.Helper()
	i := slices.IndexFunc(txns, func(tx change.Committed) bool { return tx.CommitLSN == lsn })
	g := &fixture{a: a, txns: txns}
	g.snapshot(t, i)
}

// TestBadKeyFileIsUsage: a key file that holds no usable key (a zero
// placeholder, a password, more than a key file holds, a device) is bad
// usage, exit 2, naming the file and why, before the archive is read.
func TestBadKeyFileIsUsage(t *testing.T) {
	ctx := context.Background()
	f, _ := newSealedFixture(t, genLog(t, 5), 5)
	dir := t.TempDir()
	for name, c := range map[string]struct{ content, want string }{
		"zero.key":     {strings.Repeat("0", 64) + "\n", "all equal to 0x00: a placeholder, not a random key"},
		"password.key": {"correct horse battery staple 123\n", "32 printable characters: that is a password"},
		"short.key":    {"Ke382Fp4sfQByyJ/w5Daxl2c\n", "base64 of 18 bytes"},
		"big.key":      {strings.Repeat("0", seal.MaxKeyFileSize+1), "is larger than 4096 bytes: not a key file"},
	} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(c.content), 0o600)
		for _, cmd := range []string{"list", "verify"} {
			r := walreplay(t, ctx, cmd, "--archive", f.url, "--encryption-key-file", p)
			if r.code != 2 || r.err == nil || !strings.Contains(r.err.Error(), c.want) || !strings.Contains(r.err.Error(), p) {
				t.Errorf("%s --encryption-key-file %s: exit %d (%v), want 2 naming it: %s", cmd, name, r.code, r.err, c.want)
			}
		}
	}
	r := walreplay(t, ctx, "list", "--archive", f.url, "--encryption-key-file", "/dev/zero")
	if r.code != 2 || r.err == nil || !strings.Contains(r.err.Error(), "key file /dev/zero is a device, not a regular file") {
		t.Errorf("--encryption-key-file /dev/zero: exit %d (%v), want 2", r.code, r.err)
	}
}

// TestSealedRefusalsAsDocumented keeps docs/ARCHIVE.md §10 honest: for
// each attack, some row of its refusal table whose first cell names the
// attack quotes (in backticks, "…" standing for any text) what verify
// really says about the object, and verify names the object (exit 1).
func TestSealedRefusalsAsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/ARCHIVE.md")
	if err != nil {
		t.Fatal(err)
	}
	_, sec, _ := strings.Cut(string(doc), "\n## 10.")
	sec, _, _ = strings.Cut(sec, "\n## ")
	var rows [][2]string // what is found, refusal
	for _, line := range strings.Split(sec, "\n") {
		if cells := strings.Split(line, "|"); len(cells) == 4 && !strings.HasPrefix(cells[1], "---") {
			rows = append(rows, [2]string{cells[1], cells[2]})
		}
	}
	quoted := func(out, cell string) bool { // a backticked quote of cell is in out
		parts := strings.Split(cell, "`")
		for i := 1; i < len(parts); i += 2 {
			ok := true
			for _, frag := range strings.Split(parts[i], "…") {
				ok = ok && strings.Contains(out, strings.TrimSpace(frag))
			}
			if ok {
				return true
			}
		}
		return false
	}
	ctx := context.Background()
	txns := genLog(t, 10)
	for _, c := range []struct {
		name, phrase string
		key          func(f *fixture) string // the object attacked
		attack       func(b []byte)
	}{
		{"segment version byte set back to 1", "version byte set back to 1", func(f *fixture) string { return f.segs[1].Key },
			func(b []byte) { b[4] = 1 }},
		{"snapshot version byte set back to 1", "version byte set back to 1", func(f *fixture) string { return archive.SnapshotKey("main", txns[4].CommitLSN) },
			func(b []byte) { b[4] = 1 }},
		{"manifest's seal version byte set back to 1", "version byte set back to 1", func(f *fixture) string { return archive.ManifestKey(f.segs[0].Key) },
			func(b []byte) { b[len("WSM2")+1+int(b[4])+4] = 1 }},
	} {
		t.Run(c.name, func(t *testing.T) {
			f, keyFile := newSealedFixture(t, txns, 5)
			f.snapshot(t, 4)
			key := c.key(f)
			p := filepath.Join(f.dir, key)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			c.attack(b)
			os.WriteFile(p, b, 0o644)
			r := walreplay(t, ctx, "verify", "--archive", f.url, "--encryption-key-file", keyFile)
			_, line, _ := strings.Cut(r.stdout, "CORRUPT: "+key+": ")
			line, _, _ = strings.Cut(line, "\n")
			if r.code != 1 || line == "" {
				t.Fatalf("verify: exit %d (%v), want 1 naming %s:\n%s", r.code, r.err, key, r.stdout)
			}
			for _, row := range rows {
				if strings.Contains(row[0], c.phrase) && quoted(line, row[1]) {
					return
				}
			}
			t.Fatalf("no row of docs/ARCHIVE.md §10 naming %q quotes what verify says about %s: %s", c.phrase, key, line)
		})
	}
}
