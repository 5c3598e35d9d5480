package segment

import "github.com/walship/walship/vfs"

// The byte layout of segment files, in one place. docs/FORMAT.md §1–§3
// and the package doc describe the same layout byte by byte;
// format_doc_test.go parses both and fails when they and these constants
// disagree, so a change to either side must change the other.

// Files of a log directory (docs/FORMAT.md §1).
const (
	// segmentExt and nameDigits make a segment's file name: its base LSN
	// as nameDigits lower-case hex digits, then segmentExt.
	segmentExt = ".seg"
	nameDigits = 16
	// lockName is the file in which the writer records its pid; the
	// writer's lock is on the directory itself (vfs.FS.LockDir).
	lockName = vfs.LockFileName
)

// PreparedName is the name of the preallocated next segment before it is
// given its final name at rotation.
const PreparedName = "next.seg.tmp"

// AckedName is the file of the acknowledgement watermark (docs/FORMAT.md
// §1): two slots of ackSlotSize bytes at offsets 0 and ackSlotStride,
// written alternately in place, each CRC-protected.
const AckedName = "ACKED"

// Acknowledgement watermark slot (docs/FORMAT.md §1).
const (
	ackMagic      = "WACK"
	ackVersion    = 1
	ackSlotSize   = 64
	ackSlotStride = 512 // one slot per 512-byte sector
	ackFileSize   = 2 * ackSlotStride

	ackMagicOff    = 0
	ackVersionOff  = 4  // uint16
	ackSizeOff     = 6  // uint16: ackSlotSize
	ackSeqOff      = 8  // uint64
	ackLogIDOff    = 16 // ID
	ackLSNOff      = 32 // uint64
	ackBaseOff     = 40 // uint64
	ackEndOff      = 48 // uint64
	ackReservedOff = 56 // 4 bytes, zero
	ackCRCOff      = 60 // uint32: CRC-32C of bytes 0..ackCRCOff-1
)

// Segment header (docs/FORMAT.md §2).
const (
	// HeaderSize is the size of the segment header at offset 0.
	HeaderSize = 64
	// FormatVersion is the segment format version written by this package.
	FormatVersion = 1

	segmentMagic = "WALSHIP\x00"

	// Offsets of the header's fields; each field ends where the next
	// begins.
	hdrMagicOff    = 0
	hdrVersionOff  = 8  // uint16
	hdrSizeOff     = 10 // uint16: HeaderSize
	hdrLineageOff  = 12 // uint32
	hdrBaseOff     = 16 // uint64
	hdrIDOff       = 24 // ID
	hdrLogIDOff    = 40 // ID
	hdrReservedOff = 56 // 4 bytes, zero
	hdrCRCOff      = 60 // uint32: CRC-32C of bytes 0..hdrCRCOff-1
)

// Frames (docs/FORMAT.md §3).
const (
	// FrameHeaderSize is the fixed size of a frame header; the stored
	// payload follows it.
	FrameHeaderSize = 48
	// frameAlign is the alignment of frames within a segment; padding bytes
	// are zero.
	frameAlign = 8
	// MaxFramePayload bounds a frame's stored and raw payload so a decoder
	// never allocates more than this from a length it read.
	MaxFramePayload = 64 << 20

	// Offsets of the frame header's fields; each field ends where the
	// next begins.
	frHeaderCRCOff   = 0  // uint32: CRC-32C of bytes frPayloadCRCOff..FrameHeaderSize-1
	frPayloadCRCOff  = 4  // uint32
	frStoredLenOff   = 8  // uint32
	frRawLenOff      = 12 // uint32
	frFirstLSNOff    = 16 // uint64
	frTxnStartOff    = 24 // uint64
	frCountOff       = 32 // uint32
	frWriteOffsetOff = 36 // uint32
	frSaltOff        = 40 // uint32: the first 4 bytes of the segment id
	frCodecOff       = 44 // byte: a Codec
	frFlagsOff       = 45 // byte
	frReservedOff    = 46 // 2 bytes, zero

	// flagEndsTxn: the frame's last record ends (commits) a transaction.
	flagEndsTxn = 1 << 0
	// flagAbort: the frame is one empty record that ends its transaction as
	// aborted (with flagEndsTxn): readers skip every record of that
	// transaction, which keep their LSNs so numbering stays dense. Logs
	// written before this flag existed never carry it.
	flagAbort = 1 << 1
	// flagAbortedRange: an abort frame (with flagEndsTxn and flagAbort)
	// that covers a whole aborted transaction, txn start == first LSN
	// through its last LSN, storing only the abort record (the last LSN):
	// the other records are absent. A log copying another (a standby's)
	// writes it for a transaction the other log aborted midway, whose
	// records it never had (docs/FORMAT.md §3).
	flagAbortedRange = 1 << 2
	knownFlags       = flagEndsTxn | flagAbort | flagAbortedRange
)

// Codecs (docs/FORMAT.md §3, the frame header's codec byte). Values are
// part of the on-disk format; never renumber.
const (
	CodecNone Codec = 0
	CodecS2   Codec = 1
	CodecZstd Codec = 2
)
