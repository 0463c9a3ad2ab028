package integration

import (
	"bufio"
	"fmt"
	"io"
	"maps"
	"net"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gotorsocks/torsocks/internal/netnstest"
	"github.com/gotorsocks/torsocks/internal/socks5test"
)

// Every way out of a connect-only seccomp filter that ../shared/facts/seccomp-unotify.md lists,
// each tried by a small C program (testdata/c/bp_*.c) under torsocks against the canaries: the
// program sees the expected refusal or a connection carried by the SOCKS server, and no canary sees
// a connection from anywhere else.

// dest is one destination test host, by IPv4 and by IPv6 address.
type dest struct{ name, ip string }

var dests = []dest{{"v4", "203.0.113.10"}, {"v6", "2001:db8::10"}}

// expectOK fails t unless the program exited 0, printed at least one RESULT line and no line
// flagged UNEXPECTED.
func expectOK(t *testing.T, what string, r result) {
	t.Helper()
	if r.code != 0 || !strings.Contains(r.stdout, "RESULT ") || strings.Contains(r.stdout, "UNEXPECTED") {
		t.Fatalf("%s: exit %d\nstdout:\n%s\nstderr:\n%s", what, r.code, r.stdout, r.stderr)
	}
	t.Logf("%s:\n%s", what, strings.TrimSpace(r.stdout))
}

// forDests runs f as a subtest per destination, then checks the canaries.
func forDests(t *testing.T, f func(t *testing.T, d dest)) {
	t.Helper()
	env(t)
	for _, d := range dests {
		t.Run(d.name, func(t *testing.T) {
			f(t, d)
			noLeaks(t)
		})
	}
	noLeaks(t)
}

// canaryDelta runs f and returns how many connections the canary of d accepted meanwhile.
func canaryDelta(t *testing.T, d dest, f func()) int {
	t.Helper()
	c := canary4
	if strings.Contains(d.ip, ":") {
		c = canary6
	}
	before := c.Accepted()
	f()
	// The canary may record a connection a moment after the client is done with it.
	settle(t, c)
	return c.Accepted() - before
}

// Raw syscall(2) instead of libc's connect: an LD_PRELOAD torsocks never sees it; seccomp does.
func TestBypassRawSyscall(t *testing.T) {
	bin := buildCIn(t, "bp_rawsyscall")
	forDests(t, func(t *testing.T, d dest) {
		var r result
		n := canaryDelta(t, d, func() { r = torsocks(t, nil, bin, d.ip, "80") })
		expectOK(t, "bp_rawsyscall", r)
		if n < 1 {
			t.Errorf("the canary saw no connection: the page did not come through the SOCKS server")
		}
	})
}

// int $0x80 from a 64-bit program: the i386 connect (362) and socketcall (102) numbers, arriving
// with AUDIT_ARCH_I386.
func TestBypassInt80(t *testing.T) {
	bin := buildCIn(t, "bp_int80", "-no-pie", "-static")
	forDests(t, func(t *testing.T, d dest) {
		r := torsocks(t, nil, bin, d.ip, "80")
		if r.code == 3 {
			netnstest.Skip(t, "bp_int80: %s", r.stdout)
		}
		expectOK(t, "bp_int80", r)
	})
}

// x32 system call numbers (bit 0x40000000) arrive labelled x86_64.
func TestBypassX32(t *testing.T) {
	bin := buildCIn(t, "bp_x32")
	forDests(t, func(t *testing.T, d dest) {
		expectOK(t, "bp_x32", torsocks(t, nil, bin, d.ip, "80"))
	})
}

// io_uring's IORING_OP_CONNECT connects without a connect() system call: no ring at all.
func TestBypassIOUring(t *testing.T) {
	env(t)
	bin := buildCIn(t, "bp_iouring")
	native := runCmd(t, nil, bin, "203.0.113.10", "80", "native")
	t.Logf("without torsocks: %s", strings.TrimSpace(native.stdout))
	expectOK(t, "bp_iouring", torsocks(t, nil, bin, "203.0.113.10", "80"))
	noLeaks(t)
}

// TCP Fast Open: sendto/sendmsg/sendmmsg with MSG_FASTOPEN connect without connect().
func TestBypassTFO(t *testing.T) {
	bin := buildCIn(t, "bp_tfo")
	forDests(t, func(t *testing.T, d dest) {
		for _, mode := range []string{"sendto", "sendmsg", "sendmmsg", "connected", "noaddr", "plain", "connectopt"} {
			t.Run(mode, func(t *testing.T) {
				expectOK(t, "bp_tfo "+mode, torsocks(t, nil, bin, d.ip, "80", mode))
				noLeaks(t)
			})
		}
	})
}

// TestTFOKernelParity runs the refusal cases of bp_tfo natively against a local listener and under
// torsocks against a canary: the errno of every refused call must be the one the kernel gives.
func TestTFOKernelParity(t *testing.T) {
	env(t)
	bin := buildCIn(t, "bp_tfo")
	ln := startHTTPStub(t, "tcp4", "127.0.0.1:0")
	ln6 := startHTTPStub(t, "tcp6", "[::1]:0")
	for _, d := range []struct{ native, host, port string }{
		{"127.0.0.1", "203.0.113.10", fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)},
		{"::1", "2001:db8::10", fmt.Sprint(ln6.Addr().(*net.TCPAddr).Port)},
	} {
		for _, mode := range []string{"connected", "noaddr", "plain"} {
			nat := runCmd(t, nil, bin, d.native, d.port, mode)
			ts := torsocks(t, nil, bin, d.host, "80", mode)
			want, got := resultErrnos(nat.stdout), resultErrnos(ts.stdout)
			if len(want) == 0 {
				t.Fatalf("native %s %s: no results\n%s", d.native, mode, nat.stdout)
			}
			for _, label := range slices.Sorted(maps.Keys(want)) {
				if w, g := want[label], got[label]; g != w {
					t.Errorf("%s %s: %s: kernel says %q, under torsocks %q", d.host, mode, label, w, g)
				}
			}
		}
	}
	noLeaks(t)
}

var resultLine = regexp.MustCompile(`^RESULT (\S+)=(-?\d+)(?: errno=(\S+))?`)

// resultErrnos maps each RESULT label to "return errno".
func resultErrnos(out string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if s := resultLine.FindStringSubmatch(line); s != nil {
			m[s[1]] = s[2] + " " + s[3]
		}
	}
	return m
}

// startHTTPStub listens on addr (loopback only: never a canary address) and answers every request
// head with a page containing "canary", like the canaries do.
func startHTTPStub(t *testing.T, network, addr string) *socks5test.Sink {
	t.Helper()
	s, err := socks5test.Listen(network, addr, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			if line == "\r\n" {
				break
			}
		}
		io.WriteString(c, "HTTP/1.0 200 OK\r\n\r\ncanary stub\n")
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// UDP sockets live in the sandbox (their datagrams never arrive); ICMP, raw, packet, SCTP, MPTCP,
// DCCP sockets and other families: refused at creation.
func TestBypassSockets(t *testing.T) {
	bin := buildCIn(t, "bp_udp")
	forDests(t, func(t *testing.T, d dest) {
		u, err := socks5test.StartUDPCanary(net.JoinHostPort(d.ip, "9999"))
		if err != nil {
			t.Fatal(err)
		}
		defer u.Close()
		r := torsocks(t, nil, bin, d.ip, "80")
		expectOK(t, "bp_udp", r)
		if !strings.Contains(r.stderr, "UDP to ") || !strings.Contains(r.stderr, "refused") {
			t.Errorf("no stderr line saying the datagram was refused:\n%s", r.stderr)
		}
		settle(t, u)
		if n := u.Packets(); n != 0 {
			t.Fatalf("LEAK: %d datagrams reached %v", n, u.Addr())
		}
	})
}

// A thread flips the address family between AF_UNIX and AF_INET(6) during connects.
func TestBypassFlip(t *testing.T) {
	bin := buildCIn(t, "bp_flip")
	forDests(t, func(t *testing.T, d dest) {
		r := torsocks(t, nil, bin, d.ip, "80", "300")
		expectOK(t, "bp_flip", r)
		if !regexp.MustCompile(`proxied=[1-9]`).MatchString(r.stdout) {
			t.Errorf("no connect was proxied: the race was not exercised\n%s", r.stdout)
		}
	})
}

// A dynamic parent execs a static child: nothing for LD_PRELOAD to hook, the filter is inherited.
func TestBypassExecStatic(t *testing.T) {
	parent := buildCIn(t, "bp_execstatic")
	child := buildCIn(t, "bp_execstatic", "-static")
	forDests(t, func(t *testing.T, d dest) {
		r := torsocks(t, nil, parent, "exec", child, "connect", d.ip, "80")
		expectOK(t, "bp_execstatic", r)
		if !strings.Contains(r.stdout, "child connect=0 body=canary") {
			t.Errorf("the static child did not get the page:\n%s", r.stdout)
		}
	})
}

// A 32-bit static program (i386 ABI for every call), run directly and exec'd by a 64-bit parent.
func TestBypassM32(t *testing.T) {
	parent := buildCIn(t, "bp_execstatic")
	child := buildCIn(t, "bp_m32", "-m32", "-static")
	forDests(t, func(t *testing.T, d dest) {
		expectOK(t, "bp_m32", torsocks(t, nil, child, d.ip, "80"))
		r := torsocks(t, nil, parent, "exec", child, d.ip, "80")
		expectOK(t, "bp_execstatic exec bp_m32", r)
		if !strings.Contains(r.stdout, "m32-connect=0 body=canary") {
			t.Errorf("the 32-bit child did not get the page:\n%s", r.stdout)
		}
	})
}

// A second connect on a proxied socket, and destinations that are never carried.
func TestBypassRefusals(t *testing.T) {
	bin := buildCIn(t, "bp_refuse")
	forDests(t, func(t *testing.T, d dest) {
		r := torsocks(t, nil, bin, d.ip, "80")
		expectOK(t, "bp_refuse", r)
		for _, want := range []string{
			"connection to 127.0.0.1:80 refused: local addresses",
			"connection to [::1]:80 refused: local addresses",
			"connection to 0.0.0.0:80 refused",
			"connection to [::]:80 refused",
		} {
			if !strings.Contains(r.stderr, want) {
				t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
			}
		}
	})
}

// buildCIn builds a C program once the test environment exists (buildC needs its directory).
func buildCIn(t *testing.T, name string, flags ...string) string {
	t.Helper()
	env(t)
	return buildC(t, name, flags...)
}

// A thread re-points the descriptor number another thread is connecting on (dup2) between a unix
// socket and a fresh TCP socket, or flips the descriptor in the i386 socketcall argument array:
// whatever the supervisor inspected, the call must not connect the TCP socket directly.
//
// Before the supervisor carried every such call out on its own copy of the socket, this leaked
// dozens of direct connections a second in every mode.
func TestBypassFDSwap(t *testing.T) {
	bin := buildCIn(t, "bp_fdswap", "-no-pie", "-static")
	forDests(t, func(t *testing.T, d dest) {
		for _, mode := range []string{"connect", "tfo", "socketcall", "scargs", "listen"} {
			t.Run(mode, func(t *testing.T) {
				r := torsocks(t, []string{"TORSOCKS_LOG_LEVEL=1"}, bin, d.ip, "80", mode, "1500")
				if r.code == 3 {
					netnstest.Skip(t, "bp_fdswap: %s", r.stdout)
				}
				expectOK(t, "bp_fdswap "+mode, r)
				noLeaks(t) // it settles the canaries: a direct connection is counted, however late
			})
		}
	})
}
