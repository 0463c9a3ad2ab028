package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gotorsocks/torsocks/internal/netnstest"
	"github.com/gotorsocks/torsocks/internal/testnet"
)

// TestTorOnDemand: with nothing on the default SocksPort, torsocks starts a tor of its own that
// joins the private network through --tor-config (the network's join lines), shows its progress,
// and fetches the onion service's page; a second torsocks reuses that tor (same pid); a killed
// tor is replaced at the next run; --tor-stop stops it.
func TestTorOnDemand(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real Tor network; skipped with -short") // asked for, so a skip in CI too
	}
	netnstest.Require(t)
	if _, err := exec.LookPath("tor"); err != nil {
		netnstest.Skip(t, "tor is not installed (scripts/install-deps.sh)")
	}
	dir, err := os.MkdirTemp("", "toron")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin := filepath.Join(dir, "torsocks")
	if err := goBuild(bin, "github.com/gotorsocks/torsocks/cmd/torsocks"); err != nil {
		t.Fatal(err)
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "hello from the onion service of TestTorOnDemand")
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	keyCache := ""
	if d, err := os.UserCacheDir(); err == nil {
		keyCache = filepath.Join(d, "gotorsocks", "testnet-keys")
	}
	n, err := testnet.Start(context.Background(), testnet.Options{
		Dir: filepath.Join(dir, "net"), KeyCache: keyCache, BasePort: 16000,
		OnionTarget: l.Addr().String(), Logf: t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	if c, err := net.DialTimeout("tcp", "127.0.0.1:9050", time.Second); err == nil {
		c.Close()
		t.Fatal("something answers on 127.0.0.1:9050: the test needs the default SocksPort free")
	}

	join := filepath.Join(dir, "join.torrc")
	empty := filepath.Join(dir, "torsocks.conf")
	run := filepath.Join(dir, "run")
	for _, f := range []struct{ name, text string }{{join, n.JoinTorrc()}, {empty, ""}} {
		if err := os.WriteFile(f.name, []byte(f.text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(run, 0o700); err != nil {
		t.Fatal(err)
	}
	env := append(cleanEnv(filepath.Join(dir, "home")), "XDG_RUNTIME_DIR="+run, "XDG_CACHE_HOME="+filepath.Join(dir, "cache"))
	pidFile := filepath.Join(run, "torsocks", "tor.pid")
	torsocks := func(args ...string) (stdout, stderr string, err error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env = env
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		cmd.WaitDelay = 5 * time.Second
		err = cmd.Run()
		return o.String(), e.String(), err
	}
	t.Cleanup(func() { torsocks("--tor-stop") })
	fetch := func(what string) (stderr string, pid int) {
		t.Helper()
		began := time.Now()
		out, errOut, err := torsocks("--config", empty, "--tor-config", join, "--tor-bootstrap-timeout", "90",
			"curl", "-sS", "--max-time", "60", "http://"+n.OnionHost+"/")
		t.Logf("%s: %v, stderr:\n%s", what, time.Since(began).Round(10*time.Millisecond), errOut)
		if err != nil || !strings.Contains(out, "hello from the onion service of TestTorOnDemand") {
			t.Fatalf("%s: %v\nstdout %q\nstderr %s\ntor log:\n%s", what, err, out, errOut, readFile(filepath.Join(run, "torsocks", "tor.log")))
		}
		b, err := os.ReadFile(pidFile)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		return errOut, pid
	}

	stderr, pid1 := fetch("first run")
	if !strings.Contains(stderr, "torsocks: starting Tor: ") {
		t.Errorf("first run showed no progress")
	}
	if !alive(pid1) {
		t.Fatalf("tor %d is not running after the first run", pid1)
	}
	stderr, pid2 := fetch("second run")
	if pid2 != pid1 || strings.Contains(stderr, "starting Tor") {
		t.Errorf("second run: tor pid %d (first %d), stderr %q: it should reuse the running tor", pid2, pid1, stderr)
	}

	if err := exec.Command("kill", "-9", strconv.Itoa(pid1)).Run(); err != nil {
		t.Fatal(err)
	}
	for i := 0; alive(pid1) && i < 100; i++ {
		time.Sleep(20 * time.Millisecond)
	}
	_, pid3 := fetch("after a kill")
	if pid3 == pid1 || !alive(pid3) {
		t.Errorf("after a kill: tor pid %d (killed %d)", pid3, pid1)
	}

	if _, errOut, err := torsocks("--tor-stop"); err != nil || !strings.Contains(errOut, "stopped") {
		t.Errorf("--tor-stop: %v %s", err, errOut)
	}
	for i := 0; alive(pid3) && i < 100; i++ {
		time.Sleep(20 * time.Millisecond)
	}
	if alive(pid3) {
		t.Errorf("tor %d still running after --tor-stop", pid3)
	}
}

func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z'
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}
