// Package segment is walship's on-disk log: a directory of segment files
// holding CRC-framed batches of records with dense LSNs.
//
// # Guarantees
//
//   - Records get dense, gap-free, strictly increasing LSNs (uint64, the
//     first is 1 unless Options.FirstLSN says otherwise).
//   - Records are grouped into transactions; the last record of each is a
//     commit record carrying the commit time, which never decreases.
//   - Readers see only records up to the last commit made durable by Sync
//     or SyncTo (or published by Publish in sync mode "off"): never a record
//     that is not durable, never part of an unfinished transaction. The
//     records of an aborted transaction are visible but end with an abort
//     record (Record.Aborted) that tells transaction readers to drop them.
//   - Recovery (Open) truncates a torn tail of the newest segment and an
//     unfinished transaction at the end of the log, and says so in a
//     RecoveryReport. Anything else that fails a check is a
//     *walerr.CorruptionError naming the segment file and byte offset; nothing is
//     ever skipped. A cut that would remove transactions at or below the
//     acknowledgement watermark is such corruption, never a torn tail.
//   - The acknowledgement watermark is kept off the commit path: nothing
//     that Write, Sync or SyncTo does waits for it.
//   - Opening costs one header read per segment plus a scan of the newest
//     segment (and of the one before it when the newest holds no intact
//     frame), whatever the size of the log. Sealed segments are checked
//     by Verify and by every reader that reaches them, not by Open.
//
// # Files
//
// A log directory holds segment files named by the LSN of their first
// record as 16 lower-case hex digits, e.g. 00000000000003e8.seg, so names
// sort by LSN. Names that do not match are ignored, except next.seg.tmp, a
// preallocated next segment that Open removes. A new segment is created
// under the temporary name, its header written, renamed to its final name
// and the directory fsynced before any record in it is acknowledged. The
// previous segment is fsynced before the switch, so only the newest segment
// can have a torn tail. A sealed segment's preallocated zero tail is trimmed
// in the background.
//
// ACKED (AckedName) is the acknowledgement watermark: the highest commit
// LSN made durable by a sync, hence acknowledged, the segment and offset
// it was durable at, and the log id, in two CRC-protected slots written
// alternately in place. A background goroutine of the writer updates it
// after the log's syncs (at most once per Options.AckInterval) and
// fdatasyncs it; Open and Close write it too. Its layout is in
// docs/FORMAT.md §1.
//
// # Segment header (64 bytes at offset 0, little-endian)
//
//	off size field
//	  0    8 magic "WALSHIP\x00"
//	  8    2 format version (1)
//	 10    2 header size (64)
//	 12    4 lineage (timeline) id
//	 16    8 base LSN: LSN of the segment's first record; equals the file name
//	 24   16 segment id: random, unique per segment file
//	 40   16 log id: random, shared by every segment of one log
//	 56    4 reserved, zero
//	 60    4 CRC-32C (Castagnoli) of bytes 0..59
//
// # Frames
//
// After the header come frames, each aligned to 8 bytes, until the end of
// the file or a frame header of 48 zero bytes (the preallocated, unwritten
// part). A frame is one batch of records written by the group committer:
//
//	off size field
//	  0    4 CRC-32C of header bytes 4..47
//	  4    4 CRC-32C of the stored payload
//	  8    4 stored payload length
//	 12    4 raw payload length (after decompression)
//	 16    8 first LSN: LSN of the frame's first record
//	 24    8 txn start: LSN of the first record of the transaction the
//	         frame's first record belongs to (== first LSN unless the frame
//	         continues a transaction begun in an earlier frame)
//	 32    4 record count (>= 1)
//	 36    4 write offset: segment offset up to which the segment was known
//	         durable when the write(2) call that wrote this frame began (where
//	         that write began, when each write is synced before the next);
//	         used to tell a torn write from corruption
//	 40    4 salt: first 4 bytes of the segment id (rejects stale frames)
//	 44    1 codec: 0 none, 1 s2, 2 zstd (github.com/klauspost/compress)
//	 45    1 flags: bit 0 = the frame's last record is a commit record;
//	         bit 1 = abort frame (see below); bit 2 = aborted range (an
//	         abort frame covering a whole transaction, see below)
//	 46    2 reserved, zero
//	 48    n stored payload, then zero padding to a multiple of 8
//
// Padding is not covered by a checksum; a nonzero padding byte is treated
// like a checksum failure (damage to written data).
//
// The stored payload is the raw payload compressed with the codec, so a
// compressed frame can be shipped as it is. A frame whose compressed form
// would not be smaller is stored with codec 0. The raw payload is the
// frame's records, back to back:
//
//	uvarint  tag = len(data)<<1 | commit
//	bytes    data (opaque to this package; see package change)
//	varint   commit time, Unix nanoseconds (only if commit is 1)
//
// A transaction's records are contiguous. A transaction that spans frames
// begins a frame, so an unfinished one can be dropped by truncating whole
// frames.
//
// An abort frame (flags bits 0 and 1, one record with commit = 1, no data
// and the previous commit time) ends the transaction begun at its txn
// start as aborted: a streamed transaction abandoned after some of its
// frames were written. The abort record takes one LSN and is returned by
// readers with Record.Aborted set; readers that assemble transactions drop
// the whole transaction when they reach it. LSNs stay dense.
//
// An aborted-range frame (flags bits 0, 1 and 2; txn start == first LSN;
// record count >= 2) covers a whole aborted transaction of count LSNs but
// stores only its abort record, at its last LSN: a log copying another
// (a standby's) writes it for a transaction the other log aborted, whose
// records it never had (Batch.AbortedRange). Readers see the same abort
// record, ending the same transaction, as in the other log.
//
// # Recovery: torn tail versus corruption
//
// The committer writes a run of frames with one write(2) call; it may write
// the next run, and start its fdatasync (SyncTo), while an earlier
// fdatasync is running. Each frame records the durable watermark at the
// start of its write. When the newest segment has a bad frame at offset X
// (a checksum, length, LSN or flag check fails, or a zeroed header is
// followed by data), recovery searches the rest of the file for a valid
// frame whose write offset is greater than X. Such a frame was written
// when X was already durable: X is damaged, so Open fails with a
// *walerr.CorruptionError. If no such frame exists, every byte from X on belongs
// to writes whose sync had not returned, which cannot have been
// acknowledged: it is a torn tail, truncated and reported. With sync mode
// "off" writes are not synced one by one, so a power loss can surface as
// corruption.
//
// The last write has no later frame to prove it durable, so recovery also
// checks what it would keep against the acknowledgement watermark, read
// before anything else (a read-only open beside a live writer can trust
// it: it is never above what is durable). If the log would end before the
// watermark's LSN, the segment the watermark names is missing, or a bad
// frame lies below its durable end, Open and Verify fail with a
// *walerr.CorruptionError naming the segment, the offset and the first
// acknowledged LSN lost, before anything is cut or removed. Damage to
// acknowledged writes newer than the last durable watermark (it lags by
// AckInterval plus one write and sync of ACKED) stays indistinguishable
// from a torn write; docs/FORMAT.md §4 states the window. A log without a
// watermark, or with one of another log id, follows the write-offset rule
// alone, and a writer gives it one.
//
// A new segment's header becomes durable with its first write's fsync, so
// a crash before it can lose the header's sector while later sectors of
// that write survive. A newest segment whose header is zero or short (never
// written) and that holds no frame of a later write (write offset above
// the header) is such a torn creation and is removed; a nonzero invalid
// header, or one followed by a later write, is corruption.
//
// After the tail is cut, a transaction with no commit record at the end of
// the log is removed too (possibly whole segments): its commit was never
// durable, so it was never acknowledged and readers must never see it.
package segment
