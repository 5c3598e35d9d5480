// Package replica applies walship's log to replica databases: SQLite (the
// embedded default, modernc.org/sqlite) and PostgreSQL (pgx), exactly once
// (docs/DESIGN.md §4.7). The restore tool (pitr) and `walship consume` use it.
//
// Guarantees:
//
//   - Each transaction of the log is applied whole or not at all, and the
//     commit LSN of the last applied one is stored in the bookkeeping table
//     walship_applied in the same database transaction as its data. Several
//     log transactions may share one database transaction (MaxBatchTxns):
//     all of them or none.
//   - Transactions at or below the stored position are skipped, so
//     redelivery (Kafka after a crash, a restore restarted) changes nothing.
//   - Tables are created from the change metadata (table, columns, source
//     types, key) and follow schema changes: added, dropped and retyped
//     columns. Values keep their exact representation (see
//     docs/REPLICA.md for the type mapping).
//   - Source names map to replica names by one deterministic function
//     (MapIdent): a name that fits the target's identifier limit
//     (PostgreSQL: 63 bytes; SQLite: none) is its own name, a longer one
//     is cut on a UTF-8 boundary and ends in "_" and 8 hex digits of its
//     SHA-256. Two source names that would share a replica name are
//     refused (*NameConflictError, naming both) before anything of the
//     transaction that brings the second is written; names that are not
//     their own are recorded in walship_names (docs/REPLICA.md, Names).
//   - Inserts and snapshot reads are upserts, and updates converge when
//     the row is missing, so a replica built from an overlapping snapshot
//     converges.
//
// Dump reads the canonical content of a Postgres source or of either kind
// of replica, so tests compare source and replica table by table; Snapshot
// copies a live SQLite replica consistently.
//
// Use:
//
//	app, err := replica.Open(ctx, "sqlite:///var/lib/walship/replica.db", replica.Options{})
//	from, err := app.Position(ctx) // resume the log after this commit LSN
//	err = app.Apply(ctx, txns)    // []change.Committed, in log order
//
// The package example applies two transactions to a SQLite replica,
// applies them again to show redelivery skipped, and reads the position
// (ReadState) and the rows (Dump) back.
package replica
