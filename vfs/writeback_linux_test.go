package vfs

import (
	"errors"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

// TestStartWriteback: Default's files start the writeback of a range they
// wrote, and a failure names the call and the file.
func TestStartWriteback(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data")
	f, err := Default.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	wb, ok := f.(Writebacker)
	if !ok {
		t.Fatal("Default's file does not implement Writebacker")
	}
	if _, err := f.WriteAt(make([]byte, 256<<10), 0); err != nil {
		t.Fatal(err)
	}
	if err := wb.StartWriteback(0, 256<<10); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	err = wb.StartWriteback(0, 4096)
	var pe *fs.PathError
	if !errors.As(err, &pe) || pe.Op != "sync_file_range" || !strings.HasSuffix(pe.Path, "data") {
		t.Fatalf("StartWriteback on a closed file: %v, want a sync_file_range error naming the file", err)
	}
}
