// Package netnstest runs a test binary inside a private network namespace that holds
// only lo, carrying the test addresses of docs/design.md, so integration tests can
// connect to "remote" destinations without any real network and see every leak.
//
// Use it from TestMain:
//
//	func TestMain(m *testing.M) { netnstest.Main(m) }
//
// and call netnstest.Require(t) at the top of each test that needs the namespace. In CI (CI=true)
// a test that cannot have it fails instead of skipping (see Skip).
package netnstest

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
)

// Test addresses (all on lo inside the namespace).
var (
	DestV4       = netip.MustParseAddr("203.0.113.10")    // destination test host (canaries)
	DestV6       = netip.MustParseAddr("2001:db8::10")    // destination test host (canaries)
	SocksSrcV4   = netip.MustParseAddr("198.51.100.1")    // source the SOCKS test server dials from
	SocksSrcV6   = netip.MustParseAddr("2001:db8:5::1")   // source the SOCKS test server dials from
	NameserverV4 = netip.MustParseAddr("192.0.2.53")      // DNS canary
	NameserverV6 = netip.MustParseAddr("2001:db8:53::53") // DNS canary
)

// Addrs returns every test address Main puts on lo.
func Addrs() []netip.Addr {
	return []netip.Addr{DestV4, SocksSrcV4, NameserverV4, DestV6, SocksSrcV6, NameserverV6}
}

// envState carries the state across the re-exec and into descendants:
//
//	reexec:<parent netns>  set by the parent for the child it starts in a new namespace
//	ready:<netns>          set by that child after setup; descendants in the same namespace are inside
//	unavailable:<reason>   no namespace could be had; Require skips (fails in CI)
const envState = "NETNSTEST_STATE"

var (
	inside            bool
	unavailableReason string
)

// Inside reports whether Main established that this process runs in the private namespace.
func Inside() bool { return inside }

// Require skips t unless the test runs inside the private namespace (in CI it fails t: see Skip).
func Require(t testing.TB) {
	t.Helper()
	if inside {
		return
	}
	reason := unavailableReason
	if reason == "" {
		reason = "netnstest.Main was not called from TestMain"
	}
	Skip(t, "needs a private network namespace: %s", reason)
}

// InCI reports whether the tests run in CI (CI=true, as .ci/run's machines set it).
func InCI() bool { return os.Getenv("CI") == "true" }

// Skip skips t for a missing prerequisite, except in CI, where it fails t: .ci/run runs as root
// and installs every prerequisite (scripts/install-deps.sh), so a skip there is a regression
// hiding. Every test skip goes through Skip, except those that depend on the machine even in CI
// (-short, an opt-in report, a kernel feature, a program install-deps.sh does not install):
// those call t.Skip, with a comment saying why.
func Skip(t testing.TB, format string, args ...any) {
	t.Helper()
	reason := fmt.Sprintf(format, args...)
	if InCI() {
		t.Fatalf("CI=true, and CI has every prerequisite, so this must not skip: %s", reason)
	}
	t.Skip(reason)
}

// Main runs the tests of m inside a private network namespace and exits with their status.
// Outside one, it re-runs the test binary in a new network namespace (root needed) and exits
// with the child's status. Inside, it brings lo up, adds the test addresses and calls m.Run.
// Where no namespace can be made, it says so on stderr and runs m with Require skipping.
func Main(m *testing.M) {
	self, err := netnsID()
	if err != nil {
		runWithout(m, fmt.Sprintf("cannot identify the network namespace: %v", err))
	}
	state := os.Getenv(envState)
	kind, arg, _ := strings.Cut(state, ":")
	switch {
	case kind == "unavailable":
		runWithout(m, arg)
	case kind == "ready" && arg == self:
		inside = true
		os.Exit(m.Run())
	case kind == "reexec":
		if arg == self {
			fail("re-executed test binary is still in the parent's network namespace")
		}
		if err := onlyLoopback(); err != nil {
			fail(err.Error())
		}
		if err := setup(); err != nil {
			if errors.Is(err, exec.ErrNotFound) {
				runWithout(m, fmt.Sprintf("cannot configure lo: %v", err))
			}
			fail(fmt.Sprintf("configuring lo: %v", err))
		}
		os.Setenv(envState, "ready:"+self)
		inside = true
		os.Exit(m.Run())
	}
	if os.Geteuid() != 0 {
		runWithout(m, "not root, cannot create a network namespace")
	}
	os.Exit(reexec(m, self))
}

// reexec runs this test binary again in a new network namespace and returns its exit code.
func reexec(m *testing.M, self string) int {
	exe, err := os.Executable()
	if err != nil {
		runWithout(m, fmt.Sprintf("cannot find the test binary: %v", err))
	}
	cmd := exec.Command(exe, os.Args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), envState+"=reexec:"+self)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// A private mount namespace too, so /etc/resolv.conf can name the test nameservers
		// without touching the machine's (see resolvConf).
		Cloneflags: syscall.CLONE_NEWNET | syscall.CLONE_NEWNS,
		// Die with us; the death signal follows the creating thread, so keep it.
		Pdeathsig: syscall.SIGKILL,
	}
	runtime.LockOSThread()
	if err := cmd.Start(); err != nil {
		runWithout(m, fmt.Sprintf("cannot create a network namespace: %v", err))
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			fmt.Fprintf(os.Stderr, "netnstest: test binary in the namespace killed by %v\n", ws.Signal())
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	default:
		fmt.Fprintf(os.Stderr, "netnstest: waiting for the test binary: %v\n", err)
		return 1
	}
}

// runWithout runs the tests outside any private namespace; Require skips.
func runWithout(m *testing.M, reason string) {
	fmt.Fprintf(os.Stderr, "netnstest: %s; tests needing a private network namespace will be skipped\n", reason)
	os.Setenv(envState, "unavailable:"+reason)
	unavailableReason = reason
	os.Exit(m.Run())
}

func fail(msg string) {
	fmt.Fprintf(os.Stderr, "netnstest: %s\n", msg)
	os.Exit(1)
}

// netnsID names the current network namespace, e.g. "net:[4026531840]".
func netnsID() (string, error) {
	return os.Readlink("/proc/self/ns/net")
}

// onlyLoopback checks that the namespace holds lo and nothing else, as a fresh one does.
func onlyLoopback() error {
	ifs, err := net.Interfaces()
	if err != nil {
		return fmt.Errorf("listing interfaces: %w", err)
	}
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagLoopback == 0 {
			return fmt.Errorf("namespace has interface %s besides lo: not a fresh namespace", ifc.Name)
		}
	}
	return nil
}

// setup brings lo up and adds the test addresses to it, and points /etc/resolv.conf at the test
// nameservers.
func setup() error {
	if err := resolvConf(); err != nil {
		return err
	}
	if err := ip("link", "set", "lo", "up"); err != nil {
		return err
	}
	for _, a := range Addrs() {
		args := []string{"addr", "add", netip.PrefixFrom(a, a.BitLen()).String(), "dev", "lo"}
		if a.Is6() {
			args = append([]string{"-6"}, append(args, "nodad")...)
		}
		if err := ip(args...); err != nil {
			return err
		}
	}
	return nil
}

// ip runs the ip(8) command.
func ip(args ...string) error {
	path, err := exec.LookPath("ip")
	if err != nil {
		return fmt.Errorf("finding ip(8): %w", err)
	}
	out, err := exec.Command(path, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// resolvConf makes /etc/resolv.conf, in this process's private mount namespace, name the test
// nameservers (NameserverV4, NameserverV6): programs the tests run that resolve names without Tor
// then query addresses of the namespace (where DNS canaries listen), never the machine's resolver.
func resolvConf() error {
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make the mount namespace private: %w", err)
	}
	f, err := os.CreateTemp("", "netnstest-resolv-*.conf")
	if err != nil {
		return err
	}
	fmt.Fprintf(f, "nameserver %s\nnameserver %s\noptions timeout:1 attempts:1\n", NameserverV4, NameserverV6)
	f.Close()
	os.Chmod(f.Name(), 0o644)
	if _, err := os.Stat("/etc/resolv.conf"); err != nil {
		return nil // nothing to cover; programs then use glibc's default (127.0.0.1), also local
	}
	if err := syscall.Mount(f.Name(), "/etc/resolv.conf", "", syscall.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind-mount a test resolv.conf over /etc/resolv.conf: %w", err)
	}
	return nil
}
