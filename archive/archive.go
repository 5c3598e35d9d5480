package archive

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/klauspost/compress/zstd"
	"github.com/walship/walship/change"

	"github.com/walship/walship/internal/fsutil"
)

// Sealer is the optional client-side encryption of segment and snapshot
// bodies (after compression) and of their manifests: an AEAD. Seal binds the sealed bytes to ad, the object's identity; Open
// must fail unless given the same ad. KeyID names the key (derived from
// it, never the key itself); it is recorded in the object header and
// manifest, and must be at most 255 bytes. Seal and Open must be safe for
// concurrent use and must not retain their input. package internal/seal
// implements it.
type Sealer interface {
	Seal(plain, ad []byte) ([]byte, error)
	Open(sealed, ad []byte) ([]byte, error)
	KeyID() string
}

// Options configure an Archive. The zero value is valid.
type Options struct {
	// Backend configures OpenBackend (Open only).
	Backend BackendOptions
	// Compression of segment and snapshot bodies: "zstd" (default) or
	// "none".
	Compression string
	// CompressionLevel is the zstd level, on zstd's scale (1 fastest ...
	// 22); klauspost/compress maps it to its nearest implemented level
	// (1, 3, 7 or 11). Default 1: it ships markedly faster than level 3 for
	// slightly larger objects (the archive suite measures both:
	// bench/README.md, bench/archive.go).
	// Reading does not depend on it.
	CompressionLevel int
	// Seal, if set, encrypts and authenticates the segments, snapshots
	// and manifests written, and every one read must then be sealed by
	// it under its own key (name): anything else is refused as a
	// *SealError (docs/ARCHIVE.md §10).
	Seal Sealer
	// Concurrency is how many manifests Catalog fetches at once. Default
	// 32.
	Concurrency int
	// Logger defaults to discard.
	Logger *slog.Logger
	// Now is the clock for Created fields. Default time.Now.
	Now func() time.Time
}

// Validate reports the first bad field.
func (o *Options) Validate() error {
	switch o.Compression {
	case "", "zstd", "none":
	default:
		return fmt.Errorf("archive: Options.Compression %q: want zstd or none", o.Compression)
	}
	if o.CompressionLevel < 0 || o.CompressionLevel > 22 {
		return fmt.Errorf("archive: Options.CompressionLevel %d: want 1 to 22 (0 for the default)", o.CompressionLevel)
	}
	if o.Concurrency < 0 {
		return fmt.Errorf("archive: Options.Concurrency %d is negative", o.Concurrency)
	}
	if o.Seal != nil && len(o.Seal.KeyID()) > 255 {
		return fmt.Errorf("archive: Options.Seal key id is %d bytes, at most 255", len(o.Seal.KeyID()))
	}
	return o.Backend.Validate()
}

// Archive is the object layout of docs/ARCHIVE.md over a Backend: segment
// and snapshot objects with manifests, lineages and their owners. Its
// methods are safe for concurrent use.
type Archive struct {
	b     Backend
	opts  Options
	codec byte
	enc   *zstd.Encoder
	dec   *zstd.Decoder
	log   *slog.Logger

	closeOnce sync.Once
}

// Open opens the archive at url (see OpenBackend).
func Open(ctx context.Context, url string, opts Options) (*Archive, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	bo := opts.Backend
	if bo.Logger == nil {
		bo.Logger = opts.Logger
	}
	b, err := OpenBackend(ctx, url, bo)
	if err != nil {
		return nil, err
	}
	return New(b, opts)
}

// New returns an Archive over an open backend (tests wrap backends to
// inject faults). opts.Backend is ignored.
func New(b Backend, opts Options) (*Archive, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.Concurrency == 0 {
		opts.Concurrency = 32
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	a := &Archive{b: b, opts: opts, log: opts.Logger, codec: codecZstd}
	if opts.Compression == "none" {
		a.codec = codecNone
	}
	level := zstd.SpeedFastest
	if opts.CompressionLevel > 0 {
		level = zstd.EncoderLevelFromZstd(opts.CompressionLevel)
	}
	var err error
	a.enc, err = zstd.NewWriter(nil, zstd.WithEncoderLevel(level),
		zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)), zstd.WithLowerEncoderMem(false))
	if err != nil {
		return nil, fmt.Errorf("archive: zstd encoder: %w", err)
	}
	a.dec, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(maxRawSize))
	if err != nil {
		return nil, fmt.Errorf("archive: zstd decoder: %w", err)
	}
	return a, nil
}

// maxRawSize bounds a decompressed body held in memory.
const maxRawSize = 4 << 30

// Close releases the compressor's and decompressor's resources. The
// Archive must not be used afterwards; Close is idempotent.
func (a *Archive) Close() error {
	a.closeOnce.Do(func() {
		a.dec.Close()
		_ = a.enc.Close()
	})
	return nil
}

// Backend returns the archive's backend.
func (a *Archive) Backend() Backend { return a.b }

// Retries returns how many backend calls were retried (0 for backends
// without retries).
func (a *Archive) Retries() uint64 {
	if r, ok := a.b.(interface{ Retries() uint64 }); ok {
		return r.Retries()
	}
	return 0
}

func (a *Archive) keyID() string {
	if a.opts.Seal == nil {
		return ""
	}
	return a.opts.Seal.KeyID()
}

// pack compresses and seals plain behind header h, as the object key.
func (a *Archive) pack(key string, h objectHeader, plain []byte) ([]byte, error) {
	h.codec, h.keyID = a.codec, a.keyID()
	body := plain
	if a.codec == codecZstd {
		body = a.compress(plain)
	}
	out := h.append(make([]byte, 0, 64+len(body)))
	if a.opts.Seal != nil {
		sealed, err := a.opts.Seal.Seal(body, objectAD(key, out))
		if err != nil {
			return nil, fmt.Errorf("archive: seal %s: %w", key, err)
		}
		body = sealed
	}
	return append(out, body...), nil
}

// compressChunk is the plaintext size above which a body is compressed
// as several zstd frames in parallel (concatenated frames are one valid
// zstd stream; the ratio loss at 4 MiB is negligible).
const compressChunk = 4 << 20

func (a *Archive) compress(plain []byte) []byte {
	n := (len(plain) + compressChunk - 1) / compressChunk
	if n <= 1 || runtime.GOMAXPROCS(0) == 1 {
		return a.enc.EncodeAll(plain, make([]byte, 0, len(plain)/4+64))
	}
	parts := make([][]byte, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			chunk := plain[i*compressChunk : min((i+1)*compressChunk, len(plain))]
			parts[i] = a.enc.EncodeAll(chunk, make([]byte, 0, len(chunk)/4+64))
		}()
	}
	wg.Wait()
	size := 0
	for _, p := range parts {
		size += len(p)
	}
	out := make([]byte, 0, size)
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// unpack opens and decompresses the body of a verified object (obj is
// the whole object, body its part after the header h). With a Sealer the
// object must be sealed and authentic under key.
func (a *Archive) unpack(key string, h objectHeader, obj, body []byte, rawSize int64) ([]byte, error) {
	if err := a.checkSealed(key, h.keyID, h.version < sealedFormatVersion); err != nil {
		return nil, err
	}
	if h.keyID != "" {
		plain, err := a.opts.Seal.Open(body, objectAD(key, obj[:len(obj)-len(body)]))
		if err != nil {
			return nil, &SealError{Key: key, Kind: ErrUnauthentic, Err: err, KeyID: h.keyID}
		}
		body = plain
	}
	if h.codec == codecZstd {
		if rawSize < 0 || rawSize > maxRawSize {
			return nil, corruptf(key, "raw size %d out of range", rawSize)
		}
		out, err := a.dec.DecodeAll(body, make([]byte, 0, rawSize))
		if err != nil {
			return nil, corruptf(key, "zstd: %v", err)
		}
		body = out
	}
	if int64(len(body)) != rawSize {
		return nil, corruptf(key, "decoded %d bytes, manifest says %d", len(body), rawSize)
	}
	return body, nil
}

// checksum is an object's checksum: XXH64, 16 hex digits. It detects
// corruption and truncation many times faster than SHA-256, which made
// verification the bottleneck of a restore's reads; protection
// against deliberate tampering is the Sealer's job (an AEAD).
func checksum(b []byte) string {
	return fmt.Sprintf("%016x", xxhash.Sum64(b))
}

// EncodedSegment is a segment object built by EncodeSegment, ready for
// StoreSegment.
type EncodedSegment struct {
	Manifest SegmentManifest
	Object   []byte
}

// EncodeSegment builds the object and manifest for txns, whole
// transactions of lineage in LSN order. The segment covers LSNs
// first..txns[len-1].CommitLSN; first (0 means txns[0].FirstLSN) may be
// lower than txns[0].FirstLSN, and transactions need not be adjacent: the
// LSNs between them are those of transactions aborted midway
// (wal.AppendStream), which wal.Reader skips. Covering them keeps
// consecutive segments adjacent, so a gap between segments always means
// missing data.
func (a *Archive) EncodeSegment(lineage string, first uint64, txns []change.Committed) (*EncodedSegment, error) {
	if err := CheckLineage(lineage); err != nil {
		return nil, err
	}
	size := 0
	for i := range txns {
		size += txnSize(&txns[i])
	}
	b := NewSegmentBuilder(lineage, first, size)
	for i := range txns {
		if err := b.addTxn(&txns[i]); err != nil {
			return nil, fmt.Errorf("archive: EncodeSegment: transaction %d: %w", i, err)
		}
	}
	return a.Finish(b)
}

// StoreSegment stores an encoded segment: the object with PutIfAbsent,
// then its manifest with PutIfAbsent. The segment is part of the archive
// once the manifest is stored, so a crash in between leaves only an
// orphan object that Catalog reports and a later StoreSegment of the same
// range adopts.
//
// If the object key exists already (an earlier attempt, possibly of this
// very call through a retried request) the stored object is fetched,
// verified and decoded: if it holds the same transactions, its bytes are
// what the manifest describes; otherwise StoreSegment fails with
// ErrExists and stores nothing, never replacing an object. Likewise an
// existing manifest is accepted only if it describes the same range and
// its object verifies. It returns the manifest stored.
func (a *Archive) StoreSegment(ctx context.Context, s *EncodedSegment) (SegmentManifest, error) {
	m := s.Manifest
	err := a.b.PutIfAbsent(ctx, m.Key, s.Object)
	if errors.Is(err, ErrExists) {
		m, err = a.adoptSegment(ctx, s)
	}
	if err != nil {
		return SegmentManifest{}, err
	}
	mb, err := a.encodeDoc(ManifestKey(m.Key), &m)
	if err != nil {
		return SegmentManifest{}, err
	}
	err = a.b.PutIfAbsent(ctx, ManifestKey(m.Key), mb)
	if errors.Is(err, ErrExists) {
		var old SegmentManifest
		old, err = a.getSegmentManifest(ctx, ManifestKey(m.Key))
		if err == nil && (old.FirstLSN != m.FirstLSN || old.LastLSN != m.LastLSN || old.Lineage != m.Lineage) {
			err = fmt.Errorf("archive: %s exists and describes another range: %w", ManifestKey(m.Key), ErrExists)
		}
		if err == nil {
			if _, err = a.FetchSegment(ctx, old); err != nil {
				err = fmt.Errorf("archive: %s exists but its object does not verify: %w", ManifestKey(m.Key), err)
			}
		}
		m = old
	}
	if err != nil {
		return SegmentManifest{}, err
	}
	return m, nil
}

// adoptSegment decides whether an existing object under s's key holds
// the same transactions as s (an earlier attempt) and returns the
// manifest describing the stored bytes.
func (a *Archive) adoptSegment(ctx context.Context, s *EncodedSegment) (SegmentManifest, error) {
	m := s.Manifest
	obj, err := a.b.Get(ctx, m.Key)
	if err != nil {
		return m, fmt.Errorf("archive: %s exists but cannot be read back: %w", m.Key, err)
	}
	if bytes.Equal(obj, s.Object) {
		return m, nil
	}
	// Sealing may be randomized: compare plaintexts.
	theirs, h, err := a.plainOf(m.Key, obj, m.RawSize)
	if err == nil {
		var ours []byte
		if ours, _, err = a.plainOf(m.Key, s.Object, m.RawSize); err == nil && !bytes.Equal(theirs, ours) {
			err = errors.New("it holds different transactions")
		}
	}
	if err != nil {
		return m, fmt.Errorf("archive: %s already exists and is not this segment (%v); not replacing it: %w", m.Key, err, ErrExists)
	}
	m.Size, m.Checksum, m.Codec, m.KeyID = int64(len(obj)), checksum(obj), codecName(h.codec), h.keyID
	return m, nil
}

func (a *Archive) plainOf(key string, obj []byte, rawSize int64) ([]byte, objectHeader, error) {
	h, body, err := parseObjectHeader(key, segmentMagic, obj)
	if err != nil {
		return nil, h, err
	}
	p, err := a.unpack(key, h, obj, body, rawSize)
	return p, h, err
}

// FetchSegment downloads m's object and verifies its size and checksum
// against the manifest and its header against the manifest's range. It
// returns the verified object bytes; errors.Is(err, ErrNotFound) if the
// object is missing, a *walerr.CorruptionError naming the key if it does not
// verify.
func (a *Archive) FetchSegment(ctx context.Context, m SegmentManifest) ([]byte, error) {
	obj, err := a.b.Get(ctx, m.Key)
	if err != nil {
		return nil, fmt.Errorf("archive: segment %s: %w", m.Key, err)
	}
	if int64(len(obj)) != m.Size {
		return nil, corruptf(m.Key, "size %d, manifest says %d", len(obj), m.Size)
	}
	if checksum(obj) != m.Checksum {
		return nil, corruptf(m.Key, "checksum (XXH64) mismatch")
	}
	h, _, err := parseObjectHeader(m.Key, segmentMagic, obj)
	if err != nil {
		return nil, err
	}
	if h.lineage != m.Lineage || h.a != m.FirstLSN || h.b != m.LastLSN {
		return nil, corruptf(m.Key, "header says lineage %q LSNs %d..%d, manifest %q %d..%d",
			h.lineage, h.a, h.b, m.Lineage, m.FirstLSN, m.LastLSN)
	}
	return obj, nil
}

// DecodeSegment decodes an object FetchSegment returned.
func (a *Archive) DecodeSegment(m SegmentManifest, obj []byte) ([]change.Committed, error) {
	h, body, err := parseObjectHeader(m.Key, segmentMagic, obj)
	if err != nil {
		return nil, err
	}
	plain, err := a.unpack(m.Key, h, obj, body, m.RawSize)
	if err != nil {
		return nil, err
	}
	txns, err := decodeTxns(m.Key, plain, m.FirstLSN, m.LastLSN)
	if err != nil {
		return nil, err
	}
	if len(txns) != m.Txns {
		return nil, corruptf(m.Key, "%d transactions, manifest says %d", len(txns), m.Txns)
	}
	return txns, nil
}

// ReadSegment fetches, verifies and decodes m's object: the whole
// transactions with LSNs m.FirstLSN..m.LastLSN, in order. Errors as
// FetchSegment's. It blocks for one download; call it concurrently to
// prefetch.
func (a *Archive) ReadSegment(ctx context.Context, m SegmentManifest) ([]change.Committed, error) {
	obj, err := a.FetchSegment(ctx, m)
	if err != nil {
		return nil, err
	}
	return a.DecodeSegment(m, obj)
}

// PutSnapshot stores the SQLite database file dbFile as the snapshot of
// lineage at commit LSN lsn (commitTime being that transaction's commit
// time): object first, then manifest, both with PutIfAbsent. The caller
// must not modify dbFile meanwhile. ErrExists if a snapshot at lsn exists.
// The file is held in memory while it is stored.
func (a *Archive) PutSnapshot(ctx context.Context, lineage string, lsn uint64, commitTime time.Time, dbFile string) error {
	if err := CheckLineage(lineage); err != nil {
		return err
	}
	plain, err := os.ReadFile(dbFile)
	if err != nil {
		return fmt.Errorf("archive: snapshot: %w", err)
	}
	key := SnapshotKey(lineage, lsn)
	obj, err := a.pack(key, objectHeader{magic: snapshotMagic, lineage: lineage, a: lsn, b: uint64(commitTime.UnixNano())}, plain)
	if err != nil {
		return err
	}
	m := SnapshotManifest{
		Lineage: lineage, LSN: lsn, CommitTime: commitTime.UTC(), Key: key,
		Size: int64(len(obj)), RawSize: int64(len(plain)), Checksum: checksum(obj),
		Codec: codecName(a.codec), KeyID: a.keyID(), Created: a.opts.Now().UTC(),
	}
	if err := a.b.PutIfAbsent(ctx, m.Key, obj); err != nil {
		return fmt.Errorf("archive: snapshot: %w", err)
	}
	mb, err := a.encodeDoc(ManifestKey(m.Key), &m)
	if err != nil {
		return err
	}
	if err := a.b.PutIfAbsent(ctx, ManifestKey(m.Key), mb); err != nil {
		return fmt.Errorf("archive: snapshot manifest: %w", err)
	}
	return nil
}

// GetSnapshot downloads s, verifies it and writes the database to
// dstFile atomically (a temporary file beside it, fsynced, renamed).
// Errors as FetchSegment's.
func (a *Archive) GetSnapshot(ctx context.Context, s SnapshotManifest, dstFile string) error {
	obj, err := a.b.Get(ctx, s.Key)
	if err != nil {
		return fmt.Errorf("archive: snapshot %s: %w", s.Key, err)
	}
	if int64(len(obj)) != s.Size {
		return corruptf(s.Key, "size %d, manifest says %d", len(obj), s.Size)
	}
	if checksum(obj) != s.Checksum {
		return corruptf(s.Key, "checksum (XXH64) mismatch")
	}
	h, body, err := parseObjectHeader(s.Key, snapshotMagic, obj)
	if err != nil {
		return err
	}
	if h.lineage != s.Lineage || h.a != s.LSN {
		return corruptf(s.Key, "header says lineage %q LSN %d, manifest %q %d", h.lineage, h.a, s.Lineage, s.LSN)
	}
	plain, err := a.unpack(s.Key, h, obj, body, s.RawSize)
	if err != nil {
		return err
	}
	dir := filepath.Dir(dstFile)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(dstFile)+".tmp-")
	if err != nil {
		return fmt.Errorf("archive: snapshot %s: %w", s.Key, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, bytes.NewReader(plain)); err != nil {
		tmp.Close()
		return fmt.Errorf("archive: snapshot %s: write %s: %w", s.Key, tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("archive: snapshot %s: fsync: %w", s.Key, err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), dstFile); err != nil {
		return fmt.Errorf("archive: snapshot %s: %w", s.Key, err)
	}
	return fsutil.SyncDir(dir)
}

func (a *Archive) getSegmentManifest(ctx context.Context, key string) (SegmentManifest, error) {
	var m SegmentManifest
	b, err := a.b.Get(ctx, key)
	if err != nil {
		return m, err
	}
	if err := a.decodeDoc(key, b, &m); err != nil {
		return m, err
	}
	return m, checkSegmentManifest(key, &m)
}

// checkSegmentManifest checks a decoded manifest against its own key.
func checkSegmentManifest(key string, m *SegmentManifest) error {
	lineage, rest, _ := strings.Cut(key, walDir)
	first, last, ok := parseSegmentName(strings.TrimSuffix(rest, manifestSuffix))
	switch {
	case !ok:
		return corruptf(key, "not a segment manifest key")
	case m.Lineage != lineage || m.FirstLSN != first || m.LastLSN != last:
		return corruptf(key, "manifest says lineage %q LSNs %d..%d", m.Lineage, m.FirstLSN, m.LastLSN)
	case m.Key != SegmentKey(lineage, first, last):
		return corruptf(key, "manifest names object %q", m.Key)
	case m.Txns <= 0 || uint64(m.Txns) > last-first+1 || m.Size <= 0 || m.RawSize < 0 || len(m.Checksum) != 16:
		return corruptf(key, "manifest fields out of range")
	case m.LastCommitTime.Before(m.FirstCommitTime):
		return corruptf(key, "commit times decrease")
	}
	return nil
}

func (a *Archive) getSnapshotManifest(ctx context.Context, key string) (SnapshotManifest, error) {
	var m SnapshotManifest
	b, err := a.b.Get(ctx, key)
	if err != nil {
		return m, err
	}
	if err := a.decodeDoc(key, b, &m); err != nil {
		return m, err
	}
	lineage, rest, _ := strings.Cut(key, snapDir)
	lsn, ok := parseSnapshotName(strings.TrimSuffix(rest, manifestSuffix))
	if !ok || m.Lineage != lineage || m.LSN != lsn || m.Key != SnapshotKey(lineage, lsn) || m.Size <= 0 || len(m.Checksum) != 16 {
		return m, corruptf(key, "snapshot manifest disagrees with its key")
	}
	return m, nil
}

// txnSize estimates a transaction's encoded size.
func txnSize(t *change.Committed) int {
	n := 32
	for j := range t.Changes {
		var hdr *change.TxHeader
		if j == 0 {
			hdr = &t.Header
		}
		n += change.RecordSize(hdr, &t.Changes[j]) + 4
	}
	return n
}
