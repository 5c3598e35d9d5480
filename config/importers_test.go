package config

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	pathpkg "path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestOnlyDaemonAndCommandsImportConfig holds the rule of the package
// doc: only daemon and the commands under cmd/ read this package; every
// other package, tests included, takes its own Options, so that the
// translation from the file lives in one place (the daemon) and the
// components can be used and tested without a configuration file.
func TestOnlyDaemonAndCommandsImportConfig(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	mod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	var module string
	for _, line := range strings.Split(string(mod), "\n") {
		if m, ok := strings.CutPrefix(strings.TrimSpace(line), "module "); ok {
			module = strings.TrimSpace(m)
			break
		}
	}
	if module == "" {
		t.Fatal("go.mod names no module")
	}
	self := module + "/config"
	allowed := func(dir string) bool {
		return dir == "config" || dir == "daemon" || dir == "cmd" || strings.HasPrefix(dir, "cmd/")
	}

	checked := 0
	fset := token.NewFileSet()
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			// What the go command ignores: hidden and _ directories, testdata.
			if n := d.Name(); path != root && (strings.HasPrefix(n, ".") || strings.HasPrefix(n, "_") || n == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		file, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		file = filepath.ToSlash(file)
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		checked++
		for _, imp := range f.Imports {
			p, err := strconv.Unquote(imp.Path.Value)
			if err != nil {
				return err
			}
			if p == self && !allowed(pathpkg.Dir(file)) {
				t.Errorf("%s imports %s: only daemon and cmd/... may; give the package Options and translate in daemon", file, self)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 50 {
		t.Fatalf("only %d Go files found under %s: the walk is broken", checked, root)
	}
}
