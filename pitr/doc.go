// Package pitr is walship's point-in-time recovery: it plans and executes
// the restore of a replica (SQLite or PostgreSQL) to a target — a commit
// time, a walship LSN, a source LSN, a source xid, a named restore point, or
// the latest archived state — from an archive (package archive), and keeps
// the archive's base snapshots (taken by archivesink.Snapshotter) and their
// retention (Prune).
// docs/PITR.md is the user's guide; cmd/walreplay is its command line.
//
// # Guarantees
//
//   - Exactness (docs/DESIGN.md §4.9). A restore to target T applies exactly
//     the transactions committed at or before T (before T with
//     Target.Exclusive), in log order, each whole, and nothing else — the
//     rule of PostgreSQL's recovery_target_*. Target documents each kind.
//   - Plan first. PlanRestore reads only the catalog (manifests; an xid
//     target also reads the segments whose xid bounds hold the xid). It
//     refuses, before anything is fetched or applied: a target after the
//     last archived commit or before the first restorable state
//     (ErrOutOfRange), an xid or name the archive lacks
//     (ErrTargetNotFound), a range of LSNs the restore may need that no
//     segment holds (*HoleError, ErrHole), an object the listing knows is
//     missing (ErrMissing).
//   - Verify before apply. Verify downloads the snapshot and every segment
//     of the plan, checks checksums, decoding and agreement with the
//     manifests, and keeps the verified bytes for the apply pass (each
//     object is downloaded once). A missing or corrupt object is an
//     *ObjectError naming its key, found before the destination is created
//     or changed (unless Options.StreamVerify).
//   - Transient is not missing. Only the backend's not-found means
//     missing; every other fetch error is retried with backoff
//     (Options.Retry, an archive.RetryPolicy: 2 minutes by default, a
//     bound the archive backend's own retries keep too) and, if it
//     outlasts the policy, fails the restore (ErrUnreadable) — never
//     taken for the end of the archive.
//   - Bounded, parallel, ordered. Segments are fetched and decoded by
//     Options.Parallel workers at most Options.Window objects ahead of the
//     applier, and applied strictly in LSN order, in batches that each
//     commit atomically with the replica's position (replica.Applier), so
//     an interrupted restore leaves a transaction-consistent prefix.
//   - Atomic SQLite restores. A SQLite restore is built beside the
//     destination and renamed into place only when complete.
//
// # Use
//
//	src := pitr.NewArchiveSource(arch)
//	plan, err := pitr.PlanRestore(ctx, src, pitr.Target{Kind: pitr.Time, Time: t}, pitr.PlanOptions{})
//	res, err := pitr.Restore(ctx, src, plan, "sqlite:///var/lib/r.db", pitr.RestoreOptions{})
//
// Follow and FollowURL keep a replica applying new archive objects (a
// standby). Execute, Verify and Verified.Apply run a plan against any
// Applier.
//
// The package example is the whole path in one place: it stores segment
// objects and a base snapshot in a directory archive, plans a restore to a
// commit time (the snapshot and the one segment after it), restores a
// SQLite replica and dumps what it holds.
package pitr
