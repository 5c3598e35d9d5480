//go:build race

package change

// raceEnabled: the race detector changes allocation counts.
const raceEnabled = true
