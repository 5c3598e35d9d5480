package seal

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The archive package's interface, checked here so a change on either
// side fails to compile.
type archiveSealer interface {
	Seal(plain []byte) ([]byte, error)
	Open(sealed []byte) ([]byte, error)
	KeyID() string
}

var _ archiveSealer = (*Sealer)(nil)

func mustNew(t *testing.T, opts Options, keys ...Key) *Sealer {
	t.Helper()
	s, err := New(opts, keys...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func TestRoundTripSizes(t *testing.T) {
	s := mustNew(t, Options{ChunkSize: minChunkSize}, GenerateKey())
	for _, n := range []int{0, 1, 15, 16, minChunkSize - 1, minChunkSize, minChunkSize + 1, 3 * minChunkSize, 3*minChunkSize + 7} {
		plain := randBytes(n)
		sealed, err := s.Seal(plain)
		if err != nil {
			t.Fatal(err)
		}
		if n >= 16 && bytes.Contains(sealed, plain[:16]) {
			t.Fatalf("n=%d: plaintext visible in sealed object", n)
		}
		got, err := s.Open(sealed)
		if err != nil {
			t.Fatalf("n=%d: %v", n, err)
		}
		if !bytes.Equal(got, plain) {
			t.Fatalf("n=%d: round trip differs", n)
		}
	}
}

func TestLargeObject(t *testing.T) {
	s := mustNew(t, Options{}, GenerateKey())
	plain := randBytes(64<<20 + 123) // a full segment plus a bit
	sealed, err := s.Seal(plain)
	if err != nil {
		t.Fatal(err)
	}
	if want := len(plain) + 65*tagSize + 6 + len(s.KeyID()) + 4 + nonceSize; len(sealed) != want {
		t.Fatalf("sealed size %d, want %d", len(sealed), want)
	}
	got, err := s.Open(sealed)
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("open: %v equal=%v", err, bytes.Equal(got, plain))
	}
}

func TestSameInputDifferentOutput(t *testing.T) {
	s := mustNew(t, Options{}, GenerateKey())
	a, _ := s.Seal([]byte("same"))
	b, _ := s.Seal([]byte("same"))
	if bytes.Equal(a, b) {
		t.Fatal("two seals of the same plaintext are identical (nonce reuse)")
	}
}

func TestTampered(t *testing.T) {
	s := mustNew(t, Options{ChunkSize: minChunkSize}, GenerateKey())
	plain := randBytes(3*minChunkSize + 100)
	sealed, _ := s.Seal(plain)
	h, err := ParseHeader(sealed)
	if err != nil {
		t.Fatal(err)
	}
	full := minChunkSize + tagSize
	cases := map[string][]byte{}
	for _, off := range []int{h.Len, h.Len + full + 5, len(sealed) - 1, 6 + len(h.KeyID) + 30} {
		b := bytes.Clone(sealed)
		b[off] ^= 0x40
		cases[fmt.Sprintf("flip@%d", off)] = b
	}
	cases["chunk size changed"] = func() []byte {
		b := bytes.Clone(sealed)
		b[6+len(h.KeyID)+2] ^= 0x20 // 4096 -> 4096+8192
		return b
	}()
	cases["truncated at chunk boundary"] = sealed[:h.Len+3*full]
	cases["truncated mid-chunk"] = sealed[:len(sealed)-7]
	cases["chunk appended"] = append(bytes.Clone(sealed), sealed[h.Len:h.Len+full]...)
	cases["chunks swapped"] = func() []byte {
		b := bytes.Clone(sealed)
		copy(b[h.Len:], sealed[h.Len+full:h.Len+2*full])
		copy(b[h.Len+full:], sealed[h.Len:h.Len+full])
		return b
	}()
	cases["header only"] = sealed[:h.Len]
	for name, b := range cases {
		_, err := s.Open(b)
		if !errors.Is(err, ErrTampered) {
			t.Errorf("%s: err = %v, want ErrTampered", name, err)
		}
	}
}

func TestWrongKey(t *testing.T) {
	k1, k2 := GenerateKey(), GenerateKey()
	sealed, _ := mustNew(t, Options{}, k1).Seal([]byte("payload"))

	_, err := mustNew(t, Options{}, k2).Open(sealed)
	var kerr *KeyIDError
	if !errors.Is(err, ErrUnknownKey) || !errors.As(err, &kerr) || kerr.Want != k1.ID {
		t.Fatalf("other key: err = %v", err)
	}
	if !strings.Contains(err.Error(), k1.ID) || !strings.Contains(err.Error(), k2.ID) {
		t.Fatalf("error does not name both key ids: %v", err)
	}

	// Same id, different bytes: authentication fails.
	imposter, _ := NewKey(k1.ID, randBytes(KeySize))
	if _, err := mustNew(t, Options{}, imposter).Open(sealed); !errors.Is(err, ErrTampered) {
		t.Fatalf("same id, other bytes: err = %v", err)
	}

	// Rotation: new key first, old key kept for reading.
	rot := mustNew(t, Options{}, k2, k1)
	if got, err := rot.Open(sealed); err != nil || string(got) != "payload" {
		t.Fatalf("rotated sealer: %q %v", got, err)
	}
	if rot.KeyID() != k2.ID {
		t.Fatalf("KeyID = %s, want the first key %s", rot.KeyID(), k2.ID)
	}

	if _, err := mustNew(t, Options{}, k1).Open([]byte("plain text object")); !errors.Is(err, ErrNotSealed) {
		t.Fatalf("plain object: err = %v", err)
	}
	if _, err := New(Options{}); !errors.Is(err, ErrNoKey) {
		t.Fatalf("no keys: err = %v", err)
	}
}

func TestParseKey(t *testing.T) {
	raw := randBytes(KeySize)
	want, _ := NewKey("", raw)
	for name, in := range map[string]string{
		"raw":       string(raw),
		"hex":       hex.EncodeToString(raw) + "\n",
		"HEX":       strings.ToUpper(hex.EncodeToString(raw)),
		"base64":    base64.StdEncoding.EncodeToString(raw) + "\n",
		"rawbase64": base64.RawStdEncoding.EncodeToString(raw),
		"urlbase64": base64.URLEncoding.EncodeToString(raw),
	} {
		k, err := ParseKey([]byte(in))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if k.ID != want.ID || k.bytes != want.bytes {
			t.Errorf("%s: got key %s, want %s", name, k.ID, want.ID)
		}
	}
	for _, bad := range []string{"short", hex.EncodeToString(raw[:16]), base64.StdEncoding.EncodeToString(raw[:31])} {
		_, err := ParseKey([]byte(bad))
		if err == nil {
			t.Errorf("ParseKey(%q) accepted", bad)
		} else if strings.Contains(err.Error(), bad) {
			t.Errorf("error repeats the key material: %v", err)
		}
	}
	if _, err := ParseKey([]byte("  \n")); !errors.Is(err, ErrNoKey) {
		t.Errorf("empty: %v", err)
	}
	if s := fmt.Sprintf("%v %+v %#v", want, want, want); strings.Contains(s, string(raw)) || strings.Contains(s, hex.EncodeToString(raw)) {
		t.Errorf("Key prints its bytes: %s", s)
	}
}

func TestLoadKey(t *testing.T) {
	raw := randBytes(KeySize)
	path := filepath.Join(t.TempDir(), "archive.key")
	os.WriteFile(path, []byte(hex.EncodeToString(raw)+"\n"), 0o600)
	k, err := LoadKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("WALSHIP_TEST_KEY", base64.StdEncoding.EncodeToString(raw))
	k2, err := LoadKeyEnv("WALSHIP_TEST_KEY")
	if err != nil || k2.ID != k.ID {
		t.Fatalf("env key %v %v, file key %v", k2, err, k)
	}
	if _, err := LoadKeyEnv("WALSHIP_TEST_KEY_UNSET"); !errors.Is(err, ErrNoKey) || !strings.Contains(err.Error(), "WALSHIP_TEST_KEY_UNSET") {
		t.Fatalf("unset env: %v", err)
	}
	if _, err := LoadKeyFile(path + ".missing"); err == nil || !strings.Contains(err.Error(), "archive.key.missing") {
		t.Fatalf("missing file: %v", err)
	}
	os.WriteFile(path, []byte("not a key"), 0o600)
	if _, err := LoadKeyFile(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("bad file: %v", err)
	}
}

func TestFromConfig(t *testing.T) {
	raw := randBytes(KeySize)
	path := filepath.Join(t.TempDir(), "k")
	os.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(raw)), 0o600)
	t.Setenv("WALSHIP_TEST_KEY2", hex.EncodeToString(raw))
	a, err := FromConfig(path, "")
	if err != nil {
		t.Fatal(err)
	}
	b, err := FromConfig("", "WALSHIP_TEST_KEY2")
	if err != nil {
		t.Fatal(err)
	}
	sealed, _ := a.Seal([]byte("x"))
	if got, err := b.Open(sealed); err != nil || string(got) != "x" || a.KeyID() != b.KeyID() {
		t.Fatalf("file and env keys differ: %v %q", err, got)
	}
	if s, err := FromConfig("", ""); s != nil || err != nil {
		t.Fatalf("no key: %v %v", s, err)
	}
	if _, err := FromConfig(path, "X"); err == nil {
		t.Fatal("both set accepted")
	}
}

func FuzzOpen(f *testing.F) {
	s, _ := New(Options{ChunkSize: minChunkSize}, GenerateKey())
	good, _ := s.Seal([]byte("hello"))
	f.Add(good)
	f.Add([]byte("WSEL"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := ParseHeader(b); err == nil {
			s.Open(b) // must not panic
		}
		if out, err := s.Open(b); err == nil && !bytes.Equal(b, good) {
			t.Fatalf("forged object opened: %q", out)
		}
	})
}
