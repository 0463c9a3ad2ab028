package dnsserver

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gotorsocks/torsocks/internal/netnstest"
	"github.com/gotorsocks/torsocks/internal/sandbox"
)

func TestMain(m *testing.M) {
	sandbox.RunFactoryIfAsked()
	os.Exit(m.Run())
}

// echoAnswerer answers every query with "answer:" and the query.
type echoAnswerer struct{}

func (echoAnswerer) Answer(_ context.Context, q []byte, _ int) []byte {
	return append([]byte("answer:"), q...)
}

// modes runs test with the server's UDP queries served by its own goroutines (Start) and by a
// poller of the test's, as the supervisor's waiting worker does (StartSide).
func modes(t *testing.T, test func(t *testing.T, start startFunc)) {
	t.Run("goroutines", func(t *testing.T) { test(t, Start) })
	t.Run("side", func(t *testing.T) {
		test(t, func(sb *sandbox.Sandbox, ans Answerer, log *slog.Logger, dropped Dropped) (*Server, error) {
			s, err := StartSide(sb, ans, log, dropped)
			if err != nil {
				return nil, err
			}
			stop := make(chan struct{})
			done := make(chan struct{})
			go sidePoller(s, stop, done)
			t.Cleanup(func() { close(stop); <-done })
			return s, nil
		})
	})
}

type startFunc func(*sandbox.Sandbox, Answerer, *slog.Logger, Dropped) (*Server, error)

// sidePoller polls s.SideFDs and serves them until stop is closed (10 ms polls, to see it).
func sidePoller(s *Server, stop, done chan struct{}) {
	defer close(done)
	for {
		select {
		case <-stop:
			return
		default:
		}
		var p []unix.PollFd
		for _, fd := range s.SideFDs() {
			p = append(p, unix.PollFd{Fd: int32(fd), Events: unix.POLLIN})
		}
		if len(p) == 0 {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		unix.Poll(p, 10)
		for _, f := range p {
			if f.Revents != 0 {
				s.ServeSide(int(f.Fd))
			}
		}
	}
}

// A query to port 53 of any address from a sandboxed socket is answered from that very address;
// DNS over TCP works from an announced port and not from another.
func TestServe(t *testing.T) { modes(t, testServe) }

func testServe(t *testing.T, start startFunc) {
	sb, err := sandbox.New(os.Args[0])
	if err != nil {
		netnstest.Skip(t, "no sandbox here: %v", err)
	}
	defer sb.Close()
	dropped := make(chan [2]string, 16)
	s, err := start(sb, echoAnswerer{}, slog.New(slog.NewTextHandler(io.Discard, nil)), func(src, dst netip.AddrPort, p []byte) bool {
		dropped <- [2]string{dst.String(), string(p)}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	for _, c := range []struct {
		family int
		to     unix.Sockaddr
	}{
		{unix.AF_INET, &unix.SockaddrInet4{Port: 53, Addr: [4]byte{8, 8, 8, 8}}},
		{unix.AF_INET6, &unix.SockaddrInet6{Port: 53, Addr: [16]byte{0x20, 0x01, 0x0d, 0xb8, 15: 0x53}}},
	} {
		fd, err := sb.Socket(c.family, unix.SOCK_DGRAM, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 3})
		if err := unix.Sendto(fd, []byte("q"), 0, c.to); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 100)
		n, from, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			t.Fatalf("family %d: no answer: %v", c.family, err)
		}
		if string(buf[:n]) != "answer:q" {
			t.Fatalf("family %d: %q", c.family, buf[:n])
		}
		switch f := from.(type) {
		case *unix.SockaddrInet4:
			if f.Addr != c.to.(*unix.SockaddrInet4).Addr || f.Port != 53 {
				t.Errorf("answer from %v, want the queried 8.8.8.8:53", f)
			}
		case *unix.SockaddrInet6:
			if f.Addr != c.to.(*unix.SockaddrInet6).Addr || f.Port != 53 {
				t.Errorf("answer from %v, want the queried nameserver", f)
			}
		}
	}

	// A datagram to another port is swallowed and handed to the Dropped callback.
	fd, _ := sb.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	defer unix.Close(fd)
	unix.Sendto(fd, []byte("quic"), 0, &unix.SockaddrInet4{Port: 443, Addr: [4]byte{203, 0, 113, 10}})
	select {
	case d := <-dropped:
		if d != [2]string{"203.0.113.10:443", "quic"} {
			t.Errorf("dropped datagram reported as %v", d)
		}
	case <-time.After(3 * time.Second):
		t.Error("dropped datagram not reported")
	}

	// DNS over TCP from an announced local port.
	tcpQuery := func(announce bool) ([]byte, error) {
		d := net.Dialer{Timeout: 3 * time.Second}
		ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}) // reserve a port
		if err != nil {
			return nil, err
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		d.LocalAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}
		if announce {
			s.Expect(uint16(port))
		}
		c, err := d.Dial("tcp", s.TCPAddr().String())
		if err != nil {
			return nil, err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		c.Write([]byte{0, 1, 'q'})
		var l [2]byte
		if _, err := io.ReadFull(c, l[:]); err != nil {
			return nil, err
		}
		b := make([]byte, binary.BigEndian.Uint16(l[:]))
		_, err = io.ReadFull(c, b)
		return b, err
	}
	if b, err := tcpQuery(true); err != nil || string(b) != "answer:q" {
		t.Errorf("DNS over TCP: %q %v", b, err)
	}
	if b, err := tcpQuery(false); err == nil {
		t.Errorf("DNS over TCP from an unannounced port answered: %q", b)
	}
}

// nowAnswerer answers "now:"+query at once, except queries starting with "wait", which it leaves
// to Answer ("later:"+query, after the next query was read into the same buffer).
type nowAnswerer struct{ later chan struct{} }

func (a nowAnswerer) Answer(_ context.Context, q []byte, _ int) []byte {
	<-a.later
	return append([]byte("later:"), q...)
}

func (a nowAnswerer) AnswerNow(q []byte, _ int) ([]byte, bool) {
	if string(q[:min(4, len(q))]) == "wait" {
		return nil, false
	}
	return append([]byte("now:"), q...), true
}

// With a NowAnswerer, what it can answer at once is answered, and the rest by Answer, with the
// query as it was received (the read buffer is reused meanwhile).
func TestAnswerNow(t *testing.T) { modes(t, testAnswerNow) }

func testAnswerNow(t *testing.T, start startFunc) {
	sb, err := sandbox.New(os.Args[0])
	if err != nil {
		netnstest.Skip(t, "no sandbox here: %v", err)
	}
	defer sb.Close()
	a := nowAnswerer{later: make(chan struct{})}
	s, err := start(sb, a, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fd, err := sb.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 3})
	ns := &unix.SockaddrInet4{Port: 53, Addr: [4]byte{192, 0, 2, 53}}
	recv := func() string {
		buf := make([]byte, 100)
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			t.Fatalf("no answer: %v", err)
		}
		return string(buf[:n])
	}
	for _, q := range []string{"wait-for-it", "quick"} {
		if err := unix.Sendto(fd, []byte(q), 0, ns); err != nil {
			t.Fatal(err)
		}
	}
	if r := recv(); r != "now:quick" {
		t.Fatalf("first answer %q, want now:quick", r)
	}
	close(a.later)
	if r := recv(); r != "later:wait-for-it" {
		t.Fatalf("second answer %q, want later:wait-for-it", r)
	}
}

// The catch-all sockets' filter passes every UDP datagram but those from or to port 53.
func TestCatchAllFilter(t *testing.T) {
	sb, err := sandbox.New(os.Args[0])
	if err != nil {
		netnstest.Skip(t, "no sandbox here: %v", err)
	}
	defer sb.Close()
	for _, c := range []struct {
		family int
		addr   func(port int) unix.Sockaddr
		local  unix.Sockaddr
		hdr    int // bytes before the UDP header in what the raw socket reads
	}{
		{unix.AF_INET, func(p int) unix.Sockaddr { return &unix.SockaddrInet4{Port: p, Addr: [4]byte{192, 0, 2, 1}} }, &unix.SockaddrInet4{Port: 53}, 20},
		{unix.AF_INET6, func(p int) unix.Sockaddr {
			return &unix.SockaddrInet6{Port: p, Addr: [16]byte{0x20, 0x01, 0x0d, 0xb8, 15: 1}}
		}, &unix.SockaddrInet6{Port: 53}, 0},
	} {
		raw, err := sb.SocketUnpooled(c.family, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(raw)
		if err := attachNotDNS(raw, c.family); err != nil {
			t.Fatal(err)
		}
		plain, err := sb.Socket(c.family, unix.SOCK_DGRAM, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(plain)
		from53, err := sb.Socket(c.family, unix.SOCK_DGRAM, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(from53)
		if c.family == unix.AF_INET6 {
			unix.SetsockoptInt(from53, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1)
		}
		if err := unix.Bind(from53, c.local); err != nil {
			t.Fatal(err)
		}
		// To port 53, from port 53, then to 4433, the one to pass: loopback delivers them in this
		// order, so anything passed of the first two is read before "other".
		unix.Sendto(plain, []byte("to53"), 0, c.addr(53))
		unix.Sendto(from53, []byte("from53"), 0, c.addr(5353))
		unix.Sendto(plain, []byte("other"), 0, c.addr(4433))
		unix.SetsockoptTimeval(raw, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 3})
		var got []string
		buf := make([]byte, 2048)
		for len(got) == 0 || got[len(got)-1] != "other" {
			n, _, err := unix.Recvfrom(raw, buf, 0)
			if err != nil {
				t.Errorf("family %d: %v", c.family, err)
				break
			}
			if n >= c.hdr+8 {
				got = append(got, string(buf[c.hdr+8:n]))
			}
		}
		if len(got) != 1 || got[0] != "other" {
			t.Errorf("family %d: the catch-all read %q, want only \"other\"", c.family, got)
		}
	}
}

// A side server's descriptors are gone from SideFDs once it is closed, and ServeSide of one of
// them (its number perhaps another descriptor's by then) does nothing.
func TestSideClosed(t *testing.T) {
	sb, err := sandbox.New(os.Args[0])
	if err != nil {
		netnstest.Skip(t, "no sandbox here: %v", err)
	}
	defer sb.Close()
	s, err := StartSide(sb, echoAnswerer{}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	fds := append([]int(nil), s.SideFDs()...)
	if len(fds) != 2 {
		t.Fatalf("SideFDs %v, want the IPv4 and IPv6 sockets", fds)
	}
	s.Close()
	if got := s.SideFDs(); got != nil {
		t.Errorf("SideFDs after Close: %v", got)
	}
	// The numbers reused by a pipe with a byte in it: ServeSide must not read from it.
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	unix.Write(p[1], []byte{1})
	s.ServeSide(p[0])
	s.ServeSide(fds[0])
	if n, _ := unix.Read(p[0], make([]byte, 1)); n != 1 {
		t.Error("ServeSide read from a descriptor that is not its own")
	}
}
