package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gotorsocks/torsocks/internal/netnstest"
	"github.com/gotorsocks/torsocks/internal/socks5test"
	"github.com/gotorsocks/torsocks/internal/testnet"
)

// TestTorOnDemand: with nothing on the default SocksPort, torsocks starts a tor of its own that
// joins the private network through --tor-config (the network's join lines), shows its progress,
// and fetches the onion service's page; a second torsocks started while the first one's program
// runs reuses that tor (same pid); after both and the idle time tor and its keeper are gone; a
// killed tor is replaced at the next run; the program cannot reach the tor's control port;
// --tor-stop stops it.
func TestTorOnDemand(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real Tor network; skipped with -short") // asked for, so a skip in CI too
	}
	dir, bin := toronSetup(t)

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
	keeperFile := filepath.Join(run, "torsocks", "keeper.pid")
	controlFile := filepath.Join(run, "torsocks", "control")
	// torsocks runs torsocks; extra are more environment variables.
	torsocks := func(extra []string, args ...string) *exec.Cmd {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(env[:len(env):len(env)], extra...)
		cmd.WaitDelay = 5 * time.Second
		return cmd
	}
	runTorsocks := func(extra []string, args ...string) (stdout, stderr string, err error) {
		cmd := torsocks(extra, args...)
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err = cmd.Run()
		return o.String(), e.String(), err
	}
	t.Cleanup(func() { runTorsocks(nil, "--tor-stop") })
	fetchArgs := []string{"--config", empty, "--tor-config", join, "--tor-bootstrap-timeout", "90",
		"curl", "-sS", "--max-time", "60", "http://" + n.OnionHost + "/"}
	const page = "hello from the onion service of TestTorOnDemand"
	fetch := func(what string, extra ...string) (stderr string, pid int) {
		t.Helper()
		began := time.Now()
		out, errOut, err := runTorsocks(extra, fetchArgs...)
		t.Logf("%s: %v, stderr:\n%s", what, time.Since(began).Round(10*time.Millisecond), errOut)
		if err != nil || !strings.Contains(out, page) {
			t.Fatalf("%s: %v\nstdout %q\nstderr %s\ntor log:\n%s", what, err, out, errOut, readFile(filepath.Join(run, "torsocks", "tor.log")))
		}
		return errOut, readPid(t, pidFile)
	}
	// waitGone polls (bounded) for pid to exit.
	waitGone := func(what string, pid int) {
		t.Helper()
		for i := 0; alive(pid) && i < 1500; i++ {
			time.Sleep(20 * time.Millisecond)
		}
		if alive(pid) {
			t.Fatalf("%s (pid %d) still running", what, pid)
		}
	}

	// A first torsocks starts the tor and keeps its program running; a second one, started
	// meanwhile, uses the same tor. Idle time 2 s: once both are gone, so are tor and its keeper.
	idle := []string{"TORSOCKS_TOR_IDLE_TIME=2"}
	marker, release := filepath.Join(dir, "first-runs"), filepath.Join(dir, "first-may-exit")
	first := torsocks(idle, append(fetchArgs[:len(fetchArgs)-5:len(fetchArgs)-5], "sh", "-c",
		`curl -sS --max-time 60 "$1" && : > "$2" && while [ ! -e "$3" ]; do sleep 0.05; done`,
		"sh", "http://"+n.OnionHost+"/", marker, release)...)
	var firstOut, firstErr bytes.Buffer
	first.Stdout, first.Stderr = &firstOut, &firstErr
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	firstDone := make(chan error, 1)
	go func() { firstDone <- first.Wait() }()
	for waiting := true; waiting; {
		select {
		case err := <-firstDone:
			t.Fatalf("the first torsocks exited before its program ran: %v\nstderr %s\ntor log:\n%s", err, firstErr.String(), readFile(filepath.Join(run, "torsocks", "tor.log")))
		case <-time.After(20 * time.Millisecond):
			_, err := os.Stat(marker)
			waiting = err != nil
		}
	}
	pid1 := readPid(t, pidFile)
	keeper1 := readPid(t, keeperFile)
	stderr, pid2 := fetch("second torsocks while the first runs", idle...)
	if pid2 != pid1 || strings.Contains(stderr, "starting Tor") {
		t.Errorf("second run: tor pid %d (first %d), stderr %q: it should reuse the running tor", pid2, pid1, stderr)
	}
	if err := os.WriteFile(release, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := <-firstDone; err != nil || !strings.Contains(firstOut.String(), page) {
		t.Fatalf("first torsocks: %v\nstdout %q\nstderr %s", err, firstOut.String(), firstErr.String())
	}
	if !strings.Contains(firstErr.String(), "torsocks: starting Tor: ") {
		t.Errorf("first run showed no progress: %q", firstErr.String())
	}
	waitGone("tor after the idle time", pid1)
	waitGone("the keeper after the idle time", keeper1)
	for _, f := range []string{pidFile, keeperFile, controlFile} {
		if _, err := os.Stat(f); err == nil {
			t.Errorf("%s left behind after the idle exit", f)
		}
	}

	// With the default idle time: a new tor; a killed tor is replaced at the next run; the
	// program cannot reach the tor's control port; --tor-stop stops it.
	_, pid3 := fetch("after the idle exit")
	if pid3 == pid1 || !alive(pid3) {
		t.Fatalf("after the idle exit: tor pid %d (the first %d)", pid3, pid1)
	}
	if err := exec.Command("kill", "-9", strconv.Itoa(pid3)).Run(); err != nil {
		t.Fatal(err)
	}
	waitGone("the killed tor", pid3)
	_, pid4 := fetch("after a kill")
	if pid4 == pid3 || !alive(pid4) {
		t.Errorf("after a kill: tor pid %d (killed %d)", pid4, pid3)
	}
	out, errOut, err := runTorsocks(nil, "--config", empty, "python3", "-c", `
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
    s.sendall(b"PROTOCOLINFO 1\r\n")
    print("connected:", s.recv(200))
except OSError as e:
    print("refused:", e)
`, controlFile)
	if err != nil || !strings.HasPrefix(out, "refused: [Errno 111]") || !strings.Contains(errOut, "control port of torsocks' own tor refused") {
		t.Errorf("the program connecting to the tor's control port: %v, stdout %q, stderr %q", err, out, errOut)
	}
	if !strings.Contains(errOut, "started with other settings (TorConfig); torsocks --tor-stop restarts it") {
		t.Errorf("a torsocks without the TorConfig of the running tor did not warn: %q", errOut)
	}

	if _, errOut, err := runTorsocks(nil, "--tor-stop"); err != nil || !strings.Contains(errOut, "stopped") {
		t.Errorf("--tor-stop: %v %s", err, errOut)
	}
	waitGone("tor after --tor-stop", pid4)
}

// TestTorOnDemandNoBootstrap: a TorConfig whose authorities cannot be reached (closed ports):
// torsocks ends with the one-line error within TorBootstrapTimeout, exit status 1, the program
// never runs, and nothing reaches the canary meanwhile.
func TestTorOnDemandNoBootstrap(t *testing.T) {
	dir, bin := toronSetup(t)
	canary, err := socks5test.StartCanary(netip.AddrPortFrom(netnstest.DestV4, 80).String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { canary.Close() })
	join, empty, run := unreachableTor(t, dir)
	marker := filepath.Join(dir, "program-ran")
	cmd := exec.Command(bin, "--config", empty, "--tor-config", join, "--tor-bootstrap-timeout", "5",
		"sh", "-c", `: > "$1"; curl -sS --max-time 10 http://`+netnstest.DestV4.String()+`/`, "sh", marker)
	cmd.Env = append(cleanEnv(filepath.Join(dir, "home")), "XDG_RUNTIME_DIR="+run, "XDG_CACHE_HOME="+filepath.Join(dir, "cache"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	began := time.Now()
	err = cmd.Run()
	took := time.Since(began)
	t.Logf("%v: %v\nstderr:\n%s", took.Round(10*time.Millisecond), err, stderr.String())
	if cmd.ProcessState.ExitCode() != 1 {
		t.Errorf("exit status %d, want 1", cmd.ProcessState.ExitCode())
	}
	var last string
	for _, l := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		if !strings.HasPrefix(l, "torsocks: starting Tor: ") {
			if last != "" {
				t.Errorf("more than one error line: %q, %q", last, l)
			}
			last = l
		}
	}
	if !strings.HasPrefix(last, "torsocks: starting Tor (") || !strings.Contains(last, "tor did not bootstrap within 5s") {
		t.Errorf("error line %q", last)
	}
	if took < 5*time.Second {
		t.Errorf("gave up after %v, before the 5 s time-out", took)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("the program ran although Tor never bootstrapped")
	}
	if n := len(canary.Remotes()); n != 0 {
		t.Errorf("the canary saw %d connections", n)
	}
	for _, f := range []string{"tor.pid", "keeper.pid", "control", "socks"} {
		if _, err := os.Stat(filepath.Join(run, "torsocks", f)); err == nil {
			t.Errorf("%s left behind", f)
		}
	}
}

// TestDoctorTorNotBootstrapped: while torsocks' own tor cannot bootstrap (its only authority is
// a closed port) and a torsocks waits for it, `torsocks --doctor` names it as not bootstrapped
// and exits 1; once that tor has bootstrapped, TestTorOnDemand covers the rest.
func TestDoctorTorNotBootstrapped(t *testing.T) {
	dir, bin := toronSetup(t)
	join, empty, run := unreachableTor(t, dir)
	env := append(cleanEnv(filepath.Join(dir, "home")), "XDG_RUNTIME_DIR="+run, "XDG_CACHE_HOME="+filepath.Join(dir, "cache"))
	waiting := exec.Command(bin, "--config", empty, "--tor-config", join, "--tor-bootstrap-timeout", "600", "true")
	waiting.Env = env
	if err := waiting.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			waiting.Process.Kill()
			waiting.Wait()
		}
		stop := exec.Command(bin, "--config", empty, "--tor-stop")
		stop.Env = env
		stop.Run()
	})
	// The waiting torsocks has started tor once tor's control socket is there.
	control := filepath.Join(run, "torsocks", "control")
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(control); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("tor's control socket %s never appeared", control)
		}
	}
	doc := exec.Command(bin, "--config", empty, "--tor-config", join, "--doctor")
	doc.Env = env
	out, err := doc.CombinedOutput()
	t.Logf("--doctor: %v\n%s", err, out)
	if doc.ProcessState.ExitCode() != 1 {
		t.Errorf("--doctor exit status %d, want 1", doc.ProcessState.ExitCode())
	}
	if !strings.Contains(string(out), "FAIL  Tor bootstrapped:          no: ") {
		t.Errorf("--doctor does not say Tor is not bootstrapped:\n%s", out)
	}
	waiting.Process.Kill()
	waiting.Wait()
	stopped = true
}

// unreachableTor writes, in dir, a TorConfig whose only directory authority is a closed port (a
// tor started with it never bootstraps), an empty torsocks.conf, and a private runtime directory.
func unreachableTor(t *testing.T, dir string) (join, empty, run string) {
	t.Helper()
	var closed []int
	for range 2 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		closed = append(closed, l.Addr().(*net.TCPAddr).Port)
		l.Close()
	}
	conf := fmt.Sprintf("TestingTorNetwork 1\nClientUseIPv6 0\n"+
		"DirAuthority a1 orport=%d v3ident=0123456789ABCDEF0123456789ABCDEF01234567 127.0.0.1:%d 0123456789ABCDEF0123456789ABCDEF01234567\n",
		closed[0], closed[1])
	join, empty, run = filepath.Join(dir, "unreachable.torrc"), filepath.Join(dir, "torsocks.conf"), filepath.Join(dir, "run")
	for _, f := range []struct{ name, text string }{{join, conf}, {empty, ""}} {
		if err := os.WriteFile(f.name, []byte(f.text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(run, 0o700); err != nil {
		t.Fatal(err)
	}
	return join, empty, run
}

// toronSetup needs the private network namespace and tor (a skip, or a failure when CI=true),
// and builds torsocks into a new short directory (unix socket paths must stay short).
func toronSetup(t *testing.T) (dir, bin string) {
	t.Helper()
	netnstest.Require(t)
	if _, err := exec.LookPath("tor"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("tor is not installed (scripts/install-deps.sh)")
		}
		netnstest.Skip(t, "tor is not installed (scripts/install-deps.sh)")
	}
	dir, err := os.MkdirTemp("", "toron")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin = filepath.Join(dir, "torsocks")
	if err := goBuild(bin, "github.com/gotorsocks/torsocks/cmd/torsocks"); err != nil {
		t.Fatal(err)
	}
	return dir, bin
}

func readPid(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return pid
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
