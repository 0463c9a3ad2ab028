// Package run is one torsocks invocation from start to exit: it reads the configuration, refuses
// what cannot be run safely, starts the program under the seccomp filter, supervises it until
// every process of its tree has exited, and exits with the program's status.
package run

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/gotorsocks/torsocks/internal/config"
	"github.com/gotorsocks/torsocks/internal/doctor"
	"github.com/gotorsocks/torsocks/internal/filter"
	"github.com/gotorsocks/torsocks/internal/sandbox"
	"github.com/gotorsocks/torsocks/internal/seccomp"
)

// Version is this torsocks' version.
const Version = "0.1.0"

// Main runs torsocks with args (os.Args[1:]) and returns the exit status (or does not return: when
// the program was killed by a signal, torsocks kills itself with the same signal).
func Main(args []string) int {
	// Signals are enabled in the background from here on, before the program is started
	// (signals_linux.go).
	r := startReaper()
	inv, err := config.Parse(args, os.LookupEnv, os.ReadFile)
	if err != nil {
		return usageFailure(err)
	}
	if inv.Action != config.Run {
		return otherAction(inv)
	}
	s, err := newSession(&inv.Config, realSteps, r)
	if err != nil {
		return fail(err)
	}
	defer s.Close()
	path, prog, fopts, err := refusals(inv)
	if err != nil {
		return fail(err)
	}
	if err := s.openResources(); err != nil {
		return fail(err)
	}
	if err := s.launch(path, inv.Command, prog, fopts); err != nil {
		return fail(err)
	}
	ended := s.supervise()
	s.Close()
	return exitStatus(ended)
}

// fail says why torsocks cannot run the program, and is its exit status.
func fail(err error) int {
	fmt.Fprintf(os.Stderr, "torsocks: %v\n", err)
	return 1
}

func usageFailure(err error) int {
	fail(err)
	var ue *config.UsageError
	if errors.As(err, &ue) && ue.ShowUsage {
		fmt.Fprint(os.Stderr, config.Usage())
	}
	return 1
}

// otherAction is what the command line asks for instead of running a program.
func otherAction(inv *config.Invocation) int {
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
	return fail(fmt.Errorf("internal error: action %v", inv.Action))
}

// refusals refuses what cannot run (or not safely) before anything is opened: a kernel without
// what torsocks needs, a command that is not there, a setuid or file-capability program,
// descriptors that could carry traffic around Tor. It returns the program's path and filter (and
// what it was built from: launch may rebuild it).
func refusals(inv *config.Invocation) (path string, prog []unix.SockFilter, fopts filter.Options, err error) {
	if err := seccomp.CheckKernel(); err != nil {
		return "", nil, fopts, err
	}
	if err := seccomp.CheckSizes(); err != nil {
		return "", nil, fopts, err
	}
	if inv.Shell {
		fmt.Fprintln(os.Stderr, "New torified shell coming right up...")
	}
	if path, err = exec.LookPath(inv.Command[0]); err != nil {
		return "", nil, fopts, fmt.Errorf("%s: command not found", inv.Command[0])
	}
	if path, err = filepath.Abs(path); err != nil {
		return "", nil, fopts, fmt.Errorf("%s: %v", inv.Command[0], err)
	}
	if err := checkPrivileged(path); err != nil {
		return "", nil, fopts, err
	}
	if err := checkInherited(); err != nil {
		return "", nil, fopts, err
	}
	cfg := &inv.Config
	fopts = filter.Options{EnableIPv6: cfg.EnableIPv6, VetReceived: cfg.VetReceivedSockets, SealedTCP: cfg.SealedNetwork}
	fopts.PeerByKernel = cfg.SealedNetwork && sandboxExpected()
	if prog, err = filter.Build(filter.HostABIs, fopts); err != nil {
		return "", nil, fopts, err
	}
	return path, prog, fopts, nil
}

// sandboxExpected reports whether the sandbox network namespace can be expected to work, as far as
// can be told before the program starts without making it (filter.Options.PeerByKernel): the
// factory starts on first use. Not root: the user and network namespaces the factory's spawn
// makes can be made (sandbox.UserNamespaces, one vfork). Root: it can make a network namespace
// with CAP_SYS_ADMIN, unless a seccomp filter torsocks runs under (a container's) refuses it. A sandbox that fails anyway (a Linux security module, the
// DNS responder) leaves the kernel's getpeername answer on host sockets, and ensure's line says so.
func sandboxExpected() bool {
	if os.Getuid() != 0 {
		return sandbox.UserNamespaces()
	}
	if mode, err := unix.PrctlRetInt(unix.PR_GET_SECCOMP, 0, 0, 0, 0); err != nil || mode != 0 {
		return false
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	return data[0].Effective&(1<<unix.CAP_SYS_ADMIN) != 0
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
