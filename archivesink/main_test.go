package archivesink

import (
	"testing"

	"github.com/walship/walship/internal/archivetest"
)

func TestMain(m *testing.M) { archivetest.Main(m) }

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
