// Package seal encrypts archive objects on the client, so that an archive
// bucket alone reveals nothing, with AES-256-GCM (docs/OBSERVABILITY.md,
// "Archive encryption").
//
// # Sealed object layout
//
// All integers are big-endian.
//
//	offset  size  field
//	0       4     magic "WSEL"
//	4       1     version (2)
//	5       1     key id length n (1..64)
//	6       n     key id (ASCII)
//	6+n     4     chunk size c in bytes (plaintext per chunk, 4 KiB..64 MiB)
//	10+n    24    object nonce (random)
//	34+n    ...   chunks: GCM(plain[i*c:(i+1)*c]) = ciphertext || 16-byte tag
//
// Every chunk but the last holds exactly c plaintext bytes; the last holds
// 0..c (an empty object is one empty final chunk, 16 bytes of tag).
//
// # Cryptography
//
// Each object gets its own AES-256 key, HKDF-SHA256(master key, salt =
// object nonce, info = "walship seal v2 " + key id), so GCM nonces never
// repeat across objects without any coordination. Chunk i is sealed with
// the 12-byte nonce uint64(i) || 0x000000 || final, where final is 1 for
// the last chunk and 0 otherwise, and with additional data
//
//	header || uint32(len(ad)) || ad
//
// where ad is the caller's associated data: the identity of the object
// (the archive binds its name and clear-text header), so that an object
// opened under any other identity fails. Hence: a flipped bit anywhere, a
// changed header (version, key id, chunk size), reordered, dropped or
// appended chunks, a truncated object and an object moved to another
// identity all fail Open with ErrTampered. Chunking keeps each GCM message
// far below its 64 GiB limit and bounds the work wasted on a corrupt
// object.
//
// Version 1 (an earlier walship) had no associated data, so an object
// could be moved undetected; Open refuses it with ErrOldFormat, never
// falling back to it (a downgraded version byte is refused the same way).
//
// # Keys
//
// A key is 256 bits, read from a file or an environment variable (see
// ParseKey for the accepted encodings). Its id defaults to a fingerprint
// (the first 8 bytes of SHA-256("walship seal key id" || key), in hex),
// which names the key without revealing it. A Sealer seals with its first
// key and opens objects sealed with any of its keys, which is how keys are
// rotated: add the new key first, keep the old ones until the objects
// sealed with them have expired.
package seal

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
)

const (
	magic        = "WSEL"
	version      = 2
	nonceSize    = 24
	tagSize      = 16
	maxKeyIDLen  = 64
	minChunkSize = 4 << 10
	maxChunkSize = 64 << 20
	// DefaultChunkSize is the plaintext bytes per GCM chunk.
	DefaultChunkSize = 1 << 20
	// KeySize is the size of a master key in bytes.
	KeySize = 32
)

var (
	// ErrNotSealed: the data does not start with a sealed-object header
	// (it is plain, or not a walship object at all).
	ErrNotSealed = errors.New("seal: not a sealed object")
	// ErrUnknownKey: the object was sealed with a key id this Sealer does
	// not hold. The error (a *KeyIDError) names both.
	ErrUnknownKey = errors.New("seal: object sealed with an unknown key id")
	// ErrTampered: authentication failed — the object was modified,
	// truncated or extended, or the key bytes differ from the ones that
	// sealed it although the key id matches.
	ErrTampered = errors.New("seal: object failed authentication (tampered, truncated or wrong key)")
	// ErrOldFormat: the object is in sealed-object version 1, which did
	// not bind the object's identity, so it cannot be trusted where it
	// lies; it is refused.
	ErrOldFormat = errors.New("seal: sealed-object version 1 does not bind the object to its name and is refused (re-archive it with this version)")
	// ErrNoKey: no key is configured (an empty file or unset variable).
	ErrNoKey = errors.New("seal: no encryption key")
	// ErrBadKey: the key file or variable does not hold a usable key (a
	// password, a placeholder, the wrong size, not a regular file).
	ErrBadKey = errors.New("seal: not a usable key")
)

// KeyIDError says which key an object needs; errors.Is(err, ErrUnknownKey).
type KeyIDError struct {
	Want string   // key id in the object
	Have []string // key ids the Sealer holds
}

func (e *KeyIDError) Error() string {
	return fmt.Sprintf("seal: sealed with key id %s, not among the configured keys (%s)", e.Want, strings.Join(e.Have, ", "))
}

func (e *KeyIDError) Unwrap() error { return ErrUnknownKey }

// Key is a 256-bit master key and its id. Its String never prints the
// key bytes.
type Key struct {
	ID    string
	bytes [KeySize]byte
}

// String names the key by id only.
func (k Key) String() string { return "seal.Key(" + k.ID + ")" }

// GoString names the key by id only.
func (k Key) GoString() string { return k.String() }

// NewKey makes a key from 32 bytes; an empty id means the fingerprint.
// The id must be 1..64 printable ASCII characters without spaces.
func NewKey(id string, b []byte) (Key, error) {
	if len(b) != KeySize {
		return Key{}, fmt.Errorf("seal: key is %d bytes, want %d", len(b), KeySize)
	}
	var k Key
	copy(k.bytes[:], b)
	if id == "" {
		sum := sha256.Sum256(append([]byte("walship seal key id"), b...))
		id = hex.EncodeToString(sum[:8])
	}
	if err := checkKeyID(id); err != nil {
		return Key{}, err
	}
	k.ID = id
	return k, nil
}

func checkKeyID(id string) error {
	if len(id) == 0 || len(id) > maxKeyIDLen {
		return fmt.Errorf("seal: key id %q: want 1..%d characters", id, maxKeyIDLen)
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] > '~' {
			return fmt.Errorf("seal: key id %q: character %d is not printable ASCII", id, i)
		}
	}
	return nil
}

// GenerateKey returns a new random key (for tests and `walship demo`).
func GenerateKey() Key {
	b := make([]byte, KeySize)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	k, _ := NewKey("", b)
	return k
}

// ParseKey decodes key material, accepted as: exactly 32 raw (binary)
// bytes that are not text (printable characters and whitespace); 64 hexadecimal characters; or standard or URL-safe base64 (padded
// or not) of 32 bytes. Surrounding whitespace (a trailing newline) is
// ignored for the text forms. 32 printable characters are refused, since
// that is a password, not a random key (a random key is all printable
// with probability 1e-14), and so is a key whose bytes are all equal (32
// zero bytes, 64 '0's: a placeholder, not a secret). Sizes in errors count
// what was decoded, and errors never include the material; every refusal
// but an empty one (ErrNoKey) is errors.Is(err, ErrBadKey).
func ParseKey(data []byte) (Key, error) {
	s := strings.TrimSpace(string(data))
	if s == "" {
		return Key{}, ErrNoKey
	}
	if !printable([]byte(s)) {
		// Binary. Printable text with a newline is never taken for 32
		// raw bytes: that would make a 31-character password a key.
		if len(data) == KeySize {
			return checkedKey(data)
		}
		return Key{}, badKeyf("key material is %d bytes that are not text: want exactly 32 raw bytes, %s", len(data), keyForms)
	}
	if len(s) == 2*KeySize {
		if b, err := hex.DecodeString(s); err == nil {
			return checkedKey(b)
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil && len(b) == KeySize {
			return checkedKey(b)
		}
	}
	// Not a key: say why, counting what was read after trimming.
	if len(s) == KeySize {
		return Key{}, badKeyf("key material is 32 printable characters: that is a password, not a random key; want %s", keyForms)
	}
	if isHex(s) && len(s)%2 == 0 {
		return Key{}, badKeyf("key material is %d hexadecimal characters (%d bytes): want 64 (32 bytes), or base64 of 32 bytes (for example: head -c32 /dev/urandom | base64)", len(s), len(s)/2)
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return Key{}, badKeyf("key material is base64 of %d bytes: want %s", len(b), keyForms)
		}
	}
	return Key{}, badKeyf("key material is %d characters, neither hexadecimal nor base64: want %s", len(s), keyForms)
}

// badKey is a refused key; errors.Is(err, ErrBadKey).
type badKey struct{ msg string }

func badKeyf(format string, args ...any) error { return badKey{fmt.Sprintf(format, args...)} }

func (e badKey) Error() string        { return "seal: " + e.msg }
func (e badKey) Is(target error) bool { return target == ErrBadKey }

// keyForms is what a key may look like, and how to make one.
const keyForms = "64 hex characters or base64 of 32 random bytes (for example: head -c32 /dev/urandom | base64)"

// checkedKey makes a key of 32 decoded bytes, refusing one whose bytes
// are all equal.
func checkedKey(b []byte) (Key, error) {
	if bytes.Count(b, b[:1]) == len(b) {
		return Key{}, badKeyf("key material is 32 bytes all equal to 0x%02x: a placeholder, not a random key; want %s", b[0], keyForms)
	}
	return NewKey("", b)
}

func printable(b []byte) bool {
	for _, c := range b {
		if c < ' ' || c > '~' {
			return false
		}
	}
	return true
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if !strings.ContainsRune("0123456789abcdefABCDEF", rune(s[i])) {
			return false
		}
	}
	return true
}

// MaxKeyFileSize bounds what LoadKeyFile reads: a key file is at most a
// line of base64 or hex and whitespace, so anything larger is not one (and
// /dev/zero must not exhaust memory).
const MaxKeyFileSize = 4 << 10

// LoadKeyFile reads a key from a file (see ParseKey). The file must be a
// regular file (a FIFO would block, a device never end) of at most
// MaxKeyFileSize bytes; errors name the file.
func LoadKeyFile(path string) (Key, error) {
	data, err := readKeyFile(path)
	if err != nil {
		var bad badKey
		if errors.As(err, &bad) {
			return Key{}, badKeyf("key file %s %s", path, bad.msg)
		}
		return Key{}, fmt.Errorf("seal: key file: %w", err)
	}
	k, err := ParseKey(data)
	if err != nil {
		return Key{}, fmt.Errorf("%w (key file %s)", err, path)
	}
	return k, nil
}

func readKeyFile(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, badKey{"is " + fileKind(fi.Mode()) + ", not a regular file"}
	}
	// O_NONBLOCK: should the path become a FIFO between Stat and Open,
	// opening it must not wait for a writer; the opened file is checked
	// again below.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err = f.Stat(); err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, badKey{"is " + fileKind(fi.Mode()) + ", not a regular file"}
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxKeyFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxKeyFileSize {
		return nil, badKey{fmt.Sprintf("is larger than %d bytes: not a key file", MaxKeyFileSize)}
	}
	return data, nil
}

func fileKind(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&os.ModeNamedPipe != 0:
		return "a FIFO"
	case m&os.ModeSocket != 0:
		return "a socket"
	case m&os.ModeDevice != 0:
		return "a device"
	}
	return "mode " + m.String()
}

// LoadKeyEnv reads a key from an environment variable (see ParseKey);
// an unset or empty variable is ErrNoKey, and a value longer than
// MaxKeyFileSize is not a key.
func LoadKeyEnv(name string) (Key, error) {
	v, ok := os.LookupEnv(name)
	if !ok || strings.TrimSpace(v) == "" {
		return Key{}, fmt.Errorf("%w: environment variable %s is unset or empty", ErrNoKey, name)
	}
	if len(v) > MaxKeyFileSize {
		return Key{}, badKeyf("environment variable %s is larger than %d bytes: not a key", name, MaxKeyFileSize)
	}
	k, err := ParseKey([]byte(v))
	if err != nil {
		return Key{}, fmt.Errorf("%w (environment variable %s)", err, name)
	}
	return k, nil
}

// FromConfig builds the archive's Sealer from archive.encryption_key_file
// or archive.encryption_key_env (at most one may be set). With neither it
// returns (nil, nil): encryption is off.
func FromConfig(keyFile, keyEnv string) (*Sealer, error) {
	var (
		k   Key
		err error
	)
	switch {
	case keyFile != "" && keyEnv != "":
		return nil, errors.New("seal: archive.encryption_key_file and archive.encryption_key_env are both set; set one")
	case keyFile != "":
		k, err = LoadKeyFile(keyFile)
	case keyEnv != "":
		k, err = LoadKeyEnv(keyEnv)
	default:
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return New(Options{}, k)
}

// Sealer seals with its first key and opens with any of its keys. It is
// safe for concurrent use. It satisfies the archive package's
// { Seal(plain, ad []byte) ([]byte, error); Open(sealed, ad []byte) ([]byte, error); KeyID() string }.
type Sealer struct {
	keys      []Key
	chunkSize int
}

// Options tune a Sealer.
type Options struct {
	// ChunkSize is the plaintext bytes per GCM chunk; default
	// DefaultChunkSize (1 MiB), 4 KiB..64 MiB. Open reads it from the
	// object, so it may change between writers.
	ChunkSize int
}

// New returns a Sealer that seals with keys[0]. Key ids must be distinct.
func New(opts Options, keys ...Key) (*Sealer, error) {
	if len(keys) == 0 {
		return nil, ErrNoKey
	}
	if opts.ChunkSize == 0 {
		opts.ChunkSize = DefaultChunkSize
	}
	if opts.ChunkSize < minChunkSize || opts.ChunkSize > maxChunkSize {
		return nil, fmt.Errorf("seal: chunk size %d out of range %d..%d", opts.ChunkSize, minChunkSize, maxChunkSize)
	}
	seen := map[string]bool{}
	for _, k := range keys {
		if err := checkKeyID(k.ID); err != nil {
			return nil, err
		}
		if seen[k.ID] {
			return nil, fmt.Errorf("seal: key id %q given twice", k.ID)
		}
		seen[k.ID] = true
	}
	return &Sealer{keys: append([]Key(nil), keys...), chunkSize: opts.ChunkSize}, nil
}

// KeyID is the id of the key new objects are sealed with.
func (s *Sealer) KeyID() string { return s.keys[0].ID }

// Header is the clear-text header of a sealed object.
type Header struct {
	Version   int
	KeyID     string
	ChunkSize int
	Nonce     [nonceSize]byte
	Len       int // header length in bytes
}

// IsSealed reports whether data starts with the sealed-object magic.
func IsSealed(data []byte) bool { return bytes.HasPrefix(data, []byte(magic)) }

// ParseHeader reads the clear-text header, e.g. to tell an operator which
// key an object needs without holding any key.
func ParseHeader(data []byte) (Header, error) {
	if !IsSealed(data) {
		return Header{}, ErrNotSealed
	}
	if len(data) < 6 {
		return Header{}, fmt.Errorf("%w: header cut at %d bytes", ErrTampered, len(data))
	}
	switch data[4] {
	case version:
	case 1:
		return Header{}, ErrOldFormat
	default:
		return Header{}, fmt.Errorf("%w: sealed-object version %d is not supported (this build reads version %d)", ErrTampered, data[4], version)
	}
	n := int(data[5])
	hlen := 6 + n + 4 + nonceSize
	if n == 0 || n > maxKeyIDLen {
		return Header{}, fmt.Errorf("%w: key id length %d at offset 5", ErrTampered, n)
	}
	if len(data) < hlen {
		return Header{}, fmt.Errorf("%w: header needs %d bytes, object has %d", ErrTampered, hlen, len(data))
	}
	h := Header{Version: version, KeyID: string(data[6 : 6+n]), Len: hlen}
	if err := checkKeyID(h.KeyID); err != nil {
		return Header{}, fmt.Errorf("%w: %v", ErrTampered, err)
	}
	cs := binary.BigEndian.Uint32(data[6+n:])
	if cs < minChunkSize || cs > maxChunkSize {
		return Header{}, fmt.Errorf("%w: chunk size %d at offset %d", ErrTampered, cs, 6+n)
	}
	h.ChunkSize = int(cs)
	copy(h.Nonce[:], data[10+n:hlen])
	return h, nil
}

func objectAEAD(k *Key, keyID string, nonce []byte) (cipher.AEAD, error) {
	sub, err := hkdf.Key(sha256.New, k.bytes[:], nonce, "walship seal v2 "+keyID, KeySize)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(sub)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func chunkNonce(i uint64, final bool) []byte {
	var n [12]byte
	binary.BigEndian.PutUint64(n[:8], i)
	if final {
		n[11] = 1
	}
	return n[:]
}

// additionalData is what every chunk authenticates besides its bytes:
// the header and the caller's associated data, length-prefixed so that
// the two cannot be shifted into one another.
func additionalData(header, ad []byte) []byte {
	out := make([]byte, 0, len(header)+4+len(ad))
	out = append(out, header...)
	out = binary.BigEndian.AppendUint32(out, uint32(len(ad)))
	return append(out, ad...)
}

// Seal encrypts plain into a new sealed object bound to ad (the object's
// identity: Open must be given the same ad); plain is not modified.
func (s *Sealer) Seal(plain, ad []byte) ([]byte, error) {
	k := &s.keys[0]
	chunks := (len(plain) + s.chunkSize - 1) / s.chunkSize
	if chunks == 0 {
		chunks = 1
	}
	hlen := 6 + len(k.ID) + 4 + nonceSize
	out := make([]byte, hlen, hlen+len(plain)+chunks*tagSize)
	copy(out, magic)
	out[4] = version
	out[5] = byte(len(k.ID))
	copy(out[6:], k.ID)
	binary.BigEndian.PutUint32(out[6+len(k.ID):], uint32(s.chunkSize))
	nonce := out[10+len(k.ID) : hlen]
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("seal: random nonce: %w", err)
	}
	aead, err := objectAEAD(k, k.ID, nonce)
	if err != nil {
		return nil, err
	}
	header := additionalData(out[:hlen], ad)
	for i := 0; i < chunks; i++ {
		lo, hi := i*s.chunkSize, min((i+1)*s.chunkSize, len(plain))
		out = aead.Seal(out, chunkNonce(uint64(i), i == chunks-1), plain[lo:hi], header)
	}
	return out, nil
}

// Open authenticates and decrypts a sealed object sealed with the same
// ad. Errors: ErrNotSealed (no header), ErrOldFormat (version 1), a
// *KeyIDError (errors.Is ErrUnknownKey) when the key id is not
// configured, ErrTampered (with the chunk and offset) when any byte fails
// authentication or ad differs from the one it was sealed with.
func (s *Sealer) Open(sealed, ad []byte) ([]byte, error) {
	h, err := ParseHeader(sealed)
	if err != nil {
		return nil, err
	}
	var k *Key
	for i := range s.keys {
		if s.keys[i].ID == h.KeyID {
			k = &s.keys[i]
		}
	}
	if k == nil {
		ids := make([]string, len(s.keys))
		for i := range s.keys {
			ids[i] = s.keys[i].ID
		}
		return nil, &KeyIDError{Want: h.KeyID, Have: ids}
	}
	aead, err := objectAEAD(k, h.KeyID, h.Nonce[:])
	if err != nil {
		return nil, err
	}
	header, body := additionalData(sealed[:h.Len], ad), sealed[h.Len:]
	full := h.ChunkSize + tagSize
	chunks := (len(body) + full - 1) / full
	if chunks == 0 || len(body)%full != 0 && len(body)%full < tagSize {
		return nil, fmt.Errorf("%w: body of %d bytes cannot hold its chunks (truncated?)", ErrTampered, len(body))
	}
	out := make([]byte, 0, len(body)-chunks*tagSize)
	for i := 0; i < chunks; i++ {
		lo, hi := i*full, min((i+1)*full, len(body))
		out, err = aead.Open(out, chunkNonce(uint64(i), i == chunks-1), body[lo:hi], header)
		if err != nil {
			return nil, fmt.Errorf("%w: chunk %d of %d at offset %d (key id %s; or the object was moved from another name)", ErrTampered, i, chunks, h.Len+lo, h.KeyID)
		}
	}
	return out, nil
}
