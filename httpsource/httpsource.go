// Package httpsource is walship's HTTP source: applications POST
// transactions to /v1/append and get their LSNs back once the transactions
// are durable in the local WAL.
//
// Request: the body is NDJSON, one transaction per line, exactly the input
// of `walship append` (a single change object, or {"changes":[...]}, with
// optional xid, source_lsn, commit_time and origin).
//
// Response: 200 with one line per transaction, in request order,
//
//	{"lsn":<last LSN of the transaction>,"commit_time":"<RFC3339Nano>"}
//
// written only after every transaction of the request is durable (sync
// mode "local": fsynced). Guarantees:
//   - A request is validated whole before anything is appended: a bad line
//     gets 400 with the line and JSON path named, and nothing of the
//     request is written. A commit_time more than wal.max_commit_time_skew
//     ahead of this host's clock is such a bad line (commit times never
//     decrease along the log).
//   - Transactions of one request get increasing LSNs in request order;
//     each is atomic in the log.
//   - 413 if the body exceeds the configured limit, 503 if the WAL has
//     failed (a failed fsync is sticky) or is closing; nothing is
//     acknowledged that is not durable.
//   - A client that disconnects after its transactions were queued gets no
//     answer, but the transactions stay in the log (at-least-once for that
//     client): a client that retries should make its changes idempotent or
//     pass an "origin" it can look up with `walship dump`.
package httpsource

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/walship/walship/change"
	"github.com/walship/walship/wal"
)

// Options configure the handler.
type Options struct {
	// MaxBody bounds a request body in bytes; default 64 MiB.
	MaxBody int64
	Logger  *slog.Logger
}

// Stats are the source's counters.
type Stats struct {
	Requests, Txns, Changes, Rejected uint64
}

// Source serves POST /v1/append into a WAL.
type Source struct {
	w    *wal.WAL
	opts Options
	log  *slog.Logger

	requests, txns, changes, rejected atomic.Uint64
}

// New returns the source writing to w.
func New(w *wal.WAL, opts Options) *Source {
	if opts.MaxBody <= 0 {
		opts.MaxBody = 64 << 20
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Source{w: w, opts: opts, log: opts.Logger}
}

// Stats returns the counters.
func (s *Source) Stats() Stats {
	return Stats{Requests: s.requests.Load(), Txns: s.txns.Load(), Changes: s.changes.Load(), Rejected: s.rejected.Load()}
}

// Handler returns the HTTP handler (mount it at /v1/append, or at / to
// get 404s for other paths).
func (s *Source) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/append", s.serveAppend)
	return mux
}

// errorBody is the JSON of every error response.
type errorBody struct {
	Error string `json:"error"`
	Line  int    `json:"line,omitempty"`
}

func writeError(w http.ResponseWriter, code int, line int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(errorBody{Error: msg, Line: line})
}

func (s *Source) serveAppend(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeError(w, http.StatusMethodNotAllowed, 0, "use POST with an NDJSON body of transactions")
		return
	}
	txns, line, err := s.readBody(w, r)
	if err != nil {
		s.rejected.Add(1)
		code := http.StatusBadRequest
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			code = http.StatusRequestEntityTooLarge
			err = fmt.Errorf("request body larger than %d bytes (source.http.max_body)", mbe.Limit)
		}
		writeError(w, code, line, err.Error())
		return
	}
	if len(txns) == 0 {
		s.rejected.Add(1)
		writeError(w, http.StatusBadRequest, 0, "empty body: want one transaction per line")
		return
	}

	// Queue every transaction, then wait once for the last: the group
	// committer makes them durable together. Queuing is not cancelled by
	// the client going away, so a request is never cut in half.
	tickets := make([]wal.Ticket, 0, len(txns))
	for i := range txns {
		t, err := s.w.AppendAsync(context.WithoutCancel(r.Context()), &txns[i])
		if err != nil {
			s.fail(w, len(tickets), err)
			return
		}
		tickets = append(tickets, t)
		s.txns.Add(1)
		s.changes.Add(uint64(len(txns[i].Changes)))
	}
	if err := s.w.Wait(r.Context(), tickets[len(tickets)-1].Last); err != nil {
		if r.Context().Err() != nil {
			return // the client went away; the transactions stay queued
		}
		s.fail(w, len(tickets), err)
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	buf := make([]byte, 0, 64*len(tickets))
	for _, t := range tickets {
		buf = appendAck(buf, t)
	}
	w.Write(buf)
}

// fail answers an append or durability error: 503, since the WAL's
// failures (a sticky fsync error, a closed log) are the server's, not the
// request's. queued says how many transactions had been queued; they may
// still be durable, so the client is told so.
func (s *Source) fail(w http.ResponseWriter, queued int, err error) {
	s.log.Error("http source: append failed", "err", err, "queued", queued)
	msg := "append failed: " + err.Error()
	if queued > 0 {
		msg += fmt.Sprintf(" (%d transaction(s) of this request were queued and may be durable)", queued)
	}
	writeError(w, http.StatusServiceUnavailable, 0, msg)
}

// readBody parses and validates the whole body. On error it returns the
// 1-based line it concerns.
func (s *Source) readBody(w http.ResponseWriter, r *http.Request) ([]change.Txn, int, error) {
	body := &errTracker{r: http.MaxBytesReader(w, r.Body, s.opts.MaxBody)}
	dec := change.NewDecoder(body)
	var txns []change.Txn
	for {
		line, txn, err := dec.Next()
		if errors.Is(err, io.EOF) {
			return txns, 0, nil
		}
		if err == nil {
			err = txn.Validate()
		}
		if err == nil {
			// Checked here, before anything is queued, so that a refused
			// commit time leaves nothing of the request in the log.
			err = s.w.CheckCommitTime(&txn.Header)
		}
		if err != nil {
			// The decoder reports a cut body as bad JSON; the real cause
			// is the size limit.
			var mbe *http.MaxBytesError
			if errors.As(body.err, &mbe) {
				return nil, 0, body.err
			}
			var ie *change.InvalidError
			if errors.As(err, &ie) && ie.Line == 0 {
				ie.Line = line
			}
			return nil, line, err
		}
		txns = append(txns, txn)
	}
}

// errTracker remembers the first read error other than io.EOF.
type errTracker struct {
	r   io.Reader
	err error
}

func (t *errTracker) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if err != nil && err != io.EOF && t.err == nil {
		t.err = err
	}
	return n, err
}

// appendAck appends the acknowledgement line of `walship append`.
func appendAck(buf []byte, t wal.Ticket) []byte {
	buf = append(buf, `{"lsn":`...)
	buf = strconv.AppendUint(buf, t.Last, 10)
	buf = append(buf, `,"commit_time":"`...)
	buf = t.Time().AppendFormat(buf, time.RFC3339Nano)
	return append(buf, "\"}\n"...)
}
