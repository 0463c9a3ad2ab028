package integration

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gotorsocks/torsocks/internal/config"
	"github.com/gotorsocks/torsocks/internal/netnstest"
	"github.com/gotorsocks/torsocks/internal/socks5test"
)

// sealedMode reports whether the tests that do not choose run torsocks with SealedNetwork 1:
// TORSOCKS_SEALED_NETWORK when exported (make test runs the suite in both modes), the default
// otherwise. (The sandbox can be made: the suite runs as root.)
func sealedMode() bool {
	switch strings.ToLower(os.Getenv("TORSOCKS_SEALED_NETWORK")) {
	case "1", "yes", "true", "on":
		return true
	case "0", "no", "false", "off":
		return false
	}
	return config.DefaultSealedNetwork
}

// Listeners with SealedNetwork 1: the program's listener lives in the sandbox and the supervisor
// mirrors it on this machine with the same address and port (internal/supervisor,
// sealed_listen_linux.go). Clients here are the test itself and curl, outside the tree.

// listenScript is a server driven line by line on stdin (no sleeps): "accept" serves one
// connection (prints the peer the program's accept() saw, echoes one message), "relisten" closes
// the listener and listens again at once on the same port, "close" closes it, "self" connects to
// its own listener, "forward HOST PORT" accepts one connection and relays it to HOST:PORT (ssh -L's
// pattern), "quit" ends.
const listenScript = `
import errno, socket, sys, threading
host, port = sys.argv[1], int(sys.argv[2])
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
def listen(p):
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if len(sys.argv) > 3 and p == 0:  # "noport": bound to the address, the port left to listen()
        s.setsockopt(socket.IPPROTO_IP, 24, 1)  # IP_BIND_ADDRESS_NO_PORT
    s.bind((host, p))
    try:
        s.listen(8)
    except OSError as e:
        print("listen", errno.errorcode[e.errno], flush=True)
        sys.exit(0)
    return s
s = listen(port)
port = s.getsockname()[1]
print("port", port, flush=True)
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "accept":
        c, peer = s.accept()
        print("peer", peer[0], peer[1], flush=True)
        c.sendall(b"echo " + c.recv(100))
        c.close()
    elif cmd[0] == "relisten":
        s.close()
        s = listen(port)
        print("relistened", flush=True)
    elif cmd[0] == "close":
        s.close()
        print("closed", flush=True)
    elif cmd[0] == "self":
        try:
            c = socket.create_connection((host if host not in ("0.0.0.0", "::") else "127.0.0.1", port), timeout=20)
        except OSError as e:
            print("self", errno.errorcode[e.errno], flush=True)
            continue
        a, peer = s.accept()
        c.sendall(b"ping")
        print("self", a.recv(4).decode(), "peer", peer[0], flush=True)
        a.close(); c.close()
    elif cmd[0] == "forward":
        c, _ = s.accept()
        u = socket.create_connection((cmd[1], int(cmd[2])), timeout=20)
        def pump(a, b):
            while True:
                d = a.recv(65536)
                if not d:
                    b.shutdown(socket.SHUT_WR)
                    return
                b.sendall(d)
        t = threading.Thread(target=pump, args=(u, c)); t.start()
        pump(c, u); t.join()
        c.close(); u.close()
        print("forwarded", flush=True)
    elif cmd[0] == "quit":
        break
`

// listenProg is a running listenScript under torsocks.
type listenProg struct {
	t      *testing.T
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Scanner
	stderr *strings.Builder
	port   int
	cancel context.CancelFunc
}

// startListen runs listenScript on host:port; want "port" unless the listen fails (first line).
func startListen(t *testing.T, env []string, host string, port int, extra ...string) (*listenProg, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	cmd := exec.CommandContext(ctx, torsocksBin, append([]string{"python3", "-c", listenScript, host, strconv.Itoa(port)}, extra...)...)
	cmd.Env = append(append(os.Environ(), sealedEnv...), env...)
	cmd.WaitDelay = 5 * time.Second
	p := &listenProg{t: t, cmd: cmd, stderr: &strings.Builder{}, cancel: cancel}
	cmd.Stderr = p.stderr
	var err error
	if p.in, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.out = bufio.NewScanner(out)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.stop)
	first := p.line()
	if f := strings.Fields(first); len(f) == 2 && f[0] == "port" {
		p.port, _ = strconv.Atoi(f[1])
	}
	return p, first
}

// line is the program's next line of output ("" at its end).
func (p *listenProg) line() string {
	if !p.out.Scan() {
		return ""
	}
	return p.out.Text()
}

func (p *listenProg) send(cmd string) {
	if _, err := io.WriteString(p.in, cmd+"\n"); err != nil {
		p.t.Fatalf("write %q to the program: %v (stderr %s)", cmd, err, p.stderr)
	}
}

// stop ends the program (quit, then its stdin closed) and waits for it.
func (p *listenProg) stop() {
	io.WriteString(p.in, "quit\n")
	p.in.Close()
	p.cmd.Wait()
	p.cancel()
}

// echo connects to addr (from local when valid), has the program accept it and checks the peer
// its accept() saw and the echo.
func (p *listenProg) echo(addr netip.AddrPort, local netip.Addr) {
	p.t.Helper()
	p.send("accept")
	d := net.Dialer{Timeout: 10 * time.Second}
	if local.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: local.AsSlice()}
	}
	c, err := d.Dial("tcp", addr.String())
	if err != nil {
		p.t.Fatalf("dial the program's listener at %v: %v (stderr %s)", addr, err, p.stderr)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	io.WriteString(c, "hello")
	me := c.LocalAddr().(*net.TCPAddr).AddrPort()
	if got, want := p.line(), fmt.Sprintf("peer %s %d", me.Addr(), me.Port()); got != want && got != fmt.Sprintf("peer ::ffff:%s %d", me.Addr(), me.Port()) {
		p.t.Errorf("the program's accept() saw %q, want %q (stderr %s)", got, want, p.stderr)
	}
	if b, _ := io.ReadAll(c); string(b) != "echo hello" {
		p.t.Errorf("through the program's listener at %v: %q (stderr %s)", addr, b, p.stderr)
	}
}

// TestSealedListenLoopback: a listener on 127.0.0.1 or ::1 (port 0 and a fixed port) is reachable
// from this machine on the same address and port; accept() shows the client's own address; closing
// it and listening again at once on the same port works; once closed, its port on this machine is
// free again (no leaked mirror).
func TestSealedListenLoopback(t *testing.T) {
	env(t)
	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			p, first := startListen(t, nil, host, 0)
			if p.port == 0 {
				t.Fatalf("no port line: %q (stderr %s)", first, p.stderr)
			}
			addr := netip.AddrPortFrom(netip.MustParseAddr(host), uint16(p.port))
			p.echo(addr, netip.Addr{})
			p.echo(addr, netip.Addr{})
			p.send("relisten")
			if l := p.line(); l != "relistened" {
				t.Fatalf("relisten: %q (stderr %s)", l, p.stderr)
			}
			p.echo(addr, netip.Addr{})
			p.send("close")
			if l := p.line(); l != "closed" {
				t.Fatalf("close: %q (stderr %s)", l, p.stderr)
			}
			waitPortFree(t, addr)
			if p.stderr.Len() != 0 {
				t.Errorf("stderr: %s", p.stderr)
			}
		})
	}
	t.Run("fixed-port", func(t *testing.T) {
		port := freePort(t, "127.0.0.1")
		p, first := startListen(t, nil, "127.0.0.1", port)
		if p.port != port {
			t.Fatalf("want port %d: %q (stderr %s)", port, first, p.stderr)
		}
		p.echo(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port)), netip.MustParseAddr("127.0.0.9"))
	})
	// Bound without a port (IP_BIND_ADDRESS_NO_PORT): listen() picks it in the sandbox, the mirror
	// follows.
	t.Run("no-port", func(t *testing.T) {
		p, first := startListen(t, nil, "127.0.0.1", 0, "noport")
		if p.port == 0 {
			t.Fatalf("no port line: %q (stderr %s)", first, p.stderr)
		}
		p.echo(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(p.port)), netip.Addr{})
	})
	// The program ends without closing: its mirror goes with it.
	t.Run("exit", func(t *testing.T) {
		p, _ := startListen(t, nil, "127.0.0.1", 0)
		addr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(p.port))
		p.echo(addr, netip.Addr{})
		p.stop()
		waitPortFree(t, addr)
	})
}

// TestSealedListenPortZero: a program binding port 0 and listening gets a port that is free on
// this machine, not one the sandbox picked knowing nothing of this machine's ports (the mirror's
// bind then failed EADDRINUSE when this machine had a connection on that port). This machine's
// ephemeral range is narrowed for the test: the port must come from it (the sandbox's own range
// is the default 32768-60999, so a port picked there lands in the narrow one about 1 time in 560).
func TestSealedListenPortZero(t *testing.T) {
	env(t)
	const rangeFile = "/proc/sys/net/ipv4/ip_local_port_range"
	old, err := os.ReadFile(rangeFile)
	if err != nil {
		t.Fatal(err)
	}
	const lo, hi = 45000, 45049
	if err := os.WriteFile(rangeFile, []byte(fmt.Sprintf("%d %d", lo, hi)), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.WriteFile(rangeFile, old, 0o644) })
	for _, host := range []string{"127.0.0.1", "::1", "::"} {
		env := []string(nil)
		if host == "::" {
			env = []string{"TORSOCKS_ALLOW_INBOUND=1"}
		}
		p, first := startListen(t, env, host, 0)
		if p.port < lo || p.port > hi {
			t.Errorf("%s: listening on port %d (%q), want one of this machine's ephemeral range %d-%d (stderr %s)", host, p.port, first, lo, hi, p.stderr)
			continue
		}
		reach := host
		if host == "::" {
			reach = "::1"
		}
		p.echo(netip.AddrPortFrom(netip.MustParseAddr(reach), uint16(p.port)), netip.Addr{})
		p.stop()
	}
}

// TestSealedListenConflict: the port is taken on this machine: the program's listen() fails with
// EADDRINUSE and one line, and the test's listener keeps its connections.
func TestSealedListenConflict(t *testing.T) {
	env(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	p, first := startListen(t, nil, "127.0.0.1", port)
	if first != "listen EADDRINUSE" {
		t.Errorf("listen on a port taken here: %q, want EADDRINUSE", first)
	}
	p.stop()
	lines, other := parseLog(p.stderr.String())
	if len(lines) != 1 || lines[0].level != "WARNING" || !strings.Contains(lines[0].msg, fmt.Sprintf("127.0.0.1:%d", port)) || len(other) != 0 {
		t.Errorf("want one warning naming 127.0.0.1:%d, got %q", port, p.stderr)
	}
}

// TestSealedListenInbound: with AllowInbound 1, a listener on the wildcard address is reachable on
// this machine's other addresses too, IPv4 and IPv6 (and IPv4 on a dual-stack IPv6 listener);
// accept() shows the remote client's address.
func TestSealedListenInbound(t *testing.T) {
	env(t)
	inbound := []string{"TORSOCKS_ALLOW_INBOUND=1"}
	for _, tc := range []struct {
		host         string
		dial, client netip.Addr
	}{
		{"0.0.0.0", netnstest.NameserverV4, netnstest.DestV4},
		{"::", netnstest.NameserverV6, netnstest.DestV6},
		{"::", netnstest.NameserverV4, netnstest.DestV4},
	} {
		t.Run(tc.host+"/"+tc.dial.String(), func(t *testing.T) {
			p, first := startListen(t, inbound, tc.host, 0)
			if p.port == 0 {
				t.Fatalf("no port line: %q (stderr %s)", first, p.stderr)
			}
			p.echo(netip.AddrPortFrom(tc.dial, uint16(p.port)), tc.client)
			p.echo(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(p.port)), netip.Addr{})
		})
	}
	// Without AllowInbound: refused as with SealedNetwork 0.
	p, first := startListen(t, nil, "0.0.0.0", 0)
	if first != "listen EPERM" {
		t.Errorf("listen on 0.0.0.0 without AllowInbound: %q (stderr %s)", first, p.stderr)
	}
}

// TestSealedListenSelf: the program connects to its own listener: with AllowOutboundLocalhost 1
// inside the sandbox (accept() shows a loopback peer); without, refused as with SealedNetwork 0.
func TestSealedListenSelf(t *testing.T) {
	env(t)
	for _, host := range []string{"127.0.0.1", "::1"} {
		p, _ := startListen(t, []string{"TORSOCKS_ALLOW_OUTBOUND_LOCALHOST=1"}, host, 0)
		p.send("self")
		if l := p.line(); l != "self ping peer "+host {
			t.Errorf("own listener on %s: %q (stderr %s)", host, l, p.stderr)
		}
		p, _ = startListen(t, nil, host, 0)
		p.send("self")
		if l := p.line(); l != "self EPERM" {
			t.Errorf("own listener on %s without AllowOutboundLocalhost: %q (stderr %s)", host, l, p.stderr)
		}
	}
}

// TestSealedListenForward: ssh -L's pattern: curl, outside the tree, fetches through the
// program's loopback listener, which forwards to a remote host through Tor; the canary sees the
// SOCKS server only.
func TestSealedListenForward(t *testing.T) {
	env(t)
	p, first := startListen(t, nil, "127.0.0.1", 0)
	if p.port == 0 {
		t.Fatalf("no port line: %q (stderr %s)", first, p.stderr)
	}
	n := canary4.Accepted()
	p.send("forward " + netnstest.DestV4.String() + " 80")
	r := runCmd(t, nil, "curl", "-sS", "--max-time", "30", fmt.Sprintf("http://127.0.0.1:%d/", p.port))
	if !strings.HasPrefix(r.stdout, "canary 203.0.113.10:80 says hello from "+netnstest.SocksSrcV4.String()) {
		t.Errorf("curl through the forwarder: %q %q (program stderr %s)", r.stdout, r.stderr, p.stderr)
	}
	if l := p.line(); l != "forwarded" {
		t.Errorf("forwarder: %q (stderr %s)", l, p.stderr)
	}
	if !canary4.WaitAccepted(n+1, 10*time.Second) {
		t.Errorf("the canary saw no connection")
	}
	noLeaks(t)
}

// TestSealedHTTPServer: python3 -m http.server under torsocks, on 127.0.0.1 and ::1; curl,
// outside the tree, fetches a file from it byte-exact; the server logs the client's address.
func TestSealedHTTPServer(t *testing.T) {
	env(t)
	dir := t.TempDir()
	body := strings.Repeat("sealed listener\n", 50000) // 800 kB
	if err := os.WriteFile(filepath.Join(dir, "f.txt"), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, torsocksBin, "python3", "-u", "-m", "http.server", "--bind", host, "--directory", dir, "0")
			cmd.Env = append(os.Environ(), sealedEnv...)
			cmd.WaitDelay = 5 * time.Second
			cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGINT) }
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
			if !sc.Scan() {
				t.Fatalf("no output from http.server (stderr %s)", stderr.String())
			}
			// "Serving HTTP on 127.0.0.1 port 40001 (http://127.0.0.1:40001/) ..."
			f := strings.Fields(sc.Text())
			if len(f) < 6 || f[4] != "port" {
				t.Fatalf("http.server said %q", sc.Text())
			}
			url := fmt.Sprintf("http://%s/f.txt", net.JoinHostPort(host, f[5]))
			r := runCmd(t, nil, "curl", "-sS", "--max-time", "30", url)
			if r.stdout != body {
				t.Errorf("curl %s: %d bytes, want %d (%q; server stderr %s)", url, len(r.stdout), len(body), r.stderr, stderr.String())
			}
			cancel()
			cmd.Wait()
			if !strings.Contains(stderr.String(), host+` - - [`) || !strings.Contains(stderr.String(), `"GET /f.txt HTTP/1.1" 200`) {
				t.Errorf("http.server's log does not show the client %s: %s", host, stderr.String())
			}
		})
	}
}

// freePort returns a port free on host now.
func freePort(t *testing.T, host string) int {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// waitPortFree waits until addr can be listened on here: the program's listener there is closed,
// and so must its mirror be (the watcher notices within half a second; 20 s is only a bound
// against a hang).
func waitPortFree(t *testing.T, addr netip.AddrPort) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ln, err := net.Listen("tcp", addr.String())
		if err == nil {
			ln.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v still taken on this machine after the program closed its listener: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSealedScopedDestination: a link-local destination with a zone is answered exactly as with
// SealedNetwork 0: sent to Tor (the address without its zone), whose failure the program gets with
// the same errno and line; nothing reaches anything else.
func TestSealedScopedDestination(t *testing.T) {
	env(t)
	script := `
import errno, socket
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
try:
    s.connect(("fe80::1", 80, 0, 1))
    print("connect 0")
except OSError as e:
    print("connect", errno.errorcode[e.errno])
`
	n := len(socks.Requests())
	var got [2]string
	for i, mode := range []string{"0", "1"} {
		r := torsocks(t, []string{"TORSOCKS_SEALED_NETWORK=" + mode}, "python3", "-c", script)
		lines, other := parseLog(r.stderr)
		if len(lines) != 1 || len(other) != 0 {
			t.Fatalf("SealedNetwork %s: want one line, got %q", mode, r.stderr)
		}
		msg, _, _ := strings.Cut(lines[0].msg, " (in (") // the code location differs
		got[i] = r.stdout + lines[0].level + " " + msg
	}
	if got[0] != got[1] {
		t.Errorf("scoped destination: SealedNetwork 0 answered %q, 1 answered %q", got[0], got[1])
	}
	if !strings.Contains(got[1], "[fe80::1%1]:80 through Tor") {
		t.Errorf("scoped destination: %q", got[1])
	}
	q := newRequests(socks, n)
	if len(q) != 2 {
		t.Errorf("want the two connects sent to Tor, got %+v", q)
	}
	noLeaks(t)
}

// TestSealedFallbackNoSandbox: where no network namespace can be made (emulated by nons_wrap's
// seccomp filter in front of torsocks, as for a normal user without unprivileged user namespaces),
// torsocks still runs with the default SealedNetwork 1: the program's TCP socket is on the host
// network, its connection goes through Tor, and stderr has one line saying the kernel-enforced
// layer is off and why.
func TestSealedFallbackNoSandbox(t *testing.T) {
	env(t)
	wrap := buildC(t, "nons_wrap")
	script := `
import socket
u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s = socket.socket()
same = s.getsockopt(socket.SOL_SOCKET, 71, 8) == u.getsockopt(socket.SOL_SOCKET, 71, 8)  # SO_NETNS_COOKIE
s.settimeout(20)
s.connect(("203.0.113.10", 80))
s.sendall(b"GET / HTTP/1.0\r\n\r\n")
body = b""
while True:
    b = s.recv(4096)
    if not b: break
    body += b
print("host-netns", same, "canary", b"canary" in body)
s.close()
s = socket.socket()  # a second socket: no second line
print("second", s.fileno() >= 0)
`
	n := canary4.Accepted()
	r := runCmd(t, []string{"TORSOCKS_SEALED_NETWORK=1"}, wrap, torsocksBin, "python3", "-c", script)
	if r.code != 0 || !strings.Contains(r.stdout, "host-netns True canary True") || !strings.Contains(r.stdout, "second True") {
		t.Fatalf("without a sandbox: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	lines, other := parseLog(r.stderr)
	if len(lines) != 1 || len(other) != 0 || lines[0].level != "WARNING" ||
		!strings.Contains(lines[0].msg, "the sandbox network namespace is unavailable (") ||
		!strings.Contains(lines[0].msg, "the kernel-enforced layer (SealedNetwork) is off") {
		t.Errorf("want one line saying the kernel-enforced layer is off and why, got %q", r.stderr)
	}
	if !canary4.WaitAccepted(n+1, 10*time.Second) {
		t.Errorf("the canary saw no connection")
	}
	noLeaks(t)
}

// samePortScript listens on argv[1]:argv[2] (AllowInbound), then connects to argv[3]:argv[2]
// through Tor and exchanges a line, then accepts one connection from outside and prints its line.
const samePortScript = `
import socket, sys
host, port, dest = sys.argv[1], int(sys.argv[2]), sys.argv[3]
l = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind((host, port))
l.listen(8)
print("listening", flush=True)
c = socket.create_connection((dest, port), timeout=20)
c.sendall(b"ping\n")
print("out", c.makefile().readline().strip(), flush=True)
c.close()
a, _ = l.accept()
print("in", a.makefile().readline().strip(), flush=True)
`

// TestSealedListenSamePort: a program listening on the wildcard address with port P (a
// peer-to-peer node on its usual port, AllowInbound 1) connects through Tor to a destination
// with the same port P: the connect is joined in the sandbox beside the program's listener (the
// inner listener, bound to the destination's exact address, takes it), and the listener still
// takes a connection from outside. Before, the inner listener could not be bound (EADDRINUSE)
// and the connect failed ECONNREFUSED. IPv4 and dual-stack IPv6 wildcard listeners.
func TestSealedListenSamePort(t *testing.T) {
	env(t)
	// The destination, "far away": its real port (Q) differs from P, which must be free on
	// this machine for the program's mirror; the SOCKS server sends connects to P there.
	ln, err := net.Listen("tcp", netip.AddrPortFrom(netnstest.DestV4, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				l, _ := bufio.NewReader(c).ReadString('\n')
				fmt.Fprintf(c, "echo %s", l)
			}()
		}
	}()
	q := ln.Addr().(*net.TCPAddr).AddrPort()
	for _, host := range []string{"0.0.0.0", "::"} {
		t.Run(host, func(t *testing.T) {
			p := freePort(t, host)
			socksPort := freePort(t, "127.0.0.1")
			s, err := socks5test.Start(socks5test.Options{
				Listen:   []string{netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(socksPort)).String()},
				SourceV4: netnstest.SocksSrcV4,
				Redirect: func(d netip.AddrPort) (netip.AddrPort, bool) { return q, d.Port() == uint16(p) },
			})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, torsocksBin, "python3", "-c", samePortScript, host, strconv.Itoa(p), netnstest.DestV4.String())
			cmd.Env = append(append(os.Environ(), sealedEnv...), "TORSOCKS_ALLOW_INBOUND=1", "TORSOCKS_TOR_PORT="+strconv.Itoa(socksPort))
			var stderr strings.Builder
			cmd.Stderr = &stderr
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			lines := bufio.NewScanner(out)
			next := func() string {
				if lines.Scan() {
					return lines.Text()
				}
				return ""
			}
			if l := next(); l != "listening" {
				cmd.Wait()
				t.Fatalf("want listening, got %q\nstderr:\n%s", l, stderr.String())
			}
			if l := next(); l != "out echo ping" {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("the connect to port %d beside the listener: %q, want %q\nstderr:\n%s", p, l, "out echo ping", stderr.String())
			}
			c, err := net.Dial("tcp", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(p)).String())
			if err != nil {
				t.Fatalf("the program's listener from outside: %v\nstderr:\n%s", err, stderr.String())
			}
			fmt.Fprintf(c, "hi\n")
			if l := next(); l != "in hi" {
				t.Errorf("inbound: %q, want %q\nstderr:\n%s", l, "in hi", stderr.String())
			}
			c.Close()
			if err := cmd.Wait(); err != nil {
				t.Errorf("exit: %v\nstderr:\n%s", err, stderr.String())
			}
		})
	}
	noLeaks(t)
}
