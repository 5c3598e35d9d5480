package archive

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/walship/walship/change"
	"github.com/walship/walship/walerr"
)

// Key layout (docs/ARCHIVE.md). All numbers are 16 lower-case hex digits,
// so keys sort by LSN.
const (
	lineagesDir    = "lineages/"
	lineageSuffix  = ".json"
	ownerSuffix    = ".owner"
	walDir         = "/wal/"
	snapDir        = "/snap/"
	segmentSuffix  = ".wsa"
	snapshotSuffix = ".wss"
	manifestSuffix = ".wsm"

	segmentMagic  = "WSEG"
	snapshotMagic = "WSNP"
	manifestMagic = "WSM1"
	// sealedManifestMagic frames a manifest sealed with Options.Seal.
	sealedManifestMagic = "WSM2"
	// formatVersion is the header version of a plain object;
	// sealedFormatVersion that of a sealed one, whose body is bound to
	// its key and header (version 1 sealed objects were not: refused).
	formatVersion       = 1
	sealedFormatVersion = 2

	codecNone byte = 0
	codecZstd byte = 1
)

// corruptf reports an object or manifest whose bytes cannot be trusted (a
// checksum mismatch, a bad header, undecodable contents, or contents that
// disagree with the manifest): a *walerr.CorruptionError whose Object is
// the key.
func corruptf(key, format string, args ...any) error {
	return &walerr.CorruptionError{Component: "archive", Object: key, Offset: -1, Reason: fmt.Sprintf(format, args...)}
}

// CheckLineage validates a lineage id: 1 to 64 bytes of [a-z0-9._-],
// starting with a letter or digit, and not "lineages".
func CheckLineage(id string) error {
	if id == "" || len(id) > 64 {
		return fmt.Errorf("archive: lineage %q: want 1 to 64 characters", id)
	}
	if id == strings.TrimSuffix(lineagesDir, "/") {
		return fmt.Errorf("archive: lineage %q is reserved", id)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || (i > 0 && (c == '.' || c == '_' || c == '-'))
		if !ok {
			return fmt.Errorf("archive: lineage %q: byte %q at %d is not allowed (want [a-z0-9][a-z0-9._-]*)", id, c, i)
		}
	}
	return nil
}

func hex16(n uint64) string { return fmt.Sprintf("%016x", n) }

// SegmentKey is the key of the segment object holding LSNs first..last of
// lineage; its manifest's key is ManifestKey(SegmentKey(...)).
func SegmentKey(lineage string, first, last uint64) string {
	return lineage + walDir + hex16(first) + "-" + hex16(last) + segmentSuffix
}

// SnapshotKey is the key of the snapshot of lineage at lsn.
func SnapshotKey(lineage string, lsn uint64) string {
	return lineage + snapDir + hex16(lsn) + snapshotSuffix
}

// ManifestKey returns the manifest key of an object key.
func ManifestKey(objectKey string) string {
	return strings.TrimSuffix(strings.TrimSuffix(objectKey, segmentSuffix), snapshotSuffix) + manifestSuffix
}

func lineageKey(id string) string { return lineagesDir + id + lineageSuffix }
func ownerKey(id string) string   { return lineagesDir + id + ownerSuffix }

// parseSegmentName parses "<first>-<last>" (the file name less its
// suffix).
func parseSegmentName(name string) (first, last uint64, ok bool) {
	if len(name) != 33 || name[16] != '-' {
		return 0, 0, false
	}
	f, err1 := strconv.ParseUint(name[:16], 16, 64)
	l, err2 := strconv.ParseUint(name[17:], 16, 64)
	if err1 != nil || err2 != nil || f == 0 || l < f || strings.ToLower(name) != name {
		return 0, 0, false
	}
	return f, l, true
}

func parseSnapshotName(name string) (lsn uint64, ok bool) {
	if len(name) != 16 || strings.ToLower(name) != name {
		return 0, false
	}
	n, err := strconv.ParseUint(name, 16, 64)
	return n, err == nil
}

// RestorePoint is a named restore point: a logical message (op m) with
// prefix RestorePointPrefix whose content is the name. LSN is the commit
// LSN of the transaction holding it, CommitTime that transaction's.
type RestorePoint struct {
	Name       string    `json:"name"`
	LSN        uint64    `json:"lsn"`
	CommitTime time.Time `json:"commit_time"`
}

// RestorePointPrefix is the logical-message prefix of a named restore
// point (the same as pitr.RestorePointPrefix).
const RestorePointPrefix = "walship.restore_point"

// SegmentManifest describes one segment object: everything a restore plan
// needs without downloading it.
type SegmentManifest struct {
	Lineage string `json:"lineage"`
	// FirstLSN..LastLSN is the LSN range the segment covers: LastLSN is
	// the commit LSN of its last transaction, FirstLSN the LSN after the
	// previous segment's LastLSN (LSNs of aborted transactions belong to
	// no transaction, see EncodeSegment).
	FirstLSN uint64 `json:"first_lsn"`
	LastLSN  uint64 `json:"last_lsn"`
	// Txns is the number of transactions; LastLSN-FirstLSN+1 the number of
	// changes.
	Txns            int       `json:"txns"`
	FirstCommitTime time.Time `json:"first_commit_time"`
	LastCommitTime  time.Time `json:"last_commit_time"`
	// FirstSourceLSN and LastSourceLSN are the first and last non-zero
	// source commit LSNs (0 if no transaction has one).
	FirstSourceLSN uint64 `json:"first_source_lsn"`
	LastSourceLSN  uint64 `json:"last_source_lsn"`
	// MinXID and MaxXID bound the non-zero source xids (0 if none).
	MinXID        uint64         `json:"min_xid"`
	MaxXID        uint64         `json:"max_xid"`
	RestorePoints []RestorePoint `json:"restore_points,omitempty"`
	Key           string         `json:"key"`
	Size          int64          `json:"size"`     // object bytes as stored
	RawSize       int64          `json:"raw_size"` // encoded transactions before compression
	Checksum      string         `json:"xxh64"`    // XXH64 of the stored object, 16 hex digits
	Codec         string         `json:"codec"`    // "zstd" or "none"
	KeyID         string         `json:"key_id,omitempty"`
	Created       time.Time      `json:"created"`
}

// SnapshotManifest describes one base snapshot: a SQLite replica holding
// the effect of every transaction of Lineage up to commit LSN LSN.
type SnapshotManifest struct {
	Lineage    string    `json:"lineage"`
	LSN        uint64    `json:"lsn"`
	CommitTime time.Time `json:"commit_time"`
	Key        string    `json:"key"`
	Size       int64     `json:"size"`
	RawSize    int64     `json:"raw_size"`
	Checksum   string    `json:"xxh64"`
	Codec      string    `json:"codec"`
	KeyID      string    `json:"key_id,omitempty"`
	Created    time.Time `json:"created"`
}

// LineageRecord is the stored description of a lineage
// (lineages/<id>.json), written once.
type LineageRecord struct {
	ID string `json:"id"`
	// Parent is the lineage this one branched from ("" for a root) and
	// ParentLSN the last LSN of the parent's history it includes.
	Parent    string    `json:"parent,omitempty"`
	ParentLSN uint64    `json:"parent_lsn,omitempty"`
	Created   time.Time `json:"created"`
}

// ownerRecord is lineages/<id>.owner: the node allowed to archive into
// the lineage.
type ownerRecord struct {
	Lineage string    `json:"lineage"`
	Node    string    `json:"node"`
	Created time.Time `json:"created"`
}

// encodeManifest frames a JSON document as
//
//	"WSM1 " <64 hex digits: SHA-256 of the JSON> "\n" <JSON> "\n"
func encodeManifest(v any) ([]byte, error) {
	js, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(js)
	out := make([]byte, 0, len(js)+71)
	out = append(out, manifestMagic+" "...)
	out = hex.AppendEncode(out, sum[:])
	out = append(out, '\n')
	out = append(out, js...)
	return append(out, '\n'), nil
}

func decodeManifest(key string, b []byte, v any) error {
	const head = len(manifestMagic) + 1 + 64 + 1
	if len(b) < head+1 || string(b[:len(manifestMagic)+1]) != manifestMagic+" " || b[head-1] != '\n' || b[len(b)-1] != '\n' {
		return corruptf(key, "not a manifest (want %q header, %d bytes)", manifestMagic, len(b))
	}
	js := b[head : len(b)-1]
	sum := sha256.Sum256(js)
	if hex.EncodeToString(sum[:]) != string(b[len(manifestMagic)+1:head-1]) {
		return corruptf(key, "manifest checksum mismatch")
	}
	dec := json.NewDecoder(strings.NewReader(string(js)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return corruptf(key, "manifest: %v", err)
	}
	return nil
}

// objectHeader is the clear-text head of a segment or snapshot object:
//
//	magic[4] version:u8 codec:u8 keyidLen:u8 keyid lineageLen:u8 lineage
//	a:u64le b:u64le
//
// (segments: a,b = first,last LSN; snapshots: a = LSN, b = commit time in
// Unix nanoseconds). Version 1 for a plain object (keyidLen 0), 2 for a
// sealed one.
type objectHeader struct {
	magic   string
	version byte
	codec   byte
	keyID   string
	lineage string
	a, b    uint64
}

func (h *objectHeader) append(dst []byte) []byte {
	dst = append(dst, h.magic...)
	v := byte(formatVersion)
	if h.keyID != "" {
		v = sealedFormatVersion
	}
	dst = append(dst, v, h.codec, byte(len(h.keyID)))
	dst = append(dst, h.keyID...)
	dst = append(dst, byte(len(h.lineage)))
	dst = append(dst, h.lineage...)
	dst = binary.LittleEndian.AppendUint64(dst, h.a)
	return binary.LittleEndian.AppendUint64(dst, h.b)
}

func parseObjectHeader(key, magic string, b []byte) (objectHeader, []byte, error) {
	var h objectHeader
	if len(b) < 7 || string(b[:4]) != magic {
		return h, nil, corruptf(key, "bad magic (want %q)", magic)
	}
	if b[4] != formatVersion && b[4] != sealedFormatVersion {
		return h, nil, corruptf(key, "unsupported format version %d", b[4])
	}
	h.magic, h.version, h.codec = magic, b[4], b[5]
	if h.codec != codecNone && h.codec != codecZstd {
		return h, nil, corruptf(key, "unknown codec %d", h.codec)
	}
	rest := b[6:]
	n := int(rest[0])
	if len(rest) < 1+n+1 {
		return h, nil, corruptf(key, "header truncated")
	}
	h.keyID, rest = string(rest[1:1+n]), rest[1+n:]
	n = int(rest[0])
	if len(rest) < 1+n+16 {
		return h, nil, corruptf(key, "header truncated")
	}
	h.lineage, rest = string(rest[1:1+n]), rest[1+n:]
	if h.version == sealedFormatVersion && h.keyID == "" {
		return h, nil, corruptf(key, "format version %d without a key id", h.version)
	}
	h.a = binary.LittleEndian.Uint64(rest)
	h.b = binary.LittleEndian.Uint64(rest[8:])
	return h, rest[16:], nil
}

func codecName(c byte) string {
	if c == codecZstd {
		return "zstd"
	}
	return "none"
}

// The plaintext of a segment is its transactions, in LSN order:
//
//	txn    = first_lsn:uvarint n:uvarint commit_sec:varint commit_nsec:uvarint n × rec
//	rec    = len:uvarint record (change.AppendRecord bytes; the first with the header)
//
// (segmentBuilder writes it.)

// decodeTxns decodes what appendTxns wrote and checks that the
// transactions are whole, in LSN order, within first..last, and that the
// last one commits at last.
func decodeTxns(key string, b []byte, first, last uint64) ([]change.Committed, error) {
	var txns []change.Committed
	next := first
	off := 0
	uv := func(what string) (uint64, error) {
		v, n := binary.Uvarint(b[off:])
		if n <= 0 {
			return 0, corruptf(key, "bad %s at payload offset %d", what, off)
		}
		off += n
		return v, nil
	}
	for off < len(b) {
		start := off
		f, err := uv("first LSN")
		if err != nil {
			return nil, err
		}
		n, err := uv("change count")
		if err != nil {
			return nil, err
		}
		sec, k := binary.Varint(b[off:])
		if k <= 0 {
			return nil, corruptf(key, "bad commit time at payload offset %d", off)
		}
		off += k
		nsec, err := uv("commit time")
		if err != nil {
			return nil, err
		}
		// LSNs between transactions belong to aborted transactions
		// (wal.AppendStream), which are not part of the log's content.
		if f < next || f > last {
			return nil, corruptf(key, "transaction at payload offset %d starts at LSN %d, want %d..%d", start, f, next, last)
		}
		if n == 0 || n > last-f+1 || nsec >= 1e9 {
			return nil, corruptf(key, "transaction at LSN %d: bad change count %d or commit time", f, n)
		}
		t := change.Committed{FirstLSN: f, CommitLSN: f + n - 1, CommitTime: time.Unix(sec, int64(nsec)).UTC()}
		t.Changes = make([]change.Change, 0, n)
		for j := uint64(0); j < n; j++ {
			l, err := uv("record length")
			if err != nil {
				return nil, err
			}
			if l > uint64(len(b)-off) {
				return nil, corruptf(key, "record of LSN %d overruns the payload", f+j)
			}
			hdr, c, err := change.DecodeRecord(b[off : off+int(l)])
			if err != nil {
				return nil, corruptf(key, "record of LSN %d: %v", f+j, err)
			}
			if (j == 0) != (hdr != nil) {
				return nil, corruptf(key, "record of LSN %d: transaction header misplaced", f+j)
			}
			if hdr != nil {
				t.Header = *hdr
			}
			t.Changes = append(t.Changes, c)
			off += int(l)
		}
		txns = append(txns, t)
		next = t.CommitLSN + 1
	}
	if len(txns) == 0 || next != last+1 {
		return nil, corruptf(key, "last transaction commits at LSN %d, want %d", next-1, last)
	}
	return txns, nil
}
