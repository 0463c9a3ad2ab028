package netnstest

import (
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) { Main(m) }

func TestOnlyLoWithTestAddresses(t *testing.T) {
	Require(t)
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	if len(ifs) != 1 || ifs[0].Name != "lo" || ifs[0].Flags&net.FlagUp == 0 {
		t.Fatalf("interfaces %+v, want only lo, up", ifs)
	}
	addrs, err := ifs[0].Addrs()
	if err != nil {
		t.Fatal(err)
	}
	var have []netip.Addr
	for _, a := range addrs {
		p, err := netip.ParsePrefix(a.String())
		if err != nil {
			t.Fatalf("address %q: %v", a, err)
		}
		have = append(have, p.Addr())
	}
	for _, want := range append(Addrs(), netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()) {
		if !slices.Contains(have, want) {
			t.Errorf("lo lacks %v (has %v)", want, have)
		}
	}
}

// TestSourceAddressesWork connects from each SOCKS source address to each destination,
// as the SOCKS test server will, and checks the destination sees that source.
func TestSourceAddressesWork(t *testing.T) {
	Require(t)
	for _, pair := range [][2]netip.Addr{{SocksSrcV4, DestV4}, {SocksSrcV6, DestV6}, {DestV4, NameserverV4}} {
		src, dst := pair[0], pair[1]
		ln, err := net.Listen("tcp", netip.AddrPortFrom(dst, 0).String())
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src.AsSlice()}, Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatalf("%v -> %v: %v", src, dst, err)
		}
		defer c.Close()
		ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		got := s.RemoteAddr().(*net.TCPAddr).AddrPort().Addr()
		s.Close()
		if got != src {
			t.Errorf("%v -> %v: destination saw source %v", src, dst, got)
		}
	}
	// Without a bind, a connection to a test address comes from that address itself,
	// which is how a canary tells a leak from a proxied connection.
	ln, err := net.Listen("tcp", netip.AddrPortFrom(DestV4, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := s.RemoteAddr().(*net.TCPAddr).AddrPort().Addr(); got == SocksSrcV4 {
		t.Errorf("unbound connection came from the SOCKS source %v", got)
	}
}

func TestInsideMatchesRequire(t *testing.T) {
	if !Inside() {
		Skip(t, "not inside the private namespace")
	}
	if unavailableReason != "" {
		t.Fatalf("inside but unavailable: %s", unavailableReason)
	}
}

// Skip skips outside CI and fails in it: the test binary runs a test that calls Skip, once with
// CI=true and once without.
func TestSkipFailsInCI(t *testing.T) {
	if os.Getenv("NETNSTEST_SKIP_CHILD") == "1" {
		Skip(t, "the prerequisite is missing")
		return
	}
	for _, ci := range []string{"true", ""} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestSkipFailsInCI$", "-test.v")
		cmd.Env = append(os.Environ(), "NETNSTEST_SKIP_CHILD=1", "CI="+ci)
		out, err := cmd.CombinedOutput()
		if ci == "true" {
			if err == nil || !strings.Contains(string(out), "--- FAIL") || !strings.Contains(string(out), "must not skip: the prerequisite is missing") {
				t.Errorf("CI=true: want a failure, got %v:\n%s", err, out)
			}
		} else if err != nil || !strings.Contains(string(out), "--- SKIP") {
			t.Errorf("CI unset: want a skip, got %v:\n%s", err, out)
		}
	}
}
