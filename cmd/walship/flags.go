package main

import (
	"errors"
	"flag"
	"io"
)

// newFlagSet returns a flag set that reports errors instead of exiting.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("walship "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parseFlags parses args, rejecting positional arguments; -h is not an error.
func parseFlags(fs *flag.FlagSet, args []string) (help bool, err error) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return true, nil
		}
		return false, usageError("%v", err)
	}
	if fs.NArg() > 0 {
		return false, usageError("unexpected argument %q", fs.Arg(0))
	}
	return false, nil
}

func requireFlag(name, value string) error {
	if value == "" {
		return usageError("--%s is required", name)
	}
	return nil
}
