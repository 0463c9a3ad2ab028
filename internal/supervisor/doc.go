// Package supervisor serves the seccomp notifications of the traced program: it receives each
// notified syscall, decides it on a copy of the program's socket (never on the address family the
// program passed), carries TCP connections through Tor's SocksPort on that copy, and answers the
// syscall. Anything it cannot read, understand or do is answered with an error: a notified syscall
// is never let run unless running it cannot reach the network (see letRun's callers).
//
// Files by stage of a call: supervisor_linux.go (Options, Serve, the worker loop),
// receiver_linux.go (the receiver role), side_linux.go (input the worker waiting at the listener
// serves too: the DNS responder's UDP sockets), call_linux.go (a call's lifecycle: the reply and
// callError a handler returns, answer, the only function that answers the kernel),
// handlers_linux.go (dispatch and the calls answered at once), connect_linux.go (a connect, top
// to bottom, in both modes: the program's sandbox socket joined to the supervisor's own Tor
// connection and relayed, or its host socket connected to Tor), sealed_linux.go (the sealed
// network and its inner endpoint), async_linux.go (non-blocking connects held in progress until
// Tor answers), sealed_listen_linux.go (listeners of the sandbox mirrored on the host),
// send_linux.go, recv_linux.go, copy_linux.go and creds_linux.go (calls carried out on the
// program's behalf), seam_linux.go (the Kernel and Tracee interfaces under all of it).
//
// Concurrency: leader/follower workers (at most Options.MaxInflight). The worker holding the
// receiver role receives one notification and serves it itself, SOCKS handshake included; it
// lends the role to the call and gets it back when the call is done, unless the call released it
// first (before blocking work, when its wait sees another notification pending, or by the
// watchdog after a millisecond). Shared state: the connection registry (its own lock, see
// internal/registry), the isolation credentials (isoMu), the sealed network's inner listeners
// (innerMu; each serialises its own connect-then-accept), the asynchronous connects' hold
// listeners and pending table (async.mu), and the policy and options, immutable
// after New. Sealed relays run in internal/relay's event loops, outside the workers.
package supervisor
