package sandbox

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/gotorsocks/torsocks/internal/netnstest"
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

// The factory's errno reaches the caller as itself (the supervisor answers the program's socket()
// with it): EAFNOSUPPORT for a family the kernel does not know, EMFILE when the factory is out of
// descriptors; and the factory goes on serving.
func TestFactoryErrno(t *testing.T) {
	s, err := New(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	want := func(err, errno error) {
		t.Helper()
		var got unix.Errno
		if !errors.Is(err, errno) || !errors.As(err, &got) || got != errno {
			t.Fatalf("got %v (errno %d), want %v", err, got, errno)
		}
	}
	_, err = s.Socket(unix.AF_MAX+1, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	want(err, unix.EAFNOSUPPORT)

	var old unix.Rlimit
	if err := unix.Prlimit(s.pid, unix.RLIMIT_NOFILE, nil, &old); err != nil {
		t.Fatal(err)
	}
	low := unix.Rlimit{Cur: 3, Max: old.Max} // its socket to us is fd 3: no new descriptor fits
	if err := unix.Prlimit(s.pid, unix.RLIMIT_NOFILE, &low, nil); err != nil {
		t.Fatal(err)
	}
	_, err = s.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	want(err, unix.EMFILE)
	if err := unix.Prlimit(s.pid, unix.RLIMIT_NOFILE, &old, nil); err != nil {
		t.Fatal(err)
	}
	fd, err := s.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("after EMFILE: %v", err)
	}
	unix.Close(fd)
}

// A closed sandbox makes no sockets.
func TestClosed(t *testing.T) {
	s, err := New(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if fd, err := s.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); err == nil {
		unix.Close(fd)
		t.Fatal("a closed sandbox made a socket")
	}
}

// UDP and TCP sockets come from a pool refilled in the background; each is what the factory
// makes on demand: its kind (family, type, protocol, O_NONBLOCK or not), unbound, in the sandbox,
// with the default buffer sizes and no option set; none is handed out twice, and Close closes
// those left in the pool.
func TestPooledSocketsAreFresh(t *testing.T) {
	s, err := New(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	ref, err := s.SocketUnpooled(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	rcvbuf, _ := unix.GetsockoptInt(ref, unix.SOL_SOCKET, unix.SO_RCVBUF)
	unix.Close(ref)
	ref, err = s.SocketUnpooled(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	tcpRcvbuf, _ := unix.GetsockoptInt(ref, unix.SOL_SOCKET, unix.SO_RCVBUF)
	unix.Close(ref)
	seen := map[uint64]bool{}
	for i := 0; i < 5*poolBatch; i++ {
		for _, k := range []struct{ domain, typ, proto int }{
			{unix.AF_INET, unix.SOCK_DGRAM | unix.SOCK_NONBLOCK | unix.SOCK_CLOEXEC, unix.IPPROTO_UDP},
			{unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_UDP},
			{unix.AF_INET6, unix.SOCK_DGRAM | unix.SOCK_NONBLOCK, unix.IPPROTO_UDP},
			{unix.AF_INET, unix.SOCK_STREAM | unix.SOCK_NONBLOCK | unix.SOCK_CLOEXEC, 0},
			{unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_TCP},
			{unix.AF_INET6, unix.SOCK_STREAM | unix.SOCK_NONBLOCK, 0},
			{unix.AF_INET6, unix.SOCK_STREAM, 0},
		} {
			fd, err := s.Socket(k.domain, k.typ, k.proto)
			if err != nil {
				t.Fatal(err)
			}
			fl, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
			dom, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
			typ, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
			proto, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL)
			buf, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF)
			cookie, _ := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_COOKIE)
			sa, _ := unix.Getsockname(fd)
			var port int
			switch a := sa.(type) {
			case *unix.SockaddrInet4:
				port = a.Port
			case *unix.SockaddrInet6:
				port = a.Port
			}
			wantType, wantProto, wantBuf := unix.SOCK_DGRAM, unix.IPPROTO_UDP, rcvbuf
			nodelay, v6only := 0, 0
			if k.typ&unix.SOCK_STREAM != 0 {
				wantType, wantProto, wantBuf = unix.SOCK_STREAM, unix.IPPROTO_TCP, tcpRcvbuf
				nodelay, _ = unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY)
			}
			if k.domain == unix.AF_INET6 {
				v6only, _ = unix.GetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY)
			}
			switch {
			case (fl&unix.O_NONBLOCK != 0) != (k.typ&unix.SOCK_NONBLOCK != 0):
				t.Errorf("kind %+v: O_NONBLOCK %v", k, fl&unix.O_NONBLOCK != 0)
			case fl&^unix.O_NONBLOCK != unix.O_RDWR:
				t.Errorf("kind %+v: status flags %#x", k, fl)
			case dom != k.domain || typ != wantType || proto != wantProto:
				t.Errorf("kind %+v: got family %d type %d protocol %d", k, dom, typ, proto)
			case nodelay != 0 || v6only != 0:
				t.Errorf("kind %+v: TCP_NODELAY %d, IPV6_V6ONLY %d: an option is set", k, nodelay, v6only)
			case port != 0:
				t.Errorf("kind %+v: bound to port %d", k, port)
			case buf != wantBuf:
				t.Errorf("kind %+v: SO_RCVBUF %d, want %d", k, buf, wantBuf)
			case !s.Contains(fd):
				t.Errorf("kind %+v: not in the sandbox", k)
			case seen[cookie]:
				t.Errorf("kind %+v: socket handed out twice", k)
			}
			seen[cookie] = true
			unix.Close(fd)
		}
	}
	s.Close()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if fd, err := strconv.Atoi(e.Name()); err == nil && s.Contains(fd) {
			t.Errorf("descriptor %d, a sandbox socket, still open after Close", fd)
		}
	}
}

// The sandbox's TCP sockets get LoopbackCongestion by default (not the host's, which may pace:
// bbr), and a socket's own choice stays its own.
func TestLoopbackCongestion(t *testing.T) {
	s, err := New(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fd, err := s.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if cc, err := unix.GetsockoptString(fd, unix.IPPROTO_TCP, unix.TCP_CONGESTION); err != nil || cc != LoopbackCongestion {
		t.Fatalf("a sandbox TCP socket's congestion control: %q, %v; want %q", cc, err, LoopbackCongestion)
	}
	host, err := os.ReadFile("/proc/sys/net/ipv4/tcp_congestion_control")
	if err != nil {
		t.Fatal(err)
	}
	own := strings.TrimSpace(string(host)) // always allowed, with or without privilege
	if err := unix.SetsockoptString(fd, unix.IPPROTO_TCP, unix.TCP_CONGESTION, own); err != nil {
		t.Fatalf("TCP_CONGESTION %s: %v", own, err)
	}
	if cc, err := unix.GetsockoptString(fd, unix.IPPROTO_TCP, unix.TCP_CONGESTION); err != nil || cc != own {
		t.Fatalf("a sandbox TCP socket's congestion control once set: %q, %v; want %q", cc, err, own)
	}
}

// All kinds of pooled sockets together stay within poolCap (a sixteenth of the descriptor
// limit), so that a low limit leaves descriptors for the connections themselves.
func TestPoolCapped(t *testing.T) {
	s, err := New(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.poolMu.Lock()
	s.poolCap = 5
	s.poolMu.Unlock()
	for i := 0; i < 8; i++ {
		for _, typ := range []int{unix.SOCK_STREAM, unix.SOCK_STREAM | unix.SOCK_NONBLOCK, unix.SOCK_DGRAM} {
			fd, err := s.Socket(unix.AF_INET, typ, 0)
			if err != nil {
				t.Fatal(err)
			}
			unix.Close(fd)
		}
		s.refills.Wait()
		s.poolMu.Lock()
		total := 0
		for _, fds := range s.pool {
			total += len(fds)
		}
		pooled := s.pooled
		s.poolMu.Unlock()
		if total > 5 || pooled != total {
			t.Fatalf("round %d: %d sockets pooled (counted %d), want at most 5 and the count right", i, total, pooled)
		}
	}
}

// The sandbox's namespace reuses TIME_WAIT for every connection (setup): all of them are on lo,
// to the program's destination addresses, which the kernel's default (loopback addresses only)
// does not count. Read from a thread that joins the factory's network namespace.
func TestTimeWaitReuse(t *testing.T) {
	if os.Geteuid() != 0 {
		netnstest.Skip(t, "needs root to join the sandbox's network namespace")
	}
	s, err := New(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got := make(chan string, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends in the sandbox's namespace
		ns, err := unix.Open(fmt.Sprintf("/proc/%d/ns/net", s.pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			got <- err.Error()
			return
		}
		defer unix.Close(ns)
		if err := unix.Setns(ns, unix.CLONE_NEWNET); err != nil {
			got <- err.Error()
			return
		}
		b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_tw_reuse")
		if err != nil {
			got <- err.Error()
			return
		}
		got <- strings.TrimSpace(string(b))
	}()
	if v := <-got; v != "1" {
		t.Fatalf("tcp_tw_reuse in the sandbox: %q, want 1", v)
	}
}
