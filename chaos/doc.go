// Package chaos holds the fault-injection suite of walship's high-availability
// group (docs/RELIABILITY.md): it proves that no acknowledged transaction is
// lost or duplicated while members are killed, paused, cut off from
// PostgreSQL, and while PostgreSQL, the archive and Kafka fail under them.
// The package has no non-test code; this file only documents how to run it.
//
// The suite runs real processes and servers, all on loopback: a PostgreSQL 15
// cluster (internal/pgtest), an in-process Kafka-protocol broker behind an
// outage proxy (kafkasink/kafkatest), MinIO (internal/miniotest) behind one
// fault-injecting, PUT-logging proxy per member, an in-process Toxiproxy
// server with one proxy per member in front of PostgreSQL, three `walship
// run` members (each with its own wal.dir and ha.name, wal.sync: shipped,
// ha.lease: 2s) under a supervisor that restarts a member whenever it exits,
// as systemd would, and one `walship consume` into a SQLite replica.
//
// The short run, a few faults (at least one host loss, one zombie and one
// PostgreSQL connection cut), takes a few minutes on a 2-core machine:
//
//	go test ./chaos
//
// The long run prints the figures docs/RELIABILITY.md tabulates:
//
//	go test ./chaos -run TestChaos -chaos.faults=100 -timeout 3h
//
// Flags (after the package): -chaos.faults N (faults to inject), -chaos.seed S
// (repeat a run; the seed is always printed; WALSHIP_CHAOS_SEED works too),
// -chaos.members N (1 runs a single daemon without an ha section and only the
// faults that a single daemon must survive without loss), -chaos.keep (keep
// the run's directory, with every member's log, for a post-mortem).
package chaos
