package config

import (
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/walship/walship/internal/bytesize"
)

var typeOfConfig = reflect.TypeFor[Config]()

var (
	typeOfDuration = reflect.TypeFor[time.Duration]()
	typeOfByteSize = reflect.TypeFor[ByteSize]()
	// typeOfPostgresTable is a mapping or a plain string.
	typeOfPostgresTable = reflect.TypeFor[PostgresTable]()
)

// walk checks n against type t before decoding: unknown keys, and a
// mapping where a scalar belongs (or the reverse), are reported with their
// path and line. It expands ${VAR} in scalars in place and records the
// line of every key path in lines.
func walk(n *yaml.Node, t reflect.Type, path string, lines map[string]int, lookup func(string) (string, bool)) error {
	if n.Kind == yaml.AliasNode {
		return &Error{Key: path, Line: n.Line, Msg: "YAML aliases are not supported"}
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil
	}
	if t == typeOfPostgresTable && n.Kind == yaml.ScalarNode {
		// A plain "schema.table" (PostgresTable.UnmarshalYAML).
		return expandScalar(n, path, lookup)
	}
	switch {
	case t == typeOfDuration || t == typeOfByteSize || t.Kind() != reflect.Struct && t.Kind() != reflect.Slice:
		if n.Kind != yaml.ScalarNode {
			return &Error{Key: path, Line: n.Line, Msg: "want a single value, not a " + kindName(n)}
		}
		if err := expandScalar(n, path, lookup); err != nil {
			return err
		}
		return checkScalar(n, t, path)
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return &Error{Key: path, Line: n.Line, Msg: "want a list ([a, b] or one '- item' per line), not a " + kindName(n)}
		}
		for i, e := range n.Content {
			if err := walk(e, t.Elem(), path+"["+strconv.Itoa(i)+"]", lines, lookup); err != nil {
				return err
			}
		}
		return nil
	}
	if n.Kind != yaml.MappingNode {
		return &Error{Key: path, Line: n.Line, Msg: "want a mapping of keys, not a " + kindName(n)}
	}
	fields := yamlFields(t)
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		key := join(path, k.Value)
		if seen[k.Value] {
			return &Error{Key: key, Line: k.Line, Msg: "key given twice"}
		}
		seen[k.Value] = true
		ft, ok := fields[k.Value]
		if !ok {
			hint := suggest(k.Value, fields)
			if _, top := yamlFields(typeOfConfig)[k.Value]; top && path != "" {
				hint = "; " + k.Value + " is a top-level section: unindent it"
			}
			return &Error{Key: key, Line: k.Line, Msg: "unknown key" + hint}
		}
		lines[key] = k.Line
		if err := walk(v, ft, key, lines, lookup); err != nil {
			return err
		}
	}
	return nil
}

// checkScalar parses sizes and durations here, where the key and line are
// known (yaml.v3 reports neither for a custom unmarshaler's error).
func checkScalar(n *yaml.Node, t reflect.Type, path string) error {
	var err error
	switch t {
	case typeOfByteSize:
		_, err = bytesize.Parse(n.Value)
	case typeOfDuration:
		if _, perr := time.ParseDuration(n.Value); perr != nil {
			err = fmt.Errorf("%q is not a duration (for example 500ms, 60s, 5m)", n.Value)
		}
	}
	if err != nil {
		return &Error{Key: path, Line: n.Line, Msg: err.Error()}
	}
	return nil
}

// yamlFields maps the yaml keys of struct type t (following ",inline") to
// their field types.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	m := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if opts == "inline" {
			for k, v := range yamlFields(f.Type) {
				m[k] = v
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		m[name] = f.Type
	}
	return m
}

func suggest(key string, fields map[string]reflect.Type) string {
	best, bestD := "", 3
	for k := range fields {
		if d := editDistance(key, k); d < bestD {
			best, bestD = k, d
		}
	}
	if best != "" {
		return "; did you mean " + strconv.Quote(best) + "?"
	}
	return ""
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	default:
		return "value"
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

var envRef = regexp.MustCompile(`\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}|\$\{[^}]*\}?`)

// expandScalar replaces ${VAR} and ${VAR:-default} in n's value. An
// unquoted value is then resolved as if the text had been written there (a
// port becomes a number, "true" a bool); a quoted one stays a string.
func expandScalar(n *yaml.Node, path string, lookup func(string) (string, bool)) error {
	if !strings.Contains(n.Value, "$") {
		return nil
	}
	var firstErr error
	out := envRef.ReplaceAllStringFunc(n.Value, func(m string) string {
		if m == "$$" {
			return "$"
		}
		sub := envRef.FindStringSubmatch(m)
		if sub[1] == "" {
			if firstErr == nil {
				firstErr = &Error{Key: path, Line: n.Line, Msg: "malformed environment reference " + strconv.Quote(m) + " (want ${NAME} or ${NAME:-default})"}
			}
			return m
		}
		if v, ok := lookup(sub[1]); ok && (v != "" || sub[2] == "") {
			return v
		}
		if sub[2] != "" {
			return sub[3]
		}
		if firstErr == nil {
			firstErr = &Error{Key: path, Line: n.Line, Msg: "environment variable " + sub[1] + " is not set (use ${" + sub[1] + ":-default} for a default)"}
		}
		return m
	})
	if firstErr != nil {
		return firstErr
	}
	n.Value = out
	if n.Style == 0 {
		n.Tag = ""
	}
	return nil
}

// decodeError turns yaml.v3's "line N: cannot unmarshal ..." into an Error
// naming the key at that line.
func decodeError(err error, lines map[string]int) error {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "yaml: unmarshal errors:\n")
	msg = strings.TrimSpace(strings.SplitN(msg, "\n", 2)[0])
	line := 0
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if num, tail, ok := strings.Cut(rest, ": "); ok {
			line, _ = strconv.Atoi(num)
			msg = tail
		}
	}
	key := ""
	for k, l := range lines {
		if l == line && len(k) > len(key) {
			key = k
		}
	}
	msg = strings.Replace(msg, "yaml: ", "", 1)
	return &Error{Key: key, Line: line, Msg: msg}
}
