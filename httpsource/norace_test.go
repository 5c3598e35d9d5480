//go:build !race

package httpsource

const raceEnabled = false
