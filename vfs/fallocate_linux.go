//go:build linux

package vfs

import (
	"os"
	"syscall"
)

func fallocate(f *os.File, size int64) error {
	return syscall.Fallocate(int(f.Fd()), 0, 0, size)
}

func flock(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
}

// startWriteback starts writing the dirty pages of [off, off+n) to the
// disk without waiting for them and without a cache flush.
func startWriteback(f *os.File, off, n int64) error {
	return syscall.SyncFileRange(int(f.Fd()), off, n, 2 /* SYNC_FILE_RANGE_WRITE */)
}
