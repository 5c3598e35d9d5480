package change

import "fmt"

// Op is the kind of a change. Its value is the one-letter code used in the
// JSON forms and stored as one byte in the binary record.
type Op byte

// The operations, with Debezium's letters.
const (
	Insert   Op = 'c' // a new row: After
	Update   Op = 'u' // a changed row: After, and Key or Before
	Delete   Op = 'd' // a removed row: Key or Before
	Truncate Op = 't' // the whole table emptied: no rows
	Read     Op = 'r' // a row read by a snapshot: After
	Message  Op = 'm' // a logical message (pg_logical_emit_message): Change.Message
)

// ParseOp parses the one-letter code of an op ("c", "u", "d", "t", "r", "m").
func ParseOp(s string) (Op, error) {
	if len(s) == 1 {
		if op := Op(s[0]); op.Valid() {
			return op, nil
		}
	}
	return 0, &InvalidError{Reason: fmt.Sprintf("unknown op %q (want one of c, u, d, t, r, m)", s)}
}

// Valid reports whether op is one of the defined constants.
func (op Op) Valid() bool {
	switch op {
	case Insert, Update, Delete, Truncate, Read, Message:
		return true
	}
	return false
}

// String returns the one-letter code of a valid op, and "Op(0xNN)" otherwise.
func (op Op) String() string {
	if op.Valid() {
		return string(rune(op))
	}
	return fmt.Sprintf("Op(%#02x)", byte(op))
}

// Name returns the op's English name ("insert", "update", ...), or the
// same as String for an invalid op.
func (op Op) Name() string {
	switch op {
	case Insert:
		return "insert"
	case Update:
		return "update"
	case Delete:
		return "delete"
	case Truncate:
		return "truncate"
	case Read:
		return "read"
	case Message:
		return "message"
	}
	return op.String()
}
