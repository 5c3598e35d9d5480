package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/walship/walship/internal/cli"

	"github.com/walship/walship/internal/secret"

	"github.com/walship/walship/change"
	"github.com/walship/walship/pitr"
)

// runList prints each lineage of the archive: its segments, LSN, time and
// source-LSN window, the earliest restorable point, snapshots, restore
// points and gaps. It reads manifests only. Every manifest or record it
// had to leave out (refused in an encrypted archive, or damaged) and every
// missing object is printed with its key and reason, and sets the exit
// code as verify's would: 1 for a refused or corrupt manifest, else 3 for
// a missing object or a hole; left out silently, a forged manifest would
// only show as a gap, or not at all.
func runList(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fset := newFlagSet("list", stderr)
	var af archiveFlags
	af.register(fset)
	asJSON := fset.Bool("json", false, "print the result as JSON")
	if help, err := parseFlags(fset, args); help || err != nil {
		return err
	}
	src, err := openArchive(ctx, af, stderr)
	if err != nil {
		return err
	}
	cat, err := src.Catalog(ctx)
	if err != nil {
		return catalogExit(err)
	}
	infos := pitr.Describe(cat)
	probs := cat.Problems
	if af.lineage != "" {
		var keep []pitr.LineageInfo
		for _, li := range infos {
			if li.Lineage == af.lineage {
				keep = append(keep, li)
			}
		}
		if keep == nil {
			return usageError("the archive has no lineage %q", af.lineage)
		}
		infos = keep
		probs = nil
		for _, p := range cat.Problems {
			if p.Lineage == "" || p.Lineage == af.lineage {
				probs = append(probs, p)
			}
		}
	}
	if *asJSON {
		out := listJSON{Archive: secret.URL(af.url), Lineages: []lineageJSON{}, Problems: []catalogProblemJSON{}}
		for _, li := range infos {
			out.Lineages = append(out.Lineages, toLineageJSON(li))
		}
		for _, p := range probs {
			out.Problems = append(out.Problems, catalogProblemJSON{Lineage: p.Lineage, Key: p.Key, Kind: p.Kind, Error: p.Error})
		}
		if err := writeJSON(stdout, out); err != nil {
			return err
		}
	} else {
		if len(infos) == 0 {
			fmt.Fprintf(stdout, "%s: empty archive\n", secret.URL(af.url))
		}
		for _, li := range infos {
			printLineage(stdout, li)
		}
		for _, p := range probs {
			fmt.Fprintln(stdout, problemLine(p))
		}
	}
	return listExit(af.url, infos, probs)
}

// problemLine is one catalog problem as list and prune print it: damage
// in capitals like verify's, harmless findings as notes.
func problemLine(p pitr.CatalogProblem) string {
	switch p.Kind {
	case "corrupt", "missing":
		return strings.ToUpper(p.Kind) + ": " + p.Key + ": " + p.Error
	}
	return "note: " + p.Key + ": " + p.Kind + ": " + p.Error
}

// listExit is list's exit code, by verify's rule over what the manifests
// show: 1 if a manifest or record was refused or is corrupt, else 3 if an
// object is missing or a range of LSNs is in no segment, else 0. Orphans
// and overlaps are notes.
func listExit(url string, infos []pitr.LineageInfo, probs []pitr.CatalogProblem) error {
	var corrupt, missing, gaps int
	for _, p := range probs {
		switch p.Kind {
		case "corrupt":
			corrupt++
		case "missing":
			missing++
		}
	}
	for _, li := range infos {
		gaps += len(li.Gaps)
	}
	code := 0
	switch {
	case corrupt > 0:
		code = exitFailure
	case missing+gaps > 0:
		code = exitHole
	}
	if code == 0 {
		return nil
	}
	return cli.Exit(code, fmt.Errorf("archive %s is damaged: %d refused or corrupt manifests, %d missing objects, %d holes (each named in the output; walreplay verify also checks the objects)",
		secret.URL(url), corrupt, missing, gaps))
}

func printLineage(w io.Writer, li pitr.LineageInfo) {
	fmt.Fprintf(w, "lineage %s\n", li.Lineage)
	if li.Segments > 0 {
		fmt.Fprintf(w, "  segments:    %d, LSN %d-%d, commits %s .. %s\n", li.Segments, li.FirstLSN, li.LastLSN,
			fmtTime(li.FirstCommit), fmtTime(li.LastCommit))
	} else {
		fmt.Fprintf(w, "  segments:    none\n")
	}
	if li.LastSource != 0 {
		fmt.Fprintf(w, "  source LSN:  %s .. %s\n", change.FormatSourceLSN(li.FirstSource), change.FormatSourceLSN(li.LastSource))
	}
	fmt.Fprintf(w, "  size:        %d bytes\n", li.Bytes)
	if li.RestorableFrom == 0 && li.Segments > 0 && li.FirstLSN == 1 {
		fmt.Fprintf(w, "  restorable:  from the empty state (--target-lsn 1 --exclusive) to LSN %d (%s)\n", li.LastLSN, fmtTime(li.LastCommit))
	} else if li.RestorableFrom > 0 {
		fmt.Fprintf(w, "  restorable:  from LSN %d (%s) to LSN %d (%s)\n", li.RestorableFrom, fmtTime(li.RestorableFromTime),
			li.LastLSN, fmtTime(li.LastCommit))
	} else {
		fmt.Fprintf(w, "  restorable:  nothing (no snapshot, and the segments do not start at LSN 1)\n")
	}
	fmt.Fprintf(w, "  snapshots:   %d\n", len(li.Snapshots))
	for _, s := range li.Snapshots {
		fmt.Fprintf(w, "    LSN %d  committed %s  %d bytes  %s\n", s.LSN, fmtTime(s.CommitTime), s.Size, s.Key)
	}
	if len(li.RestorePoints) > 0 {
		fmt.Fprintf(w, "  restore points: %d\n", len(li.RestorePoints))
		for _, rp := range li.RestorePoints {
			fmt.Fprintf(w, "    %q at LSN %d\n", rp.Name, rp.LSN)
		}
	}
	if len(li.Gaps) == 0 {
		fmt.Fprintf(w, "  gaps:        none\n")
	} else {
		fmt.Fprintf(w, "  gaps:        %d\n", len(li.Gaps))
		for _, g := range li.Gaps {
			fmt.Fprintf(w, "    LSN %d-%d\n", g.From, g.To)
		}
	}
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// The --json forms use snake_case keys, LSNs as numbers, source LSNs as
// "X/Y" and times as RFC 3339.
type listJSON struct {
	Archive  string        `json:"archive"`
	Lineages []lineageJSON `json:"lineages"`
	// Problems are the manifests and records left out of Lineages
	// (refused or corrupt), missing objects and notes (orphans, overlaps).
	Problems []catalogProblemJSON `json:"problems"`
}

type catalogProblemJSON struct {
	Lineage string `json:"lineage,omitempty"`
	Key     string `json:"key"`
	Kind    string `json:"kind"` // corrupt, missing, overlap, orphan
	Error   string `json:"error"`
}

type lineageJSON struct {
	Lineage            string             `json:"lineage"`
	Segments           int                `json:"segments"`
	Bytes              int64              `json:"bytes"`
	FirstLSN           uint64             `json:"first_lsn"`
	LastLSN            uint64             `json:"last_lsn"`
	FirstCommitTime    string             `json:"first_commit_time,omitempty"`
	LastCommitTime     string             `json:"last_commit_time,omitempty"`
	FirstSourceLSN     string             `json:"first_source_lsn,omitempty"`
	LastSourceLSN      string             `json:"last_source_lsn,omitempty"`
	RestorableFrom     *uint64            `json:"restorable_from_lsn"` // null: nothing is restorable
	RestorableFromTime string             `json:"restorable_from_time,omitempty"`
	Snapshots          []snapshotJSON     `json:"snapshots"`
	RestorePoints      []restorePointJSON `json:"restore_points"`
	Gaps               []gapJSON          `json:"gaps"`
}

type snapshotJSON struct {
	LSN        uint64 `json:"lsn"`
	CommitTime string `json:"commit_time"`
	Key        string `json:"key"`
	Bytes      int64  `json:"bytes"`
}

type restorePointJSON struct {
	Name string `json:"name"`
	LSN  uint64 `json:"lsn"`
}

type gapJSON struct {
	Lineage string `json:"lineage"`
	From    uint64 `json:"from_lsn"`
	To      uint64 `json:"to_lsn"`
}

func jsonTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func jsonSource(l uint64) string {
	if l == 0 {
		return ""
	}
	return change.FormatSourceLSN(l)
}

func toSnapshotJSON(s pitr.Snapshot) snapshotJSON {
	return snapshotJSON{LSN: s.LSN, CommitTime: jsonTime(s.CommitTime), Key: s.Key, Bytes: s.Size}
}

func toLineageJSON(li pitr.LineageInfo) lineageJSON {
	j := lineageJSON{Lineage: li.Lineage, Segments: li.Segments, Bytes: li.Bytes, FirstLSN: li.FirstLSN, LastLSN: li.LastLSN,
		FirstCommitTime: jsonTime(li.FirstCommit), LastCommitTime: jsonTime(li.LastCommit),
		FirstSourceLSN: jsonSource(li.FirstSource), LastSourceLSN: jsonSource(li.LastSource),
		RestorableFromTime: jsonTime(li.RestorableFromTime),
		Snapshots:          []snapshotJSON{}, RestorePoints: []restorePointJSON{}, Gaps: []gapJSON{}}
	if li.RestorableFrom > 0 || (li.Segments > 0 && li.FirstLSN == 1) {
		j.RestorableFrom = &li.RestorableFrom
	}
	for _, s := range li.Snapshots {
		j.Snapshots = append(j.Snapshots, toSnapshotJSON(s))
	}
	for _, rp := range li.RestorePoints {
		j.RestorePoints = append(j.RestorePoints, restorePointJSON{rp.Name, rp.LSN})
	}
	for _, g := range li.Gaps {
		j.Gaps = append(j.Gaps, gapJSON{g.Lineage, g.From, g.To})
	}
	return j
}

func writeJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
}
