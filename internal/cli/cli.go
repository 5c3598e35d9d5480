// Package cli is the shared frame of walship's command-line programs
// (walship, walreplay): subcommands, flag parsing that reports instead of
// exiting, and exit codes carried by errors.
//
// Conventions: exit 0 on success, 1 on failure, 2 on bad usage (and on
// what each program documents as "cannot read"); a program may define
// more. Errors are printed once, prefixed with the program's name.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// ExitError carries a process exit code other than 1.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

// Exit wraps err with an exit code.
func Exit(code int, err error) error { return &ExitError{Code: code, Err: err} }

// UsageError is bad command-line usage: exit 2.
func UsageError(format string, args ...any) error {
	return &ExitError{Code: 2, Err: fmt.Errorf(format, args...)}
}

// Code returns the exit code err asks for: 0 for nil, an ExitError's code,
// else 1.
func Code(err error) int {
	if err == nil {
		return 0
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	return 1
}

// Command is one subcommand.
type Command struct {
	Name, Summary string
	Run           func(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error
}

// Program is a command-line program made of subcommands.
type Program struct {
	Name     string
	Commands []Command
}

// Main runs the program on os.Args with a context cancelled by SIGINT or
// SIGTERM, prints an error prefixed with the program's name, and exits with
// its code.
func (p *Program) Main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := p.Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", p.Name, err)
		os.Exit(Code(err))
	}
}

// Run dispatches args to a subcommand.
func (p *Program) Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		p.usage(stderr)
		if len(args) == 0 {
			return UsageError("no command given")
		}
		return nil
	}
	for _, c := range p.Commands {
		if c.Name == args[0] {
			return c.Run(ctx, args[1:], stdin, stdout, stderr)
		}
	}
	p.usage(stderr)
	return UsageError("unknown command %q", args[0])
}

func (p *Program) usage(w io.Writer) {
	fmt.Fprintf(w, "usage: %s <command> [flags]\n\ncommands:\n", p.Name)
	for _, c := range p.Commands {
		fmt.Fprintf(w, "  %-8s %s\n", c.Name, c.Summary)
	}
	fmt.Fprintf(w, "\nrun '%s <command> -h' for a command's flags\n", p.Name)
}

// NewFlagSet returns a flag set for "<program> <command>" that reports
// errors instead of exiting.
func NewFlagSet(program, command string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(program+" "+command, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// ParseFlags parses args, rejecting positional arguments; -h is not an
// error (help is true).
func ParseFlags(fs *flag.FlagSet, args []string) (help bool, err error) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return true, nil
		}
		return false, UsageError("%v", err)
	}
	if fs.NArg() > 0 {
		return false, UsageError("unexpected argument %q", fs.Arg(0))
	}
	return false, nil
}

// RequireFlag fails (usage) when a required flag is empty.
func RequireFlag(name, value string) error {
	if value == "" {
		return UsageError("--%s is required", name)
	}
	return nil
}
