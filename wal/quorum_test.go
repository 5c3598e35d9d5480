package wal

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// TestParseQuorum: the forms PostgreSQL's synchronous_standby_names takes,
// and errors for bad syntax that say what is wrong.
func TestParseQuorum(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Quorum
	}{
		{"FIRST 2 (a, b, c)", Quorum{N: 2, Names: []string{"a", "b", "c"}}},
		{"first 1(a)", Quorum{N: 1, Names: []string{"a"}}},
		{"ANY 2 (r-1, r.2, r_3)", Quorum{Any: true, N: 2, Names: []string{"r-1", "r.2", "r_3"}}},
		{"any 1 (\"Replica One\", \"say \"\"hi\"\"\")", Quorum{Any: true, N: 1, Names: []string{"Replica One", `say "hi"`}}},
		{"2 (a, b)", Quorum{N: 2, Names: []string{"a", "b"}}},
		{"a, b, c", Quorum{N: 1, Names: []string{"a", "b", "c"}}},
		{"  a  ", Quorum{N: 1, Names: []string{"a"}}},
		{"1, 2", Quorum{N: 1, Names: []string{"1", "2"}}},
	} {
		q, err := ParseQuorum(tc.in)
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if !reflect.DeepEqual(*q, tc.want) {
			t.Errorf("%q = %+v, want %+v", tc.in, *q, tc.want)
		}
		if again, err := ParseQuorum(q.String()); err != nil || !reflect.DeepEqual(again, q) {
			t.Errorf("%q: String %q parses to %+v, %v", tc.in, q.String(), again, err)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"", "empty"},
		{"FIRST (a, b)", "want a number after FIRST"},
		{"ANY x (a)", "want a number after ANY"},
		{"FIRST 3 (a, b)", "3 of 2 replicas: want 1 to 2"},
		{"ANY 0 (a)", "0 of 1 replicas"},
		{"FIRST 1 (a, b", "want ',' or ')'"},
		{"FIRST 1 (a,)", "unexpected \")\""},
		{"FIRST 1 (a) b", "after ')'"},
		{"FIRST 1 a", "want '('"},
		{"a, a", "listed twice"},
		{"a b", "want ','"},
		{"a, \"b", "unterminated quoted name"},
		{"ANY 1 (\"\")", "empty quoted name"},
		{"a,", "missing at the end"},
	} {
		_, err := ParseQuorum(tc.in)
		if err == nil || !errors.Is(err, ErrQuorumSyntax) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want ErrQuorumSyntax containing %q", tc.in, err, tc.want)
		}
	}
}

// TestQuorumPosition: ANY n is the n-th highest applied position of the
// listed replicas; FIRST n the lowest of the first n that have reported,
// in list order.
func TestQuorumPosition(t *testing.T) {
	anyQ, _ := ParseQuorum("ANY 1 (a, b)")
	first2, _ := ParseQuorum("FIRST 2 (a, b, c)")
	first1, _ := ParseQuorum("FIRST 1 (a, b)")
	any2, _ := ParseQuorum("ANY 2 (a, b, c)")
	for _, tc := range []struct {
		q       *Quorum
		applied map[string]uint64
		want    uint64
	}{
		{anyQ, map[string]uint64{}, 0},
		{anyQ, map[string]uint64{"a": 5}, 5},
		{anyQ, map[string]uint64{"a": 5, "b": 9}, 9},
		{anyQ, map[string]uint64{"x": 50}, 0}, // not listed
		{any2, map[string]uint64{"a": 5, "b": 9, "c": 7}, 7},
		{any2, map[string]uint64{"a": 5}, 0},
		{first1, map[string]uint64{"a": 5, "b": 9}, 5}, // a has priority
		{first1, map[string]uint64{"b": 9}, 9},         // a has not reported
		{first2, map[string]uint64{"a": 5}, 0},         // only one reported
		{first2, map[string]uint64{"a": 5, "b": 9, "c": 1}, 5},
		{first2, map[string]uint64{"a": 5, "c": 3}, 3},
	} {
		if got := tc.q.Position(tc.applied); got != tc.want {
			t.Errorf("%s with %v: %d, want %d", tc.q, tc.applied, got, tc.want)
		}
	}
}
