// Package doccheck holds a test, and nothing else, that keeps the
// repository's cross-references true: every Go and Markdown file is
// checked for references that point nowhere.
//
// The test fails, naming file:line and the reference, when a file
//   - names a repository file that does not exist (`docs/FOO.md`,
//     `scripts/x.sh`, a bare `helpers.go` resolved against the file's own
//     directory), or links to one in Markdown (`[x](../y.md)`);
//   - cites a section a document does not have: `docs/X.md §4.2`, a `§3`
//     that follows a document's name on the same line (in Go, in the same
//     comment block), a bare `§3` in a Markdown file (its own sections), or a
//     Markdown link to a `#anchor` that no heading of the target produces;
//   - names the design document without its directory, or cites an issue
//     tracker number: the repository explains itself (docs/DESIGN.md);
//   - (Markdown only) names a Test or Fuzz function that no _test.go file
//     defines.
//
// Paths preceded by "/", "$", "~" or ":" (absolute paths, URLs, shell
// variables) and paths under a host name (github.com/...) are not
// repository references and are not checked, nor are YAML file names in
// Go files (configuration files that tests write). This package's own files are
// not scanned: their examples of bad references are meant to be bad.
package doccheck
