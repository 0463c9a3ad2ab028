//go:build race

package e2e

// raceEnabled: the suite runs under -race, so the torsocks binary it builds is race-instrumented
// too, and a data race in the supervisor fails the program's run (exit status 66).
const raceEnabled = true
