// Package e2e holds the end-to-end tests: real programs (curl, wget, python3,
// git, nc, a static Go client, a raw-syscall C client) run under this
// torsocks and under the C torsocks against a private Tor network
// (internal/testnet) inside a private network namespace (internal/netnstest),
// with every destination recording where its connections came from. It has
// no non-test code; run it with
//
//	go test ./internal/e2e            # skipped with -short
//	go test ./internal/e2e -update    # also rewrites docs/compatibility.md
package e2e
