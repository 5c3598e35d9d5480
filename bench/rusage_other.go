//go:build !linux

package main

import (
	"math"
	"os/exec"
)

func resetPeakRSS()                           {}
func peakRSSMiB() float64                     { return math.NaN() }
func cpuSeconds() float64                     { return math.NaN() }
func childUsage(*exec.Cmd) (float64, float64) { return math.NaN(), math.NaN() }
