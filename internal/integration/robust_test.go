package integration

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gotorsocks/torsocks/internal/netnstest"
	"github.com/gotorsocks/torsocks/internal/socks5test"
)

// slowSocks starts a SOCKS server on 127.0.0.1:port that waits delay before answering each request.
func slowSocks(t *testing.T, port string, delay time.Duration) *socks5test.Server {
	t.Helper()
	return socksWith(t, port, func(string, uint16) byte { time.Sleep(delay); return 0 })
}

// socksWith starts a SOCKS server on 127.0.0.1:port whose replies replyFor decides (see
// socks5test.Options.ReplyFor), connecting out from the test's SOCKS source addresses.
func socksWith(t *testing.T, port string, replyFor func(host string, port uint16) byte) *socks5test.Server {
	t.Helper()
	s, err := socks5test.Start(socks5test.Options{
		Listen:   []string{"127.0.0.1:" + port},
		SourceV4: netnstest.SocksSrcV4,
		SourceV6: netnstest.SocksSrcV6,
		ReplyFor: replyFor,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// loopbackServer listens on 127.0.0.1 on a free port, accepts every connection and keeps it open
// until the test ends; it returns the listener's address.
func loopbackServer(t *testing.T) *net.TCPAddr {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().(*net.TCPAddr)
}

// Threads blocked in a proxied connect get a storm of signals: every request stays byte-correct
// (WAIT_KILLABLE_RECV keeps the notification alive; no SOCKS bytes reach the program's stream).
// With a handler installed without SA_RESTART, connect() may fail with EINTR, and so may a
// socket() the supervisor answers (TCP with SealedNetwork 1) when the signal comes before the
// supervisor has received the call: the kernel then withdraws the notification (docs/design.md,
// "Signals"); rb_storm retries both and counts the socket() ones. With SA_RESTART the kernel
// restarts both calls: not one EINTR.
func TestSignalStorm(t *testing.T) {
	env(t)
	slowSocks(t, "9061", 30*time.Millisecond)
	bin := buildC(t, "rb_storm")
	for _, mode := range []string{"no-restart", "restart"} {
		t.Run(mode, func(t *testing.T) {
			r := torsocks(t, []string{"TORSOCKS_TOR_PORT=9061"}, bin, "203.0.113.10", "80", mode)
			if r.code != 0 || !strings.Contains(r.stdout, "bad=0") {
				t.Fatalf("signal storm: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
			}
			if mode == "restart" && !strings.Contains(r.stdout, "socket_eintr=0 ") {
				t.Errorf("socket() failed with EINTR under SA_RESTART handlers: %s", r.stdout)
			}
			t.Log(strings.TrimSpace(r.stdout))
			noLeaks(t)
		})
	}
}

// A storm of SIGURG (what the Go runtime preempts with) at every thread of the supervisor while
// it creates UDP sockets for the program, connects loopback directly and proxies connects: every
// syscall the supervisor makes may be interrupted and restarted by the kernel, and none of that
// may show in the program. (An interrupted ADDFD with SECCOMP_ADDFD_FLAG_SEND once made socket()
// return 0; an interrupted blocking connect restarts with EALREADY.)
func TestSupervisorSignalStorm(t *testing.T) {
	env(t)
	bin := buildC(t, "rb_supstorm")
	lport := strconv.Itoa(loopbackServer(t).Port)
	cmd := exec.Command(torsocksBin, bin, "203.0.113.10", "80", lport)
	cmd.Env = append(os.Environ(), "TORSOCKS_ALLOW_OUTBOUND_LOCALHOST=1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	pid := cmd.Process.Pid
	sent := 0
	var werr error
	giveUp := time.Now().Add(60 * time.Second)
storm:
	for {
		select {
		case werr = <-done:
			break storm
		default:
		}
		if time.Now().After(giveUp) {
			cmd.Process.Kill()
			werr = fmt.Errorf("still running after 60 s (killed): %v", <-done)
			break
		}
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		for _, task := range tasks {
			if tid, err := strconv.Atoi(task.Name()); err == nil && syscall.Tgkill(pid, tid, syscall.SIGURG) == nil {
				sent++
			}
		}
		time.Sleep(20 * time.Microsecond)
	}
	if werr != nil || !strings.Contains(stdout.String(), "bad=0") {
		t.Fatalf("under a signal storm at the supervisor: %v\n%s\n%s", werr, stdout.String(), stderr.String())
	}
	t.Logf("%s (%d signals to the supervisor's threads)", strings.TrimSpace(stdout.String()), sent)
	noLeaks(t)
}

// A connect waiting for its SOCKS reply must not hold up the others: the SOCKS server answers the
// request for 203.0.113.10 only once it has seen the one for [2001:db8::10], which a second program
// makes while the first waits. Served one at a time, the first connect would give up (reply 1)
// when the server stops waiting.
func TestWaitingConnectDoesNotBlockOthers(t *testing.T) {
	env(t)
	second := make(chan struct{})
	var once sync.Once
	socksWith(t, "9063", func(host string, port uint16) byte {
		if host == "2001:db8::10" {
			once.Do(func() { close(second) })
			return 0
		}
		select {
		case <-second:
			return 0
		case <-time.After(20 * time.Second):
			return 1 // general failure: the second request never came
		}
	})
	r := torsocks(t, []string{"TORSOCKS_TOR_PORT=9063"}, "sh", "-c",
		`curl -sS --max-time 30 -o /dev/null -w "first %{http_code}\n" http://203.0.113.10/ & sleep 0.3; `+
			`curl -sS --max-time 30 -o /dev/null -w "second %{http_code}\n" "http://[2001:db8::10]/"; wait`)
	if r.code != 0 || !strings.Contains(r.stdout, "first 200") || !strings.Contains(r.stdout, "second 200") {
		t.Fatalf("the second connect was not served while the first waited for its SOCKS reply: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	noLeaks(t)
}

// A call that blocks while its worker holds the receiver role must not stall the others: here the
// supervisor's own log write blocks (the program floods refusals into a stderr pipe nobody reads),
// and another thread's connect must still be served (the watchdog hands the role over).
func TestBlockedCallDoesNotStallOthers(t *testing.T) {
	env(t)
	bin := buildC(t, "rb_stall", "-lpthread")
	stderrR, stderrW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stderrR.Close() // never read: the pipe fills up
	cmd := exec.Command(torsocksBin, bin, "203.0.113.10", "80")
	cmd.Stderr = stderrW
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stderrW.Close()
	defer func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // the flooding thread stays stuck
		cmd.Wait()
	}()
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "RESULT") {
				line <- sc.Text()
				return
			}
		}
		close(line)
	}()
	select {
	case l := <-line:
		if l != "RESULT connect=0 errno=0" {
			t.Fatalf("connect while another call is blocked: %q", l)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the connect was not served while another call was blocked in the supervisor")
	}
	noLeaks(t)
}

// The supervisor killed while the program is blocked in a proxied connect: the program gets an
// error, and nothing reaches the destination except through the SOCKS server.
func TestSupervisorKilledMidConnect(t *testing.T) {
	env(t)
	// The SOCKS server holds the CONNECT unanswered until the test ends.
	reached, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	socksWith(t, "9062", func(string, uint16) byte {
		once.Do(func() { close(reached) })
		<-release
		return 0
	})
	t.Cleanup(func() { close(release) }) // before the server's Close (cleanups run last first)
	bin := buildC(t, "rb_connect1")
	cmd := exec.Command(torsocksBin, bin, "203.0.113.10", "80")
	cmd.Env = append(os.Environ(), "TORSOCKS_TOR_PORT=9062")
	tk := startTalker(t, cmd)
	stderr := tk.stderr
	if line := tk.line(); line != "READY" {
		t.Fatalf("no READY line: %q %s", line, stderr.String())
	}
	// The connect is waiting for the SOCKS reply once the server has its request.
	select {
	case <-reached:
	case <-time.After(60 * time.Second): // only keeps a broken run from hanging the test
		cmd.Process.Kill()
		t.Fatalf("the CONNECT never reached the SOCKS server: %s", stderr.String())
	}
	cmd.Process.Kill()
	var rest []string
	for tk.lines.Scan() {
		rest = append(rest, tk.lines.Text())
	}
	cmd.Wait()
	out := strings.Join(rest, "\n")
	if !strings.Contains(out, "RESULT connect=-1") {
		t.Fatalf("program did not get an error after the supervisor died: %q", out)
	}
	t.Log(out)
	noLeaks(t)
}

func TestExitStatusAndSignals(t *testing.T) {
	env(t)
	if r := torsocks(t, nil, "sh", "-c", "exit 7"); r.code != 7 {
		t.Errorf("exit status: got %d, want 7", r.code)
	}
	// Killed by a signal: torsocks dies of the same signal, as the shell would report it.
	cmd := exec.Command(torsocksBin, "sh", "-c", "kill -TERM $$")
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("want the signal to pass through, got %v", err)
	}
	if ws := ee.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
		t.Errorf("want death by SIGTERM, got %v", ws)
	}
	// A signal sent to torsocks reaches the program.
	cmd = exec.Command(torsocksBin, "sh", "-c", `trap 'echo got-term; exit 3' TERM; echo ready; while :; do sleep 0.05; done`)
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	if !sc.Scan() || sc.Text() != "ready" {
		t.Fatalf("no ready line")
	}
	cmd.Process.Signal(syscall.SIGTERM)
	sc.Scan()
	if sc.Text() != "got-term" {
		t.Errorf("program did not see SIGTERM: %q", sc.Text())
	}
	cmd.Wait()
	if cmd.ProcessState.ExitCode() != 3 {
		t.Errorf("exit after trap: %d", cmd.ProcessState.ExitCode())
	}
	// stdin passes through.
	cmd = exec.Command(torsocksBin, "cat")
	cmd.Stdin = strings.NewReader("hello through torsocks\n")
	if b, err := cmd.Output(); err != nil || string(b) != "hello through torsocks\n" {
		t.Errorf("stdin: %q %v", b, err)
	}
}

// Orphans are served until they exit, and torsocks waits for them.
func TestOrphansServed(t *testing.T) {
	env(t)
	out := filepath.Join(t.TempDir(), "page")
	// The orphan outlives its parent, fetches, and marks its end; the mark is there when torsocks
	// returns only if torsocks waited for it.
	r := torsocks(t, nil, "sh", "-c", "(sleep 0.5; curl -sS --max-time 20 http://203.0.113.10/ > "+out+"; echo done > "+out+".end) & exit 0")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if _, err := os.Stat(out + ".end"); err != nil {
		t.Errorf("torsocks returned before the orphan finished: %v", err)
	}
	b, err := os.ReadFile(out)
	if err != nil || !strings.Contains(string(b), "canary") {
		t.Fatalf("orphan's fetch: %q %v", b, err)
	}
	noLeaks(t)
}

func TestRefusesToStart(t *testing.T) {
	env(t)
	// Command not found: exit 1 and a clear line, like torsocks.
	r := torsocks(t, nil, "no-such-command-xyz")
	if r.code != 1 || !strings.Contains(r.stderr, "command not found") {
		t.Errorf("missing command: %d %q", r.code, r.stderr)
	}
	// Inside torsocks, a second torsocks cannot install its own listener.
	r = torsocks(t, nil, torsocksBin, "true")
	if r.code != 1 || !strings.Contains(r.stderr, "already running under a seccomp") {
		t.Errorf("nested torsocks: %d %q", r.code, r.stderr)
	}
	// setuid program.
	dir := t.TempDir()
	suid := filepath.Join(dir, "suid-true")
	b, _ := os.ReadFile("/bin/true")
	os.WriteFile(suid, b, 0o755)
	if err := syscall.Chmod(suid, 0o4755); err != nil {
		t.Fatal(err)
	}
	r = torsocks(t, nil, suid)
	if r.code != 1 || !strings.Contains(r.stderr, "setuid") {
		t.Errorf("setuid target: %d %q", r.code, r.stderr)
	}
}

// An internet socket inherited from the caller would let traffic around Tor: torsocks refuses to
// start and names the descriptor.
func TestInheritedSocketRefused(t *testing.T) {
	env(t)
	conn, err := net.Dial("tcp", loopbackServer(t).String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	f, _ := conn.(*net.TCPConn).File()
	defer f.Close()
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	uf, _ := udp.(*net.UDPConn).File()
	defer uf.Close()
	for name, file := range map[string]*os.File{"tcp": f, "udp": uf} {
		cmd := exec.Command(torsocksBin, "true")
		cmd.ExtraFiles = []*os.File{file}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		if err == nil || cmd.ProcessState.ExitCode() != 1 || !strings.Contains(stderr.String(), "descriptor 3") {
			t.Errorf("%s: inherited socket not refused: %v %q", name, err, stderr.String())
		}
	}
}
