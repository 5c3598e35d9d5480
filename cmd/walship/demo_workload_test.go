//go:build !nodemo

package main

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/walship/walship/internal/pgtest"
)

// TestDemoWorkloadContention runs the demo's PostgreSQL workload with many
// connections over three accounts, where transfers in opposite directions
// between the same two accounts meet all the time: every transaction must
// commit (no deadlock surfaces), and the money moved between accounts must
// add up to what they started with.
func TestDemoWorkloadContention(t *testing.T) {
	t.Parallel()
	c := pgtest.Start(t, pgtest.WithoutFsync())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute) // a bound for a hang only
	defer cancel()
	if err := c.CreateDB(ctx, "shop"); err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(ctx, c.DSN("shop"))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	p := &pgSource{cluster: c, pool: pool, rng: rand.New(rand.NewPCG(3, 4)), accounts: 3, workers: 12}
	if err := p.createSchema(ctx); err != nil {
		t.Fatal(err)
	}
	const n = 3000
	if got, err := p.phase(ctx, n); err != nil || got != n {
		t.Fatalf("phase: %d transactions, error %v; want %d, no error", got, err, n)
	}
	var sum string
	var maxOrder int64
	if err := pool.QueryRow(ctx, `SELECT sum(balance)::text, (SELECT max(id) FROM orders) FROM accounts`).Scan(&sum, &maxOrder); err != nil {
		t.Fatal(err)
	}
	if sum != "3000.00" || maxOrder != n {
		t.Fatalf("after %d transfers: balances sum to %s, last order %d; want 3000.00 and %d", n, sum, maxOrder, n)
	}
}
