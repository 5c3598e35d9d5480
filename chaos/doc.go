// Package chaos holds the fault-injection suite of walship's high-availability
// group (docs/RELIABILITY.md): it proves that no acknowledged transaction is
// lost or duplicated while members are killed, paused, cut off from
// PostgreSQL, Kafka and the archive, while a standby's disk fills up, and
// while PostgreSQL, the archive and Kafka fail under them.
// The package has no non-test code; this file only documents how to run it.
//
// The suite runs real processes and servers, all on loopback: a PostgreSQL 15
// cluster (internal/pgtest), an in-process Kafka-protocol cluster of three
// brokers (kfake), MinIO (internal/miniotest) behind one fault-injecting,
// PUT-logging HTTP proxy per member, an in-process Toxiproxy server with,
// for every member, one proxy in front of PostgreSQL, one in front of its
// archive proxy and one per broker, three `walship run` members (each with
// its own wal.dir on a tmpfs of its own and ha.name, wal.sync: shipped,
// ha.lease: 2s) under a supervisor that restarts a member whenever it exits,
// as systemd would, and one `walship consume` into a SQLite replica.
//
// The brokers advertise names; each member runs in a mount namespace of its
// own whose /etc/hosts resolves them to its own proxies, so the nemesis can
// cut, delay or slice the leader's Kafka connections only. Namespaces and
// tmpfs need root with CAP_SYS_ADMIN: without, the run says so (a WARNING in
// the log and the summary), leaves disk-full out and shares one proxy per
// broker between all members.
//
// TestChaosArchiveGroup runs the same group without Kafka (no kafka section:
// the lease, the heartbeats and the history are objects in the archive,
// docs/HA.md "Without Kafka"): no brokers and no replica, the Kafka faults
// left out, and the checks made on the archive instead of the topic: every
// acknowledged transaction once and in order in it, the bank conserved at
// point-in-time restores, every member's log identical to it, one writer of
// the lineage at a time, and no zombie write after its term as far as the
// PUT log can tell.
//
// Faults (docs/RELIABILITY.md): host-loss, zombie, pg-cut, pg-restart,
// pg-latency, pg-slice, s3-503, s3-latency, s3-cut, s3-slice, kafka-outage,
// kafka-cut, kafka-latency, kafka-slice, disk-full (a follower's wal.dir
// tmpfs full until the follower runs out of space, at most 90 s).
//
// The short run, a few faults (at least one host loss, one zombie and one
// PostgreSQL connection cut) in a Kafka group and then in an archive-only
// one, takes a few minutes on a 2-core machine:
//
//	go test ./chaos
//
// The long run prints the figures docs/RELIABILITY.md tabulates:
//
//	go test ./chaos -run TestChaos -chaos.faults=100 -timeout 3h
//
// The archive-only group's long run:
//
//	go test ./chaos -run 'TestChaos$' -chaos.group=archive -chaos.faults=40 -chaos.kinds=host-loss,zombie -timeout 1h
//
// Flags (after the package): -chaos.group G (kafka, the default, or archive:
// the group TestChaos runs; with archive TestChaosArchiveGroup skips, as
// TestChaos is that run), -chaos.faults N (faults to inject), -chaos.seed S
// (repeat a run; the seed is always printed; WALSHIP_CHAOS_SEED works too),
// -chaos.members N (1 runs a single daemon without an ha section and only the
// faults that a single daemon must survive without loss), -chaos.kinds K,L
// (after the mandatory faults, these kinds in turn), -chaos.keep (keep
// the run's directory, with every member's log, for a post-mortem).
package chaos
