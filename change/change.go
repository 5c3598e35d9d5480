package change

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Change is one row-level event (or one logical message).
//
// Which parts an op needs (Validate checks):
//
//	op            Table  Key / Before             After     Message
//	c insert      yes    Key optional, no Before  required  no
//	r read        yes    Key optional, no Before  required  no
//	u update      yes    Key or Before required   required  no
//	d delete      yes    Key or Before required   no        no
//	t truncate    yes    no                       no        no
//	m message     opt.   no                       no        required
type Change struct {
	Table Table
	Op    Op
	// TruncateOpts are the options of an op Truncate change; zero
	// otherwise. (Beside Op, in what would be padding: a Change's size is
	// what a decoded request is charged per change.)
	TruncateOpts TruncateOptions
	Key          Row // primary-key (replica identity) columns; nil if absent
	Before       Row // the old image; nil if absent
	After        Row // the new image; nil if absent
	// Types optionally gives source type names of columns, in order;
	// empty means none.
	Types []ColumnType
	// Message is the logical message of an op Message change; nil otherwise.
	Message *LogicalMessage
}

// TruncateOptions are the options of a TRUNCATE, bits as PostgreSQL's
// logical replication protocol numbers them. A cascade's tables are each a
// change of their own (PostgreSQL lists them); the option says the source
// cascaded, so a target with foreign keys may need it too.
type TruncateOptions uint8

const (
	TruncateCascade         TruncateOptions = 1 << 0 // TRUNCATE ... CASCADE
	TruncateRestartIdentity TruncateOptions = 1 << 1 // TRUNCATE ... RESTART IDENTITY
	truncateKnown                           = 1<<2 - 1
)

// LogicalMessage is the payload of a Message change (Postgres
// pg_logical_emit_message).
type LogicalMessage struct {
	Prefix        string
	Content       []byte
	Transactional bool
}

// Equal reports whether m and o (either may be nil) are equal; nil and
// empty Content are equal.
func (m *LogicalMessage) Equal(o *LogicalMessage) bool {
	if m == nil || o == nil {
		return m == o
	}
	return m.Prefix == o.Prefix && m.Transactional == o.Transactional && bytes.Equal(m.Content, o.Content)
}

// TypeOf returns the source type name given for column name in c.Types.
func (c *Change) TypeOf(name string) (string, bool) {
	for _, t := range c.Types {
		if t.Name == name {
			return t.Type, true
		}
	}
	return "", false
}

// Equal reports whether c and o are the same change: rows compare with
// Row.Equal (absent is not empty), Types element-wise (nil equals empty),
// messages with LogicalMessage.Equal.
func (c *Change) Equal(o *Change) bool {
	if c.Table != o.Table || c.Op != o.Op ||
		!c.Key.Equal(o.Key) || !c.Before.Equal(o.Before) || !c.After.Equal(o.After) ||
		len(c.Types) != len(o.Types) || !c.Message.Equal(o.Message) || c.TruncateOpts != o.TruncateOpts {
		return false
	}
	for i := range c.Types {
		if c.Types[i] != o.Types[i] {
			return false
		}
	}
	return true
}

// Validate checks that c is well formed: a valid op with the parts it needs
// (see Change) and no others, a table (except for messages) with non-empty
// parts, unique non-empty column names, valid UTF-8 in every string (Bytes
// and message content excepted), arrays nested at most MaxNesting deep,
// non-empty Unknown type names, unique non-empty names and types in Types.
// Errors are *InvalidError whose Path names the field, e.g. "after" or
// "after.v".
func (c *Change) Validate() error { return c.validate(nil) }

func (c *Change) validate(prefix []pathSeg) error {
	fail := func(reason string, segs ...pathSeg) error {
		return &InvalidError{Path: renderPath(prefix, segs...), Reason: reason}
	}
	op := c.Op
	if op == 0 {
		return fail("missing", pkey("op"))
	}
	if !op.Valid() {
		return fail(fmt.Sprintf("unknown op %q (want one of c, u, d, t, r, m)", string(rune(op))), pkey("op"))
	}
	// Built only for an error: this runs for every change appended.
	opDesc := func() string { return fmt.Sprintf("op %q (%s)", op.String(), op.Name()) }
	if op == Message {
		if !c.Table.IsZero() {
			if err := validateTable(c.Table); err != "" {
				return fail(err, pkey("table"))
			}
		}
	} else {
		if c.Table.IsZero() {
			return fail("missing", pkey("table"))
		}
		if err := validateTable(c.Table); err != "" {
			return fail(err, pkey("table"))
		}
	}
	required := func(name string, r Row) error {
		if r == nil {
			return fail("required for "+opDesc(), pkey(name))
		}
		return nil
	}
	forbidden := func(name string, r Row) error {
		if r != nil {
			return fail("not allowed for "+opDesc(), pkey(name))
		}
		return nil
	}
	var err error
	switch op {
	case Insert, Read:
		err = firstErr(forbidden("before", c.Before), required("after", c.After))
	case Update:
		err = required("after", c.After)
		if err == nil && c.Key == nil && c.Before == nil {
			err = fail(opDesc()+" needs key or before", pkey("key"))
		}
	case Delete:
		if c.Key == nil && c.Before == nil {
			err = fail(opDesc()+" needs key or before", pkey("key"))
		}
		err = firstErr(err, forbidden("after", c.After))
	case Truncate, Message:
		err = firstErr(forbidden("key", c.Key), forbidden("before", c.Before), forbidden("after", c.After))
	}
	if err != nil {
		return err
	}
	if op == Message {
		if c.Message == nil {
			return fail("required for "+opDesc(), pkey("message"))
		}
		if !utf8.ValidString(c.Message.Prefix) {
			return fail("invalid UTF-8", pkey("message"), pkey("prefix"))
		}
	} else if c.Message != nil {
		return fail("not allowed for "+opDesc()+`; only for op "m"`, pkey("message"))
	}
	switch {
	case c.TruncateOpts != 0 && op != Truncate:
		return fail("not allowed for "+opDesc()+`; only for op "t"`, pkey("truncate"))
	case c.TruncateOpts&^truncateKnown != 0:
		return fail(fmt.Sprintf("unknown truncate options %#x", uint8(c.TruncateOpts&^truncateKnown)), pkey("truncate"))
	}
	for _, r := range [...]struct {
		name string
		row  Row
	}{{"key", c.Key}, {"before", c.Before}, {"after", c.After}} {
		if err := validateRow(r.row, prefix, r.name); err != nil {
			return err
		}
	}
	for i, t := range c.Types {
		switch {
		case t.Name == "":
			return fail("empty column name", pkey("types"), pidx(i))
		case !utf8.ValidString(t.Name):
			return fail("column name is not valid UTF-8", pkey("types"), pidx(i))
		case t.Type == "":
			return fail("empty type name", pkey("types"), pkey(t.Name))
		case !utf8.ValidString(t.Type):
			return fail("type name is not valid UTF-8", pkey("types"), pkey(t.Name))
		}
		for _, u := range c.Types[:i] {
			if u.Name == t.Name {
				return fail("duplicate column", pkey("types"), pkey(t.Name))
			}
		}
	}
	return nil
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// validateTable returns why t is invalid, or "".
func validateTable(t Table) string {
	switch {
	case t.Schema == "":
		return "empty schema"
	case t.Name == "":
		return "empty name"
	case !utf8.ValidString(t.Schema) || !utf8.ValidString(t.Name):
		return "invalid UTF-8"
	}
	return ""
}

// validateRow checks column names and values of r; path names r.
// validateRow checks r, found at prefix plus the key name (if not
// empty). The path is built only for an error: this runs for every row.
func validateRow(r Row, prefix []pathSeg, name string) error {
	fail := func(reason string, segs ...pathSeg) error {
		path := prefix[:len(prefix):len(prefix)]
		if name != "" {
			path = append(path, pkey(name))
		}
		return &InvalidError{Path: renderPath(path, segs...), Reason: reason}
	}
	for i, c := range r {
		if c.Name == "" {
			return fail("empty column name", pidx(i))
		}
		if !utf8.ValidString(c.Name) {
			return fail("column name is not valid UTF-8", pidx(i))
		}
		if len(r) <= 32 {
			for _, d := range r[:i] {
				if d.Name == c.Name {
					return fail("duplicate column", pkey(c.Name))
				}
			}
		}
		if reason, at := validateValue(c.Value, 0); reason != "" {
			return fail(reason, append([]pathSeg{pkey(c.Name)}, at...)...)
		}
	}
	if len(r) > 32 {
		seen := make(map[string]struct{}, len(r))
		for _, c := range r {
			if _, dup := seen[c.Name]; dup {
				return fail("duplicate column", pkey(c.Name))
			}
			seen[c.Name] = struct{}{}
		}
	}
	return nil
}

// validateValue returns why v is invalid and the path below v, or "".
// depth is the number of arrays around v.
func validateValue(v Value, depth int) (string, []pathSeg) {
	switch v.kind {
	case KindText:
		if !utf8.ValidString(v.str) {
			return "text is not valid UTF-8", nil
		}
	case KindUnknown:
		if v.typ == "" {
			return "unknown-type value with an empty type name", nil
		}
		if !utf8.ValidString(v.typ) || !utf8.ValidString(v.str) {
			return "unknown-type value is not valid UTF-8", nil
		}
	case KindArray:
		if depth >= MaxNesting {
			return fmt.Sprintf("arrays nested more than %d deep", MaxNesting), nil
		}
		for i, e := range v.arr {
			if reason, at := validateValue(e, depth+1); reason != "" {
				return reason, append([]pathSeg{pidx(i)}, at...)
			}
		}
	}
	return "", nil
}

// TxHeader is what the first record of a transaction carries besides its
// change. Commit time and LSNs assigned by walship are recorded by the log,
// not here.
type TxHeader struct {
	// XID is the source transaction id; 0 if none.
	XID uint64
	// SourceLSN is the source's commit position; 0 if none. For Postgres
	// it is the X/Y LSN as hi<<32 | lo (see FormatSourceLSN).
	SourceLSN uint64
	// SourceCommitTime is the source's commit timestamp; zero if none.
	// The log's commit time may differ (it never decreases).
	SourceCommitTime time.Time
	// Origin names the source (a replication origin, an HTTP client); ""
	// if none.
	Origin string
	// Idempotency, if set, marks this transaction as the first of a
	// request appended whole under an idempotency key (IdempotencyMark).
	// The Kafka records carry it in a header of the transaction's first
	// record (docs/KAFKA.md); the dump output does not.
	Idempotency *IdempotencyMark
	// InRequest marks each later transaction of such a request: it belongs
	// to the request begun by the nearest earlier transaction with an
	// Idempotency mark. Reading the log back, the request's run ends at
	// the first transaction without it, so that transactions appended
	// after a crash cut a request short are never counted as its own.
	InRequest bool
	// Snapshot marks a transaction of the initial snapshot (its changes
	// are `r` reads of one table) with where it lies in the snapshot, so
	// that the Kafka envelope's source.snapshot can say "first", "last"
	// and their per-table variants as Debezium does; 0 otherwise.
	Snapshot SnapshotPos
}

// SnapshotPos says where a snapshot transaction lies: a set of the
// Snapshot* bits.
type SnapshotPos uint8

const (
	// SnapshotTableFirst: the transaction holds the first row copied of
	// its table.
	SnapshotTableFirst SnapshotPos = 1 << iota
	// SnapshotTableLast: it holds the last row copied of its table.
	SnapshotTableLast
	// SnapshotFirstTable: its table is the first the snapshot copied
	// rows of.
	SnapshotFirstTable
	// SnapshotLastTable: its table is the last the snapshot copied rows
	// of.
	SnapshotLastTable
	// SnapshotIncremental: a chunk of an incremental snapshot, copied
	// while the source streamed and placed in the stream at the chunk's
	// high watermark (docs/POSTGRES.md, "Incremental snapshots"); the
	// other bits are not set with it.
	SnapshotIncremental
	snapshotKnown = 1<<iota - 1
)

// MaxIdempotencyKey is the longest idempotency key, in bytes.
const MaxIdempotencyKey = 128

// IdempotencyMark is carried by the first transaction of a request
// appended whole under a client's idempotency key (the HTTP source's
// Idempotency-Key header, `walship append --idempotency-key`), so that the
// key is remembered in the log itself: a retry of the request finds it
// there, even after a restart, and gets the original LSNs instead of a
// second copy. The transactions the request appended are this one and the
// Count-Start-1 that follow it in the log.
type IdempotencyMark struct {
	// Key is the client's key: 1 to MaxIdempotencyKey bytes of printable
	// ASCII (0x21-0x7e).
	Key string
	// Hash is the SHA-256 of the request (the body as sent), so that a
	// reuse of the key for another request is told from a retry.
	Hash [32]byte
	// Start is the index in the request of this transaction (0 unless an
	// earlier attempt was cut short by a crash and this appends the
	// rest); Count is the number of transactions in the whole request.
	Start, Count uint32
	// AppendedAt is when the writer appended the request, by its own
	// clock, in Unix nanoseconds (the idempotency window counts from it,
	// not from the request's commit_time); 0 in marks written before it
	// was recorded.
	AppendedAt int64
}

// Validate checks the key's length and characters and Start < Count.
func (m *IdempotencyMark) Validate() error {
	if err := ValidateIdempotencyKey(m.Key); err != nil {
		return err
	}
	if m.Start >= m.Count {
		return &InvalidError{Path: "idempotency", Reason: fmt.Sprintf("start %d not below count %d", m.Start, m.Count)}
	}
	return nil
}

// ValidateIdempotencyKey checks an idempotency key: 1 to
// MaxIdempotencyKey bytes of printable ASCII (0x21-0x7e).
func ValidateIdempotencyKey(k string) error {
	if k == "" || len(k) > MaxIdempotencyKey {
		return &InvalidError{Path: "idempotency key", Reason: fmt.Sprintf("%d bytes; want 1 to %d", len(k), MaxIdempotencyKey)}
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x21 || k[i] > 0x7e {
			return &InvalidError{Path: "idempotency key", Reason: fmt.Sprintf("byte %d is %#02x; want printable ASCII without spaces", i, k[i])}
		}
	}
	return nil
}

// Equal reports whether h and o are equal (times compare as instants).
func (h TxHeader) Equal(o TxHeader) bool {
	if h.InRequest != o.InRequest || (h.Idempotency == nil) != (o.Idempotency == nil) ||
		(h.Idempotency != nil && *h.Idempotency != *o.Idempotency) {
		return false
	}
	return h.XID == o.XID && h.SourceLSN == o.SourceLSN && h.Origin == o.Origin && h.Snapshot == o.Snapshot &&
		h.SourceCommitTime.Equal(o.SourceCommitTime)
}

// Validate checks that Origin is valid UTF-8 and SourceCommitTime, if set,
// is within years 0000-9999.
func (h *TxHeader) Validate() error {
	if !utf8.ValidString(h.Origin) {
		return &InvalidError{Path: "origin", Reason: "invalid UTF-8"}
	}
	if !h.SourceCommitTime.IsZero() && !timeInRange(h.SourceCommitTime) {
		return &InvalidError{Path: "commit_time", Reason: "outside years 0000-9999"}
	}
	if h.Snapshot&^snapshotKnown != 0 {
		return &InvalidError{Path: "snapshot", Reason: fmt.Sprintf("unknown position bits %#02x", uint8(h.Snapshot&^snapshotKnown))}
	}
	if h.Idempotency != nil {
		return h.Idempotency.Validate()
	}
	return nil
}

// Txn is a transaction: the unit of durability. It is stored as one record
// per change; the first also carries Header.
type Txn struct {
	Header  TxHeader
	Changes []Change
}

// Validate checks the header and every change, and that there is at least
// one change. Paths are those of the `{"changes":[...]}` input form, e.g.
// "changes[2].after.v".
func (t *Txn) Validate() error {
	if len(t.Changes) == 0 {
		return &InvalidError{Path: "changes", Reason: "empty transaction"}
	}
	if err := t.Header.Validate(); err != nil {
		return err
	}
	for i := range t.Changes {
		if err := t.Changes[i].validate([]pathSeg{pkey("changes"), pidx(i)}); err != nil {
			return err
		}
	}
	return nil
}

// Equal reports whether t and o have equal headers and changes.
func (t *Txn) Equal(o *Txn) bool {
	if !t.Header.Equal(o.Header) || len(t.Changes) != len(o.Changes) {
		return false
	}
	for i := range t.Changes {
		if !t.Changes[i].Equal(&o.Changes[i]) {
			return false
		}
	}
	return true
}

// FormatSourceLSN formats a Postgres LSN as "X/Y", upper-case hex without
// leading zeros (as Postgres prints it): 0x16_B374D848 is "16/B374D848".
func FormatSourceLSN(lsn uint64) string {
	return fmt.Sprintf("%X/%X", uint32(lsn>>32), uint32(lsn))
}

// AppendSourceLSN appends lsn to dst as FormatSourceLSN formats it, without
// its allocations (the encoders call it once per transaction).
func AppendSourceLSN(dst []byte, lsn uint64) []byte {
	dst = appendHexUpper(dst, lsn>>32)
	dst = append(dst, '/')
	return appendHexUpper(dst, lsn&0xffffffff)
}

// ParseSourceLSN parses the "X/Y" form of a Postgres LSN: two groups of 1 to
// 8 hex digits (either case).
func ParseSourceLSN(s string) (uint64, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if ok {
		h, err1 := parseHex32(hi)
		l, err2 := parseHex32(lo)
		if err1 == nil && err2 == nil {
			return h<<32 | l, nil
		}
	}
	return 0, &InvalidError{Reason: fmt.Sprintf("invalid source LSN %q (want X/Y, hex)", s)}
}

func parseHex32(s string) (uint64, error) {
	if len(s) == 0 || len(s) > 8 {
		return 0, strconv.ErrSyntax
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isDigit(c) && (c < 'a' || c > 'f') && (c < 'A' || c > 'F') {
			return 0, strconv.ErrSyntax
		}
	}
	return strconv.ParseUint(s, 16, 32)
}
