package segment

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// ID is a 128-bit random identifier (segment id, log id).
type ID [16]byte

func newID() ID {
	var id ID
	if _, err := rand.Read(id[:]); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return id
}

func (id ID) String() string { return hex.EncodeToString(id[:]) }

// segmentHeader is the decoded form of the 64-byte segment header.
type segmentHeader struct {
	lineage uint32
	base    uint64
	id      ID
	logID   ID
}

func (h *segmentHeader) salt() uint32 { return binary.LittleEndian.Uint32(h.id[:4]) }

func (h *segmentHeader) encode() []byte {
	b := make([]byte, HeaderSize)
	copy(b[hdrMagicOff:], segmentMagic)
	binary.LittleEndian.PutUint16(b[hdrVersionOff:], FormatVersion)
	binary.LittleEndian.PutUint16(b[hdrSizeOff:], HeaderSize)
	binary.LittleEndian.PutUint32(b[hdrLineageOff:], h.lineage)
	binary.LittleEndian.PutUint64(b[hdrBaseOff:], h.base)
	copy(b[hdrIDOff:hdrLogIDOff], h.id[:])
	copy(b[hdrLogIDOff:hdrReservedOff], h.logID[:])
	binary.LittleEndian.PutUint32(b[hdrCRCOff:], crc(b[:hdrCRCOff]))
	return b
}

func decodeSegmentHeader(b []byte) (segmentHeader, string) {
	var h segmentHeader
	if len(b) < HeaderSize {
		return h, "short segment header"
	}
	if string(b[hdrMagicOff:hdrVersionOff]) != segmentMagic {
		return h, "bad segment magic"
	}
	if binary.LittleEndian.Uint32(b[hdrCRCOff:]) != crc(b[:hdrCRCOff]) {
		return h, "segment header checksum mismatch"
	}
	if v := binary.LittleEndian.Uint16(b[hdrVersionOff:]); v != FormatVersion {
		return h, fmt.Sprintf("unsupported segment format version %d", v)
	}
	if n := binary.LittleEndian.Uint16(b[hdrSizeOff:]); n != HeaderSize {
		return h, fmt.Sprintf("unsupported segment header size %d", n)
	}
	if binary.LittleEndian.Uint32(b[hdrReservedOff:]) != 0 {
		// Reserved (doc.go), like the frame header's reserved bytes: a
		// header using them is not one this version can read.
		return h, "unknown segment header fields (reserved bytes not zero)"
	}
	h.lineage = binary.LittleEndian.Uint32(b[hdrLineageOff:])
	h.base = binary.LittleEndian.Uint64(b[hdrBaseOff:])
	copy(h.id[:], b[hdrIDOff:hdrLogIDOff])
	copy(h.logID[:], b[hdrLogIDOff:hdrReservedOff])
	if h.base == 0 {
		return h, "segment base LSN 0"
	}
	return h, ""
}

// SegmentName returns the file name of the segment whose first record has
// LSN base: 16 lower-case hex digits and ".seg", so names sort by LSN.
func SegmentName(base uint64) string {
	return fmt.Sprintf("%016x%s", base, segmentExt)
}

// ParseSegmentName returns the base LSN named by a segment file name, and
// false for any name that is not a segment's.
func ParseSegmentName(name string) (uint64, bool) {
	hexPart, ok := strings.CutSuffix(name, segmentExt)
	if !ok || len(hexPart) != nameDigits || strings.ToLower(hexPart) != hexPart {
		return 0, false
	}
	v, err := strconv.ParseUint(hexPart, 16, 64)
	if err != nil || v == 0 {
		return 0, false
	}
	return v, true
}

// readFull reads len(b) bytes at off, returning io.ErrUnexpectedEOF or
// io.EOF like io.ReadFull.
func readFull(r io.ReaderAt, b []byte, off int64) (int, error) {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return n, nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		if n == 0 {
			return 0, io.EOF
		}
		return n, io.ErrUnexpectedEOF
	}
	return n, err
}
