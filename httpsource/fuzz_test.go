package httpsource

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/walship/walship/change"
	"github.com/walship/walship/wal"
)

// FuzzRequestAtomicity posts random bodies mixing valid and invalid lines
// (bad JSON, invalid changes, far-future commit times, changes over the
// record limit once encoded) and checks that a request is all or nothing:
// a 200 appended exactly the body's transactions, in order; any other
// answer is a 4xx and appended nothing, never a prefix.
func FuzzRequestAtomicity(f *testing.F) {
	good := `{"table":"public.t","op":"c","key":{"id":1},"after":{"id":1,"v":"x"}}`
	multi := `{"changes":[{"table":"t","op":"u","key":{"id":1},"after":{"id":1}},{"table":"u","op":"t"}],"xid":7}`
	big := `{"table":"t","op":"c","after":{"v":[` + strings.Repeat("1.5,", 60) + `1.5]}}`
	for _, seed := range []string{
		good + "\n" + multi + "\n",
		good + "\n" + big + "\n",
		good + "\n" + `{"table":"t","op":"x"}` + "\n",
		good + "\n{not json\n" + good + "\n",
		`{"commit_time":"2099-01-01T00:00:00Z","table":"t","op":"t"}` + "\n" + good,
		good + "\r\n\n  \n" + multi,
		"",
		"\n\n",
	} {
		f.Add(seed)
	}
	w, _, err := wal.Open(wal.Options{Dir: f.TempDir(), Sync: wal.SyncOff, MaxRecordBytes: 256})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { w.Close() })
	h := New(w, Options{MaxBody: 16 << 10}).Handler()
	f.Fuzz(func(t *testing.T, body string) {
		before := w.Durable()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v1/append", strings.NewReader(body)))
		after := w.Durable()
		switch {
		case rec.Code == http.StatusOK:
			want := decodeAll(t, body)
			got := readFrom(t, w, before+1)
			if len(got) != len(want) || after != got[len(got)-1].CommitLSN {
				t.Fatalf("200 appended %d transactions (LSNs %d..%d), want the body's %d", len(got), before+1, after, len(want))
			}
			for i := range want {
				if !got[i].Txn.Equal(&want[i]) {
					t.Fatalf("transaction %d appended as %+v, want %+v", i, got[i].Txn, want[i])
				}
			}
			if n := strings.Count(rec.Body.String(), "\n"); n != len(want) {
				t.Fatalf("%d acknowledgements for %d transactions", n, len(want))
			}
		case rec.Code >= 400 && rec.Code < 500:
			if after != before {
				t.Fatalf("status %d appended LSNs %d..%d: %s", rec.Code, before+1, after, rec.Body)
			}
		default:
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	})
}

// decodeAll decodes a body the handler accepted.
func decodeAll(t *testing.T, body string) []change.Txn {
	dec := change.NewDecoder(strings.NewReader(body))
	var out []change.Txn
	for {
		_, txn, err := dec.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("accepted body does not decode: %v", err)
		}
		out = append(out, txn)
	}
}

func readFrom(t *testing.T, w *wal.WAL, from uint64) []change.Committed {
	r, err := w.NewReader(from, false)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var out []change.Committed
	for {
		tx, err := r.Next(context.Background())
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, *tx)
	}
}
