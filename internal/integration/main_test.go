package integration

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gotorsocks/torsocks/internal/netnstest"
	"github.com/gotorsocks/torsocks/internal/socks5test"
)

var (
	torsocksBin string // built once in TestMain
	buildDir    string
	socks       *socks5test.Server
	canary4     *socks5test.Canary // 203.0.113.10:80
	canary6     *socks5test.Canary // [2001:db8::10]:80
)

func TestMain(m *testing.M) {
	netnstest.Main(m)
}

var (
	setupOnce sync.Once
	setupErr  error
)

// env makes the shared test environment (once) inside the private namespace: the torsocks binary,
// the SOCKS server on 127.0.0.1:9050 and [::1]:9050 and the destination canaries.
func env(t *testing.T) {
	t.Helper()
	netnstest.Require(t)
	setupOnce.Do(func() { _, setupErr = setup() })
	if setupErr != nil {
		t.Fatal(setupErr)
	}
}

// setup runs inside the private namespace, before the first test that needs it.
func setup() (func(), error) {
	dir, err := os.MkdirTemp("", "torsocks-integration-")
	if err != nil {
		return nil, err
	}
	buildDir = dir
	if err := os.Chmod(dir, 0o755); err != nil { // TestNonRoot runs binaries from here as nobody
		return nil, err
	}
	torsocksBin = filepath.Join(dir, "torsocks")
	build := exec.Command("go", "build", "-o", torsocksBin, "github.com/gotorsocks/torsocks/cmd/torsocks")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if raceEnabled {
		// The race detector needs cgo; halt_on_error makes any report fail the program's run.
		build = exec.Command("go", "build", "-race", "-o", torsocksBin, "github.com/gotorsocks/torsocks/cmd/torsocks")
		build.Env = append(os.Environ(), "CGO_ENABLED=1")
		os.Setenv("GORACE", "halt_on_error=1 exitcode=66 atexit_sleep_ms=0")
	}
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build torsocks: %v\n%s", err, out)
	}
	socks, err = socks5test.Start(socks5test.Options{
		Listen:   []string{"127.0.0.1:9050", "[::1]:9050"},
		SourceV4: netnstest.SocksSrcV4,
		SourceV6: netnstest.SocksSrcV6,
	})
	if err != nil {
		return nil, err
	}
	allowed := []netip.Addr{netnstest.SocksSrcV4, netnstest.SocksSrcV6}
	if canary4, err = socks5test.StartCanary("203.0.113.10:80", allowed...); err != nil {
		return nil, err
	}
	if canary6, err = socks5test.StartCanary("[2001:db8::10]:80", allowed...); err != nil {
		return nil, err
	}
	return func() {
		socks.Close()
		canary4.Close()
		canary6.Close()
		os.RemoveAll(dir)
	}, nil
}

// result is what a program run under torsocks did.
type result struct {
	stdout, stderr string
	code           int
}

// torsocks runs args under the torsocks binary with extra environment env, failing the test if it
// does not finish within a minute.
func torsocks(t *testing.T, env []string, args ...string) result {
	t.Helper()
	return runCmd(t, env, append([]string{torsocksBin}, args...)...)
}

func runCmd(t *testing.T, env []string, args ...string) result {
	t.Helper()
	return runCmdStdin(t, env, "", args...)
}

// runCmdStdin runs args with stdin ("" for none), bounded in time; a time-out fails the test.
func runCmdStdin(t *testing.T, env []string, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Env = append(os.Environ(), env...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	return runBounded(t, ctx, cmd)
}

// runBounded runs cmd, made with exec.CommandContext(ctx, ...), collecting its output; ctx's end
// (a time-out) fails the test.
func runBounded(t *testing.T, ctx context.Context, cmd *exec.Cmd) result {
	t.Helper()
	cmd.WaitDelay = 5 * time.Second // a killed program's children may still hold the pipes
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
		if ctx.Err() != nil {
			t.Fatalf("%v timed out\nstdout: %s\nstderr: %s", cmd.Args, r.stdout, r.stderr)
		}
	default:
		t.Fatalf("run %v: %v", cmd.Args, err)
	}
	return r
}

// syncTimeout only keeps a broken canary from hanging a test; a canary answers its Sync at once.
const syncTimeout = 10 * time.Second

// settle waits until each of cs has recorded everything that reached it before the call (see
// socks5test.Sink.Sync). Once the program that might have sent something has exited, what a
// canary has not recorded by then never reached it: assert nothing-came after settle, never
// after a sleep.
func settle(t *testing.T, cs ...interface{ Sync(time.Duration) error }) {
	t.Helper()
	for _, c := range cs {
		if err := c.Sync(syncTimeout); err != nil {
			t.Fatal(err)
		}
	}
}

// noLeaks fails the test if any canary saw a connection not made by the SOCKS server.
func noLeaks(t *testing.T) {
	t.Helper()
	settle(t, canary4, canary6)
	for _, c := range []*socks5test.Canary{canary4, canary6} {
		if l := c.Leaks(); len(l) > 0 {
			t.Fatalf("LEAK: canary %v accepted connections from %v (not from the SOCKS server)", c.Addr(), l)
		}
	}
}

var buildMu sync.Mutex

// buildC compiles testdata/c/NAME.c with gcc and extra flags once per flag set; the binary path.
func buildC(t *testing.T, name string, flags ...string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	out := filepath.Join(buildDir, name+strings.ReplaceAll(strings.Join(flags, ""), "-", "_"))
	if _, err := os.Stat(out); err == nil {
		return out
	}
	args := append([]string{"-O1", "-Wall", "-o", out, filepath.Join("testdata", "c", name+".c"), "-lpthread"}, flags...)
	if o, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
		if strings.Contains(string(o), "-m32") || strings.Contains(string(o), "gnu/stubs-32.h") {
			netnstest.Skip(t, "no 32-bit toolchain (gcc-multilib): %s", o)
		}
		t.Fatalf("gcc %v: %v\n%s", args, err, o)
	}
	return out
}

// buildGoClient builds the static Go client once.
func buildGoClient(t *testing.T) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	out := filepath.Join(buildDir, "goclient")
	if _, err := os.Stat(out); err == nil {
		return out
	}
	cmd := exec.Command("go", "build", "-o", out, "./testdata/goclient")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOARCH="+runtime.GOARCH)
	if o, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build goclient: %v\n%s", err, o)
	}
	return out
}

// talker is a program the test talks to while it runs: its stdin, its stdout by lines, and its
// stderr collected (complete once cmd.Wait has returned).
type talker struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  *bufio.Scanner
	stderr *bytes.Buffer
}

// startTalker starts cmd with pipes to its stdin and stdout and its stderr collected; the
// program is killed at the end of the test if it still runs.
func startTalker(t *testing.T, cmd *exec.Cmd) *talker {
	t.Helper()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	tk := &talker{cmd: cmd, stdin: stdin, lines: bufio.NewScanner(stdout), stderr: &bytes.Buffer{}}
	cmd.Stderr = tk.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait() // an error once the test waited itself
	})
	return tk
}

// line reads the program's next line of output ("" at its end).
func (tk *talker) line() string {
	if !tk.lines.Scan() {
		return ""
	}
	return tk.lines.Text()
}
