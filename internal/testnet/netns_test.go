package testnet

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
)

// Until internal/netnstest exists, the tests run themselves again inside a
// private network namespace (root only) whose lo carries the test addresses
// of docs/design.md.

const netnsEnv = "TESTNET_IN_NETNS"

var testAddrs = []string{
	"203.0.113.10/32", "198.51.100.1/32", "192.0.2.53/32",
	"2001:db8::10/128", "2001:db8:5::1/128", "2001:db8:53::53/128",
}

func TestMain(m *testing.M) {
	flag.Parse()
	if os.Getenv(netnsEnv) == "1" {
		if err := setupNetns(); err != nil {
			fmt.Fprintln(os.Stderr, "testnet: network namespace setup:", err)
			os.Exit(1)
		}
		os.Exit(m.Run())
	}
	if testing.Short() || os.Geteuid() != 0 {
		os.Exit(m.Run())
	}
	cmd := exec.Command("/proc/self/exe", os.Args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), netnsEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Run(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			os.Exit(ee.ExitCode())
		}
		// No namespace possible: run here, the e2e tests skip.
		fmt.Fprintln(os.Stderr, "testnet: cannot enter a network namespace:", err)
		os.Exit(m.Run())
	}
	os.Exit(0)
}

func setupNetns() error {
	run := func(args ...string) error {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %v: %w: %s", args, err, out)
		}
		return nil
	}
	if err := run("link", "set", "lo", "up"); err != nil {
		return err
	}
	for _, a := range testAddrs {
		args := []string{"addr", "add", a, "dev", "lo"}
		if len(a) > 0 && a[len(a)-4:] == "/128" {
			args = append([]string{"-6"}, append(args, "nodad")...)
		}
		if err := run(args...); err != nil {
			return err
		}
	}
	return nil
}

// requireNetns skips t unless it runs inside the private namespace.
func requireNetns(t *testing.T) {
	t.Helper()
	if os.Getenv(netnsEnv) != "1" {
		t.Skip("needs root and a private network namespace (runs itself in one when root)")
	}
}
