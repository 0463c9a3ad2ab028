package integration

import (
	"context"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Descriptors inherited from whoever starts torsocks are checked against an allowlist before the
// program starts (internal/run.checkInherited). Before it, only internet and packet sockets were
// refused: an io_uring instance, an attached TUN device, a unix socket with a socket queued in it
// or a netlink socket went on to the program, and with them a way around Tor.

// torsocksWith runs `torsocks true` with files as descriptors 3, 4, ..., bounded in time.
func torsocksWith(t *testing.T, files ...*os.File) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, torsocksBin, "true")
	cmd.ExtraFiles = files
	return runBounded(t, ctx, cmd)
}

// expectRefused fails the test unless torsocks exited 1 naming descriptor fd and each of what.
func expectRefused(t *testing.T, r result, fd int, what ...string) {
	t.Helper()
	if r.code != 1 || !strings.Contains(r.stderr, "descriptor "+strconv.Itoa(fd)+" is ") || !strings.Contains(r.stderr, "refuses to start") {
		t.Fatalf("inherited descriptor %d not refused: exit %d, stderr %q", fd, r.code, r.stderr)
	}
	for _, w := range what {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("refusal does not say %q: %q", w, r.stderr)
		}
	}
}

// fdFile wraps a raw descriptor as a file closed at the end of the test.
func fdFile(t *testing.T, fd int, name string) *os.File {
	t.Helper()
	f := os.NewFile(uintptr(fd), name)
	t.Cleanup(func() { f.Close() })
	return f
}

// An io_uring instance with SQPOLL, made by a C program that then execs torsocks with the ring
// at descriptor 7: a kernel thread would carry out the program's IORING_OP_SOCKET and
// IORING_OP_CONNECT submissions with no system call for the filter to see.
func TestInheritedIOUringRefused(t *testing.T) {
	env(t)
	bin := buildC(t, "inh_uring")
	r := runCmd(t, nil, bin, "7", torsocksBin, "true")
	if r.code == 3 {
		// A kernel feature (kernel.io_uring_disabled, CONFIG_IO_URING), not a prerequisite .ci/run
		// installs: a skip in CI too.
		t.Skipf("no io_uring: %s", r.stdout)
	}
	expectRefused(t, r, 7, "an io_uring instance")
}

// A TUN device attached to an interface: packets written to it leave through that interface.
func TestInheritedTUNRefused(t *testing.T) {
	env(t)
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("/dev/net/tun: %v", err) // a kernel feature (CONFIG_TUN): a skip in CI too
	}
	f := fdFile(t, fd, "tun")
	ifr, err := unix.NewIfreq("tsinherit0")
	if err != nil {
		t.Fatal(err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		t.Logf("TUNSETIFF: %v (the unattached descriptor is refused all the same)", err)
	}
	expectRefused(t, torsocksWith(t, f), 3, "a TUN device (/dev/net/tun)")
}

// A unix socket with an unconnected UDP socket queued in it (SCM_RIGHTS): the program would
// receive a socket of the caller's network namespace, made outside torsocks. Also with the
// descriptor behind plain data, and on a datagram socket.
func TestInheritedUnixRightsRefused(t *testing.T) {
	env(t)
	udp, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(udp)
	for _, c := range []struct {
		name  string
		typ   int
		ahead string // plain data sent before the descriptor
		want  string
	}{
		{"stream", unix.SOCK_STREAM, "", "a unix socket with a descriptor queued (SCM_RIGHTS)"},
		{"stream, data ahead", unix.SOCK_STREAM, "hello", "queued"},
		{"dgram", unix.SOCK_DGRAM, "", "a unix socket with a descriptor queued (SCM_RIGHTS)"},
		{"seqpacket", unix.SOCK_SEQPACKET, "", "a unix socket with a descriptor queued (SCM_RIGHTS)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, err := unix.Socketpair(unix.AF_UNIX, c.typ|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			fdFile(t, p[1], "sending end")
			inherited := fdFile(t, p[0], "inherited")
			if c.ahead != "" {
				if _, err := unix.Write(p[1], []byte(c.ahead)); err != nil {
					t.Fatal(err)
				}
			}
			if err := unix.Sendmsg(p[1], []byte("x"), unix.UnixRights(udp), nil, 0); err != nil {
				t.Fatal(err)
			}
			expectRefused(t, torsocksWith(t, inherited), 3, c.want)
			// Peeked, not read: the data and the descriptor are still queued.
			buf := make([]byte, 64)
			oob := make([]byte, unix.CmsgSpace(4))
			n, oobn, _, _, err := unix.Recvmsg(p[0], buf, oob, unix.MSG_DONTWAIT)
			if err != nil || n == 0 {
				t.Fatalf("queue after torsocks: %d bytes, %v", n, err)
			}
			if c.ahead == "" && oobn == 0 {
				t.Errorf("the descriptor was taken out of the queue")
			}
			if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil && len(msgs) > 0 {
				fds, _ := unix.ParseUnixRights(&msgs[0])
				for _, fd := range fds {
					unix.Close(fd)
				}
			}
		})
	}
}

// A netlink socket: the kernel's routing and interface configuration, from outside torsocks.
func TestInheritedNetlinkRefused(t *testing.T) {
	env(t)
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	expectRefused(t, torsocksWith(t, fdFile(t, fd, "netlink")), 3, "a netlink socket")
}

// What cannot carry traffic still goes on to the program: a file, a pipe, /dev/null, a terminal,
// an empty unix socketpair end, a listening unix socket, an eventfd (descriptors 3 to 9).
func TestInheritedAllowed(t *testing.T) {
	env(t)
	file, err := os.CreateTemp(t.TempDir(), "inherited")
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	ptmx, tty := openPTY(t)
	defer ptmx.Close()
	defer tty.Close()
	p, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	end := fdFile(t, p[0], "end")
	fdFile(t, p[1], "other end")
	ln, err := net.Listen("unix", "@torsocks-inherited-allowed")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	lf, err := ln.(*net.UnixListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	r := torsocksWith(t, file, pw, null, tty, end, lf, fdFile(t, efd, "eventfd"))
	if r.code != 0 {
		t.Fatalf("torsocks true with harmless descriptors inherited: exit %d, stderr %q", r.code, r.stderr)
	}
}

// openPTY returns a new pseudo-terminal's master and its terminal side.
func openPTY(t *testing.T) (*os.File, *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	var unlock int32
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, m.Fd(), unix.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); e != 0 {
		t.Fatal(e)
	}
	n, err := unix.IoctlGetUint32(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(int(n)), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	return m, s
}
