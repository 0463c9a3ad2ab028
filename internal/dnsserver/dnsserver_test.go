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

// A query to port 53 of any address from a sandboxed socket is answered from that very address;
// DNS over TCP works from an announced port and not from another.
func TestServe(t *testing.T) {
	sb, err := sandbox.New(os.Args[0])
	if err != nil {
		netnstest.Skip(t, "no sandbox here: %v", err)
	}
	defer sb.Close()
	dropped := make(chan [2]string, 16)
	s, err := Start(sb, echoAnswerer{}, slog.New(slog.NewTextHandler(io.Discard, nil)), func(src, dst netip.AddrPort, p []byte) bool {
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
