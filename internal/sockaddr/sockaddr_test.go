package sockaddr

import (
	"net/netip"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestAddrPort(t *testing.T) {
	var rsa unix.RawSockaddrAny
	sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(&rsa))
	sa4.Family = unix.AF_INET
	sa4.Addr = [4]byte{203, 0, 113, 10}
	p := (*[2]byte)(unsafe.Pointer(&sa4.Port))
	p[0], p[1] = 0x1f, 0x90 // 8080, network order
	if got, want := AddrPort(&rsa), netip.MustParseAddrPort("203.0.113.10:8080"); got != want {
		t.Errorf("AF_INET: %v, want %v", got, want)
	}
	rsa = unix.RawSockaddrAny{}
	sa6 := (*unix.RawSockaddrInet6)(unsafe.Pointer(&rsa))
	sa6.Family = unix.AF_INET6
	sa6.Addr = netip.MustParseAddr("2001:db8::10").As16()
	p = (*[2]byte)(unsafe.Pointer(&sa6.Port))
	p[0], p[1] = 0, 53
	if got, want := AddrPort(&rsa), netip.MustParseAddrPort("[2001:db8::10]:53"); got != want {
		t.Errorf("AF_INET6: %v, want %v", got, want)
	}
	rsa = unix.RawSockaddrAny{}
	rsa.Addr.Family = unix.AF_UNIX
	if got := AddrPort(&rsa); got.IsValid() {
		t.Errorf("AF_UNIX: %v, want the zero AddrPort", got)
	}
}
