package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gotorsocks/torsocks/internal/netnstest"
)

// target is how a program names the destination.
type target string

const (
	byIP    target = "by address"
	byName  target = "by name"
	byOnion target = ".onion"
)

// program is one client program of the compatibility matrix.
type program struct {
	name    string
	targets []target
	// cmd returns the command line and standard input of a run with ID id
	// against host.
	cmd func(e *env, id, host string, tg target) (args []string, stdin string)
	// check returns an error unless the output shows that the run worked.
	check func(e *env, id string, tg target, r result) error
	// impossible names targets the program itself cannot reach whatever the
	// torsocks, and why: a run that fails without leaking is "n/a" there.
	impossible map[target]string
	// needs names a command the program needs that the machine may lack: the runs are then
	// recorded as "not installed" and skipped, which fails in CI (scripts/install-deps.sh installs
	// it) unless optional.
	needs string
	// optional says scripts/install-deps.sh does not install the program: where it is missing or
	// does not run, its runs skip in CI too.
	optional bool
	// probe, if set, checks without any network that the program runs on this machine at all
	// (a browser missing a library, say): if it fails the runs are recorded as "does not run
	// here" instead of failing.
	probe func(e *env) error
	// timeout, if set, bounds each run instead of runTimeout (for programs that hang, rather
	// than fail, under the C torsocks).
	timeout time.Duration
}

// skip skips the runs of p on a machine that lacks it: a failure in CI unless p is optional.
func (p program) skip(t *testing.T, format string, args ...any) {
	t.Helper()
	if p.optional {
		t.Skipf(format, args...)
	}
	netnstest.Skip(t, format, args...)
}

func pageURL(host, id string) string { return fmt.Sprintf("http://%s/t/%s/", host, id) }

func wantBody(id string, r result) error {
	if !strings.Contains(r.stdout, helloBody(id)) {
		return fmt.Errorf("page %q missing from the output %q", helloBody(id), r.stdout)
	}
	return nil
}

const pyFetch = `import sys, urllib.request
sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=60).read().decode())`

// pyFastOpen sends an HTTP request with the connect folded into the first
// sendto (TCP Fast Open, MSG_FASTOPEN) and prints the response.
const pyFastOpen = `import socket, sys
host, path = sys.argv[1], sys.argv[2]
ai = socket.getaddrinfo(host, 80, socket.AF_INET, socket.SOCK_STREAM)[0]
s = socket.socket(ai[0], ai[1])
s.settimeout(60)
s.sendto(("GET %s HTTP/1.0\r\nHost: %s\r\n\r\n" % (path, host)).encode(), socket.MSG_FASTOPEN, ai[4])
out = b""
while True:
    d = s.recv(4096)
    if not d:
        break
    out += d
sys.stdout.write(out.decode())`

// probeChromium renders a local file with no network and no torsocks.
func probeChromium(e *env) error {
	page := filepath.Join(e.dir, "probe.html")
	if err := os.WriteFile(page, []byte("<p>chromium-probe-ok</p>"), 0o644); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// In a network namespace of its own with no interface up: chromium's background requests
	// (component updates...) must not reach the test's nameserver canaries.
	out, err := exec.CommandContext(ctx, "unshare", "--net", "chromium", "--headless", "--no-sandbox", "--disable-gpu",
		"--user-data-dir="+filepath.Join(e.dir, "chromium-probe"), "--no-first-run", "--disable-background-networking",
		"--disable-component-update", "--dump-dom", "file://"+page).CombinedOutput()
	if !strings.Contains(string(out), "chromium-probe-ok") {
		return fmt.Errorf("chromium --dump-dom of a local file: %v: %s", err, lastLine(string(out)))
	}
	return nil
}

// nodeFetch prints the body of the page at process.argv[1].
const nodeFetch = `require("http").get(process.argv[1], res => {
  let b = ""; res.on("data", d => b += d); res.on("end", () => process.stdout.write(b));
}).on("error", e => { console.error(e.message); process.exit(1); });`

// pyAsyncio fetches a page with asyncio streams (non-blocking connect in an event loop).
const pyAsyncio = `import asyncio, sys
async def main(host, path):
    r, w = await asyncio.open_connection(host, 80)
    w.write(("GET %s HTTP/1.0\r\nHost: %s\r\n\r\n" % (path, host)).encode())
    await w.drain()
    sys.stdout.write((await r.read()).decode())
asyncio.run(asyncio.wait_for(main(sys.argv[1], sys.argv[2]), 60))`

// javaFetch is a single-file Java program (java Fetch.java URL) printing the page's body.
const javaFetch = `import java.io.InputStream;
import java.net.HttpURLConnection;
import java.net.Proxy;
import java.net.URL;

public class Fetch {
    public static void main(String[] args) throws Exception {
        HttpURLConnection c = (HttpURLConnection) new URL(args[0]).openConnection(Proxy.NO_PROXY);
        c.setConnectTimeout(60000);
        c.setReadTimeout(60000);
        try (InputStream in = c.getInputStream()) {
            System.out.write(in.readAllBytes());
        }
        System.out.flush();
    }
}
`

var allTargets = []target{byIP, byName, byOnion}

var programs = []program{
	{
		name:    "curl",
		targets: allTargets,
		cmd: func(e *env, id, host string, tg target) ([]string, string) {
			return []string{"curl", "-sS", "--max-time", "60", pageURL(host, id)}, ""
		},
		check: func(e *env, id string, tg target, r result) error { return wantBody(id, r) },
	},
	{
		name:    "wget",
		targets: allTargets,
		cmd: func(e *env, id, host string, tg target) ([]string, string) {
			return []string{"wget", "-nv", "-O", "-", "-T", "60", "-t", "1", pageURL(host, id)}, ""
		},
		check: func(e *env, id string, tg target, r result) error { return wantBody(id, r) },
	},
	{
		name:    "python3 urllib",
		targets: allTargets,
		cmd: func(e *env, id, host string, tg target) ([]string, string) {
			return []string{"/usr/bin/python3", "-c", pyFetch, pageURL(host, id)}, ""
		},
		check: func(e *env, id string, tg target, r result) error { return wantBody(id, r) },
	},
	{
		name:    "python3 TCP Fast Open (sendto MSG_FASTOPEN)",
		targets: allTargets,
		cmd: func(e *env, id, host string, tg target) ([]string, string) {
			return []string{"/usr/bin/python3", "-c", pyFastOpen, host, fmt.Sprintf("/t/%s/", id)}, ""
		},
		check: func(e *env, id string, tg target, r result) error { return wantBody(id, r) },
	},
	{
		name:    "git clone (http)",
		targets: allTargets,
		cmd: func(e *env, id, host string, tg target) ([]string, string) {
			dir := filepath.Join(e.dir, "clone-"+id)
			// /bin/sh, not sh: "torsocks sh" is the C torsocks' "show".
			return []string{"/bin/sh", "-c", `git clone -q "$1" "$2" && cat "$2/README"`, "sh", pageURL(host, id) + "repo.git", dir}, ""
		},
		check: func(e *env, id string, tg target, r result) error {
			if r.stdout != repoReadme {
				return fmt.Errorf("cloned README %q, want %q", r.stdout, repoReadme)
			}
			return nil
		},
	},
	{
		name:    "static Go client (CGO_ENABLED=0)",
		targets: allTargets,
		cmd: func(e *env, id, host string, tg target) ([]string, string) {
			return []string{e.goclient, pageURL(host, id)}, ""
		},
		check: func(e *env, id string, tg target, r result) error { return wantBody(id, r) },
		impossible: map[target]string{
			byOnion: "Go's resolver refuses .onion names without asking DNS (RFC 7686); Go programs reach onions by dialling a SOCKS proxy themselves",
		},
	},
	{
		name:    "nc (server speaks first)",
		targets: allTargets,
		cmd: func(e *env, id, host string, tg target) ([]string, string) {
			// No -N: Tor has no half-closed streams (a shutdown(SHUT_WR) ends the
			// stream both ways), so nc waits for the server to close.
			if tg == byOnion { // the onion service forwards port 80 only: HTTP by hand
				return []string{"nc", "-w", "60", host, "80"},
					fmt.Sprintf("GET /t/%s/ HTTP/1.0\r\nHost: %s\r\n\r\n", id, host)
			}
			return []string{"nc", "-w", "60", host, fmt.Sprint(bannerPort)}, "hello " + id + "\n"
		},
		check: func(e *env, id string, tg target, r result) error {
			if tg == byOnion {
				return wantBody(id, r)
			}
			// Exactly the banner and the echo: no SOCKS byte in front, none lost.
			if want := banner + "hello " + id + "\n"; r.stdout != want {
				return fmt.Errorf("transcript %q, want %q", r.stdout, want)
			}
			return nil
		},
	},
	{
		// An event loop (libuv: non-blocking connect + epoll) with names looked up on libuv's
		// thread pool.
		name:    "node (http.get)",
		targets: allTargets,
		cmd: func(e *env, id, host string, tg target) ([]string, string) {
			return []string{"node", "-e", nodeFetch, pageURL(host, id)}, ""
		},
		check:    func(e *env, id string, tg target, r result) error { return wantBody(id, r) },
		needs:    "node",
		optional: true,
	},
	{
		name:    "python3 asyncio",
		targets: allTargets,
		cmd: func(e *env, id, host string, tg target) ([]string, string) {
			return []string{"/usr/bin/python3", "-c", pyAsyncio, host, fmt.Sprintf("/t/%s/", id)}, ""
		},
		check: func(e *env, id string, tg target, r result) error { return wantBody(id, r) },
	},
	{
		// The JVM: its own threads and socket code over libc, HttpURLConnection without a proxy.
		name:    "java (HttpURLConnection)",
		targets: allTargets,
		cmd: func(e *env, id, host string, tg target) ([]string, string) {
			src := filepath.Join(e.dir, "Fetch.java")
			e.writeOnce(src, javaFetch)
			return []string{"java", src, pageURL(host, id)}, ""
		},
		check:    func(e *env, id string, tg target, r result) error { return wantBody(id, r) },
		needs:    "java",
		optional: true,
	},
	{
		// A browser: a multi-process program with its own DNS client, happy eyeballs over the
		// IPv6 and IPv4 stand-ins, and an HTTPS-first attempt that Tor refuses before it falls
		// back to HTTP. Background services are switched off so every name it asks for is the
		// run's own (a leaked query of another name could not be attributed to the run).
		name:    "chromium (headless)",
		targets: allTargets,
		cmd: func(e *env, id, host string, tg target) ([]string, string) {
			return []string{"chromium", "--headless", "--no-sandbox", "--disable-gpu",
				"--user-data-dir=" + filepath.Join(e.dir, "chromium-"+id),
				"--no-first-run", "--disable-background-networking", "--disable-component-update",
				"--disable-sync", "--disable-default-apps", "--disable-breakpad", "--no-pings",
				"--dump-dom", pageURL(host, id)}, ""
		},
		check: func(e *env, id string, tg target, r result) error { return wantBody(id, r) },
		needs: "chromium",
		probe: probeChromium,
		// Ours: about 2 s a run. Under the C torsocks it hangs until killed.
		timeout: 15 * time.Second,
	},
	{
		name:    "C client calling libc's syscall(2)",
		targets: []target{byIP},
		cmd: func(e *env, id, host string, tg target) ([]string, string) {
			return []string{e.raw, "libc", host, fmt.Sprint(webPort), fmt.Sprintf("/t/%s/", id)}, ""
		},
		check: func(e *env, id string, tg target, r result) error { return wantBody(id, r) },
	},
	{
		name:    "C client with inline syscall instructions",
		targets: []target{byIP},
		cmd: func(e *env, id, host string, tg target) ([]string, string) {
			return []string{e.raw, "asm", host, fmt.Sprint(webPort), fmt.Sprintf("/t/%s/", id)}, ""
		},
		check: func(e *env, id string, tg target, r result) error { return wantBody(id, r) },
	},
}

// host returns the destination host for a run.
func (e *env) host(id string, tg target) string {
	switch tg {
	case byName:
		return id + "." + nameDomain
	case byOnion:
		return e.net.OnionHost
	}
	return testHost.String()
}

// testPrograms runs every program against every target under both torsocks.
func testPrograms(t *testing.T, e *env) {
	var names []string
	var fs []func(*testing.T)
	for _, p := range programs {
		for _, tg := range allTargets {
			if !contains(p.targets, tg) {
				continue
			}
			row := p.name + " — " + string(tg)
			e.table.declare(secPrograms, row)
			for _, tool := range []string{toolGo, toolC} {
				names = append(names, fmt.Sprintf("%s/%s/%s", tool, p.name, tg))
				fs = append(fs, func(t *testing.T) { e.programRun(t, p, tg, tool, row) })
			}
		}
	}
	concurrently(t, names, fs)
}

func contains(ts []target, tg target) bool {
	for _, x := range ts {
		if x == tg {
			return true
		}
	}
	return false
}

// programRun runs p once and records the outcome in the table; under this
// torsocks the run must work and must not leak.
func (e *env) programRun(t *testing.T, p program, tg target, tool, row string) {
	if tool == toolC && e.cVersion == "" {
		e.table.set(secPrograms, row, tool, cell{status: "not installed"})
		netnstest.Skip(t, "the C torsocks is not installed (scripts/install-deps.sh)")
	}
	if p.needs != "" {
		if _, err := exec.LookPath(p.needs); err != nil {
			e.table.set(secPrograms, row, tool, cell{status: "not installed"})
			p.skip(t, "%s is not installed", p.needs)
		}
	}
	if p.probe != nil {
		if err := e.probeOnce(p.name, p.probe); err != nil {
			e.table.set(secPrograms, row, tool, cell{status: "does not run here", detail: err.Error()})
			p.skip(t, "%s does not run on this machine without torsocks either: %v", p.name, err)
		}
	}
	if tool == toolGo && tg != byIP && !e.dnsWorks {
		e.table.set(secPrograms, row, tool, cell{status: "skipped", detail: "needs DNS (issue 4)"})
		netnstest.Skip(t, "needs DNS (issue 4): %s", e.dnsDetail)
	}
	id := e.newID(tool)
	host := e.host(id, tg)
	args, stdin := p.cmd(e, id, host, tg)
	onionBefore := 0
	if tg == byOnion {
		e.onionMu.Lock()
		defer e.onionMu.Unlock()
		onionBefore = e.onionLeakQueries()
	}
	limit := runTimeout
	if p.timeout > 0 {
		limit = p.timeout
	}
	r := e.runFor(t, limit, tool, nil, stdin, args...)
	c := e.outcome(id, tg, onionBefore, r, p.check(e, id, tg, r))
	if tg == byOnion && c.status == "fails" && !p.impossibleFor(tg) && !(tool == toolC && r.code == -1) {
		// A fresh test network sometimes fails a rendezvous (Tor's own retry is slower than the
		// program's): one more try, logged. A leak is never retried, nor a C torsocks run that
		// hung (it hangs again).
		t.Logf("%s %s under %s failed once (%s); trying again", p.name, tg, tool, c.detail)
		id = e.newID(tool)
		host = e.host(id, tg)
		args, stdin = p.cmd(e, id, host, tg)
		onionBefore = e.onionLeakQueries()
		r = e.runFor(t, limit, tool, nil, stdin, args...)
		c = e.outcome(id, tg, onionBefore, r, p.check(e, id, tg, r))
	}
	if why, ok := p.impossible[tg]; ok && c.status == "fails" {
		t.Logf("%s %s under %s: fails as it must: %s", p.name, tg, tool, c.detail)
		c = cell{status: "n/a", detail: why}
		e.table.set(secPrograms, row, tool, c)
		return
	}
	e.table.set(secPrograms, row, tool, c)
	t.Logf("%s %s under %s: %s", p.name, tg, tool, c)
	if tool != toolGo {
		if c.status == "fails" {
			t.Logf("stdout: %s\nstderr: %s", r.stdout, r.stderr)
		}
		return
	}
	if c.status != "works" {
		t.Errorf("%s %s: %s\nstdout: %s\nstderr: %s", p.name, tg, c, r.stdout, r.stderr)
	}
	// The request reached the destination, through an exit or the onion service.
	conns := e.rec.connsOf(id)
	if len(conns) == 0 {
		t.Errorf("%s %s: the destination saw no connection of run %s", p.name, tg, id)
	}
	for _, cn := range conns {
		want := "exit"
		if tg == byOnion {
			want = "onion service"
		}
		if cn.via != want {
			t.Errorf("%s %s: connection from %v to %s came via %s, want %s", p.name, tg, cn.remote, cn.listener, cn.via, want)
		}
	}
	if tg == byName && !e.exitResolved(host) {
		t.Errorf("%s %s: the exits' resolver never got %s: the name did not go through Tor", p.name, tg, host)
	}
}

// onionLeakQueries counts queries for the onion name at the program's
// nameservers.
func (e *env) onionLeakQueries() int {
	n := 0
	for _, s := range e.leakDNS {
		for _, q := range s.Queries() {
			if q.Name == strings.ToLower(e.net.OnionHost) {
				n++
			}
		}
	}
	return n
}

// exitResolved reports whether the exits' resolver got a query for name.
func (e *env) exitResolved(name string) bool {
	for _, q := range e.exitDNS.Queries() {
		if q.Name == name {
			return true
		}
	}
	return false
}

// outcome classifies a run: LEAKS if anything of it reached a destination or
// a nameserver without Tor, else works or fails.
func (e *env) outcome(id string, tg target, onionBefore int, r result, checkErr error) cell {
	leaks := e.leaksOf(id, tg, onionBefore)
	if len(leaks) > 0 {
		detail := leaks[0]
		if len(leaks) > 1 {
			detail += fmt.Sprintf(" (+%d more)", len(leaks)-1)
		}
		if r.code != 0 || checkErr != nil {
			detail += "; then fails"
		}
		return cell{status: "LEAKS", detail: detail}
	}
	if r.code == 0 && checkErr == nil {
		return cell{status: "works"}
	}
	detail := lastLine(r.stderr)
	if detail == "" && checkErr != nil {
		detail = checkErr.Error()
	}
	if detail == "" {
		detail = fmt.Sprintf("exit %d", r.code)
	}
	return cell{status: "fails", detail: detail}
}

// leaksOf describes what of run id reached a destination or a nameserver
// without Tor: DNS queries first.
func (e *env) leaksOf(id string, tg target, onionBefore int) []string {
	var leaks []string
	for _, s := range e.leakDNS {
		for _, q := range s.Queries() {
			if label, _, _ := strings.Cut(q.Name, "."); label == id {
				leaks = append(leaks, fmt.Sprintf("DNS query for %s sent to %v", "ID"+strings.TrimPrefix(q.Name, label), s.Addr()))
				break
			}
		}
	}
	if tg == byOnion {
		if n := e.onionLeakQueries() - onionBefore; n > 0 {
			leaks = append(leaks, fmt.Sprintf("%d DNS queries for the .onion name sent to the system's nameserver", n))
		}
	}
	for _, c := range e.rec.connsOf(id) {
		if !c.allowed {
			leaks = append(leaks, fmt.Sprintf("%s saw a direct connection from %v", c.listener, c.remote.Addr()))
		}
	}
	return leaks
}

// impossibleFor reports whether p cannot work for tg at all (e.g. Go's resolver and .onion).
func (p program) impossibleFor(tg target) bool {
	_, ok := p.impossible[tg]
	return ok
}
