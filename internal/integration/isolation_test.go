package integration

import (
	"io"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gotorsocks/torsocks/internal/netnstest"
	"github.com/gotorsocks/torsocks/internal/socks5test"
)

// Isolation tests: SOCKS5 credentials from -u/-p, the config file and the environment, and
// IsolatePID's per-process random credentials, seen by SOCKS servers.

// authSocks starts a SOCKS server on 127.0.0.1 (any free port) that requires these credentials.
func authSocks(t *testing.T, users map[string]string) (*socks5test.Server, string) {
	t.Helper()
	s, err := socks5test.Start(socks5test.Options{
		Listen:   []string{"127.0.0.1:0"},
		SourceV4: netnstest.SocksSrcV4,
		SourceV6: netnstest.SocksSrcV6,
		Users:    users,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	_, port, _ := net.SplitHostPort(s.Addrs()[0].String())
	return s, port
}

// cred is what a client offered to anyAuthSocks on one connection.
type cred struct {
	methods    []byte
	user, pass string
}

// anyAuthSocks is a SOCKS front that accepts any RFC 1929 credentials (IsolatePID's are random,
// so socks5test's fixed user list cannot hold them), records them, and relays the request to the
// shared test server on 127.0.0.1:9050 (which dials the canaries from the SOCKS source address).
type anyAuthSocks struct {
	ln    net.Listener
	port  string
	mu    sync.Mutex
	creds []cred
	wg    sync.WaitGroup
}

func startAnyAuthSocks(t *testing.T) *anyAuthSocks {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &anyAuthSocks{ln: ln}
	_, a.port, _ = net.SplitHostPort(ln.Addr().String())
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			a.wg.Add(1)
			go func() {
				defer a.wg.Done()
				a.serve(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		a.wg.Wait()
	})
	return a
}

func (a *anyAuthSocks) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	var hdr [2]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil || hdr[0] != 5 {
		return
	}
	cr := cred{methods: make([]byte, hdr[1])}
	if _, err := io.ReadFull(c, cr.methods); err != nil {
		return
	}
	method := byte(0xff) // 02 when offered, else 00 when offered
	switch {
	case strings.ContainsRune(string(cr.methods), 2):
		method = 2
	case strings.ContainsRune(string(cr.methods), 0):
		method = 0
	}
	if _, err := c.Write([]byte{5, method}); err != nil || method == 0xff {
		return
	}
	if method == 2 {
		var ver [1]byte
		if _, err := io.ReadFull(c, ver[:]); err != nil || ver[0] != 1 {
			return
		}
		str := func() (string, bool) {
			var l [1]byte
			if _, err := io.ReadFull(c, l[:]); err != nil {
				return "", false
			}
			b := make([]byte, l[0])
			_, err := io.ReadFull(c, b)
			return string(b), err == nil
		}
		var ok1, ok2 bool
		cr.user, ok1 = str()
		cr.pass, ok2 = str()
		if !ok1 || !ok2 {
			return
		}
		if _, err := c.Write([]byte{1, 0}); err != nil {
			return
		}
	}
	a.mu.Lock()
	a.creds = append(a.creds, cr)
	a.mu.Unlock()
	up, err := net.DialTimeout("tcp", "127.0.0.1:9050", 5*time.Second)
	if err != nil {
		return
	}
	defer up.Close()
	up.SetDeadline(time.Now().Add(20 * time.Second))
	var sel [2]byte
	if _, err := up.Write([]byte{5, 1, 0}); err != nil {
		return
	}
	if _, err := io.ReadFull(up, sel[:]); err != nil || sel != [2]byte{5, 0} {
		return
	}
	done := make(chan struct{}, 2)
	go func() { io.Copy(up, c); up.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	go func() { io.Copy(c, up); c.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	<-done
	<-done
}

func (a *anyAuthSocks) seen() []cred {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]cred(nil), a.creds...)
}

// Fixed credentials from the command line, the config file or the environment reach the SOCKS
// server on every request; a wrong password fails the program's connect with EINVAL (as torsocks)
// and one clear line.
func TestPolicyIsolationCredentials(t *testing.T) {
	env(t)
	srv, port := authSocks(t, map[string]string{"alice": "secret"})
	for _, tc := range []struct {
		name      string
		env, opts []string
	}{
		{name: "flags", env: []string{"TORSOCKS_TOR_PORT=" + port}, opts: []string{"-u", "alice", "-p", "secret"}},
		{name: "long flags", opts: []string{"--user=alice", "--pass", "secret", "--port", port}},
		{name: "conf file", env: []string{"TORSOCKS_CONF_FILE=" + confFile(t, "TorPort "+port+"\nSOCKS5Username alice\nSOCKS5Password secret\n")}},
		{name: "environment", env: []string{"TORSOCKS_TOR_PORT=" + port, "TORSOCKS_USERNAME=alice", "TORSOCKS_PASSWORD=secret"}},
		{name: "flags beat env", env: []string{"TORSOCKS_TOR_PORT=" + port, "TORSOCKS_USERNAME=bob", "TORSOCKS_PASSWORD=wrong"}, opts: []string{"-u", "alice", "-p", "secret"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := len(srv.Requests())
			args := append(append([]string{}, tc.opts...), "curl", "-sS", "--max-time", "20", "http://203.0.113.10/", "http://[2001:db8::10]/")
			r := torsocks(t, tc.env, args...)
			if r.code != 0 || strings.Count(r.stdout, "canary") != 2 {
				t.Fatalf("curl: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
			}
			reqs := newRequests(srv, n)
			wantConnectRequests(t, reqs, dest4, dest6)
			for _, q := range reqs {
				if q.Username != "alice" || q.Password != "secret" {
					t.Errorf("request %s:%d came with %q/%q, want alice/secret", q.Host, q.Port, q.Username, q.Password)
				}
			}
			noLeaks(t)
		})
	}

	// At debug level the credentials are in use but the password is never written.
	t.Run("password not logged", func(t *testing.T) {
		r := probe(t, nil, []string{"-d", "-P", port, "-u", "alice", "-p", "secret"}, "connect", "203.0.113.10", "80")
		wantLines(t, r, "connect=0 errno=0", "echo=ok")
		if strings.Contains(r.stderr, "secret") {
			t.Errorf("the password is in the log:\n%s", r.stderr)
		}
		noLeaks(t)
	})

	// No credentials against a server that requires them: the connect fails, nothing is reached.
	t.Run("credentials missing", func(t *testing.T) {
		n, acc := len(srv.Requests()), canary4.Accepted()
		r := probe(t, []string{"TORSOCKS_TOR_PORT=" + port}, nil, "connect", "203.0.113.10", "80")
		if !regexp.MustCompile(`(?m)^connect=-1 errno=E[A-Z]+$`).MatchString(r.stdout) {
			t.Errorf("connect did not fail:\n%s", r.stdout)
		}
		if lines, _ := parseLog(r.stderr); len(lines) != 1 || !strings.Contains(lines[0].msg, "203.0.113.10:80") {
			t.Errorf("want one line naming the destination: %q", r.stderr)
		}
		settle(t, canary4)
		if q := newRequests(srv, n); len(q) != 0 || canary4.Accepted() != acc {
			t.Errorf("a request passed without credentials: %+v", q)
		}
	})

	t.Run("wrong password", func(t *testing.T) {
		n, acc := len(srv.Requests()), canary4.Accepted()
		r := probe(t, nil, []string{"-P", port, "-u", "alice", "-p", "Wr0ngPassw0rd"}, "connect", "203.0.113.10", "80")
		wantLines(t, r, "connect=-1 errno=EINVAL")
		pid, _ := progPIDs(t, r.stdout)
		lines, other := parseLog(r.stderr)
		if len(other) != 0 || len(lines) != 1 || lines[0].level != "WARNING" {
			t.Fatalf("want one WARNING line, got %q", r.stderr)
		}
		if l := lines[0]; l.pid != pid || !strings.Contains(l.msg, "203.0.113.10:80") || !strings.Contains(strings.ToLower(l.msg), "authentication failed") {
			t.Errorf("the line should name the program (pid %d), the destination and the authentication failure: %q", pid, l.raw)
		}
		if strings.Contains(r.stderr, "Wr0ngPassw0rd") {
			t.Errorf("the password is in the log: %q", r.stderr)
		}
		if q := newRequests(srv, n); len(q) != 0 {
			t.Errorf("a request passed a failed authentication: %+v", q)
		}
		if settle(t, canary4); canary4.Accepted() != acc {
			t.Errorf("the destination was reached")
		}
		noLeaks(t)
	})
}

// randomHex is 16 or more hex digits: 64 bits that neither a pid nor a time can supply.
var randomHex = regexp.MustCompile(`[0-9a-f]{16,}`)

// isoScript connects from a process, from two threads of it, from a forked child, from a child
// that execs, and from the process again; it prints one "TAG pid" line per connection, in order.
const isoScript = `
import os, socket, subprocess, sys, threading
out = threading.Lock()
def conn(tag):
    s = socket.create_connection(("203.0.113.10", 80), timeout=20)
    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    body = b""
    while True:
        b = s.recv(4096)
        if not b: break
        body += b
    assert b"canary" in body, body
    s.close()
    with out:
        print(tag, os.getpid(), flush=True)
conn("parent")
ts = [threading.Thread(target=conn, args=("thread",)) for _ in range(2)]
for t in ts: t.start()
for t in ts: t.join()
pid = os.fork()
if pid == 0:
    conn("fork")
    os._exit(0)
assert os.waitpid(pid, 0)[1] == 0
subprocess.run([sys.executable, "-c", "import os, socket; s = socket.create_connection(('2001:db8::10', 80), timeout=20); s.close(); print('exec', os.getpid(), flush=True)"], check=True)
conn("parent")
`

// -i / TORSOCKS_ISOLATE_PID / IsolatePID 1: each process gets its own random credentials (a
// forked child and a child that execs included), threads share their process's.
func TestPolicyIsolationPID(t *testing.T) {
	env(t)
	var allUsers []string
	for _, tc := range []struct {
		name      string
		env, opts []string
	}{
		{name: "-i", opts: []string{"-i"}},
		{name: "--isolate", opts: []string{"--isolate"}},
		{name: "TORSOCKS_ISOLATE_PID", env: []string{"TORSOCKS_ISOLATE_PID=1"}},
		{name: "IsolatePID", env: []string{"TORSOCKS_CONF_FILE=" + confFile(t, "IsolatePID 1\n")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startAnyAuthSocks(t)
			args := append(append([]string{"-P", srv.port}, tc.opts...), "python3", "-c", isoScript)
			r := torsocks(t, tc.env, args...)
			if r.code != 0 {
				t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
			}
			tags := strings.Fields(r.stdout)
			creds := srv.seen()
			if len(creds) != 6 || len(tags) != 12 {
				t.Fatalf("want 6 connections, got %d credentials %+v, output %q", len(creds), creds, r.stdout)
			}
			for i, c := range creds {
				if string(c.methods) != "\x02" {
					t.Errorf("connection %d (%s) offered methods % x; want exactly 02", i, tags[2*i], c.methods)
				}
				if c.user == "" || c.pass == "" {
					t.Errorf("connection %d (%s): empty credentials %q/%q", i, tags[2*i], c.user, c.pass)
				}
				if !randomHex.MatchString(c.user + " " + c.pass) {
					t.Errorf("connection %d (%s): credentials %q/%q hold no random part (64 bits of hex)", i, tags[2*i], c.user, c.pass)
				}
			}
			// Connections happen in the order printed: parent, thread, thread, fork, exec, parent.
			parent, th1, th2, fork, exc, parent2 := creds[0], creds[1], creds[2], creds[3], creds[4], creds[5]
			same := func(a, b cred) bool { return a.user == b.user && a.pass == b.pass }
			if !same(parent, th1) || !same(parent, th2) || !same(parent, parent2) {
				t.Errorf("one process, several credentials: %+v %+v %+v %+v", parent, th1, th2, parent2)
			}
			if same(fork, parent) || same(exc, parent) || same(fork, exc) {
				t.Errorf("processes share credentials: parent %+v fork %+v exec %+v", parent, fork, exc)
			}
			t.Logf("parent %s/%s, fork %s/%s, exec %s/%s", parent.user, parent.pass, fork.user, fork.pass, exc.user, exc.pass)
			for _, c := range []cred{parent, fork, exc} {
				allUsers = append(allUsers, c.user+"/"+c.pass)
			}
			noLeaks(t)
		})
	}
	// Every process of every run had credentials of its own.
	seen := map[string]bool{}
	for _, u := range allUsers {
		if seen[u] {
			t.Errorf("credentials %q handed out twice", u)
		}
		seen[u] = true
	}

	// Two processes started by a shell, one after the other: different credentials.
	t.Run("sh two curls", func(t *testing.T) {
		srv := startAnyAuthSocks(t)
		curl := "curl -sS --max-time 20 -o /dev/null http://203.0.113.10/"
		r := torsocks(t, []string{"TORSOCKS_ISOLATE_PID=1", "TORSOCKS_TOR_PORT=" + srv.port}, "sh", "-c", curl+" && "+curl)
		if r.code != 0 {
			t.Fatalf("exit %d\n%s", r.code, r.stderr)
		}
		c := srv.seen()
		if len(c) != 2 || c[0].user == c[1].user || c[0].pass == c[1].pass {
			t.Errorf("two curls, want two different credentials: %+v", c)
		}
		noLeaks(t)
	})

	// Isolation and fixed credentials exclude each other: a start-up error, before the program.
	t.Run("conflict with -u/-p", func(t *testing.T) {
		r := torsocks(t, nil, "-i", "-u", "alice", "-p", "secret", "sh", "-c", "echo ran")
		if r.code != 1 || strings.Contains(r.stdout, "ran") || !strings.Contains(r.stderr, "IsolatePID") {
			t.Errorf("want exit 1 naming IsolatePID, got %d %q %q", r.code, r.stdout, r.stderr)
		}
	})
}
