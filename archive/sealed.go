package archive

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/walship/walship/walerr"
)

// An encrypted archive (Options.Seal set) is one in which every object,
// manifest and lineage record is sealed and bound to its own key: the
// reader's configuration, not anything stored in the bucket, says that
// the archive is encrypted, so a bucket writer cannot downgrade it by
// writing plain objects, by deleting a marker or by moving authentic
// objects (docs/ARCHIVE.md §10).

var (
	// ErrEncrypted matches every *EncryptedError: a sealed object met
	// without a key. It is not corruption.
	ErrEncrypted = errors.New("archive: the archive is encrypted")
	// ErrUnsealed: a plain object, manifest or record met with a key: it
	// was written without the key, or forged. A *SealError.
	ErrUnsealed = errors.New("archive: not sealed, but an encryption key is configured: every object of an encrypted archive must be sealed")
	// ErrUnauthentic: a sealed object that fails authentication under its
	// own key — modified, sealed with a key that is not configured, or an
	// authentic object moved to another key (another lineage, LSN range or
	// kind). A *SealError; the sealer's own error is wrapped too.
	ErrUnauthentic = errors.New("archive: sealed object fails authentication")
	// ErrOldFormat: encrypted in the archive format of an earlier walship,
	// which neither sealed manifests nor bound objects to their keys, and
	// so cannot be trusted where it lies. A *SealError.
	ErrOldFormat = errors.New("archive: encrypted in format 1, which neither authenticated manifests nor bound objects to their names: refused (read it with the walship release that wrote it, or archive afresh into a new location)")
)

// EncryptedError: the object at Key is sealed with key id KeyID and the
// Archive has no Sealer.
type EncryptedError struct {
	Key, KeyID string
}

func (e *EncryptedError) Error() string {
	return fmt.Sprintf("archive: %s is sealed with key id %s and no encryption key is configured: the archive is encrypted", e.Key, e.KeyID)
}

// Is reports whether target is ErrEncrypted.
func (e *EncryptedError) Is(target error) bool { return target == ErrEncrypted }

// SealError refuses the object at Key in an encrypted archive. Kind is
// ErrUnsealed, ErrUnauthentic or ErrOldFormat; Err is the sealer's error,
// if any (errors.Is(err, seal.ErrUnknownKey) for an unknown key id). It
// is damage: errors.Is(err, walerr.ErrCorruption).
type SealError struct {
	Key  string
	Kind error
	Err  error
	// KeyID is the key id the object names ("" if it is plain).
	KeyID string
}

func (e *SealError) Error() string {
	why := e.Kind.Error()
	if e.Err != nil {
		why = e.Err.Error()
	}
	return "archive: refused " + e.Key + ": " + strings.TrimPrefix(why, "archive: ")
}

// Is reports whether target is walerr.ErrCorruption.
func (e *SealError) Is(target error) bool { return target == walerr.ErrCorruption }

// Unwrap returns Kind and Err.
func (e *SealError) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

// objectAD is the identity a sealed object is bound to: its key (which
// names the lineage, the kind and the LSN range or position) and its
// clear-text header (lineage, LSNs, codec, key id).
func objectAD(key string, header []byte) []byte {
	out := make([]byte, 0, 32+len(key)+len(header))
	out = append(out, "walship archive object\x00"...)
	out = append(out, key...)
	out = append(out, 0)
	return append(out, header...)
}

// docAD is the identity a sealed manifest is bound to:
// its key and its frame head (magic and key id).
func docAD(key string, head []byte) []byte {
	out := make([]byte, 0, 32+len(key)+len(head))
	out = append(out, "walship archive document\x00"...)
	out = append(out, key...)
	out = append(out, 0)
	return append(out, head...)
}

// checkSealed applies the encrypted-archive rule to an object at key
// whose header names keyID ("" if plain); oldFormat marks a sealed object
// of format 1.
func (a *Archive) checkSealed(key, keyID string, oldFormat bool) error {
	switch {
	case a.opts.Seal == nil && keyID != "":
		return &EncryptedError{Key: key, KeyID: keyID}
	case a.opts.Seal != nil && keyID == "":
		return &SealError{Key: key, Kind: ErrUnsealed}
	case keyID != "" && oldFormat:
		return &SealError{Key: key, Kind: ErrOldFormat, KeyID: keyID}
	}
	return nil
}

// encodeDoc frames a manifest stored at key: plain
// (encodeManifest) without a Sealer; with one,
//
//	"WSM2" keyidLen:u8 keyid sealed(JSON, ad = docAD(key, head))
//
// where head is everything before the sealed bytes.
func (a *Archive) encodeDoc(key string, v any) ([]byte, error) {
	if a.opts.Seal == nil {
		return encodeManifest(v)
	}
	js, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	id := a.opts.Seal.KeyID()
	head := append([]byte(sealedManifestMagic), byte(len(id)))
	head = append(head, id...)
	sealed, err := a.opts.Seal.Seal(js, docAD(key, head))
	if err != nil {
		return nil, fmt.Errorf("archive: seal %s: %w", key, err)
	}
	return append(head, sealed...), nil
}

// decodeDoc reads what encodeDoc wrote at key (a manifest) into v, applying the
// encrypted-archive rule: with a Sealer only a sealed document bound to
// key is accepted; without one, a sealed document is an *EncryptedError.
func (a *Archive) decodeDoc(key string, b []byte, v any) error {
	if !strings.HasPrefix(string(b[:min(len(b), len(sealedManifestMagic))]), sealedManifestMagic) {
		if err := decodeManifest(key, b, v); err != nil {
			return err
		}
		if a.opts.Seal == nil {
			return nil
		}
		// A plain document that names a key id was written by a walship
		// whose encrypted archives did not seal manifests.
		var old struct {
			KeyID string `json:"key_id"`
		}
		const head = len(manifestMagic) + 1 + 64 + 1
		if json.Unmarshal(b[head:len(b)-1], &old) == nil && old.KeyID != "" {
			return &SealError{Key: key, Kind: ErrOldFormat}
		}
		return &SealError{Key: key, Kind: ErrUnsealed}
	}
	rest := b[len(sealedManifestMagic):]
	if len(rest) < 1 || len(rest) < 1+int(rest[0]) || rest[0] == 0 {
		return corruptf(key, "sealed manifest header truncated")
	}
	n := int(rest[0])
	id, hlen := string(rest[1:1+n]), len(sealedManifestMagic)+1+n
	if a.opts.Seal == nil {
		return &EncryptedError{Key: key, KeyID: id}
	}
	js, err := a.opts.Seal.Open(b[hlen:], docAD(key, b[:hlen]))
	if err != nil {
		return &SealError{Key: key, Kind: ErrUnauthentic, Err: err, KeyID: id}
	}
	dec := json.NewDecoder(strings.NewReader(string(js)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return corruptf(key, "manifest: %v", err)
	}
	return nil
}
