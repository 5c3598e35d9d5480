//go:build linux

package main

import (
	"os"
	"syscall"
)

// fdatasync flushes f's data and the metadata needed to read it back, as
// the log's vfs does on Linux.
func fdatasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			return err
		}
	}
}

// fallocate reserves size bytes for f (unwritten extents; the file size
// becomes size), as the log does for a new segment.
func fallocate(f *os.File, size int64) error {
	return syscall.Fallocate(int(f.Fd()), 0, 0, size)
}

// fsTypeName names the filesystem holding dir, for the report header.
func fsTypeName(dir string) string {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return ""
	}
	switch uint64(st.Type) {
	case 0xEF53:
		return "ext4"
	case 0x58465342:
		return "xfs"
	case 0x9123683E:
		return "btrfs"
	case 0x01021994:
		return "tmpfs: fsync costs nothing here, the figures say nothing about a disk"
	case 0x794C7630:
		return "overlayfs"
	case 0x2FC12FC1:
		return "zfs"
	}
	return ""
}

// syncAll asks the kernel to write back every dirty page (sync(2)).
func syncAll() { syscall.Sync() }
