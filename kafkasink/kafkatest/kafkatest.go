// Package kafkatest provides what the Kafka sink and consumer tests, the
// bench and the demo share: an in-process Kafka-protocol broker (kfake) on
// loopback, a TCP proxy in front of it that can be stopped and restarted to
// simulate a broker outage without losing the broker's data, a reader of
// whole topics, and a workload of transactions that uses every value kind.
//
// Nothing outside tests, the bench and the demo may depend on it
// (docs/DESIGN.md §6.3: the code stays broker-agnostic).
package kafkatest

import (
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/walship/walship/change"
)

// Cluster is an in-process broker listening on 127.0.0.1.
type Cluster struct {
	*kfake.Cluster
	Addr string
}

// Start starts a one-broker kfake cluster on a free loopback port; opts
// are added to the defaults. Group session timeouts down to 100ms are
// allowed, so tests that kill consumers need not wait long.
func Start(opts ...kfake.Opt) (*Cluster, error) {
	c, err := kfake.NewCluster(append([]kfake.Opt{
		kfake.NumBrokers(1),
		kfake.ListenFn(func(network, _ string) (net.Listener, error) { return net.Listen(network, "127.0.0.1:0") }),
		kfake.DefaultNumPartitions(1),
		kfake.GroupMinSessionTimeout(100 * time.Millisecond),
	}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("kafkatest: start kfake: %w", err)
	}
	return &Cluster{Cluster: c, Addr: c.ListenAddrs()[0]}, nil
}

// Proxy forwards TCP connections from Addr to a target. Down closes the
// listener and every connection (clients see the broker vanish); Up listens
// on the same address again.
//
// A Kafka broker advertises its own address in metadata responses, so
// clients that connect through a proxy to kfake would then bypass it;
// proxies are therefore used with the kfake cluster started by
// StartBehindProxy, which advertises the proxy's address.
type Proxy struct {
	Addr   string
	target string
	mu     struct {
		sync.Mutex
		ln    net.Listener
		conns map[net.Conn]bool
	}
	wg sync.WaitGroup
}

// StartBehindProxy starts a kfake cluster listening on a private port and a
// Proxy in front of it: clients must use proxy.Addr, which the broker
// advertises.
func StartBehindProxy() (*Cluster, *Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	proxyAddr := ln.Addr().String()
	_, portStr, _ := net.SplitHostPort(proxyAddr)
	var port int
	fmt.Sscan(portStr, &port)
	// kfake advertises its listener's Addr: the listener listens on a
	// private port, which only the proxy knows, and reports the proxy's.
	var innerAddr string
	c, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.Ports(port),
		kfake.GroupMinSessionTimeout(100*time.Millisecond),
		kfake.ListenFn(func(network, _ string) (net.Listener, error) {
			l, err := net.Listen(network, "127.0.0.1:0")
			if err != nil {
				return nil, err
			}
			innerAddr = l.Addr().String()
			return advertised{l, ln.Addr()}, nil
		}),
		kfake.DefaultNumPartitions(1),
	)
	if err != nil {
		ln.Close()
		return nil, nil, fmt.Errorf("kafkatest: start kfake: %w", err)
	}
	p := &Proxy{Addr: proxyAddr, target: innerAddr}
	p.mu.conns = map[net.Conn]bool{}
	p.serve(ln)
	return &Cluster{Cluster: c, Addr: proxyAddr}, p, nil
}

type advertised struct {
	net.Listener
	addr net.Addr
}

func (a advertised) Addr() net.Addr { return a.addr }

func (p *Proxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.mu.ln = ln
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				p.pipe(c)
			}()
		}
	}()
}

func (p *Proxy) pipe(c net.Conn) {
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	if p.mu.ln == nil { // went down meanwhile
		p.mu.Unlock()
		c.Close()
		up.Close()
		return
	}
	p.mu.conns[c] = true
	p.mu.conns[up] = true
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { io.Copy(up, c); done <- struct{}{} }()
	go func() { io.Copy(c, up); done <- struct{}{} }()
	<-done
	c.Close()
	up.Close()
	<-done
	p.mu.Lock()
	delete(p.mu.conns, c)
	delete(p.mu.conns, up)
	p.mu.Unlock()
}

// Down stops accepting and cuts every proxied connection.
func (p *Proxy) Down() {
	p.mu.Lock()
	if p.mu.ln != nil {
		p.mu.ln.Close()
		p.mu.ln = nil
	}
	for c := range p.mu.conns {
		c.Close()
	}
	p.mu.Unlock()
}

// Up listens on Addr again.
func (p *Proxy) Up() error {
	var ln net.Listener
	var err error
	for range 50 { // the port may linger briefly
		if ln, err = net.Listen("tcp", p.Addr); err == nil {
			p.serve(ln)
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return err
}

// Close stops the proxy for good and waits for its goroutines.
func (p *Proxy) Close() {
	p.Down()
	p.wg.Wait()
}

// ReadTopic reads partition 0 of topic from the start until it has n
// records or ctx ends.
func ReadTopic(ctx context.Context, brokers []string, topic string, n int) ([]*kgo.Record, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	var out []*kgo.Record
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return out, fmt.Errorf("read %s: have %d of %d records: %w", topic, len(out), n, err)
		}
		for _, fe := range fs.Errors() {
			if fe.Err != nil && ctx.Err() == nil {
				continue // retried by the client
			}
		}
		out = append(out, fs.Records()...)
	}
	return out, nil
}

// Workload makes transactions over tables public.accounts (id int key),
// public.kinds (id key, a column of every value kind) and app."odd table"
// (text key): inserts, updates, deletes, an occasional truncate of
// app."odd table" and logical messages, deterministic for a seed.
//
// Every change is valid against the state the earlier ones leave: inserts
// of absent keys, updates and deletes of present ones.
type Workload struct {
	// NoKinds leaves out public.kinds (values a replica may not store
	// exactly, like NaN in SQLite) and logical messages.
	NoKinds bool
	rng     *rand.Rand
	nextID  int64
	live    []int64 // ids present in public.accounts
	kinds   map[int64]bool
	odd     map[string]bool
	xid     uint64
}

// NewWorkload returns a workload seeded with seed.
func NewWorkload(seed uint64) *Workload {
	return &Workload{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), xid: 1000,
		kinds: map[int64]bool{}, odd: map[string]bool{}}
}

var (
	Accounts = change.Table{Schema: "public", Name: "accounts"}
	Kinds    = change.Table{Schema: "public", Name: "kinds"}
	Odd      = change.Table{Schema: "app", Name: "odd table"}
)

func row(cols ...any) change.Row {
	r := change.Row{}
	for i := 0; i < len(cols); i += 2 {
		r = append(r, change.Column{Name: cols[i].(string), Value: cols[i+1].(change.Value)})
	}
	return r
}

func must(v change.Value, err error) change.Value {
	if err != nil {
		panic(err)
	}
	return v
}

// KindsRow returns a row of public.kinds with id and one value of every
// kind, varied by id.
func KindsRow(id, variant int64) change.Row {
	ts := time.Date(2024, 5, 1, 12, 0, 0, int(variant%1e9), time.UTC).Add(time.Duration(variant) * time.Second)
	return row(
		"id", change.IntValue(id),
		"b", change.BoolValue(id%2 == 0),
		"f", change.FloatValue([]float64{1.5, math.NaN(), math.Inf(1), math.Inf(-1), math.Copysign(0, -1), 1e300}[variant%6]),
		"n", must(change.NumericValue(fmt.Sprintf("%d.%03d", variant, variant%1000))),
		"t", change.TextValue(fmt.Sprintf("text \"%d\" \n\t\u00e9\u2028 ✓", variant)),
		"by", change.BytesValue([]byte{0, 1, 2, byte(variant), 0xff}),
		"ts", must(change.TimestampValue(ts)),
		"j", must(change.JSONValue([]byte(fmt.Sprintf(`{"a":[1,2,{"b":null}],"v":%d,"$type":"x"}`, variant)))),
		// Arrays are homogeneous, as in Postgres; kafkasink's unit tests
		// also cover arrays of mixed kinds.
		"arr", change.ArrayValue(change.IntValue(variant), change.NullValue(), change.IntValue(-1)),
		"marr", change.ArrayValue(change.ArrayValue(must(change.NumericValue("1.10")), must(change.NumericValue("-2"))), change.ArrayValue(change.NullValue(), must(change.NumericValue("3.5")))),
		"u", change.UnknownValue("interval", fmt.Sprintf("%d days", variant)),
		"nul", change.NullValue(),
	)
}

var kindsTypes = []change.ColumnType{{Name: "id", Type: "int8"}, {Name: "n", Type: "numeric"}, {Name: "ts", Type: "timestamptz"}}

// Next returns the next transaction (1 to 5 changes).
func (w *Workload) Next() change.Txn {
	w.xid++
	t := change.Txn{Header: change.TxHeader{XID: w.xid, SourceLSN: w.xid << 20, SourceCommitTime: time.Now().UTC(), Origin: "kafkatest"}}
	n := 1 + w.rng.IntN(5)
	for range n {
		t.Changes = append(t.Changes, w.change())
	}
	return t
}

func (w *Workload) change() change.Change {
	r := w.rng.IntN(100)
	if w.NoKinds && (r < 2 || (r >= 10 && r < 25)) {
		r = 30
	}
	switch {
	case r < 2:
		return change.Change{Op: change.Message, Message: &change.LogicalMessage{Prefix: "walship.test", Content: []byte{0xff, 'x', byte(r)}, Transactional: r == 0}}
	case r < 3:
		clear(w.odd)
		return change.Change{Table: Odd, Op: change.Truncate}
	case r < 10:
		ks := fmt.Sprintf("k%d", w.rng.IntN(20))
		k := row("k", change.TextValue(ks))
		op := change.Insert
		if w.odd[ks] {
			op = change.Update
		}
		w.odd[ks] = true
		return change.Change{Table: Odd, Op: op, Key: k, After: row("k", k[0].Value, "v", change.IntValue(w.rng.Int64()))}
	case r < 25:
		id := w.rng.Int64N(50)
		op := change.Insert
		if w.kinds[id] {
			op = change.Update
		}
		w.kinds[id] = true
		return change.Change{Table: Kinds, Op: op, Key: row("id", change.IntValue(id)), After: KindsRow(id, w.rng.Int64N(100000)), Types: kindsTypes}
	case r < 55 || len(w.live) == 0:
		w.nextID++
		id := w.nextID
		w.live = append(w.live, id)
		return change.Change{Table: Accounts, Op: change.Insert, Key: row("id", change.IntValue(id)),
			After: row("id", change.IntValue(id), "balance", change.IntValue(100), "owner", change.TextValue(fmt.Sprintf("owner-%d", id)))}
	case r < 85:
		id := w.live[w.rng.IntN(len(w.live))]
		return change.Change{Table: Accounts, Op: change.Update, Key: row("id", change.IntValue(id)),
			After: row("id", change.IntValue(id), "balance", change.IntValue(w.rng.Int64N(1e6)), "owner", change.TextValue(fmt.Sprintf("owner-%d", id)))}
	default:
		i := w.rng.IntN(len(w.live))
		id := w.live[i]
		w.live = append(w.live[:i], w.live[i+1:]...)
		return change.Change{Table: Accounts, Op: change.Delete, Key: row("id", change.IntValue(id))}
	}
}
