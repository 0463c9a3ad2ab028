//go:build race

package integration

// raceEnabled: the tests run under -race, so the torsocks binary they build is race-instrumented
// too, and data races in the supervisor fail the run (the race detector exits 66 when it reports).
const raceEnabled = true
