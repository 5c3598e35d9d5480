package main

import (
	"bufio"
	"bytes"
	"math"
	"os"
	"os/exec"
	"runtime/debug"
	"strconv"
	"syscall"
)

// resetPeakRSS returns freed heap to the system and resets the process's
// resident-set high-water mark (VmHWM; writing 5 to clear_refs, Linux 4.0
// and later), so that peakRSSMiB afterwards is the peak of one measurement
// rather than of the whole run.
func resetPeakRSS() {
	debug.FreeOSMemory()
	// A kernel without it keeps the lifetime peak: the figure is then an
	// upper bound.
	os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
}

// peakRSSMiB is the process's resident-set high-water mark in MiB since
// resetPeakRSS, or NaN where /proc does not say.
func peakRSSMiB() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return math.NaN()
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := bytes.Fields(sc.Bytes())
		if len(f) >= 2 && string(f[0]) == "VmHWM:" {
			kib, err := strconv.ParseFloat(string(f[1]), 64)
			if err != nil {
				return math.NaN()
			}
			return kib / 1024
		}
	}
	return math.NaN()
}

// cpuSeconds is the user plus system CPU time this process has used.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return math.NaN()
	}
	return tv(ru.Utime) + tv(ru.Stime)
}

func tv(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }

// childUsage is a finished child's CPU seconds (user plus system) and peak
// resident set in MiB.
func childUsage(cmd *exec.Cmd) (cpu, peakMiB float64) {
	ps := cmd.ProcessState
	if ps == nil {
		return math.NaN(), math.NaN()
	}
	cpu = (ps.UserTime() + ps.SystemTime()).Seconds()
	peakMiB = math.NaN()
	if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
		peakMiB = float64(ru.Maxrss) / 1024 // KiB on Linux
	}
	return cpu, peakMiB
}
