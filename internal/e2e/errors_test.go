package e2e

import (
	"crypto/ed25519"
	"crypto/sha3"
	"encoding/base32"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/gotorsocks/torsocks/internal/netnstest"
)

// pyConnect resolves HOST (IPv4) and makes one blocking connect to PORT;
// it prints "connected", the errno's name, or "resolve failed: ...".
const pyConnect = `import errno, socket, sys
host, port = sys.argv[1], int(sys.argv[2])
try:
    ai = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)[0]
except socket.gaierror as e:
    print("resolve failed:", e)
    sys.exit(3)
s = socket.socket(ai[0], ai[1])
try:
    s.connect(ai[4])
    print("connected")
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))
`

// errorCase is a destination Tor cannot connect to.
type errorCase struct {
	row       string
	host      func(e *env, id string) string
	port      int
	needsDNS  bool   // under this torsocks
	wantErrno string // under this torsocks
	wantMsg   string // in this torsocks' stderr line (besides the destination)
}

var errorCases = []errorCase{
	{
		row:       fmt.Sprintf("a port every exit's policy rejects (%d)", rejectPort),
		host:      func(e *env, id string) string { return testHost.String() },
		port:      rejectPort,
		wantErrno: "ECONNREFUSED",
	},
	{
		row:       fmt.Sprintf("a closed port on the test host (%d)", closedPort),
		host:      func(e *env, id string) string { return testHost.String() },
		port:      closedPort,
		wantErrno: "ECONNREFUSED",
	},
	{
		row:       "an onion address that does not exist",
		host:      func(e *env, id string) string { return randomOnion() },
		port:      80,
		needsDNS:  true,
		wantErrno: "ECONNABORTED",
		wantMsg:   "onion service descriptor can not be found",
	},
	{
		row:       "a name the exits' resolver does not know (NXDOMAIN)",
		host:      func(e *env, id string) string { return id + ".unknown.test" },
		port:      80,
		needsDNS:  true,
		wantErrno: "EHOSTUNREACH",
	},
}

func testErrors(t *testing.T, e *env) {
	var names []string
	var fs []func(*testing.T)
	for _, ec := range errorCases {
		e.table.declare(secErrors, ec.row)
		for _, tool := range []string{toolGo, toolC} {
			names = append(names, tool+"/"+ec.row)
			fs = append(fs, func(t *testing.T) { e.errorRun(t, ec, tool) })
		}
	}
	concurrently(t, names, fs)
}

// torsocksLine matches a log line of either torsocks; group 1 is the message.
var torsocksLine = regexp.MustCompile(`^(?:\d+ )?\w+ torsocks\[\d+\]: (.*?)(?: \(in \S+\(\) at \S+\))?$`)

// torsocksMessages returns the messages of the torsocks log lines in stderr.
func torsocksMessages(stderr string) []string {
	var ms []string
	for _, l := range strings.Split(stderr, "\n") {
		if m := torsocksLine.FindStringSubmatch(strings.TrimSpace(l)); m != nil {
			ms = append(ms, m[1])
		}
	}
	return ms
}

func (e *env) errorRun(t *testing.T, ec errorCase, tool string) {
	if tool == toolC && e.cVersion == "" {
		e.table.set(secErrors, ec.row, tool, cell{status: "not installed"})
		netnstest.Skip(t, "the C torsocks is not installed (scripts/install-deps.sh)")
	}
	if tool == toolGo && ec.needsDNS && !e.dnsWorks {
		e.table.set(secErrors, ec.row, tool, cell{status: "skipped", detail: "needs DNS (issue 4)"})
		netnstest.Skip(t, "needs DNS (issue 4): %s", e.dnsDetail)
	}
	id := e.newID(tool)
	host := ec.host(e, id)
	r := e.run(t, tool, nil, "", "/usr/bin/python3", "-c", pyConnect, host, fmt.Sprint(ec.port))
	got := strings.TrimSpace(r.stdout)
	if got == "" {
		got = fmt.Sprintf("exit %d: %s", r.code, lastLine(r.stderr))
	}
	msgs := torsocksMessages(r.stderr)
	c := cell{status: got}
	if len(msgs) > 0 {
		c.detail = fmt.Sprintf("%q", strings.Join(msgs, " / "))
	} else {
		c.detail = "nothing on stderr"
	}
	e.table.set(secErrors, ec.row, tool, c)
	t.Logf("%s under %s: %s (in %v)", ec.row, tool, c, r.dur.Round(1e6))
	if tool != toolGo {
		return
	}
	if got != ec.wantErrno {
		t.Errorf("%s: connect gave %q, want %s\nstderr: %s", ec.row, got, ec.wantErrno, r.stderr)
	}
	// The line names the destination (the name, not only a stand-in address)
	// and, for onion errors, Tor's error in words.
	found := false
	for _, m := range msgs {
		if strings.Contains(m, host) && strings.Contains(m, fmt.Sprint(ec.port)) && strings.Contains(m, ec.wantMsg) {
			found = true
		}
	}
	if !found {
		t.Errorf("%s: no torsocks line on stderr naming %s, port %d and %q:\n%s", ec.row, host, ec.port, ec.wantMsg, r.stderr)
	}
	for c, lid := range e.rec.leaks() {
		if lid == id {
			t.Errorf("LEAK: %v", c)
		}
	}
}

// randomOnion returns a well-formed v3 onion address nobody serves.
func randomOnion() string {
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		panic(err)
	}
	sum := sha3.Sum256(append(append([]byte(".onion checksum"), pub...), 3))
	raw := append(append([]byte(pub), sum[:2]...), 3)
	return strings.ToLower(base32.StdEncoding.EncodeToString(raw)) + ".onion"
}
