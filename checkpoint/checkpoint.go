package checkpoint

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/walship/walship/vfs"
	"github.com/walship/walship/walerr"
)

const (
	// MaxNameLen is the longest checkpoint name.
	MaxNameLen = 64
	// MaxPayload is the largest payload a checkpoint may carry.
	MaxPayload = 64 << 10

	fileSuffix = ".ckpt"
	tmpSuffix  = ".ckpt.tmp"

	magic      = "WCKP"
	version    = 1
	headerLen  = 28
	trailerLen = 4
	maxFileLen = headerLen + MaxNameLen + MaxPayload + trailerLen
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var (
	// ErrBackward is returned (wrapped) by Set when the new position is
	// below the stored one.
	ErrBackward = errors.New("checkpoint: position moves backward")
	// ErrInvalidName is returned (wrapped, with the name) for a name that
	// does not match [a-z0-9._-]{1,64}.
	ErrInvalidName = errors.New("checkpoint: invalid name")
	// ErrPayloadTooLarge is returned (wrapped) for a payload over MaxPayload.
	ErrPayloadTooLarge = errors.New("checkpoint: payload too large")
)

// corrupt reports a checkpoint file that cannot be trusted (Object: its
// path). Open returns it (possibly several, joined) rather than skip the
// file.
func corrupt(path, reason string) error {
	return &walerr.CorruptionError{Component: "checkpoint", Object: path, Offset: -1, Reason: reason}
}

// Checkpoint is one name's durable position.
type Checkpoint struct {
	Name string
	Pos  uint64
	// Payload is opaque to the Store, at most MaxPayload bytes; nil when
	// empty. Checkpoints returned by a Store own their Payload.
	Payload []byte
	// Updated is when the checkpoint was written, in UTC, to the
	// nanosecond.
	Updated time.Time
}

// Options configure a Store. The zero value is valid; every field has a
// default.
type Options struct {
	// Now returns the time recorded as Updated. Default time.Now.
	Now func() time.Time
	// Logger receives reports of what Open cleaned up or ignored. Default:
	// discard.
	Logger *slog.Logger
}

// Store holds the checkpoints of one directory. Its methods are safe for
// concurrent use. Writes to one name are serialized, in the order they
// acquire the name; writes to different names proceed concurrently.
type Store struct {
	fs  vfs.FS
	dir string
	now func() time.Time
	log *slog.Logger

	mu struct {
		sync.Mutex
		// ckpts holds the last acknowledged checkpoint of each name.
		ckpts map[string]Checkpoint
		// registered is the set of names Min ranges over.
		registered map[string]bool
		// locks serialize writes per name: a write holds the name's
		// token (a send on the channel) for its whole I/O. Entries are
		// never removed.
		locks map[string]chan struct{}
	}
}

// Open reads every checkpoint in dir (creating dir if it does not exist),
// removes temporary files left by an interrupted write, and returns a Store
// on which every name with a checkpoint is registered. It fails with a
// *walerr.CorruptionError (several joined by errors.Join if several files are
// corrupt; errors.As finds the first) if any checkpoint file is damaged, and
// with a wrapped I/O error if dir cannot be read. ctx is checked between
// files.
func Open(ctx context.Context, fsys vfs.FS, dir string, opts Options) (*Store, error) {
	if fsys == nil {
		return nil, errors.New("checkpoint: Open with nil vfs.FS")
	}
	s := &Store{fs: fsys, dir: dir, now: opts.Now, log: opts.Logger}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.mu.ckpts = map[string]Checkpoint{}
	s.mu.registered = map[string]bool{}
	s.mu.locks = map[string]chan struct{}{}

	ents, err := fsys.List(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if err := fsys.MkdirAll(dir); err != nil {
			return nil, fmt.Errorf("checkpoint: create directory: %w", err)
		}
		if err := fsys.SyncDir(filepath.Dir(filepath.Clean(dir))); err != nil {
			return nil, fmt.Errorf("checkpoint: create directory: %w", err)
		}
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("checkpoint: open %s: %w", dir, err)
	}

	var corrupt []error
	removed := 0
	for _, ent := range ents {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("checkpoint: open %s: %w", dir, err)
		}
		path := vfs.Join(dir, ent)
		switch {
		case strings.HasSuffix(ent, tmpSuffix):
			if err := fsys.Remove(path); err != nil {
				return nil, fmt.Errorf("checkpoint: remove stale temporary file: %w", err)
			}
			removed++
			s.log.Info("checkpoint: removed temporary file of an interrupted write", "path", path)
		case strings.HasSuffix(ent, fileSuffix):
			name := strings.TrimSuffix(ent, fileSuffix)
			if validateName(name) != nil {
				s.log.Warn("checkpoint: ignoring file with an invalid checkpoint name", "path", path)
				continue
			}
			c, err := readFile(fsys, path, name)
			if errors.Is(err, walerr.ErrCorruption) {
				corrupt = append(corrupt, err)
				continue
			}
			if err != nil {
				return nil, err
			}
			s.mu.ckpts[name] = c
			s.mu.registered[name] = true
		default:
			s.log.Warn("checkpoint: ignoring unrecognised file", "path", path)
		}
	}
	if removed > 0 {
		if err := fsys.SyncDir(dir); err != nil {
			return nil, fmt.Errorf("checkpoint: remove stale temporary files: %w", err)
		}
	}
	if len(corrupt) > 0 {
		return nil, errors.Join(corrupt...)
	}
	return s, nil
}

// readFile reads and decodes the checkpoint of name at path.
func readFile(fsys vfs.FS, path, name string) (Checkpoint, error) {
	f, err := fsys.Open(path)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint: read %s: %w", path, err)
	}
	defer f.Close()
	size, err := f.Size()
	if err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint: read %s: %w", path, err)
	}
	if size > maxFileLen {
		return Checkpoint{}, corrupt(path, fmt.Sprintf("file is %d bytes, more than the largest record (%d)", size, maxFileLen))
	}
	buf := make([]byte, size)
	n, err := f.ReadAt(buf, 0)
	if err != nil && !(err == io.EOF && n == len(buf)) {
		return Checkpoint{}, fmt.Errorf("checkpoint: read %s: %w", path, err)
	}
	c, err := decode(buf)
	if err != nil {
		return Checkpoint{}, corrupt(path, err.Error())
	}
	if c.Name != name {
		return Checkpoint{}, corrupt(path, fmt.Sprintf("record is for name %q, not %q", c.Name, name))
	}
	return c, nil
}

// encode returns c's file content. c must be valid.
func encode(c Checkpoint) []byte {
	b := make([]byte, headerLen, headerLen+len(c.Name)+len(c.Payload)+trailerLen)
	copy(b, magic)
	binary.LittleEndian.PutUint16(b[4:], version)
	binary.LittleEndian.PutUint16(b[6:], uint16(len(c.Name)))
	binary.LittleEndian.PutUint32(b[8:], uint32(len(c.Payload)))
	binary.LittleEndian.PutUint64(b[12:], c.Pos)
	binary.LittleEndian.PutUint64(b[20:], uint64(c.Updated.UnixNano()))
	b = append(b, c.Name...)
	b = append(b, c.Payload...)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// decode parses a file's content. Its errors say what is wrong; the caller
// adds the path. It checks every length against the bytes present before
// using it, and never retains b.
func decode(b []byte) (Checkpoint, error) {
	if len(b) < headerLen+trailerLen {
		return Checkpoint{}, fmt.Errorf("file is %d bytes, shorter than the smallest record (%d)", len(b), headerLen+trailerLen+1)
	}
	if string(b[:4]) != magic {
		return Checkpoint{}, fmt.Errorf("bad magic %q", b[:4])
	}
	body := b[:len(b)-trailerLen]
	if got, want := crc32.Checksum(body, castagnoli), binary.LittleEndian.Uint32(b[len(body):]); got != want {
		return Checkpoint{}, fmt.Errorf("checksum mismatch: computed %#08x, stored %#08x", got, want)
	}
	if v := binary.LittleEndian.Uint16(b[4:]); v != version {
		return Checkpoint{}, fmt.Errorf("unsupported format version %d", v)
	}
	nameLen := int(binary.LittleEndian.Uint16(b[6:]))
	payloadLen := int64(binary.LittleEndian.Uint32(b[8:]))
	if nameLen < 1 || nameLen > MaxNameLen {
		return Checkpoint{}, fmt.Errorf("name length %d outside [1, %d]", nameLen, MaxNameLen)
	}
	if payloadLen > MaxPayload {
		return Checkpoint{}, fmt.Errorf("payload length %d over %d", payloadLen, MaxPayload)
	}
	if want := headerLen + int64(nameLen) + payloadLen + trailerLen; int64(len(b)) != want {
		return Checkpoint{}, fmt.Errorf("file is %d bytes, record says %d", len(b), want)
	}
	c := Checkpoint{
		Name:    string(b[headerLen : headerLen+nameLen]),
		Pos:     binary.LittleEndian.Uint64(b[12:]),
		Updated: time.Unix(0, int64(binary.LittleEndian.Uint64(b[20:]))).UTC(),
	}
	if err := validateName(c.Name); err != nil {
		return Checkpoint{}, fmt.Errorf("record name %q is not a valid name", c.Name)
	}
	if payloadLen > 0 {
		c.Payload = bytes.Clone(b[headerLen+nameLen : len(body)])
	}
	return c, nil
}

// validateName reports whether name matches [a-z0-9._-]{1,64}.
func validateName(name string) error {
	ok := len(name) >= 1 && len(name) <= MaxNameLen
	for i := 0; ok && i < len(name); i++ {
		c := name[i]
		ok = 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-'
	}
	if !ok {
		return fmt.Errorf("%w %q: want 1 to %d of [a-z0-9._-]", ErrInvalidName, name, MaxNameLen)
	}
	return nil
}

// Set durably records that name is at pos, with payload (copied; at most
// MaxPayload bytes, nil or empty for none), and registers name. It returns
// once the checkpoint is on stable storage, or with an error, in which case
// the stored value is unchanged. A pos below the stored one fails with
// ErrBackward; an equal pos is allowed (to update the payload).
//
// Set blocks while another write to the same name is in progress; ctx bounds
// that wait. Once its I/O has begun (a create, write, fsync, rename and
// directory fsync) it runs to completion.
func (s *Store) Set(ctx context.Context, name string, pos uint64, payload []byte) error {
	return s.write(ctx, name, pos, payload, false)
}

// SetBackward is Set without the forward-only check: it may record a
// position below the stored one (a sink rewound on purpose).
func (s *Store) SetBackward(ctx context.Context, name string, pos uint64, payload []byte) error {
	return s.write(ctx, name, pos, payload, true)
}

// Reset durably sets name to position 0 with no payload, keeping it
// registered, so that it holds back retention to the start of the log.
func (s *Store) Reset(ctx context.Context, name string) error {
	return s.write(ctx, name, 0, nil, true)
}

func (s *Store) write(ctx context.Context, name string, pos uint64, payload []byte, backward bool) error {
	if err := validateName(name); err != nil {
		return err
	}
	if len(payload) > MaxPayload {
		return fmt.Errorf("checkpoint: set %s: payload of %d bytes, over %d: %w", name, len(payload), MaxPayload, ErrPayloadTooLarge)
	}
	unlock, err := s.lockName(ctx, name)
	if err != nil {
		return fmt.Errorf("checkpoint: set %s: %w", name, err)
	}
	defer unlock()

	s.mu.Lock()
	cur, ok := s.mu.ckpts[name]
	s.mu.Unlock()
	if ok && !backward && pos < cur.Pos {
		return fmt.Errorf("checkpoint: set %s: position %d is below the stored %d: %w", name, pos, cur.Pos, ErrBackward)
	}
	c := Checkpoint{Name: name, Pos: pos, Updated: time.Unix(0, s.now().UnixNano()).UTC()}
	if len(payload) > 0 {
		c.Payload = bytes.Clone(payload)
	}
	if err := s.writeFile(c); err != nil {
		return fmt.Errorf("checkpoint: set %s: %w", name, err)
	}
	s.mu.Lock()
	s.mu.ckpts[name] = c
	s.mu.registered[name] = true
	s.mu.Unlock()
	return nil
}

// writeFile makes c durable: write a temporary file, fsync it, rename it over
// the checkpoint file, fsync the directory. The caller holds c.Name's lock.
// On a failure before the rename, the temporary file is removed (best
// effort: Open removes any left over).
func (s *Store) writeFile(c Checkpoint) error {
	final := s.path(c.Name)
	tmp := final[:len(final)-len(fileSuffix)] + tmpSuffix
	f, err := s.fs.Create(tmp)
	if err != nil {
		return err
	}
	_, err = f.WriteAt(encode(c), 0)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = s.fs.Rename(tmp, final)
	}
	if err != nil {
		_ = s.fs.Remove(tmp)
		return err
	}
	return s.fs.SyncDir(s.dir)
}

func (s *Store) path(name string) string { return vfs.Join(s.dir, name+fileSuffix) }

// lockName waits, within ctx, for the right to write name, and returns the
// function that gives it back.
func (s *Store) lockName(ctx context.Context, name string) (func(), error) {
	s.mu.Lock()
	l, ok := s.mu.locks[name]
	if !ok {
		l = make(chan struct{}, 1)
		s.mu.locks[name] = l
	}
	s.mu.Unlock()
	select {
	case l <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	// select picks at random when both cases are ready.
	if err := ctx.Err(); err != nil {
		<-l
		return nil, err
	}
	return func() { <-l }, nil
}

// Get returns name's last acknowledged checkpoint, and false if it has none.
// It does no I/O.
func (s *Store) Get(name string) (Checkpoint, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.mu.ckpts[name]
	c.Payload = bytes.Clone(c.Payload)
	return c, ok
}

// All returns every checkpoint, sorted by name. Names registered but never
// set have no checkpoint and are not included.
func (s *Store) All() []Checkpoint {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Checkpoint, 0, len(s.mu.ckpts))
	for _, name := range slices.Sorted(maps.Keys(s.mu.ckpts)) {
		c := s.mu.ckpts[name]
		c.Payload = bytes.Clone(c.Payload)
		out = append(out, c)
	}
	return out
}

// Register adds name to the names Min ranges over; until its first Set it
// counts as position 0. Registering is not durable: a name that has no
// checkpoint yet must be registered again after a restart, before Min is
// used to delete anything. Registering a registered name does nothing.
func (s *Store) Register(name string) error {
	if err := validateName(name); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mu.registered[name] = true
	return nil
}

// Unregister durably deletes name's checkpoint file, then removes name from
// Get, All and Min. On an error the name stays registered with its value,
// which keeps retention conservative; calling Unregister again is safe.
// Unregistering an unknown name is not an error. It waits for a write to
// name in progress, within ctx.
func (s *Store) Unregister(ctx context.Context, name string) error {
	if err := validateName(name); err != nil {
		return err
	}
	unlock, err := s.lockName(ctx, name)
	if err != nil {
		return fmt.Errorf("checkpoint: unregister %s: %w", name, err)
	}
	defer unlock()
	if err := s.fs.Remove(s.path(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("checkpoint: unregister %s: %w", name, err)
	}
	// Even if the file was already gone: an earlier Unregister may have
	// removed it and then failed to sync the directory.
	if err := s.fs.SyncDir(s.dir); err != nil {
		return fmt.Errorf("checkpoint: unregister %s: %w", name, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.mu.ckpts, name)
	delete(s.mu.registered, name)
	return nil
}

// Min returns the lowest position over the registered names, a registered
// name without a checkpoint counting as 0, and the name holding it (the
// first in sort order on a tie): the retention watermark. ok is false when
// no name is registered: then no checkpoint constrains retention, and the
// caller must decide on its own policy. It does no I/O.
func (s *Store) Min() (pos uint64, name string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for n := range s.mu.registered {
		p := s.mu.ckpts[n].Pos
		if !ok || p < pos || (p == pos && n < name) {
			pos, name, ok = p, n, true
		}
	}
	return pos, name, ok
}
