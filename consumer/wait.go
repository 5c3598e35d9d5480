package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// MaxWait bounds the timeout a /v1/wait request may ask for.
const MaxWait = 5 * time.Minute

// DefaultWait is the timeout of a /v1/wait request that gives none.
const DefaultWait = 5 * time.Second

// WaitApplied blocks until the replica's position reaches lsn (the
// transaction holding lsn is applied) or ctx ends.
func (c *Consumer) WaitApplied(ctx context.Context, lsn uint64) error {
	for {
		c.mu.Lock()
		applied, ch := c.mu.applied, c.mu.advanced
		c.mu.Unlock()
		if applied >= lsn {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// WaitHandler serves read-your-writes for clients of the replica:
//
//	GET /v1/wait?lsn=N[&timeout=5s]
//
// answers 200 {"lsn":N,"applied":A} once the replica has applied the
// transaction holding LSN N (A >= N), 504 {"error":...,"applied":A} if the
// timeout (default 5s, at most 5m) passes first, 400 for a bad parameter
// and 405 for another method. A client passes the LSN `walship append` or
// the HTTP source returned for its write.
func (c *Consumer) WaitHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reply := func(code int, v any) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(code)
			json.NewEncoder(w).Encode(v)
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			reply(http.StatusMethodNotAllowed, map[string]any{"error": "method " + r.Method + " not allowed: use GET"})
			return
		}
		q := r.URL.Query()
		lsn, err := strconv.ParseUint(q.Get("lsn"), 10, 64)
		if err != nil || lsn == 0 {
			reply(http.StatusBadRequest, map[string]any{"error": fmt.Sprintf("lsn=%q: want a positive decimal LSN", q.Get("lsn"))})
			return
		}
		timeout := DefaultWait
		if s := q.Get("timeout"); s != "" {
			if timeout, err = time.ParseDuration(s); err != nil || timeout <= 0 || timeout > MaxWait {
				reply(http.StatusBadRequest, map[string]any{"error": fmt.Sprintf("timeout=%q: want a Go duration in (0, %v], e.g. 5s", s, MaxWait)})
				return
			}
		}
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		err = c.WaitApplied(ctx, lsn)
		applied := c.position()
		switch {
		case err == nil:
			reply(http.StatusOK, map[string]any{"lsn": lsn, "applied": applied})
		case errors.Is(err, context.DeadlineExceeded):
			reply(http.StatusGatewayTimeout, map[string]any{"error": fmt.Sprintf("LSN %d not applied within %v", lsn, timeout), "applied": applied})
		default: // the client went away
			reply(http.StatusServiceUnavailable, map[string]any{"error": err.Error(), "applied": applied})
		}
	})
}
