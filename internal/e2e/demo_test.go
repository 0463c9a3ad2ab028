package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gotorsocks/torsocks/internal/netnstest"
)

// TestDemo runs the README's first command, scripts/demo.sh (what `make demo` runs after installing
// and building), end to end with its own private Tor network, and checks that it shows what it
// promises: pages through a Tor exit by address and by name, the onion service's page, and no
// connection around Tor except in the C torsocks contrast step at the end.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real Tor network; skipped with -short") // asked for, so a skip in CI too
	}
	netnstest.Require(t)
	if _, err := exec.LookPath("tor"); err != nil {
		netnstest.Skip(t, "tor is not installed (scripts/install-deps.sh)")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "torsocks")
	if err := goBuild(bin, "github.com/gotorsocks/torsocks/cmd/torsocks"); err != nil {
		t.Fatal(err)
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "scripts", "demo.sh"))
	cmd.Dir = root
	// A cache of its own: the demo keeps the network's keys there between runs.
	cmd.Env = append(os.Environ(), "DEMO_TORSOCKS="+bin, "XDG_CACHE_HOME="+filepath.Join(dir, "cache"))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err = cmd.Run()
	t.Logf("demo ran in %v", time.Since(start).Round(100*time.Millisecond))
	text := out.String()
	if err != nil {
		t.Fatalf("scripts/demo.sh: %v\n%s", err, text)
	}
	ours, contrast, _ := strings.Cut(text, "for contrast, the C torsocks")
	for _, want := range []string{
		"Hello from the test web server",
		"GET / from 198.51.100.1 (a Tor exit)",
		"Hello from the onion service",
		"(the onion service)",
		"refused: Tor carries TCP only",
		"onion service descriptor can not be found",
	} {
		if !strings.Contains(ours, want) {
			t.Errorf("the demo's output lacks %q", want)
		}
	}
	if strings.Contains(ours, "NOT TOR") {
		t.Errorf("the demo shows a connection around Tor under this torsocks")
	}
	if _, err := os.Stat(cTorsocks); err == nil && !strings.Contains(contrast, "NOT TOR") {
		t.Errorf("the contrast step (the static Go client under the C torsocks) does not show its leak")
	}
	if t.Failed() {
		t.Logf("demo output:\n%s", text)
	}
}
