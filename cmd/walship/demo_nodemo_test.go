//go:build nodemo

package main

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/walship/walship/internal/cli"
)

// TestDemoLeftOut: without the demo, `walship demo` says how to get it.
func TestDemoLeftOut(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := program.Run(context.Background(), []string{"demo"}, nil, &stdout, &stderr)
	if !errors.Is(err, errNoDemo) || cli.Code(err) != 2 {
		t.Fatalf("walship demo = %v (exit %d), want %v", err, cli.Code(err), errNoDemo)
	}
}
