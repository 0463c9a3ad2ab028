package sandbox

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// A datagram to any address from a sandbox socket arrives inside the sandbox, as from the address
// it was sent to; nothing leaves (there is no other interface).
func TestAnyAddressIsLocal(t *testing.T) {
	s, err := New(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	srv, err := s.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(srv)
	if err := unix.Bind(srv, &unix.SockaddrInet4{Port: 53}); err != nil {
		t.Fatal(err)
	}
	cl, err := s.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(cl)
	if !s.Contains(cl) {
		t.Fatal("Contains: sandbox socket not recognised")
	}
	out, _ := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	defer unix.Close(out)
	if s.Contains(out) {
		t.Fatal("Contains: a socket of the test's own namespace recognised as sandboxed")
	}
	dst := &unix.SockaddrInet4{Port: 53, Addr: [4]byte{8, 8, 8, 8}}
	if err := unix.Sendto(cl, []byte("q"), 0, dst); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	n, _, err := unix.Recvfrom(srv, buf, 0)
	if err != nil || string(buf[:n]) != "q" {
		t.Fatalf("recv: %q %v", buf[:n], err)
	}
	// IPv6 too.
	srv6, _ := s.Socket(unix.AF_INET6, unix.SOCK_DGRAM, 0)
	defer unix.Close(srv6)
	unix.SetsockoptInt(srv6, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1)
	if err := unix.Bind(srv6, &unix.SockaddrInet6{Port: 53}); err != nil {
		t.Fatal(err)
	}
	cl6, _ := s.Socket(unix.AF_INET6, unix.SOCK_DGRAM, 0)
	defer unix.Close(cl6)
	if err := unix.Sendto(cl6, []byte("q6"), 0, &unix.SockaddrInet6{Port: 53, Addr: [16]byte{0x20, 0x01, 0x48, 0x60, 15: 0x88}}); err != nil {
		t.Fatal(err)
	}
	n, _, err = unix.Recvfrom(srv6, buf, 0)
	if err != nil || string(buf[:n]) != "q6" {
		t.Fatalf("recv6: %q %v", buf[:n], err)
	}
}

// The test binary doubles as the socket factory, as the torsocks binary does.
func TestMain(m *testing.M) {
	RunFactoryIfAsked()
	os.Exit(m.Run())
}
