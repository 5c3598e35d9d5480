package doccheck

import (
	"bufio"
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"testing/fstest"
	"unicode"
)

// TestRepositoryReferencesResolve checks every .go and .md file of the
// repository (see the package documentation for the rules).
func TestRepositoryReferencesResolve(t *testing.T) {
	root := moduleRoot(t)
	findings, err := check(os.DirFS(root))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range findings {
		t.Errorf("%s", f)
	}
	if len(findings) > 0 {
		t.Logf("%d bad references; cite files by their path from the repository root, sections as `docs/X.md §N`", len(findings))
	}
}

// TestCheckerFindsBadReferences runs the checker on a small made-up
// repository, so that each rule is known to fail when it should and to
// stay quiet on good references.
func TestCheckerFindsBadReferences(t *testing.T) {
	design := "# Design\n\n## 1. One\n\n### 1.2 Sub\n\n## 2. Two\n\n```sh\n# 9. not a heading\n```\n"
	fsys := fstest.MapFS{
		"go.mod":               {Data: []byte("module x\n")},
		"README.md":            {Data: []byte("# x\n\n## Documentation\n\nSee [design](docs/DESIGN.md#1-one) and docs/DESIGN.md §1.2, `scripts/ok.sh`, `bench/README.md`.\n")},
		"docs/DESIGN.md":       {Data: []byte(design + "\nBare §2 and §1.2 are this file's; TestGood is real.\n")},
		"docs/OTHER.md":        {Data: []byte("# Other\n\nNo numbered sections; [back](DESIGN.md#2-two), [top](../README.md#documentation).\n")},
		"scripts/ok.sh":        {Data: []byte("#!/bin/sh\n")},
		"bench/README.md":      {Data: []byte("# bench\n")},
		"pkg/good.go":          {Data: []byte("// Package pkg follows docs/DESIGN.md §1 and §2, and\n// the rule of §1.2 (see helper.go, https://example.com/a/b.go, $TMPDIR/x.md).\npackage pkg\n")},
		"pkg/helper.go":        {Data: []byte("package pkg\n")},
		"pkg/good_test.go":     {Data: []byte("package pkg\n\nfunc TestGood(t *testing.T) {}\n")},
		"pkg/bad.go":           {Data: []byte(badGo)},
		"docs/BAD.md":          {Data: []byte(badMD)},
		"pkg/testdata/skip.md": {Data: []byte("docs/NOPE.md\n")},
	}
	findings, err := check(fsys)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(findings, "\n")
	want := []string{
		"pkg/bad.go:1: docs/NOPE.md: no such file",
		"pkg/bad.go:2: DESIGN.md: name it docs/DESIGN.md",
		"pkg/bad.go:3: §7: docs/DESIGN.md has no section 7",
		"pkg/bad.go:4: §1-§9: docs/DESIGN.md has no section 9",
		"pkg/bad.go:5: issue 12: cite",
		"pkg/bad.go:7: §3: names no document",
		"pkg/bad.go:8: §1: docs/OTHER.md has no numbered sections",
		"pkg/bad.go:9: missing.go: no such file",
		"pkg/bad.go:11: §1.5: docs/DESIGN.md has no section 1.5",
		"docs/BAD.md:3: [x](nowhere.md): no such file",
		"docs/BAD.md:4: [y](DESIGN.md#3-three): docs/DESIGN.md has no heading with anchor #3-three",
		"docs/BAD.md:5: §4: docs/BAD.md has no numbered sections",
		"docs/BAD.md:6: TestMissing: no _test.go file defines it",
		"docs/BAD.md:7: [z](#nope): docs/BAD.md has no heading with anchor #nope",
	}
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("missing finding %q", w)
		}
	}
	if len(findings) != len(want) {
		t.Errorf("got %d findings, want %d:\n%s", len(findings), len(want), got)
	}
}

const badGo = `// See docs/NOPE.md for more.
// Bare DESIGN.md is ambiguous.
// As docs/DESIGN.md §7 says.
// As docs/DESIGN.md §1-§9 say.
// Since issue 12.

// As §3 says: a new comment block names no document.
// As docs/OTHER.md §1 says.
// See missing.go.
// The rule of docs/DESIGN.md §1.2 and
// §1.5 on the next line.
package pkg
`

const badMD = `# Bad

A [x](nowhere.md) link.
A [y](DESIGN.md#3-three) link.
This file's §4.
` + "`TestMissing`" + ` is cited.
A [z](#nope) link.
`

// moduleRoot is the directory holding go.mod, above the test's directory.
func moduleRoot(t *testing.T) string {
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}

var (
	// pathRe matches what may be a repository file: slash-separated
	// segments ending in a file name with one of the checked extensions.
	pathRe = regexp.MustCompile(`[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)*\.(?:md|go|sh|ya?ml)\b`)
	// sectRe matches a section citation, optionally a range (§3-§5,
	// §4.1-4.3).
	sectRe  = regexp.MustCompile(`§\s*(\d+(?:\.\d+)*)(?:\s*[-–]\s*§?\s*(\d+(?:\.\d+)*))?`)
	linkRe  = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	issueRe = regexp.MustCompile(`(?i)\bissues?\s+#?\d+`)
	testRe  = regexp.MustCompile(`\b(?:Test|Fuzz|Benchmark)[A-Z0-9_]\w*`)
	headRe  = regexp.MustCompile(`^(#{1,6})\s+(.*?)\s*#*\s*$`)
	numRe   = regexp.MustCompile(`^(\d+(?:\.\d+)*)\.?(?:\s|$)`)
	funcRe  = regexp.MustCompile(`(?m)^func ((?:Test|Fuzz|Benchmark)\w*)\(`)
)

// doc is what the checker knows of one Markdown file.
type doc struct {
	sections map[string]bool // "4", "4.2"
	anchors  map[string]bool // GitHub heading anchors
}

type checker struct {
	fsys     fs.FS
	files    map[string]bool // every file and directory
	docs     map[string]*doc // by path, lazily
	tests    map[string]bool // Test/Fuzz/Benchmark functions defined
	findings []finding
}

// finding is one bad reference.
type finding struct {
	file string
	line int
	text string // "reference: problem"
}

// check returns one "file:line: reference: problem" per bad reference.
func check(fsys fs.FS) ([]string, error) {
	c := &checker{fsys: fsys, files: map[string]bool{}, docs: map[string]*doc{}, tests: map[string]bool{}}
	var scan []string
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if p != "." && (strings.HasPrefix(name, ".") || name == "testdata" || name == "node_modules") {
				return fs.SkipDir
			}
			c.files[p] = true
			return nil
		}
		c.files[p] = true
		if strings.HasSuffix(name, "_test.go") {
			b, err := fs.ReadFile(fsys, p)
			if err != nil {
				return err
			}
			for _, m := range funcRe.FindAllSubmatch(b, -1) {
				c.tests[string(m[1])] = true
			}
		}
		if (strings.HasSuffix(name, ".go") || strings.HasSuffix(name, ".md")) && !strings.HasPrefix(p, "internal/doccheck/") {
			scan = append(scan, p)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, p := range scan {
		if err := c.checkFile(p); err != nil {
			return nil, err
		}
	}
	sort.SliceStable(c.findings, func(i, j int) bool {
		a, b := c.findings[i], c.findings[j]
		if a.file != b.file {
			return a.file < b.file
		}
		return a.line < b.line
	})
	out := make([]string, len(c.findings))
	for i, f := range c.findings {
		out[i] = fmt.Sprintf("%s:%d: %s", f.file, f.line, f.text)
	}
	return out, nil
}

func (c *checker) reportf(file string, line int, ref, format string, args ...any) {
	c.findings = append(c.findings, finding{file, line, ref + ": " + fmt.Sprintf(format, args...)})
}

// resolve returns the repository path a reference made in file names, or
// "" if it names none. Paths with a directory are tried from the
// repository root first, then from file's directory; bare names the other
// way round. "./" and "../" are always relative to file's directory.
func (c *checker) resolve(file, ref string) string {
	dir := path.Dir(file)
	var tries []string
	switch {
	case strings.HasPrefix(ref, "./") || strings.HasPrefix(ref, "../"):
		tries = []string{path.Join(dir, ref)}
	case strings.Contains(ref, "/"):
		tries = []string{path.Clean(ref), path.Join(dir, ref)}
	default:
		tries = []string{path.Join(dir, ref), ref}
	}
	for _, p := range tries {
		if c.files[p] {
			return p
		}
	}
	return ""
}

// pathRefs returns the spans of line that are references to repository
// files (see the package documentation for what is left out).
func pathRefs(line string) [][]int {
	var out [][]int
	for _, m := range pathRe.FindAllStringIndex(line, -1) {
		if m[0] > 0 && strings.ContainsRune(`/$~:@*<>{%\`, rune(line[m[0]-1])) {
			continue
		}
		ref := line[m[0]:m[1]]
		if first, _, ok := strings.Cut(ref, "/"); ok && first != "." && first != ".." && strings.Contains(first, ".") {
			continue // a host name: github.com/..., modernc.org/...
		}
		out = append(out, m)
	}
	return out
}

func (c *checker) checkFile(file string) error {
	b, err := fs.ReadFile(c.fsys, file)
	if err != nil {
		return err
	}
	isMD := strings.HasSuffix(file, ".md")
	var blockDoc string // Go: the last document named in the current comment block
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if !isMD && !strings.HasPrefix(strings.TrimSpace(line), "//") {
			blockDoc = ""
		}
		if m := issueRe.FindString(line); m != "" {
			c.reportf(file, n, m, "cite the document that says it (docs/...), or say it plainly")
		}
		for i := 0; ; {
			j := strings.Index(line[i:], "DESIGN.md")
			if j < 0 {
				break
			}
			j += i
			if !strings.HasSuffix(line[:j], "docs/") && !strings.HasSuffix(line[:j], "](") {
				c.reportf(file, n, "DESIGN.md", "name it docs/DESIGN.md")
			}
			i = j + len("DESIGN.md")
		}
		// File references, and the documents they name, by position.
		type named struct {
			end int
			doc string // resolved path of a .md file, "" if not one
		}
		var names []named
		for _, m := range pathRefs(line) {
			ref := line[m[0]:m[1]]
			if !isMD && (strings.HasSuffix(ref, ".yaml") || strings.HasSuffix(ref, ".yml")) {
				continue // in Go, a file the code writes or reads at run time
			}
			p := c.resolve(file, ref)
			if p == "" {
				if path.Base(ref) == "DESIGN.md" && !strings.HasPrefix(ref, "docs/") {
					continue // reported above
				}
				if !(isMD && strings.HasSuffix(line[:m[0]], "](")) {
					c.reportf(file, n, ref, "no such file in the repository")
				}
				continue
			}
			if strings.HasSuffix(p, ".md") {
				names = append(names, named{m[1], p})
			}
		}
		if isMD {
			for _, m := range linkRe.FindAllStringSubmatchIndex(line, -1) {
				target := line[m[2]:m[3]]
				if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
					continue
				}
				p, anchor, _ := strings.Cut(target, "#")
				ref := line[m[0]-1 : m[1]]
				if k := strings.LastIndex(line[:m[0]], "["); k >= 0 {
					ref = line[k:m[1]]
				}
				resolved := file
				if p != "" {
					resolved = path.Join(path.Dir(file), p)
					if !c.files[resolved] {
						c.reportf(file, n, ref, "no such file in the repository")
						continue
					}
					if strings.HasSuffix(resolved, ".md") {
						names = append(names, named{m[1], resolved})
					}
				}
				if anchor != "" && strings.HasSuffix(resolved, ".md") {
					d, err := c.doc(resolved)
					if err != nil {
						return err
					}
					if !d.anchors[anchor] {
						c.reportf(file, n, ref, "%s has no heading with anchor #%s", resolved, anchor)
					}
				}
			}
			for _, m := range testRe.FindAllString(line, -1) {
				if !c.tests[m] {
					c.reportf(file, n, m, "no _test.go file defines it")
				}
			}
		}
		sort.Slice(names, func(i, j int) bool { return names[i].end < names[j].end })
		for _, m := range sectRe.FindAllStringSubmatchIndex(line, -1) {
			target := ""
			for _, nm := range names {
				if nm.end <= m[0] {
					target = nm.doc
				}
			}
			switch {
			case target != "":
			case !isMD && blockDoc != "":
				target = blockDoc
			case isMD:
				target = file
			default:
				c.reportf(file, n, line[m[0]:m[1]], "names no document; write docs/X.md §N")
				continue
			}
			d, err := c.doc(target)
			if err != nil {
				return err
			}
			ref := line[m[0]:m[1]]
			for _, g := range [][2]int{{m[2], m[3]}, {m[4], m[5]}} {
				if g[0] < 0 {
					continue
				}
				num := line[g[0]:g[1]]
				switch {
				case len(d.sections) == 0:
					c.reportf(file, n, ref, "%s has no numbered sections", target)
				case !d.sections[num]:
					c.reportf(file, n, ref, "%s has no section %s", target, num)
				}
			}
		}
		if !isMD && len(names) > 0 {
			blockDoc = names[len(names)-1].doc
		}
	}
	return sc.Err()
}

// doc parses (once) the headings of a Markdown file.
func (c *checker) doc(p string) (*doc, error) {
	if d, ok := c.docs[p]; ok {
		return d, nil
	}
	b, err := fs.ReadFile(c.fsys, p)
	if err != nil {
		return nil, err
	}
	d := &doc{sections: map[string]bool{}, anchors: map[string]bool{}}
	seen := map[string]int{}
	fence := false
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fence = !fence
			continue
		}
		if fence {
			continue
		}
		h := headRe.FindStringSubmatch(line)
		if h == nil {
			continue
		}
		if m := numRe.FindStringSubmatch(h[2]); m != nil {
			d.sections[m[1]] = true
		}
		a := slug(h[2])
		if k := seen[a]; k > 0 {
			d.anchors[fmt.Sprintf("%s-%d", a, k)] = true
		} else {
			d.anchors[a] = true
		}
		seen[a]++
	}
	c.docs[p] = d
	return d, nil
}

// slug is GitHub's anchor for a heading: lower case, punctuation other
// than '-' and '_' dropped, spaces turned into '-'.
func slug(h string) string {
	var sb strings.Builder
	for _, r := range strings.ToLower(h) {
		switch {
		case unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_':
			sb.WriteRune(r)
		case r == ' ':
			sb.WriteByte('-')
		}
	}
	return sb.String()
}
