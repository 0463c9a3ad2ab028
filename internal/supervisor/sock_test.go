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
