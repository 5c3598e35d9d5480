package replica

import (
	"context"
	"errors"
)

var errTodo = errors.New("postgres replica: not implemented yet")

func openPostgres(ctx context.Context, rawURL string, opts Options) (backend, error) {
	return nil, errTodo
}
func dumpPostgres(ctx context.Context, rawURL string) (Tables, error)     { return nil, errTodo }
func readPostgresState(ctx context.Context, rawURL string) (State, error) { return State{}, errTodo }
