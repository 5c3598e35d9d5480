//go:build !linux

package main

import "os"

// fdatasync falls back to fsync where fdatasync is not available.
func fdatasync(f *os.File) error { return f.Sync() }

// fallocate falls back to extending the file (sparse on most filesystems).
func fallocate(f *os.File, size int64) error { return f.Truncate(size) }

func fsTypeName(string) string { return "" }

func syncAll() {}
