// Package fsutil holds the few operating-system file helpers that both the
// log's write side (through vfs) and the read side (archive, pitr, replica,
// which must not link vfs) need, so that each has one implementation. It
// imports only the standard library.
package fsutil

import "os"

// SyncDir fsyncs the directory dir, making the creates, renames and removes
// of entries in it durable. The error of closing the directory is reported
// when the fsync succeeded, since a failed close may hide a failed write.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
