// Package checkpoint keeps durable named positions — how far each sink,
// consumer or source has durably got — and the minimum over the registered
// names, which is the retention watermark of docs/DESIGN.md §4.5: a local
// segment may be removed only when every registered name is past it.
//
// # Guarantees
//
//   - Durable when acknowledged. Set, SetBackward, Reset and Unregister
//     return nil only after the change is on stable storage: the new record
//     was written to a temporary file, fsynced, renamed over the old one and
//     the directory fsynced. After a crash at any point, each name reads back
//     either its last acknowledged record or the record of a later write
//     that did not return nil (the one interrupted by the crash, or one whose
//     directory fsync failed); never a mix, never a corrupt file, never an
//     older record.
//   - Failures do not advance. If any step of a write fails (including a
//     failed fsync), the call returns the error and Get, All and Min keep the
//     previous value. The next write starts over with a new temporary file
//     and a new fsync; a file whose fsync failed is never fsynced again.
//   - Forward only. Set refuses to move a position backward (ErrBackward);
//     SetBackward and Reset do so explicitly.
//   - Corruption is loud. Open reads back every checkpoint and fails with a
//     *walerr.CorruptionError naming the file if any record is damaged; it never skips
//     one, since a lost checkpoint would silently lower the watermark (or, for
//     a consumer, replay from the start). An operator who accepts the loss
//     deletes the named file.
//   - Conservative retention. Every name that has a checkpoint on disk is
//     registered when Open returns, and names registered with Register before
//     their first Set count as position 0, so Min never exceeds the position
//     of anything that might still need the data. Only Unregister removes a
//     name from the minimum, and it deletes the name's file durably first.
//
// A Store compares positions and attaches no other meaning to them: whether a
// position is the last LSN an owner has finished with or the next LSN it
// needs is the owner's convention, and retention must use the same one. Keep
// positions that must not hold back retention (for example a source's own
// position) in a Store on another directory.
//
// One Store owns its directory: two Stores, in one process or two, must not
// share a directory.
//
// # Files
//
// Each name has its own file, "<name>.ckpt", in the Store's directory. Names
// match [a-z0-9._-]{1,64}. A write goes through "<name>.ckpt.tmp"; Open
// removes any such file left by a crash. Open ignores (and logs) other files.
//
// A checkpoint file holds exactly one record; all integers are little-endian:
//
//	offset  size  field
//	     0     4  magic "WCKP" (0x57 0x43 0x4b 0x50)
//	     4     2  format version, uint16, currently 1
//	     6     2  name length N, uint16, 1..64
//	     8     4  payload length P, uint32, 0..65536
//	    12     8  position, uint64 (walship LSN)
//	    20     8  update time, int64 nanoseconds since the Unix epoch (UTC)
//	    28     N  name, ASCII; must equal the file's name less ".ckpt"
//	  28+N     P  payload, opaque bytes (a source LSN, a Kafka offset map, ...)
//	28+N+P     4  CRC-32C (Castagnoli) of bytes [0, 28+N+P)
//
// The file is exactly 32+N+P bytes long. A file that is shorter or longer,
// whose checksum does not match, whose magic, version or lengths are out of
// range, or whose name differs from the file's name is corrupt. Because a
// record is always fsynced before it is renamed into place, a torn record can
// exist only in a ".ckpt.tmp" file, which is never read.
package checkpoint
