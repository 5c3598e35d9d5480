//go:build !race

package change

const raceEnabled = false
