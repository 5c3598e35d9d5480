// Package change is walship's change and transaction model and its three
// encodings: the binary record stored in the log, the NDJSON input of
// `walship append`, and the NDJSON output of `walship dump`.
//
// # Model
//
// A Change is one row-level event on a Table: an Op (c insert, u update,
// d delete, t truncate, r snapshot read, m logical message), key, before
// and after images (Row: ordered columns of typed Values) and optional
// source column types. A Txn is a TxHeader (source xid, source commit LSN
// and time, origin) and one or more changes. walship's own LSNs and commit
// times are assigned and recorded by the log (package segment), not here.
//
// A transaction of N changes is stored as N log records, one per change,
// so every change has its own LSN; the first record also carries the
// TxHeader.
//
// # Guarantees
//
//   - Exact values. A Value keeps its representation: Numeric as decimal
//     text (never through a float), Timestamp to the nanosecond, JSON as its
//     (compacted) text, Float by its bits (-0, ±Inf and NaN included),
//     Bytes with any content.
//   - Binary round trip. For every Change c that passes Validate and every
//     header h (or nil), DecodeRecord(AppendRecord(nil, h, &c)) returns h
//     and a change Equal to c. Every record DecodeRecord accepts re-encodes
//     to a record that decodes to an Equal result.
//   - Safe decoding. DecodeRecord never panics, never reads outside its
//     input and checks every length against the remaining bytes before
//     allocating. Any malformed record is a *DecodeError with the byte
//     offset, wrapping walerr.ErrCorruption (ErrUnsupportedVersion for a newer
//     format). It does not apply Change.Validate, so a record is never
//     unreadable because of what its change says.
//   - JSON round trip. For a valid change, the dump form (AppendDumpJSON)
//     read back with ParseDumpLine, and each value's output form
//     (Value.AppendJSON) read back as input (ParseValue, ParseTxnLine),
//     give Equal values.
//   - Clear input errors. Malformed input is an *InvalidError (wrapping
//     ErrInvalid) naming the line (Decoder), the JSON path (e.g.
//     `changes[2].after.v`) and what is wrong. Unknown and duplicate fields,
//     duplicate columns and invalid UTF-8 are errors, never dropped.
//   - Speed. AppendRecord, Value.AppendJSON and AppendDumpJSON allocate
//     nothing beyond growing their destination slice.
//
// # Record layout
//
// Integers are unsigned LEB128 varints (uvarint) or zig-zag varints
// (varint), as in encoding/binary; a "string" is a uvarint length followed
// by that many bytes. docs/CHANGE-ENCODING.md has the same layout.
//
//	record  = version:byte(=1) flags:byte [header] change
//	flags   bit 0 header follows      bit 3 after present
//	        bit 1 key present         bit 4 types present
//	        bit 2 before present      bit 5 message present
//	        bits 6-7 zero
//	header  = hflags:byte xid:uvarint
//	          [source_lsn:uvarint]                    if hflags bit 0
//	          [commit_sec:varint commit_nsec:uvarint] if hflags bit 1 (Unix time, UTC)
//	          [origin:string]                         if hflags bit 2
//	          [key:string hash:32 bytes start:uvarint count:uvarint]
//	                                                  if hflags bit 3 (IdempotencyMark)
//	          [appended_at:varint]                    if hflags bit 5 (with bit 3; Unix ns)
//	          [snapshot:byte]                         if hflags bit 6 (TxHeader.Snapshot, not 0)
//	          (hflags bit 4: TxHeader.InRequest, no payload; bit 7 zero)
//	change  = op:byte schema:string name:string
//	          [key:row] [before:row] [after:row]      each if its flag is set
//	          [types] [message]                       each if its flag is set
//	row     = n:uvarint n × (name:string value)
//	types   = n:uvarint n × (column:string type:string)
//	message = mflags:byte(bit 0 transactional) prefix:string content:string
//	value   = kind:byte payload
//
//	kind  name       payload
//	0     null       (none)
//	1     bool       byte 0 or 1
//	2     int        varint
//	3     float      8 bytes, IEEE 754 bits, little-endian
//	4     numeric    string (a JSON number literal, NaN, Infinity or -Infinity)
//	5     text       string
//	6     bytes      string
//	7     timestamp  sec:varint nsec:uvarint (Unix time; nsec < 1e9; years 0000-9999)
//	8     json       string (valid, compact JSON)
//	9     array      n:uvarint n × value (at most MaxNesting arrays deep)
//	10    unknown    type:string text:string
//
// Nothing may follow the change. A reader of version 1 rejects any other
// version, unknown flag bits and unknown kinds; a later version may add
// flags and kinds, and must change the version byte if an older reader
// would misread it.
//
// Example: an insert into public.t of {id: 1} with no header is
//
//	01 08 63 06 "public" 01 "t" 01 02 "id" 02 02
//	ver flags=after op=c schema name n=1 name kind=int zigzag(1)
//
// # JSON
//
// ParseTxnLine documents the input lines, ParseValue the mapping of JSON
// values (including the {"$type":...} forms for bytes, numerics,
// timestamps, floats, JSON and unknown types), Value.AppendJSON the output
// form of values and AppendDumpJSON the dump lines. Decoder streams input
// lines of up to MaxLineSize bytes.
package change
