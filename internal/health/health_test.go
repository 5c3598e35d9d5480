package health

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestTracker: Since moves only when the state changes, the last error
// stays after recovery and is redacted.
func TestTracker(t *testing.T) {
	now := time.Unix(1000, 0)
	tr := &Tracker{Now: func() time.Time { return now }}
	if st := tr.State(); st.Known {
		t.Fatalf("new tracker is known: %+v", st)
	}
	tr.OK()
	now = now.Add(time.Second)
	tr.OK()
	if st := tr.State(); !st.Known || !st.Up || !st.Since.Equal(time.Unix(1000, 0)) {
		t.Fatalf("after OK: %+v", st)
	}
	now = now.Add(time.Second)
	tr.Fail(errors.New(`connect postgres://u:hunter2@db/x: refused`))
	now = now.Add(time.Second)
	tr.Fail(errors.New("refused again"))
	st := tr.State()
	if st.Up || !st.Since.Equal(time.Unix(1002, 0)) || st.LastError != "refused again" || !st.LastErrorAt.Equal(time.Unix(1003, 0)) {
		t.Fatalf("after Fail: %+v", st)
	}
	tr.Fail(errors.New(`connect postgres://u:hunter2@db/x: refused`))
	if strings.Contains(tr.State().LastError, "hunter2") {
		t.Fatalf("password kept: %q", tr.State().LastError)
	}
	now = now.Add(time.Second)
	tr.Fail(nil)
	if st := tr.State(); !st.Up || !st.Since.Equal(time.Unix(1004, 0)) || st.LastError == "" {
		t.Fatalf("after recovery: %+v", st)
	}
}

// TestTrackerOneLine: an error spanning lines is kept on one line, its
// lines joined by "; ", so that line-per-dependency formats stay whole.
func TestTrackerOneLine(t *testing.T) {
	tr := &Tracker{}
	tr.Fail(errors.New("dial tcp 127.0.0.1:9: connect: connection refused\ncontext deadline exceeded\r\n\n  retry 3 \r"))
	if got, want := tr.State().LastError, "dial tcp 127.0.0.1:9: connect: connection refused; context deadline exceeded; retry 3"; got != want {
		t.Fatalf("LastError %q, want %q", got, want)
	}
}
