package supervisor

import (
	"errors"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/gotorsocks/torsocks/internal/netnstest"
)

// credLines are the credential lines of a /proc status file, as they read.
func credLines(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		for _, k := range []string{"Uid:", "Gid:", "Groups:", "CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"} {
			if strings.HasPrefix(l, k) {
				out = append(out, l)
			}
		}
	}
	return strings.Join(out, "\n")
}

// statusCreds reads the credentials in a /proc status file (no t.Fatal: deputies call it).
func statusCreds(path string) (*creds, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseStatus(b)
}

// The deputy's credentials are its thread's alone: while it holds nobody's, every other thread
// of the process is still root; and its thread gets back exactly what it had, effective
// capabilities included.
func TestDeputyThreadLocal(t *testing.T) {
	if os.Geteuid() != 0 {
		netnstest.Skip(t, "needs root")
	}
	own := readOwnCreds()
	if own.err != nil {
		t.Fatal(own.err)
	}
	targets := []*creds{
		{ruid: 65534, euid: 65534, fsuid: 65534, rgid: 65534, egid: 65534, fsgid: 65534},
		{ruid: 1002, euid: 65534, fsuid: 1000, rgid: 1003, egid: 65534, fsgid: 1001, groups: []uint32{4242, 4243}},
		{ruid: 0, euid: 65534, fsuid: 65534, rgid: 0, egid: 65534, fsgid: 65534, capEff: 1 << unix.CAP_NET_BIND_SERVICE},
		{capEff: 1 << unix.CAP_CHOWN}, // root without CAP_DAC_OVERRIDE
	}
	for _, want := range targets {
		var inside *creds
		var others []string
		err := asCaller(want, func() error {
			var err error
			if inside, err = statusCreds("/proc/thread-self/status"); err != nil {
				return err
			}
			self := strconv.Itoa(unix.Gettid())
			tasks, err := os.ReadDir("/proc/self/task")
			if err != nil {
				return err
			}
			for _, task := range tasks {
				if task.Name() == self {
					continue
				}
				cr, err := statusCreds("/proc/self/task/" + task.Name() + "/status")
				if errors.Is(err, os.ErrNotExist) {
					continue // a thread that exited
				}
				if err != nil {
					return err
				}
				if !cr.equal(own.cr) {
					others = append(others, task.Name()+": "+cr.String())
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("as %v: %v", want, err)
		}
		if !inside.equal(want) {
			t.Errorf("deputy thread has %v, want %v", inside, want)
		}
		if len(others) > 0 {
			t.Errorf("other threads changed while the deputy held %v: %v", want, others)
		}
	}

	// become and restore on this thread: it reads back as before, capability sets included.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	before := credLines(t, "/proc/thread-self/status")
	for _, want := range targets {
		saved, err := threadCreds()
		if err != nil {
			t.Fatal(err)
		}
		if err := saved.become(want); err != nil {
			t.Fatalf("become %v: %v", want, err)
		}
		if mid := credLines(t, "/proc/thread-self/status"); mid == before {
			t.Fatalf("become %v changed nothing", want)
		}
		if err := saved.restore(); err != nil {
			t.Fatalf("restore after %v: %v", want, err)
		}
		if after := credLines(t, "/proc/thread-self/status"); after != before {
			t.Fatalf("after %v the thread has\n%s\nwant\n%s", want, after, before)
		}
	}
}

// Credentials the supervisor cannot take (a capability it does not hold) refuse the call with
// EACCES, and the thread is put back.
func TestDeputyCannotTake(t *testing.T) {
	if os.Geteuid() != 0 {
		netnstest.Skip(t, "needs root")
	}
	ran := false
	err := asCaller(&creds{ruid: 65534, euid: 65534, fsuid: 65534, rgid: 65534, egid: 65534, fsgid: 65534, capEff: 1 << 63}, func() error {
		ran = true
		return nil
	})
	var ce *callError
	if !errors.As(err, &ce) || ce.errno != unix.EACCES || ce.msg == "" || ran {
		t.Fatalf("got %v (ran %v), want deputyRefused's EACCES before f runs", err, ran)
	}
}

func TestParseStatus(t *testing.T) {
	st := "Name:\tx\nUid:\t1\t2\t3\t4\nGid:\t5\t6\t7\t8\nGroups:\t9 3 9 \nCapEff:\t00000000a80425fb\n"
	cr, err := parseStatus([]byte(st))
	if err != nil {
		t.Fatal(err)
	}
	want := &creds{ruid: 1, euid: 2, fsuid: 4, rgid: 5, egid: 6, fsgid: 8, groups: []uint32{3, 9}, capEff: 0xa80425fb}
	if !cr.equal(want) {
		t.Fatalf("got %v, want %v", cr, want)
	}
	if _, err := parseStatus([]byte("Uid:\t1\t2\t3\t4\n")); err == nil {
		t.Fatal("incomplete status parsed")
	}
	cr, err = parseStatus([]byte("Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t\nCapEff:\t0\n"))
	if err != nil || len(cr.groups) != 0 {
		t.Fatalf("no groups: %v %v", cr, err)
	}
}
