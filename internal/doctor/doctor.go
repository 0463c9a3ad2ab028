// Package doctor is torsocks --doctor: one screen that says, for this machine and this user, what
// torsocks needs, what works, what does not and why, and an exit status of 0 only when
// `torsocks COMMAND` would work. Every look at the machine goes through Probes, so tests can
// emulate each missing prerequisite.
package doctor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gotorsocks/torsocks/internal/config"
	"github.com/gotorsocks/torsocks/internal/seccomp"
	"github.com/gotorsocks/torsocks/internal/torstart"
)

// Probes are the doctor's looks at the machine.
type Probes struct {
	// Kernel returns the kernel release and seccomp.CheckKernel's verdict.
	Kernel func() (release string, err error)
	// Notify checks that seccomp user notification works (seccomp.CheckSizes).
	Notify func() error
	// LandlockABI returns the Landlock ABI version (an error when Landlock is unavailable).
	LandlockABI func() (int, error)
	// UID is the user's uid.
	UID func() int
	// NetNS creates a network namespace, in a new user namespace when userNS (a normal user),
	// as the UDP sandbox does for DNS.
	NetNS func(userNS bool) error
	// LookPath finds the tor binary.
	LookPath func(string) (string, error)
	// Socks says whether a SOCKS5 server answers at addr (network "tcp" or "unix").
	Socks func(network, addr string) error
	// OwnTor returns the paths and the state of the user's own tor (internal/torstart).
	OwnTor func() (torstart.Paths, torstart.Status, error)
}

// Default are the probes of this machine.
func Default() Probes {
	return Probes{
		Kernel: func() (string, error) {
			var u unix.Utsname
			if err := unix.Uname(&u); err != nil {
				return "", err
			}
			return unix.ByteSliceToString(u.Release[:]), seccomp.CheckKernel()
		},
		Notify:      seccomp.CheckSizes,
		LandlockABI: landlockABI,
		UID:         os.Getuid,
		NetNS:       netNS,
		LookPath:    exec.LookPath,
		Socks:       socksAnswers,
		OwnTor: func() (torstart.Paths, torstart.Status, error) {
			p, err := torstart.UserPaths(os.LookupEnv, os.Getuid())
			if err != nil {
				return p, torstart.Status{}, err
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			st, err := torstart.Probe(ctx, p)
			return p, st, err
		},
	}
}

func landlockABI() (int, error) {
	abi, _, errno := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, 0, 0, unix.LANDLOCK_CREATE_RULESET_VERSION)
	if errno != 0 {
		return 0, errno
	}
	return int(abi), nil
}

// netNS runs this binary's --version in a new network namespace (and user namespace).
func netNS(userNS bool) error {
	cmd := exec.Command("/proc/self/exe", "--version")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	if userNS {
		cmd.SysProcAttr.Cloneflags |= syscall.CLONE_NEWUSER
	}
	return cmd.Run()
}

// socksAnswers sends a SOCKS5 greeting (no authentication) and wants a SOCKS5 answer.
func socksAnswers(network, addr string) error {
	c, err := net.DialTimeout(network, addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte{5, 1, 0}); err != nil {
		return err
	}
	var b [2]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return fmt.Errorf("no SOCKS5 answer to a greeting: %w", err)
	}
	if b[0] != 5 {
		return fmt.Errorf("not a SOCKS5 server (answered %#x %#x)", b[0], b[1])
	}
	return nil
}

type level int

const (
	ok level = iota
	info
	warn
	fail
)

var tags = [...]string{ok: "ok  ", info: "--  ", warn: "WARN", fail: "FAIL"}

type report struct {
	w        io.Writer
	problems int
}

func (r *report) line(l level, what, format string, a ...any) {
	if l == fail {
		r.problems++
	}
	fmt.Fprintf(r.w, "%s  %-26s %s\n", tags[l], what+":", fmt.Sprintf(format, a...))
}

// Run writes the report on w and returns the exit status: 0 when torsocks COMMAND would work,
// else 1.
func Run(w io.Writer, cfg *config.Config, p Probes) int {
	r := &report{w: w}
	fmt.Fprintln(w, "torsocks --doctor: what torsocks needs on this machine, for this user")
	r.system(p)
	r.tor(cfg, p)
	fmt.Fprintln(w, "configuration in effect (setting, value, where it came from):")
	for _, l := range cfg.Describe() {
		fmt.Fprintln(w, "      "+l)
	}
	for _, wn := range cfg.Warnings {
		r.line(warn, "configuration", "%s", wn)
	}
	if r.problems > 0 {
		fmt.Fprintf(w, "verdict: torsocks COMMAND would not work here (%d problem%s above)\n", r.problems, map[bool]string{true: "s"}[r.problems > 1])
		return 1
	}
	fmt.Fprintln(w, "verdict: torsocks COMMAND should work")
	return 0
}

// system: the kernel, seccomp user notification, Landlock, namespaces.
func (r *report) system(p Probes) {
	release, err := p.Kernel()
	switch {
	case err != nil:
		r.line(fail, "kernel", "%v", err)
	default:
		r.line(ok, "kernel", "Linux %s (torsocks needs 5.19 or newer)", release)
	}
	if err := p.Notify(); err != nil {
		r.line(fail, "seccomp user notification", "unavailable: %v (torsocks cannot intercept the program's network calls)", err)
	} else {
		r.line(ok, "seccomp user notification", "available")
	}
	switch abi, err := p.LandlockABI(); {
	case err != nil:
		r.line(warn, "Landlock", "unavailable (%v): only PR_SET_DUMPABLE keeps the program from ptracing torsocks and other processes of the user (Landlock not in the kernel's lsm= list?)", err)
	case abi >= 4:
		r.line(ok, "Landlock", "ABI %d: ptrace scoping and the TCP connect rule", abi)
	case abi >= 2:
		r.line(ok, "Landlock", "ABI %d: ptrace scoping (no network rules before ABI 4, Linux 6.7)", abi)
	default:
		r.line(warn, "Landlock", "ABI %d: too old to be used (torsocks uses ABI 2 or newer)", abi)
	}
	if p.UID() == 0 {
		if err := p.NetNS(false); err != nil {
			r.line(fail, "network namespace", "cannot create one (%v): UDP and DNS unavailable, name lookups fail", err)
		} else {
			r.line(ok, "network namespace", "can be created (root: no user namespace needed) for UDP and DNS")
		}
		return
	}
	if err := p.NetNS(true); err != nil {
		r.line(fail, "user namespaces", "cannot create one as uid %d (%v): UDP and DNS unavailable, name lookups fail (sysctl kernel.unprivileged_userns_clone, user.max_user_namespaces, AppArmor's restrict_unprivileged_userns)", p.UID(), err)
	} else {
		r.line(ok, "user namespaces", "unprivileged ones can be created (needed for DNS as a normal user)")
	}
}

// tor: where Tor is, whether it answers and has bootstrapped, IsolateSOCKSAuth; as run decides
// (internal/run useOwnTor).
func (r *report) tor(cfg *config.Config, p Probes) {
	where, network := cfg.SocksAddr.String(), "tcp"
	if cfg.SocksUnix != "" {
		where, network = cfg.SocksUnix, "unix"
	}
	src := cfg.Sources["TorAddress"]
	if src == "default" && cfg.Sources["TorPort"] != "" {
		src = cfg.Sources["TorPort"]
	}
	if cfg.TorStart != config.TorStartAlways {
		err := p.Socks(network, where)
		switch {
		case err == nil:
			r.line(ok, "Tor", "a SOCKS5 server answers at %s (TorAddress/TorPort from %s)", where, src)
			r.line(info, "Tor bootstrapped", "unknown: torsocks knows no control port of that tor (torsocks waits for nothing: connects fail until it has)")
			l := info
			if cfg.IsolatePID {
				l = warn
			}
			r.line(l, "IsolateSOCKSAuth (-i)", "unknown: only that tor's control port could tell (Tor's default is on; off, -i isolates nothing)")
			return
		case cfg.SocksExplicit:
			r.line(fail, "Tor", "nothing answers at %s (%v), set explicitly (from %s): torsocks does not start a tor then", where, err, src)
			return
		case cfg.TorStart == config.TorStartNever:
			r.line(fail, "Tor", "nothing answers at %s (%v), and TorStart is never (from %s)", where, err, cfg.Sources["TorStart"])
			return
		default:
			r.line(info, "Tor at the default port", "nothing answers at %s (%v): torsocks uses a tor of its own", where, err)
		}
	}
	bin, err := p.LookPath(cfg.TorBinary)
	if err != nil {
		r.line(fail, "tor binary", "%s (TorBinary from %s) not found: %v; install the tor package, or run a tor and set TorAddress/TorPort", cfg.TorBinary, cfg.Sources["TorBinary"], errors.Unwrap(err))
		return
	}
	r.line(ok, "tor binary", "%s (TorBinary %s from %s)", bin, cfg.TorBinary, cfg.Sources["TorBinary"])
	if cfg.TorConfig != "" {
		if _, err := os.Stat(cfg.TorConfig); err != nil {
			r.line(fail, "TorConfig", "%v (from %s)", err, cfg.Sources["TorConfig"])
		} else {
			r.line(ok, "TorConfig", "%s (from %s)", cfg.TorConfig, cfg.Sources["TorConfig"])
		}
	}
	paths, st, err := p.OwnTor()
	switch {
	case err != nil && !st.Running:
		r.line(fail, "own tor", "%v", err)
		return
	case st.Stale:
		r.line(warn, "own tor", "pid %d in %s does not answer (or lost its keeper): the next torsocks replaces it", st.Pid, paths.RunDir)
		return
	case !st.Running:
		r.line(ok, "own tor", "not running: torsocks starts one on demand (runtime directory %s, data %s), and waits up to %v for it to bootstrap (not tried here)", paths.RunDir, paths.DataDir, cfg.TorBootstrapTimeout)
		r.line(info, "IsolateSOCKSAuth (-i)", "on in the tor torsocks starts (Tor's default)")
		return
	}
	r.line(ok, "own tor", "running, pid %d, SocksPort %s", st.Pid, st.Socks)
	switch {
	case err != nil:
		r.line(fail, "Tor bootstrapped", "its control port did not say: %v", err)
		return
	case st.Bootstrap.Percent < 100:
		r.line(fail, "Tor bootstrapped", "no: %s; torsocks waits for it up to %v (TorBootstrapTimeout); tor's log: %s", st.Bootstrap, cfg.TorBootstrapTimeout, paths.Log())
	default:
		r.line(ok, "Tor bootstrapped", "yes (its control port says %s)", st.Bootstrap)
	}
	if st.IsolateSOCKSAuth {
		r.line(ok, "IsolateSOCKSAuth (-i)", "on (its control port: GETCONF SocksPort)")
	} else {
		l := info
		if cfg.IsolatePID {
			l = fail
		}
		r.line(l, "IsolateSOCKSAuth (-i)", "off (NoIsolateSOCKSAuth in its TorConfig): -i isolates nothing")
	}
}
