//go:build race

package exemplar

const raceEnabled = true
