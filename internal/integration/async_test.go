package integration

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gotorsocks/torsocks/internal/netnstest"
	"github.com/gotorsocks/torsocks/internal/socks5"
	"github.com/gotorsocks/torsocks/internal/socks5test"
)

// Asynchronous connects (issue 11, AsyncConnect 1 on the sealed network): a non-blocking connect
// returns EINPROGRESS at once and the kernel keeps the socket in progress until Tor answered.

// delayedSocks starts a SOCKS server on 127.0.0.1:port that waits delay after reading each
// CONNECT request (a circuit round trip) and counts the requests waiting at once.
func delayedSocks(t *testing.T, port string, delay time.Duration, replyFor func(string, uint16) byte) *socks5test.Server {
	t.Helper()
	s, err := socks5test.Start(socks5test.Options{
		Listen:     []string{"127.0.0.1:" + port},
		SourceV4:   netnstest.SocksSrcV4,
		SourceV6:   netnstest.SocksSrcV6,
		ReplyDelay: delay,
		ReplyFor:   replyFor,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func asyncEnv(port string, extra ...string) []string {
	return append([]string{"TORSOCKS_SEALED_NETWORK=1", "TORSOCKS_TOR_PORT=" + port}, extra...)
}

// One thread, 32 non-blocking connects: all are in flight at the SOCKS server at once (the C
// torsocks and AsyncConnect 0 have one at a time), each completes with a connection to the
// canary: EINPROGRESS, EALREADY, ENOTCONN while in progress, no readiness before Tor answered,
// epoll registered before (even sockets) or after (odd) the connect, SO_ERROR 0, getpeername,
// EISCONN, an HTTP exchange. IPv4 and IPv6.
func TestAsyncManyInFlight(t *testing.T) {
	env(t)
	bin := buildC(t, "as_connect")
	const k = 32
	for i, dest := range []string{netnstest.DestV4.String(), netnstest.DestV6.String()} {
		port := fmt.Sprint(9071 + i)
		s := delayedSocks(t, port, time.Second, nil)
		r := torsocks(t, asyncEnv(port), bin, "many", fmt.Sprint(k), dest, "80", "strict")
		if r.code != 0 || !strings.Contains(r.stdout, fmt.Sprintf("many ok %d", k)) {
			t.Fatalf("%s: exit %d\n%s\n%s", dest, r.code, r.stdout, r.stderr)
		}
		if got := s.MaxInFlight(); got != k {
			t.Errorf("%s: the SOCKS server saw at most %d requests at once, want %d", dest, got, k)
		}
	}
	noLeaks(t)
}

// AsyncConnect 0 serves non-blocking connects as before: one request at a time, connect
// answered 0 once Tor answered.
func TestAsyncOff(t *testing.T) {
	env(t)
	bin := buildC(t, "as_connect")
	s := delayedSocks(t, "9073", 50*time.Millisecond, nil)
	r := torsocks(t, asyncEnv("9073", "TORSOCKS_ASYNC_CONNECT=0"), bin, "many", "4", netnstest.DestV4.String(), "80")
	if r.code != 0 || !strings.Contains(r.stdout, "many ok 4") {
		t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if got := s.MaxInFlight(); got != 1 {
		t.Errorf("AsyncConnect 0: the SOCKS server saw %d requests at once, want 1", got)
	}
	noLeaks(t)
}

// Every Tor refusal reaches the program as SO_ERROR after writability, with the errno a blocking
// connect gets (socks5.ReplyError.Errno); Tor's own codes, which the kernel cannot express, as
// ECONNABORTED. A connect() after that reports nothing more (the kernel's ECONNABORTED once the
// error was read). All in flight at once; IPv4 and IPv6.
func TestAsyncRefusals(t *testing.T) {
	env(t)
	bin := buildC(t, "as_connect")
	codes := map[uint16]byte{
		1001: socks5.ReplyConnectionRefused,
		1002: socks5.ReplyNetworkUnreachable,
		1003: socks5.ReplyHostUnreachable,
		1004: socks5.ReplyTTLExpired,
		1005: 0xf0, // onion service descriptor not found
		1006: socks5.ReplyNotAllowed,
		1007: socks5.ReplyGeneralFailure,
	}
	want := map[uint16]string{1001: "ECONNREFUSED", 1002: "ENETUNREACH", 1003: "EHOSTUNREACH", 1004: "ETIMEDOUT",
		1005: "ECONNABORTED", 1006: "ECONNREFUSED", 1007: "ECONNREFUSED"}
	for i, dest := range []string{netnstest.DestV4.String(), netnstest.DestV6.String()} {
		port := fmt.Sprint(9074 + i)
		delayedSocks(t, port, 100*time.Millisecond, func(_ string, p uint16) byte { return codes[p] })
		args := []string{bin, "refuse", dest}
		for p := uint16(1001); p <= 1007; p++ {
			args = append(args, fmt.Sprint(p))
		}
		r := torsocks(t, asyncEnv(port), args...)
		if r.code != 0 {
			t.Fatalf("%s: exit %d\n%s\n%s", dest, r.code, r.stdout, r.stderr)
		}
		for p := uint16(1001); p <= 1007; p++ {
			line := fmt.Sprintf("%d %s then-connect ECONNABORTED", p, want[p])
			if !strings.Contains(r.stdout, line+"\n") {
				t.Errorf("%s: want %q in\n%s", dest, line, r.stdout)
			}
			// The usual line, once per refusal.
			if n := strings.Count(r.stderr, fmt.Sprintf(":%d through Tor failed", p)); n != 1 {
				t.Errorf("%s port %d: %d log lines, want 1:\n%s", dest, p, n, r.stderr)
			}
		}
	}
	noLeaks(t)
}

// A program that reads and writes before it polls gets EAGAIN (nothing to read, not writable
// yet), never a SOCKS byte, then its exchange.
func TestAsyncEarlyIO(t *testing.T) {
	env(t)
	bin := buildC(t, "as_connect")
	delayedSocks(t, "9076", 200*time.Millisecond, nil)
	r := torsocks(t, asyncEnv("9076"), bin, "early", netnstest.DestV4.String(), "80")
	if r.code != 0 || !strings.Contains(r.stdout, "read-before EAGAIN\nwrite-before EAGAIN\nearly ok") {
		t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	noLeaks(t)
}

// python3 asyncio opens 20 connections at once: all 20 requests in flight together.
func TestAsyncPythonAsyncio(t *testing.T) {
	env(t)
	s := delayedSocks(t, "9077", time.Second, nil)
	script := fmt.Sprintf(`
import asyncio
async def one(i):
    r, w = await asyncio.open_connection(%q, 80)
    w.write(b"GET / HTTP/1.0\r\n\r\n")
    await w.drain()
    body = await r.read()
    w.close()
    assert b"says hello" in body, body
async def main():
    await asyncio.gather(*(one(i) for i in range(20)))
    print("asyncio ok")
asyncio.run(main())
`, netnstest.DestV4.String())
	r := torsocks(t, asyncEnv("9077"), "python3", "-c", script)
	if r.code != 0 || !strings.Contains(r.stdout, "asyncio ok") {
		t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if got := s.MaxInFlight(); got != 20 {
		t.Errorf("the SOCKS server saw at most %d requests at once, want 20", got)
	}
	noLeaks(t)
}

// A hold listener kept idle after an asynchronous connect gives way to the inner listener of a
// blocking connect to the same destination (the two cannot both listen there), and is reused by
// the next asynchronous connect: alternating non-blocking and blocking connects to one
// destination all reach it, IPv4 and IPv6.
func TestAsyncThenBlockingSameDest(t *testing.T) {
	env(t)
	delayedSocks(t, "9079", 0, nil)
	script := `
import select, socket, sys
def get(s):
    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    body = b""
    while True:
        b = s.recv(4096)
        if not b:
            break
        body += b
    s.close()
    assert b"says hello" in body, body
for dest in sys.argv[1:]:
    fam = socket.AF_INET6 if ":" in dest else socket.AF_INET
    for i in range(6):
        s = socket.socket(fam, socket.SOCK_STREAM)
        if i % 3 != 2:
            s.setblocking(False)
            s.connect_ex((dest, 80))
            select.select([], [s], [], 30)
            e = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            assert e == 0, (dest, i, e)
            s.setblocking(True)
        else:
            s.connect((dest, 80))
        get(s)
print("alternating ok")
`
	r := torsocks(t, asyncEnv("9079"), "python3", "-c", script, netnstest.DestV4.String(), netnstest.DestV6.String())
	if r.code != 0 || !strings.Contains(r.stdout, "alternating ok") {
		t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	noLeaks(t)
}

// Nothing listens on Tor's SocksPort: an asynchronous connect fails with ECONNREFUSED in
// SO_ERROR after writability, and one line says Tor cannot be reached.
func TestAsyncTorUnreachable(t *testing.T) {
	env(t)
	script := fmt.Sprintf(`
import errno, select, socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setblocking(False)
e = s.connect_ex((%q, 80))
assert e == errno.EINPROGRESS, e
select.select([], [s], [], 30)
print("soerr", s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
`, netnstest.DestV4.String())
	r := torsocks(t, asyncEnv("9089"), "python3", "-c", script)
	if r.code != 0 || !strings.Contains(r.stdout, fmt.Sprintf("soerr %d", unix.ECONNREFUSED)) || !strings.Contains(r.stderr, "cannot reach Tor's SocksPort") {
		t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	noLeaks(t)
}

// curl --parallel with 20 URLs: all 20 requests in flight together.
func TestAsyncCurlParallel(t *testing.T) {
	env(t)
	s := delayedSocks(t, "9078", time.Second, nil)
	args := []string{"curl", "-sS", "--parallel", "--parallel-max", "20", "--parallel-immediate"}
	for i := 0; i < 20; i++ {
		args = append(args, fmt.Sprintf("http://%s/%d", netnstest.DestV4, i), "-o", "/dev/null", "-w", "%{http_code}\\n")
	}
	r := torsocks(t, asyncEnv("9078"), args...)
	if r.code != 0 || strings.Count(r.stdout, "200\n") != 20 {
		t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if got := s.MaxInFlight(); got != 20 {
		t.Errorf("the SOCKS server saw at most %d requests at once, want 20", got)
	}
	noLeaks(t)
}

// The same 32 connects waited for with poll() and with select() instead of epoll: every one in
// flight at once, each completes as with epoll (as_connect many ... strict).
func TestAsyncPollSelect(t *testing.T) {
	env(t)
	bin := buildC(t, "as_connect")
	const k = 32
	for i, how := range []string{"poll", "select"} {
		port := fmt.Sprint(9081 + i)
		s := delayedSocks(t, port, 500*time.Millisecond, nil)
		r := torsocks(t, asyncEnv(port, "AS_WAIT="+how), bin, "many", fmt.Sprint(k), netnstest.DestV4.String(), "80", "strict")
		if r.code != 0 || !strings.Contains(r.stdout, fmt.Sprintf("many ok %d", k)) {
			t.Fatalf("%s: exit %d\n%s\n%s", how, r.code, r.stdout, r.stderr)
		}
		if got := s.MaxInFlight(); got != k {
			t.Errorf("%s: the SOCKS server saw at most %d requests at once, want %d", how, got, k)
		}
	}
	noLeaks(t)
}

// Signals during the wait: a SIGALRM every 200 µs and a SIGUSR1 every ms while 32 connects are
// pending, with epoll and with poll. With SA_RESTART handlers (Go, libuv, glibc's signal()) every
// socket() and connect() answers exactly as the kernel would: never EINTR (as_connect fails on
// it). With a SIGALRM handler without SA_RESTART a notified call may fail EINTR (the documented
// window, docs/design.md), retried by the program and counted. Either way every connect
// completes and all are in flight at once.
func TestAsyncSignals(t *testing.T) {
	env(t)
	bin := buildC(t, "as_connect")
	const k = 32
	us := os.Getenv("AS_SIGNAL_US") // a different storm, when set
	i := 0
	for _, sig := range []string{"restart", "norestart"} {
		for _, how := range []string{"epoll", "poll"} {
			port := fmt.Sprint(9083 + i)
			i++
			s := delayedSocks(t, port, 500*time.Millisecond, nil)
			r := torsocks(t, asyncEnv(port, "AS_WAIT="+how, "AS_SIGNALS="+sig, "AS_SIGNAL_US="+us), bin, "many", fmt.Sprint(k), netnstest.DestV4.String(), "80", "strict")
			if r.code != 0 || !strings.Contains(r.stdout, fmt.Sprintf("many ok %d", k)) {
				t.Fatalf("%s, %s: exit %d\n%s\n%s", sig, how, r.code, r.stdout, r.stderr)
			}
			if got := s.MaxInFlight(); got != k {
				t.Errorf("%s, %s: the SOCKS server saw at most %d requests at once, want %d", sig, how, got, k)
			}
			t.Logf("%s, %s: %s", sig, how, strings.Join(strings.Fields(r.stdout), " "))
		}
	}
	noLeaks(t)
}

// The supervisor killed while asynchronous connects are in flight and others are relayed (issue
// 11): the pending connects fail (their next SYN finds no hold listener: ECONNREFUSED), never
// complete to anything; the relayed ones end (EOF or reset) and carry nothing more; a new connect
// fails. No canary hears from the program (the pending ones are to the canary's address), nothing
// leaves on the attack interface, and the destination sees only the SOCKS server.
func TestAsyncSupervisorKilled(t *testing.T) {
	env(t)
	sniff := sniffAttack(t, attackIface(t))
	destPort := silentDest(t)
	// CONNECTs to port 80 (the canary's) wait until the test ends: they are the pending ones.
	const pending = 2
	waiting := make(chan struct{}, pending)
	release := make(chan struct{})
	const port = "9085"
	delayedSocks(t, port, 0, func(_ string, p uint16) byte {
		if p == 80 {
			waiting <- struct{}{}
			<-release
		}
		return 0
	})
	t.Cleanup(func() { close(release) }) // before the server's Close, which waits for its handlers
	out := filepath.Join(t.TempDir(), "out")
	script := fmt.Sprintf(`
import errno, select, socket, sys
port, out, pending = %d, %q, %d
def start(p):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    e = s.connect_ex(("203.0.113.10", p))
    if e != errno.EINPROGRESS:
        sys.exit("connect_ex: %%d" %% e)
    return s
relayed = [start(port) for _ in range(3)]
for s in relayed:
    select.select([], [s], [], 30)
    if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
        sys.exit("relayed connect failed")
waiting = [start(80) for _ in range(pending)]
print("ready", flush=True)
sys.stdin.readline()
res = []
for s in waiting:
    _, w, _ = select.select([], [s], [], 60)
    if not w:
        res.append("pend-timeout")
        continue
    try:
        e = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        res.append("pend-err%%d" %% e if e else "pend-ok")
    except OSError as e:
        res.append("pend-getsockopt-err%%d" %% (e.errno or 0))
for s in relayed:
    s.setblocking(True)
    s.settimeout(10)
    try:
        r = s.recv(10)
        res.append("eof" if r == b"" else "data")
    except OSError as e:
        res.append("err%%d" %% (e.errno or 0))
try:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    e = s.connect_ex(("203.0.113.10", 80))
    res.append("connect-err%%d" %% e if e not in (0, errno.EINPROGRESS) else "connect-started")
except OSError as e:
    res.append("socket-err%%d" %% (e.errno or 0))
open(out, "w").write(" ".join(res) + "\n")
`, destPort, out, pending)
	cmd := exec.Command(torsocksBin, "python3", "-c", script)
	cmd.Env = append(os.Environ(), asyncEnv(port)...)
	// A file, not a pipe: the program outlives the killed supervisor and keeps its stderr.
	stderr, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	cmd.Stderr = stderr
	pr, pw, _ := os.Pipe()
	cmd.Stdin = pr
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pr.Close()
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() || lines.Text() != "ready" {
		cmd.Process.Kill()
		cmd.Wait()
		b, _ := os.ReadFile(stderr.Name())
		t.Fatalf("program did not get its connects in flight: %q\n%s", lines.Text(), b)
	}
	// The event that proves both pending connects reached the supervisor's SOCKS side.
	for i := 0; i < pending; i++ {
		<-waiting
	}
	res, f := killSupervisor(t, cmd, pw, out, 120*time.Second)
	if len(f) != pending+3+1 {
		b, _ := os.ReadFile(stderr.Name())
		t.Fatalf("program results %q\n%s", res, b)
	}
	for _, x := range f[:pending] {
		if x != fmt.Sprintf("pend-err%d", unix.ECONNREFUSED) {
			t.Errorf("a pending connect ended %s, want ECONNREFUSED: %s", x, res)
		}
	}
	for _, x := range f[pending : pending+3] {
		if x == "data" {
			t.Errorf("a relayed connection still carried data: %s", res)
		}
	}
	if f[len(f)-1] == "connect-started" {
		t.Errorf("a connect was started with the supervisor gone: %s", res)
	}
	if bad := sniff.stop(); len(bad) > 0 {
		t.Errorf("LEAK: packets the sniffer flagged:\n%s", strings.Join(bad, "\n"))
	}
	noLeaks(t)
}
