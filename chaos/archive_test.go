package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strconv"

	"github.com/walship/walship/change"
	"github.com/walship/walship/internal/miniotest"
	"github.com/walship/walship/replica"
)

// archiveRoot is the prefix of the group's archive in the bucket.
const archiveRoot = "walship"

// archiveArgs are walreplay's flags to read the group's archive straight
// from MinIO (no fault proxy: the checks are not under test).
func (s *servers) archiveArgs() []string {
	return []string{"--archive", "s3://" + s.bucket + "/" + archiveRoot, "--s3-endpoint", s.minio.Endpoint, "--s3-path-style",
		"--s3-region", miniotest.Region, "--s3-access-key", miniotest.AccessKey, "--s3-secret-key", miniotest.SecretKey}
}

// accounts returns the bank's balances in a database (canonical dump:
// package replica), by account id.
func accounts(ctx context.Context, url string) (map[string]int64, error) {
	tables, err := replica.Dump(ctx, url)
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for _, row := range tables["accounts"] {
		var r struct{ ID, Balance string }
		if err := json.Unmarshal([]byte(row), &r); err != nil {
			return nil, fmt.Errorf("accounts row %s: %v", row, err)
		}
		b, err := strconv.ParseInt(r.Balance, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("accounts row %s: balance: %v", row, err)
		}
		out[r.ID] = b
	}
	return out, nil
}

// conserved says what is wrong with a bank's balances, "" if nothing: all
// accounts there, summing to the opening total.
func conserved(acc map[string]int64) string {
	var sum int64
	for _, b := range acc {
		sum += b
	}
	if len(acc) != bankAccounts || sum != bankTotal {
		return fmt.Sprintf("%d accounts summing to %d, want %d summing to %d", len(acc), sum, bankAccounts, bankTotal)
	}
	return ""
}

// checkArchive runs `walreplay verify` on the archive, then restores it at
// several points in time (transaction boundaries after the bank's initial
// snapshot, chosen by rng, and the latest) and checks that each restore
// conserves the bank total and that the latest equals PostgreSQL.
func (r *report) checkArchive(ctx context.Context, s *servers, tl *topicLog, rng *rand.Rand, dir string, want map[string]int64) {
	res, err := runTool(ctx, walreplayBin, append([]string{"verify"}, s.archiveArgs()...)...)
	if err != nil || res.code != 0 {
		r.fail("walreplay verify: %v %v", err, res)
		return
	}
	// Points after the snapshot copied every account, so that each restore
	// holds the whole bank.
	from := -1
	for i := range tl.txns {
		for _, c := range tl.txns[i].Changes {
			if c.Op == change.Read && c.Table.Name == "accounts" {
				from = i
			}
		}
	}
	if from < 0 {
		r.fail("no snapshot of public.accounts in the %s", tl.name())
		return
	}
	var points []string
	for range 3 {
		k := from + rng.IntN(len(tl.txns)-from)
		points = append(points, strconv.FormatUint(tl.txns[k].CommitLSN, 10))
	}
	points = append(points, "latest")
	for i, p := range points {
		dst := "sqlite://" + filepath.Join(dir, fmt.Sprintf("restore-%d.db", i))
		args := append([]string{"restore"}, s.archiveArgs()...)
		if p == "latest" {
			args = append(args, "--to", dst)
		} else {
			args = append(args, "--to", dst, "--target-lsn", p)
		}
		res, err := runTool(ctx, walreplayBin, args...)
		if err != nil || res.code != 0 {
			r.fail("walreplay restore at %s: %v %v", p, err, res)
			continue
		}
		acc, err := accounts(ctx, dst)
		if err != nil {
			r.fail("restore at %s: %v", p, err)
			continue
		}
		r.restores++
		if why := conserved(acc); why != "" {
			r.fail("restore at LSN %s: %s", p, why)
		}
		if p == "latest" && fmt.Sprint(acc) != fmt.Sprint(want) {
			r.fail("latest restore differs from PostgreSQL: %v, want %v", acc, want)
		}
	}
}
