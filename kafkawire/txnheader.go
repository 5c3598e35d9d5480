package kafkawire

import (
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/walship/walship/change"
)

// Header keys carried by the first record of a transaction only, and only
// when the transaction has what they carry: the parts of its
// change.TxHeader the envelope has no field for, so that a follower's log
// built from the topic holds the HTTP source's idempotency keys
// (docs/KAFKA.md "Headers"). A consumer that ignores them loses nothing it
// applies.
const (
	// HeaderIdempotency carries the transaction's change.IdempotencyMark
	// as JSON: {"key":..,"hash":<64 hex digits>,"start":..,"count":..,
	// "appended_at":<Unix ns>}.
	HeaderIdempotency = "walship.idempotency"
	// HeaderInRequest is "true" on a later transaction of a request
	// appended whole under an idempotency key (change.TxHeader.InRequest).
	HeaderInRequest = "walship.in_request"
)

// idempotencyJSON is the value of HeaderIdempotency.
type idempotencyJSON struct {
	Key        string `json:"key"`
	Hash       string `json:"hash"`
	Start      uint32 `json:"start"`
	Count      uint32 `json:"count"`
	AppendedAt int64  `json:"appended_at"`
}

// AppendTxnHeaders appends to dst the headers the first record of a
// transaction with header h carries besides the position headers:
// HeaderIdempotency if h has a mark, HeaderInRequest if h.InRequest;
// nothing for most transactions.
func AppendTxnHeaders(dst []kgo.RecordHeader, h *change.TxHeader) []kgo.RecordHeader {
	if m := h.Idempotency; m != nil {
		v, _ := json.Marshal(idempotencyJSON{Key: m.Key, Hash: hex.EncodeToString(m.Hash[:]), Start: m.Start,
			Count: m.Count, AppendedAt: m.AppendedAt}) // cannot fail: strings and numbers
		dst = append(dst, kgo.RecordHeader{Key: HeaderIdempotency, Value: v})
	}
	if h.InRequest {
		dst = append(dst, kgo.RecordHeader{Key: HeaderInRequest, Value: []byte("true")})
	}
	return dst
}

// decodeTxnHeaders sets h's idempotency mark and in-request flag from r's
// headers (AppendTxnHeaders). Errors wrap ErrMalformed.
func decodeTxnHeaders(r *kgo.Record, h *change.TxHeader) error {
	for _, rh := range r.Headers {
		switch rh.Key {
		case HeaderIdempotency:
			var j idempotencyJSON
			if err := json.Unmarshal(rh.Value, &j); err != nil {
				return fmt.Errorf("%w: header %s: %v", ErrMalformed, HeaderIdempotency, err)
			}
			m := &change.IdempotencyMark{Key: j.Key, Start: j.Start, Count: j.Count, AppendedAt: j.AppendedAt}
			if n, err := hex.Decode(m.Hash[:], []byte(j.Hash)); err != nil || n != len(m.Hash) || len(j.Hash) != 2*len(m.Hash) {
				return fmt.Errorf("%w: header %s: hash %q is not 64 hex digits", ErrMalformed, HeaderIdempotency, j.Hash)
			}
			if err := m.Validate(); err != nil {
				return fmt.Errorf("%w: header %s: %v", ErrMalformed, HeaderIdempotency, err)
			}
			h.Idempotency = m
		case HeaderInRequest:
			if string(rh.Value) != "true" {
				return fmt.Errorf("%w: header %s: %q, want true", ErrMalformed, HeaderInRequest, rh.Value)
			}
			h.InRequest = true
		}
	}
	return nil
}
