package torstart

import (
	"os"
	"testing"

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
