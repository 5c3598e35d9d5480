package segment

import (
	"strings"
	"testing"
)

// TestAbortedRangeFrameRules: an aborted-range frame reads as one abort
// record at its last LSN ending the transaction begun at its first; one
// without the abort or end-of-transaction bit, covering fewer than two
// LSNs, or not starting its transaction, is rejected by its header.
func TestAbortedRangeFrameRules(t *testing.T) {
	b := abortedRangeSeed()
	h, reason := decodeFrameHeader(b)
	if reason != "" {
		t.Fatalf("the seed: %s", reason)
	}
	fr := newFrameReader(memFile(append(make([]byte, HeaderSize), b...)), "t", h.salt, HeaderSize)
	fh, raw, err := fr.next()
	if err != nil {
		t.Fatal(err)
	}
	var it recordIter
	it.reset(&fh, raw)
	rec, ok, why := it.next()
	if !ok || why != "" || rec.LSN != 9 || rec.TxnStart != 3 || !rec.Aborted || !rec.Commit || len(rec.Data) != 0 {
		t.Fatalf("record %+v, %v %q; want the abort record at 9 ending the transaction begun at 3", rec, ok, why)
	}
	if _, ok, why := it.next(); ok || why != "" {
		t.Fatalf("more records: %v %q", ok, why)
	}
	for name, edit := range map[string]func(h *frameHeader){
		"no abort bit":     func(h *frameHeader) { h.flags &^= flagAbort },
		"no end bit":       func(h *frameHeader) { h.flags &^= flagEndsTxn },
		"one LSN":          func(h *frameHeader) { h.count = 1 },
		"continues a txn":  func(h *frameHeader) { h.txnStart = 2 },
		"abort of count 7": func(h *frameHeader) { h.flags &^= flagAbortedRange },
	} {
		h2 := h
		edit(&h2)
		hb := make([]byte, FrameHeaderSize)
		h2.encode(hb)
		if _, reason := decodeFrameHeader(hb); !strings.Contains(reason, "abort") {
			t.Errorf("%s: %q, want a rejection naming the abort frame rule", name, reason)
		}
	}
}
