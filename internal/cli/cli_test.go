package cli

import (
	"bytes"
	"context"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
)

func TestProgram(t *testing.T) {
	var got []string
	p := &Program{Name: "prog", Commands: []Command{{Name: "hello", Summary: "says hello",
		Run: func(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
			fs := NewFlagSet("prog", "hello", stderr)
			who := fs.String("who", "", "whom")
			if help, err := ParseFlags(fs, args); help || err != nil {
				return err
			}
			if err := RequireFlag("who", *who); err != nil {
				return err
			}
			got = append(got, *who)
			return Exit(7, errors.New("done"))
		}}}}
	var errOut bytes.Buffer
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{nil, 2, "no command given"},
		{[]string{"nope"}, 2, `unknown command "nope"`},
		{[]string{"hello"}, 2, "--who is required"},
		{[]string{"hello", "--who", "x", "extra"}, 2, `unexpected argument "extra"`},
		{[]string{"hello", "--bad"}, 2, "flag provided but not defined"},
		{[]string{"hello", "--who", "x"}, 7, "done"},
		{[]string{"hello", "-h"}, 0, ""},
		{[]string{"help"}, 0, ""},
	} {
		err := p.Run(context.Background(), c.args, nil, io.Discard, &errOut)
		if Code(err) != c.code || (c.msg != "" && !strings.Contains(err.Error(), c.msg)) {
			t.Errorf("%v: code %d err %v, want %d %q", c.args, Code(err), err, c.code, c.msg)
		}
	}
	if len(got) != 1 || got[0] != "x" {
		t.Errorf("command ran with %v", got)
	}
	if !strings.Contains(errOut.String(), "hello    says hello") {
		t.Errorf("usage lacks the command list:\n%s", errOut.String())
	}
}

// TestCommandHelp: `-h` prints the summary, the usage line, the flags the
// usage line names in its order (with its placeholders), then the others,
// and the example; `version` and `--version` print the version, commit and
// Go version.
func TestCommandHelp(t *testing.T) {
	var p *Program
	p = &Program{Name: "prog", Commands: []Command{{Name: "copy", Summary: "copies a thing",
		Usage:   "--from SRC --to DST [--force] [-v]",
		Example: "prog copy --from a --to b\nprog copy --from a --to b --force",
		Run: func(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
			fs := p.NewFlagSet("copy", stderr)
			fs.Bool("zeta", false, "an extra flag")
			fs.Bool("force", false, "overwrite")
			fs.String("to", "", "destination")
			fs.Bool("v", false, "verbose")
			fs.String("from", "", "source")
			fs.Int("alpha", 3, "another extra flag")
			_, err := ParseFlags(fs, args)
			return err
		}}}}
	var errOut bytes.Buffer
	if err := p.Run(context.Background(), []string{"copy", "-h"}, nil, io.Discard, &errOut); err != nil {
		t.Fatal(err)
	}
	want := `prog copy: copies a thing

usage: prog copy --from SRC --to DST [--force] [-v]

flags:
  --from SRC
        source
  --to DST
        destination
  --force
        overwrite
  -v
        verbose

other flags:
  --alpha int
        another extra flag (default 3)
  --zeta
        an extra flag

example:
  prog copy --from a --to b
  prog copy --from a --to b --force
`
	if errOut.String() != want {
		t.Errorf("help:\n%s\nwant:\n%s", errOut.String(), want)
	}

	for _, arg := range []string{"version", "--version", "-version"} {
		var out bytes.Buffer
		if err := p.Run(context.Background(), []string{arg}, nil, &out, io.Discard); err != nil {
			t.Fatalf("%s: %v", arg, err)
		}
		lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
		if len(lines) != 3 || !strings.HasPrefix(lines[0], "prog ") || len(lines[0]) == len("prog ") ||
			!strings.HasPrefix(lines[1], "commit: ") || lines[2] != "go: "+runtime.Version() {
			t.Errorf("%s printed:\n%s", arg, out.String())
		}
	}
	if err := p.Run(context.Background(), []string{"version", "x"}, nil, io.Discard, io.Discard); Code(err) != 2 {
		t.Errorf("version with an argument: %v", err)
	}
	errOut.Reset()
	p.Run(context.Background(), []string{"help"}, nil, io.Discard, &errOut)
	if !strings.Contains(errOut.String(), "version  print the version") {
		t.Errorf("the command list lacks version:\n%s", errOut.String())
	}
}
