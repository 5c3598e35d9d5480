package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/walship/walship/archive"
	"github.com/walship/walship/internal/cli"
	"github.com/walship/walship/internal/secret"

	"github.com/walship/walship/pitr"
)

// runVerify reads and checks every object of the archive (checksums,
// decoding, agreement with its manifest) and the LSN continuity of every
// lineage. Exit 0: intact; 1: an object is corrupt (its key is named); 3:
// an object is missing or a range of LSNs is (named); 2: the archive
// cannot be read (the catalog, or objects whose transient errors outlasted
// the retries). When several apply, 1 wins over 3, and 3 over 2.
func runVerify(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fset := newFlagSet("verify", stderr)
	var af archiveFlags
	af.register(fset)
	asJSON := fset.Bool("json", false, "print the result as JSON")
	parallel := fset.Int("parallel", 8, "objects read at once")
	if help, err := parseFlags(fset, args); help || err != nil {
		return err
	}
	if *parallel < 1 {
		return usageError("--parallel %d: want at least 1", *parallel)
	}
	src, err := openArchive(ctx, af, stderr)
	if err != nil {
		return err
	}
	if err := requireKey(ctx, src, af); err != nil {
		return err
	}
	bar := newProgressBar(stderr)
	rep, err := pitr.VerifyArchive(ctx, src, pitr.VerifyOptions{Parallel: *parallel, Progress: bar.update, Retry: archive.RetryPolicy{MaxElapsed: af.timeout}})
	bar.done()
	if err != nil {
		err = fmt.Errorf("read the archive: %w", err)
		if *asJSON {
			writeJSON(stdout, verifyJSON{Archive: secret.URL(af.url), Status: "unreadable", Error: err.Error()})
		}
		return cli.Exit(exitUsage, err)
	}
	if len(rep.Lineages) == 0 && rep.Objects == 0 && len(rep.Corrupt)+len(rep.Missing)+len(rep.Unreadable)+len(rep.Notes) == 0 {
		// Nothing of an archive is there: a wrong path or prefix, not an
		// intact archive of nothing.
		err := fmt.Errorf("%s is not a walship archive: expected lineage records (lineages/<lineage>.json) and segment objects (<lineage>/wal/*.wsa) under it (docs/ARCHIVE.md §2); check --archive", af.url)
		if *asJSON {
			writeJSON(stdout, verifyJSON{Archive: af.url, Status: "not_an_archive", Error: err.Error()})
		}
		return cli.Exit(exitUsage, err)
	}
	status, code := "intact", 0
	switch {
	case len(rep.Corrupt) > 0:
		status, code = "corrupt", exitFailure
	case len(rep.Missing) > 0 || len(rep.Gaps) > 0:
		status, code = "missing", exitHole
	case len(rep.Unreadable) > 0:
		status, code = "unreadable", exitUsage
	}
	if *asJSON {
		out := verifyJSON{Archive: secret.URL(af.url), Status: status, Objects: rep.Objects, Bytes: rep.Bytes,
			Corrupt: problems(rep.Corrupt), Missing: problems(rep.Missing), Unreadable: problems(rep.Unreadable), Notes: problems(rep.Notes),
			Gaps: []gapJSON{}, Lineages: []lineageJSON{}}
		for _, g := range rep.Gaps {
			out.Gaps = append(out.Gaps, gapJSON{g.Lineage, g.From, g.To})
		}
		for _, li := range rep.Lineages {
			out.Lineages = append(out.Lineages, toLineageJSON(li))
		}
		if err := writeJSON(stdout, out); err != nil {
			return err
		}
	} else {
		for _, p := range rep.Corrupt {
			fmt.Fprintf(stdout, "CORRUPT: %s: %s\n", p.Key, p.Error)
		}
		for _, p := range rep.Missing {
			fmt.Fprintf(stdout, "MISSING: %s: %s\n", p.Key, p.Error)
		}
		for _, g := range rep.Gaps {
			fmt.Fprintf(stdout, "HOLE: lineage %s: LSN %d-%d is in no segment\n", g.Lineage, g.From, g.To)
		}
		for _, p := range rep.Unreadable {
			fmt.Fprintf(stdout, "UNREADABLE: %s: %s\n", p.Key, p.Error)
		}
		for _, p := range rep.Notes {
			fmt.Fprintf(stdout, "note: %s: %s\n", p.Key, p.Error)
		}
		var lins []string
		for _, li := range rep.Lineages {
			lins = append(lins, fmt.Sprintf("%s LSN %d-%d", li.Lineage, li.FirstLSN, li.LastLSN))
		}
		fmt.Fprintf(stdout, "%s: %s: %d objects (%d bytes) verified; lineages: %s\n", status, secret.URL(af.url), rep.Objects, rep.Bytes,
			strings.Join(lins, ", "))
	}
	if code != 0 {
		return cli.Exit(code, fmt.Errorf("archive %s is %s (%d corrupt, %d missing objects, %d holes, %d unreadable)",
			secret.URL(af.url), status, len(rep.Corrupt), len(rep.Missing), len(rep.Gaps), len(rep.Unreadable)))
	}
	return nil
}

type verifyJSON struct {
	Archive    string        `json:"archive"`
	Status     string        `json:"status"` // intact, corrupt, missing, unreadable, not_an_archive
	Error      string        `json:"error,omitempty"`
	Objects    int           `json:"objects"`
	Bytes      int64         `json:"bytes"`
	Corrupt    []problemJSON `json:"corrupt"`
	Missing    []problemJSON `json:"missing"`
	Unreadable []problemJSON `json:"unreadable"`
	Gaps       []gapJSON     `json:"gaps"`
	Notes      []problemJSON `json:"notes"` // harmless: orphans of interrupted uploads, overlaps
	Lineages   []lineageJSON `json:"lineages"`
}

type problemJSON struct {
	Key   string `json:"key"`
	Error string `json:"error"`
}

func problems(ps []pitr.ObjectProblem) []problemJSON {
	out := []problemJSON{}
	for _, p := range ps {
		out = append(out, problemJSON{p.Key, p.Error})
	}
	return out
}
