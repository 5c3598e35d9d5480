// Package archive ships walship's log to an archive — a directory
// (file:///abs/dir) or S3 (s3://bucket/prefix) — and reads it back for
// point-in-time recovery. The object layout is specified byte by byte in
// docs/ARCHIVE.md.
package archive
