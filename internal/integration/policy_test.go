package integration

import (
	"bufio"
	"context"

	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gotorsocks/torsocks/internal/netnstest"
	"github.com/gotorsocks/torsocks/internal/socks5"
	"github.com/gotorsocks/torsocks/internal/socks5test"
)

// Policy tests: each row of the policy table (torsocks-reference.md, issue 3) run by a real program
// under torsocks in the private namespace, with the SOCKS test server and canaries watching.

// logLineRE is torsocks' log line: "<epoch> LEVEL torsocks[PID]: message", the epoch optional
// (TORSOCKS_LOG_TIME=0).
var logLineRE = regexp.MustCompile(`^(?:(\d+) )?(ERROR|WARNING|NOTICE|DEBUG) torsocks\[(\d+)\]: (.+)$`)

// logLine is one parsed torsocks log line.
type logLine struct {
	raw   string
	epoch int64 // 0: no time prefix
	level string
	pid   int
	msg   string
}

// parseLog returns the torsocks log lines of out and the lines that are not in torsocks' format.
func parseLog(out string) (lines []logLine, other []string) {
	for _, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		if l == "" {
			continue
		}
		m := logLineRE.FindStringSubmatch(l)
		if m == nil {
			other = append(other, l)
			continue
		}
		ll := logLine{raw: l, level: m[2], msg: m[4]}
		ll.epoch, _ = strconv.ParseInt(m[1], 10, 64)
		ll.pid, _ = strconv.Atoi(m[3])
		lines = append(lines, ll)
	}
	return lines, other
}

// levelLines returns the log lines of one level.
func levelLines(lines []logLine, level string) []logLine {
	var out []logLine
	for _, l := range lines {
		if l.level == level {
			out = append(out, l)
		}
	}
	return out
}

var probePIDRE = regexp.MustCompile(`(?m)^pid=(\d+) ppid=(\d+)$`)

// progPIDs returns the "pid=N ppid=M" a test program printed first (pol_probe and the Python
// scripts here): the program's own pid and its parent's (torsocks').
func progPIDs(t *testing.T, stdout string) (pid, ppid int) {
	t.Helper()
	m := probePIDRE.FindStringSubmatch(stdout)
	if m == nil {
		t.Fatalf("program printed no pid line: %q", stdout)
	}
	pid, _ = strconv.Atoi(m[1])
	ppid, _ = strconv.Atoi(m[2])
	return pid, ppid
}

// probe runs testdata/c/pol_probe.c under torsocks with extra environment and options.
func probe(t *testing.T, env, opts []string, args ...string) result {
	t.Helper()
	bin := buildC(t, "pol_probe")
	all := append(append(append([]string{}, opts...), bin), args...)
	r := torsocks(t, env, all...)
	if r.code != 0 {
		t.Fatalf("pol_probe %v: exit %d\nstdout: %s\nstderr: %s", args, r.code, r.stdout, r.stderr)
	}
	return r
}

// wantLines fails unless out has each of the lines, whole.
func wantLines(t *testing.T, r result, lines ...string) {
	t.Helper()
	have := strings.Split(r.stdout, "\n")
	var missing []string
	for _, w := range lines {
		if !slices.Contains(have, w) {
			missing = append(missing, w)
		}
	}
	if len(missing) > 0 {
		t.Errorf("missing lines %q\nstdout: %s\nstderr: %s", missing, r.stdout, r.stderr)
	}
}

// oneRefusal checks that stderr holds exactly one torsocks line, a WARNING in torsocks' format
// naming the program's pid (not torsocks'), whose message says refused and contains each of want.
func oneRefusal(t *testing.T, r result, want ...string) logLine {
	t.Helper()
	pid, ppid := progPIDs(t, r.stdout)
	lines, other := parseLog(r.stderr)
	if len(other) > 0 {
		t.Errorf("stderr lines not in torsocks' format: %q", other)
	}
	if len(lines) != 1 || lines[0].level != "WARNING" {
		t.Fatalf("want exactly one WARNING line, got stderr %q", r.stderr)
	}
	l := lines[0]
	if l.epoch == 0 || abs(time.Now().Unix()-l.epoch) > 300 {
		t.Errorf("epoch prefix %d is not the time: %q", l.epoch, l.raw)
	}
	if l.pid != pid || l.pid == ppid {
		t.Errorf("log line names pid %d; the program is %d (torsocks %d): %q", l.pid, pid, ppid, l.raw)
	}
	if !strings.Contains(l.msg, " refused: ") {
		t.Errorf("refusal line does not say what was refused and why (\"... refused: reason\"): %q", l.msg)
	}
	for _, w := range want {
		if !strings.Contains(l.msg, w) {
			t.Errorf("refusal line lacks %q: %q", w, l.msg)
		}
	}
	return l
}

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

// newRequests returns the requests a SOCKS server received since it had n.
func newRequests(s *socks5test.Server, n int) []socks5test.Request {
	reqs := s.Requests()
	if len(reqs) < n {
		return nil
	}
	return reqs[n:]
}

// wantConnectRequests checks that reqs are exactly CONNECTs to dests, with the IP as text (ATYP 3,
// as torsocks sends it, which keeps Tor's SafeSocks quiet).
func wantConnectRequests(t *testing.T, reqs []socks5test.Request, dests ...netip.AddrPort) {
	t.Helper()
	if len(reqs) != len(dests) {
		t.Fatalf("SOCKS server saw %d requests %+v, want %d (%v)", len(reqs), reqs, len(dests), dests)
	}
	for i, d := range dests {
		q := reqs[i]
		if q.Cmd != socks5.CmdConnect || q.ATYP != socks5.AtypDomain || q.Host != d.Addr().String() || q.Port != d.Port() {
			t.Errorf("request %d: cmd %#x atyp %d %s:%d; want CONNECT atyp 3 %s:%d", i, q.Cmd, q.ATYP, q.Host, q.Port, d.Addr(), d.Port())
		}
	}
}

// startCanary starts a canary on addr for this test only (no source is allowed: every
// connection counts, used where a direct connection is expected or must not happen).
func startCanary(t *testing.T, addr string) *socks5test.Canary {
	t.Helper()
	c, err := socks5test.StartCanary(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// confFile writes a torsocks.conf for this test and returns its path.
func confFile(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "torsocks.conf")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

var (
	dest4 = netip.AddrPortFrom(netnstest.DestV4, 80)
	dest6 = netip.AddrPortFrom(netnstest.DestV6, 80)
)

func TestPolicy(t *testing.T) {
	env(t)

	// TCP to a remote address: SOCKS5 CONNECT on the program's socket, the IP as text; the canary
	// sees the SOCKS server, the program sees a working connection to its destination.
	for _, d := range []netip.AddrPort{dest4, dest6} {
		t.Run("proxied/"+d.String(), func(t *testing.T) {
			n, acc := len(socks.Requests()), canaryFor(d).Accepted()
			r := probe(t, nil, nil, "connect", d.Addr().String(), "80")
			wantLines(t, r, "socket=0 errno=0", "connect=0 errno=0", "echo=ok")
			wantConnectRequests(t, newRequests(socks, n), d)
			if !canaryFor(d).WaitAccepted(acc+1, 5*time.Second) {
				t.Errorf("canary %v saw no connection", d)
			}
			if lines, _ := parseLog(r.stderr); len(lines) != 0 {
				t.Errorf("a proxied connect logs nothing at the default level: %q", r.stderr)
			}
			noLeaks(t)
		})
	}

	// Loopback: EPERM and one warning line in torsocks' format, naming the program; nothing
	// reaches a listener there, nothing goes to Tor.
	// The whole of 127/8 is loopback, and so is an IPv4-mapped loopback address on an IPv6 socket.
	for _, tc := range []struct{ host, listen string }{
		{"127.0.0.1", "127.0.0.1"}, {"::1", "::1"}, {"127.0.0.2", "127.0.0.2"}, {"::ffff:127.0.0.1", "127.0.0.1"},
	} {
		t.Run("loopback-refused/"+tc.host, func(t *testing.T) {
			c := startCanary(t, net.JoinHostPort(tc.listen, "0"))
			port := strconv.Itoa(int(c.AddrPort().Port()))
			n := len(socks.Requests())
			r := probe(t, nil, nil, "connect", tc.host, port)
			wantLines(t, r, "connect=-1 errno=EPERM")
			oneRefusal(t, r, c.AddrPort().String())
			if settle(t, c); c.Accepted() != 0 {
				t.Errorf("refused loopback connect reached %v", c.Addr())
			}
			if q := newRequests(socks, n); len(q) != 0 {
				t.Errorf("loopback destination sent to Tor: %+v", q)
			}
		})
	}

	// AllowOutboundLocalhost 1 (config file, or our TORSOCKS_ALLOW_OUTBOUND_LOCALHOST): TCP to
	// loopback goes direct and reaches the local listener, not through Tor.
	for _, tc := range []struct {
		name string
		env  func(t *testing.T) []string
	}{
		{"conf-file", func(t *testing.T) []string {
			return []string{"TORSOCKS_CONF_FILE=" + confFile(t, "AllowOutboundLocalhost 1\n")}
		}},
		{"env", func(*testing.T) []string { return []string{"TORSOCKS_ALLOW_OUTBOUND_LOCALHOST=1"} }},
	} {
		for _, host := range []string{"127.0.0.1", "::1"} {
			t.Run("loopback-allowed/"+tc.name+"/"+host, func(t *testing.T) {
				c := startCanary(t, net.JoinHostPort(host, "0"))
				port := strconv.Itoa(int(c.AddrPort().Port()))
				n := len(socks.Requests())
				r := probe(t, tc.env(t), nil, "connect", host, port)
				wantLines(t, r, "connect=0 errno=0", "echo=ok", "peer="+c.AddrPort().String()+" len="+sockLen(host))
				if !c.WaitAccepted(1, 5*time.Second) {
					t.Fatalf("direct loopback connect did not reach %v", c.Addr())
				}
				if src := c.Remotes()[0].Addr(); !src.IsLoopback() {
					t.Errorf("loopback canary saw source %v", src)
				}
				if q := newRequests(socks, n); len(q) != 0 {
					t.Errorf("allowed loopback destination sent to Tor: %+v", q)
				}
				if lines, _ := parseLog(r.stderr); len(levelLines(lines, "WARNING")) != 0 {
					t.Errorf("allowed connect logged a warning: %q", r.stderr)
				}
			})
		}
	}

	// 0.0.0.0 and :: are no destination: EPERM. (The kernel would take them for this host; a
	// dual-stack listener on [::] would see any connection that got through.)
	t.Run("unspecified", func(t *testing.T) {
		c := startCanary(t, "[::]:0")
		port := strconv.Itoa(int(c.AddrPort().Port()))
		n := len(socks.Requests())
		for _, host := range []string{"0.0.0.0", "::", "::ffff:0.0.0.0"} {
			r := probe(t, nil, nil, "connect", host, port)
			wantLines(t, r, "connect=-1 errno=EPERM")
			oneRefusal(t, r, net.JoinHostPort(strings.TrimPrefix(host, "::ffff:"), port))
		}
		if settle(t, c); c.Accepted() != 0 {
			t.Errorf("connect to the unspecified address reached %v", c.Remotes())
		}
		if q := newRequests(socks, n); len(q) != 0 {
			t.Errorf("unspecified destination sent to Tor: %+v", q)
		}
	})

	// UDP: Tor carries TCP only. A UDP socket is created in torsocks' sandbox network namespace,
	// where only DNS (port 53) is answered: socket() and connect() succeed (glibc connects UDP
	// sockets to sort getaddrinfo results), a send may succeed too, but the datagram goes nowhere,
	// and one warning line names the destination.
	t.Run("udp", func(t *testing.T) {
		for _, addr := range []netip.Addr{netnstest.DestV4, netnstest.DestV6} {
			dst := netip.AddrPortFrom(addr, 9999)
			u, err := socks5test.StartUDPCanary(dst.String())
			if err != nil {
				t.Fatal(err)
			}
			defer u.Close()
			r := probe(t, nil, nil, "udp", addr.String(), "9999")
			wantLines(t, r, "socket=0 errno=0", "connect=0 errno=0")
			for _, op := range []string{"sendto", "sendmsg", "send"} {
				if !regexp.MustCompile(`(?m)^` + op + `=(19 errno=0|-1 errno=E[A-Z]+)$`).MatchString(r.stdout) {
					t.Errorf("UDP %s to %v: %s", op, dst, r.stdout)
				}
			}
			wantUDPWarning(t, r, dst)
			if settle(t, u); u.Packets() != 0 {
				t.Errorf("LEAK: %d datagrams reached %v from %v", u.Packets(), u.Addr(), u.Sources())
			}
		}
		noLeaks(t)
	})

	// AllowOutboundLocalhost 2: UDP to loopback reaches this machine's services (relayed out of the
	// sandbox, whichever send call carries it); UDP anywhere else stays in the sandbox. With 1, UDP
	// to loopback is dropped in the sandbox like any other.
	t.Run("udp-loopback", func(t *testing.T) {
		remote, err := socks5test.StartUDPCanary("203.0.113.10:9998")
		if err != nil {
			t.Fatal(err)
		}
		defer remote.Close()
		for _, host := range []string{"127.0.0.1", "::1"} {
			u, err := socks5test.StartUDPCanary(net.JoinHostPort(host, "0"))
			if err != nil {
				t.Fatal(err)
			}
			defer u.Close()
			port := strconv.Itoa(u.Addr().(*net.UDPAddr).Port)
			dst := netip.AddrPortFrom(netip.MustParseAddr(host), uint16(u.Addr().(*net.UDPAddr).Port))

			conf1 := []string{"TORSOCKS_CONF_FILE=" + confFile(t, "AllowOutboundLocalhost 1\n")}
			r := probe(t, conf1, nil, "udp", host, port)
			wantLines(t, r, "socket=0 errno=0", "connect=0 errno=0")
			wantUDPWarning(t, r, dst)
			if settle(t, u); u.Packets() != 0 {
				t.Errorf("AllowOutboundLocalhost 1: %d datagrams reached %v from %v", u.Packets(), u.Addr(), u.Sources())
			}

			conf2 := []string{"TORSOCKS_CONF_FILE=" + confFile(t, "AllowOutboundLocalhost 2\n")}
			r = probe(t, conf2, nil, "udp", host, port)
			wantLines(t, r, "socket=0 errno=0", "sendto=19 errno=0", "sendmsg=19 errno=0", "connect=0 errno=0", "send=19 errno=0")
			if settle(t, u); u.Packets() != 3 {
				t.Errorf("AllowOutboundLocalhost 2: %d of 3 datagrams reached %v\n%s", u.Packets(), u.Addr(), r.stderr)
			}
			for _, src := range u.Sources() {
				if !src.Addr().IsLoopback() {
					t.Errorf("AllowOutboundLocalhost 2: datagram to %v from %v", u.Addr(), src)
				}
			}
			if lines, _ := parseLog(r.stderr); len(levelLines(lines, "WARNING")) != 0 {
				t.Errorf("AllowOutboundLocalhost 2: UDP to loopback logged:\n%s", r.stderr)
			}
			r = probe(t, conf2, nil, "udp", "203.0.113.10", "9998")
			wantLines(t, r, "socket=0 errno=0", "connect=0 errno=0")
			wantUDPWarning(t, r, netip.MustParseAddrPort("203.0.113.10:9998"))
		}
		settle(t, remote)
		if p := remote.Packets(); p != 0 {
			t.Errorf("LEAK: %d datagrams reached %v", p, remote.Addr())
		}
		noLeaks(t)
	})

	// sendto/sendmsg with MSG_FASTOPEN is a connect in disguise: proxied, then a plain send (C
	// torsocks lets sendmsg's go direct).
	t.Run("fastopen", func(t *testing.T) {
		for _, op := range []string{"fastopen", "fastopen-msg"} {
			for _, d := range []netip.AddrPort{dest4, dest6} {
				n := len(socks.Requests())
				r := probe(t, nil, nil, op, d.Addr().String(), "80")
				wantLines(t, r, "send=18 errno=0", "peer="+d.String()+" len="+sockLen(d.Addr().String()), "page=canary")
				wantConnectRequests(t, newRequests(socks, n), d)
			}
		}
		noLeaks(t)
	})

	// A second connect on a proxied socket: EISCONN, as on any connected socket.
	t.Run("second-connect-EISCONN", func(t *testing.T) {
		for _, d := range []netip.AddrPort{dest4, dest6} {
			n := len(socks.Requests())
			r := probe(t, nil, nil, "connect", d.Addr().String(), "80")
			wantLines(t, r, "connect=0 errno=0", "connect2=-1 errno=EISCONN", "echo=ok")
			wantConnectRequests(t, newRequests(socks, n), d)
		}
		noLeaks(t)
	})

	// getpeername on a proxied socket: the destination the program asked for, with the length of
	// its family's sockaddr (the kernel would answer Tor's address).
	t.Run("getpeername", func(t *testing.T) {
		wantLines(t, probe(t, nil, nil, "connect", "203.0.113.10", "80"), "peer=203.0.113.10:80 len=16")
		wantLines(t, probe(t, nil, nil, "connect", "2001:db8::10", "80"), "peer=[2001:db8::10]:80 len=28")
		// Python's view of it (getpeername through the libc wrapper, IPv4 on an IPv6 socket too).
		r := torsocks(t, nil, "python3", "-c", `
import socket
for fam, host, want in ((socket.AF_INET, "203.0.113.10", "203.0.113.10"), (socket.AF_INET6, "2001:db8::10", "2001:db8::10"), (socket.AF_INET6, "::ffff:203.0.113.10", "::ffff:203.0.113.10")):
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(20)
    s.connect((host, 80))
    p = s.getpeername()
    assert p[0] == want and p[1] == 80, (host, p)
    print("peer", p[0], p[1])
`)
		if r.code != 0 || strings.Count(r.stdout, "peer ") != 3 {
			t.Fatalf("python getpeername: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
		}
		noLeaks(t)
	})

	// listen on a non-loopback address: EPERM unless AllowInbound; loopback, [::1] included
	// (torsocks wrongly refuses [::1]), is allowed.
	t.Run("listen", func(t *testing.T) {
		for _, host := range []string{"0.0.0.0", "::", "203.0.113.10"} {
			r := probe(t, nil, nil, "listen", host)
			wantLines(t, r, "bind=0 errno=0", "listen=-1 errno=EPERM")
			oneRefusal(t, r, net.JoinHostPort(host, ""))
		}
		for _, host := range []string{"0.0.0.0", "::"} {
			wantLines(t, probe(t, []string{"TORSOCKS_ALLOW_INBOUND=1"}, nil, "listen", host), "listen=0 errno=0")
			conf := confFile(t, "AllowInbound 1\n")
			wantLines(t, probe(t, []string{"TORSOCKS_CONF_FILE=" + conf}, nil, "listen", host), "listen=0 errno=0")
		}
		for _, host := range []string{"127.0.0.1", "::1"} {
			r := probe(t, nil, nil, "listen", host)
			wantLines(t, r, "listen=0 errno=0")
			if r.stderr != "" {
				t.Errorf("listen on %s logged: %q", host, r.stderr)
			}
		}
	})

	// Listening on loopback really serves: a client outside torsocks connects and is accepted.
	t.Run("listen-loopback-accepts", func(t *testing.T) {
		script := `
import socket, sys
for fam, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.bind((host, 0))
    s.listen(1)
    s.settimeout(20)
    print("port", s.getsockname()[1], flush=True)
    c, peer = s.accept()
    c.sendall(b"hello from " + host.encode() + b"\n")
    c.close()
    s.close()
print("done", flush=True)
`
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, torsocksBin, "python3", "-c", script)
		cmd.WaitDelay = 5 * time.Second
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Wait()
		defer cancel()
		sc := bufio.NewScanner(out)
		for _, host := range []string{"127.0.0.1", "::1"} {
			if !sc.Scan() || !strings.HasPrefix(sc.Text(), "port ") {
				t.Fatalf("no port line for %s: %q %s", host, sc.Text(), stderr.String())
			}
			c, err := net.DialTimeout("tcp", net.JoinHostPort(host, strings.TrimPrefix(sc.Text(), "port ")), 5*time.Second)
			if err != nil {
				t.Fatalf("dial the program's listener on %s: %v", host, err)
			}
			c.SetDeadline(time.Now().Add(20 * time.Second))
			b, _ := io.ReadAll(c)
			c.Close()
			if string(b) != "hello from "+host+"\n" {
				t.Errorf("listener on %s answered %q (stderr %s)", host, b, stderr.String())
			}
		}
		if !sc.Scan() || sc.Text() != "done" {
			t.Errorf("program did not finish: %q %s", sc.Text(), stderr.String())
		}
	})

	// An inet socket passed over SCM_RIGHTS between two processes of the tree keeps working:
	// every connect in the tree is mediated, so no refusal is needed (torsocks fails recvmsg with
	// EACCES). Passed connected: the receiver talks through it and sees the destination as peer;
	// passed unconnected: the receiver's connect is proxied.
	t.Run("scm-rights", func(t *testing.T) {
		script := `
import os, socket, sys
def talk(s, host):
    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    body = b""
    while True:
        b = s.recv(4096)
        if not b: break
        body += b
    assert b"canary" in body, body
    assert s.getpeername()[0] == host, s.getpeername()
    print("ok", host, flush=True)
for host, fam, connect_first in (("203.0.113.10", socket.AF_INET, True), ("2001:db8::10", socket.AF_INET6, True), ("203.0.113.10", socket.AF_INET, False)):
    a, b = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        a.close()
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.settimeout(20)
        if connect_first:
            s.connect((host, 80))
        socket.send_fds(b, [b"x"], [s.fileno()])
        os._exit(0)
    b.close()
    msg, fds, flags, addr = socket.recv_fds(a, 1, 1)
    _, st = os.waitpid(pid, 0)
    assert st == 0, st
    assert len(fds) == 1, fds
    s = socket.socket(fileno=fds[0])
    s.settimeout(20)
    if not connect_first:
        s.connect((host, 80))
    talk(s, host)
`
		n := len(socks.Requests())
		r := torsocks(t, nil, "python3", "-c", script)
		if r.code != 0 || strings.Count(r.stdout, "ok ") != 3 {
			t.Fatalf("fd passing: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
		}
		wantConnectRequests(t, newRequests(socks, n), dest4, dest6, dest4)
		noLeaks(t)
	})

	// EnableIPv6 0 (environment or file) restores torsocks' default: socket(AF_INET6, SOCK_STREAM)
	// fails with ENOSYS so programs fall back to IPv4, which still works.
	for _, tc := range []struct {
		name string
		env  func(t *testing.T) []string
	}{
		{"env", func(*testing.T) []string { return []string{"TORSOCKS_ENABLE_IPV6=0"} }},
		{"conf-file", func(t *testing.T) []string {
			return []string{"TORSOCKS_CONF_FILE=" + confFile(t, "EnableIPv6 0\n")}
		}},
		{"conf-file-no", func(t *testing.T) []string {
			return []string{"TORSOCKS_CONF_FILE=" + confFile(t, "EnableIPv6 no")}
		}},
	} {
		t.Run("ipv6-disabled/"+tc.name, func(t *testing.T) {
			e := tc.env(t)
			r := probe(t, e, nil, "socket6")
			wantLines(t, r, "socket=-1 errno=ENOSYS")
			oneRefusal(t, r, "IPv6")
			n := len(socks.Requests())
			wantLines(t, probe(t, e, nil, "connect", "203.0.113.10", "80"), "connect=0 errno=0", "echo=ok")
			wantConnectRequests(t, newRequests(socks, n), dest4)
			noLeaks(t)
		})
	}

	// IPv6 is on by default (ours works, unlike torsocks'): -6 changes nothing, and beats
	// TORSOCKS_ENABLE_IPV6=0.
	t.Run("ipv6-default", func(t *testing.T) {
		for _, tc := range []struct{ env, opts []string }{{}, {opts: []string{"-6"}}, {env: []string{"TORSOCKS_ENABLE_IPV6=0"}, opts: []string{"--ipv6"}}} {
			r := probe(t, tc.env, tc.opts, "socket6")
			wantLines(t, r, "socket=0 errno=0")
			if r.stderr != "" {
				t.Errorf("IPv6 socket logged: %q", r.stderr)
			}
		}
	})

	// A Tor-aware program may talk SOCKS to Tor's SocksPort itself: that loopback connection is
	// let through (direct), and the request is the program's own.
	t.Run("socksport-direct", func(t *testing.T) {
		n := len(socks.Requests())
		r := torsocks(t, nil, "curl", "-sS", "--max-time", "20", "--socks5-hostname", "127.0.0.1:9050", "http://example.invalid/")
		// The test server cannot resolve the name: curl reports the SOCKS failure, but the request
		// reached the SOCKS server as the program sent it (by name).
		q := newRequests(socks, n)
		if len(q) != 1 || q[0].Host != "example.invalid" || q[0].Port != 80 {
			t.Fatalf("SocksPort connection: exit %d, requests %+v\n%s", r.code, q, r.stderr)
		}
		if lines, _ := parseLog(r.stderr); len(lines) != 0 {
			t.Errorf("connecting to the SocksPort logged: %q", r.stderr)
		}
		n = len(socks.Requests())
		r = torsocks(t, nil, "curl", "-sS", "--max-time", "20", "--socks5", "127.0.0.1:9050", "http://203.0.113.10/")
		if r.code != 0 || !strings.Contains(r.stdout, "canary") {
			t.Fatalf("curl --socks5: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
		}
		if q := newRequests(socks, n); len(q) != 1 || q[0].Host != "203.0.113.10" {
			t.Errorf("curl --socks5: requests %+v", q)
		}
		noLeaks(t)
	})

	// -a/-P, TORSOCKS_TOR_ADDRESS/TORSOCKS_TOR_PORT and TorAddress/TorPort in the file point at
	// another SOCKS server; options beat the environment, which beats the file.
	t.Run("tor-address", func(t *testing.T) {
		other, err := socks5test.Start(socks5test.Options{
			Listen:   []string{"127.0.0.1:9071", "[::1]:9071"},
			SourceV4: netnstest.SocksSrcV4,
			SourceV6: netnstest.SocksSrcV6,
		})
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		conf9050 := confFile(t, "TorAddress 127.0.0.1\nTorPort 9050\n")
		conf9071 := confFile(t, "TorAddress 127.0.0.1\nTorPort 9071")
		for _, tc := range []struct {
			name      string
			env, opts []string
			dest      netip.AddrPort
			wantOther bool
			wantPlain bool
		}{
			{name: "flags -a -P", opts: []string{"-a", "127.0.0.1", "-P", "9071"}, dest: dest4, wantOther: true},
			{name: "long flags", opts: []string{"--address=127.0.0.1", "--port", "9071"}, dest: dest4, wantOther: true},
			{name: "flag -a ::1 (IPv6 destination)", opts: []string{"-a", "::1", "-P", "9071"}, dest: dest6, wantOther: true},
			{name: "environment", env: []string{"TORSOCKS_TOR_ADDRESS=127.0.0.1", "TORSOCKS_TOR_PORT=9071"}, dest: dest4, wantOther: true},
			{name: "conf file", env: []string{"TORSOCKS_CONF_FILE=" + conf9071}, dest: dest4, wantOther: true},
			{name: "env beats file", env: []string{"TORSOCKS_CONF_FILE=" + conf9050, "TORSOCKS_TOR_PORT=9071"}, dest: dest4, wantOther: true},
			{name: "flag beats env", env: []string{"TORSOCKS_TOR_PORT=9050"}, opts: []string{"-P", "9071"}, dest: dest4, wantOther: true},
			{name: "default", dest: dest4, wantPlain: true},
		} {
			n, m := len(socks.Requests()), len(other.Requests())
			r := probe(t, tc.env, tc.opts, "connect", tc.dest.Addr().String(), "80")
			wantLines(t, r, "connect=0 errno=0", "echo=ok")
			got, plain := newRequests(other, m), newRequests(socks, n)
			switch {
			case tc.wantOther:
				wantConnectRequests(t, got, tc.dest)
				if len(plain) != 0 {
					t.Errorf("%s: the server on 9050 saw %+v", tc.name, plain)
				}
			case tc.wantPlain:
				wantConnectRequests(t, plain, tc.dest)
				if len(got) != 0 {
					t.Errorf("%s: the server on 9071 saw %+v", tc.name, got)
				}
			}
			if t.Failed() {
				t.Fatalf("%s: stderr %s", tc.name, r.stderr)
			}
		}
		noLeaks(t)
	})
}

// wantUDPWarning checks that torsocks logged exactly one "UDP to DST refused: ..." WARNING (the
// sandbox's catch-all logs a destination once a minute, whichever send calls carried it).
func wantUDPWarning(t *testing.T, r result, dst netip.AddrPort) {
	t.Helper()
	var n int
	lines, _ := parseLog(r.stderr)
	for _, l := range levelLines(lines, "WARNING") {
		if strings.HasPrefix(l.msg, "UDP to "+dst.String()+" refused: ") {
			n++
		}
	}
	if n != 1 {
		t.Errorf("want one WARNING \"UDP to %v refused: ...\", got %d:\n%s", dst, n, r.stderr)
	}
}

// canaryFor is the shared canary of a destination.
func canaryFor(d netip.AddrPort) *socks5test.Canary {
	if d.Addr().Is4() {
		return canary4
	}
	return canary6
}

// sockLen is the sockaddr length of an address's family.
func sockLen(host string) string {
	if strings.Contains(host, ":") {
		return "28"
	}
	return "16"
}
