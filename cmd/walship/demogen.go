//go:build !nodemo

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"

	"github.com/walship/walship/change"
)

// demoGen generates the demo's shop workload as transactions for the HTTP
// source: the same tables and kinds of change as the PostgreSQL workload.
type demoGen struct {
	rng      *rand.Rand
	balances [201]int64 // cents, by account id
	orders   int64
	live     map[int64]bool
}

var (
	demoAccounts = change.Table{Schema: "public", Name: "accounts"}
	demoOrders   = change.Table{Schema: "public", Name: "orders"}
)

func newDemoGen() *demoGen {
	return &demoGen{rng: rand.New(rand.NewPCG(1, 2)), live: map[int64]bool{}}
}

func num(cents int64) change.Value {
	sign := ""
	if cents < 0 {
		sign, cents = "-", -cents
	}
	v, _ := change.NumericValue(fmt.Sprintf("%s%d.%02d", sign, cents/100, cents%100))
	return v
}

func ts(t time.Time) change.Value {
	v, _ := change.TimestampValue(t.UTC().Truncate(time.Microsecond))
	return v
}

func (g *demoGen) account(id int64) change.Change {
	after := change.Row{{Name: "id", Value: change.IntValue(id)}, {Name: "owner", Value: change.TextValue(fmt.Sprintf("owner-%d", id))},
		{Name: "balance", Value: num(g.balances[id])}, {Name: "updated_at", Value: ts(time.Now())}}
	return change.Change{Table: demoAccounts, Op: change.Update, Key: change.Row{{Name: "id", Value: change.IntValue(id)}}, After: after}
}

// setup inserts the 200 accounts.
func (g *demoGen) setup() []change.Txn {
	var cs []change.Change
	for id := int64(1); id <= 200; id++ {
		g.balances[id] = 100000
		c := g.account(id)
		c.Op = change.Insert
		cs = append(cs, c)
	}
	return []change.Txn{{Changes: cs}}
}

// txns returns n transactions: a transfer, a new order, sometimes an order
// shipped or deleted.
func (g *demoGen) txns(n int) []change.Txn {
	out := make([]change.Txn, n)
	for i := range out {
		a, b := int64(1+g.rng.IntN(200)), int64(1+g.rng.IntN(200))
		amt := int64(g.rng.IntN(10000))
		g.balances[a] -= amt
		g.balances[b] += amt
		g.orders++
		oid := g.orders
		g.live[oid] = true
		order := change.Row{{Name: "id", Value: change.IntValue(oid)}, {Name: "account_id", Value: change.IntValue(a)},
			{Name: "amount", Value: num(amt)}, {Name: "status", Value: change.TextValue("new")}, {Name: "placed_at", Value: ts(time.Now())},
			{Name: "note", Value: change.TextValue(fmt.Sprintf("order %d for account %d", oid, a))}}
		cs := []change.Change{g.account(a), g.account(b),
			{Table: demoOrders, Op: change.Insert, Key: change.Row{order[0]}, After: order}}
		if roll := g.rng.IntN(10); roll == 3 && g.live[oid-5] {
			delete(g.live, oid-5)
			cs = append(cs, change.Change{Table: demoOrders, Op: change.Delete, Key: change.Row{{Name: "id", Value: change.IntValue(oid - 5)}}})
		}
		out[i] = change.Txn{Header: change.TxHeader{XID: uint64(oid)}, Changes: cs}
	}
	return out
}

// appendTxnJSON appends txn as one line of `walship append` input.
func appendTxnJSON(dst []byte, txn *change.Txn) []byte {
	dst = fmt.Appendf(dst, `{"xid":%d,"changes":[`, txn.Header.XID)
	for i, c := range txn.Changes {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = fmt.Appendf(dst, `{"table":%q,"op":%q`, c.Table.Schema+"."+c.Table.Name, string(c.Op))
		for _, part := range []struct {
			name string
			row  change.Row
		}{{"key", c.Key}, {"after", c.After}} {
			if part.row == nil {
				continue
			}
			dst = fmt.Appendf(dst, `,%q:{`, part.name)
			for j, col := range part.row {
				if j > 0 {
					dst = append(dst, ',')
				}
				name, _ := json.Marshal(col.Name)
				dst = append(append(dst, name...), ':')
				dst = col.Value.AppendJSON(dst)
			}
			dst = append(dst, '}')
		}
		dst = append(dst, '}')
	}
	return append(dst, "]}\n"...)
}

// postAppend posts an NDJSON body to the HTTP source and checks that n
// acknowledgements came back.
func postAppend(ctx context.Context, addr string, body []byte, n int) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/v1/append", bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST /v1/append: %s: %s", resp.Status, out)
	}
	if got := strings.Count(string(out), "\n"); got != n {
		return fmt.Errorf("POST /v1/append: %d acknowledgements for %d transactions", got, n)
	}
	return nil
}
