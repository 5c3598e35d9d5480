package segment

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"sync"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

// Codec names the compression of a frame's payload. The codec is recorded in
// each frame header so a frame can be shipped (to Kafka, to an archive) as
// it is and decoded anywhere.
type Codec uint8

func (c Codec) String() string {
	switch c {
	case CodecNone:
		return "none"
	case CodecS2:
		return "s2"
	case CodecZstd:
		return "zstd"
	}
	return fmt.Sprintf("codec(%d)", uint8(c))
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func crc(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// frameHeader is the decoded form of a frame header. See layout.go for the
// byte layout.
type frameHeader struct {
	payloadCRC  uint32
	storedLen   uint32
	rawLen      uint32
	firstLSN    uint64
	txnStart    uint64
	count       uint32
	writeOffset uint32
	salt        uint32
	codec       Codec
	flags       uint8
}

func (h *frameHeader) lastLSN() uint64 { return h.firstLSN + uint64(h.count) - 1 }

// storedRecords is the number of records in the frame's payload: count,
// except in an aborted-range frame, which stores only its abort record.
func (h *frameHeader) storedRecords() uint32 {
	if h.flags&flagAbortedRange != 0 {
		return 1
	}
	return h.count
}

// frameSize is the number of bytes the frame occupies in the segment,
// header and padding included.
func (h *frameHeader) frameSize() int64 {
	return alignUp(FrameHeaderSize + int64(h.storedLen))
}

func alignUp(n int64) int64 { return (n + frameAlign - 1) &^ (frameAlign - 1) }

func (h *frameHeader) encode(b []byte) {
	_ = b[FrameHeaderSize-1]
	binary.LittleEndian.PutUint32(b[frPayloadCRCOff:], h.payloadCRC)
	binary.LittleEndian.PutUint32(b[frStoredLenOff:], h.storedLen)
	binary.LittleEndian.PutUint32(b[frRawLenOff:], h.rawLen)
	binary.LittleEndian.PutUint64(b[frFirstLSNOff:], h.firstLSN)
	binary.LittleEndian.PutUint64(b[frTxnStartOff:], h.txnStart)
	binary.LittleEndian.PutUint32(b[frCountOff:], h.count)
	binary.LittleEndian.PutUint32(b[frWriteOffsetOff:], h.writeOffset)
	binary.LittleEndian.PutUint32(b[frSaltOff:], h.salt)
	b[frCodecOff] = byte(h.codec)
	b[frFlagsOff] = h.flags
	b[frReservedOff], b[frReservedOff+1] = 0, 0
	binary.LittleEndian.PutUint32(b[frHeaderCRCOff:], crc(b[frPayloadCRCOff:FrameHeaderSize]))
}

// decodeFrameHeader checks the header CRC and the fields' internal
// consistency. It does not check the payload.
func decodeFrameHeader(b []byte) (frameHeader, string) {
	if len(b) < FrameHeaderSize {
		return frameHeader{}, "short frame header"
	}
	if binary.LittleEndian.Uint32(b[frHeaderCRCOff:]) != crc(b[frPayloadCRCOff:FrameHeaderSize]) {
		return frameHeader{}, "frame header checksum mismatch"
	}
	h := frameHeader{
		payloadCRC:  binary.LittleEndian.Uint32(b[frPayloadCRCOff:]),
		storedLen:   binary.LittleEndian.Uint32(b[frStoredLenOff:]),
		rawLen:      binary.LittleEndian.Uint32(b[frRawLenOff:]),
		firstLSN:    binary.LittleEndian.Uint64(b[frFirstLSNOff:]),
		txnStart:    binary.LittleEndian.Uint64(b[frTxnStartOff:]),
		count:       binary.LittleEndian.Uint32(b[frCountOff:]),
		writeOffset: binary.LittleEndian.Uint32(b[frWriteOffsetOff:]),
		salt:        binary.LittleEndian.Uint32(b[frSaltOff:]),
		codec:       Codec(b[frCodecOff]),
		flags:       b[frFlagsOff],
	}
	switch {
	case b[frReservedOff] != 0 || b[frReservedOff+1] != 0 || h.flags&^knownFlags != 0:
		return h, "unknown frame flags"
	case h.flags&flagAbortedRange != 0 && (h.flags&flagAbort == 0 || h.flags&flagEndsTxn == 0 || h.count < 2 || h.txnStart != h.firstLSN):
		return h, "aborted-range frame must be an abort frame covering a whole transaction of at least two LSNs"
	case h.flags&flagAbort != 0 && h.flags&flagAbortedRange == 0 && (h.flags&flagEndsTxn == 0 || h.count != 1):
		return h, "abort frame must hold exactly one transaction-ending record"
	case h.codec > CodecZstd:
		return h, fmt.Sprintf("unknown codec %d", h.codec)
	case h.count == 0:
		return h, "frame with no records"
	case h.firstLSN == 0 || h.firstLSN+uint64(h.count) < h.firstLSN:
		return h, "frame LSN out of range"
	case h.txnStart == 0 || h.txnStart > h.firstLSN:
		return h, "frame transaction start after its first record"
	case h.storedLen > MaxFramePayload || h.rawLen > MaxFramePayload:
		return h, "frame payload too large"
	case h.codec == CodecNone && h.storedLen != h.rawLen:
		return h, "uncompressed frame with differing lengths"
	case uint64(h.rawLen) < uint64(h.storedRecords()):
		return h, "frame payload shorter than its record count"
	}
	return h, ""
}

// Record is one record of the log as a reader sees it.
type Record struct {
	// LSN is the record's position: dense and strictly increasing.
	LSN uint64
	// Data is the record's bytes. It is owned by the reader and valid only
	// until the reader's next call; copy it to keep it.
	Data []byte
	// Commit reports that this record ends its transaction.
	Commit bool
	// CommitTime is the transaction's commit time in Unix nanoseconds, set
	// on commit records only. It never decreases along the log.
	CommitTime int64
	// TxnStart is the LSN of the first record of this record's transaction.
	TxnStart uint64
	// Aborted marks an abort record: it has no data, Commit is set, and it
	// ends its transaction (TxnStart..LSN) as aborted. The transaction's
	// records, this one included, are not part of the log's content:
	// readers that assemble transactions must drop them. They keep their
	// LSNs, so numbering stays dense.
	Aborted bool
}

// AppendRecord appends the encoding of one record to a frame payload being
// built. commitTime is stored only when commit is true. See doc.go.
func AppendRecord(dst, data []byte, commit bool, commitTime int64) []byte {
	tag := uint64(len(data)) << 1
	if commit {
		tag |= 1
	}
	dst = binary.AppendUvarint(dst, tag)
	dst = append(dst, data...)
	if commit {
		dst = binary.AppendVarint(dst, commitTime)
	}
	return dst
}

// RecordOverhead is the most bytes AppendRecord adds besides the data.
const RecordOverhead = binary.MaxVarintLen64 * 2

// decodeRecord decodes the record at the start of b, returning the number
// of bytes consumed. The data aliases b.
func decodeRecord(b []byte) (data []byte, commit bool, commitTime int64, n int, reason string) {
	tag, k := binary.Uvarint(b)
	if k <= 0 {
		return nil, false, 0, 0, "bad record length"
	}
	l := tag >> 1
	if l > uint64(len(b)-k) {
		return nil, false, 0, 0, "record length past end of frame"
	}
	data = b[k : k+int(l)]
	n = k + int(l)
	if tag&1 == 1 {
		t, m := binary.Varint(b[n:])
		if m <= 0 {
			return nil, false, 0, 0, "bad commit time"
		}
		commit, commitTime = true, t
		n += m
	}
	return data, commit, commitTime, n, ""
}

var (
	zstdEncOnce sync.Once
	zstdEnc     *zstd.Encoder
	zstdDecOnce sync.Once
	zstdDec     *zstd.Decoder
)

func zstdEncoder() *zstd.Encoder {
	zstdEncOnce.Do(func() {
		// EncodeAll on a shared encoder is safe for concurrent use.
		zstdEnc, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	})
	return zstdEnc
}

func zstdDecoder() *zstd.Decoder {
	zstdDecOnce.Do(func() {
		zstdDec, _ = zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(MaxFramePayload))
	})
	return zstdDec
}

// compress appends the payload compressed with c to dst.
func compress(dst []byte, c Codec, raw []byte) []byte {
	switch c {
	case CodecS2:
		n := s2.MaxEncodedLen(len(raw))
		start := len(dst)
		dst = grow(dst, n)
		out := s2.Encode(dst[start:start+n], raw)
		return dst[:start+len(out)]
	case CodecZstd:
		return zstdEncoder().EncodeAll(raw, dst)
	}
	return append(dst, raw...)
}

// decompress returns the raw payload of a frame, decompressing into buf if
// needed. It checks the result's length against the header.
func decompress(buf []byte, h *frameHeader, stored []byte) ([]byte, string) {
	switch h.codec {
	case CodecNone:
		return stored, ""
	case CodecS2:
		n, err := s2.DecodedLen(stored)
		if err != nil || n != int(h.rawLen) {
			return nil, "s2 payload length mismatch"
		}
		buf = grow(buf[:0], n)
		out, err := s2.Decode(buf[:n], stored)
		if err != nil {
			return nil, "s2: " + err.Error()
		}
		return out, ""
	case CodecZstd:
		out, err := zstdDecoder().DecodeAll(stored, grow(buf[:0], int(h.rawLen))[:0])
		if err != nil {
			return nil, "zstd: " + err.Error()
		}
		if len(out) != int(h.rawLen) {
			return nil, "zstd payload length mismatch"
		}
		return out, ""
	}
	return nil, "unknown codec"
}

// grow returns b with room for n more bytes appended (len unchanged... plus
// n: the returned slice has len(b)+n).
func grow(b []byte, n int) []byte {
	if cap(b)-len(b) < n {
		nb := make([]byte, len(b), len(b)+n+len(b)/4)
		copy(nb, b)
		b = nb
	}
	return b[:len(b)+n]
}
