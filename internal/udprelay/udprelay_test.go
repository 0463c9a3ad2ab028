package udprelay

import (
	"net"
	"net/netip"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/gotorsocks/torsocks/internal/netnstest"
	"github.com/gotorsocks/torsocks/internal/sandbox"
)

func TestMain(m *testing.M) {
	sandbox.RunFactoryIfAsked()
	os.Exit(m.Run())
}

// A sandboxed UDP socket reaches a loopback service of the host through a mirror, connected or
// not, and gets its answers from the service's address.
func TestRelay(t *testing.T) {
	sb, err := sandbox.New(os.Args[0])
	if err != nil {
		netnstest.Skip(t, "no sandbox here: %v", err)
	}
	defer sb.Close()
	echo, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		b := make([]byte, 100)
		for {
			n, a, err := echo.ReadFromUDPAddrPort(b)
			if err != nil {
				return
			}
			echo.WriteToUDPAddrPort(append([]byte("echo:"), b[:n]...), a)
		}
	}()
	dst := echo.LocalAddr().(*net.UDPAddr).AddrPort()
	r := New(sb)
	defer r.Close()

	fd, err := sb.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 2})
	to := &unix.SockaddrInet4{Port: int(dst.Port()), Addr: dst.Addr().As4()}

	// Without a mirror the sandbox swallows it; Inject (what the catch-all calls) forwards it.
	if err := unix.Sendto(fd, []byte("first"), 0, to); err != nil {
		t.Fatal(err)
	}
	local, _ := unix.Getsockname(fd)
	src := netip.AddrPortFrom(netip.AddrFrom4(local.(*unix.SockaddrInet4).Addr), uint16(local.(*unix.SockaddrInet4).Port))
	if src.Addr().IsUnspecified() {
		src = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), src.Port())
	}
	if err := r.Inject(src, dst, []byte("first")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	n, from, err := unix.Recvfrom(fd, buf, 0)
	if err != nil || string(buf[:n]) != "echo:first" {
		t.Fatalf("injected datagram: %q %v", buf[:n], err)
	}
	if f := from.(*unix.SockaddrInet4); f.Port != int(dst.Port()) {
		t.Errorf("answer from port %d, want %d", f.Port, dst.Port())
	}
	// With the mirror in place, the sandbox accepts the datagram (the mirror keeps nothing: the
	// catch-all, here the test, injects each datagram once).
	if err := unix.Sendto(fd, []byte("second"), 0, to); err != nil {
		t.Fatal(err)
	}
	if err := r.Inject(src, dst, []byte("second")); err != nil {
		t.Fatal(err)
	}
	n, _, err = unix.Recvfrom(fd, buf, 0)
	if err != nil || string(buf[:n]) != "echo:second" {
		t.Fatalf("second datagram: %q %v", buf[:n], err)
	}
	// Answers the mirror sent back are not forwarded again.
	if err := r.Inject(dst, src, []byte("answer")); err != nil {
		t.Fatal(err)
	}
	if err := r.Ensure(netip.MustParseAddrPort("203.0.113.10:53")); err == nil {
		t.Error("Ensure accepted a non-loopback destination")
	}
}
