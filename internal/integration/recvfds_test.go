package integration

import (
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gotorsocks/torsocks/internal/socks5test"
)

const vetOn = "TORSOCKS_VET_RECEIVED_SOCKETS=1"

// sinks are a TCP listener and a UDP socket on the canary host (ports of their own, so the
// shared canaries' leak accounting is not disturbed): whatever reaches them came around Tor.
type sinks struct {
	tcp  *socks5test.Sink
	udp  *net.UDPConn
	mu   sync.Mutex
	got  []string      // bytes of each TCP connection, once it is closed
	done chan struct{} // one value per TCP connection closed
}

func startSinks(t *testing.T) *sinks {
	t.Helper()
	ln, err := net.Listen("tcp", "203.0.113.10:81")
	if err != nil {
		t.Fatal(err)
	}
	uc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP("203.0.113.10"), Port: 5353})
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	s := &sinks{udp: uc, done: make(chan struct{}, 16)}
	s.tcp = socks5test.Serve(ln, func(c net.Conn) {
		b, _ := io.ReadAll(c)
		c.Close()
		s.mu.Lock()
		s.got = append(s.got, string(b))
		s.mu.Unlock()
		s.done <- struct{}{}
	})
	t.Cleanup(func() { s.tcp.Close(); uc.Close() })
	return s
}

// datagrams returns what the UDP sink has queued now (sends on loopback are queued before
// sendto returns, so after the program has exited nothing more can come).
func (s *sinks) datagrams() []string {
	var out []string
	rc, err := s.udp.SyscallConn()
	if err != nil {
		return []string{err.Error()}
	}
	buf := make([]byte, 2048)
	for {
		n := -1
		rc.Control(func(fd uintptr) { n, _, _ = unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT) })
		if n < 0 {
			return out
		}
		out = append(out, string(buf[:n]))
	}
}

// fdDaemon is a daemon started outside torsocks: on each connection to its unix socket it
// connects a TCP socket to the TCP sink, makes an unbound UDP socket, sends both over SCM_RIGHTS
// with the message "take", and closes its own copies.
func fdDaemon(t *testing.T, s *sinks) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "daemon.sock")
	d, err := socks5test.Listen("unix", path, func(c net.Conn) {
		tcp, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err == nil {
			err = unix.Connect(tcp, &unix.SockaddrInet4{Port: 81, Addr: [4]byte{203, 0, 113, 10}})
		}
		udp, uerr := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil || uerr != nil {
			t.Errorf("daemon: sockets: %v %v", err, uerr)
			return
		}
		c.(*net.UnixConn).WriteMsgUnix([]byte("take"), unix.UnixRights(tcp, udp), nil)
		unix.Close(tcp)
		unix.Close(udp)
		io.Copy(io.Discard, c) // until the program is gone
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return path
}

// The program receives, over a unix socket, a TCP socket connected to the canary host and a UDP
// socket from a daemon started outside torsocks, and tries to use them.
const takeSockets = `
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
try:
    msg, fds, flags, addr = socket.recv_fds(s, 100, 4)
except OSError as e:
    print("recvmsg errno", e.errno, flush=True)
    sys.exit(0)
print("received", msg, len(fds), flush=True)
t = socket.socket(fileno=fds[0]); t.sendall(b"LEAK over TCP"); t.close()
u = socket.socket(fileno=fds[1]); u.sendto(b"LEAK over UDP", ("203.0.113.10", 5353)); u.close()
print("used them", flush=True)
`

// TestReceivedInetSocketsRefused: with VetReceivedSockets 1 the program's recvmsg fails with
// EACCES, one line says why, and neither socket carries anything. With the setting off (the
// default) the sockets get through: the hole this setting closes.
func TestReceivedInetSocketsRefused(t *testing.T) {
	env(t)
	s := startSinks(t)
	path := fdDaemon(t, s)

	r := torsocks(t, []string{vetOn}, "python3", "-c", takeSockets, path)
	if !strings.Contains(r.stdout, "recvmsg errno 13") {
		t.Fatalf("recvmsg was not refused with EACCES:\n%s\n%s", r.stdout, r.stderr)
	}
	if n := strings.Count(r.stderr, "recvmsg refused"); n != 1 || !strings.Contains(r.stderr, "TCP socket connected to 203.0.113.10:81") {
		t.Errorf("want one refusal line naming the TCP socket, got %d:\n%s", n, r.stderr)
	}
	// The daemon's copy is closed and the program has exited: the sink's connection ends now.
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the daemon's TCP connection was never closed")
	}
	s.mu.Lock()
	got := append([]string(nil), s.got...)
	s.mu.Unlock()
	if len(got) != 1 || got[0] != "" {
		t.Errorf("LEAK: the TCP sink received %q", got)
	}
	if d := s.datagrams(); len(d) > 0 {
		t.Errorf("LEAK: the UDP sink received %q", d)
	}

	t.Run("setting off", func(t *testing.T) {
		r := torsocks(t, []string{"TORSOCKS_VET_RECEIVED_SOCKETS=0"}, "python3", "-c", takeSockets, path)
		if !strings.Contains(r.stdout, "used them") {
			t.Fatalf("program did not get the sockets:\n%s\n%s", r.stdout, r.stderr)
		}
		<-s.done
		s.mu.Lock()
		last := s.got[len(s.got)-1]
		s.mu.Unlock()
		if last != "LEAK over TCP" {
			t.Errorf("TCP sink got %q", last)
		}
		if d := s.datagrams(); len(d) != 1 {
			t.Errorf("UDP sink got %q", d)
		}
		t.Log("with VetReceivedSockets 0 a received socket reaches the network around Tor (documented)")
	})
}

// Descriptors passed between processes of the tree keep working with the setting on: a unix
// socket, a pipe, a TCP socket the program connected (through Tor) and one not yet connected;
// MSG_CMSG_CLOEXEC is honoured, data arrive byte for byte (with and without descriptors, in one
// recvmsg and in several, and with recvmmsg), a short control buffer gives MSG_CTRUNC.
const passInTree = `
import socket, os, sys, array, fcntl, hashlib
def print(*args, flush=False):
    # Parent and child share stdout: one write(2) per line, so their lines never interleave.
    os.write(1, (" ".join(str(a) for a in args) + "\n").encode())
def cloexec(fd): return bool(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC)
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
r, w = os.pipe()
x, y = socket.socketpair()
proxied = socket.create_connection(("203.0.113.10", 80))
fresh = socket.socket()
pid = os.fork()
if pid == 0:
    a.close()
    msg, fds, flags, addr = socket.recv_fds(b, 100, 8)
    print("child got", msg, len(fds), flags, flush=True)
    pr, xs, px, fr = fds
    print("cloexec default", cloexec(pr), flush=True)
    os.write(w, b"through the pipe"); print("pipe", os.read(pr, 100), flush=True)
    socket.socket(fileno=xs).sendall(b"ping"); print("pair", y.recv(10), flush=True)
    p = socket.socket(fileno=px); p.sendall(b"GET / HTTP/1.0\r\n\r\n")
    print("proxied", b"canary" in p.recv(4096), flush=True)
    f = socket.socket(fileno=fr); f.connect(("203.0.113.10", 80)); f.sendall(b"GET / HTTP/1.0\r\n\r\n")
    print("fresh", b"canary" in f.recv(4096), flush=True)
    data, anc, flags, _ = b.recvmsg(10, socket.CMSG_SPACE(4), socket.MSG_CMSG_CLOEXEC)
    fd = array.array("i", anc[0][2])[0]
    print("cloexec asked", cloexec(fd), flags & socket.MSG_CMSG_CLOEXEC != 0, flush=True)
    data, anc, flags, _ = b.recvmsg(10, socket.CMSG_LEN(4))
    print("ctrunc", bool(flags & socket.MSG_CTRUNC), [len(c[2]) for c in anc], flush=True)
    big = b.recv(70000)
    print("big", hashlib.sha256(big).hexdigest(), flush=True)
    data, anc, flags, _ = b.recvmsg(70000, 64)
    print("big no control", len(anc), flags, hashlib.sha256(data).hexdigest(), flush=True)
    bufs = [bytearray(7), bytearray(100)]
    n, anc, flags, _ = b.recvmsg_into(bufs)
    print("scatter", n, bytes(bufs[0]), bytes(bufs[1][:n-7]), flush=True)
    os._exit(0)
b.close()
socket.send_fds(a, [b"take these"], [r, x.fileno(), proxied.fileno(), fresh.fileno()])
socket.send_fds(a, [b"one"], [r])
socket.send_fds(a, [b"two"], [r, r])
blob = bytes((i * 7 + 3) % 251 for i in range(60000))
print("sent big", hashlib.sha256(blob).hexdigest(), flush=True)
a.send(blob); a.send(blob)
a.send(b"0123456789abcdef")
os.waitpid(pid, 0)
`

func TestReceivedInTreeDescriptorsWork(t *testing.T) {
	env(t)
	before := canary4.Accepted()
	r := torsocks(t, []string{vetOn}, "python3", "-c", passInTree)
	sum := ""
	for _, l := range strings.Split(r.stdout, "\n") {
		if v, ok := strings.CutPrefix(l, "sent big "); ok {
			sum = v
		}
	}
	for _, want := range []string{
		"child got b'take these' 4 0",
		"cloexec default False",
		"pipe b'through the pipe'",
		"pair b'ping'",
		"proxied True",
		"fresh True",
		"cloexec asked True True",
		"ctrunc True [4]",
		"big " + sum,
		"big no control 0 0 " + sum,
		"scatter 16 b'0123456' b'789abcdef'",
	} {
		if sum == "" || !strings.Contains(r.stdout, want+"\n") {
			t.Errorf("missing %q:\n%s\n%s", want, r.stdout, r.stderr)
		}
	}
	if strings.Contains(r.stderr, "refused") {
		t.Errorf("something was refused:\n%s", r.stderr)
	}
	if canary4.Accepted()-before < 2 {
		t.Errorf("the canary saw %d connections, want 2 (through the SOCKS server)", canary4.Accepted()-before)
	}
	noLeaks(t)
}

// A thread blocked in an emulated recvmsg does not hold up the program's other threads or the
// other processes' calls, and a signal handler still interrupts it.
func TestBlockedRecvmsgSignal(t *testing.T) {
	env(t)
	script := `
import socket, signal, threading, time
a, b = socket.socketpair()
class Alarm(Exception): pass
def h(*_): raise Alarm()
signal.signal(signal.SIGALRM, h)
def other():
    c = socket.create_connection(("203.0.113.10", 80)); c.sendall(b"GET / HTTP/1.0\r\n\r\n")
    print("other thread", b"canary" in c.recv(4096), flush=True)
    a.send(b"wake")
t = threading.Thread(target=other); t.start()
print("recv", b.recvmsg(10)[0], flush=True)
t.join()
signal.setitimer(signal.ITIMER_REAL, 0.2)
start = time.time()
try:
    b.recvmsg(10)
except Alarm:
    print("interrupted after", round(time.time() - start, 1), flush=True)
`
	r := torsocks(t, []string{vetOn}, "python3", "-c", script)
	for _, want := range []string{"other thread True", "recv b'wake'", "interrupted after 0.2"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("missing %q:\n%s\n%s", want, r.stdout, r.stderr)
		}
	}
	noLeaks(t)
}
