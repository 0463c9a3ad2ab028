package torstart

import (
	"os"
	"testing"

	"github.com/gotorsocks/torsocks/internal/netnstest"
)

// TestMain runs the tests in a private network namespace (a real tor there reaches nothing), or,
// as "tor" for the tests, the fake tor.
func TestMain(m *testing.M) {
	if mode, ok := os.LookupEnv("TORSTART_FAKE_TOR"); ok {
		fakeTor(mode)
		return
	}
	netnstest.Main(m)
}

func netnstestRequire(t *testing.T) { netnstest.Require(t) }
