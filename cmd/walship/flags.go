package main

import (
	"flag"
	"io"

	"github.com/walship/walship/internal/cli"
)

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	return program.NewFlagSet(name, stderr)
}
func parseFlags(fs *flag.FlagSet, args []string) (bool, error) { return cli.ParseFlags(fs, args) }
func requireFlag(name, value string) error                     { return cli.RequireFlag(name, value) }
func usageError(format string, args ...any) error              { return cli.UsageError(format, args...) }
