package pitr

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/walship/walship/change"
	"github.com/walship/walship/walerr"
)

// memSource is an in-memory archive: segments built from a list of
// transactions, with fault injection.
type memSource struct {
	cat  Catalog
	txns map[string][]change.Committed // by key
	snap map[string]uint64             // snapshot key -> LSN

	mu        sync.Mutex
	corrupt   map[string]bool
	missing   map[string]bool
	transient map[string]int // failures left per key
	reads     atomic.Int64
	inFlight  atomic.Int64
	maxFlight atomic.Int64
	delay     time.Duration
}

// genTxns makes n transactions: commit times one second apart (every
// fifth equal to the previous), xids 1000+i, source LSNs increasing (every
// seventh without one), and a restore point named "rp<i>" every tenth.
func genTxns(n int) []change.Committed {
	var out []change.Committed
	lsn := uint64(1)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ct := t0
	for i := range n {
		if i%5 != 4 {
			ct = ct.Add(time.Second)
		}
		var cs []change.Change
		if i%10 == 9 {
			cs = append(cs, RestorePointTxn(fmt.Sprintf("rp%d", i)).Changes[0])
		}
		for k := 0; k <= i%3; k++ {
			id := int64((i*3 + k) % 17)
			cs = append(cs, change.Change{Table: change.Table{Schema: "public", Name: "t"}, Op: change.Insert,
				Key:   change.Row{{Name: "id", Value: change.IntValue(id)}},
				After: change.Row{{Name: "id", Value: change.IntValue(id)}, {Name: "v", Value: change.IntValue(int64(i))}}})
		}
		src := uint64(0x100000000 + i*100)
		if i%7 == 6 {
			src = 0
		}
		t := change.Committed{FirstLSN: lsn, CommitLSN: lsn + uint64(len(cs)) - 1, CommitTime: ct,
			Txn: change.Txn{Header: change.TxHeader{XID: uint64(1000 + i), SourceLSN: src}, Changes: cs}}
		lsn = t.CommitLSN + 1
		out = append(out, t)
	}
	return out
}

// newMemSource splits txns into segments of per transactions, and adds a
// snapshot after each transaction index in snapAt.
func newMemSource(txns []change.Committed, per int, snapAt ...int) *memSource {
	m := &memSource{txns: map[string][]change.Committed{}, snap: map[string]uint64{}, corrupt: map[string]bool{},
		missing: map[string]bool{}, transient: map[string]int{}}
	m.cat.Lineages = []string{"L1"}
	for i := 0; i < len(txns); i += per {
		part := txns[i:min(i+per, len(txns))]
		s := Segment{Lineage: "L1", FirstLSN: part[0].FirstLSN, LastLSN: part[len(part)-1].CommitLSN,
			FirstCommitTime: part[0].CommitTime, LastCommitTime: part[len(part)-1].CommitTime,
			Key: fmt.Sprintf("L1/seg/%016x", part[0].FirstLSN), Size: int64(100 * len(part))}
		for _, t := range part {
			if x := t.Header.XID; x != 0 {
				if s.MinXID == 0 || x < s.MinXID {
					s.MinXID = x
				}
				s.MaxXID = max(s.MaxXID, x)
			}
			s.Txns++
			if t.Header.SourceLSN != 0 {
				if s.FirstSourceLSN == 0 {
					s.FirstSourceLSN = t.Header.SourceLSN
				}
				s.LastSourceLSN = t.Header.SourceLSN
			}
			for j := range t.Changes {
				if name, ok := IsRestorePoint(&t.Changes[j]); ok {
					s.RestorePoints = append(s.RestorePoints, RestorePoint{Name: name, LSN: t.CommitLSN})
				}
			}
		}
		m.cat.Segments = append(m.cat.Segments, s)
		m.txns[s.Key] = part
	}
	for _, i := range snapAt {
		s := Snapshot{Lineage: "L1", LSN: txns[i].CommitLSN, CommitTime: txns[i].CommitTime,
			Key: fmt.Sprintf("L1/snap/%016x", txns[i].CommitLSN), Size: 1000}
		m.cat.Snapshots = append(m.cat.Snapshots, s)
		m.snap[s.Key] = s.LSN
	}
	return m
}

func (m *memSource) Catalog(ctx context.Context) (*Catalog, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.cat
	c.Segments = slices.Clone(c.Segments)
	c.Snapshots = slices.Clone(c.Snapshots)
	return &c, nil
}

// FetchSegment returns the key as the object; DecodeSegment looks it up.
func (m *memSource) FetchSegment(ctx context.Context, s Segment) ([]byte, error) {
	n := m.inFlight.Add(1)
	defer m.inFlight.Add(-1)
	for {
		old := m.maxFlight.Load()
		if n <= old || m.maxFlight.CompareAndSwap(old, n) {
			break
		}
	}
	m.reads.Add(1)
	if m.delay > 0 {
		time.Sleep(m.delay)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.missing[s.Key]:
		return nil, fmt.Errorf("get %s: %w", s.Key, ErrMissing)
	case m.corrupt[s.Key]:
		return nil, fmt.Errorf("%s: checksum mismatch: %w", s.Key, walerr.ErrCorruption)
	case m.transient[s.Key] > 0:
		m.transient[s.Key]--
		return nil, errors.New("503 Slow Down")
	}
	if _, ok := m.txns[s.Key]; !ok {
		return nil, fmt.Errorf("get %s: %w", s.Key, ErrMissing)
	}
	return []byte(s.Key), nil
}

func (m *memSource) DecodeSegment(s Segment, obj []byte) ([]change.Committed, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	txns, ok := m.txns[string(obj)]
	if !ok {
		return nil, fmt.Errorf("%s: %w: undecodable", s.Key, walerr.ErrCorruption)
	}
	return slices.Clone(txns), nil
}

// GetSnapshot writes the snapshot's LSN as the file's content; fakeApplier
// reads it back.
func (m *memSource) GetSnapshot(ctx context.Context, s Snapshot, dst string) error {
	lsn, ok := m.snap[s.Key]
	if !ok {
		return fmt.Errorf("get %s: %w", s.Key, ErrMissing)
	}
	return os.WriteFile(dst, []byte(fmt.Sprint(lsn)), 0o644)
}

var _ Source = (*memSource)(nil)

// fakeApplier records applied transactions; it starts from a snapshot
// holding all of all's transactions up to the snapshot's LSN.
type fakeApplier struct {
	applied []change.Committed
	pos     uint64
	calls   int
}

func openFake(t *testing.T, all []change.Committed) func(ctx context.Context, snapFile string) (Applier, error) {
	return func(ctx context.Context, snapFile string) (Applier, error) {
		a := &fakeApplier{}
		if snapFile != "" {
			b, err := os.ReadFile(snapFile)
			if err != nil {
				return nil, err
			}
			var lsn uint64
			fmt.Sscan(string(b), &lsn)
			for _, tx := range all {
				if tx.CommitLSN <= lsn {
					a.applied = append(a.applied, tx)
				}
			}
			a.pos = lsn
		}
		return a, nil
	}
}

func (a *fakeApplier) Position(ctx context.Context) (uint64, error) { return a.pos, nil }

func (a *fakeApplier) Apply(ctx context.Context, txns []change.Committed) error {
	a.calls++
	for _, t := range txns {
		if t.CommitLSN <= a.pos {
			continue
		}
		if t.FirstLSN != a.pos+1 {
			return fmt.Errorf("fake: txn at %d after %d", t.FirstLSN, a.pos)
		}
		a.applied = append(a.applied, t)
		a.pos = t.CommitLSN
	}
	return nil
}

// expectedPrefix computes, straight from the definitions (not the stop
// rules), how many of txns a restore to t includes.
func expectedPrefix(txns []change.Committed, t Target) int {
	idx := -1 // index of the target transaction for xid and name
	for i, tx := range txns {
		switch t.Kind {
		case XID:
			if tx.Header.XID == t.XID {
				idx = i
			}
		case Name:
			for j := range tx.Changes {
				if n, ok := IsRestorePoint(&tx.Changes[j]); ok && n == t.Name {
					idx = i
				}
			}
		}
	}
	n := 0
	for i, tx := range txns {
		var in bool
		switch t.Kind {
		case Latest:
			in = true
		case Time:
			in = tx.CommitTime.Before(t.Time) || (!t.Exclusive && tx.CommitTime.Equal(t.Time))
		case LSN:
			in = tx.CommitLSN < t.LSN || (!t.Exclusive && tx.CommitLSN == t.LSN)
		case SourceLSN:
			// Stop at the first transaction with a source LSN past it.
			s := tx.Header.SourceLSN
			in = s == 0 || s < t.LSN || (!t.Exclusive && s == t.LSN)
		case XID, Name:
			in = i < idx || (!t.Exclusive && i == idx)
		}
		if !in {
			break
		}
		n = i + 1
	}
	return n
}
