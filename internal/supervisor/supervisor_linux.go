package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gotorsocks/torsocks/internal/filter"
	"github.com/gotorsocks/torsocks/internal/policy"
	"github.com/gotorsocks/torsocks/internal/registry"
	"github.com/gotorsocks/torsocks/internal/sandbox"
	"github.com/gotorsocks/torsocks/internal/seccomp"
	"github.com/gotorsocks/torsocks/internal/sockdiag"
	"github.com/gotorsocks/torsocks/internal/socks5"
)

// Options configure a Supervisor. They are not changed after New.
type Options struct {
	// Socks is Tor's SocksPort. IPv4 sockets reach it as is; IPv6 sockets through ::ffff: when it
	// is IPv4 (unless SocksV6 is set).
	Socks netip.AddrPort
	// SocksRelay, when set, replaces Socks: Tor's SocksPort is a unix socket reached through this
	// loopback relay (internal/unixrelay).
	SocksRelay Gated
	// SocksV6, when valid, is an IPv6 SocksPort used by IPv6 sockets (required for IPV6_V6ONLY ones).
	SocksV6 netip.AddrPort
	// Auth, when set, is sent (RFC 1929) on every SOCKS request.
	Auth *socks5.Auth
	// IsolatePID gives every process of the tree its own random SOCKS credentials.
	IsolatePID bool
	// VetReceived: the filter notifies recvmsg/recvmmsg (filter.Options.VetReceived) and the
	// supervisor carries them out, refusing messages that bring sockets that could reach the
	// network around Tor (recv_linux.go).
	VetReceived bool
	// Policy decides connects, sockets and listens.
	Policy *policy.Policy
	// ConnectTimeout bounds connecting to Tor plus the SOCKS handshake (default 120 s).
	ConnectTimeout time.Duration
	// MaxInflight bounds the workers serving notifications at once (default 256): as many
	// connects can wait for Tor concurrently; more wait to be received.
	MaxInflight int
	// StepByStep makes the SOCKS5 client wait for each answer before sending the next message
	// (as the C torsocks does) instead of pipelining greeting and request (one round trip less;
	// Tor supports it).
	StepByStep bool
	// Logger receives torsocks-style log records; "pid" attributes name the program's process.
	Logger *slog.Logger
	// Sandbox, when set, is where the program's UDP sockets are created (Policy.UDPSandbox).
	Sandbox *sandbox.Sandbox
	// DNSTCP, when set, receives the program's TCP connections to port 53 (DNS over TCP).
	DNSTCP DNSTCP
	// UDPLoopback, when set (AllowOutboundLocalhost 2), makes a loopback destination of a UDP
	// connect reachable from the sandbox (internal/udprelay).
	UDPLoopback interface{ Ensure(netip.AddrPort) error }
	// StandIn, when set, maps a stand-in address (.onion, map mode) to the name Tor must connect
	// to, holding a reference on the entry until release is called. isStandIn reports that a is in
	// a stand-in range; ok that it is allocated.
	StandIn func(a netip.Addr) (name string, release func(), isStandIn, ok bool)
	// RefuseUnix, when set, vets each unix socket file the program connects or sends to (fd: an
	// O_PATH descriptor of it): an error refuses the call with its errno (torsocks' own tor's
	// control port).
	RefuseUnix func(fd int) error
}

// DNSTCP is the supervisor's DNS-over-TCP listener (internal/dnsserver).
type DNSTCP interface {
	TCPAddr() netip.AddrPort
	Expect(localPort uint16)
}

// Gated is a loopback listener of the supervisor that admits only announced local ports.
type Gated interface {
	Addr() netip.AddrPort
	Expect(localPort uint16)
}

// Supervisor serves one seccomp listener.
type Supervisor struct {
	l       *seccomp.Listener
	opts    Options
	pol     *policy.Policy
	log     *slog.Logger
	reg     *registry.Registry
	sweeper *registry.Sweeper
	wg      sync.WaitGroup // running workers

	// recvMu is the receiver role: its holder alone polls and receives from the listener. A
	// worker may keep it while serving a call (call.lead set); then whoever clears call.lead
	// (the worker, its rawConn.wait, the watchdog) is the one that unlocks it. It also guards
	// finished.
	recvMu   sync.Mutex
	finished bool         // the listener reported POLLHUP or failed: workers exit
	workers  atomic.Int32 // running workers
	idle     atomic.Int32 // workers waiting for recvMu

	errMu sync.Mutex // guards err
	err   error      // why serving stopped, if it was not POLLHUP

	proxied atomic.Int64 // connections carried through Tor
	peak    atomic.Int64 // largest registry size seen after an Add

	isoMu sync.Mutex            // guards iso
	iso   map[int]isoCredential // tgid -> credentials, for IsolatePID

	ownOnce sync.Once // guards ownCr: the supervisor's credentials, read on first use
	ownCr   ownCreds
}

// own returns the supervisor's own credentials (creds_linux.go), read once.
func (s *Supervisor) own() *ownCreds {
	s.ownOnce.Do(func() { s.ownCr = readOwnCreds() })
	return &s.ownCr
}

// New returns a supervisor for listener l.
func New(l *seccomp.Listener, opts Options) *Supervisor {
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = 120 * time.Second
	}
	if opts.MaxInflight <= 0 {
		opts.MaxInflight = 256
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Policy == nil {
		opts.Policy = &policy.Policy{EnableIPv6: true}
	}
	s := &Supervisor{
		l:    l,
		opts: opts,
		pol:  opts.Policy,
		log:  opts.Logger,
		reg:  registry.New(),
		iso:  map[int]isoCredential{},
	}
	s.sweeper = registry.NewSweeper(s.reg, sockdiag.LiveTCPCookies, 1024, func(f string, a ...any) {
		s.log.Warn(fmt.Sprintf(f, a...))
	})
	return s
}

// Stats are counters of a supervisor's work.
type Stats struct {
	Proxied      int64 // connections carried through Tor
	RegistryLen  int   // entries in the connection registry now
	RegistryPeak int64 // largest registry size seen
}

// Stats returns the current counters.
func (s *Supervisor) Stats() Stats {
	return Stats{Proxied: s.proxied.Load(), RegistryLen: s.reg.Len(), RegistryPeak: s.peak.Load()}
}

// ReclaimClosed releases now the registry entries (and what they hold, such as stand-in
// addresses) of sockets the program has closed, which the background sweeper would only notice
// later.
func (s *Supervisor) ReclaimClosed() { s.sweeper.SweepNow() }

// Registry exposes the connection registry (tests, statistics).
func (s *Supervisor) Registry() *registry.Registry { return s.reg }

// Serve answers notifications until no task uses the filter any more, then waits for the
// handlers still running.
//
// Workers take turns as the receiver (leader/follower): the worker holding recvMu polls the
// listener, receives one notification and serves it itself, SOCKS handshake included; the call is
// never handed to another thread, which would cost a cross-thread wake-up on every connect. While
// it serves, it keeps the receiver role as long as the call cannot block on the program: cheap
// calls (getpeername, socket, listen, refusals) and the setup of a connect go straight back to
// the listener with no other thread woken. The role is handed to a follower (call.handOff, which
// starts one if none is idle and fewer than MaxInflight run):
//   - before anything that may wait on the program or on the network without also watching the
//     listener (a direct or unix connect, a send: goCall);
//   - when a notification arrives while the call waits for Tor (rawConn.wait watches the
//     listener too while its call holds the role);
//   - by a watchdog after leadLimit, whatever the call is doing (a write to a full stderr pipe, a
//     page fault on memory another process serves): no call can keep the others waiting long.
func (s *Supervisor) Serve() error {
	defer func() {
		s.sweeper.Close()
		if s.debug() {
			st := s.Stats()
			s.log.Debug(fmt.Sprintf("%d connections carried through Tor; registry: peak %d entries, %d at exit", st.Proxied, st.RegistryPeak, st.RegistryLen))
		}
	}()
	s.startWorker()
	s.wg.Wait()

	s.errMu.Lock()
	defer s.errMu.Unlock()
	return s.err
}

// spareWorkers is how many idle workers may wait for the receiver role before extra ones exit.
const spareWorkers = 4

func (s *Supervisor) startWorker() {
	s.workers.Add(1)
	s.wg.Add(1)
	go s.worker()
}

// leadLimit is how long a call may keep the receiver role before the watchdog hands it over.
const leadLimit = time.Millisecond

func (s *Supervisor) worker() {
	defer s.wg.Done()
	defer s.workers.Add(-1)
	var n seccomp.Notif
	holding := false // this worker kept recvMu from the call it served last
	for {
		if !holding {
			s.idle.Add(1)
			s.recvMu.Lock()
			s.idle.Add(-1)
		}
		holding = false
		if s.finished {
			s.recvMu.Unlock()
			return
		}
		more, err := s.l.Wait()
		if err == nil && more {
			err = s.l.Recv(&n)
			if errors.Is(err, seccomp.ErrNotifGone) {
				holding = true
				continue
			}
		}
		if err != nil || !more {
			s.finished = true
			if err != nil {
				s.errMu.Lock()
				s.err = err
				s.errMu.Unlock()
			}
			s.recvMu.Unlock()
			return
		}
		c := s.newCall(&n)
		c.lead.Store(true)
		watchdog := time.AfterFunc(leadLimit, c.handOff)
		s.dispatch(c)
		if watchdog.Stop() && c.lead.CompareAndSwap(true, false) {
			holding = true // nobody took the role: straight back to the listener
			continue
		}
		// The role went to a follower (or is going: a watchdog that fired releases it).
		if s.idle.Load() >= spareWorkers {
			return
		}
	}
}

// handOff gives up the receiver role if c's worker still holds it, making sure a worker is
// waiting to take it. Safe from any goroutine (the watchdog calls it); only the first call acts.
func (c *call) handOff() {
	if !c.lead.CompareAndSwap(true, false) {
		return
	}
	s := c.s
	if s.idle.Load() == 0 && int(s.workers.Load()) < s.opts.MaxInflight {
		s.startWorker()
	}
	s.recvMu.Unlock()
}

// debug reports whether debug records are wanted (to skip formatting them otherwise).
func (s *Supervisor) debug() bool { return s.log.Enabled(context.Background(), slog.LevelDebug) }

func (s *Supervisor) dispatch(c *call) {
	abi := c.abi
	if abi == nil {
		// The filter kills unknown architectures; answering is only defensive.
		s.log.Error(fmt.Sprintf("notification for unknown architecture %#x from pid %d", c.data.Arch, c.tid))
		s.l.Fail(c.id, unix.ENOSYS)
		return
	}
	defer func() {
		// Every path must answer; a handler that forgot is a bug, and the safe answer is an error.
		if !c.done && !c.handedOff {
			s.log.Error(fmt.Sprintf("internal error: syscall %d of pid %d left unanswered", c.data.Nr, c.tid))
			c.fail(unix.EPERM)
		}
	}()
	nr := c.data.Nr
	switch nr {
	case abi.Connect:
		s.connect(c, c.fdArg(0), c.arg(1), c.arg(2))
	case abi.Getpeername:
		s.getpeername(c, c.fdArg(0), c.arg(1), c.arg(2))
	case abi.Listen:
		s.listen(c, c.fdArg(0), int(int32(c.arg(1))))
	case abi.Socket:
		s.socket(c, int(int32(c.arg(0))), int(int32(c.arg(1))), int(int32(c.arg(2))), false)
	case abi.Sendto:
		s.send(c, sendArgs{fd: c.fdArg(0), buf: c.arg(1), len: c.arg(2), flags: int(int32(c.arg(3))), name: c.arg(4), namelen: c.arg(5)})
	case abi.Sendmsg:
		s.send(c, sendArgs{fd: c.fdArg(0), msg: c.arg(1), flags: int(int32(c.arg(2))), kind: kindSendmsg})
	case abi.Sendmmsg:
		s.send(c, sendArgs{fd: c.fdArg(0), msg: c.arg(1), vlen: c.arg(2), flags: int(int32(c.arg(3))), kind: kindSendmmsg})
	case abi.Recvmsg:
		s.recv(c, recvArgs{fd: c.fdArg(0), msg: c.arg(1), flags: int(int32(c.arg(2)))})
	case abi.Recvmmsg, abi.RecvmmsgTime64:
		s.recv(c, recvArgs{fd: c.fdArg(0), msg: c.arg(1), vlen: uint64(uint32(c.arg(2))), flags: int(int32(c.arg(3))),
			timeout: c.arg(4), mmsg: true, ts32: abi.PtrSize == 4 && nr == abi.Recvmmsg})
	case abi.Socketcall:
		s.socketcall(c)
	case abi.Ioctl:
		s.ioctl(c, uint32(c.arg(1)))
	case abi.Setsockopt:
		s.setsockopt(c, c.fdArg(0), int(int32(c.arg(1))), int(int32(c.arg(2))), c.arg(3), uint64(uint32(c.arg(4))), false)
	default:
		s.log.Error(fmt.Sprintf("unexpected notification for syscall %d (%s) from pid %d", nr, abi.Name, c.tid))
		c.fail(unix.ENOSYS)
	}
}

// ioctl refuses the requests the filter notifies (filter.RefusedIoctls): each is a way out that
// no program needs under torsocks.
func (s *Supervisor) ioctl(c *call, req uint32) {
	switch req {
	case filter.TIOCSTI:
		c.refuse(unix.EPERM, "ioctl TIOCSTI refused: the program could type commands into the terminal that started torsocks")
	case filter.TIOCLINUX:
		c.refuse(unix.EPERM, "ioctl TIOCLINUX refused: the program could paste commands into the console that started torsocks")
	case filter.TUNSETIFF:
		c.refuse(unix.EPERM, "ioctl TUNSETIFF refused: a TUN/TAP device would carry traffic around Tor")
	default:
		c.refuse(unix.EPERM, fmt.Sprintf("ioctl %#x refused: internal filter mismatch", req))
	}
}

// socketcallArgs is how many arguments each notified i386 socketcall sub-call reads from memory.
var socketcallArgs = map[uint64]int{filter.SysSocket: 3, filter.SysConnect: 3, filter.SysListen: 2,
	filter.SysGetpeername: 3, filter.SysSendto: 6, filter.SysSendmsg: 3, filter.SysSendmmsg: 4,
	filter.SysRecvmsg: 3, filter.SysRecvmmsg: 5, filter.SysSetsockopt: 5}

// socketcall serves the i386 multiplexer: the sub-call is in a register, its arguments in memory.
func (s *Supervisor) socketcall(c *call) {
	sub := c.arg(0)
	n, ok := socketcallArgs[sub]
	if !ok {
		c.fail(unix.ENOSYS)
		return
	}
	a, err := c.readArgs(c.arg(1), n)
	if err != nil {
		c.failErr("socketcall", err)
		return
	}
	fd := int(int32(uint32(a[0])))
	switch sub {
	case filter.SysSocket:
		s.socket(c, int(int32(uint32(a[0]))), int(int32(uint32(a[1]))), int(int32(uint32(a[2]))), true)
	case filter.SysConnect:
		s.connect(c, fd, a[1], a[2])
	case filter.SysListen:
		s.listen(c, fd, int(int32(uint32(a[1]))))
	case filter.SysGetpeername:
		s.getpeername(c, fd, a[1], a[2])
	case filter.SysSendto:
		s.send(c, sendArgs{fd: fd, buf: a[1], len: a[2], flags: int(int32(uint32(a[3]))), name: a[4], namelen: a[5], fromMemory: true})
	case filter.SysSendmsg:
		s.send(c, sendArgs{fd: fd, msg: a[1], flags: int(int32(uint32(a[2]))), kind: kindSendmsg, fromMemory: true})
	case filter.SysSendmmsg:
		s.send(c, sendArgs{fd: fd, msg: a[1], vlen: a[2], flags: int(int32(uint32(a[3]))), kind: kindSendmmsg, fromMemory: true})
	case filter.SysRecvmsg:
		s.recv(c, recvArgs{fd: fd, msg: a[1], flags: int(int32(uint32(a[2])))})
	case filter.SysRecvmmsg:
		s.recv(c, recvArgs{fd: fd, msg: a[1], vlen: a[2], flags: int(int32(uint32(a[3]))), timeout: a[4], mmsg: true, ts32: true})
	case filter.SysSetsockopt:
		s.setsockopt(c, fd, int(int32(uint32(a[1]))), int(int32(uint32(a[2]))), a[3], a[4], true)
	}
}

// socket serves a socket() the filter did not allow by itself: refusals (with the reason), UDP
// sockets made in the sandbox, and for the i386 socketcall, whose arguments are in memory, any
// allowed socket (created here: letting the kernel re-read the arguments would let a racing
// thread swap them). Sockets made here are installed in the program with ADDFD.
func (s *Supervisor) socket(c *call, domain, typ, proto int, viaMemory bool) {
	d := s.pol.Socket(domain, typ, proto)
	var fd int
	var err error
	switch {
	case d.Action == policy.Refuse:
		c.refuse(d.Errno, d.Reason)
		return
	case d.Action == policy.Sandboxed && s.opts.Sandbox != nil:
		fd, err = s.opts.Sandbox.Socket(domain, typ, proto)
	case d.Action == policy.Direct && viaMemory:
		fd, err = unix.Socket(domain, typ, proto)
	default:
		// The filter notifies only sockets it does not allow; policy and filter disagree.
		c.refuse(unix.EPERM, fmt.Sprintf("socket(%d, %d, %d) refused: internal policy mismatch", domain, typ, proto))
		return
	}
	if err != nil {
		c.fail(errnoOf(err))
		return
	}
	defer unix.Close(fd)
	if _, err := c.s.l.AddFDAndReturn(c.id, fd, typ&unix.SOCK_CLOEXEC != 0); err != nil {
		c.failErr("socket", err)
		return
	}
	c.finish(nil)
}

// listen refuses listening on a non-loopback address unless AllowInbound (an unbound socket counts
// as the wildcard address). An allowed listen is made here on the copy, not by the kernel, which
// would look the descriptor number up again (see copy_linux.go).
func (s *Supervisor) listen(c *call, fd, backlog int) {
	cp, err := c.getfd(fd)
	if err != nil {
		c.failErr("listen", err)
		return
	}
	defer unix.Close(cp)
	si, err := getSockInfo(cp)
	if err != nil {
		c.failErr("listen", err)
		return
	}
	if si.isInet() {
		local, err := boundAddr(cp, si.domain)
		if err != nil {
			c.failErr("listen", err)
			return
		}
		if d := s.pol.Listen(local); d.Action == policy.Refuse {
			c.refuse(d.Errno, d.Reason)
			return
		}
	}
	if err := unix.Listen(cp, backlog); err != nil {
		c.fail(errnoOf(err))
		return
	}
	c.ok(0)
}

// getpeername answers with the destination the program asked for on proxied sockets (the kernel
// would show Tor's address). Other sockets: the kernel answers; getpeername sends nothing.
func (s *Supervisor) getpeername(c *call, fd int, addr, lenAddr uint64) {
	cp, err := c.getfd(fd)
	if err != nil {
		c.failErr("getpeername", err)
		return
	}
	defer unix.Close(cp)
	// Only the family and the cookie matter here: two getsockopt, not four (getpeername on unix
	// sockets is common and answered by the kernel).
	domain, err := unix.GetsockoptInt(cp, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil || (domain != unix.AF_INET && domain != unix.AF_INET6) {
		c.cont()
		return
	}
	cookie, err := unix.GetsockoptUint64(cp, unix.SOL_SOCKET, unix.SO_COOKIE)
	if err != nil {
		c.cont()
		return
	}
	si := sockInfo{domain: domain, cookie: cookie}
	conn := s.reg.Lookup(si.cookie)
	if conn == nil {
		c.cont()
		return
	}
	defer conn.Put()
	lb, err := c.read(lenAddr, 4)
	if err != nil {
		c.failErr("getpeername", err)
		return
	}
	have := int(int32(uint32(lb[0]) | uint32(lb[1])<<8 | uint32(lb[2])<<16 | uint32(lb[3])<<24))
	if have < 0 {
		c.fail(unix.EINVAL)
		return
	}
	sa := sockaddrBytes(si.domain, conn.Dest)
	out := sa
	if have < len(out) {
		out = out[:have]
	}
	if err := c.write(addr, out); err != nil {
		c.failErr("getpeername", err)
		return
	}
	n := uint32(len(sa))
	if err := c.write(lenAddr, []byte{byte(n), byte(n >> 8), byte(n >> 16), byte(n >> 24)}); err != nil {
		c.failErr("getpeername", err)
		return
	}
	c.ok(0)
}

func errnoOf(err error) unix.Errno {
	var errno unix.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return unix.EPERM
}
