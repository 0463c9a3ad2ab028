package socks5test

import (
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gotorsocks/torsocks/internal/netnstest"
)

// TestMain runs this package's tests in a private network namespace when it can (root);
// the tests above only need 127.0.0.1 and run either way.
func TestMain(m *testing.M) { netnstest.Main(m) }

// TestDesignAddresses wires the server and canaries as integration tests will: SOCKS on
// 127.0.0.1 and [::1], dialling out from the SOCKS source addresses to the destination host.
func TestDesignAddresses(t *testing.T) {
	netnstest.Require(t)
	s := startServer(t, Options{
		Listen:   []string{"127.0.0.1:0", "[::1]:0"},
		SourceV4: netnstest.SocksSrcV4,
		SourceV6: netnstest.SocksSrcV6,
	})
	for _, dest := range []netip.Addr{netnstest.DestV4, netnstest.DestV6} {
		can := startCanary(t, CanaryOptions{
			Addr:    netip.AddrPortFrom(dest, 80).String(),
			Allowed: []netip.Addr{netnstest.SocksSrcV4, netnstest.SocksSrcV6},
		})
		for _, proxy := range s.Addrs() {
			c, rep, err := dialVia(t, "tcp", proxy.String(), connectReq(can.AddrPort()), nil)
			if err != nil {
				t.Fatalf("via %s to %s: %v", proxy, dest, err)
			}
			// The reply's family follows the client's connection: 10 bytes over IPv4, 22 over IPv6.
			if v6 := strings.HasPrefix(proxy.String(), "["); rep.Addr.Is6() != v6 {
				t.Errorf("via %s: reply address %v", proxy, rep.Addr)
			}
			io.WriteString(c, "GET / HTTP/1.0\r\n\r\n")
			resp, _ := io.ReadAll(c)
			wantSrc := netnstest.SocksSrcV4
			if dest.Is6() {
				wantSrc = netnstest.SocksSrcV6
			}
			want := "says hello from " + net.JoinHostPort(wantSrc.String(), "") // any port
			if !strings.Contains(string(resp), want) {
				t.Errorf("via %s to %s: %q lacks %q", proxy, dest, resp, want)
			}
		}
		// A direct connection is a leak, seen from the destination's own address.
		d, err := net.Dial("tcp", can.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		d.Close()
		if !can.WaitAccepted(3, 5*time.Second) {
			t.Fatal("direct connection not seen")
		}
		if l := can.Leaks(); len(l) != 1 || l[0].Addr() != dest {
			t.Errorf("%s: leaks %v, want one from %v", dest, l, dest)
		}
	}
	// DNS canary on the nameserver addresses.
	for _, ns := range []netip.Addr{netnstest.NameserverV4, netnstest.NameserverV6} {
		u, err := StartUDPCanary(netip.AddrPortFrom(ns, 53).String())
		if err != nil {
			t.Fatal(err)
		}
		c, err := net.Dial("udp", u.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("q"))
		c.Close()
		if err := u.Sync(5 * time.Second); err != nil {
			t.Fatal(err)
		}
		if u.Packets() != 1 {
			t.Errorf("UDP canary %v: %d packets", ns, u.Packets())
		}
		u.Close()
	}
}
