package cli

import (
	"bytes"
	"context"
	"errors"
	"io"
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
