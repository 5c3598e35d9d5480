// Package httpsource is walship's HTTP source: applications POST
// transactions to /v1/append and get their LSNs back once the transactions
// are durable in the local WAL.
//
// Request: the body is NDJSON, one transaction per line, exactly the input
// of `walship append` (a single change object, or {"changes":[...]}, with
// optional xid, source_lsn, commit_time and origin). An optional
// Idempotency-Key header (1 to 128 bytes of printable ASCII) makes a retry
// safe.
//
// Response: 200 with one line per transaction, in request order,
//
//	{"lsn":<last LSN of the transaction>,"commit_time":"<RFC3339Nano>"}
//
// written only after every transaction of the request has reached the
// request's replication level: the Walship-Sync header's (off, local,
// shipped or applied) if it has one, else the configured one (wal.sync; default
// local: fsynced). A header may lower or raise the level, as SET
// synchronous_commit does in a PostgreSQL session. Guarantees:
//   - A request is all or nothing. Every line is decoded, validated and
//     encoded before anything is appended; a bad line (including a change
//     whose encoded record exceeds the log's record limit, and a
//     commit_time more than wal.max_commit_time_skew ahead of this host's
//     clock) gets 400 naming the line and JSON path, and nothing of the
//     request is written. The request's transactions are then queued as
//     one unit (wal.WAL.AppendBatchAsync): increasing, consecutive LSNs in
//     request order, nothing between them, each transaction atomic.
//   - 5xx only for a fault of the server: 503 if the WAL has failed (a
//     failed fsync is sticky) or is closing. If that happens after the
//     request was queued, the answer lists exactly which of its LSNs are
//     durable ("durable_lsns"); nothing is acknowledged that is not durable.
//   - A level is never claimed before it is reached. If shipped (or
//     applied) is not
//     reached within Options.SyncTimeout the answer is 504 (503 if the
//     daemon stops waiting) listing the durable LSNs and how far the level
//     got; a retry with the Idempotency-Key waits again and appends
//     nothing. A level the source cannot reach (shipped with no sink,
//     applied with no quorum, local on a log that does not fsync) is 400
//     with nothing appended.
//   - Memory is bounded by configuration whatever the input: a body is
//     decoded line by line and only its encoded records are kept, and
//     Options.MaxInflight (source.http.max_inflight_bytes) bounds, over
//     all requests in flight, their body bytes plus the decoded form of
//     the line each is decoding and of its first line (an estimate,
//     counted as the line is decoded). A request that would exceed it gets
//     429 with Retry-After and nothing appended: at once when its
//     Content-Length says so, else as soon as the bytes read of its
//     chunked body, or a line's decoded form, do. 413 if a body exceeds
//     Options.MaxBody, or if a line's decoded form could not fit beside
//     its request even with nothing else in flight (naming the line).
//   - Idempotency: a request with an Idempotency-Key is remembered in the
//     log itself (wal.KeyIndex) for the idempotency window. A retry with the
//     same key and the same body appends nothing and gets the original
//     answer, with the header Idempotency-Replayed: true, also after a
//     restart; a request with the key in flight waits for the first; the
//     same key with another body gets 422 and nothing appended. Keys are
//     never logged.
//   - A client that disconnects after its transactions were queued gets no
//     answer, but the transactions stay in the log: retry with the same
//     Idempotency-Key to get their LSNs instead of a second copy.
package httpsource

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/walship/walship/change"
	"github.com/walship/walship/wal"
)

// Defaults of Options.
const (
	DefaultMaxBody     = 64 << 20
	DefaultMaxInflight = 128 << 20
	DefaultSyncTimeout = 30 * time.Second
	DefaultReadTimeout = 30 * time.Second
)

// SyncHeader is the request header that sets the replication level of one
// request ("off", "local", "shipped" or "applied"), overriding the configured one in
// either direction; the answer carries it back with the level reached.
const SyncHeader = "Walship-Sync"

// Options configure the handler.
type Options struct {
	// MaxBody bounds a request body in bytes; default DefaultMaxBody.
	MaxBody int64
	// MaxInflight bounds the body bytes of all requests being served at
	// once (source.http.max_inflight_bytes); default DefaultMaxInflight,
	// and never below MaxBody.
	MaxInflight int64
	// ReadTimeout (source.http.read_timeout) ends a request whose body
	// makes no progress for that long (408), so that a client that stalls
	// gives its share of MaxInflight back; default DefaultReadTimeout.
	ReadTimeout time.Duration
	// Keys remembers idempotency keys; nil refuses requests that carry an
	// Idempotency-Key (400).
	Keys *wal.KeyIndex
	// Levels is the log's replication levels: the configured one
	// (wal.sync) is each request's unless its Walship-Sync header asks for
	// another. Nil: the log's own level (local, or off if it does not
	// fsync) and no sinks, so shipped is refused.
	Levels *wal.Levels
	// SyncTimeout bounds how long a request waits for a level beyond
	// local (source.http.sync_timeout); default DefaultSyncTimeout. Past
	// it the answer is 504 with what is durable locally.
	SyncTimeout time.Duration
	Logger      *slog.Logger
}

// Stats are the source's counters. Rejected counts every refused request,
// RejectedLoad those refused for MaxInflight (429), Replayed the
// idempotent retries answered from the log.
type Stats struct {
	Requests, Txns, Changes, Rejected, RejectedLoad, Replayed uint64
	// InflightBytes is the body bytes reserved by requests now.
	InflightBytes int64
}

// Source serves POST /v1/append into a WAL.
type Source struct {
	w    *wal.WAL
	opts Options
	log  *slog.Logger

	inflight                                                  atomic.Int64
	requests, txns, changes, rejected, rejectedLoad, replayed atomic.Uint64
}

// New returns the source writing to w.
func New(w *wal.WAL, opts Options) *Source {
	if opts.MaxBody <= 0 {
		opts.MaxBody = DefaultMaxBody
	}
	if opts.MaxInflight <= 0 {
		opts.MaxInflight = DefaultMaxInflight
	}
	opts.MaxInflight = max(opts.MaxInflight, opts.MaxBody)
	if opts.ReadTimeout <= 0 {
		opts.ReadTimeout = DefaultReadTimeout
	}
	if opts.SyncTimeout <= 0 {
		opts.SyncTimeout = DefaultSyncTimeout
	}
	if opts.Levels == nil {
		// A log without fsync cannot promise local: its level is off.
		lv, err := wal.NewLevels(w, wal.LevelLocal, nil, nil)
		if err != nil {
			lv, _ = wal.NewLevels(w, wal.LevelOff, nil, nil)
		}
		opts.Levels = lv
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Source{w: w, opts: opts, log: opts.Logger}
}

// Stats returns the counters.
func (s *Source) Stats() Stats {
	return Stats{Requests: s.requests.Load(), Txns: s.txns.Load(), Changes: s.changes.Load(),
		Rejected: s.rejected.Load(), RejectedLoad: s.rejectedLoad.Load(), Replayed: s.replayed.Load(),
		InflightBytes: s.inflight.Load()}
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
	// DurableLSNs lists, on a server fault after the request was queued,
	// the commit LSNs of its transactions that are durable (possibly
	// none); absent when nothing of the request was appended.
	DurableLSNs *[]uint64 `json:"durable_lsns,omitempty"`
	// Level and LevelLSN, when the request's replication level was not
	// reached: the level and the highest LSN it has reached.
	Level    string  `json:"level,omitempty"`
	LevelLSN *uint64 `json:"level_lsn,omitempty"`
}

func writeError(w http.ResponseWriter, code int, line int, msg string) {
	writeErrorBody(w, code, errorBody{Error: msg, Line: line})
}

func writeErrorBody(w http.ResponseWriter, code int, b errorBody) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(b)
}

// errOverloaded ends the reading of a body that would take the bytes in
// flight beyond MaxInflight.
var errOverloaded = errors.New("httpsource: too many request bytes in flight")

// errLineTooLarge ends the decoding of a line whose decoded form alone
// would take the request beyond MaxInflight.
var errLineTooLarge = errors.New("httpsource: line too large to decode within the in-flight bound")

// retryAfter is the Retry-After of a 429, in seconds: requests in flight
// end within a flush or two, so a short wait is enough.
const retryAfter = "1"

func (s *Source) overloaded(w http.ResponseWriter) {
	s.rejected.Add(1)
	s.rejectedLoad.Add(1)
	w.Header().Set("Retry-After", retryAfter)
	writeError(w, http.StatusTooManyRequests, 0, fmt.Sprintf(
		"too many request bytes in flight (source.http.max_inflight_bytes %d): retry after %s s", s.opts.MaxInflight, retryAfter))
}

// reserve takes n bytes of the in-flight budget, or reports false.
func (s *Source) reserve(n int64) bool {
	for {
		cur := s.inflight.Load()
		if cur+n > s.opts.MaxInflight {
			return false
		}
		if s.inflight.CompareAndSwap(cur, cur+n) {
			return true
		}
	}
}

func (s *Source) serveAppend(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeError(w, http.StatusMethodNotAllowed, 0, "use POST with an NDJSON body of transactions")
		return
	}
	keys := r.Header.Values("Idempotency-Key")
	if len(keys) > 0 {
		var err error
		switch {
		case len(keys) > 1:
			err = errors.New("more than one Idempotency-Key header")
		case s.opts.Keys == nil:
			err = errors.New("Idempotency-Key is not enabled on this source")
		default:
			err = change.ValidateIdempotencyKey(keys[0])
		}
		if err != nil {
			s.rejected.Add(1)
			writeError(w, http.StatusBadRequest, 0, "Idempotency-Key: "+err.Error())
			return
		}
	}
	level, err := s.requestLevel(r)
	if err != nil {
		s.rejected.Add(1)
		writeError(w, http.StatusBadRequest, 0, err.Error())
		return
	}
	// The memory bound: a declared body is reserved whole before a byte
	// of it is read; a chunked one as it is read (body.Read).
	if r.ContentLength > s.opts.MaxBody {
		s.rejected.Add(1)
		writeError(w, http.StatusRequestEntityTooLarge, 0, fmt.Sprintf("request body of %d bytes larger than %d bytes (source.http.max_body)", r.ContentLength, s.opts.MaxBody))
		return
	}
	body := &body{s: s, r: http.MaxBytesReader(w, r.Body, s.opts.MaxBody), chunked: r.ContentLength < 0,
		rc: http.NewResponseController(w)}
	defer func() { s.inflight.Add(-body.reserved) }()
	if !body.chunked {
		if !s.reserve(r.ContentLength) {
			s.overloaded(w)
			return
		}
		body.reserved = r.ContentLength
	}
	if len(keys) > 0 {
		body.hash = sha256.New()
	}

	b, lines, line, err := s.readBody(body)
	if err != nil {
		var mbe *http.MaxBytesError
		switch {
		case errors.Is(err, errOverloaded):
			s.overloaded(w)
		case errors.Is(err, os.ErrDeadlineExceeded):
			s.rejected.Add(1)
			writeError(w, http.StatusRequestTimeout, 0, fmt.Sprintf(
				"no body bytes for %v (source.http.read_timeout): nothing appended", s.opts.ReadTimeout))
		case errors.Is(err, errLineTooLarge):
			s.rejected.Add(1)
			writeError(w, http.StatusRequestEntityTooLarge, line, fmt.Sprintf(
				"line %d: its decoded form does not fit source.http.max_inflight_bytes (%d) beside the request's body (%d bytes) and first line: split it into smaller transactions or lines, or raise source.http.max_inflight_bytes; nothing appended",
				line, s.opts.MaxInflight, max(r.ContentLength, 0)))
		case errors.As(err, &mbe):
			s.rejected.Add(1)
			writeError(w, http.StatusRequestEntityTooLarge, 0, fmt.Sprintf("request body larger than %d bytes (source.http.max_body)", mbe.Limit))
		default:
			s.rejected.Add(1)
			writeError(w, http.StatusBadRequest, line, err.Error())
		}
		return
	}
	if b.Len() == 0 {
		s.rejected.Add(1)
		writeError(w, http.StatusBadRequest, 0, "empty body: want one transaction per line")
		return
	}

	var claim *wal.Claim
	if len(keys) > 0 {
		var sum [32]byte
		body.hash.Sum(sum[:0])
		claim, err = s.opts.Keys.Claim(r.Context(), keys[0], sum, b.Len())
		switch {
		case errors.Is(err, wal.ErrKeyConflict):
			s.rejected.Add(1)
			writeError(w, http.StatusUnprocessableEntity, 0, "Idempotency-Key was already used, within the idempotency window (source.http.idempotency_window), for a request with a different body: nothing appended")
			return
		case err != nil:
			return // the client went away while the key's first request was in flight
		case claim.Replayed:
			s.replay(w, r, claim, level, true)
			return
		case claim.Start > 0:
			// An earlier attempt was cut short by a crash: append the rest.
			if err := b.Skip(int(claim.Start)); err != nil {
				claim.Release()
				s.fail(w, nil, err)
				return
			}
		}
		if err := b.SetMark(claim.Mark()); err != nil {
			claim.Release()
			s.fail(w, nil, err)
			return
		}
	}

	// Queue the whole request as one unit, then wait once for its last
	// transaction. Neither is cut short by the client going away, so a
	// request is never cut in half and its key is settled.
	ctx := context.WithoutCancel(r.Context())
	if err := s.w.AppendBatchAsync(ctx, b); err != nil {
		if claim != nil {
			claim.Release()
		}
		if ie, ok := errors.AsType[*change.InvalidError](err); ok {
			// Only the idempotency mark can make a record too large here,
			// in the first transaction appended: the claim's Start.
			start := 0
			if claim != nil {
				start = int(claim.Start)
			}
			ie.Line = int(lines[start])
			s.rejected.Add(1)
			writeError(w, http.StatusBadRequest, ie.Line, err.Error())
			return
		}
		s.fail(w, nil, err)
		return
	}
	s.txns.Add(uint64(b.Len()))
	b.Tickets(func(t wal.Ticket) { s.changes.Add(t.Last - t.First + 1) })
	err = s.opts.Levels.Wait(ctx, min(level, wal.LevelLocal), b.Last())
	if claim != nil {
		claim.Done(b)
	}
	if err != nil {
		s.fail(w, b, err)
		return
	}
	if claim != nil && claim.Start > 0 {
		// The answer covers the whole request, the earlier part's too.
		s.replay(w, r, claim, level, false)
		return
	}
	if level > wal.LevelLocal {
		var lsns []uint64
		b.Tickets(func(t wal.Ticket) { lsns = append(lsns, t.Last) })
		if !s.waitLevel(w, r, level, lsns) {
			return
		}
	}
	w.Header().Set(SyncHeader, level.String())
	w.Header().Set("Content-Type", "application/x-ndjson")
	buf := make([]byte, 0, 64<<10)
	b.Tickets(func(t wal.Ticket) {
		buf = appendAck(buf, t)
		if len(buf) >= 60<<10 {
			w.Write(buf)
			buf = buf[:0]
		}
	})
	w.Write(buf)
}

// replay answers a keyed request with the acknowledgements of all its
// transactions, read back from the log: a retry of a request already there
// (replayed), or one whose earlier part an interrupted attempt appended.
func (s *Source) replay(w http.ResponseWriter, r *http.Request, claim *wal.Claim, level wal.Level, replayed bool) {
	var buf []byte
	var lsns []uint64
	err := claim.Tickets(r.Context(), func(t wal.Ticket) { buf = appendAck(buf, t); lsns = append(lsns, t.Last) })
	if err != nil {
		if r.Context().Err() != nil {
			return
		}
		s.rejected.Add(1)
		s.log.Warn("http source: an idempotent retry's original transactions cannot be read back", "err", err)
		writeError(w, http.StatusConflict, 0, "this Idempotency-Key's request was appended earlier, but its transactions can no longer be read back from the log: nothing appended again ("+err.Error()+")")
		return
	}
	// Read back from the log, so durable: a retry is answered only once
	// the request's level is reached, as the first attempt would be.
	if level > wal.LevelLocal && !s.waitLevel(w, r, level, lsns) {
		return
	}
	w.Header().Set(SyncHeader, level.String())
	w.Header().Set("Content-Type", "application/x-ndjson")
	if replayed {
		s.replayed.Add(1)
		w.Header().Set("Idempotency-Replayed", "true")
	}
	w.Write(buf)
}

// requestLevel returns the request's replication level: its Walship-Sync
// header if it has one, else the configured level. A level the log cannot
// reach (shipped without a sink, local or above on a log that does not
// fsync) is an error naming the header.
func (s *Source) requestLevel(r *http.Request) (wal.Level, error) {
	vals := r.Header.Values(SyncHeader)
	switch len(vals) {
	case 0:
		return s.opts.Levels.Level(), nil
	case 1:
	default:
		return 0, errors.New(SyncHeader + ": more than one header")
	}
	level, err := wal.ParseLevel(vals[0])
	if err != nil || vals[0] == "" {
		return 0, fmt.Errorf("%s: %q is not one of off, local, shipped, applied", SyncHeader, vals[0])
	}
	if err := s.opts.Levels.Check(level); err != nil {
		return 0, fmt.Errorf("%s: %v: nothing appended", SyncHeader, err)
	}
	return level, nil
}

// waitLevel waits until the request's transactions (commit LSNs lsns, in
// order; all durable locally) reach level, bounded by SyncTimeout and the
// client's connection. If they do not, it answers (504 on the timeout,
// 503 when the daemon stops waiting, nothing if the client went away)
// and reports false: the answer lists what is durable locally, since
// nothing is acknowledged at a level it has not reached.
func (s *Source) waitLevel(w http.ResponseWriter, r *http.Request, level wal.Level, lsns []uint64) bool {
	ctx, cancel := context.WithTimeout(r.Context(), s.opts.SyncTimeout)
	defer cancel()
	err := s.opts.Levels.Wait(ctx, level, lsns[len(lsns)-1])
	if err == nil {
		return true
	}
	if r.Context().Err() != nil {
		return false // the client went away: its transactions stay in the log
	}
	reached := s.opts.Levels.Position(level)
	code := http.StatusServiceUnavailable
	what := "was not reached: walship is stopping"
	if errors.Is(err, context.DeadlineExceeded) {
		code = http.StatusGatewayTimeout
		what = fmt.Sprintf("not reached within %v (source.http.sync_timeout)", s.opts.SyncTimeout)
	} else if !errors.Is(err, wal.ErrLevelsClosed) {
		what = "not reached: " + err.Error()
	}
	s.log.Warn("http source: replication level not reached", "level", level.String(), "level_lsn", reached, "want", lsns[len(lsns)-1], "err", err)
	durable := []uint64{}
	upTo := s.w.Durable()
	for _, l := range lsns {
		if l <= upTo {
			durable = append(durable, l)
		}
	}
	writeErrorBody(w, code, errorBody{
		Error: fmt.Sprintf("replication level %s %s; it has reached LSN %d. This request's %d transaction(s) are durable in the local log (durable_lsns) but not acknowledged at level %s: "+
			"retry with the same Idempotency-Key to wait again without appending twice", level, what, reached, len(lsns), level),
		DurableLSNs: &durable, Level: level.String(), LevelLSN: &reached,
	})
	return false
}

// fail answers an append or durability error: 503, since the WAL's
// failures (a sticky fsync error, a closed log) are the server's, not the
// request's. b is the request's batch if it was queued: the answer then
// lists which of its transactions are durable.
func (s *Source) fail(w http.ResponseWriter, b *wal.Batch, err error) {
	s.log.Error("http source: append failed", "err", err, "queued", b != nil)
	body := errorBody{Error: "append failed: " + err.Error() + ": nothing of this request was appended"}
	if b != nil {
		durable := []uint64{}
		upTo := s.w.Durable()
		b.Tickets(func(t wal.Ticket) {
			if t.Last <= upTo {
				durable = append(durable, t.Last)
			}
		})
		body.Error = fmt.Sprintf("append failed: %v: %d of this request's %d transaction(s) are durable, listed in durable_lsns; the others are not acknowledged", err, len(durable), b.Len())
		body.DurableLSNs = &durable
	}
	writeErrorBody(w, http.StatusServiceUnavailable, body)
}

// readBody decodes, validates and encodes the whole body into a batch,
// line by line, and returns the line of each transaction. On error it
// returns the 1-based line it concerns.
func (s *Source) readBody(body *body) (*wal.Batch, []int32, int, error) {
	dec := change.NewDecoder(body)
	dec.SetCharge(body.charge)
	b := s.w.NewBatch()
	var lines []int32
	for {
		line, txn, err := dec.Next()
		if errors.Is(err, io.EOF) {
			return b, lines, 0, nil
		}
		if err == nil {
			err = b.Add(&txn)
		}
		if err == nil {
			lines = append(lines, int32(line))
		}
		if err == nil && b.Len() > 1 {
			// Only the line's encoded records stay; the batch keeps the
			// first transaction decoded until it is appended, so its
			// charge stays too.
			body.release(body.decoded)
		}
		body.decoded = 0
		if err != nil {
			// The decoder reports a cut body as bad JSON; the real cause
			// is the size limit or the load.
			if body.err != nil {
				return nil, nil, line, body.err
			}
			var ie *change.InvalidError
			if errors.As(err, &ie) && ie.Line == 0 {
				ie.Line = line
			}
			return nil, nil, line, err
		}
	}
}

// body reads a request body: it remembers the first read error other than
// io.EOF, hashes what it reads if asked, and reserves the bytes of a
// chunked body in the in-flight budget as they arrive.
type body struct {
	s        *Source
	r        io.Reader
	chunked  bool
	rc       *http.ResponseController
	reserved int64 // bytes of the budget held
	decoded  int64 // of which charged for the line being decoded
	hash     hash.Hash
	err      error
}

// charge reserves n more bytes of the budget for the decoded form of the
// line being decoded (change.Decoder.SetCharge): errOverloaded if the
// budget has not that much left now, errLineTooLarge if it never could
// have beside what this request holds.
func (b *body) charge(n int) error {
	if b.err != nil {
		return b.err
	}
	switch {
	case b.reserved+int64(n) > b.s.opts.MaxInflight:
		b.err = errLineTooLarge
	case !b.s.reserve(int64(n)):
		b.err = errOverloaded
	default:
		b.reserved += int64(n)
		b.decoded += int64(n)
	}
	return b.err
}

// release gives n bytes of the budget back.
func (b *body) release(n int64) {
	b.s.inflight.Add(-n)
	b.reserved -= n
}

func (b *body) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	// Each read may wait read_timeout for the body's next bytes: the
	// deadline moves on as they arrive. Without one, a client that
	// declares a body and never sends it would hold its budget forever.
	if err := b.rc.SetReadDeadline(time.Now().Add(b.s.opts.ReadTimeout)); err != nil && b.err == nil {
		b.err = err
		return 0, err
	}
	n, err := b.r.Read(p)
	// A chunked body's bytes are reserved as they arrive: the overshoot
	// is at most one read, into the decoder's buffer.
	if b.chunked && n > 0 {
		if !b.s.reserve(int64(n)) {
			b.err = errOverloaded
			return 0, b.err
		}
		b.reserved += int64(n)
	}
	if b.hash != nil {
		b.hash.Write(p[:n])
	}
	if err != nil && err != io.EOF && b.err == nil {
		b.err = err
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
