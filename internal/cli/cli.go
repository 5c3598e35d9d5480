// Package cli is the shared frame of walship's command-line programs
// (walship, walreplay): subcommands, flag parsing that reports instead of
// exiting, and exit codes carried by errors.
//
// Conventions: exit 0 on success, 1 on failure, 2 on bad usage (and on
// what each program documents as "cannot read"); a program may define
// more. Errors are printed once, prefixed with the program's name and
// redacted like log lines (ErrorLine).
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/walship/walship/internal/secret"
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

// Command is one subcommand. Its help (`<program> <command> -h`, through
// Program.NewFlagSet) is the summary, the usage line, the flags (those the
// usage line names first, in its order, then the others by name) and the
// example.
type Command struct {
	Name, Summary string
	// Usage is the synopsis after "<program> <command>", e.g.
	// "--wal DIR [--from LSN] [--to LSN]".
	Usage string
	// Example is one or more complete command lines that work as shown
	// (given the files they name), one per line.
	Example string
	Run     func(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error
}

// Program is a command-line program made of subcommands. Besides them it
// answers "version" and "--version" (Version).
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
		fmt.Fprint(os.Stderr, ErrorLine(p.Name, err))
		os.Exit(Code(err))
	}
}

// ErrorLine is the line a program prints for the error it exits with:
// "<program>: <error>", scrubbed by secret.Text as every log line is, so
// that a URL, DSN or token an error quotes (an S3 endpoint with user
// information, an SDK message naming it) shows REDACTED here too.
func ErrorLine(program string, err error) string {
	return secret.Text(fmt.Sprintf("%s: %v", program, err)) + "\n"
}

// Run dispatches args to a subcommand.
func (p *Program) Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) > 0 && (args[0] == "version" || args[0] == "--version" || args[0] == "-version") {
		if len(args) > 1 {
			return UsageError("%s takes no arguments", args[0])
		}
		_, err := io.WriteString(stdout, Version(p.Name))
		return err
	}
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
	fmt.Fprintf(w, "  %-8s %s\n", "version", "print the version, the commit it was built from and the Go version")
	fmt.Fprintf(w, "\nrun '%s <command> -h' for a command's usage, flags and an example\n", p.Name)
}

// NewFlagSet returns a flag set for "<program> <command>" that reports
// errors instead of exiting.
func NewFlagSet(program, command string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(program+" "+command, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// NewFlagSet returns the flag set of one of p's commands, reporting errors
// instead of exiting, whose -h prints the command's help (see Command).
func (p *Program) NewFlagSet(command string, stderr io.Writer) *flag.FlagSet {
	fs := NewFlagSet(p.Name, command, stderr)
	for _, c := range p.Commands {
		if c.Name == command {
			fs.Usage = func() { c.help(p.Name, fs) }
		}
	}
	return fs
}

// help prints the command's help to fs's output.
func (c *Command) help(program string, fs *flag.FlagSet) {
	w := fs.Output()
	fmt.Fprintf(w, "%s %s: %s\n\nusage: %s %s %s\n", program, c.Name, c.Summary, program, c.Name, c.Usage)
	// The flags the usage line names, in its order, with the placeholder
	// that follows each there (URL, DIR, N); then the others.
	var named, others []*flag.Flag
	seen := map[string]bool{}
	placeholder := map[string]string{}
	words := strings.Fields(c.Usage)
	for i, word := range words {
		word = strings.Trim(word, "[]()")
		if !strings.HasPrefix(word, "-") {
			continue
		}
		name := strings.TrimLeft(word, "-")
		if f := fs.Lookup(name); f != nil && !seen[name] {
			seen[name] = true
			named = append(named, f)
			if i+1 < len(words) {
				if next := strings.Trim(words[i+1], "[]()"); next != "" && next != "|" && !strings.HasPrefix(next, "-") && !strings.HasPrefix(words[i+1], "[") {
					placeholder[name] = next
				}
			}
		}
	}
	fs.VisitAll(func(f *flag.Flag) {
		if !seen[f.Name] {
			others = append(others, f)
		}
	})
	if len(named) > 0 {
		fmt.Fprintf(w, "\nflags:\n")
		printFlags(w, named, placeholder)
	}
	if len(others) > 0 {
		heading := "flags"
		if len(named) > 0 {
			heading = "other flags"
		}
		fmt.Fprintf(w, "\n%s:\n", heading)
		printFlags(w, others, nil)
	}
	if c.Example != "" {
		fmt.Fprintf(w, "\nexample:\n")
		for _, line := range strings.Split(strings.TrimSpace(c.Example), "\n") {
			fmt.Fprintf(w, "  %s\n", strings.TrimSpace(line))
		}
	}
}

// printFlags prints flags one per entry: the flag with its placeholder
// (from the usage line, else the flag's own) and then its description.
func printFlags(w io.Writer, flags []*flag.Flag, placeholder map[string]string) {
	for _, f := range flags {
		kind, usage := flag.UnquoteUsage(f)
		if p, ok := placeholder[f.Name]; ok && kind != "" {
			kind = p
		}
		dashes := "--"
		if len(f.Name) == 1 {
			dashes = "-"
		}
		line := "  " + dashes + f.Name
		if kind != "" {
			line += " " + kind
		}
		fmt.Fprintf(w, "%s\n        %s", line, usage)
		switch f.DefValue {
		case "", "0", "false", "0s":
		default:
			fmt.Fprintf(w, " (default %s)", f.DefValue)
		}
		fmt.Fprintln(w)
	}
}

// Version returns what "<program> version" prints: the module version,
// the commit the binary was built from (the VCS stamp of the build,
// "unknown" without one, e.g. with -buildvcs=false or `go run`) and the
// Go version.
func Version(program string) string {
	version, commit, goVersion := "unknown", "unknown", runtime.Version()
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		goVersion = bi.GoVersion
		modified := false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				commit = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
		if modified && commit != "unknown" {
			commit += " (modified)"
		}
	}
	return fmt.Sprintf("%s %s\ncommit: %s\ngo: %s\n", program, version, commit, goVersion)
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
