package run

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gotorsocks/torsocks/internal/config"
	"github.com/gotorsocks/torsocks/internal/dns"
	"github.com/gotorsocks/torsocks/internal/dnsserver"
	"github.com/gotorsocks/torsocks/internal/filter"
	"github.com/gotorsocks/torsocks/internal/launch"
	"github.com/gotorsocks/torsocks/internal/policy"
	"github.com/gotorsocks/torsocks/internal/sandbox"
	"github.com/gotorsocks/torsocks/internal/socks5"
	"github.com/gotorsocks/torsocks/internal/standin"
	"github.com/gotorsocks/torsocks/internal/supervisor"
	"github.com/gotorsocks/torsocks/internal/tslog"
	"github.com/gotorsocks/torsocks/internal/udprelay"
	"github.com/gotorsocks/torsocks/internal/unixrelay"
)

// session is the composition root of one run: it owns the configuration, the log, the user's own
// tor, the unix SocksPort relay, the UDP sandbox with its stand-in tables and DNS responder, the
// program and its supervisor. It opens them in that order, wires them together, and closes what
// it opened, newest first, on every path (Close).
//
// The order needs no cycle: the stand-in tables exist before the program starts, and whether UDP
// is possible is part of the supervisor's policy; the UDP sandbox and its DNS responder are started
// on the program's first use of them (udpDNS.ensure, asked by the policy and the supervisor), and
// the supervisor only after the program starts (it serves the program's listener). The one call
// back, the DNS answerer asking the supervisor to release the stand-ins of closed connections when
// a table is full, goes through the session (reclaimClosed), which knows the supervisor once it
// exists.
type session struct {
	cfg   *config.Config
	log   *slog.Logger
	steps steps
	open  closers // what was opened, oldest first

	own   torHold // the user's own tor, or nothing (useOwnTor)
	auth  *socks5.Auth
	relay *unixrelay.Relay // SocksUnix only
	udp   *udpDNS          // nil: no UDP sandbox (UDP sockets are refused)
	child *launch.Child
	r     *reaper // signals and children; nil in tests that never start a program

	supMu sync.Mutex // guards sup
	sup   *supervisor.Supervisor
}

// udpDNS is the UDP sandbox and what serves DNS in it. The answerer (its stand-in tables) is made
// with the session; the sandbox's socket factory, the DNS responder and the UDP loopback relay only
// when the program first needs them (ensure: its first UDP socket, or its first TCP connection to
// port 53), so that a program that never uses UDP or DNS pays nothing for them.
type udpDNS struct {
	s        *session
	sandbox  *sandbox.Sandbox // prepared by the session; started by ensure
	answerer *dns.Server      // holds the stand-in tables (.onion, map mode)
	dropped  dnsserver.Dropped
	relay    bool // AllowOutboundLocalhost 2: make the loopback relay
	sealed   bool // SealedNetwork 1: TCP sockets are made in the sandbox too (ensure's lines say so)

	// peerByKernel: the program's filter lets getpeername run (filter.Options.PeerByKernel), so a
	// sandbox that fails at first use leaves the kernel's answer on host sockets (ensure says so).
	// Stored before the program starts.
	peerByKernel atomic.Bool

	state atomic.Int32 // udpNotYet, udpReady or udpFailed; set under mu

	// wake is an eventfd in the supervisor's side set (dnsSide) from the start: written when the
	// responder is ready, so that a worker already waiting at the listener polls its sockets too
	// (-1 if it could not be made: then a worker waiting since before sees them at the next
	// notification). sideFDs is that set: wake, and the responder's UDP sockets once it runs.
	wake     int
	wakeOnly []int // the set until the responder runs: wake alone (nil without it)
	sideFDs  atomic.Pointer[[]int]

	mu       sync.Mutex // guards what follows; held while starting
	server   *dnsserver.Server
	loopback *udprelay.Relay // AllowOutboundLocalhost 2 only
	opened   closers
}

const (
	udpNotYet = iota
	udpReady
	udpFailed
)

// ensure starts the sandbox and the DNS responder the first time it is called, and reports whether
// they are running. A failure is logged then, with the lines torsocks always gave, and from then on
// UDP sockets are refused (Policy.UDPReady) and TCP connections to port 53 fail.
func (u *udpDNS) ensure() bool {
	if st := u.state.Load(); st != udpNotYet {
		return st == udpReady
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if st := u.state.Load(); st != udpNotYet {
		return st == udpReady
	}
	fail := func(line string) bool {
		u.opened.close()
		u.state.Store(udpFailed)
		u.s.log.Warn(line)
		return false
	}
	u.opened.add(func() { u.sandbox.Close() })
	if err := u.s.steps.sandbox(u.sandbox); err != nil {
		if u.sealed {
			return fail(fmt.Sprintf("the sandbox network namespace is unavailable (%v; user namespaces disabled? see the README): the kernel-enforced layer (SealedNetwork) is off, TCP sockets stay on the host network with only the socket-option allowlist between them and the network; UDP sockets will be refused, so name lookups will fail%s", err, u.peerNote()))
		}
		return fail(fmt.Sprintf("UDP and DNS unavailable (%v): UDP sockets will be refused, so name lookups will fail (user namespaces disabled? see the README)", err))
	}
	if u.relay {
		u.loopback = udprelay.New(u.sandbox)
		u.opened.add(func() { u.loopback.Close() })
	}
	server, err := u.s.steps.dnsServer(u.sandbox, u.answerer, u.s.log, u.dropped)
	if err != nil {
		if u.sealed {
			return fail(fmt.Sprintf("DNS responder unavailable (%v): UDP sockets will be refused, and the kernel-enforced layer (SealedNetwork) is off: TCP sockets stay on the host network with only the socket-option allowlist between them and the network%s", err, u.peerNote()))
		}
		return fail(fmt.Sprintf("DNS responder unavailable (%v): UDP sockets will be refused", err))
	}
	u.server = server
	u.opened.add(func() { server.Close() })
	u.state.Store(udpReady)
	fds := server.SideFDs()
	if u.wake >= 0 {
		fds = append([]int{u.wake}, fds...)
	}
	u.sideFDs.Store(&fds)
	if u.wake >= 0 {
		unix.Write(u.wake, []byte{1, 0, 0, 0, 0, 0, 0, 0}) // native endianness: any non-zero value
	}
	return true
}

// peerNote is what a failed ensure adds when the program's getpeername is not notified.
func (u *udpDNS) peerNote() string {
	if !u.peerByKernel.Load() {
		return ""
	}
	return "; getpeername on a proxied socket shows Tor's SocksPort, not the destination"
}

// close closes what ensure started (or keeps it from starting).
func (u *udpDNS) close() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.state.Store(udpFailed)
	u.sandbox.Close() // never started, or started: either way it ends
	u.opened.close()
}

// dnsTCP is the DNS responder's TCP listener as the supervisor sees it (supervisor.DNSTCP): asking
// for its address starts the responder.
type dnsTCP struct{ u *udpDNS }

// refusing is where a TCP connection to port 53 goes when the responder could not be started:
// nothing listens on port 0, so the connect fails.
var refusing = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), 0)

func (d dnsTCP) TCPAddr() netip.AddrPort {
	if !d.u.ensure() {
		return refusing
	}
	return d.u.server.TCPAddr()
}

func (d dnsTCP) Expect(port uint16) {
	if d.u.ensure() {
		d.u.server.Expect(port)
	}
}

// dnsSide is the DNS responder's UDP sockets as the supervisor sees them (supervisor.Side): its
// worker waiting at the listener answers the queries (dnsserver.StartSide). None until the
// responder runs; asking does not start it.
type dnsSide struct{ u *udpDNS }

func (d dnsSide) SideFDs() []int {
	if d.u.state.Load() == udpReady {
		if p := d.u.sideFDs.Load(); p != nil {
			return *p
		}
	}
	return d.u.wakeOnly
}

func (d dnsSide) ServeSide(fd int) {
	if fd == d.u.wake {
		var b [8]byte
		unix.Read(fd, b[:]) // the next wait polls the new set
		return
	}
	if d.u.state.Load() == udpReady {
		d.u.server.ServeSide(fd)
	}
}

// udpLoopback is the UDP loopback relay as the supervisor sees it (supervisor.Options.UDPLoopback):
// it is only asked about a connect on a sandbox socket, so the sandbox is started by then.
type udpLoopback struct{ u *udpDNS }

func (l udpLoopback) Ensure(dest netip.AddrPort) error {
	if !l.u.ensure() {
		return errors.New("the UDP sandbox is not running")
	}
	return l.u.loopback.Ensure(dest)
}

// steps are the constructors of a session's resources; tests substitute failing ones.
type steps struct {
	ownTor    func(*config.Config) (torHold, error)
	unixRelay func(path string) (*unixrelay.Relay, error)
	prepare   func() *sandbox.Sandbox      // the UDP sandbox, not started
	sandbox   func(*sandbox.Sandbox) error // starts it (on first use)
	dnsServer func(*sandbox.Sandbox, dnsserver.Answerer, *slog.Logger, dnsserver.Dropped) (*dnsserver.Server, error)
	start     func(path string, argv []string, prog []unix.SockFilter, opts launch.Options) (*launch.Child, error)
}

// realSteps are the steps of torsocks itself.
var realSteps = steps{
	ownTor:    func(cfg *config.Config) (torHold, error) { return useOwnTor(cfg) },
	unixRelay: unixrelay.Start,
	prepare:   func() *sandbox.Sandbox { return sandbox.Prepare("/proc/self/exe") },
	sandbox:   (*sandbox.Sandbox).Start,
	dnsServer: dnsserver.StartSide, // its UDP queries served by the supervisor's waiting worker (dnsSide)
	start:     startProgram,
}

// torHold is torsocks' hold on the user's own tor (ownTor; nothing when it uses another).
type torHold interface {
	release()
	refuseUnix(log *slog.Logger) func(fd int) error // supervisor.Options.RefuseUnix
}

// closers closes, newest first, what was opened.
type closers []func()

func (c *closers) add(close func()) { *c = append(*c, close) }

func (c *closers) close() {
	for i := len(*c) - 1; i >= 0; i-- {
		(*c)[i]()
	}
	*c = nil
}

// newSession opens the log (cfg.LogFile, else stderr) and says what the configuration warns of.
func newSession(cfg *config.Config, st steps, r *reaper) (*session, error) {
	s := &session{cfg: cfg, steps: st, r: r}
	logw := os.Stderr
	if cfg.LogFile != "" {
		f, err := tslog.OpenFile(cfg.LogFile)
		if err != nil {
			return nil, fmt.Errorf("log file: %v", err)
		}
		s.open.add(func() { f.Close() })
		logw = f
	}
	s.log = tslog.New(logw, tslog.Options{Level: cfg.LogLevel, Time: cfg.LogTime})
	for _, w := range cfg.Warnings {
		s.log.Warn(w)
	}
	if cfg.LogLevel >= tslog.LevelDebug {
		for _, line := range cfg.Describe() {
			s.log.Debug("config: " + line)
		}
	}
	if cfg.Auth != nil {
		s.auth = &socks5.Auth{Username: cfg.Auth.Username, Password: cfg.Auth.Password}
	}
	return s, nil
}

// Close closes what the session opened, newest first. It may be called more than once.
func (s *session) Close() { s.open.close() }

// openResources makes what the program's network goes through: the user's own tor if torsocks
// is to start one, the relay to a unix SocksPort, the UDP sandbox and DNS responder (prepared: they
// start on first use).
func (s *session) openResources() error {
	own, err := s.steps.ownTor(s.cfg)
	if err != nil {
		return err
	}
	s.own = own
	s.open.add(own.release)
	if s.cfg.SocksUnix != "" {
		if s.relay, err = s.steps.unixRelay(s.cfg.SocksUnix); err != nil {
			return err
		}
		s.open.add(func() { s.relay.Close() })
	}
	s.openUDP()
	return nil
}

// openUDP prepares the UDP sandbox and makes the DNS answerer; the sandbox's factory and the DNS
// responder start on first use (udpDNS.ensure). Without them (no network namespace could be made:
// not root and user namespaces disabled) UDP sockets are refused, as the C torsocks refuses them,
// and names can only be resolved by programs that ask Tor themselves; torsocks says so once. When
// not root, the factory is in a user namespace of its own, whose maps it writes itself; for a
// program without a Landlock domain launch starts it before the program runs.
func (s *session) openUDP() {
	onion, err := standin.New(s.cfg.OnionAddrRange)
	if err != nil {
		s.log.Error(fmt.Sprintf("OnionAddrRange %v: %v", s.cfg.OnionAddrRange, err))
		return
	}
	answerer, err := dns.New(dns.Options{
		Mode:     dns.Mode(s.cfg.DNSMode),
		Onion:    onion,
		Resolver: &dns.TorResolver{Auth: s.auth, Timeout: s.cfg.ConnectTimeout, Dial: s.dialTor},
		Logf:     func(f string, a ...any) { s.log.Warn(fmt.Sprintf(f, a...)) },
		Reclaim:  s.reclaimClosed,
	})
	if err != nil {
		s.log.Error(fmt.Sprintf("DNS: %v", err))
		return
	}
	sb := s.steps.prepare()
	u := &udpDNS{s: s, sandbox: sb, answerer: answerer, sealed: s.cfg.SealedNetwork, wake: -1}
	if fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err == nil {
		u.wake = fd
		u.wakeOnly = []int{fd}
		s.open.add(func() { unix.Close(fd) })
	}
	if s.cfg.AllowOutboundLocalhost == 2 {
		// UDP to loopback goes to this machine's services (torsocks' AllowOutboundLocalhost 2).
		u.relay = true
		u.dropped = func(src, dst netip.AddrPort, payload []byte) bool {
			if !dst.Addr().Unmap().IsLoopback() {
				return false
			}
			if err := u.loopback.Inject(src, dst, payload); err != nil {
				s.log.Warn(fmt.Sprintf("UDP to %s (AllowOutboundLocalhost 2): %v", dst, err))
			}
			return true
		}
	}
	s.udp = u
	s.open.add(u.close)
}

// dialTor connects to Tor's SocksPort, for the DNS answerer's RESOLVE requests.
func (s *session) dialTor(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	if s.cfg.SocksUnix != "" {
		return d.DialContext(ctx, "unix", s.cfg.SocksUnix)
	}
	return d.DialContext(ctx, "tcp", s.cfg.SocksAddr.String())
}

// reclaimClosed is the DNS answerer's call, when a stand-in table is full, to release the
// stand-ins held by connections the program has closed (the supervisor's registry sweep). Before
// the supervisor exists there is no connection to release.
func (s *session) reclaimClosed() {
	s.supMu.Lock()
	sup := s.sup
	s.supMu.Unlock()
	if sup != nil {
		sup.ReclaimClosed()
	}
}

// launch starts the program (path, argv) under the filter prog, built from fopts; signals torsocks
// receives from its fork on are forwarded to it (reaper). Signals are not stopped at the end:
// torsocks exits.
func (s *session) launch(path string, argv []string, prog []unix.SockFilter, fopts filter.Options) error {
	opts := launch.Options{KeepCapabilities: s.cfg.KeepCapabilities}
	if s.r != nil {
		log := s.log
		opts.BeforeFork = func() func(int) { return s.r.beforeFork(log) }
	}
	sandboxDown := s.udp == nil
	if s.udp != nil && os.Getuid() != 0 {
		// The factory runs in a user namespace the user owns, so a program that gets no Landlock
		// domain could attach to it (ptrace) once it exists, before it makes itself undumpable:
		// for such a program it is started, and ready, before the program runs a single
		// instruction. Otherwise it starts on first use (udpDNS.ensure), as for root; its error
		// is the first use's to report. Started from another thread than launch's, whose
		// capabilities and flags are the program's by then.
		sb := s.udp.sandbox
		opts.Unconfined = func() {
			done := make(chan struct{})
			go func() { sb.Start(); close(done) }()
			<-done
		}
	}
	if fopts.PeerByKernel && sandboxDown {
		// The program's TCP sockets will stay on the host network: getpeername needs the
		// supervisor's answer (filter.Options.PeerByKernel).
		fopts.PeerByKernel = false
		var err error
		if prog, err = filter.Build(filter.HostABIs, fopts); err != nil {
			return err
		}
	}
	if s.udp != nil {
		s.udp.peerByKernel.Store(fopts.PeerByKernel)
	}
	child, err := s.steps.start(path, argv, prog, opts)
	if err != nil {
		return err
	}
	s.child = child
	s.log.Debug(fmt.Sprintf("program pid %d, Landlock domain: %s", child.Pid, child.Landlock))
	return nil
}

// startProgram makes torsocks the program tree's subreaper, unattachable, and starts the program
// (the real steps.start).
func startProgram(path string, argv []string, prog []unix.SockFilter, opts launch.Options) (*launch.Child, error) {
	// Orphans of the program's tree are re-parented to us, so they stay our descendants (pidfd_getfd
	// and process_vm_readv then work under Yama's ptrace_scope 1) and we can reap them.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return nil, fmt.Errorf("prctl(PR_SET_CHILD_SUBREAPER): %v", err)
	}
	// From here on the program exists, and the supervisor must not be attachable by it: with
	// dumpable 0 neither ptrace, /proc/PID/mem, /proc/PID/fd, process_vm_readv nor pidfd_getfd
	// reach this process without CAP_SYS_PTRACE, which the program does not have (unless
	// KeepCapabilities); the Landlock domain (launch) stops root too. Not earlier: a child cloned
	// into a new user namespace inherits the flag, and its uid_map would then be root's to write
	// (the non-root UDP sandbox). The program gets dumpable back from execve.
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return nil, fmt.Errorf("prctl(PR_SET_DUMPABLE): %v", err)
	}
	return launch.Start(path, argv, os.Environ(), prog, opts)
}

// supervise serves the program's listener until no process of its tree uses the filter any
// more, reaps them all, and returns how the program ended.
func (s *session) supervise() unix.WaitStatus {
	sup := supervisor.New(s.child.Listener, s.supervisorOptions())
	s.supMu.Lock()
	s.sup = sup
	s.supMu.Unlock()
	if err := sup.Serve(); err != nil {
		// Closing the listener makes every pending and later notified call fail (ENOSYS): the
		// program loses its network, nothing goes around Tor.
		s.log.Error(fmt.Sprintf("supervisor stopped: %v; the program's network calls now fail", err))
	}
	s.child.Listener.Close()
	// The program's tree is gone, and with it its sockets: let the relay carry what they were
	// sent last (a reply written just before exit) before torsocks exits and takes the relay
	// with it. Bounded: a socket passed to a process outside the tree may keep one open.
	if !sup.WaitRelays(exitDrain) {
		s.log.Debug("relayed connections still open at exit; closing them")
	}
	return s.r.wait()
}

// exitDrain bounds how long torsocks waits, after the program's tree has exited, for relayed
// connections to carry their last bytes.
const exitDrain = 2 * time.Second

// supervisorOptions wires the session's resources into the supervisor.
func (s *session) supervisorOptions() supervisor.Options {
	cfg := s.cfg
	socksPorts := []netip.AddrPort{cfg.SocksAddr}
	if cfg.SocksAddrV6.IsValid() {
		socksPorts = append(socksPorts, cfg.SocksAddrV6)
	}
	opts := supervisor.Options{
		Socks:          cfg.SocksAddr,
		SocksV6:        cfg.SocksAddrV6,
		Auth:           s.auth,
		IsolatePID:     cfg.IsolatePID,
		VetReceived:    cfg.VetReceivedSockets,
		ConnectTimeout: cfg.ConnectTimeout,
		Logger:         s.log,
		Policy: &policy.Policy{
			AllowOutboundLocalhost: cfg.AllowOutboundLocalhost,
			AllowInbound:           cfg.AllowInbound,
			EnableIPv6:             cfg.EnableIPv6,
			SocksPorts:             socksPorts,
			UDPSandbox:             s.udp != nil,
			SealedTCP:              cfg.SealedNetwork && s.udp != nil,
		},
		SealedNetwork: cfg.SealedNetwork,
		AsyncConnect:  cfg.AsyncConnect,
	}
	if cfg.SealedNetwork && s.udp == nil {
		s.log.Warn("the sandbox network namespace is not used (see the error above): the kernel-enforced layer (SealedNetwork) is off, TCP sockets stay on the host network with only the socket-option allowlist between them and the network")
	}
	if s.udp != nil {
		opts.Policy.UDPReady = s.udp.ensure
	}
	if s.own != nil {
		opts.RefuseUnix = s.own.refuseUnix(s.log)
	}
	// Interfaces are set only for what exists (a nil pointer in an interface is not nil).
	if s.relay != nil {
		opts.SocksRelay = s.relay
	}
	if u := s.udp; u != nil {
		opts.Sandbox = u.sandbox
		opts.DNSTCP = dnsTCP{u}
		opts.Side = dnsSide{u}
		opts.StandIns = u.answerer
		if u.relay {
			opts.UDPLoopback = udpLoopback{u}
		}
	}
	return opts
}
