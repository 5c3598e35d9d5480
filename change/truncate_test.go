package change

import (
	"strings"
	"testing"
)

// TestTruncateOptions: the options of a truncate read from JSON, survive
// the record, and are refused on another op or with unknown bits.
func TestTruncateOptions(t *testing.T) {
	txn, err := ParseTxnLine([]byte(`{"table":"t","op":"t","truncate":{"cascade":false,"restart_identity":true}}`))
	if err != nil {
		t.Fatal(err)
	}
	c := txn.Changes[0]
	if c.TruncateOpts != TruncateRestartIdentity {
		t.Fatalf("TruncateOpts = %d, want RESTART IDENTITY", c.TruncateOpts)
	}
	_, back, err := DecodeRecord(AppendRecord(nil, nil, &c))
	if err != nil || !back.Equal(&c) {
		t.Fatalf("record round trip: %+v, %v", back, err)
	}
	if _, err := ParseTxnLine([]byte(`{"table":"t","op":"d","key":{"id":1},"truncate":{"cascade":true}}`)); err == nil ||
		!strings.Contains(err.Error(), "truncate") {
		t.Errorf("options on a delete: %v, want an error naming truncate", err)
	}
	bad := Change{Table: Table{"public", "t"}, Op: Truncate, TruncateOpts: 4}
	if err := bad.Validate(); err == nil {
		t.Error("unknown option bits pass Validate")
	}
}
