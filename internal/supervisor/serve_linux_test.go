package supervisor

import (
	"context"
	"encoding/binary"
	"log/slog"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gotorsocks/torsocks/internal/filter"
	"github.com/gotorsocks/torsocks/internal/seccomp"
	"github.com/gotorsocks/torsocks/internal/socks5"
	"github.com/gotorsocks/torsocks/internal/supervisor/supervisortest"
)

// These tests run the supervisor's worker loop on the fakes of supervisortest: no root, no
// seccomp, milliseconds each. The integration tests check the same paths on the real kernel.

// host is the ABI of the fake program's calls: the supervisor serves its host's ABIs only.
var host = filter.HostABIs[0]

// memBase is where every fake process's memory starts.
const memBase = 0x10000

// logLine is one record the supervisor logged, with the function it names.
type logLine struct {
	level slog.Level
	msg   string
	fn    string
}

// recorder is a slog.Handler keeping every record.
type recorder struct {
	mu    sync.Mutex
	lines []logLine
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *recorder) WithGroup(string) slog.Handler            { return r }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	fn := ""
	if rec.PC != 0 {
		f, _ := runtime.CallersFrames([]uintptr{rec.PC}).Next()
		fn = shortName(f.Function)
	}
	r.mu.Lock()
	r.lines = append(r.lines, logLine{rec.Level, rec.Message, fn})
	r.mu.Unlock()
	return nil
}

func shortName(fn string) string {
	if i := strings.LastIndexByte(fn, '/'); i >= 0 {
		fn = fn[i+1:]
	}
	_, fn, _ = strings.Cut(fn, ".")
	return fn
}

// find returns the first line containing s.
func (r *recorder) find(s string) (logLine, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range r.lines {
		if strings.Contains(l.msg, s) {
			return l, true
		}
	}
	return logLine{}, false
}

// await is find for a line logged after the answer it follows: it waits for it (up to 5 s).
func (r *recorder) await(s string) (logLine, bool) {
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		if l, ok := r.find(s); ok || time.Now().After(deadline) {
			return l, ok
		}
	}
}

// harness is a supervisor serving a fake listener for a fake program.
type harness struct {
	t   *testing.T
	s   *Supervisor
	k   *supervisortest.Kernel
	tr  *supervisortest.Tracee
	log *recorder
}

// serve starts a supervisor with opts over fresh fakes; the test's cleanup stops it and checks
// that the fake kernel saw no answer it would have refused.
func serve(t *testing.T, opts Options, setup func(*Supervisor)) *harness {
	t.Helper()
	k, err := supervisortest.NewKernel()
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, k: k, tr: supervisortest.NewTracee(), log: &recorder{}}
	opts.Tracee = h.tr
	opts.Logger = slog.New(h.log)
	if opts.ConnectTimeout == 0 {
		opts.ConnectTimeout = 5 * time.Second
	}
	h.s = New(k, opts)
	if setup != nil {
		setup(h.s)
	}
	done := make(chan error, 1)
	go func() { done <- h.s.Serve() }()
	t.Cleanup(func() {
		k.Hangup()
		if err, ok := within(done, 5*time.Second); !ok {
			t.Errorf("Serve did not return after the hang-up")
		} else if err != nil {
			t.Errorf("Serve: %v", err)
		}
		for _, v := range k.Violations() {
			t.Error(v)
		}
		k.Close()
	})
	return h
}

// within receives from ch, waiting at most d.
func within[T any](ch <-chan T, d time.Duration) (v T, ok bool) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case v = <-ch:
		return v, true
	case <-timer.C:
		return v, false
	}
}

// socket is a socket of the test's own, as the program's descriptor n of process p.
func (h *harness) socket(p *supervisortest.Process, n, domain, typ int) int {
	h.t.Helper()
	fd, err := unix.Socket(domain, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { unix.Close(fd) })
	if domain != unix.AF_UNIX {
		if _, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_COOKIE); err != nil {
			h.t.Skipf("SO_COOKIE: %v (qemu-user does not emulate it)", err)
		}
	}
	p.SetFD(n, fd)
	return fd
}

// notify queues syscall nr (host ABI) from thread tid.
func (h *harness) notify(tid int, nr int32, args ...uint64) uint64 {
	d := seccomp.Data{Nr: nr, Arch: host.Arch}
	copy(d.Args[:], args)
	return h.k.Notify(tid, d)
}

// answer waits for the answer to id.
func (h *harness) answer(id uint64) seccomp.Resp {
	h.t.Helper()
	a, err := h.k.WaitAnswer(id, 5*time.Second)
	if err != nil {
		h.t.Fatal(err)
	}
	for _, fd := range a.Installed {
		unix.Close(fd)
	}
	return a.Resp
}

// wantErrno checks an answer is -1 with errno.
func wantErrno(t *testing.T, what string, r seccomp.Resp, errno unix.Errno) {
	t.Helper()
	if r.Val != -1 || r.Error != -int32(errno) || r.Flags != 0 {
		t.Errorf("%s: answered val %d error %d flags %d, want errno %v", what, r.Val, r.Error, r.Flags, errno)
	}
}

func wantValue(t *testing.T, what string, r seccomp.Resp, v int64) {
	t.Helper()
	if r.Val != v || r.Error != 0 || r.Flags != 0 {
		t.Errorf("%s: answered val %d error %d flags %d, want %d", what, r.Val, r.Error, r.Flags, v)
	}
}

var dest = netip.MustParseAddrPort("203.0.113.10:80")

// connectArgs puts dest's sockaddr_in at addr of p and returns connect's address arguments.
func connectArgs(p *supervisortest.Process, addr uint64, ap netip.AddrPort) (uint64, uint64) {
	sa := sockaddrBytes(unix.AF_INET, ap)
	p.Poke(addr, sa)
	return addr, uint64(len(sa))
}

// TestProxiedConnect follows one connect through Tor and the getpeername that shows its
// destination: the whole data path of docs/design.md on the fakes.
func TestProxiedConnect(t *testing.T) {
	tor := supervisortest.StartTor(t, nil)
	h := serve(t, Options{Socks: tor.Addr()}, nil)
	p := h.tr.Process(100, memBase, 0x1000)
	h.socket(p, 3, unix.AF_INET, unix.SOCK_STREAM)
	a, l := connectArgs(p, memBase, dest)
	wantValue(t, "connect", h.answer(h.notify(100, host.Connect, 3, a, l)), 0)
	if c := tor.Connects(); len(c) != 1 || c[0].Host != "203.0.113.10" || c[0].Port != 80 || c[0].Username != "" {
		t.Errorf("Tor got %+v", c)
	}
	if st := h.s.Stats(); st.Proxied != 1 || st.RegistryLen != 1 {
		t.Errorf("stats %+v", st)
	}

	// getpeername shows the destination, not Tor.
	p.Poke(memBase+0x200, binary.LittleEndian.AppendUint32(nil, 128))
	wantValue(t, "getpeername", h.answer(h.notify(100, host.Getpeername, 3, memBase+0x100, memBase+0x200)), 0)
	got, _, err := parseSockaddr(unix.AF_INET, p.Peek(memBase+0x100, 16))
	if n := binary.LittleEndian.Uint32(p.Peek(memBase+0x200, 4)); err != nil || got != dest || n != 16 {
		t.Errorf("getpeername wrote %v (%v), length %d", got, err, n)
	}
	// A second connect on the same socket: EISCONN, as the kernel says.
	wantErrno(t, "second connect", h.answer(h.notify(100, host.Connect, 3, a, l)), unix.EISCONN)
}

// TestWaitingConnectHandsOver: while a connect waits for Tor's reply, its worker watches the
// listener and hands the receiver role over, so another thread's call is answered meanwhile.
func TestWaitingConnectHandsOver(t *testing.T) {
	hold := make(chan struct{})
	tor := supervisortest.StartTor(t, func(supervisortest.Connect) byte { <-hold; return socks5.ReplySucceeded })
	h := serve(t, Options{Socks: tor.Addr()}, nil)
	p := h.tr.Process(100, memBase, 0x1000)
	h.socket(p, 3, unix.AF_INET, unix.SOCK_STREAM)
	h.socket(p, 4, unix.AF_UNIX, unix.SOCK_STREAM)
	a, l := connectArgs(p, memBase, dest)
	connect := h.notify(100, host.Connect, 3, a, l)
	for len(tor.Connects()) == 0 {
		time.Sleep(time.Millisecond)
	}
	// getpeername of a unix socket: the kernel may answer it (CONTINUE).
	if r := h.answer(h.notify(100, host.Getpeername, 4, memBase+0x100, memBase+0x200)); r.Flags != unix.SECCOMP_USER_NOTIF_FLAG_CONTINUE {
		t.Errorf("getpeername of a unix socket: %+v, want CONTINUE", r)
	}
	if _, err := h.k.WaitAnswer(connect, 0); err == nil {
		t.Fatal("the connect was answered before Tor replied")
	}
	close(hold)
	wantValue(t, "connect", h.answer(connect), 0)
}

// TestWatchdogHandsOver: a call stuck where it watches nothing (a read of the program's memory
// that blocks) loses the receiver role to the watchdog, and the next call is served.
func TestWatchdogHandsOver(t *testing.T) {
	h := serve(t, Options{Socks: netip.MustParseAddrPort("127.0.0.1:9")}, nil)
	stuck := h.tr.Process(200, memBase, 0x1000)
	h.socket(stuck, 3, unix.AF_INET, unix.SOCK_STREAM)
	release := make(chan struct{})
	stuck.ReadHook = func(uint64, int) { <-release }
	other := h.tr.Process(100, memBase, 0x1000)
	h.socket(other, 4, unix.AF_UNIX, unix.SOCK_STREAM)

	blocked := h.notify(200, host.Connect, 3, memBase, 16)
	start := time.Now()
	if r := h.answer(h.notify(100, host.Getpeername, 4, memBase, memBase+0x10)); r.Flags != unix.SECCOMP_USER_NOTIF_FLAG_CONTINUE {
		t.Errorf("getpeername: %+v", r)
	}
	t.Logf("answered %v after the stuck call", time.Since(start))
	close(release)
	h.answer(blocked) // served once its read returns
}

// TestErrnoMapping: what the program gets, and the line torsocks logs, for each way a call fails;
// the line names the function that decided.
func TestErrnoMapping(t *testing.T) {
	tor := supervisortest.StartTor(t, func(c supervisortest.Connect) byte {
		if c.Port == 81 {
			return socks5.ReplyHostUnreachable
		}
		return socks5.ReplySucceeded
	})
	// A port nothing listens on: Tor is not running.
	ln, _ := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	unix.Bind(ln, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}})
	sa, _ := unix.Getsockname(ln)
	unix.Close(ln)
	deadPort := uint16(sa.(*unix.SockaddrInet4).Port)

	x := host
	for _, tc := range []struct {
		name  string
		socks netip.AddrPort
		nr    int32
		args  func(p *supervisortest.Process) []uint64
		errno unix.Errno
		line  string // "" for none
		level slog.Level
		fn    string
	}{
		{name: "no such descriptor", nr: x.Connect, args: func(*supervisortest.Process) []uint64 { return []uint64{9, memBase, 16} },
			errno: unix.EBADF, line: "connect: pidfd_getfd(fd 9)", level: slog.LevelDebug, fn: "(*Supervisor).connect"},
		{name: "address unmapped", nr: x.Connect, args: func(*supervisortest.Process) []uint64 { return []uint64{3, 0x900000, 16} },
			errno: unix.EFAULT, line: "connect: read 16 bytes", level: slog.LevelDebug, fn: "(*Supervisor).connect"},
		{name: "loopback refused", nr: x.Connect, args: func(p *supervisortest.Process) []uint64 {
			a, l := connectArgs(p, memBase, netip.MustParseAddrPort("127.0.0.1:9"))
			return []uint64{3, a, l}
		}, errno: unix.EPERM, line: "connection to 127.0.0.1:9 refused: local addresses", level: slog.LevelWarn, fn: "(*Supervisor).connectTCP"},
		{name: "Tor refuses", nr: x.Connect, args: func(p *supervisortest.Process) []uint64 {
			a, l := connectArgs(p, memBase, netip.AddrPortFrom(dest.Addr(), 81))
			return []uint64{3, a, l}
		}, errno: unix.EHOSTUNREACH, line: "connection to 203.0.113.10:81 through Tor failed", level: slog.LevelWarn, fn: "(*Supervisor).connectTCP"},
		{name: "Tor not running", socks: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), deadPort), nr: x.Connect, args: func(p *supervisortest.Process) []uint64 {
			a, l := connectArgs(p, memBase, dest)
			return []uint64{3, a, l}
		}, errno: unix.ECONNREFUSED, line: "cannot reach Tor's SocksPort", level: slog.LevelWarn, fn: "(*Supervisor).connectTCP"},
		{name: "ioctl TIOCSTI", nr: x.Ioctl, args: func(*supervisortest.Process) []uint64 { return []uint64{0, uint64(filter.TIOCSTI)} },
			errno: unix.EPERM, line: "ioctl TIOCSTI refused", level: slog.LevelWarn, fn: "(*Supervisor).ioctl"},
		{name: "packet socket", nr: x.Socket, args: func(*supervisortest.Process) []uint64 { return []uint64{unix.AF_PACKET, unix.SOCK_RAW, 0} },
			errno: unix.EPERM, line: "packet socket refused", level: slog.LevelWarn, fn: "(*Supervisor).socket"},
		{name: "unknown syscall", nr: x.PidfdGetfd, args: func(*supervisortest.Process) []uint64 { return nil },
			errno: unix.ENOSYS, line: "unexpected notification", level: slog.LevelError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			socks := tc.socks
			if !socks.IsValid() {
				socks = tor.Addr()
			}
			h := serve(t, Options{Socks: socks}, nil)
			p := h.tr.Process(100, memBase, 0x1000)
			if tc.nr == x.Connect {
				h.socket(p, 3, unix.AF_INET, unix.SOCK_STREAM)
			}
			wantErrno(t, tc.name, h.answer(h.notify(100, tc.nr, tc.args(p)...)), tc.errno)
			l, ok := h.log.find(tc.line)
			if !ok {
				t.Fatalf("no line with %q: %+v", tc.line, h.log.lines)
			}
			if l.level != tc.level || (tc.fn != "" && l.fn != tc.fn) {
				t.Errorf("line %q at %v in %s, want %v in %s", l.msg, l.level, l.fn, tc.level, tc.fn)
			}
		})
	}
}

// TestNotificationGone: a call whose notification vanishes while it is served (the thread was
// signalled or killed) gets no answer, and no error line.
func TestNotificationGone(t *testing.T) {
	h := serve(t, Options{}, nil)
	p := h.tr.Process(100, memBase, 0x1000)
	h.socket(p, 3, unix.AF_INET, unix.SOCK_STREAM)
	ids, read := make(chan uint64, 1), make(chan struct{})
	p.ReadHook = func(uint64, int) { h.k.Cancel(<-ids); close(read) }
	id := h.notify(100, host.Connect, 3, memBase, 16)
	ids <- id
	<-read
	// Serve the next call: the first has been dealt with by then (one worker in turn).
	h.socket(p, 4, unix.AF_UNIX, unix.SOCK_STREAM)
	h.answer(h.notify(100, host.Getpeername, 4, 0, 0))
	if a, err := h.k.WaitAnswer(id, 0); err == nil {
		t.Errorf("a vanished notification was answered: %+v", a)
	}
	if l, ok := h.log.find("answer"); ok {
		t.Errorf("logged %q", l.msg)
	}
}

// TestInstall: a socket the supervisor makes (i386 socketcall, arguments in memory) is installed
// in the program and its number answered.
func TestInstall(t *testing.T) {
	if filter.Lookup(filter.I386.Arch) == nil {
		t.Skip("no i386 ABI on this host")
	}
	h := serve(t, Options{}, nil)
	p := h.tr.Process(100, memBase, 0x1000)
	var args []byte
	for _, v := range []uint32{unix.AF_UNIX, unix.SOCK_STREAM, 0} {
		args = binary.LittleEndian.AppendUint32(args, v)
	}
	p.Poke(memBase, args)
	d := seccomp.Data{Nr: filter.I386.Socketcall, Arch: filter.I386.Arch, Args: [6]uint64{filter.SysSocket, memBase}}
	id := h.k.Notify(100, d)
	a, err := h.k.WaitAnswer(id, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, fd := range a.Installed {
			unix.Close(fd)
		}
	}()
	if len(a.Installed) != 1 || a.Resp.Val != int64(a.Installed[0]) || a.Resp.Error != 0 {
		t.Fatalf("answer %+v", a)
	}
	if dom, err := unix.GetsockoptInt(a.Installed[0], unix.SOL_SOCKET, unix.SO_DOMAIN); err != nil || dom != unix.AF_UNIX {
		t.Errorf("installed a socket of family %d (%v)", dom, err)
	}
}

// TestIsolatePID: each process gets its own SOCKS credentials, kept while it lives; a pid that
// names another process (its start time changed) gets new ones.
func TestIsolatePID(t *testing.T) {
	tor := supervisortest.StartTor(t, nil)
	h := serve(t, Options{Socks: tor.Addr(), IsolatePID: true}, nil)
	p1 := h.tr.Process(100, memBase, 0x1000)
	p1.Thread(101)
	p2 := h.tr.Process(200, memBase, 0x1000)
	connect := func(p *supervisortest.Process, tid, fd int) {
		t.Helper()
		h.socket(p, fd, unix.AF_INET, unix.SOCK_STREAM)
		a, l := connectArgs(p, memBase, dest)
		wantValue(t, "connect", h.answer(h.notify(tid, host.Connect, uint64(fd), a, l)), 0)
	}
	connect(p1, 100, 3)
	connect(p1, 101, 4) // another thread of the same process
	connect(p2, 200, 3)
	p1.Restart("2")
	connect(p1, 100, 5)
	c := tor.Connects()
	if len(c) != 4 {
		t.Fatalf("%d connects", len(c))
	}
	if c[0].Username == "" || !strings.HasPrefix(c[0].Username, "torsocks-100-") {
		t.Errorf("credentials %+v", c[0])
	}
	if c[1] != c[0] {
		t.Errorf("two threads of a process: %+v and %+v", c[0], c[1])
	}
	if c[2].Username == c[0].Username || !strings.HasPrefix(c[2].Username, "torsocks-200-") {
		t.Errorf("another process shares credentials: %+v", c[2])
	}
	if c[3].Username == c[0].Username || c[3].Password == c[0].Password {
		t.Errorf("a recycled pid kept the old process's credentials: %+v", c[3])
	}
}

// TestForgottenAnswerCaught: a handler that decides nothing is caught by answer: the program gets
// EPERM, an error line says so, and the kernel is answered once.
func TestForgottenAnswerCaught(t *testing.T) {
	h := serve(t, Options{}, func(s *Supervisor) {
		s.handler = func(*call) (reply, error) { return reply{}, nil }
	})
	h.tr.Process(100, memBase, 0x1000)
	wantErrno(t, "forgotten", h.answer(h.notify(100, host.Connect, 3, memBase, 16)), unix.EPERM)
	if l, ok := h.log.find("left unanswered"); !ok || l.level != slog.LevelError {
		t.Errorf("no error line: %+v", h.log.lines)
	}
}

// TestAnsweredOnce: answering a call a second time is refused by answer itself (an error line),
// never sent to the kernel.
func TestAnsweredOnce(t *testing.T) {
	h := serve(t, Options{}, func(s *Supervisor) {
		s.handler = func(c *call) (reply, error) {
			c.s.answer(c, value(7), nil)
			return value(8), nil
		}
	})
	h.tr.Process(100, memBase, 0x1000)
	wantValue(t, "answered twice", h.answer(h.notify(100, host.Listen, 3, 0)), 7)
	if _, ok := h.log.await("answered twice"); !ok {
		t.Errorf("no error line: %+v", h.log.lines)
	}
}
