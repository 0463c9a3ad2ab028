package integration

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// A program under torsocks must not take over its supervisor, the UDP sandbox's socket factory or
// a process of the same user started outside torsocks (ptrace, /proc/PID/mem, /proc/PID/fd,
// process_vm_readv, pidfd_getfd): any of them would connect anywhere on its behalf. It runs as
// root and as nobody, on this kernel and on emulated older ones: Landlock without network rules
// (Linux 5.19-6.6, Debian 12's 6.1) and no Landlock at all. ptrace inside the program's own tree
// keeps working (strace, gdb); pidfd_getfd is refused by the filter everywhere.
//
// On the previous code, Landlock without network rules left the supervisor and outside processes
// open to a root program (ptrace=open ...), and no Landlock left them open to everyone.
func TestSupervisorNotAttachable(t *testing.T) {
	env(t)
	attach := buildC(t, "hs_attach")
	older := buildC(t, "kernel_older")
	asNobody := []string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"}
	for _, user := range []string{"root", "nobody"} {
		var prefix []string
		if user == "nobody" {
			prefix = asNobody
		}
		outside := startOutside(t, prefix)
		for _, kernel := range []string{"this", "landlock3", "nolandlock"} {
			t.Run(user+"/"+kernel, func(t *testing.T) {
				args := append([]string{}, prefix...)
				if kernel != "this" {
					args = append(args, older, kernel)
				}
				args = append(args, torsocksBin, "-d", attach, "parent", "siblings", fmt.Sprint(outside), "tree")
				r := runCmd(t, nil, args...)
				if r.code != 0 {
					t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
				}
				wantDomain := map[string]string{"landlock3": "ptrace-scope-only", "nolandlock": "none"}[kernel]
				if wantDomain != "" && !strings.Contains(r.stderr, "Landlock domain: "+wantDomain) {
					t.Errorf("want Landlock domain %q in the debug log:\n%s", wantDomain, r.stderr)
				}
				lines := map[string]string{}
				for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
					if f := strings.SplitN(l, " ", 2); len(f) == 2 {
						lines[f[0]] = f[1]
					}
				}
				const denied = "ptrace=denied mem=denied fd=denied vm=denied getfd=denied"
				const inTree = "ptrace=open mem=open fd=open vm=open getfd=denied"
				// Without Landlock nothing stops a process from attaching to one of its own user:
				// the supervisor is protected by PR_SET_DUMPABLE 0 (and, for root, by the dropped
				// CAP_SYS_PTRACE); nobody's outside processes and the factory (in a user namespace
				// nobody owns) are not. The README says so, and the factory is confined so that it
				// cannot connect anywhere (TestSocketFactoryConfined).
				gap := user == "nobody" && kernel == "nolandlock"
				check := func(who, want string) {
					if got := lines[who]; got != want {
						t.Errorf("%s: got %q, want %q\nstdout:\n%s", who, got, want, r.stdout)
					}
				}
				check("parent", denied)
				check("tree", inTree)
				if lines["siblings"] != "1" {
					t.Errorf("want the socket factory as the one sibling, got %q", lines["siblings"])
				}
				if gap {
					t.Logf("no Landlock, as nobody: outside %q, factory %q (documented)", lines[fmt.Sprint(outside)], lines["sibling"])
					return
				}
				check(fmt.Sprint(outside), denied)
				check("sibling", denied)
			})
		}
	}
	// ptrace inside the tree: strace follows a program under torsocks.
	if _, err := exec.LookPath("strace"); err == nil {
		r := torsocks(t, nil, "strace", "-f", "-e", "trace=none", "-o", "/dev/null", "sh", "-c", "true")
		if r.code != 0 {
			t.Errorf("strace under torsocks: exit %d\n%s", r.code, r.stderr)
		}
	} else if os.Getenv("CI") == "true" {
		t.Error("strace is not installed")
	}
}

// startOutside starts a process of the user prefix runs as (root for none), outside torsocks, and
// returns its pid once it runs the target program under that user.
func startOutside(t *testing.T, prefix []string) int {
	t.Helper()
	args := append(append([]string{}, prefix...), "sleep", "600")
	cmd := exec.Command(args[0], args[1:]...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	wantUID := "0"
	if len(prefix) > 0 {
		wantUID = "65534"
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", cmd.Process.Pid))
		status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
		if strings.TrimSpace(string(comm)) == "sleep" && strings.Contains(string(status), "\nUid:\t"+wantUID+"\t") {
			return cmd.Process.Pid
		}
		if time.Now().After(deadline) {
			t.Fatalf("outside process %v did not start: %s", args, status)
		}
	}
}

// The UDP sandbox's socket factory carries a seccomp filter of its own (filter.BuildFactory): a
// program that takes it over (possible without Landlock, see above) cannot make it connect. The
// program makes a UDP socket first: the factory is started on first use.
func TestSocketFactoryConfined(t *testing.T) {
	env(t)
	r := torsocks(t, nil, "sh", "-c", `python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)'; for p in $(pgrep -P $PPID); do [ $p = $$ ] || grep -E '^(Seccomp|NoNewPrivs):' /proc/$p/status; done`)
	if r.code != 0 || !strings.Contains(r.stdout, "Seccomp:\t2") || !strings.Contains(r.stdout, "NoNewPrivs:\t1") {
		t.Fatalf("the socket factory is not confined: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
}

// The program is started from one locked OS thread of the supervisor that took the program's
// filter, Landlock domain and credentials (launch): that thread must be gone by the time the
// program runs, and no other thread of the supervisor may carry the filter (it would wait on its
// own notifications) or the program's restrictions.
func TestSupervisorThreadsUnfiltered(t *testing.T) {
	env(t)
	// A supervisor thread can exit between the glob and the read (the Go
	// runtime retires idle threads): such a thread is skipped, not reported
	// as a blank line.
	r := torsocks(t, nil, "sh", "-c", `for t in /proc/$PPID/task/*; do s=$(cat $t/status 2>/dev/null) || continue; [ -n "$s" ] || continue; echo "$(echo "$s" | grep -E '^Seccomp:' | tr -d '\t') $(echo "$s" | grep NoNewPrivs | tr -d '\t')"; done`)
	if r.code != 0 || strings.TrimSpace(r.stdout) == "" {
		t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		if l != "Seccomp:0 NoNewPrivs:0" {
			t.Errorf("a supervisor thread carries the program's restrictions: %q\n%s", l, r.stdout)
		}
	}
}
