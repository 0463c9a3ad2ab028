package torstart

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gotorsocks/torsocks/internal/netnstest"
)

// TestMain runs the tests in a private network namespace (a real tor there reaches nothing), or,
// as "tor" for the tests, the fake tor, or, as Ensure starts it, the keeper, or a torsocks calling Ensure
// (TestEnsureRaceProcesses).
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == KeeperArg {
		os.Exit(RunKeeper(os.Args[2:]))
	}
	if mode, ok := os.LookupEnv("TORSTART_FAKE_TOR"); ok {
		fakeTor(mode)
		return
	}
	if dirs, ok := os.LookupEnv("TORSTART_TEST_ENSURE"); ok {
		ensureChild(dirs)
	}
	netnstest.Main(m)
}

func netnstestRequire(t *testing.T) { netnstest.Require(t) }

// ensureChild is the test binary run as a torsocks calling Ensure (TORSTART_TEST_ENSURE set to
// RUNDIR:DATADIR): it prints "PID started" (Started true or false) and exits.
func ensureChild(dirs string) {
	run, data, _ := strings.Cut(dirs, ":")
	self, _ := os.Executable()
	tor, err := Ensure(context.Background(), Options{
		Paths: Paths{RunDir: run, DataDir: data}, UID: os.Getuid(), Binary: self,
		BootstrapTimeout: time.Minute, Env: append(os.Environ(), "TORSTART_FAKE_TOR="),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(tor.Pid, tor.Started)
	os.Exit(0)
}
