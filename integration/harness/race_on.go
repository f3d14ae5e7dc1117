//go:build race

package harness

// raceEnabled: the tests run with -race, so the sorad binary is built with
// it too and a data race in a node process fails its run.
const raceEnabled = true
