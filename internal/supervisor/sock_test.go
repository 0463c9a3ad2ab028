package supervisor

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseSockaddr(t *testing.T) {
	for _, c := range []struct {
		domain int
		ap     string
	}{
		{unix.AF_INET, "203.0.113.10:80"},
		{unix.AF_INET6, "[2001:db8::10]:443"},
		{unix.AF_INET6, "[::ffff:203.0.113.10]:80"},
	} {
		ap := netip.MustParseAddrPort(c.ap)
		b := sockaddrBytes(c.domain, ap)
		got, unspec, err := parseSockaddr(c.domain, b)
		want := netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		if err != nil || unspec || got != want {
			t.Errorf("%s: got %v %v %v", c.ap, got, unspec, err)
		}
	}
	short := sockaddrBytes(unix.AF_INET, netip.MustParseAddrPort("203.0.113.10:80"))[:8]
	if _, _, err := parseSockaddr(unix.AF_INET, short); err != unix.EINVAL {
		t.Errorf("short sockaddr_in: %v", err)
	}
	v4 := sockaddrBytes(unix.AF_INET, netip.MustParseAddrPort("203.0.113.10:80"))
	if _, _, err := parseSockaddr(unix.AF_INET6, append(v4, make([]byte, 12)...)); err != unix.EAFNOSUPPORT {
		t.Errorf("AF_INET address on an IPv6 socket: %v", err)
	}
	if _, unspec, _ := parseSockaddr(unix.AF_INET, []byte{0, 0}); !unspec {
		t.Error("AF_UNSPEC not recognised")
	}
}

// FuzzParseSockaddr: addresses come from the traced program's memory and may be anything.
func FuzzParseSockaddr(f *testing.F) {
	f.Add(unix.AF_INET, sockaddrBytes(unix.AF_INET, netip.MustParseAddrPort("203.0.113.10:80")))
	f.Add(unix.AF_INET6, sockaddrBytes(unix.AF_INET6, netip.MustParseAddrPort("[fe80::1]:80")))
	f.Add(unix.AF_INET6, []byte{10, 0})
	f.Fuzz(func(t *testing.T, domain int, b []byte) {
		ap, unspec, err := parseSockaddr(domain, b)
		if err != nil || unspec {
			return
		}
		if len(b) < 2 || int(binary.LittleEndian.Uint16(b)) != domain {
			t.Fatalf("accepted family %v for domain %d", b, domain)
		}
		if !ap.Addr().IsValid() {
			t.Fatalf("invalid address accepted from %x", b)
		}
		back, _, err := parseSockaddr(domain, sockaddrBytes(domain, ap))
		if err != nil || back.Port() != ap.Port() || back.Addr().WithZone("") != ap.Addr().WithZone("") {
			t.Fatalf("round trip %v -> %v (%v)", ap, back, err)
		}
	})
}

// TestRawSockNames: sockName, accept4 and recvmsgFrom give the addresses x/sys/unix's own calls
// give, for IPv4 and IPv6 sockets (and none for a unix socket).
func TestRawSockNames(t *testing.T) {
	for _, c := range []struct {
		domain int
		addr   string
	}{{unix.AF_INET, "127.0.0.1:0"}, {unix.AF_INET6, "[::1]:0"}} {
		ln, err := unix.Socket(c.domain, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(ln)
		sa, _ := toSockaddr(c.domain, netip.MustParseAddrPort(c.addr))
		if err := unix.Bind(ln, sa); err != nil {
			t.Skipf("bind %s: %v", c.addr, err)
		}
		unix.Listen(ln, 1)
		lnAddr, err := sockName(unix.SYS_GETSOCKNAME, ln)
		if err != nil || lnAddr.Port() == 0 {
			t.Fatalf("getsockname of the listener: %v %v", lnAddr, err)
		}
		cl, _ := unix.Socket(c.domain, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		defer unix.Close(cl)
		if isConnected(cl) {
			t.Fatal("an unconnected socket reported connected")
		}
		sa, _ = toSockaddr(c.domain, lnAddr)
		if err := unix.Connect(cl, sa); err != nil {
			t.Fatal(err)
		}
		fd, peer, err := accept4(ln, unix.SOCK_CLOEXEC)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		local, err := boundAddr(cl, c.domain)
		if err != nil || peer != local {
			t.Errorf("accept4 peer %v, client's own address %v (%v)", peer, local, err)
		}
		usa, _ := unix.Getsockname(cl)
		if want := sockaddrAddrPort(usa); want != local {
			t.Errorf("boundAddr %v, unix.Getsockname %v", local, want)
		}
		if p, err := sockName(unix.SYS_GETPEERNAME, cl); err != nil || p != lnAddr || !isConnected(cl) {
			t.Errorf("getpeername %v (%v), want %v", p, err, lnAddr)
		}
		// connectedState agrees with getpeername: listening, unconnected, established, and
		// half-closed by the peer (CLOSE_WAIT).
		fresh, _ := unix.Socket(c.domain, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		defer unix.Close(fresh)
		unix.Shutdown(fd, unix.SHUT_WR)
		for _, s := range []int{ln, fresh, cl, fd} {
			st, err := tcpState(s)
			if err != nil || connectedState(st) != isConnected(s) {
				t.Errorf("state %d (%v): connectedState %v, getpeername says connected %v", st, err, connectedState(st), isConnected(s))
			}
		}
	}
	for _, c := range []struct {
		domain int
		addr   string
	}{{unix.AF_INET, "127.0.0.1:0"}, {unix.AF_INET6, "[::1]:0"}} {
		rx, _ := unix.Socket(c.domain, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		defer unix.Close(rx)
		sa, _ := toSockaddr(c.domain, netip.MustParseAddrPort(c.addr))
		if err := unix.Bind(rx, sa); err != nil {
			t.Skipf("bind %s: %v", c.addr, err)
		}
		rxAddr, _ := boundAddr(rx, c.domain)
		tx, _ := unix.Socket(c.domain, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		defer unix.Close(tx)
		sa, _ = toSockaddr(c.domain, rxAddr)
		if err := unix.Sendto(tx, []byte("hi"), 0, sa); err != nil {
			t.Fatal(err)
		}
		txAddr, _ := boundAddr(tx, c.domain)
		txAddr = netip.AddrPortFrom(rxAddr.Addr(), txAddr.Port()) // sent from the loopback address
		buf := make([]byte, 16)
		n, _, from, err := recvmsgFrom(rx, buf, nil, 0)
		if err != nil || string(buf[:n]) != "hi" || from != txAddr {
			t.Errorf("recvmsgFrom: %q from %v (%v), want \"hi\" from %v", buf[:n], from, err, txAddr)
		}
	}
	u, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(u)
	if ap, err := sockName(unix.SYS_GETSOCKNAME, u); err != nil || ap.IsValid() {
		t.Errorf("unix socket: %v %v, want no inet address", ap, err)
	}
}

// TestAcceptedInheritsNodelay: a socket accepted from a listener with TCP_NODELAY has it too, and
// one from a listener without it has not (what innerCongestion relies on), IPv4 and IPv6.
func TestAcceptedInheritsNodelay(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		for _, nodelay := range []int{0, 1} {
			ap := netip.MustParseAddrPort(addr)
			domain := unix.AF_INET
			if ap.Addr().Is6() {
				domain = unix.AF_INET6
			}
			ln, err := unix.Socket(domain, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(ln)
			if err := unix.SetsockoptInt(ln, unix.IPPROTO_TCP, unix.TCP_NODELAY, nodelay); err != nil {
				t.Fatal(err)
			}
			sa, _ := toSockaddr(domain, ap)
			if err := unix.Bind(ln, sa); err != nil {
				t.Skipf("bind %s: %v", addr, err)
			}
			unix.Listen(ln, 1)
			lnAddr, _ := sockName(unix.SYS_GETSOCKNAME, ln)
			cl, _ := unix.Socket(domain, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			defer unix.Close(cl)
			sa, _ = toSockaddr(domain, lnAddr)
			if err := unix.Connect(cl, sa); err != nil {
				t.Fatal(err)
			}
			fd, _, err := accept4(ln, unix.SOCK_CLOEXEC)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(fd)
			got, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY)
			if err != nil || (got != 0) != (nodelay != 0) {
				t.Errorf("%s: listener TCP_NODELAY %d, accepted socket %d (%v)", addr, nodelay, got, err)
			}
		}
	}
}
