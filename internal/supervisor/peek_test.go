package supervisor

import (
	"io"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gotorsocks/torsocks/internal/socks5"
)

func peekPair(t *testing.T) (*rawConn, int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
	return &rawConn{fd: fds[0], pidfd: -1, deadline: time.Now().Add(time.Minute), own: true}, fds[1]
}

func rest(t *testing.T, fd int) string {
	t.Helper()
	b := make([]byte, 100)
	n, _, err := unix.Recvfrom(fd, b, unix.MSG_DONTWAIT)
	if err == unix.EAGAIN {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(b[:n])
}

// TestPeekReaderTakesOnlyWhatItHandsOut: bytes peeked and not handed out stay in the socket,
// across waits for more.
func TestPeekReaderTakesOnlyWhatItHandsOut(t *testing.T) {
	rc, peer := peekPair(t)
	pr := &peekReader{rc: rc}
	unix.Write(peer, []byte("ABCDE"))
	b := make([]byte, 6)
	if _, err := io.ReadFull(pr, b[:2]); err != nil || string(b[:2]) != "AB" {
		t.Fatalf("%q %v", b[:2], err)
	}
	if _, err := io.ReadFull(pr, b[:3]); err != nil || string(b[:3]) != "CDE" {
		t.Fatalf("%q %v", b[:3], err)
	}
	unix.Write(peer, []byte("FGHIJKbanner"))
	if _, err := io.ReadFull(pr, b[:6]); err != nil || string(b) != "FGHIJK" {
		t.Fatalf("%q %v", b, err)
	}
	if err := pr.done(); err != nil {
		t.Fatal(err)
	}
	if got := rest(t, rc.fd); got != "banner" {
		t.Fatalf("left in the socket: %q, want the banner", got)
	}
}

// TestPeekReaderHandshake: a pipelined handshake over peekReader leaves a banner that came with
// the reply to the relay, and an EOF in the middle of the reply is an error.
func TestPeekReaderHandshake(t *testing.T) {
	for _, tc := range []struct {
		name, answers, left string
		ok, lowat           bool
	}{
		{"long name", "\x05\x00\x05\x00\x00\x03d" + strings.Repeat("a", 100) + "\x00\x50220 smtp", "220 smtp", true, true},
		{"lowat", "\x05\x00\x05\x00\x00\x01\x01\x02\x03\x04\x00\x50SSH", "SSH", true, true},
		{"ipv4", "\x05\x00\x05\x00\x00\x01\x01\x02\x03\x04\x00\x50", "", true, false},
		{"banner", "\x05\x00\x05\x00\x00\x01\x01\x02\x03\x04\x00\x50SSH-2.0-x\r\n", "SSH-2.0-x\r\n", true, false},
		{"name", "\x05\x00\x05\x00\x00\x03\x03abc\x00\x50220 smtp", "220 smtp", true, false},
		{"refused", "\x05\x00\x05\x05\x00\x01\x00\x00\x00\x00\x00\x00", "", false, false},
		{"short", "\x05\x00\x05\x00\x00\x01\x01\x02", "", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc, peer := peekPair(t)
			unix.Write(peer, []byte(tc.answers))
			if !tc.ok {
				unix.Shutdown(peer, unix.SHUT_WR)
			}
			pr := &peekReader{rc: rc}
			if tc.lowat {
				if err := unix.SetsockoptInt(rc.fd, unix.SOL_SOCKET, unix.SO_RCVLOWAT, 6); err != nil {
					t.Skip(err)
				}
				pr.raised = true
			}
			_, err := socks5.HandshakePipelined(struct {
				io.Reader
				io.Writer
			}{pr, rc}, socks5.Request{Cmd: socks5.CmdConnect, Host: "example.com", Port: 80}, nil)
			if (err == nil) != tc.ok {
				t.Fatalf("handshake: %v", err)
			}
			if !tc.ok {
				return
			}
			if err := pr.done(); err != nil {
				t.Fatal(err)
			}
			if lw, _ := unix.GetsockoptInt(rc.fd, unix.SOL_SOCKET, unix.SO_RCVLOWAT); lw != 1 {
				t.Fatalf("SO_RCVLOWAT left at %d", lw)
			}
			if got := rest(t, rc.fd); got != tc.left {
				t.Fatalf("left in the socket: %q, want %q", got, tc.left)
			}
		})
	}
}
