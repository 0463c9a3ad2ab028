// Package run is one torsocks invocation from start to exit: it reads the configuration, refuses
// what cannot be run safely, starts the program under the seccomp filter, supervises it until
// every process of its tree has exited, and exits with the program's status.
package run

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gotorsocks/torsocks/internal/config"
	"github.com/gotorsocks/torsocks/internal/dns"
	"github.com/gotorsocks/torsocks/internal/dnsserver"
	"github.com/gotorsocks/torsocks/internal/doctor"
	"github.com/gotorsocks/torsocks/internal/filter"
	"github.com/gotorsocks/torsocks/internal/launch"
	"github.com/gotorsocks/torsocks/internal/policy"
	"github.com/gotorsocks/torsocks/internal/sandbox"
	"github.com/gotorsocks/torsocks/internal/seccomp"
	"github.com/gotorsocks/torsocks/internal/socks5"
	"github.com/gotorsocks/torsocks/internal/standin"
	"github.com/gotorsocks/torsocks/internal/supervisor"
	"github.com/gotorsocks/torsocks/internal/tslog"
	"github.com/gotorsocks/torsocks/internal/udprelay"
	"github.com/gotorsocks/torsocks/internal/unixrelay"
)

// Version is this torsocks' version.
const Version = "0.1.0"

// Main runs torsocks with args (os.Args[1:]) and returns the exit status (or does not return: when
// the program was killed by a signal, torsocks kills itself with the same signal).
func Main(args []string) int {
	inv, err := config.Parse(args, os.LookupEnv, os.ReadFile)
	if err != nil {
		fmt.Fprintf(os.Stderr, "torsocks: %v\n", err)
		var ue *config.UsageError
		if errors.As(err, &ue) && ue.ShowUsage {
			fmt.Fprint(os.Stderr, config.Usage())
		}
		return 1
	}
	switch inv.Action {
	case config.Help:
		fmt.Print(config.Usage())
		return 0
	case config.Version:
		fmt.Printf("Torsocks %s (Go, seccomp user notification)\n", Version)
		return 0
	case config.OnOffShow:
		fmt.Fprintln(os.Stderr, config.OnOffShowMessage(inv.Command[0]))
		return 1
	case config.TorStop:
		return torStop()
	case config.Doctor:
		return doctor.Run(os.Stdout, &inv.Config, doctor.Default())
	}
	cfg := &inv.Config
	logw := io.Writer(os.Stderr)
	if cfg.LogFile != "" {
		f, err := tslog.OpenFile(cfg.LogFile)
		if err != nil {
			fmt.Fprintf(os.Stderr, "torsocks: log file: %v\n", err)
			return 1
		}
		defer f.Close()
		logw = f
	}
	log := tslog.New(logw, tslog.Options{Level: cfg.LogLevel, Time: cfg.LogTime})
	for _, w := range cfg.Warnings {
		log.Warn(w)
	}
	if cfg.LogLevel >= tslog.LevelDebug {
		for _, line := range cfg.Describe() {
			log.Debug("config: " + line)
		}
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "torsocks: "+format+"\n", a...)
		return 1
	}
	if err := seccomp.CheckKernel(); err != nil {
		return fail("%v", err)
	}
	if err := seccomp.CheckSizes(); err != nil {
		return fail("%v", err)
	}
	if inv.Shell {
		fmt.Fprintln(os.Stderr, "New torified shell coming right up...")
	}
	path, err := exec.LookPath(inv.Command[0])
	if err != nil {
		return fail("%s: command not found", inv.Command[0])
	}
	if path, err = filepath.Abs(path); err != nil {
		return fail("%s: %v", inv.Command[0], err)
	}
	if err := checkPrivileged(path); err != nil {
		return fail("%v", err)
	}
	if err := checkInherited(); err != nil {
		return fail("%v", err)
	}
	own, err := useOwnTor(cfg)
	if err != nil {
		return fail("%v", err)
	}
	defer own.release()
	prog, err := filter.Build(filter.HostABIs, filter.Options{EnableIPv6: cfg.EnableIPv6, VetReceived: cfg.VetReceivedSockets})
	if err != nil {
		return fail("%v", err)
	}
	// Orphans of the program's tree are re-parented to us, so they stay our descendants (pidfd_getfd
	// and process_vm_readv then work under Yama's ptrace_scope 1) and we can reap them.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fail("prctl(PR_SET_CHILD_SUBREAPER): %v", err)
	}
	sigs := make(chan os.Signal, 32)
	signal.Notify(sigs, forwarded()...)
	signal.Notify(sigs, unix.SIGCHLD)

	var auth *socks5.Auth
	if cfg.Auth != nil {
		auth = &socks5.Auth{Username: cfg.Auth.Username, Password: cfg.Auth.Password}
	}
	var relay *unixrelay.Relay
	if cfg.SocksUnix != "" {
		if relay, err = unixrelay.Start(cfg.SocksUnix); err != nil {
			return fail("%v", err)
		}
		defer relay.Close()
	}

	var supRef atomic.Pointer[supervisor.Supervisor] // set below; the DNS responder's full-table hook needs it
	reclaim := func() {
		if sup := supRef.Load(); sup != nil {
			sup.ReclaimClosed()
		}
	}
	udp := startDNS(cfg, auth, log, reclaim)
	if udp.server != nil {
		defer udp.server.Close()
	}

	// From here on the program exists, and the supervisor must not be attachable by it: with
	// dumpable 0 neither ptrace, /proc/PID/mem, /proc/PID/fd, process_vm_readv nor pidfd_getfd
	// reach this process without CAP_SYS_PTRACE, which the program does not have (unless
	// KeepCapabilities); the Landlock domain (launch) stops root too. Not earlier: a child cloned
	// into a new user namespace inherits the flag, and its uid_map would then be root's to write
	// (the non-root UDP sandbox). The helper and the program get dumpable back from execve.
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fail("prctl(PR_SET_DUMPABLE): %v", err)
	}
	child, err := launch.Start("/proc/self/exe", path, inv.Command, os.Environ(), prog,
		launch.Options{KeepCapabilities: cfg.KeepCapabilities})
	if err != nil {
		return fail("%v", err)
	}
	log.Debug(fmt.Sprintf("program pid %d, Landlock domain: %s", child.Pid, child.Landlock))
	socksPorts := []netip.AddrPort{cfg.SocksAddr}
	if cfg.SocksAddrV6.IsValid() {
		socksPorts = append(socksPorts, cfg.SocksAddrV6)
	}
	sup := supervisor.New(child.Listener, supervisor.Options{
		Socks:          cfg.SocksAddr,
		SocksRelay:     gated(relay),
		SocksV6:        cfg.SocksAddrV6,
		Auth:           auth,
		IsolatePID:     cfg.IsolatePID,
		VetReceived:    cfg.VetReceivedSockets,
		ConnectTimeout: cfg.ConnectTimeout,
		Logger:         log,
		Policy: &policy.Policy{
			AllowOutboundLocalhost: cfg.AllowOutboundLocalhost,
			AllowInbound:           cfg.AllowInbound,
			EnableIPv6:             cfg.EnableIPv6,
			SocksPorts:             socksPorts,
			UDPSandbox:             udp.server != nil,
		},
		Sandbox:     udp.sandbox,
		DNSTCP:      dnsTCP(udp.server),
		UDPLoopback: udp.loopback(),
		StandIn:     udp.standIn,
		RefuseUnix:  own.refuseUnix(log),
	})

	supRef.Store(sup)
	r := &reaper{child: child.Pid, done: make(chan struct{})}
	go r.loop(sigs, log)
	if err := sup.Serve(); err != nil {
		// Closing the listener makes every pending and later notified call fail (ENOSYS): the
		// program loses its network, nothing goes around Tor.
		log.Error(fmt.Sprintf("supervisor stopped: %v; the program's network calls now fail", err))
	}
	child.Listener.Close()
	<-r.done
	return r.exit()
}

// reaper reaps every child (the program and re-parented orphans) and forwards signals.
type reaper struct {
	child  int
	mu     sync.Mutex // guards status
	status unix.WaitStatus
	once   sync.Once
	done   chan struct{}
}

func (r *reaper) loop(sigs <-chan os.Signal, log *slog.Logger) {
	r.reap()
	for sig := range sigs {
		if sig == unix.SIGCHLD {
			r.reap()
			continue
		}
		if s, ok := sig.(syscall.Signal); ok && shouldForward(s) {
			if err := unix.Kill(r.child, s); err != nil && err != unix.ESRCH {
				log.Debug(fmt.Sprintf("forward %v to pid %d: %v", s, r.child, err))
			}
		}
	}
}

func (r *reaper) reap() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		if pid == r.child && (ws.Exited() || ws.Signaled()) {
			r.mu.Lock()
			r.status = ws
			r.mu.Unlock()
			r.once.Do(func() { close(r.done) })
		}
	}
}

// exit returns the program's exit status, or re-raises the signal that killed it so that the
// calling shell reports it exactly as it would without torsocks.
func (r *reaper) exit() int {
	r.mu.Lock()
	ws := r.status
	r.mu.Unlock()
	if ws.Exited() {
		return ws.ExitStatus()
	}
	sig := ws.Signal()
	signal.Reset(sig)
	unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{}) // the program dumped core if it was to; we do not
	unix.Kill(os.Getpid(), sig)
	time.Sleep(time.Second) // the signal is delivered asynchronously; do not exit before it lands
	return 128 + int(sig)
}

// forwarded lists the signals torsocks passes on to the program. Signals it was started with
// ignored stay ignored (the program inherits that, as it would without torsocks).
func forwarded() []os.Signal {
	var out []os.Signal
	for _, s := range []syscall.Signal{unix.SIGHUP, unix.SIGINT, unix.SIGQUIT, unix.SIGTERM, unix.SIGUSR1,
		unix.SIGUSR2, unix.SIGALRM, unix.SIGWINCH, unix.SIGCONT, unix.SIGPWR, unix.SIGVTALRM, unix.SIGPROF} {
		if !signal.Ignored(s) {
			out = append(out, s)
		}
	}
	return out
}

// shouldForward tells whether a signal torsocks received should be passed to the program. The
// terminal sends SIGINT, SIGQUIT, SIGWINCH and SIGHUP to the whole foreground process group, which
// the program shares with torsocks: it already has them, and a second copy would be wrong (Python
// would raise KeyboardInterrupt twice). Sent by kill(1) to torsocks alone, they are forwarded.
func shouldForward(s syscall.Signal) bool {
	switch s {
	case unix.SIGINT, unix.SIGQUIT, unix.SIGWINCH, unix.SIGHUP:
		return !inForeground()
	}
	return true
}

func inForeground() bool {
	fd, err := unix.Open("/dev/tty", unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	pgrp, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP)
	return err == nil && pgrp == unix.Getpgrp()
}

// checkPrivileged refuses setuid, setgid and file-capability programs: under no_new_privs they
// would run without their privileges and fail in confusing ways (torsocks refuses them too).
func checkPrivileged(path string) error {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if st.Mode&(unix.S_ISUID|unix.S_ISGID) != 0 {
		return fmt.Errorf("%s is setuid or setgid: torsocks runs programs with no_new_privs, so it would run without its privileges; refusing", path)
	}
	if _, err := unix.Getxattr(path, "security.capability", nil); err == nil {
		return fmt.Errorf("%s has file capabilities: torsocks runs programs with no_new_privs, so it would run without them; refusing", path)
	}
	return nil
}

// gated returns r as the supervisor's interface, or a nil interface for a nil relay.
func gated(r *unixrelay.Relay) supervisor.Gated {
	if r == nil {
		return nil
	}
	return r
}

// udpDNS is the UDP sandbox and the DNS responder serving the program, when they could be made.
type udpDNS struct {
	sandbox *sandbox.Sandbox
	server  *dnsserver.Server
	standIn func(netip.Addr) (string, func(), bool, bool)
	relay   *udprelay.Relay // AllowOutboundLocalhost 2 only
}

// loopback returns the relay as the supervisor's interface, or a nil interface.
func (u udpDNS) loopback() interface{ Ensure(netip.AddrPort) error } {
	if u.relay == nil {
		return nil
	}
	return u.relay
}

// startDNS makes the UDP sandbox and starts the DNS responder. Without them (no network namespace
// could be made: not root and user namespaces disabled) UDP sockets are refused, as the C torsocks
// refuses them, and names can only be resolved by programs that ask Tor themselves; torsocks says
// so once.
func startDNS(cfg *config.Config, auth *socks5.Auth, log *slog.Logger, reclaim func()) udpDNS {
	sb, err := sandbox.New("/proc/self/exe")
	if err != nil {
		log.Warn(fmt.Sprintf("UDP and DNS unavailable (%v): UDP sockets will be refused, so name lookups will fail (user namespaces disabled? see the README)", err))
		return udpDNS{}
	}
	onion, err := standin.New(cfg.OnionAddrRange)
	if err != nil {
		log.Error(fmt.Sprintf("OnionAddrRange %v: %v", cfg.OnionAddrRange, err))
		return udpDNS{}
	}
	resolver := &dns.TorResolver{Auth: auth, Timeout: cfg.ConnectTimeout, Dial: func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		if cfg.SocksUnix != "" {
			return d.DialContext(ctx, "unix", cfg.SocksUnix)
		}
		return d.DialContext(ctx, "tcp", cfg.SocksAddr.String())
	}}
	answerer, err := dns.New(dns.Options{
		Mode:     dns.Mode(cfg.DNSMode),
		Onion:    onion,
		Resolver: resolver,
		Logf:     func(f string, a ...any) { log.Warn(fmt.Sprintf(f, a...)) },
		Reclaim:  reclaim,
	})
	if err != nil {
		log.Error(fmt.Sprintf("DNS: %v", err))
		return udpDNS{}
	}
	var relay *udprelay.Relay
	var dropped dnsserver.Dropped
	if cfg.AllowOutboundLocalhost == 2 {
		// UDP to loopback goes to this machine's services (torsocks' AllowOutboundLocalhost 2).
		relay = udprelay.New(sb)
		dropped = func(src, dst netip.AddrPort, payload []byte) bool {
			if !dst.Addr().Unmap().IsLoopback() {
				return false
			}
			if err := relay.Inject(src, dst, payload); err != nil {
				log.Warn(fmt.Sprintf("UDP to %s (AllowOutboundLocalhost 2): %v", dst, err))
			}
			return true
		}
	}
	srv, err := dnsserver.Start(sb, answerer, log, dropped)
	if err != nil {
		log.Warn(fmt.Sprintf("DNS responder unavailable (%v): UDP sockets will be refused", err))
		return udpDNS{}
	}
	return udpDNS{sandbox: sb, server: srv, standIn: answerer.StandIn, relay: relay}
}

// dnsTCP returns s as the supervisor's interface, or a nil interface for a nil server.
func dnsTCP(s *dnsserver.Server) supervisor.DNSTCP {
	if s == nil {
		return nil
	}
	return s
}
