package run

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// fdCase is one kind of descriptor: how to make it, and the substring of the refusal ("" when
// it must be allowed).
type fdCase struct {
	name   string
	make   func(t *testing.T) int
	refuse string
}

func closeLater(t *testing.T, fds ...int) {
	t.Cleanup(func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	})
}

func mustFD(t *testing.T, fd int, err error) int {
	t.Helper()
	if err != nil {
		// Kernel features (vsock, io_uring, ...), not prerequisites .ci/run installs: a skip in CI too.
		t.Skipf("cannot make the descriptor: %v", err)
	}
	closeLater(t, fd)
	return fd
}

func openFD(path string, flags int) func(t *testing.T) int {
	return func(t *testing.T) int {
		fd, err := unix.Open(path, flags|unix.O_CLOEXEC, 0)
		return mustFD(t, fd, err)
	}
}

func socketFD(domain, typ, proto int) func(t *testing.T) int {
	return func(t *testing.T) int {
		fd, err := unix.Socket(domain, typ|unix.SOCK_CLOEXEC, proto)
		return mustFD(t, fd, err)
	}
}

// pair returns both ends of a unix socketpair of type typ.
func pair(t *testing.T, typ int) (int, int) {
	t.Helper()
	p, err := unix.Socketpair(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	closeLater(t, p[0], p[1])
	return p[0], p[1]
}

// withRights is one end of a socketpair whose other end sent a UDP socket over SCM_RIGHTS.
func withRights(typ int, data []byte) func(t *testing.T) int {
	return func(t *testing.T) int {
		a, b := pair(t, typ)
		udp := socketFD(unix.AF_INET, unix.SOCK_DGRAM, 0)(t)
		if err := unix.Sendmsg(b, data, unix.UnixRights(udp), nil, 0); err != nil {
			t.Fatal(err)
		}
		return a
	}
}

// ioUring makes an io_uring instance with IORING_SETUP_SQPOLL (flag 2).
func ioUring(t *testing.T) int {
	var params [120]byte
	*(*uint32)(unsafe.Pointer(&params[8])) = 2
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, 4, uintptr(unsafe.Pointer(&params[0])), 0)
	if errno != 0 {
		return mustFD(t, -1, errno)
	}
	return mustFD(t, int(fd), nil)
}

func TestInspectInherited(t *testing.T) {
	cases := []fdCase{
		{"file", func(t *testing.T) int {
			f, err := os.CreateTemp(t.TempDir(), "f")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { f.Close() })
			return int(f.Fd())
		}, ""},
		{"directory", openFD("/", unix.O_RDONLY|unix.O_DIRECTORY), ""},
		{"pipe", func(t *testing.T) int {
			var p [2]int
			if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
				t.Fatal(err)
			}
			closeLater(t, p[0], p[1])
			return p[1]
		}, ""},
		{"memfd", func(t *testing.T) int {
			fd, err := unix.MemfdCreate("x", unix.MFD_CLOEXEC)
			return mustFD(t, fd, err)
		}, ""},
		{"/dev/null", openFD("/dev/null", unix.O_RDWR), ""},
		{"/dev/urandom", openFD("/dev/urandom", unix.O_RDONLY), ""},
		{"/proc file read-only", openFD("/proc/self/status", unix.O_RDONLY), ""},
		{"/proc/self/mem writable", openFD("/proc/self/mem", unix.O_RDWR), "writable kernel interface file"},
		{"O_PATH", openFD("/etc", unix.O_PATH), ""},
		{"eventfd", func(t *testing.T) int {
			fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
			return mustFD(t, fd, err)
		}, ""},
		{"timerfd", func(t *testing.T) int {
			fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_CLOEXEC)
			return mustFD(t, fd, err)
		}, ""},
		{"inotify", func(t *testing.T) int {
			fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
			return mustFD(t, fd, err)
		}, ""},
		{"terminal", func(t *testing.T) int {
			m := openFD("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY)(t)
			if err := unix.IoctlSetPointerInt(m, unix.TIOCSPTLCK, 0); err != nil {
				t.Fatal(err)
			}
			n, err := unix.IoctlGetUint32(m, unix.TIOCGPTN)
			if err != nil {
				t.Fatal(err)
			}
			return openFD("/dev/pts/"+strconv.Itoa(int(n)), unix.O_RDWR|unix.O_NOCTTY)(t)
		}, ""},
		{"pty master", openFD("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY), "pseudo-terminal master"},
		{"empty unix stream", func(t *testing.T) int { a, _ := pair(t, unix.SOCK_STREAM); return a }, ""},
		{"empty unix dgram", func(t *testing.T) int { a, _ := pair(t, unix.SOCK_DGRAM); return a }, ""},
		{"empty unix seqpacket", func(t *testing.T) int { a, _ := pair(t, unix.SOCK_SEQPACKET); return a }, ""},
		{"unix seqpacket at EOF", func(t *testing.T) int {
			a, b := pair(t, unix.SOCK_SEQPACKET)
			unix.Shutdown(b, unix.SHUT_WR)
			return a
		}, ""},
		{"unconnected unix stream", socketFD(unix.AF_UNIX, unix.SOCK_STREAM, 0), ""},
		{"listening unix", func(t *testing.T) int {
			fd := socketFD(unix.AF_UNIX, unix.SOCK_STREAM, 0)(t)
			if err := unix.Bind(fd, &unix.SockaddrUnix{Name: "@torsocks-inherited-test"}); err != nil {
				t.Fatal(err)
			}
			if err := unix.Listen(fd, 1); err != nil {
				t.Fatal(err)
			}
			return fd
		}, ""},
		{"unix stream with data", func(t *testing.T) int {
			a, b := pair(t, unix.SOCK_STREAM)
			unix.Write(b, []byte("hello"))
			return a
		}, "data queued"},
		{"unix dgram with empty datagram", func(t *testing.T) int {
			a, b := pair(t, unix.SOCK_DGRAM)
			unix.Write(b, nil)
			return a
		}, "data queued"},
		{"unix seqpacket with empty message", func(t *testing.T) int {
			a, b := pair(t, unix.SOCK_SEQPACKET)
			unix.Write(b, nil)
			return a
		}, "data queued"},
		{"unix stream with SCM_RIGHTS", withRights(unix.SOCK_STREAM, []byte("x")), "descriptor queued (SCM_RIGHTS)"},
		{"unix dgram with SCM_RIGHTS", withRights(unix.SOCK_DGRAM, []byte("x")), "descriptor queued (SCM_RIGHTS)"},
		{"unix seqpacket with SCM_RIGHTS, no data", withRights(unix.SOCK_SEQPACKET, nil), "descriptor queued (SCM_RIGHTS)"},
		{"unix stream with data, then SCM_RIGHTS", func(t *testing.T) int {
			a, b := pair(t, unix.SOCK_STREAM)
			unix.Write(b, []byte("data first"))
			udp := socketFD(unix.AF_INET, unix.SOCK_DGRAM, 0)(t)
			if err := unix.Sendmsg(b, []byte("x"), unix.UnixRights(udp), nil, 0); err != nil {
				t.Fatal(err)
			}
			return a
		}, "queued"},
		{"tcp socket", socketFD(unix.AF_INET, unix.SOCK_STREAM, 0), "an internet socket"},
		{"udp6 socket", socketFD(unix.AF_INET6, unix.SOCK_DGRAM, 0), "an internet socket"},
		{"netlink socket", socketFD(unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_ROUTE), "a netlink socket"},
		{"packet socket", socketFD(unix.AF_PACKET, unix.SOCK_DGRAM, 0), "a packet socket"},
		{"vsock socket", socketFD(unix.AF_VSOCK, unix.SOCK_STREAM, 0), "a vsock socket"},
		{"io_uring", ioUring, "an io_uring instance"},
		{"pidfd", func(t *testing.T) int {
			fd, err := unix.PidfdOpen(os.Getpid(), 0)
			return mustFD(t, fd, err)
		}, "a pidfd"},
		{"epoll", func(t *testing.T) int {
			fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
			return mustFD(t, fd, err)
		}, "an epoll instance"},
		{"network namespace", openFD("/proc/self/ns/net", unix.O_RDONLY), "a namespace"},
		{"TUN", openFD("/dev/net/tun", unix.O_RDWR), "a TUN device (/dev/net/tun)"},
		{"/dev/kmsg", openFD("/dev/kmsg", unix.O_RDONLY), "a character device"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fd := c.make(t)
			r := inspectInherited(fd)
			switch {
			case c.refuse == "" && r != nil:
				t.Errorf("refused: %s; %s", r.what, r.why)
			case c.refuse != "" && r == nil:
				t.Errorf("allowed, want %q", c.refuse)
			case c.refuse != "" && !strings.Contains(r.what, c.refuse):
				t.Errorf("refused as %q, want %q", r.what, c.refuse)
			}
		})
	}
}

// Inspecting a unix socket peeks: the data, the descriptors and the peek offset are all still
// there afterwards, and no received descriptor is left open in torsocks.
func TestInspectUnixConsumesNothing(t *testing.T) {
	a, b := pair(t, unix.SOCK_STREAM)
	udp := socketFD(unix.AF_INET, unix.SOCK_DGRAM, 0)(t)
	if err := unix.Sendmsg(b, []byte("abc"), unix.UnixRights(udp), nil, 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.SetsockoptInt(a, unix.SOL_SOCKET, unix.SO_PEEK_OFF, 1); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadDir("/proc/self/fd")
	if r := inspectInherited(a); r == nil || !strings.Contains(r.what, "SCM_RIGHTS") {
		t.Fatalf("not refused for SCM_RIGHTS: %v", r)
	}
	after, _ := os.ReadDir("/proc/self/fd")
	if len(after) != len(before) {
		t.Errorf("%d descriptors open before the peek, %d after", len(before), len(after))
	}
	if off, err := unix.GetsockoptInt(a, unix.SOL_SOCKET, unix.SO_PEEK_OFF); err != nil || off != 1 {
		t.Errorf("SO_PEEK_OFF after: %d %v, want 1", off, err)
	}
	unix.SetsockoptInt(a, unix.SOL_SOCKET, unix.SO_PEEK_OFF, -1)
	buf := make([]byte, 16)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := unix.Recvmsg(a, buf, oob, unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
	if err != nil || string(buf[:n]) != "abc" || oobn == 0 {
		t.Fatalf("after the inspection: %q, %d bytes of control, %v", buf[:n], oobn, err)
	}
	msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
	fds, _ := unix.ParseUnixRights(&msgs[0])
	closeLater(t, fds...)
}
