package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"

	"github.com/walship/walship/archive"
	"github.com/walship/walship/change"
	"github.com/walship/walship/daemon"
	"github.com/walship/walship/internal/miniotest"
	"github.com/walship/walship/wal"
)

// The groups the suite runs (-chaos.group): a Kafka group (the lease and the
// history in Kafka, the archive a second sink) or an archive-only group (no
// kafka section: the lease, the heartbeats and the history are the
// archive's, docs/HA.md "Without Kafka").
const (
	groupKafka   = "kafka"
	groupArchive = "archive"
)

// openArchive opens the group's archive straight on MinIO (no fault proxy:
// the checks are not under test).
func (s *servers) openArchive(ctx context.Context) (*archive.Archive, error) {
	return archive.Open(ctx, "s3://"+s.bucket+"/"+archiveRoot, archive.Options{Backend: archive.BackendOptions{
		Endpoint: s.minio.Endpoint, PathStyle: true, Region: miniotest.Region, AccessKey: miniotest.AccessKey, SecretKey: miniotest.SecretKey}})
}

// readArchive reads the archive's lineages and every transaction of the
// group's lineage, segment by segment, as a topicLog (what "archive"). Two
// transactions out of order or sharing an LSN (a segment landed twice, or
// two writers) are listed in gaps; LSNs between two transactions are not a
// gap here: they belong to transactions the leader aborted midway, which
// the archive does not keep.
func readArchive(ctx context.Context, s *servers) (*topicLog, error) {
	ar, err := s.openArchive(ctx)
	if err != nil {
		return nil, err
	}
	defer ar.Close()
	cat, err := ar.Catalog(ctx)
	if err != nil {
		return nil, fmt.Errorf("archive catalog: %w", err)
	}
	out := &topicLog{what: "archive", lineages: map[string]bool{}, byCommit: map[uint64]int{}}
	for _, l := range cat.Lineages {
		out.lineages[l.ID] = true
	}
	lin := cat.Lineage(daemon.Lineage)
	if lin == nil {
		return out, fmt.Errorf("archive: no lineage %q (lineages %v)", daemon.Lineage, out.lineages)
	}
	for _, g := range lin.Gaps {
		out.gaps = append(out.gaps, fmt.Sprintf("no segment holds LSNs %d-%d", g.FirstLSN, g.LastLSN))
	}
	for _, p := range lin.Problems {
		if p.Kind != archive.ProblemOrphan {
			out.gaps = append(out.gaps, p.String())
		}
	}
	var prev uint64
	for _, m := range lin.Segments {
		txns, err := ar.ReadSegment(ctx, m)
		if err != nil {
			return out, fmt.Errorf("archive segment %d-%d: %w", m.FirstLSN, m.LastLSN, err)
		}
		out.records += len(txns)
		for _, t := range txns {
			if t.FirstLSN <= prev || t.CommitLSN < t.FirstLSN {
				out.gaps = append(out.gaps, fmt.Sprintf("transaction at LSNs %d-%d after one ending at %d", t.FirstLSN, t.CommitLSN, prev))
			}
			prev = max(prev, t.CommitLSN)
			out.byCommit[t.CommitLSN] = len(out.txns)
			out.txns = append(out.txns, t)
		}
	}
	return out, nil
}

// checkArchiveOrder fails the run for every transaction of the archive out
// of order or sharing LSNs with another, and for missing segments and
// damage the catalog found: each acknowledged transaction must be there
// once, in order.
func (r *report) checkArchiveOrder(tl *topicLog) {
	for _, g := range tl.gaps {
		r.duplicates++
		r.fail("archive lineage %s: %s", daemon.Lineage, g)
	}
}

// checkMemberLogs compares every member's log, once the members are
// stopped, with the archive: each transaction the log holds is the
// archive's at the same LSNs (commit time, header and changes), none of the
// archive's within the log's range is missing, and the log ends where the
// archive does. Logs that all equal the archive are LSN-identical to each
// other. A member's log starts where its retention left it (followers keep
// what the leader keeps), so only the archive's transactions from the log's
// first on are compared.
func (r *report) checkMemberLogs(ctx context.Context, members []*member, tl *topicLog) {
	if len(tl.txns) == 0 {
		r.fail("members' logs: the archive holds no transaction to compare them with")
		return
	}
	end := tl.txns[len(tl.txns)-1].CommitLSN
	for _, m := range members {
		txns, err := readLog(ctx, m.walDir)
		if err != nil {
			r.fail("%s's log: %v", m.name, err)
			continue
		}
		if len(txns) == 0 {
			r.fail("%s's log holds no transaction; the archive ends at LSN %d", m.name, end)
			continue
		}
		k := sort.Search(len(tl.txns), func(i int) bool { return tl.txns[i].CommitLSN >= txns[0].CommitLSN })
		bad := 0
		for i := range txns {
			got := &txns[i]
			if k+i >= len(tl.txns) {
				r.fail("%s's log: transaction at LSNs %d-%d is beyond the archive's end (LSN %d)", m.name, got.FirstLSN, got.CommitLSN, end)
				bad++
				break
			}
			want := &tl.txns[k+i]
			if got.FirstLSN != want.FirstLSN || got.CommitLSN != want.CommitLSN || !got.CommitTime.Equal(want.CommitTime) || !got.Txn.Equal(&want.Txn) {
				r.fail("%s's log: transaction %d at LSNs %d-%d (committed %s) differs from the archive's at LSNs %d-%d (committed %s)",
					m.name, i, got.FirstLSN, got.CommitLSN, got.CommitTime, want.FirstLSN, want.CommitLSN, want.CommitTime)
				bad++
				break
			}
		}
		if bad == 0 && k+len(txns) != len(tl.txns) {
			r.fail("%s's log ends at LSN %d, the archive at %d", m.name, txns[len(txns)-1].CommitLSN, end)
			bad++
		}
		if bad == 0 {
			r.logsChecked++
		}
	}
}

// readLog reads every committed transaction of the log in dir.
func readLog(ctx context.Context, dir string) ([]change.Committed, error) {
	if _, err := os.Stat(dir); err != nil {
		return nil, err
	}
	l, _, err := wal.OpenReadOnly(nil, dir)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", dir, err)
	}
	defer l.Close()
	rd, err := l.NewReader(l.FirstLSN(), false)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", dir, err)
	}
	defer rd.Close()
	var out []change.Committed
	for {
		t, err := rd.Next(ctx)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, fmt.Errorf("read %s: %w", dir, err)
		}
		out = append(out, *t)
	}
}
