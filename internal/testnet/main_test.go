package testnet

import (
	"testing"

	"github.com/gotorsocks/torsocks/internal/netnstest"
)

// The end-to-end test runs in a private network namespace whose lo carries
// the test addresses of docs/design.md.
func TestMain(m *testing.M) { netnstest.Main(m) }
