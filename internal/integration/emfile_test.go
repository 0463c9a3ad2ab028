package integration

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// Descriptor exhaustion: with RLIMIT_NOFILE at 48 for torsocks and the program, three processes of
// the program try to hold 40 DNS-over-TCP connections each, more than the
// supervisor's DNS responder can accept (with SealedNetwork 1 the supervisor holds several
// descriptors per connection and runs out first: socket() and connect() fail then). Accept then fails with EMFILE; the responder must back
// off and keep serving, so once the program has let them go a DNS-over-TCP query is answered.
func TestDNSTCPSurvivesEMFILE(t *testing.T) {
	env(t)
	startDNSFixtures(t)
	storm := `
import errno, os, socket
ready_r, ready_w = os.pipe()
release_r, release_w = os.pipe()
kids = []
for k in range(3):
    pid = os.fork()
    if pid == 0:
        os.close(release_w)
        held, failed, bad = [], 0, set()
        for i in range(40):
            try:
                s = socket.socket()  # with SealedNetwork 1 the supervisor makes it: its limit counts
            except OSError as e:
                failed += 1
                if e.errno not in (errno.EMFILE, errno.ENOBUFS):
                    bad.add(e.errno)
                continue
            s.settimeout(10)
            try:
                s.connect(("192.0.2.53", 53))
                held.append(s)
            except OSError:
                failed += 1
                s.close()
        os.write(ready_w, b"%d %d bad=%s\n" % (len(held), failed, ",".join(map(str, sorted(bad))).encode()))
        os.read(release_r, 1)  # EOF when the parent lets go
        os._exit(0)
    kids.append(pid)
os.close(release_r)
got = b""
while got.count(b"\n") < 3:
    got += os.read(ready_r, 100)
print("storm held/failed", got.decode().split(), flush=True)
os.close(release_w)
for pid in kids:
    os.waitpid(pid, 0)
`
	script := `python3 -c "$1" && dig +short +tcp +time=3 +tries=3 @192.0.2.53 web.test`
	mounts := `mount --bind "$1" /etc/resolv.conf && mount --bind "$2" /etc/hosts && shift 2 && exec "$@"`
	r := runCmd(t, []string{"TORSOCKS_TOR_PORT=" + nameSocksPort}, "unshare", "-m", "sh", "-c", mounts, "sh", resolvV4, hostsFile,
		"prlimit", "--nofile=48:48", torsocksBin, "sh", "-c", script, "sh", storm)
	if r.code == 0 && !strings.Contains(r.stdout, "storm held") {
		t.Fatalf("the storm did not run:\nstdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
	}
	t.Logf("%s", strings.TrimSpace(r.stdout))
	// A socket() the supervisor could not make for want of descriptors fails ENOBUFS with a line
	// (or EMFILE, the program's own limit), never EPERM or another errno.
	if m := regexp.MustCompile(`bad=[0-9]`).FindString(r.stdout); m != "" {
		t.Errorf("socket() failed with another errno than EMFILE or ENOBUFS (errno numbers after bad=):\n%s\n%s", r.stdout, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	last := lines[len(lines)-1]
	if r.code != 0 || strings.HasPrefix(last, "storm") || strings.Contains(last, "timed out") {
		t.Fatalf("DNS over TCP not answered after the descriptor storm: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	addrIn(t, last, mapV4Range)
}

// TestDescriptorLimitRaised: the supervisor holds two descriptors per relayed connection, so it
// runs with its soft RLIMIT_NOFILE raised to the hard limit (the Go runtime does it at start);
// the program gets its own soft limit back (select() users expect at most 1024).
func TestDescriptorLimitRaised(t *testing.T) {
	env(t)
	script := `import os, resource
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
sup = [l for l in open("/proc/%d/limits" % os.getppid()) if l.startswith("Max open files")][0].split()
print("program", soft, hard, "supervisor", sup[3], sup[4])`
	r := runCmd(t, nil, "prlimit", "--nofile=1024:8192", torsocksBin, "python3", "-c", script)
	if r.code != 0 {
		t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	f := strings.Fields(r.stdout)
	if len(f) != 6 || f[0] != "program" || f[3] != "supervisor" {
		t.Fatalf("output %q\n%s", r.stdout, r.stderr)
	}
	if f[1] != "1024" || f[2] != "8192" {
		t.Errorf("the program's limit is %s:%s, want its own 1024:8192", f[1], f[2])
	}
	if soft, _ := strconv.Atoi(f[4]); soft < 8191 || f[5] != "8192" {
		t.Errorf("the supervisor's limit is %s:%s, want the soft limit raised to the hard limit 8192", f[4], f[5])
	}
}
