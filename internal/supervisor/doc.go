// Package supervisor serves the seccomp notifications of the traced program: it receives each
// notified syscall, decides it on a copy of the program's socket (never on the address family the
// program passed), carries TCP connections through Tor's SocksPort on that copy, and answers the
// syscall. Anything it cannot read, understand or do is answered with an error: a notified syscall
// is never let run unless running it cannot reach the network (see Continue's callers).
//
// Concurrency: one goroutine receives notifications (Serve). Cheap answers (refusals, getpeername,
// listen, unix-socket connects) are given inline there; SOCKS handshakes and other blocking work
// run in goroutines bounded by Options.MaxInflight. Shared state: the connection registry (its own
// lock, see internal/registry), the isolation credentials (isoMu), and the policy and options,
// which are immutable after New.
package supervisor
