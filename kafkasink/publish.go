package kafkasink

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/walship/walship/change"
	"github.com/walship/walship/kafkawire"
)

// Publishing: the records the Sink would send for transactions read from
// elsewhere (walreplay publish reads them from the archive), produced with
// the Sink's own encoder, partitioner and producer settings, and skipping
// what the topics already hold.

// DefaultPublishTimeout bounds each broker operation of a Publisher.
const DefaultPublishTimeout = 2 * time.Minute

// PublishOptions configure a Publisher.
type PublishOptions struct {
	// Kafka are the daemon's kafka settings (brokers, topic prefix,
	// partitions, tombstones, source.db and source.name, compression, TLS,
	// SASL): records are built from them exactly as the Sink builds its
	// own. Kafka.Mode is used when Modes is empty.
	Kafka Options
	// Modes are the topics to publish: ordered, tables or both.
	Modes []string
	// Lineage is written in every record, as the daemon's.
	Lineage string
	// FromLSN and FromTime select the records to publish: those whose LSN
	// is at least FromLSN and whose transaction committed at or after
	// FromTime (zero values select all).
	FromLSN  uint64
	FromTime time.Time
	// Force produces every selected record, whatever the topics hold: no
	// skipping, no hole, lineage or open-transaction check.
	Force bool
	// Timeout bounds each broker operation (reading the topics' ends,
	// creating topics, producing a batch); default DefaultPublishTimeout.
	Timeout time.Duration
}

// ErrTopicHole marks a publish refused because it would leave a hole in a
// topic (HoleError says where).
var ErrTopicHole = errors.New("kafkasink: publish would leave a hole in a topic")

// ErrTopicMismatch marks a topic whose records cannot be continued: another
// lineage's, without walship's headers, or whose end is unknown.
var ErrTopicMismatch = errors.New("kafkasink: topic cannot be continued")

// ErrTopicInUse marks a topic refused because a transactional producer —
// an HA group's leader (docs/HA.md) — has a transaction open in it:
// publishing into a live group's topic would interleave with its writes.
var ErrTopicInUse = errors.New("kafkasink: a transactional producer is writing the topic")

// HoleError: a partition ends at LSN End, and the record of LSN LSN, which
// it lacks, is before the start asked for.
type HoleError struct {
	Topic     string
	Partition int32
	End, LSN  uint64
}

func (e *HoleError) Error() string {
	return fmt.Sprintf("kafkasink: topic %s partition %d ends at LSN %d, and publishing from the start asked for would leave out LSN %d: "+
		"start at or before LSN %d (or give --force to publish with the hole)", e.Topic, e.Partition, e.End, e.LSN, e.End+1)
}

// Is makes errors.Is(err, ErrTopicHole) true.
func (e *HoleError) Is(target error) bool { return target == ErrTopicHole }

// PartitionEnd is the last record of a partition: its LSN, whether it has
// a null value (a tombstone, or an aborted-range marker: either is the
// last record of its LSN), and its lineage.
type PartitionEnd struct {
	LSN       uint64
	Tombstone bool
	Lineage   string
}

// PublishStats count what a Publisher did.
type PublishStats struct {
	Produced, Skipped int    // records
	LastLSN           uint64 // of the last record produced
}

// Publisher produces the records of transactions given in log order. Not
// safe for concurrent use.
//
// Exactly once into the topics: each record goes to the partition the Sink
// would choose, and is skipped when that partition already holds it — its
// last committed record has a higher LSN, or the same LSN and is the record
// itself or the tombstone that follows it (a partition holds a prefix, in
// LSN order, of the records sent to it). A topic written by the
// transactional Sink holds transaction markers and aborted records too:
// neither is history, so where a partition ends is its last committed data
// record, as a read_committed reader sees it. An empty partition, or a topic that does not exist, holds
// nothing and starts wherever publishing starts. A record a partition
// lacks that is before the selected start is a hole: Publish refuses it
// (*HoleError) before producing anything after it.
type Publisher struct {
	opts   PublishOptions
	cl     *kgo.Client
	adm    *kadm.Client
	modes  []*publishMode
	parts  map[string]int32           // partitions of the topics in use
	ends   map[string][]*PartitionEnd // per topic and partition; nil: empty
	tparts map[string]kgo.TopicPartitioner
	stats  PublishStats
	counts map[change.Table]int32
	ords   []int32
}

type publishMode struct {
	ordered bool
	topics  *topicCache
	enc     *encodeWorker
}

// NewPublisher validates opts, connects, creates the ordered topic if it is
// published, and reads where each existing topic of opts.Modes ends
// (walship.lsn of the last committed data record of each partition, found
// by reading backwards from the last stable offset over transaction
// markers and aborted records). Unless opts.Force, a topic of another
// lineage, without walship's headers, or whose records are all deleted is
// refused (ErrTopicMismatch), and so is a topic with a transaction open —
// an HA group's leader writing it (ErrTopicInUse): Publisher's producer is
// not transactional and cannot fence that writer, so its records would
// interleave with the group's. Forced, such a partition's end is not read.
func NewPublisher(ctx context.Context, opts PublishOptions) (*Publisher, error) {
	if len(opts.Modes) == 0 {
		opts.Modes = []string{opts.Kafka.Mode}
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultPublishTimeout
	}
	var errs []error
	for _, m := range opts.Modes {
		cfg := opts.Kafka
		cfg.Mode = m
		errs = append(errs, cfg.Validate())
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	opts.Kafka.Mode = opts.Modes[0]
	_ = opts.Kafka.Validate() // fill in the defaults
	copts, err := producerOptions(&opts.Kafka)
	if err != nil {
		return nil, err
	}
	// Partitions are chosen here, with the Sink's partitioner, so that what
	// a partition holds can be compared before producing.
	copts = append(copts, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	cl, err := kgo.NewClient(copts...)
	if err != nil {
		return nil, fmt.Errorf("kafkasink: %w", err)
	}
	p := &Publisher{opts: opts, cl: cl, adm: kadm.NewClient(cl), parts: map[string]int32{}, ends: map[string][]*PartitionEnd{},
		tparts: map[string]kgo.TopicPartitioner{}, counts: map[change.Table]int32{}}
	for _, m := range opts.Modes {
		cfg := opts.Kafka
		cfg.Mode = m
		mc := &cfg
		p.modes = append(p.modes, &publishMode{ordered: m == kafkawire.ModeOrdered,
			topics: &topicCache{cfg: mc, adm: p.adm, log: cfg.Logger, known: map[string]bool{}},
			enc:    newEncodeWorker(mc, opts.Lineage)})
	}
	if err := p.readEnds(ctx); err != nil {
		cl.Close()
		return nil, err
	}
	return p, nil
}

// Close closes the client.
func (p *Publisher) Close() { p.cl.Close() }

// Stats returns what Publish did so far.
func (p *Publisher) Stats() PublishStats { return p.stats }

// Ends returns where each existing topic in use ended when the Publisher
// started (nil for an empty partition).
func (p *Publisher) Ends() map[string][]*PartitionEnd { return p.ends }

// ReadFrom is the first LSN whose transaction must be read: FromLSN (1 if
// unset in tables mode), lowered to the end of every non-empty partition
// so that a record a partition lacks is never passed by; in ordered mode
// alone with FromLSN unset, the end of the ordered topic (1 if empty).
func (p *Publisher) ReadFrom() uint64 {
	from := max(p.opts.FromLSN, 1)
	if p.opts.FromLSN == 0 && !p.opts.Force && len(p.modes) == 1 && p.modes[0].ordered {
		from = 1
		if e := p.ends[kafkawire.OrderedTopic(p.opts.Kafka.TopicPrefix)]; len(e) == 1 && e[0] != nil {
			from = e[0].LSN
		}
		return from
	}
	if p.opts.Force {
		return from
	}
	for _, parts := range p.ends {
		for _, e := range parts {
			if e != nil {
				from = min(from, max(e.LSN, 1))
			}
		}
	}
	return from
}

// timeout returns a context bounded by opts.Timeout.
func (p *Publisher) timeout(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, p.opts.Timeout)
}

// readEnds lists the topics of the modes published and reads the last
// committed data record of each of their partitions.
func (p *Publisher) readEnds(ctx context.Context) error {
	ctx, cancel := p.timeout(ctx)
	defer cancel()
	prefix := p.opts.Kafka.TopicPrefix
	ordered := kafkawire.OrderedTopic(prefix)
	lease := prefix + ".ha" // an HA group's lease topic (docs/HA.md), not a table's
	for _, m := range p.modes {
		if m.ordered {
			if err := m.topics.ensure(ctx, ordered, 1); err != nil {
				return err
			}
		}
	}
	details, err := p.adm.ListTopics(ctx)
	if err != nil {
		return fmt.Errorf("kafkasink: list topics: %w", err)
	}
	var topics []string
	for _, m := range p.modes {
		for name, d := range details {
			if d.Err != nil {
				continue
			}
			if (m.ordered && name == ordered) || (!m.ordered && name != ordered && name != lease && strings.HasPrefix(name, prefix+".")) {
				topics = append(topics, name)
				p.parts[name] = int32(len(d.Partitions))
				m.topics.known[name] = true
			}
		}
	}
	slices.Sort(topics)
	if len(topics) == 0 {
		return nil
	}
	starts, err := p.adm.ListStartOffsets(ctx, topics...)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return fmt.Errorf("kafkasink: list start offsets: %w", err)
	}
	// The last stable offset first, then the high watermark: both only
	// grow and the first is never above the second, so equal values mean
	// that no transaction was open when the first was listed — and then
	// every record below it is decided, and the one just below it is a
	// transaction marker or a committed record, which a read_committed
	// reader keeping markers is sure to be given (lastCommitted).
	stables, err := p.adm.ListCommittedOffsets(ctx, topics...)
	if err == nil {
		err = stables.Error()
	}
	if err != nil {
		return fmt.Errorf("kafkasink: list last stable offsets: %w", err)
	}
	highs, err := p.adm.ListEndOffsets(ctx, topics...)
	if err == nil {
		err = highs.Error()
	}
	if err != nil {
		return fmt.Errorf("kafkasink: list end offsets: %w", err)
	}
	var parts []*endSearch
	for _, t := range topics {
		p.ends[t] = make([]*PartitionEnd, p.parts[t])
		for part := range p.parts[t] {
			e, ok := stables.Lookup(t, part)
			h, _ := highs.Lookup(t, part)
			st, _ := starts.Lookup(t, part)
			switch {
			case ok && e.Offset < h.Offset:
				// A transactional producer is writing: an HA group's
				// leader (or a crashed one whose transaction the broker
				// has not yet timed out).
				if !p.opts.Force {
					return fmt.Errorf("%w: topic %s partition %d has a transaction open (last stable offset %d, end %d): "+
						"a transactional producer, an HA group's leader (docs/HA.md), is writing it, and publishing into a live group's topic "+
						"would interleave with it; stop every member of the group (a crashed producer's transaction is aborted by the broker "+
						"after its transaction timeout), or give --force", ErrTopicInUse, t, part, e.Offset, h.Offset)
				}
				// Forced: where it ends is not needed (nothing is skipped).
			case !ok || e.Offset <= 0:
			case st.Offset >= e.Offset:
				if !p.opts.Force {
					return fmt.Errorf("%w: topic %s partition %d: its records up to offset %d are deleted, so where it ends is unknown: "+
						"give --from-lsn with --force", ErrTopicMismatch, t, part, e.Offset)
				}
			default:
				parts = append(parts, &endSearch{topic: t, part: part, start: st.Offset, end: e.Offset})
			}
		}
	}
	if err := p.lastCommitted(ctx, parts); err != nil {
		return err
	}
	for _, es := range parts {
		r := es.found
		if r == nil {
			// Only transaction markers and aborted records: no history.
			if es.start > 0 && !p.opts.Force {
				return fmt.Errorf("%w: topic %s partition %d holds no committed record from offset %d (its start) to %d, only transaction markers "+
					"and aborted records, and those before are deleted, so where it ends is unknown: give --from-lsn with --force",
					ErrTopicMismatch, es.topic, es.part, es.start, es.end)
			}
			continue
		}
		lsn, _, _, lineage, err := kafkawire.DecodeHeaders(r)
		if err != nil {
			return fmt.Errorf("%w: topic %s partition %d offset %d: not a walship record: %w", ErrTopicMismatch, r.Topic, r.Partition, r.Offset, err)
		}
		if lineage != p.opts.Lineage && !p.opts.Force {
			return fmt.Errorf("%w: topic %s partition %d holds lineage %q, the archive's is %q (give --force to publish anyway)",
				ErrTopicMismatch, r.Topic, r.Partition, lineage, p.opts.Lineage)
		}
		p.ends[r.Topic][r.Partition] = &PartitionEnd{LSN: lsn, Tombstone: r.Value == nil, Lineage: lineage}
	}
	return nil
}

// endSearch is the search for the last committed data record of a
// partition below its last stable offset end.
type endSearch struct {
	topic      string
	part       int32
	start, end int64 // the partition's start and last stable offsets
	// The window read next: records at offsets [from, limit); reading it
	// is done once a record at stop or above arrives.
	from, limit, stop int64
	found             *kgo.Record
	done              bool
}

// firstEndWindow is how many offsets below the end the search reads
// first; each further window, below the one before, is four times larger.
const firstEndWindow = 64

// lastCommitted finds, for each partition of parts, its last committed
// data record below its end (nil if it has none), reading windows of
// offsets backwards from the end, all partitions at once, read_committed
// with the transaction markers kept: aborted records are not returned, and
// a window holding only markers and aborted records is told at once
// rather than waited on.
//
// A window's reading ends at a record the reader is sure to be given: for
// the first, the record just below the end (a marker or a committed
// record, readEnds says why); for each further one, the first record
// returned at or above its limit, which the window above returned.
func (p *Publisher) lastCommitted(ctx context.Context, parts []*endSearch) error {
	for _, es := range parts {
		es.from, es.limit, es.stop = max(es.start, es.end-firstEndWindow), es.end, es.end-1
	}
	for width := int64(firstEndWindow); ; width *= 4 {
		want := map[string]map[int32]kgo.Offset{}
		open := map[string]map[int32]*endSearch{}
		left := 0
		for _, es := range parts {
			if es.done {
				continue
			}
			if want[es.topic] == nil {
				want[es.topic], open[es.topic] = map[int32]kgo.Offset{}, map[int32]*endSearch{}
			}
			want[es.topic][es.part], open[es.topic][es.part] = kgo.NewOffset().At(es.from), es
			left++
		}
		if left == 0 {
			return nil
		}
		if err := p.readWindows(ctx, want, open, left); err != nil {
			return err
		}
		for _, es := range parts {
			switch {
			case es.done:
			case es.found != nil || es.from <= es.start:
				es.done = true
			default:
				es.from, es.limit, es.stop = max(es.start, es.from-4*width), es.from, es.from
			}
		}
	}
}

// readWindows reads the current window of each of the left partitions
// searched (open), consuming from the offsets want.
func (p *Publisher) readWindows(ctx context.Context, want map[string]map[int32]kgo.Offset, open map[string]map[int32]*endSearch, left int) error {
	rd, err := kgo.NewClient(append(p.readerOptions(), kgo.ConsumePartitions(want), kgo.KeepControlRecords(),
		kgo.FetchMaxWait(100*time.Millisecond))...)
	if err != nil {
		return fmt.Errorf("kafkasink: %w", err)
	}
	defer rd.Close()
	for left > 0 {
		fs := rd.PollFetches(ctx)
		if ctx.Err() != nil {
			return fmt.Errorf("kafkasink: read the last committed record of %d partitions: %w", left, ctx.Err())
		}
		var ferr error
		fs.EachError(func(t string, part int32, err error) {
			if kafkawire.IsFatal(err) && ferr == nil {
				ferr = fmt.Errorf("kafkasink: read topic %s partition %d: %w", t, part, err)
			}
		})
		if ferr != nil {
			return ferr
		}
		fs.EachRecord(func(r *kgo.Record) {
			es := open[r.Topic][r.Partition]
			if es == nil || r.Offset < es.from {
				return
			}
			if r.Offset < es.limit && !r.Attrs.IsControl() {
				es.found = r
			}
			if r.Offset >= es.stop {
				delete(open[r.Topic], r.Partition)
				left--
			}
		})
	}
	return nil
}

// readerOptions are the client settings for reading the topics' ends.
func (p *Publisher) readerOptions() []kgo.Opt {
	opts, _ := kafkawire.ClientOptions(p.opts.Kafka.Brokers, p.opts.Kafka.TLS, p.opts.Kafka.SASL) // checked by NewPublisher
	// Only committed records: what a transactional producer aborted is
	// not part of the topic.
	return append(opts, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
}

// Publish produces the records of txns (whole transactions, in log order,
// continuing those given before) that the topics lack, and waits until the
// brokers acknowledge them. On error, a prefix of the records was produced.
// An aborted range among txns (change.Committed.Aborted) becomes the
// ordered topic's aborted-range marker, as the Sink sends it; its
// timestamp is the range's CommitTime.
func (p *Publisher) Publish(ctx context.Context, txns []change.Committed) error {
	for _, m := range p.modes {
		recs, err := p.encode(ctx, m, txns)
		if err != nil {
			return err
		}
		if err := p.produce(ctx, m, recs); err != nil {
			return err
		}
	}
	return nil
}

// encode builds the records of txns in mode m, as the Sink does, creating
// the topics they need.
func (p *Publisher) encode(ctx context.Context, m *publishMode, txns []change.Committed) ([]kgo.Record, error) {
	job := &encJob{}
	if !m.ordered {
		job.topics = []string{}
	}
	for i := range txns {
		t := &txns[i]
		if t.Aborted {
			// The ordered topic's marker, as the Sink sends it; nothing in
			// tables mode.
			if m.ordered {
				job.spans = append(job.spans, span{txn: t})
			}
			continue
		}
		if len(t.Changes) == 0 {
			continue
		}
		job.spans = append(job.spans, span{txn: t, from: 0, to: len(t.Changes)})
		p.ords = tableOrdinals(p.ords, t, m.ordered, p.counts)
		job.ordinals = append(job.ordinals, p.ords...)
		if m.ordered {
			continue
		}
		for j := range t.Changes {
			topic := changeTopic(false, p.opts.Kafka.TopicPrefix, &t.Changes[j])
			job.topics = append(job.topics, topic)
			if topic != "" && !m.topics.known[topic] {
				if err := p.ensure(ctx, m, topic); err != nil {
					return nil, err
				}
			}
		}
	}
	m.enc.encode(job)
	return job.recs, nil
}

// ensure creates topic (or finds it) and learns its partitions.
func (p *Publisher) ensure(ctx context.Context, m *publishMode, topic string) error {
	ctx, cancel := p.timeout(ctx)
	defer cancel()
	if err := m.topics.ensure(ctx, topic, m.topics.cfg.Partitions); err != nil {
		return err
	}
	details, err := p.adm.ListTopics(ctx, topic)
	if err != nil {
		return fmt.Errorf("kafkasink: describe topic %s: %w", topic, err)
	}
	d, ok := details[topic]
	if !ok || d.Err != nil || len(d.Partitions) == 0 {
		return fmt.Errorf("kafkasink: describe topic %s: %v", topic, d.Err)
	}
	p.parts[topic] = int32(len(d.Partitions))
	return nil
}

// partition returns the partition the Sink sends r to in mode m.
func (p *Publisher) partition(m *publishMode, r *kgo.Record) int32 {
	n := p.parts[r.Topic]
	if m.ordered || n <= 1 {
		return 0
	}
	tp := p.tparts[r.Topic]
	if tp == nil {
		tp = tablesPartitioner.ForTopic(r.Topic)
		p.tparts[r.Topic] = tp
	}
	return int32(tp.Partition(r, int(n)))
}

// produce sends recs that the topics lack, in order, and waits for them.
func (p *Publisher) produce(ctx context.Context, m *publishMode, recs []kgo.Record) error {
	var (
		mu       sync.Mutex
		firstErr error
	)
	promise := func(r *kgo.Record, err error) {
		if err == nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if firstErr == nil {
			firstErr = fmt.Errorf("kafkasink: produce to %s partition %d: %w", r.Topic, r.Partition, err)
		}
	}
	pctx, cancel := p.timeout(ctx)
	defer cancel()
	produced := 0
	var last uint64
	for i := range recs {
		r := &recs[i]
		lsn, _ := strconv.ParseUint(string(r.Headers[0].Value), 10, 64) // the encoder's first header
		part := p.partition(m, r)
		var e *PartitionEnd
		if ends := p.ends[r.Topic]; int(part) < len(ends) {
			e = ends[part]
		}
		lacking := e == nil || lsn > e.LSN || (lsn == e.LSN && r.Value == nil && !e.Tombstone)
		selected := lsn >= p.opts.FromLSN && !r.Timestamp.Before(p.opts.FromTime)
		switch {
		case !selected:
			if lacking && e != nil && !p.opts.Force {
				p.flush(pctx, &produced, last)
				return &HoleError{Topic: r.Topic, Partition: part, End: e.LSN, LSN: lsn}
			}
			continue
		case !lacking && !p.opts.Force:
			p.stats.Skipped++
			continue
		}
		r.Partition = part
		r.Context = pctx
		p.cl.Produce(pctx, r, promise)
		produced++
		last = lsn
	}
	if err := p.flush(pctx, &produced, last); err != nil {
		return err
	}
	mu.Lock()
	defer mu.Unlock()
	return firstErr
}

// flush waits for the records produced and counts them.
func (p *Publisher) flush(ctx context.Context, produced *int, last uint64) error {
	err := p.cl.Flush(ctx)
	if *produced > 0 {
		p.stats.Produced += *produced
		p.stats.LastLSN = last
		*produced = 0
	}
	if err != nil {
		return fmt.Errorf("kafkasink: wait for the brokers' acknowledgements: %w", err)
	}
	return nil
}
