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
	Seal(plain, ad []byte) ([]byte, error)
	Open(sealed, ad []byte) ([]byte, error)
	KeyID() string
}

var _ archiveSealer = (*Sealer)(nil)

// testAD stands for an object's identity, as the archive gives it.
var testAD = []byte("lineage main, segment 1-10")

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
		sealed, err := s.Seal(plain, testAD)
		if err != nil {
			t.Fatal(err)
		}
		if n >= 16 && bytes.Contains(sealed, plain[:16]) {
			t.Fatalf("n=%d: plaintext visible in sealed object", n)
		}
		got, err := s.Open(sealed, testAD)
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
	sealed, err := s.Seal(plain, testAD)
	if err != nil {
		t.Fatal(err)
	}
	if want := len(plain) + 65*tagSize + 6 + len(s.KeyID()) + 4 + nonceSize; len(sealed) != want {
		t.Fatalf("sealed size %d, want %d", len(sealed), want)
	}
	got, err := s.Open(sealed, testAD)
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("open: %v equal=%v", err, bytes.Equal(got, plain))
	}
}

func TestSameInputDifferentOutput(t *testing.T) {
	s := mustNew(t, Options{}, GenerateKey())
	a, _ := s.Seal([]byte("same"), testAD)
	b, _ := s.Seal([]byte("same"), testAD)
	if bytes.Equal(a, b) {
		t.Fatal("two seals of the same plaintext are identical (nonce reuse)")
	}
}

func TestTampered(t *testing.T) {
	s := mustNew(t, Options{ChunkSize: minChunkSize}, GenerateKey())
	plain := randBytes(3*minChunkSize + 100)
	sealed, _ := s.Seal(plain, testAD)
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
		_, err := s.Open(b, testAD)
		if !errors.Is(err, ErrTampered) {
			t.Errorf("%s: err = %v, want ErrTampered", name, err)
		}
	}
}

func TestWrongKey(t *testing.T) {
	k1, k2 := GenerateKey(), GenerateKey()
	sealed, _ := mustNew(t, Options{}, k1).Seal([]byte("payload"), testAD)

	_, err := mustNew(t, Options{}, k2).Open(sealed, testAD)
	var kerr *KeyIDError
	if !errors.Is(err, ErrUnknownKey) || !errors.As(err, &kerr) || kerr.Want != k1.ID {
		t.Fatalf("other key: err = %v", err)
	}
	if !strings.Contains(err.Error(), k1.ID) || !strings.Contains(err.Error(), k2.ID) {
		t.Fatalf("error does not name both key ids: %v", err)
	}

	// Same id, different bytes: authentication fails.
	imposter, _ := NewKey(k1.ID, randBytes(KeySize))
	if _, err := mustNew(t, Options{}, imposter).Open(sealed, testAD); !errors.Is(err, ErrTampered) {
		t.Fatalf("same id, other bytes: err = %v", err)
	}

	// Rotation: new key first, old key kept for reading.
	rot := mustNew(t, Options{}, k2, k1)
	if got, err := rot.Open(sealed, testAD); err != nil || string(got) != "payload" {
		t.Fatalf("rotated sealer: %q %v", got, err)
	}
	if rot.KeyID() != k2.ID {
		t.Fatalf("KeyID = %s, want the first key %s", rot.KeyID(), k2.ID)
	}

	if _, err := mustNew(t, Options{}, k1).Open([]byte("plain text object"), testAD); !errors.Is(err, ErrNotSealed) {
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

// TestParseKeyRefusals: a password, a placeholder key (every byte equal)
// and wrong sizes are refused (ErrBadKey) with a message that says why,
// counting what was decoded, not the trailing newline; from a file and
// from a variable alike, never repeating the material.
func TestParseKeyRefusals(t *testing.T) {
	raw := randBytes(KeySize)
	for in, want := range map[string]string{
		"correct horse battery staple 123\n":                     "key material is 32 printable characters: that is a password",
		"correct horse battery staple 12\n":                      "key material is 31 characters, neither hexadecimal nor base64",
		string(make([]byte, KeySize)):                            "key material is 32 bytes all equal to 0x00: a placeholder",
		strings.Repeat("0", 2*KeySize) + "\n":                    "key material is 32 bytes all equal to 0x00: a placeholder",
		strings.Repeat("ff", KeySize):                            "key material is 32 bytes all equal to 0xff: a placeholder",
		base64.StdEncoding.EncodeToString(make([]byte, KeySize)): "key material is 32 bytes all equal to 0x00: a placeholder",
		base64.StdEncoding.EncodeToString(raw[:18]) + "\n":       "key material is base64 of 18 bytes: want",
		hex.EncodeToString(raw[:31]) + "\n":                      "key material is 62 hexadecimal characters (31 bytes): want 64",
		string(raw) + "\n\x00":                                   "key material is 34 bytes that are not text",
		"not a key!":                                             "key material is 10 characters, neither hexadecimal nor base64",
	} {
		_, err := ParseKey([]byte(in))
		if !errors.Is(err, ErrBadKey) || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseKey(%q): %v, want ErrBadKey: %q", in, err, want)
		}
		if err != nil && strings.Contains(err.Error(), strings.TrimSpace(in)) {
			t.Errorf("error repeats the key material: %v", err)
		}
		path := filepath.Join(t.TempDir(), "k")
		os.WriteFile(path, []byte(in), 0o600)
		if _, err := LoadKeyFile(path); !errors.Is(err, ErrBadKey) || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "(key file "+path+")") {
			t.Errorf("LoadKeyFile(%q): %v, want %q naming the file", in, err, want)
		}
		if !strings.Contains(in, "\x00") {
			t.Setenv("WALSHIP_TEST_BAD_KEY", in)
			if _, err := LoadKeyEnv("WALSHIP_TEST_BAD_KEY"); !errors.Is(err, ErrBadKey) || !strings.Contains(err.Error(), want) ||
				!strings.Contains(err.Error(), "environment variable WALSHIP_TEST_BAD_KEY") {
				t.Errorf("LoadKeyEnv(%q): %v, want %q naming the variable", in, err, want)
			}
		}
	}
}

// TestLoadKeyFileBounded: a key file is read up to MaxKeyFileSize bytes;
// a larger one (or variable) is not a key, whatever it holds.
func TestLoadKeyFileBounded(t *testing.T) {
	key := hex.EncodeToString(randBytes(KeySize))
	path := filepath.Join(t.TempDir(), "k")
	os.WriteFile(path, []byte(key+strings.Repeat(" ", MaxKeyFileSize-len(key))), 0o600)
	if _, err := LoadKeyFile(path); err != nil {
		t.Fatalf("a key file of exactly %d bytes: %v", MaxKeyFileSize, err)
	}
	os.WriteFile(path, []byte(key+strings.Repeat(" ", MaxKeyFileSize+1-len(key))), 0o600)
	if _, err := LoadKeyFile(path); !errors.Is(err, ErrBadKey) || !strings.Contains(err.Error(), "key file "+path+" is larger than 4096 bytes") {
		t.Fatalf("a key file of %d bytes: %v", MaxKeyFileSize+1, err)
	}
	t.Setenv("WALSHIP_TEST_BIG_KEY", key+strings.Repeat(" ", MaxKeyFileSize))
	if _, err := LoadKeyEnv("WALSHIP_TEST_BIG_KEY"); !errors.Is(err, ErrBadKey) || !strings.Contains(err.Error(), "WALSHIP_TEST_BIG_KEY") {
		t.Fatalf("a big variable: %v", err)
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
	sealed, _ := a.Seal([]byte("x"), testAD)
	if got, err := b.Open(sealed, testAD); err != nil || string(got) != "x" || a.KeyID() != b.KeyID() {
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
	good, _ := s.Seal([]byte("hello"), testAD)
	f.Add(good)
	f.Add([]byte("WSEL"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := ParseHeader(b); err == nil {
			s.Open(b, testAD) // must not panic
		}
		if out, err := s.Open(b, testAD); err == nil && !bytes.Equal(b, good) {
			t.Fatalf("forged object opened: %q", out)
		}
	})
}

// TestBoundToItsIdentity: an object opened under another identity (an
// authentic object moved to another name) fails authentication; version 1
// objects, and a version 2 object whose version byte was set to 1, are
// refused with ErrOldFormat, never opened without the binding.
func TestBoundToItsIdentity(t *testing.T) {
	s := mustNew(t, Options{}, GenerateKey())
	sealed, err := s.Seal([]byte("payload"), []byte("main/wal/1-10"))
	if err != nil {
		t.Fatal(err)
	}
	for _, other := range [][]byte{[]byte("main/wal/11-20"), []byte("copy/wal/1-10"), nil} {
		if _, err := s.Open(sealed, other); !errors.Is(err, ErrTampered) {
			t.Errorf("opened as %q: err = %v, want ErrTampered", other, err)
		}
	}
	// A shifted boundary between header and identity is not the same AD.
	if got, err := s.Open(sealed, []byte("main/wal/1-10")); err != nil || string(got) != "payload" {
		t.Fatalf("own identity: %q %v", got, err)
	}
	downgraded := bytes.Clone(sealed)
	downgraded[4] = 1
	if _, err := s.Open(downgraded, []byte("main/wal/1-10")); !errors.Is(err, ErrOldFormat) {
		t.Fatalf("version byte set to 1: err = %v, want ErrOldFormat", err)
	}
	if _, err := ParseHeader(downgraded); !errors.Is(err, ErrOldFormat) {
		t.Fatalf("ParseHeader of version 1: err = %v, want ErrOldFormat", err)
	}
}
