//go:build !race

package slogx

const raceEnabled = false
