package archive

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/walship/walship/internal/fsutil"
)

// fileBackend stores each object as a file under root, its key's slashes
// being directories.
//
// Durability: Put and PutIfAbsent write a temporary file in the target
// directory, fsync it, then rename (Put) or hard-link (PutIfAbsent, which
// fails atomically if the name exists) it to its final name and fsync the
// directory, so after a crash a key holds either nothing or its complete
// object. Temporary files are named ".tmp-*" and are never listed.
type fileBackend struct {
	root string
	// gate is BackendOptions.WriteGate: checked right before the link or
	// rename that makes a put visible, after the (possibly slow) write
	// and fsync of its temporary file.
	gate func() error
}

var _ Backend = (*fileBackend)(nil)

const fileTmpPrefix = ".tmp-"

func newFileBackend(root string, mustExist bool, gate func() error) (*fileBackend, error) {
	root = filepath.Clean(root)
	if mustExist {
		fi, err := os.Stat(root)
		if err != nil {
			return nil, fmt.Errorf("archive: archive directory %s: %w", root, err)
		}
		if !fi.IsDir() {
			return nil, fmt.Errorf("archive: archive directory %s is not a directory", root)
		}
		return &fileBackend{root: root, gate: gate}, nil
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, fmt.Errorf("archive: create archive directory: %w", err)
	}
	return &fileBackend{root: root, gate: gate}, nil
}

func (b *fileBackend) path(key string) string {
	return filepath.Join(b.root, filepath.FromSlash(key))
}

func (b *fileBackend) Put(ctx context.Context, key string, body []byte) error {
	return b.put(ctx, key, body, false)
}

func (b *fileBackend) PutIfAbsent(ctx context.Context, key string, body []byte) error {
	return b.put(ctx, key, body, true)
}

func (b *fileBackend) put(ctx context.Context, key string, body []byte, ifAbsent bool) error {
	if err := checkKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	dst := b.path(key)
	dir := filepath.Dir(dst)
	if err := mkdirAllSync(b.root, dir); err != nil {
		return fmt.Errorf("archive: put %s: %w", key, err)
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	tmp := filepath.Join(dir, fileTmpPrefix+filepath.Base(dst)+"-"+hex.EncodeToString(rnd[:]))
	if err := writeFileSync(tmp, body); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("archive: put %s: %w", key, err)
	}
	if b.gate != nil {
		if err := b.gate(); err != nil {
			_ = os.Remove(tmp)
			return fmt.Errorf("archive: put %s: %w: %w", key, ErrGateClosed, err)
		}
	}
	if ifAbsent {
		err := os.Link(tmp, dst)
		_ = os.Remove(tmp)
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("archive: put %s: %w", key, ErrExists)
		}
		if err != nil {
			return fmt.Errorf("archive: put %s: %w", key, err)
		}
	} else if err := os.Rename(tmp, dst); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("archive: put %s: %w", key, err)
	}
	if err := fsutil.SyncDir(dir); err != nil {
		return fmt.Errorf("archive: put %s: sync directory: %w", key, err)
	}
	return nil
}

func writeFileSync(name string, body []byte) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(body); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// mkdirAllSync creates dir (under root) and fsyncs the parent of every
// directory it creates, so a new object's directory survives a crash.
func mkdirAllSync(root, dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	if dir == root || len(dir) <= len(root) {
		return os.MkdirAll(dir, 0o755)
	}
	parent := filepath.Dir(dir)
	if err := mkdirAllSync(root, parent); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return fsutil.SyncDir(parent)
}

func (b *fileBackend) Get(ctx context.Context, key string) ([]byte, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	body, err := os.ReadFile(b.path(key))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("archive: get %s: %w", key, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("archive: get %s: %w", key, err)
	}
	return body, nil
}

func (b *fileBackend) List(ctx context.Context, prefix string) ([]string, error) {
	if err := checkPrefix(prefix); err != nil {
		return nil, err
	}
	// Walk only the deepest directory the prefix names.
	start := b.root
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		start = b.path(prefix[:i])
	}
	var keys []string
	err := filepath.WalkDir(start, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), fileTmpPrefix) || !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(b.root, p)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if strings.HasPrefix(key, prefix) && checkKey(key) == nil {
			keys = append(keys, key)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("archive: list %q: %w", prefix, err)
	}
	slices.Sort(keys)
	return keys, nil
}

func (b *fileBackend) Delete(ctx context.Context, key string) error {
	if err := checkKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	p := b.path(key)
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("archive: delete %s: %w", key, err)
	}
	if err := fsutil.SyncDir(filepath.Dir(p)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("archive: delete %s: sync directory: %w", key, err)
	}
	return nil
}
