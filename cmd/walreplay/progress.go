package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/walship/walship/pitr"
)

// progressBar draws one line on a terminal stderr, at most ten times a
// second; on anything else it draws nothing.
type progressBar struct {
	w     io.Writer
	on    bool
	last  time.Time
	drawn bool
}

func newProgressBar(w io.Writer) *progressBar {
	return &progressBar{w: w, on: isTerminal(w)}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func (b *progressBar) update(p pitr.Progress) {
	if !b.on {
		return
	}
	final := p.Objects == p.TotalObjects
	if !final && time.Since(b.last) < 100*time.Millisecond {
		return
	}
	b.last = time.Now()
	frac := 1.0
	if p.TotalBytes > 0 {
		frac = float64(p.Bytes) / float64(p.TotalBytes)
	} else if p.TotalObjects > 0 {
		frac = float64(p.Objects) / float64(p.TotalObjects)
	}
	frac = min(max(frac, 0), 1)
	const width = 30
	n := int(frac * width)
	line := fmt.Sprintf("\r%-7s [%s%s] %3.0f%% %d/%d objects %s/%s", p.Phase, strings.Repeat("#", n), strings.Repeat(".", width-n),
		100*frac, p.Objects, p.TotalObjects, mib(p.Bytes), mib(p.TotalBytes))
	if p.Phase == "apply" {
		line += fmt.Sprintf(" %d txns, LSN %d", p.Txns, p.LSN)
	}
	fmt.Fprint(b.w, line+"\x1b[K")
	b.drawn = true
}

func (b *progressBar) done() {
	if b.drawn {
		fmt.Fprintln(b.w)
		b.drawn = false
	}
}

func mib(n int64) string { return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20)) }
