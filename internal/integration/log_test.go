package integration

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// Logging and command-line tests: torsocks' log format, levels, TORSOCKS_LOG_TIME and
// TORSOCKS_LOG_FILE_PATH, one line per refusal; --help, --version, usage errors, on/off/show and
// --shell.

// emptyConf makes the configuration independent of /etc/tor/torsocks.conf.
func emptyConf(t *testing.T) string { return "TORSOCKS_CONF_FILE=" + confFile(t, "") }

// formatRE is the line format the brief pins, time prefix included.
var formatRE = regexp.MustCompile(`^\d+ (ERROR|WARNING|NOTICE|DEBUG) torsocks\[\d+\]: .+`)

func TestPolicyLogging(t *testing.T) {
	env(t)

	// Default level (3): a refusal is one warning line; level 1 and -q: nothing at all, the call
	// still refused; level 2 (errors only): no warning.
	t.Run("levels", func(t *testing.T) {
		for _, tc := range []struct {
			name      string
			env, opts []string
			want      int
		}{
			{name: "default", want: 1},
			{name: "TORSOCKS_LOG_LEVEL=3", env: []string{"TORSOCKS_LOG_LEVEL=3"}, want: 1},
			{name: "TORSOCKS_LOG_LEVEL=1", env: []string{"TORSOCKS_LOG_LEVEL=1"}},
			{name: "TORSOCKS_LOG_LEVEL=2", env: []string{"TORSOCKS_LOG_LEVEL=2"}},
			{name: "-q", opts: []string{"-q"}},
			{name: "-q beats TORSOCKS_LOG_LEVEL=5", env: []string{"TORSOCKS_LOG_LEVEL=5"}, opts: []string{"-q"}},
		} {
			r := probe(t, append([]string{emptyConf(t)}, tc.env...), tc.opts, "connect", "127.0.0.1", "9")
			wantLines(t, r, "connect=-1 errno=EPERM")
			if tc.want == 1 {
				oneRefusal(t, r, "127.0.0.1:9")
			} else if r.stderr != "" {
				t.Errorf("%s: want no log at all, got %q", tc.name, r.stderr)
			}
		}
	})

	// Level 5 (TORSOCKS_LOG_LEVEL=5, -d): debug lines, among them the proxied connection; every
	// line of stderr is in torsocks' format and names torsocks or the program.
	t.Run("debug", func(t *testing.T) {
		for _, tc := range []struct {
			env, opts []string
		}{
			{env: []string{"TORSOCKS_LOG_LEVEL=5"}},
			{opts: []string{"-d"}},
			{opts: []string{"--debug"}},
		} {
			r := probe(t, append([]string{emptyConf(t)}, tc.env...), tc.opts, "connect", "203.0.113.10", "80")
			wantLines(t, r, "connect=0 errno=0")
			pid, ppid := progPIDs(t, r.stdout)
			lines, other := parseLog(r.stderr)
			if len(other) != 0 {
				t.Errorf("%v%v: lines not in torsocks' format: %q", tc.env, tc.opts, other)
			}
			debug := levelLines(lines, "DEBUG")
			if len(debug) == 0 {
				t.Fatalf("%v%v: no DEBUG line: %q", tc.env, tc.opts, r.stderr)
			}
			proxied := false
			for _, l := range lines {
				if !formatRE.MatchString(l.raw) {
					t.Errorf("line does not match %v: %q", formatRE, l.raw)
				}
				if l.pid != pid && l.pid != ppid {
					t.Errorf("line names pid %d, neither the program %d nor torsocks %d: %q", l.pid, pid, ppid, l.raw)
				}
				if l.level == "DEBUG" && l.pid == pid && strings.Contains(l.msg, "203.0.113.10:80") {
					proxied = true
				}
			}
			if !proxied {
				t.Errorf("%v%v: no debug line on the program's connection to 203.0.113.10:80: %q", tc.env, tc.opts, r.stderr)
			}
		}
		noLeaks(t)
	})

	// TORSOCKS_LOG_TIME=0: the same lines without the epoch prefix.
	t.Run("no time", func(t *testing.T) {
		r := probe(t, []string{emptyConf(t), "TORSOCKS_LOG_TIME=0"}, nil, "connect", "127.0.0.1", "9")
		wantLines(t, r, "connect=-1 errno=EPERM")
		pid, _ := progPIDs(t, r.stdout)
		if !regexp.MustCompile(`^WARNING torsocks\[` + strconv.Itoa(pid) + `\]: connection to 127\.0\.0\.1:9 refused: .+\n$`).MatchString(r.stderr) {
			t.Errorf("want one line without time prefix, got %q", r.stderr)
		}
	})

	// TORSOCKS_LOG_FILE_PATH: lines go to the file (appended), none to stderr.
	t.Run("log file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "torsocks.log")
		e := []string{emptyConf(t), "TORSOCKS_LOG_FILE_PATH=" + path}
		var pids []int
		for range 2 {
			r := probe(t, e, nil, "connect", "127.0.0.1", "9")
			wantLines(t, r, "connect=-1 errno=EPERM")
			if r.stderr != "" {
				t.Errorf("log lines on stderr with a log file: %q", r.stderr)
			}
			pid, _ := progPIDs(t, r.stdout)
			pids = append(pids, pid)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		lines, other := parseLog(string(b))
		if len(other) != 0 || len(lines) != 2 {
			t.Fatalf("want two lines (one per run, appended), got %q", b)
		}
		for i, l := range lines {
			if !formatRE.MatchString(l.raw) || l.level != "WARNING" || l.pid != pids[i] || !strings.Contains(l.msg, "127.0.0.1:9 refused: ") {
				t.Errorf("log file line %d: %q (program pid %d)", i, l.raw, pids[i])
			}
		}
	})

	// Every refusal is exactly one warning line saying what was refused and why, naming the
	// program that did it.
	t.Run("one line per refusal", func(t *testing.T) {
		script := `
import os, socket, threading
print("pid=%d ppid=%d" % (os.getpid(), os.getppid()), flush=True)
def attempt(name, f):
    try:
        f()
        print(name, "ok", flush=True)
    except OSError as e:
        print(name, e.errno, flush=True)
def conn(fam, host, port):
    s = socket.socket(fam, socket.SOCK_STREAM)
    try: s.connect((host, port))
    finally: s.close()
def lis(fam, host):
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.bind((host, 0))
    try: s.listen()
    finally: s.close()
attempt("loopback4", lambda: conn(socket.AF_INET, "127.0.0.1", 9))
attempt("loopback6", lambda: conn(socket.AF_INET6, "::1", 9))
attempt("any4", lambda: conn(socket.AF_INET, "0.0.0.0", 80))
attempt("any6", lambda: conn(socket.AF_INET6, "::", 80))
attempt("multicast", lambda: conn(socket.AF_INET, "224.0.0.1", 80))
attempt("icmp", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP))
attempt("raw", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))
attempt("packet", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0))
attempt("listen", lambda: lis(socket.AF_INET, "0.0.0.0"))
th = threading.Thread(target=attempt, args=("thread", lambda: conn(socket.AF_INET, "127.0.0.3", 9)))
th.start()
th.join()
child = os.fork()
if child == 0:
    print("child", os.getpid(), flush=True)
    attempt("forked", lambda: conn(socket.AF_INET, "127.0.0.4", 9))
    os._exit(0)
os.waitpid(child, 0)
`
		r := torsocks(t, []string{emptyConf(t)}, "python3", "-c", script)
		if r.code != 0 {
			t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
		}
		pid, _ := progPIDs(t, r.stdout)
		want := []struct{ op, errno, what string }{
			{"loopback4", "1", "127.0.0.1:9"},
			{"loopback6", "1", "[::1]:9"},
			{"any4", "1", "0.0.0.0:80"},
			{"any6", "1", "[::]:80"},
			{"multicast", "101", "224.0.0.1:80"},
			{"icmp", "1", "ICMP"},
			{"raw", "1", "raw"},
			{"packet", "1", "packet"},
			{"listen", "1", "0.0.0.0:"},
			{"thread", "1", "127.0.0.3:9"}, // a thread's refusal names its process
			{"forked", "1", "127.0.0.4:9"}, // a child's names the child
		}
		m := regexp.MustCompile(`(?m)^child (\d+)$`).FindStringSubmatch(r.stdout)
		if m == nil {
			t.Fatalf("no child line: %q", r.stdout)
		}
		childPID, _ := strconv.Atoi(m[1])
		lines, other := parseLog(r.stderr)
		if len(other) != 0 {
			t.Errorf("lines not in torsocks' format: %q", other)
		}
		if len(lines) != len(want) {
			t.Fatalf("%d refusals, %d log lines (want one each):\n%s", len(want), len(lines), r.stderr)
		}
		for i, w := range want {
			wantLines(t, r, w.op+" "+w.errno)
			l := lines[i]
			wantPID := pid
			if w.op == "forked" {
				wantPID = childPID
			}
			if l.level != "WARNING" || l.pid != wantPID || !formatRE.MatchString(l.raw) {
				t.Errorf("%s: want a WARNING line naming pid %d: %q", w.op, wantPID, l.raw)
			}
			what, why, ok := strings.Cut(l.msg, " refused: ")
			if !ok || !strings.Contains(what, w.what) || len(strings.TrimSpace(why)) < 10 {
				t.Errorf("%s: the line should say what was refused (%q) and why: %q", w.op, w.what, l.msg)
			}
		}
	})
}

// runStdin runs torsocks with stdin, bounded in time.
func runStdin(t *testing.T, env []string, stdin string, args ...string) result {
	t.Helper()
	return runCmdStdin(t, env, stdin, append([]string{torsocksBin}, args...)...)
}

func TestPolicyCommandLine(t *testing.T) {
	env(t)

	t.Run("help", func(t *testing.T) {
		for _, a := range []string{"--help", "-h"} {
			r := torsocks(t, nil, a)
			if r.code != 0 || !strings.Contains(r.stdout, "Usage: torsocks") || r.stderr != "" {
				t.Errorf("%s: exit %d, stdout %q, stderr %q", a, r.code, r.stdout, r.stderr)
			}
			for _, opt := range []string{"--user", "--pass", "--address", "--port", "--isolate", "--ipv6", "--shell", "--debug", "--quiet", "--version"} {
				if !strings.Contains(r.stdout, opt) {
					t.Errorf("%s: usage lacks %s", a, opt)
				}
			}
		}
	})

	t.Run("version", func(t *testing.T) {
		r := torsocks(t, nil, "--version")
		if r.code != 0 || !regexp.MustCompile(`(?i)^torsocks \d+\.\d+\.\d+`).MatchString(r.stdout) || r.stderr != "" {
			t.Errorf("--version: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
	})

	t.Run("no arguments", func(t *testing.T) {
		r := torsocks(t, nil)
		if r.code != 1 || !strings.Contains(r.stdout+r.stderr, "Usage: torsocks") {
			t.Errorf("no arguments: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
	})

	t.Run("unknown option", func(t *testing.T) {
		for _, a := range []string{"--no-such-option", "-Z"} {
			r := torsocks(t, nil, a, "sh", "-c", "echo ran")
			if r.code != 1 || strings.Contains(r.stdout, "ran") || !strings.Contains(r.stderr, strings.TrimLeft(a, "-")) {
				t.Errorf("%s: exit %d, stdout %q, stderr %q", a, r.code, r.stdout, r.stderr)
			}
		}
	})

	t.Run("on off show", func(t *testing.T) {
		for _, w := range []string{"on", "off", "show"} {
			r := torsocks(t, nil, w)
			if r.code != 1 || r.stdout != "" || strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, "--shell") {
				t.Errorf("%s: want exit 1 and one line pointing to --shell; exit %d, stdout %q, stderr %q", w, r.code, r.stdout, r.stderr)
			}
		}
	})

	// Invalid settings are a start-up error: exit 1, one clear line, the program never runs.
	t.Run("invalid settings", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			env  []string
			want string
		}{
			{"log level", []string{"TORSOCKS_LOG_LEVEL=9"}, "TORSOCKS_LOG_LEVEL"},
			{"log time", []string{"TORSOCKS_LOG_TIME=maybe"}, "TORSOCKS_LOG_TIME"},
			{"tor port", []string{"TORSOCKS_TOR_PORT=70000"}, "TORSOCKS_TOR_PORT"},
			{"conf line", []string{"TORSOCKS_CONF_FILE=" + confFile(t, "TorPort 9050\nAllowInbound perhaps\n")}, "torsocks.conf:2:"},
			{"user without password", []string{emptyConf(t), "TORSOCKS_USERNAME=alice"}, "password"},
		} {
			r := torsocks(t, tc.env, "sh", "-c", "echo ran")
			if r.code != 1 || strings.Contains(r.stdout, "ran") || !strings.Contains(r.stderr, tc.want) || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
				t.Errorf("%s: want exit 1 and one line naming %q; exit %d, stdout %q, stderr %q", tc.name, tc.want, r.code, r.stdout, r.stderr)
			}
		}
	})

	// --shell runs $SHELL under torsocks: its commands are torified, its exit status is ours.
	t.Run("shell", func(t *testing.T) {
		n := len(socks.Requests())
		r := runStdin(t, []string{"SHELL=/bin/sh"}, "echo hi; curl -sS --max-time 20 http://203.0.113.10/; exit 4\n", "--shell")
		if r.code != 4 || !strings.HasPrefix(r.stdout, "hi\n") || !strings.Contains(r.stdout, "canary") {
			t.Errorf("--shell: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
		wantConnectRequests(t, newRequests(socks, n), dest4)
		// A loopback connect from the shell is refused: it runs under the supervisor.
		r = runStdin(t, []string{"SHELL=/bin/sh"}, "exec "+buildC(t, "pol_probe")+" connect 127.0.0.1 9\n", "--shell")
		wantLines(t, r, "connect=-1 errno=EPERM")
		noLeaks(t)
	})
}
