package archive

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/walship/walship/change"
	"github.com/walship/walship/walerr"
)

// SegmentBuilder accumulates whole transactions into a segment object's
// plaintext (see appendTxns for the layout) and its manifest fields;
// Archive.Finish turns it into the object. The archiver fills one while
// the previous one is compressed and uploaded. Not safe for concurrent
// use.
type SegmentBuilder struct {
	m     SegmentManifest
	next  uint64 // lowest LSN the next transaction may start at
	plain []byte
}

// NewSegmentBuilder starts the segment of lineage whose first
// transaction begins at LSN first; capHint is the plaintext capacity to
// allocate up front.
func NewSegmentBuilder(lineage string, first uint64, capHint int) *SegmentBuilder {
	return &SegmentBuilder{
		m:     SegmentManifest{Lineage: lineage, FirstLSN: first},
		next:  first,
		plain: make([]byte, 0, capHint),
	}
}

// Empty reports that no transaction was added.
func (b *SegmentBuilder) Empty() bool { return b.m.Txns == 0 }

// Size is the plaintext's size so far in bytes.
func (b *SegmentBuilder) Size() int { return len(b.plain) }

// LastLSN is the commit LSN of the last transaction added.
func (b *SegmentBuilder) LastLSN() uint64 { return b.m.LastLSN }

// note records a transaction's manifest facts and checks its place.
func (b *SegmentBuilder) note(firstLSN, commitLSN uint64, n int, commit time.Time, h *change.TxHeader) error {
	if b.m.FirstLSN == 0 {
		b.m.FirstLSN, b.next = firstLSN, firstLSN
	}
	if firstLSN < b.next || n == 0 || commitLSN != firstLSN+uint64(n)-1 || firstLSN == 0 {
		return fmt.Errorf("archive: transaction at LSNs %d..%d (%d changes) is not whole or does not follow LSN %d",
			firstLSN, commitLSN, n, b.next-1)
	}
	commit = commit.UTC()
	if b.m.Txns > 0 && commit.Before(b.m.LastCommitTime) {
		return fmt.Errorf("archive: transaction at LSN %d commits at %v, before the previous one (%v)", firstLSN, commit, b.m.LastCommitTime)
	}
	b.next = commitLSN + 1
	if b.m.Txns == 0 {
		b.m.FirstCommitTime = commit
	}
	b.m.Txns++
	b.m.LastLSN, b.m.LastCommitTime = commitLSN, commit
	if s := h.SourceLSN; s != 0 {
		if b.m.FirstSourceLSN == 0 {
			b.m.FirstSourceLSN = s
		}
		b.m.LastSourceLSN = s
	}
	if x := h.XID; x != 0 {
		if b.m.MinXID == 0 || x < b.m.MinXID {
			b.m.MinXID = x
		}
		b.m.MaxXID = max(b.m.MaxXID, x)
	}
	return nil
}

func (b *SegmentBuilder) noteMessage(c *change.Change, commitLSN uint64, commit time.Time) {
	if c.Op == change.Message && c.Message != nil && c.Message.Prefix == RestorePointPrefix {
		b.m.RestorePoints = append(b.m.RestorePoints, RestorePoint{Name: string(c.Message.Content), LSN: commitLSN, CommitTime: commit.UTC()})
	}
}

func appendTxnHead(dst []byte, first uint64, n int, commit time.Time) []byte {
	dst = binary.AppendUvarint(dst, first)
	dst = binary.AppendUvarint(dst, uint64(n))
	dst = binary.AppendVarint(dst, commit.Unix())
	return binary.AppendUvarint(dst, uint64(commit.Nanosecond()))
}

// addTxn appends a decoded transaction.
func (b *SegmentBuilder) addTxn(t *change.Committed) error {
	if err := b.note(t.FirstLSN, t.CommitLSN, len(t.Changes), t.CommitTime, &t.Header); err != nil {
		return err
	}
	b.plain = appendTxnHead(b.plain, t.FirstLSN, len(t.Changes), t.CommitTime)
	for j := range t.Changes {
		var hdr *change.TxHeader
		if j == 0 {
			hdr = &t.Header
		}
		b.noteMessage(&t.Changes[j], t.CommitLSN, t.CommitTime)
		b.plain = binary.AppendUvarint(b.plain, uint64(change.RecordSize(hdr, &t.Changes[j])))
		b.plain = change.AppendRecord(b.plain, hdr, &t.Changes[j])
	}
	return nil
}

// RawTxn is a transaction as read from the log, its records not decoded:
// recs holds n × (len:uvarint record). NewRawTxn makes one.
type RawTxn struct {
	first, commit uint64
	n             int
	commitTime    time.Time
	hdr           change.TxHeader
	recs          []byte
	// messages are the decoded logical-message changes (restore points).
	messages []change.Change
}

// NewRawTxn reads what a segment object needs from a transaction's
// undecoded records (each preceded by its length as a uvarint): the
// header's xid and source LSN, and the logical messages (restore points),
// decoding a record fully only when peeking is not enough. It checks that
// the header is on the first record only. first and commit are the
// transaction's first and commit LSNs; the records must number
// commit-first+1.
func NewRawTxn(first, commit uint64, commitTime time.Time, records []byte) (*RawTxn, error) {
	t := &RawTxn{first: first, commit: commit, commitTime: commitTime, recs: records}
	for b, lsn := records, first; len(b) > 0; lsn++ {
		n, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < n {
			return nil, fmt.Errorf("archive: %w: WAL record at LSN %d: length runs past the transaction's records", walerr.ErrCorruption, lsn)
		}
		data := b[k : k+int(n)]
		b = b[k+int(n):]
		hasHdr, xid, src, op, ok := peekRecord(data)
		if !ok || hasHdr != (t.n == 0) || op == byte(change.Message) {
			hdr, c, err := change.DecodeRecord(data)
			if err != nil {
				return nil, fmt.Errorf("archive: WAL record at LSN %d: %w", lsn, err)
			}
			if (hdr != nil) != (t.n == 0) {
				return nil, fmt.Errorf("archive: %w: WAL record at LSN %d: transaction header misplaced", walerr.ErrCorruption, lsn)
			}
			if hdr != nil {
				t.hdr = *hdr
			}
			if c.Op == change.Message {
				t.messages = append(t.messages, c)
			}
		} else if hasHdr {
			t.hdr.XID, t.hdr.SourceLSN = xid, src
		}
		t.n++
	}
	if uint64(t.n) != commit-first+1 {
		return nil, fmt.Errorf("archive: %w: transaction %d..%d has %d records", walerr.ErrCorruption, first, commit, t.n)
	}
	return t, nil
}

// AddRaw appends a transaction read from the log. Transactions must come
// in LSN order without gaps.
func (b *SegmentBuilder) AddRaw(t *RawTxn) error {
	if err := b.note(t.first, t.commit, t.n, t.commitTime, &t.hdr); err != nil {
		return err
	}
	for i := range t.messages {
		b.noteMessage(&t.messages[i], t.commit, t.commitTime)
	}
	b.plain = appendTxnHead(b.plain, t.first, t.n, t.commitTime)
	b.plain = append(b.plain, t.recs...)
	return nil
}

// Finish compresses, seals and checksums the segment.
func (a *Archive) Finish(b *SegmentBuilder) (*EncodedSegment, error) {
	if b.Empty() {
		return nil, errors.New("archive: EncodeSegment: no transactions")
	}
	m := b.m
	m.Key = SegmentKey(m.Lineage, m.FirstLSN, m.LastLSN)
	obj, err := a.pack(m.Key, objectHeader{magic: segmentMagic, lineage: m.Lineage, a: m.FirstLSN, b: m.LastLSN}, b.plain)
	if err != nil {
		return nil, err
	}
	m.Size, m.RawSize, m.Checksum = int64(len(obj)), int64(len(b.plain)), checksum(obj)
	m.Codec, m.KeyID = codecName(a.codec), a.keyID()
	m.Created = a.opts.Now().UTC()
	return &EncodedSegment{Manifest: m, Object: obj}, nil
}

// peekRecord reads what the archiver needs from a binary change record
// (docs/CHANGE-ENCODING.md §1) without decoding it: the transaction
// header's xid and source LSN if present, and the op. ok is false if the
// record does not parse this far; the caller then decodes it fully.
func peekRecord(b []byte) (hasHdr bool, xid, sourceLSN uint64, op byte, ok bool) {
	const (
		flagHeader    = 1 << 0
		hdrSourceLSN  = 1 << 0
		hdrCommitTime = 1 << 1
		hdrOrigin     = 1 << 2
	)
	if len(b) < 3 || b[0] != change.RecordVersion {
		return
	}
	off := 2
	uv := func() (uint64, bool) {
		v, n := binary.Uvarint(b[off:])
		if n <= 0 {
			return 0, false
		}
		off += n
		return v, true
	}
	if b[1]&flagHeader != 0 {
		hasHdr = true
		hf := b[off]
		off++
		if hf&^(hdrSourceLSN|hdrCommitTime|hdrOrigin) != 0 {
			return
		}
		var good bool
		if xid, good = uv(); !good {
			return
		}
		if hf&hdrSourceLSN != 0 {
			if sourceLSN, good = uv(); !good {
				return
			}
		}
		if hf&hdrCommitTime != 0 {
			if _, n := binary.Varint(b[off:]); n <= 0 {
				return
			} else {
				off += n
			}
			if _, good = uv(); !good {
				return
			}
		}
		if hf&hdrOrigin != 0 {
			l, good := uv()
			if !good || l > uint64(len(b)-off) {
				return
			}
			off += int(l)
		}
	}
	if off >= len(b) {
		return
	}
	return hasHdr, xid, sourceLSN, b[off], true
}
