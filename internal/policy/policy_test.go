package policy

import (
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

func TestConnect(t *testing.T) {
	socks := netip.MustParseAddrPort("127.0.0.1:9050")
	strict := &Policy{SocksPorts: []netip.AddrPort{socks}}
	local := &Policy{AllowOutboundLocalhost: 1, SocksPorts: []netip.AddrPort{socks}}
	for _, c := range []struct {
		p     *Policy
		dest  string
		want  Action
		errno unix.Errno
	}{
		{strict, "203.0.113.10:80", Proxy, 0},
		{strict, "[2001:db8::10]:80", Proxy, 0},
		{strict, "127.0.0.1:9050", Direct, 0},
		{strict, "127.0.0.1:80", Refuse, unix.EPERM},
		{strict, "127.1.2.3:80", Refuse, unix.EPERM},
		{strict, "[::1]:80", Refuse, unix.EPERM},
		{strict, "0.0.0.0:80", Refuse, unix.EPERM},
		{strict, "[::]:80", Refuse, unix.EPERM},
		{strict, "224.0.0.1:80", Refuse, unix.ENETUNREACH},
		{strict, "203.0.113.10:0", Refuse, unix.ECONNREFUSED},
		{local, "127.0.0.1:80", Direct, 0},
		{local, "[::1]:80", Direct, 0},
		{local, "0.0.0.0:80", Refuse, unix.EPERM},
	} {
		d := c.p.Connect(netip.MustParseAddrPort(c.dest))
		if d.Action != c.want || d.Errno != c.errno {
			t.Errorf("Connect(%s) = %v %v (%s), want %v %v", c.dest, d.Action, d.Errno, d.Reason, c.want, c.errno)
		}
		if d.Action == Refuse && d.Reason == "" {
			t.Errorf("Connect(%s): refusal without a reason", c.dest)
		}
	}
}

func TestSocket(t *testing.T) {
	p := &Policy{EnableIPv6: true}
	no6 := &Policy{}
	udp := &Policy{EnableIPv6: true, UDPSandbox: true}
	sealed := &Policy{EnableIPv6: true, UDPSandbox: true, SealedTCP: true}
	sealedNo6 := &Policy{UDPSandbox: true, SealedTCP: true}
	for _, c := range []struct {
		p                 *Policy
		domain, typ, prot int
		want              Action
		errno             unix.Errno
	}{
		{p, unix.AF_INET, unix.SOCK_DGRAM, 0, Refuse, unix.EPERM},
		{p, unix.AF_INET6, unix.SOCK_DGRAM | unix.SOCK_CLOEXEC, 0, Refuse, unix.EPERM},
		{p, unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_ICMP, Refuse, unix.EPERM},
		{p, unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_TCP, Refuse, unix.EPERM},
		{p, unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_SCTP, Refuse, unix.EPERM},
		{p, unix.AF_PACKET, unix.SOCK_RAW, 0, Refuse, unix.EPERM},
		{p, unix.AF_VSOCK, unix.SOCK_STREAM, 0, Refuse, unix.EAFNOSUPPORT},
		{p, unix.AF_INET6, unix.SOCK_STREAM, 0, Direct, 0},
		{no6, unix.AF_INET6, unix.SOCK_STREAM, 0, Refuse, unix.ENOSYS},
		{p, unix.AF_UNIX, unix.SOCK_STREAM, 0, Direct, 0},
		{udp, unix.AF_INET, unix.SOCK_DGRAM, 0, Sandboxed, 0},
		{udp, unix.AF_INET6, unix.SOCK_DGRAM, unix.IPPROTO_UDP, Sandboxed, 0},
		{udp, unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_ICMP, Refuse, unix.EPERM},
		{udp, unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_UDP, Refuse, unix.EPERM},
		{udp, unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_UDPLITE, Refuse, unix.EPERM},
		{sealed, unix.AF_INET, unix.SOCK_STREAM | unix.SOCK_NONBLOCK, 0, Sandboxed, 0},
		{sealed, unix.AF_INET6, unix.SOCK_STREAM, unix.IPPROTO_TCP, Sandboxed, 0},
		{sealed, unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_SCTP, Refuse, unix.EPERM},
		{sealed, unix.AF_UNIX, unix.SOCK_STREAM, 0, Direct, 0},
		{sealed, unix.AF_INET, unix.SOCK_DGRAM, 0, Sandboxed, 0},
		{sealedNo6, unix.AF_INET6, unix.SOCK_STREAM, 0, Refuse, unix.ENOSYS},
	} {
		d := c.p.Socket(c.domain, c.typ, c.prot)
		if d.Action != c.want || d.Errno != c.errno {
			t.Errorf("Socket(%d,%d,%d) = %v %v, want %v %v", c.domain, c.typ, c.prot, d.Action, d.Errno, c.want, c.errno)
		}
	}
}

func TestListen(t *testing.T) {
	p := &Policy{}
	in := &Policy{AllowInbound: true}
	for _, c := range []struct {
		p    *Policy
		addr string
		want Action
	}{
		{p, "127.0.0.1:8080", Direct},
		{p, "[::1]:8080", Direct}, // torsocks wrongly refuses [::1]
		{p, "[::ffff:127.0.0.1]:8080", Direct},
		{p, "0.0.0.0:8080", Refuse},
		{p, "[::]:8080", Refuse},
		{p, "203.0.113.10:8080", Refuse},
		{in, "0.0.0.0:8080", Direct},
	} {
		if d := c.p.Listen(netip.MustParseAddrPort(c.addr)); d.Action != c.want {
			t.Errorf("Listen(%s) = %v, want %v", c.addr, d.Action, c.want)
		}
	}
}
