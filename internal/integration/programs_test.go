package integration

import (
	"strings"
	"testing"
)

// Ordinary C programs whose sockets travel: across threads, fork, SCM_RIGHTS, dup, and through an
// epoll event loop (testdata/c/prog_*.c). Each must get its pages through the SOCKS server and see
// the real destination as its peer.

// 8 threads × 10 connects, an HTTP GET on each.
func TestProgThreads(t *testing.T) {
	bin := buildCIn(t, "prog_threads")
	forDests(t, func(t *testing.T, d dest) {
		var r result
		n := canaryDelta(t, d, func() { r = torsocks(t, nil, bin, d.ip, "80", "8", "10") })
		expectOK(t, "prog_threads", r)
		if !strings.Contains(r.stdout, "ok=80 bad=0") {
			t.Errorf("not every request succeeded:\n%s", r.stdout)
		}
		if n < 80 {
			t.Errorf("the canary saw %d connections, want 80", n)
		}
	})
}

// A socket inherited across fork, and a forked child connecting on its own.
func TestProgFork(t *testing.T) {
	bin := buildCIn(t, "prog_fork")
	forDests(t, func(t *testing.T, d dest) {
		expectOK(t, "prog_fork", torsocks(t, nil, bin, d.ip, "80"))
	})
}

// A proxied socket passed to another program over SCM_RIGHTS.
func TestProgSCM(t *testing.T) {
	bin := buildCIn(t, "prog_scm")
	forDests(t, func(t *testing.T, d dest) {
		r := torsocks(t, nil, bin, d.ip, "80")
		expectOK(t, "prog_scm", r)
		if !strings.Contains(r.stdout, "RESULT B ") {
			t.Errorf("the receiving process reported nothing:\n%s", r.stdout)
		}
	})
}

// dup/dup2 of a proxied socket, and reuse of its descriptor number by a new socket.
func TestProgDup(t *testing.T) {
	bin := buildCIn(t, "prog_dup")
	forDests(t, func(t *testing.T, d dest) {
		expectOK(t, "prog_dup", torsocks(t, nil, bin, d.ip, "80"))
	})
}

// A non-blocking socket registered with epoll before connect.
func TestProgEpoll(t *testing.T) {
	bin := buildCIn(t, "prog_epoll")
	forDests(t, func(t *testing.T, d dest) {
		expectOK(t, "prog_epoll", torsocks(t, nil, bin, d.ip, "80"))
	})
}
