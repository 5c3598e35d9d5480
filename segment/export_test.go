package segment

import (
	"testing"
	"time"
)

// SetLiveScanSettle sets how long a read-only scan waits for damage to
// stay put before it reports it (see liveScanSettle), until tb ends. For
// tests without a live writer only.
func SetLiveScanSettle(tb testing.TB, d time.Duration) {
	old := liveScanSettle.Swap(int64(d))
	tb.Cleanup(func() { liveScanSettle.Store(old) })
}
