package checksum

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/walship/walship/replica"
)

// Exit codes of `walship checksum report`.
const (
	ExitEqual      = 0 // every chunk of the last finished round is equal
	ExitDifferent  = 1 // a chunk of the last finished round differs
	ExitUnfinished = 3 // no round has finished yet
)

// Range is a chunk's key range: keys greater than After (nil: from the
// start) and at most Hi (nil: to the end).
type Range struct {
	Chunk int      `json:"chunk"`
	After []string `json:"after"`
	Hi    []string `json:"hi"`
	// Source and replica row counts of the last attempt.
	SourceRows  int64 `json:"source_rows"`
	ReplicaRows int64 `json:"replica_rows"`
}

// String shows the range as an interval of keys.
func (r Range) String() string {
	lo, hi := "(-inf", "+inf)"
	if r.After != nil {
		lo = "(" + strings.Join(r.After, ",")
	}
	if r.Hi != nil {
		hi = strings.Join(r.Hi, ",") + "]"
	}
	return lo + ", " + hi
}

// TableReport is one table's chunks in a round.
type TableReport struct {
	Table     string  `json:"table"`
	Chunks    int     `json:"chunks"`
	Equal     int     `json:"equal"`
	Different []Range `json:"different"`
	// Unsettled chunks kept changing at the source through every attempt
	// and differed at each: neither equal nor different.
	Unsettled []Range `json:"unsettled"`
}

// Report is the verdict on a replica's last finished round.
type Report struct {
	Round    string        `json:"round,omitempty"`
	Finished bool          `json:"finished"`
	Pending  string        `json:"pending,omitempty"` // a later round still under way
	Tables   []TableReport `json:"tables"`
}

// Exit is the exit code the report calls for.
func (r Report) Exit() int {
	if !r.Finished {
		return ExitUnfinished
	}
	for _, t := range r.Tables {
		if len(t.Different) > 0 {
			return ExitDifferent
		}
	}
	return ExitEqual
}

// Summarize reports the last finished round of results (a replica's
// walship_checksums, in applied order). A chunk is equal if any of its
// attempts (the check and its recheck) found the replica equal, and
// different only if every attempt differed. A round is finished when its
// end was applied and every chunk it counts was seen.
func Summarize(results []replica.ChecksumResult) Report {
	type chunkKey struct {
		table string
		chunk int
	}
	type round struct {
		done     bool
		chunks   int
		attempts map[chunkKey][]replica.ChecksumResult
	}
	rounds := map[string]*round{}
	var order []string
	for _, r := range results {
		rd, ok := rounds[r.Round]
		if !ok {
			rd = &round{attempts: map[chunkKey][]replica.ChecksumResult{}}
			rounds[r.Round] = rd
			order = append(order, r.Round)
		}
		if r.Table == "" {
			rd.done, rd.chunks = true, r.Chunk
			continue
		}
		k := chunkKey{r.Table, r.Chunk}
		rd.attempts[k] = append(rd.attempts[k], r)
	}
	var rep Report
	for i := len(order) - 1; i >= 0; i-- {
		rd := rounds[order[i]]
		if !rd.done || len(rd.attempts) < rd.chunks {
			if rep.Pending == "" {
				rep.Pending = order[i]
			}
			continue
		}
		rep.Round, rep.Finished = order[i], true
		byTable := map[string]*TableReport{}
		for k, as := range rd.attempts {
			t, ok := byTable[k.table]
			if !ok {
				t = &TableReport{Table: k.table, Different: []Range{}, Unsettled: []Range{}}
				byTable[k.table] = t
			}
			t.Chunks++
			switch v, last := verdict(as); v {
			case equal:
				t.Equal++
			case different:
				t.Different = append(t.Different, Range{Chunk: k.chunk, After: last.After, Hi: last.Hi, SourceRows: last.SourceRows, ReplicaRows: last.Rows})
			default:
				t.Unsettled = append(t.Unsettled, Range{Chunk: k.chunk, After: last.After, Hi: last.Hi, SourceRows: last.SourceRows, ReplicaRows: last.Rows})
			}
		}
		for _, t := range byTable {
			sort.Slice(t.Different, func(i, j int) bool { return t.Different[i].Chunk < t.Different[j].Chunk })
			sort.Slice(t.Unsettled, func(i, j int) bool { return t.Unsettled[i].Chunk < t.Unsettled[j].Chunk })
			rep.Tables = append(rep.Tables, *t)
		}
		sort.Slice(rep.Tables, func(i, j int) bool { return rep.Tables[i].Table < rep.Tables[j].Table })
		break
	}
	if rep.Pending != "" && rep.Round != "" && rep.Pending < rep.Round {
		rep.Pending = ""
	}
	return rep
}

type verdictKind int

const (
	unsettled verdictKind = iota
	equal
	different
)

// verdict judges a chunk by its attempts (in applied order). An attempt
// is settled when the next attempt found the same rows at the source: no
// transaction changed the range between the two, so the source's hash
// held at the attempt's commit, where the replica hashed. The chunk is
// equal if the replica agreed at any attempt; different if it differed at
// a settled attempt; otherwise unsettled. It returns the attempt that
// decided (or the last).
func verdict(as []replica.ChecksumResult) (verdictKind, replica.ChecksumResult) {
	sort.SliceStable(as, func(i, j int) bool { return as[i].Attempt < as[j].Attempt })
	for _, a := range as {
		if a.Equal {
			return equal, a
		}
	}
	for i := 0; i+1 < len(as); i++ {
		if as[i+1].SourceRows == as[i].SourceRows && as[i+1].SourceHash == as[i].SourceHash {
			return different, as[i]
		}
	}
	return unsettled, as[len(as)-1]
}

// Print writes the report for people.
func (r Report) Print(w io.Writer) {
	if !r.Finished {
		fmt.Fprintln(w, "no finished round yet")
		if r.Pending != "" {
			fmt.Fprintf(w, "round %s under way\n", r.Pending)
		}
		return
	}
	fmt.Fprintf(w, "round %s\n", r.Round)
	for _, t := range r.Tables {
		fmt.Fprintf(w, "  %s: %d chunks, %d equal, %d different", t.Table, t.Chunks, t.Equal, len(t.Different))
		if len(t.Unsettled) > 0 {
			fmt.Fprintf(w, ", %d unsettled (the source kept changing them)", len(t.Unsettled))
		}
		fmt.Fprintln(w)
		for _, d := range t.Different {
			fmt.Fprintf(w, "    chunk %d keys %s: source %d rows, replica %d rows\n", d.Chunk, d, d.SourceRows, d.ReplicaRows)
		}
	}
	if r.Pending != "" {
		fmt.Fprintf(w, "round %s under way\n", r.Pending)
	}
}

// JSON returns the report as JSON.
func (r Report) JSON() []byte {
	b, _ := json.MarshalIndent(r, "", "  ")
	return b
}

// Tally counts the chunks of results (any rounds, finished or not) by
// verdict; Differences names each different chunk ("round table keys").
type Tally struct {
	Equal       int      `json:"equal"`
	Different   int      `json:"different"`
	Unsettled   int      `json:"unsettled"`
	Differences []string `json:"differences,omitempty"`
}

// Count tallies results as Summarize judges chunks.
func Count(results []replica.ChecksumResult) Tally {
	type chunkKey struct {
		round, table string
		chunk        int
	}
	var order []chunkKey
	attempts := map[chunkKey][]replica.ChecksumResult{}
	for _, r := range results {
		if r.Table == "" {
			continue
		}
		k := chunkKey{r.Round, r.Table, r.Chunk}
		if _, ok := attempts[k]; !ok {
			order = append(order, k)
		}
		attempts[k] = append(attempts[k], r)
	}
	var t Tally
	for _, k := range order {
		switch v, last := verdict(attempts[k]); v {
		case equal:
			t.Equal++
		case different:
			t.Different++
			rg := Range{After: last.After, Hi: last.Hi}
			t.Differences = append(t.Differences, fmt.Sprintf("round %s %s chunk %d keys %s: source %d rows, replica %d rows", k.round, k.table, k.chunk, rg, last.SourceRows, last.Rows))
		default:
			t.Unsettled++
		}
	}
	return t
}
