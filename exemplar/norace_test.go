//go:build !race

package exemplar

const raceEnabled = false
