//go:build race

package httpsource

// raceEnabled: the race detector slows every append; heavy tests scale down.
const raceEnabled = true
