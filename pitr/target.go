package pitr

import (
	"fmt"
	"strconv"
	"time"

	"github.com/walship/walship/change"
)

// RestorePointPrefix is the logical-message prefix of a named restore
// point; the message content is the name.
const RestorePointPrefix = "walship.restore_point"

// Kind is the kind of a restore target.
type Kind int

// Target kinds, as PostgreSQL's recovery_target_*.
const (
	Latest    Kind = iota // every archived transaction
	Time                  // commit time (walship's, never decreasing)
	LSN                   // walship commit LSN
	SourceLSN             // source (Postgres) commit LSN
	XID                   // source transaction id
	Name                  // named restore point
)

var kindNames = [...]string{"latest", "time", "lsn", "source-lsn", "xid", "name"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Target is where a restore stops. It selects a prefix of the log: the
// transactions committed at or before the target (strictly before, with
// Exclusive), in log order; never part of a transaction (docs/DESIGN.md §4.9).
//
//	kind        a transaction t is included (inclusive)    (exclusive)
//	latest      always                                      -
//	time        t.CommitTime <= Time                        <  Time
//	lsn         t.CommitLSN <= LSN                          <  LSN
//	source-lsn  every transaction before the first one      ... with
//	            whose SourceLSN is set and > SourceLSN      SourceLSN >= target
//	xid         up to and including the most recent         up to the one before it
//	            transaction with that xid
//	name        up to and including the transaction that    up to the one before it
//	            holds the most recent restore point Name
//
// Commit times and LSNs never decrease along the log, so each rule selects
// a prefix. A transaction without a source LSN (SourceLSN 0, e.g. from the
// HTTP source) never stops a source-lsn restore by itself.
type Target struct {
	Kind      Kind
	Time      time.Time // Kind Time
	LSN       uint64    // Kind LSN (walship) or SourceLSN (hi<<32 | lo)
	XID       uint64    // Kind XID
	Name      string    // Kind Name
	Exclusive bool
}

// String renders t as the walreplay flag that selects it, e.g.
// "--target-time 2026-01-02T03:04:05Z --exclusive".
func (t Target) String() string {
	var s string
	switch t.Kind {
	case Latest:
		return "--target latest"
	case Time:
		s = "--target-time " + t.Time.Format(time.RFC3339Nano)
	case LSN:
		s = "--target-lsn " + strconv.FormatUint(t.LSN, 10)
	case SourceLSN:
		s = "--target-source-lsn " + change.FormatSourceLSN(t.LSN)
	case XID:
		s = "--target-xid " + strconv.FormatUint(t.XID, 10)
	case Name:
		s = "--target-name " + strconv.Quote(t.Name)
	default:
		return t.Kind.String()
	}
	if t.Exclusive {
		s += " --exclusive"
	}
	return s
}

// Validate reports a target that can select nothing meaningful.
func (t Target) Validate() error {
	switch t.Kind {
	case Latest:
		if t.Exclusive {
			return fmt.Errorf("pitr: --exclusive has no meaning with --target latest")
		}
	case Time:
		if t.Time.IsZero() {
			return fmt.Errorf("pitr: target time is zero")
		}
	case LSN, SourceLSN:
		if t.LSN == 0 {
			return fmt.Errorf("pitr: target %s 0 is before every transaction (LSNs start at 1)", t.Kind)
		}
	case XID:
		if t.XID == 0 {
			return fmt.Errorf("pitr: target xid 0 is not a transaction id")
		}
	case Name:
		if t.Name == "" {
			return fmt.Errorf("pitr: target name is empty")
		}
	default:
		return fmt.Errorf("pitr: unknown target kind %d", int(t.Kind))
	}
	return nil
}

// ParseTarget parses the value of a walreplay target flag: kind is one of
// "time" (RFC 3339, fractional seconds allowed), "lsn" (decimal), "source-lsn"
// (X/Y), "xid" (decimal), "name", or "latest" (value ignored).
func ParseTarget(kind, value string, exclusive bool) (Target, error) {
	t := Target{Exclusive: exclusive}
	var err error
	switch kind {
	case "latest":
		t.Kind = Latest
	case "time":
		t.Kind = Time
		t.Time, err = time.Parse(time.RFC3339Nano, value)
		if err != nil {
			return t, fmt.Errorf("invalid target time %q: want RFC 3339, e.g. 2026-01-02T15:04:05.123Z", value)
		}
	case "lsn":
		t.Kind = LSN
		t.LSN, err = strconv.ParseUint(value, 10, 64)
		if err != nil {
			return t, fmt.Errorf("invalid target LSN %q: want a decimal walship LSN", value)
		}
	case "source-lsn":
		t.Kind = SourceLSN
		t.LSN, err = change.ParseSourceLSN(value)
		if err != nil {
			return t, fmt.Errorf("invalid target source LSN %q: want X/Y in hex, e.g. 16/B374D848", value)
		}
	case "xid":
		t.Kind = XID
		t.XID, err = strconv.ParseUint(value, 10, 64)
		if err != nil {
			return t, fmt.Errorf("invalid target xid %q: want a decimal transaction id", value)
		}
	case "name":
		t.Kind = Name
		t.Name = value
	default:
		return t, fmt.Errorf("unknown target kind %q", kind)
	}
	return t, t.Validate()
}

// IsRestorePoint reports whether c is a named restore point, and its name.
func IsRestorePoint(c *change.Change) (string, bool) {
	if c.Op != change.Message || c.Message == nil || c.Message.Prefix != RestorePointPrefix {
		return "", false
	}
	return string(c.Message.Content), true
}

// RestorePointTxn returns a transaction that records the restore point name,
// for appending to the log (the HTTP source, tests).
func RestorePointTxn(name string) *change.Txn {
	return &change.Txn{Changes: []change.Change{{
		Op:      change.Message,
		Message: &change.LogicalMessage{Prefix: RestorePointPrefix, Content: []byte(name)},
	}}}
}

// stopRule is a target resolved to a test on transactions: beyond reports
// whether t is past the target. Because every rule selects a prefix, the
// first transaction beyond ends the restore.
type stopRule struct {
	kind      ruleKind
	lsn       uint64
	time      time.Time
	exclusive bool
}

type ruleKind int

const (
	ruleNone      ruleKind = iota // latest: nothing is beyond
	ruleCommitLSN                 // CommitLSN <= lsn (< lsn exclusive)
	ruleTime                      // CommitTime <= time (< time)
	ruleSource                    // SourceLSN == 0 || SourceLSN <= lsn (< lsn)
)

func (r stopRule) beyond(t *change.Committed) bool {
	switch r.kind {
	case ruleCommitLSN:
		if r.exclusive {
			return t.CommitLSN >= r.lsn
		}
		return t.CommitLSN > r.lsn
	case ruleTime:
		if r.exclusive {
			return !t.CommitTime.Before(r.time)
		}
		return t.CommitTime.After(r.time)
	case ruleSource:
		s := t.Header.SourceLSN
		if s == 0 {
			return false
		}
		if r.exclusive {
			return s >= r.lsn
		}
		return s > r.lsn
	}
	return false
}

// String describes the rule for plans and errors.
func (r stopRule) String() string {
	op := "<="
	if r.exclusive {
		op = "<"
	}
	switch r.kind {
	case ruleCommitLSN:
		return fmt.Sprintf("commit LSN %s %d", op, r.lsn)
	case ruleTime:
		return fmt.Sprintf("commit time %s %s", op, r.time.Format(time.RFC3339Nano))
	case ruleSource:
		return fmt.Sprintf("source LSN %s %s", op, change.FormatSourceLSN(r.lsn))
	}
	return "every transaction"
}
