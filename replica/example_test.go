package replica_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/walship/walship/change"
	"github.com/walship/walship/replica"
)

// This example builds a SQLite replica from two transactions of the log,
// shows that redelivering them changes nothing, and reads the replica's
// position and content back.
func Example() {
	dir, err := os.MkdirTemp("", "replica-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()
	url := "sqlite://" + filepath.Join(dir, "replica.db")

	// Transactions as the log returns them (wal.Reader, the Kafka consumer,
	// an archive segment): changes with the LSNs and commit time the log
	// gave them. The replica creates table users from the first change.
	users := change.Table{Schema: "public", Name: "users"}
	row := func(id int64, name string) change.Row {
		return change.Row{
			{Name: "id", Value: change.IntValue(id)},
			{Name: "name", Value: change.TextValue(name)},
		}
	}
	key := func(id int64) change.Row { return change.Row{{Name: "id", Value: change.IntValue(id)}} }
	commit := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	txns := []change.Committed{
		{FirstLSN: 1, CommitLSN: 2, CommitTime: commit, Txn: change.Txn{Changes: []change.Change{
			{Table: users, Op: change.Insert, Key: key(1), After: row(1, "ada"),
				Types: []change.ColumnType{{Name: "id", Type: "int8"}, {Name: "name", Type: "text"}}},
			{Table: users, Op: change.Insert, Key: key(2), After: row(2, "grace")},
		}}},
		{FirstLSN: 3, CommitLSN: 4, CommitTime: commit.Add(time.Second), Txn: change.Txn{Changes: []change.Change{
			{Table: users, Op: change.Update, Key: key(2), After: row(2, "grace hopper")},
			{Table: users, Op: change.Delete, Key: key(1)},
		}}},
	}

	app, err := replica.Open(ctx, url, replica.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer app.Close()
	if err := app.Apply(ctx, txns); err != nil {
		log.Fatal(err)
	}
	// Redelivery, as after a crash of the consumer: both transactions are
	// at or below the replica's position, so they are skipped.
	if err := app.Apply(ctx, txns); err != nil {
		log.Fatal(err)
	}
	pos, err := app.Position(ctx)
	if err != nil {
		log.Fatal(err)
	}
	st := app.Stats()
	fmt.Printf("position %d: applied %d, skipped %d\n", pos, st.Applied, st.Skipped)

	// The position is stored in the replica with its data (walship_applied),
	// so it survives the process; ReadState reads it by URL.
	state, err := replica.ReadState(ctx, url)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("state: LSN %d at %s, %d txns, %d changes\n",
		state.LSN, state.CommitTime.Format(time.RFC3339), state.Txns, state.Changes)

	// Dump reads rows in a canonical form (every scalar a string), equal
	// for equal data in PostgreSQL and SQLite.
	tables, err := replica.Dump(ctx, url)
	if err != nil {
		log.Fatal(err)
	}
	for _, r := range tables["users"] {
		fmt.Println("users:", r)
	}
	// Output:
	// position 4: applied 2, skipped 2
	// state: LSN 4 at 2024-05-01T12:00:01Z, 2 txns, 4 changes
	// users: {"id":"2","name":"grace hopper"}
}
