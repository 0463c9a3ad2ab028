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
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gotorsocks/torsocks/internal/config"
	"github.com/gotorsocks/torsocks/internal/torstart"
)

// ownTor is the user's own tor that torsocks uses, if any (useOwnTor).
type ownTor struct{ tor *torstart.Tor }

// release drops torsocks' hold on the tor (its idle time starts when no torsocks holds it).
func (o *ownTor) release() {
	if o.tor != nil {
		o.tor.Release()
	}
}

// refuseUnix is supervisor.Options.RefuseUnix: the program may not connect to the tor's control
// port (it runs as the same user, so file modes do not keep it out).
func (o *ownTor) refuseUnix(log *slog.Logger) func(fd int) error {
	if o.tor == nil {
		return nil
	}
	return func(fd int) error {
		if o.tor.IsControl(fd) {
			log.Warn("connection to the control port of torsocks' own tor refused: the program could reconfigure Tor")
			return errControlPort
		}
		return nil
	}
}

var errControlPort = fmt.Errorf("the control port of torsocks' own tor: %w", unix.ECONNREFUSED)

// useOwnTor makes cfg point at the user's own tor (internal/torstart) when TorStart allows it: no
// SocksPort configured explicitly and, with TorStart auto, nothing answering on the default one.
// It starts that tor if none is running and returns once it has bootstrapped, with a release to
// call when torsocks is done with it. Progress goes to stderr (nothing with -q).
func useOwnTor(cfg *config.Config) (own *ownTor, err error) {
	nothing := &ownTor{}
	if cfg.TorStart == config.TorStartNever || cfg.SocksExplicit {
		return nothing, nil
	}
	if cfg.TorStart == config.TorStartAuto && answers(cfg.SocksAddr) {
		return nothing, nil
	}
	bin, err := exec.LookPath(cfg.TorBinary)
	if err != nil {
		if cfg.TorStart == config.TorStartAuto && cfg.Sources["TorBinary"] == "default" {
			return nothing, nil // no tor installed: connects fail as before, saying Tor is not running
		}
		return nil, fmt.Errorf("TorBinary %s (from %s): %v", cfg.TorBinary, cfg.Sources["TorBinary"], errors.Unwrap(err))
	}
	paths, err := torstart.UserPaths(os.LookupEnv, os.Getuid())
	if err != nil {
		return nil, err
	}
	var extra []byte
	if cfg.TorConfig != "" {
		if extra, err = os.ReadFile(cfg.TorConfig); err != nil {
			return nil, fmt.Errorf("TorConfig (from %s): %w", cfg.Sources["TorConfig"], err)
		}
	}
	var w io.Writer = os.Stderr
	if cfg.LogLevel <= config.LogNone {
		w = io.Discard
	}
	pr := newProgressLine(w, isTerminal(os.Stderr))
	tor, err := torstart.Ensure(context.Background(), torstart.Options{
		Paths: paths, UID: os.Getuid(), Binary: bin,
		Extra: extra, ExtraName: cfg.TorConfig,
		BootstrapTimeout: cfg.TorBootstrapTimeout,
		Idle:             cfg.TorIdleTime,
		Progress:         pr.show,
	})
	pr.end()
	if err != nil {
		return nil, fmt.Errorf("starting Tor (%s): %w", bin, err)
	}
	if tor.OtherSettings && cfg.LogLevel > config.LogNone {
		fmt.Fprintf(os.Stderr, "torsocks: WARNING: the running tor (pid %d) was started with other settings (TorConfig); torsocks --tor-stop restarts it\n", tor.Pid)
	}
	cfg.SocksUnix, cfg.SocksAddr = tor.Socks, netip.AddrPort{}
	return &ownTor{tor: tor}, nil
}

// answers tells whether something accepts TCP connections at addr (the default SocksPort), within
// probeTimeout.
//
// A blocking connect with SO_SNDTIMEO (Linux bounds a blocking connect by the send timeout), not
// net.DialTimeout: this is on the start-up path of every run with TorStart auto, and the net
// package's dial brought up the runtime's network poller (epoll_create, eventfd, epoll_ctl) and
// parked the goroutine, locked to the main thread (launch), on it until the connect completed:
// two thread hand-offs for a loopback connect that completes within the call (~0.3 ms of start-up
// here, against four system calls now).
func answers(addr netip.AddrPort) bool {
	addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	if !addr.Addr().IsValid() {
		return false
	}
	var family int
	var sa unix.Sockaddr
	if addr.Addr().Is4() {
		family, sa = unix.AF_INET, &unix.SockaddrInet4{Port: int(addr.Port()), Addr: addr.Addr().As4()}
	} else {
		family, sa = unix.AF_INET6, &unix.SockaddrInet6{Port: int(addr.Port()), Addr: addr.Addr().As16(), ZoneId: zoneID(addr.Addr().Zone())}
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval(probeTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
		return false
	}
	switch err := unix.Connect(fd, sa); err {
	case nil:
		return true
	case unix.EINTR, unix.EALREADY:
		// Interrupted by a signal (the runtime's preemption signal, say): the connect goes on.
		return waitConnected(fd)
	}
	return false
}

// probeTimeout bounds the SocksPort probe (answers).
const probeTimeout = 500 * time.Millisecond

// waitConnected waits (at most probeTimeout) for the connect in progress on fd to end, and
// reports whether it succeeded.
func waitConnected(fd int) bool {
	deadline := time.Now().Add(probeTimeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return false
		}
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		n, err := unix.Poll(pfd, int(left.Milliseconds())+1)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n == 0 {
			return false
		}
		soerr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
		return err == nil && soerr == 0
	}
}

// zoneID is the interface index of an IPv6 zone (0: none or unknown).
func zoneID(zone string) uint32 {
	if zone == "" {
		return 0
	}
	if ifi, err := net.InterfaceByName(zone); err == nil {
		return uint32(ifi.Index)
	}
	return 0
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// progressLine shows Tor's bootstrap: one line rewritten in place on a terminal, a line per new
// percentage otherwise. A tor that is already bootstrapped shows nothing.
type progressLine struct {
	w       io.Writer
	tty     bool
	shown   bool
	last    int
	lastLen int
}

func newProgressLine(w io.Writer, tty bool) *progressLine {
	return &progressLine{w: w, tty: tty, last: -1}
}

func (p *progressLine) show(pr torstart.Progress) {
	if !p.shown && pr.Percent == 100 {
		return
	}
	if pr.Percent == p.last && !p.tty {
		return
	}
	line := "torsocks: starting Tor: " + pr.String()
	p.shown, p.last = true, pr.Percent
	if p.tty {
		pad := ""
		if n := p.lastLen - len(line); n > 0 {
			pad = strings.Repeat(" ", n)
		}
		fmt.Fprint(p.w, "\r"+line+pad)
		p.lastLen = len(line)
		return
	}
	fmt.Fprintln(p.w, line)
}

func (p *progressLine) end() {
	if p.tty && p.shown {
		fmt.Fprintln(p.w)
	}
}

// torStop is --tor-stop: stop the user's tor that torsocks started.
func torStop() int {
	paths, err := torstart.UserPaths(os.LookupEnv, os.Getuid())
	if err != nil {
		fmt.Fprintf(os.Stderr, "torsocks: %v\n", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stopped, err := torstart.Stop(ctx, paths, os.Getuid())
	switch {
	case err != nil:
		fmt.Fprintf(os.Stderr, "torsocks: --tor-stop: %v\n", err)
		return 1
	case stopped:
		fmt.Fprintln(os.Stderr, "torsocks: stopped the tor torsocks started")
	default:
		fmt.Fprintln(os.Stderr, "torsocks: no tor started by torsocks is running")
	}
	return 0
}
