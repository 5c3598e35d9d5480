package kafkasink

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/walship/walship/change"
	"github.com/walship/walship/kafkawire"
)

// Encoding: jobs of consecutive changes, recycled with their buffers, and
// the workers that turn them into records in parallel with reading and
// producing.

// span is a range of one transaction's changes within a job.
type span struct {
	txn      *change.Committed
	from, to int
}

// encJob is a run of consecutive changes — whole small transactions, or
// a range of a large one — to encode; done is closed when entries and recs
// are ready (empty if the sink stopped first). Batching small transactions
// into one job keeps the channel handoffs and goroutine wake-ups per
// change low.
//
// A job is reused (jobPool) once every record of it is acknowledged, with
// its buffers: the keys, values and header values of its records are carved
// from its chunks, and its records and their headers are elements of its
// slices, so encoding allocates next to nothing once the sink runs.
type encJob struct {
	spans []span
	// Per change of the job, in LSN order: its data_collection_order and
	// (tables mode) its topic, "" for none. In ordered mode topics is nil.
	ordinals []int32
	topics   []string
	done     chan struct{}
	entries  []wmEntry    // one per LSN, in order
	recs     []kgo.Record // in LSN order
	headers  []kgo.RecordHeader
	chunks   [][]byte // chunks[chunk] is being carved from
	chunk    int
	// ctx is every record's Context: the produce context, and the way back
	// from a record to its job in the promise.
	ctx     jobCtx
	unacked atomic.Int32 // records produced and not yet acknowledged
}

func (j *encJob) len() int { return len(j.ordinals) }

// jobCtx is the Context of a job's records.
type jobCtx struct {
	context.Context
	job *encJob
}

// jobPool recycles jobs for one Run.
type jobPool struct {
	pool       sync.Pool
	produceCtx context.Context
	ordered    bool
}

func (p *jobPool) get() *encJob {
	j, _ := p.pool.Get().(*encJob)
	if j == nil {
		j = &encJob{ordinals: make([]int32, 0, encodedJobLen)}
		j.ctx = jobCtx{Context: p.produceCtx, job: j}
		if !p.ordered {
			j.topics = make([]string, 0, encodedJobLen)
		}
	}
	j.done = make(chan struct{})
	return j
}

// put recycles j: no record of it may be in the client any more.
func (p *jobPool) put(j *encJob) {
	clear(j.spans) // a pooled job keeps no transaction alive
	j.spans = j.spans[:0]
	j.ordinals = j.ordinals[:0]
	if j.topics != nil {
		j.topics = j.topics[:0]
	}
	j.entries, j.recs, j.headers = j.entries[:0], j.recs[:0], j.headers[:0]
	j.chunk = 0
	if len(j.chunks) > 0 {
		j.chunks[0] = j.chunks[0][:0]
	}
	p.pool.Put(j)
}

const (
	encodedJobs   = 32
	encodedJobLen = 64
)

// chunkSize is the size of the buffers records are carved from.
const chunkSize = 32 << 10

// encodeWorker encodes jobs; each worker has its own Encoder.
// The daemon's sink and Publisher encode with it alike.
type encodeWorker struct {
	tombstones   bool
	enc          *kafkawire.Encoder
	lineage      []byte
	orderedTopic string
	txnTopic     string  // transaction metadata topic, "" for none
	job          *encJob // being encoded
}

// carve appends with build to the job's current chunk and returns what was
// appended (a full-slice expression: later appends never write into it).
func (w *encodeWorker) carve(build func([]byte) []byte) []byte {
	j := w.job
	if len(j.chunks) == 0 {
		j.chunks = append(j.chunks, make([]byte, 0, chunkSize))
	}
	if c := j.chunks[j.chunk]; cap(c)-len(c) < 2048 {
		j.chunk++
		if j.chunk == len(j.chunks) {
			j.chunks = append(j.chunks, make([]byte, 0, chunkSize))
		}
		j.chunks[j.chunk] = j.chunks[j.chunk][:0]
	}
	c := j.chunks[j.chunk]
	start := len(c)
	c = build(c)
	j.chunks[j.chunk] = c
	return c[start:len(c):len(c)]
}

// encode fills job.entries and job.recs. Records, and the headers of all
// of them, are allocated once per job.
func (w *encodeWorker) encode(job *encJob) {
	w.job = job
	w.enc.NowMS = time.Now().UnixMilli() // ts_ms: the time the job is encoded
	defer func() { w.job = nil }()
	tombstones := w.tombstones
	nrecs, nsent, nfirst, nmarkers, nmeta := 0, 0, 0, 0, 0
	k := 0
	for _, sp := range job.spans {
		if sp.txn.Aborted {
			nmarkers++ // at most one record (ordered mode)
			continue
		}
		if sp.from == 0 && w.topic(job, k) != "" {
			nfirst++ // the transaction's first record may carry 2 more headers
		}
		if w.meta(sp.txn) {
			if sp.from == 0 {
				nmeta++ // BEGIN
			}
			if sp.to == len(sp.txn.Changes) {
				nmeta++ // END
			}
		}
		for i := sp.from; i < sp.to; i++ {
			if w.topic(job, k) != "" {
				nsent++
				c := &sp.txn.Changes[i]
				if c.Op == change.Delete && c.Key != nil && tombstones {
					nrecs++
				}
			}
			k++
		}
	}
	nrecs += nsent + nmarkers + nmeta
	job.entries = slices.Grow(job.entries[:0], job.len()+2*nmarkers)
	job.recs = slices.Grow(job.recs[:0], nrecs)
	// Records point into headers: it must not grow below.
	headers := slices.Grow(job.headers[:0], 4*nsent+2*nfirst+5*nmarkers+2*nmeta)
	defer func() { job.headers = headers }()
	k = 0
	for _, sp := range job.spans {
		t := sp.txn
		if t.Aborted {
			headers = w.marker(job, t, headers)
			continue
		}
		var hdrCommit, hdrFirst []byte
		meta := w.meta(t)
		for i := sp.from; i < sp.to; i, k = i+1, k+1 {
			c := &t.Changes[i]
			lsn := t.FirstLSN + uint64(i)
			e := wmEntry{lsn: lsn, commit: lsn == t.CommitLSN, commitTime: t.CommitTime}
			if meta && i == 0 {
				headers = w.txnEvent(job, t, lsn, false, &e, headers)
			}
			topic := w.topic(job, k)
			if topic == "" {
				if meta && i == len(t.Changes)-1 {
					headers = w.txnEvent(job, t, lsn, true, &e, headers)
				}
				job.entries = append(job.entries, e)
				continue
			}
			if hdrCommit == nil {
				hdrCommit = w.carve(func(b []byte) []byte { return strconv.AppendUint(b, t.CommitLSN, 10) })
				hdrFirst = w.carve(func(b []byte) []byte { return strconv.AppendUint(b, t.FirstLSN, 10) })
			}
			hasKey := c.Key != nil || c.Op == change.Message
			var key []byte
			if hasKey {
				key = w.carve(func(b []byte) []byte { b, _ = w.enc.AppendKey(b, c); return b })
			}
			value := w.carve(func(b []byte) []byte {
				return w.enc.AppendValue(b, kafkawire.Position{Txn: t, Index: i, TableOrdinal: int(job.ordinals[k])})
			})
			h := len(headers)
			headers = append(headers,
				kgo.RecordHeader{Key: kafkawire.HeaderLSN, Value: w.carve(func(b []byte) []byte { return strconv.AppendUint(b, lsn, 10) })},
				kgo.RecordHeader{Key: kafkawire.HeaderCommitLSN, Value: hdrCommit},
				kgo.RecordHeader{Key: kafkawire.HeaderTxnFirstLSN, Value: hdrFirst},
				kgo.RecordHeader{Key: kafkawire.HeaderLineage, Value: w.lineage},
			)
			if i == 0 {
				// The idempotency mark and in-request flag, for a
				// follower's log (kafkawire.AppendTxnHeaders).
				headers = kafkawire.AppendTxnHeaders(headers, &t.Header)
			}
			hdrs := headers[h:len(headers):len(headers)]
			// The record timestamp is the commit time (non-decreasing in
			// LSN order), which lets consumers seek by time.
			job.recs = append(job.recs, kgo.Record{Topic: topic, Key: key, Value: value, Headers: hdrs, Timestamp: t.CommitTime, Context: &job.ctx})
			e.left++
			if c.Op == change.Delete && hasKey && tombstones {
				job.recs = append(job.recs, kgo.Record{Topic: topic, Key: key, Headers: hdrs, Timestamp: t.CommitTime, Context: &job.ctx})
				e.left++
			}
			if meta && i == len(t.Changes)-1 {
				headers = w.txnEvent(job, t, lsn, true, &e, headers)
			}
			job.entries = append(job.entries, e)
		}
	}
}

// meta reports whether t has transaction metadata events: the topic is
// on, and t is neither an aborted range nor a snapshot chunk (Debezium's
// snapshot reads belong to no transaction).
func (w *encodeWorker) meta(t *change.Committed) bool {
	return w.txnTopic != "" && !t.Aborted && t.Header.Snapshot == 0 && len(t.Changes) > 0
}

// txnEvent adds t's BEGIN (or END) event to the job, acknowledged with the
// change at lsn (entry e), and returns headers with its own.
func (w *encodeWorker) txnEvent(job *encJob, t *change.Committed, lsn uint64, end bool, e *wmEntry, headers []kgo.RecordHeader) []kgo.RecordHeader {
	key := w.carve(func(b []byte) []byte { return kafkawire.AppendTxnKey(b, t) })
	value := w.carve(func(b []byte) []byte {
		if end {
			return kafkawire.AppendTxnEnd(b, t)
		}
		return kafkawire.AppendTxnBegin(b, t)
	})
	h := len(headers)
	// The LSN header first: the producer's promise acknowledges by it.
	headers = append(headers,
		kgo.RecordHeader{Key: kafkawire.HeaderLSN, Value: w.carve(func(b []byte) []byte { return strconv.AppendUint(b, lsn, 10) })},
		kgo.RecordHeader{Key: kafkawire.HeaderLineage, Value: w.lineage})
	job.recs = append(job.recs, kgo.Record{Topic: w.txnTopic, Key: key, Value: value, Headers: headers[h:len(headers):len(headers)],
		Timestamp: t.CommitTime, Context: &job.ctx})
	e.left++
	return headers
}

// marker adds the entries of the aborted range t to the job and, in
// ordered mode, its marker record (kafkawire.AbortedMarkerHeaders: no
// key, a null value, the abort's time), whose LSN is the range's first.
// The range's last LSN is issued as a commit without a record, so the
// watermark passes the whole range once the marker is acknowledged (in
// tables mode, at once). It returns headers with the marker's.
func (w *encodeWorker) marker(job *encJob, t *change.Committed, headers []kgo.RecordHeader) []kgo.RecordHeader {
	if job.topics == nil {
		first := w.carve(func(b []byte) []byte { return strconv.AppendUint(b, t.FirstLSN, 10) })
		last := w.carve(func(b []byte) []byte { return strconv.AppendUint(b, t.CommitLSN, 10) })
		h := len(headers)
		headers = kafkawire.AbortedMarkerHeaders(headers, first, last, w.lineage)
		job.recs = append(job.recs, kgo.Record{Topic: w.orderedTopic, Headers: headers[h:len(headers):len(headers)], Timestamp: t.CommitTime, Context: &job.ctx})
		job.entries = append(job.entries, wmEntry{lsn: t.FirstLSN, left: 1, commitTime: t.CommitTime})
	}
	job.entries = append(job.entries, wmEntry{lsn: t.CommitLSN, commit: true, commitTime: t.CommitTime})
	return headers
}

// topic returns the topic of the job's k-th change, "" for none.
func (w *encodeWorker) topic(job *encJob, k int) string {
	if job.topics == nil {
		return w.orderedTopic
	}
	return job.topics[k]
}

// newEncodeWorker returns a worker encoding as cfg says, with lineage in
// every record's header and envelope.
func newEncodeWorker(cfg *Options, lineage string) *encodeWorker {
	w := &encodeWorker{tombstones: *cfg.Tombstones, enc: &kafkawire.Encoder{Database: cfg.Database, Name: cfg.Name, Lineage: lineage, Format: cfg.Format},
		lineage: []byte(lineage), orderedTopic: kafkawire.OrderedTopic(cfg.TopicPrefix)}
	if cfg.TransactionTopic {
		w.txnTopic = kafkawire.TransactionTopic(cfg.TopicPrefix)
	}
	return w
}

// changeTopic is the topic of change c: in ordered mode the ordered topic,
// in tables mode its table's topic, or "" for none (a logical message has
// no table: its LSN passes without a record).
func changeTopic(ordered bool, prefix string, c *change.Change) string {
	if ordered {
		return kafkawire.OrderedTopic(prefix)
	}
	if c.Op == change.Message || c.Table.IsZero() {
		return ""
	}
	return kafkawire.TablesTopic(prefix, c.Table.Schema, c.Table.Name)
}

// tableOrdinals sets dst to the data_collection_order of each change of t:
// its 1-based rank among the changes of t with the same table that have a
// record (0 for one without). counts is scratch space: small transactions
// count by scanning, large ones with the map.
func tableOrdinals(dst []int32, t *change.Committed, ordered bool, counts map[change.Table]int32) []int32 {
	dst = dst[:0]
	useMap := len(t.Changes) > 16
	if useMap {
		clear(counts)
	}
	for i := range t.Changes {
		c := &t.Changes[i]
		var ord int32
		if ordered || (c.Op != change.Message && !c.Table.IsZero()) {
			if useMap {
				counts[c.Table]++
				ord = counts[c.Table]
			} else {
				ord = 1
				for k := range i {
					if o := &t.Changes[k]; o.Table == c.Table && (ordered || o.Op != change.Message) {
						ord++
					}
				}
			}
		}
		dst = append(dst, ord)
	}
	return dst
}
