//go:build nodemo

package main

import (
	"context"
	"errors"
	"io"

	"github.com/walship/walship/internal/cli"
)

// errNoDemo is `walship demo` in a binary built with -tags nodemo, which
// leaves out the demo and what only it needs (an in-process Kafka broker,
// the PostgreSQL cluster runner): see the package doc.
var errNoDemo = errors.New("walship demo: this walship was built without the demo (-tags nodemo); " +
	"build one with it (go build ./cmd/walship) or run scripts/demo.sh")

func runDemo(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	return cli.Exit(2, errNoDemo)
}
