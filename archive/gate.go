package archive

import (
	"context"
	"errors"
	"fmt"
)

// ErrGateClosed marks a write refused because the writer's gate
// (WithPutGate) returned an error: in a high-availability group, this node
// no longer leads and must write nothing more.
var ErrGateClosed = errors.New("archive: write gate closed")

// WithPutGate returns an Archive that shares a's backend, codecs and
// settings and calls gate right before each object, manifest or record it
// puts and each key it deletes. When gate returns an error nothing is
// written and the call fails with an error matching both ErrGateClosed and
// gate's error, naming the key. The gate is checked before the backend's
// own retries of one put start, not between them. A nil gate returns a
// itself. Close a, not the returned Archive.
func (a *Archive) WithPutGate(gate func() error) *Archive {
	if gate == nil {
		return a
	}
	return &Archive{b: gatedBackend{Backend: a.b, gate: gate}, opts: a.opts, codec: a.codec, enc: a.enc, dec: a.dec, log: a.log}
}

// gatedBackend checks its gate before every write.
type gatedBackend struct {
	Backend
	gate func() error
}

func (g gatedBackend) check(op, key string) error {
	if err := g.gate(); err != nil {
		return fmt.Errorf("archive: %s %s: %w: %w", op, key, ErrGateClosed, err)
	}
	return nil
}

func (g gatedBackend) Put(ctx context.Context, key string, body []byte) error {
	if err := g.check("put", key); err != nil {
		return err
	}
	return g.Backend.Put(ctx, key, body)
}

func (g gatedBackend) PutIfAbsent(ctx context.Context, key string, body []byte) error {
	if err := g.check("put", key); err != nil {
		return err
	}
	return g.Backend.PutIfAbsent(ctx, key, body)
}

func (g gatedBackend) Delete(ctx context.Context, key string) error {
	if err := g.check("delete", key); err != nil {
		return err
	}
	return g.Backend.Delete(ctx, key)
}

// Retries passes on the wrapped backend's count (Archive.Retries).
func (g gatedBackend) Retries() uint64 {
	if r, ok := g.Backend.(interface{ Retries() uint64 }); ok {
		return r.Retries()
	}
	return 0
}
