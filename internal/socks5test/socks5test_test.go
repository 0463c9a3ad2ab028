package socks5test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gotorsocks/torsocks/internal/netnstest"
	"github.com/gotorsocks/torsocks/internal/socks5"
)

var (
	loopback = netip.MustParseAddr("127.0.0.1")
	// proxySrc is the source the test server dials from: another loopback address, so a
	// canary can tell proxied connections (127.0.0.2) from direct ones (127.0.0.1).
	proxySrc = netip.MustParseAddr("127.0.0.2")
)

func startServer(t *testing.T, opts Options) *Server {
	t.Helper()
	if opts.Listen == nil {
		opts.Listen = []string{"127.0.0.1:0"}
	}
	if !opts.SourceV4.IsValid() {
		opts.SourceV4 = proxySrc
	}
	opts.Logf = t.Logf
	s, err := Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func startCanary(t *testing.T, opts CanaryOptions) *Canary {
	t.Helper()
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	if opts.Allowed == nil {
		opts.Allowed = []netip.Addr{proxySrc}
	}
	c, err := StartCanaryWith(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// dialVia connects to the server and runs the client handshake.
func dialVia(t *testing.T, network, addr string, req socks5.Request, auth *socks5.Auth) (net.Conn, socks5.Reply, error) {
	t.Helper()
	c, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	rep, err := socks5.Handshake(c, req, auth)
	return c, rep, err
}

func connectReq(ap netip.AddrPort) socks5.Request { return socks5.ConnectAddr(ap) }

func TestConnectHTTPThroughProxy(t *testing.T) {
	s := startServer(t, Options{})
	can := startCanary(t, CanaryOptions{})
	c, rep, err := dialVia(t, "tcp", s.Addrs()[0].String(), connectReq(can.AddrPort()), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Addr.Is4() || rep.Addr != proxySrc {
		t.Errorf("bound address %v, want %v", rep.Addr, proxySrc)
	}
	io.WriteString(c, "GET / HTTP/1.0\r\nHost: x\r\n\r\n")
	resp, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	head, body, _ := strings.Cut(string(resp), "\r\n\r\n")
	if !strings.HasPrefix(head, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: ") {
		t.Errorf("head %q", head)
	}
	wantPrefix := "canary " + can.Addr().String() + " says hello from 127.0.0.2:"
	if !strings.HasPrefix(body, wantPrefix) || !strings.HasSuffix(body, "\n") {
		t.Errorf("body %q, want prefix %q", body, wantPrefix)
	}
	if n := can.Accepted(); n != 1 {
		t.Errorf("Accepted %d", n)
	}
	if l := can.Leaks(); len(l) != 0 {
		t.Errorf("Leaks %v", l)
	}
	reqs := s.Requests()
	if len(reqs) != 1 || reqs[0].Cmd != socks5.CmdConnect || reqs[0].ATYP != socks5.AtypDomain ||
		reqs[0].Host != "127.0.0.1" || reqs[0].Port != can.AddrPort().Port() || reqs[0].Remote == nil {
		t.Errorf("Requests %+v", reqs)
	}

	// A direct connection is a leak.
	d, err := net.Dial("tcp", can.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	if !can.WaitAccepted(2, 5*time.Second) {
		t.Fatal("direct connection not seen")
	}
	if l := can.Leaks(); len(l) != 1 || l[0].Addr() != loopback {
		t.Errorf("Leaks %v, want one from 127.0.0.1", l)
	}
}

func TestHEAD(t *testing.T) {
	can := startCanary(t, CanaryOptions{})
	c, err := net.Dial("tcp", can.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "HE")
	time.Sleep(10 * time.Millisecond) // split the method over two segments
	io.WriteString(c, "AD / HTTP/1.0\r\n\r\n")
	resp, _ := io.ReadAll(c)
	if !strings.HasPrefix(string(resp), "HTTP/1.0 200 OK\r\n") || !strings.HasSuffix(string(resp), "\r\n\r\n") {
		t.Errorf("HEAD answer %q", resp)
	}
}

func TestEchoHalfCloseAndBanner(t *testing.T) {
	s := startServer(t, Options{})
	can := startCanary(t, CanaryOptions{Banner: "SSH-2.0-canary\r\n"})
	c, _, err := dialVia(t, "tcp", s.Addrs()[0].String(), connectReq(can.AddrPort()), nil)
	if err != nil {
		t.Fatal(err)
	}
	// The banner must not have been eaten by the handshake.
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil || line != "SSH-2.0-canary\r\n" {
		t.Fatalf("banner %q, %v", line, err)
	}
	io.WriteString(c, "ping")
	c.(*net.TCPConn).CloseWrite()
	rest, err := io.ReadAll(br)
	if err != nil || string(rest) != "ping" {
		t.Fatalf("echo %q, %v", rest, err)
	}
}

func TestConnectByNameAndRawATYP(t *testing.T) {
	can := startCanary(t, CanaryOptions{})
	s := startServer(t, Options{Resolve: map[string][]netip.Addr{"canary.test": {loopback}}})
	port := can.AddrPort().Port()
	c, _, err := dialVia(t, "tcp", s.Addrs()[0].String(), socks5.Request{Cmd: socks5.CmdConnect, Host: "Canary.TEST", Port: port}, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	_, _, err = dialVia(t, "tcp", s.Addrs()[0].String(), socks5.Request{Cmd: socks5.CmdConnect, Host: "nx.test", Port: port}, nil)
	if socks5.Errno(err) != syscall.EHOSTUNREACH {
		t.Errorf("unknown name: %v", err)
	}

	// ATYP 1 and 4, written by hand (our client never sends them).
	for _, tc := range []struct {
		atyp byte
		addr []byte
		want string
		code byte
	}{
		{socks5.AtypIPv4, []byte{127, 0, 0, 1}, "127.0.0.1", 0},
		{socks5.AtypIPv6, netip.IPv6Loopback().AsSlice(), "::1", 0xff},
		{0x02, nil, "", socks5.ReplyAddressNotSupported},
	} {
		c, err := net.Dial("tcp", s.Addrs()[0].String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		msg := append([]byte{5, 1, 0, 5, 1, 0, tc.atyp}, tc.addr...)
		msg = append(msg, byte(port>>8), byte(port))
		c.Write(msg)
		var sel [2]byte
		io.ReadFull(c, sel[:])
		rep, err := socks5.ReadReply(c)
		c.Close()
		if tc.code == 0xff {
			// The canary is on 127.0.0.1 only: [::1] refuses, or is unreachable without IPv6.
			if rep.Code != socks5.ReplyConnectionRefused && rep.Code != socks5.ReplyNetworkUnreachable &&
				rep.Code != socks5.ReplyGeneralFailure {
				t.Errorf("ATYP 4 to [::1]: %+v, %v", rep, err)
			}
			continue
		}
		if rep.Code != tc.code {
			t.Errorf("ATYP %d: reply %+v, %v", tc.atyp, rep, err)
		}
	}
	var atyps []byte
	for _, r := range s.Requests() {
		atyps = append(atyps, r.ATYP)
	}
	if string(atyps) != string([]byte{3, 3, 1, 4}) {
		t.Errorf("ATYPs recorded % x", atyps)
	}
}

func TestAuth(t *testing.T) {
	can := startCanary(t, CanaryOptions{})
	s := startServer(t, Options{Users: map[string]string{"alice": "secret"}})
	addr := s.Addrs()[0].String()
	req := connectReq(can.AddrPort())
	if _, _, err := dialVia(t, "tcp", addr, req, &socks5.Auth{Username: "alice", Password: "secret"}); err != nil {
		t.Fatalf("good credentials: %v", err)
	}
	_, _, err := dialVia(t, "tcp", addr, req, &socks5.Auth{Username: "alice", Password: "wrong"})
	if !errors.Is(err, socks5.ErrAuthFailed) || socks5.Errno(err) != syscall.EINVAL {
		t.Errorf("bad credentials: %v", err)
	}
	_, _, err = dialVia(t, "tcp", addr, req, nil)
	if !errors.Is(err, socks5.ErrNoAcceptableMethod) {
		t.Errorf("no auth offered: %v", err)
	}
	reqs := s.Requests()
	if len(reqs) != 1 || reqs[0].Username != "alice" || reqs[0].Password != "secret" {
		t.Errorf("Requests %+v", reqs)
	}
}

func TestResolve(t *testing.T) {
	v6 := netip.MustParseAddr("2001:db8::10")
	s := startServer(t, Options{Resolve: map[string][]netip.Addr{
		"canary.test": {netip.MustParseAddr("203.0.113.10"), v6},
		"six.test":    {v6},
	}})
	addr := s.Addrs()[0].String()
	tests := []struct {
		req   socks5.Request
		want  socks5.Reply
		errno syscall.Errno
	}{
		{socks5.Request{Cmd: socks5.CmdResolve, Host: "canary.test"}, socks5.Reply{Addr: netip.MustParseAddr("203.0.113.10")}, 0},
		{socks5.Request{Cmd: socks5.CmdResolve, Host: "six.test"}, socks5.Reply{Addr: v6}, 0},
		{socks5.Request{Cmd: socks5.CmdResolve, Host: "192.0.2.7"}, socks5.Reply{Addr: netip.MustParseAddr("192.0.2.7")}, 0},
		{socks5.Request{Cmd: socks5.CmdResolve, Host: "nx.test"}, socks5.Reply{Code: 4, Addr: netip.IPv4Unspecified()}, syscall.EHOSTUNREACH},
		{socks5.Request{Cmd: socks5.CmdResolvePTR, Host: "203.0.113.10"}, socks5.Reply{Name: "canary.test"}, 0},
		{socks5.Request{Cmd: socks5.CmdResolvePTR, Host: "2001:db8::10"}, socks5.Reply{Name: "canary.test"}, 0},
		{socks5.Request{Cmd: socks5.CmdResolvePTR, Host: "192.0.2.99"}, socks5.Reply{Code: 4, Addr: netip.IPv4Unspecified()}, syscall.EHOSTUNREACH},
	}
	for _, tt := range tests {
		_, rep, err := dialVia(t, "tcp", addr, tt.req, nil)
		if rep != tt.want || socks5.Errno(err) != tt.errno {
			t.Errorf("%v: %+v, %v; want %+v", tt.req, rep, err, tt.want)
		}
	}
	if n := len(s.Requests()); n != len(tests) {
		t.Errorf("%d requests recorded", n)
	}
}

func TestReplyForAndRefused(t *testing.T) {
	s := startServer(t, Options{ReplyFor: func(host string, port uint16) byte {
		if strings.HasSuffix(host, ".onion") {
			return socks5.ReplyOnionDescNotFound
		}
		return 0
	}})
	addr := s.Addrs()[0].String()
	_, _, err := dialVia(t, "tcp", addr, socks5.Request{Cmd: socks5.CmdConnect, Host: "x.onion", Port: 80}, nil)
	var re *socks5.ReplyError
	if !errors.As(err, &re) || re.Code != 0xF0 || socks5.Errno(err) != syscall.ECONNABORTED {
		t.Errorf("forced code: %v", err)
	}
	// A port nothing listens on: take one and release it.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := ln.Addr().(*net.TCPAddr).AddrPort()
	ln.Close()
	_, _, err = dialVia(t, "tcp", addr, connectReq(closed), nil)
	if !errors.As(err, &re) || re.Code != socks5.ReplyConnectionRefused || socks5.Errno(err) != syscall.ECONNREFUSED {
		t.Errorf("refused: %v", err)
	}
	// Binding to a source that is not local fails: general failure.
	s2 := startServer(t, Options{SourceV4: netip.MustParseAddr("198.51.100.77")})
	_, _, err = dialVia(t, "tcp", s2.Addrs()[0].String(), connectReq(closed), nil)
	if !errors.As(err, &re) || re.Code != socks5.ReplyGeneralFailure {
		t.Errorf("bad source: %v", err)
	}
}

func TestIPv6ClientGets22ByteReply(t *testing.T) {
	s, err := Start(Options{Listen: []string{"[::1]:0"}, Logf: t.Logf})
	if err != nil {
		netnstest.Skip(t, "no IPv6 loopback: %v", err)
	}
	defer s.Close()
	can := startCanary(t, CanaryOptions{Allowed: []netip.Addr{loopback}})
	_, rep, err := dialVia(t, "tcp", s.Addrs()[0].String(), connectReq(can.AddrPort()), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Addr.Is6() || rep.Addr != netip.IPv6Unspecified() {
		t.Errorf("reply address %v, want :: (22-byte reply)", rep.Addr)
	}
}

func TestUnixListener(t *testing.T) {
	path := filepath.Join(t.TempDir(), "socks.sock")
	can := startCanary(t, CanaryOptions{})
	s := startServer(t, Options{Listen: []string{path}})
	c, rep, err := dialVia(t, "unix", path, connectReq(can.AddrPort()), nil)
	if err != nil || !rep.Addr.Is4() {
		t.Fatalf("%+v, %v", rep, err)
	}
	io.WriteString(c, "x")
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil || b[0] != 'x' {
		t.Fatalf("echo over unix: %q %v", b, err)
	}
	s.Close()
	// A second server replaces the stale socket file.
	startServer(t, Options{Listen: []string{path}})
}

func TestCloseEndsLiveRelays(t *testing.T) {
	s, err := Start(Options{Listen: []string{"127.0.0.1:0"}})
	if err != nil {
		t.Fatal(err)
	}
	can := startCanary(t, CanaryOptions{})
	c, _, err := dialVia(t, "tcp", s.Addrs()[0].String(), connectReq(can.AddrPort()), nil)
	if err != nil {
		t.Fatal(err)
	}
	// A half-open client too, stuck in negotiation.
	idle, err := net.Dial("tcp", s.Addrs()[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	done := make(chan error)
	go func() { done <- s.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close hung")
	}
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("relay still open after Close")
	}
	if _, err := net.Dial("tcp", s.Addrs()[0].String()); err == nil {
		t.Error("listener still open after Close")
	}
}

func TestUDPCanary(t *testing.T) {
	u, err := StartUDPCanary("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	c, err := net.Dial("udp", u.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if n := syncedCount(t, u, u.Packets); n != 0 {
		t.Fatalf("Packets %d before any was sent (Sync's own must not count)", n)
	}
	c.Write([]byte("query"))
	c.Write([]byte("query"))
	// Sync right after the sends: both are in the socket's queue before its own.
	if n := syncedCount(t, u, u.Packets); n != 2 {
		t.Fatalf("Packets %d", n)
	}
	if !u.WaitPackets(2, time.Second) || u.WaitPackets(3, time.Millisecond) {
		t.Error("WaitPackets")
	}
	if src := u.Sources()[0]; src.Addr() != loopback {
		t.Errorf("source %v", src)
	}
	if err := u.Close(); err != nil {
		t.Error(err)
	}
}

// A Sink counts what reached it once Sync returns, without Sync's own connections, over TCP and
// unix sockets; nil handle holds connections open until Close.
func TestSinkSync(t *testing.T) {
	for _, tc := range []struct{ network, addr string }{
		{"tcp", "127.0.0.1:0"}, {"tcp", "[::]:0"}, {"unix", filepath.Join(t.TempDir(), "sink.sock")},
	} {
		t.Run(tc.network+" "+tc.addr, func(t *testing.T) {
			if strings.HasPrefix(tc.addr, "[") {
				if ln, err := net.Listen("tcp", "[::1]:0"); err != nil {
					netnstest.Skip(t, "no IPv6 loopback: %v", err)
				} else {
					ln.Close()
				}
			}
			s, err := Listen(tc.network, tc.addr, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if n := syncedCount(t, s, s.Accepted); n != 0 {
				t.Fatalf("Accepted %d before any connection (Sync's own must not count)", n)
			}
			var clients []net.Conn
			for range 3 {
				c, err := net.Dial(s.Addr().Network(), syncTarget(s.Addr()))
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				clients = append(clients, c)
			}
			if n, r := syncedCount(t, s, s.Accepted), s.Remotes(); n != 3 || len(r) != 3 {
				t.Fatalf("Accepted %d, Remotes %v; want 3", n, r)
			}
			s.Close()
			clients[0].SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := clients[0].Read(make([]byte, 1)); err != io.EOF {
				t.Errorf("a held connection after Close: %v, want EOF", err)
			}
			if err := s.Sync(time.Second); err == nil {
				t.Error("Sync after Close succeeded")
			}
		})
	}
}

// syncedCount returns count() once s has recorded everything sent to it so far.
func syncedCount(t *testing.T, s interface{ Sync(time.Duration) error }, count func() int) int {
	t.Helper()
	if err := s.Sync(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	return count()
}
