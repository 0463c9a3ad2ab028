package torstart

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The idle timer, on a clock of the test's: no exit while a torsocks holds the users lock, nor
// before the idle time, nor while a torsocks holds the start lock; then tor is stopped and its
// files removed. Each tick (its time is the keeper's clock) is taken by the keeper only once it has finished
// the previous one.
func TestKeeperIdle(t *testing.T) {
	p := testPaths(t)
	if err := p.Prepare(os.Getuid()); err != nil {
		t.Fatal(err)
	}
	// "tor": a process that the keeper must stop (its control port does not answer: SIGTERM).
	tor := exec.Command("sleep", "600")
	if err := tor.Start(); err != nil {
		t.Fatal(err)
	}
	defer tor.Process.Kill()
	exited := make(chan struct{})
	go func() { tor.Wait(); close(exited) }()
	for _, f := range []string{p.Socks(), p.Control(), p.PidFile()} {
		os.WriteFile(f, nil, 0o600)
	}
	os.WriteFile(p.KeeperPid(), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600)

	const idle = time.Minute
	ticks := make(chan time.Time)
	clock := time.Unix(1e9, 0)
	k := &keeper{p: p, idle: idle, logf: t.Logf, torPid: tor.Process.Pid, exited: exited, ticks: ticks}
	done := make(chan int)
	go func() { done <- k.loop(nil) }()
	// tick advances the clock and has the keeper look; it returns once the keeper is done with
	// that look (it takes a second tick of the same time only then).
	tick := func(advance time.Duration, what string) {
		t.Helper()
		clock = clock.Add(advance)
		for range 2 {
			select {
			case ticks <- clock:
			case <-done:
				t.Fatalf("the keeper exited %s", what)
			}
		}
	}

	users, err := flock(context.Background(), p.Users(), unix.LOCK_SH)
	if err != nil {
		t.Fatal(err)
	}
	tick(0, "at once")
	tick(10*idle, "while a torsocks held the users lock")
	users.Close()
	tick(0, "when the last torsocks exited") // idle from now
	tick(idle-time.Second, "before the idle time")
	start, err := flock(context.Background(), p.Lock(), unix.LOCK_EX)
	if err != nil {
		t.Fatal(err)
	}
	tick(2*time.Second, "while a torsocks held the start lock")
	start.Close()
	users, err = flock(context.Background(), p.Users(), unix.LOCK_SH)
	if err != nil {
		t.Fatal(err)
	}
	tick(0, "when a torsocks took the tor again") // the idle time starts over
	users.Close()
	tick(0, "once the torsocks was gone")
	tick(idle-time.Second, "before the idle time (again)")
	clock = clock.Add(2 * time.Second)
	select {
	case ticks <- clock:
		if code := <-done; code != 0 {
			t.Errorf("keeper exit %d", code)
		}
	case code := <-done:
		t.Errorf("the keeper exited without a tick, status %d", code)
	}
	select {
	case <-exited:
	default:
		t.Error("the keeper exited without stopping tor")
	}
	for _, f := range []string{p.Socks(), p.Control(), p.PidFile(), p.KeeperPid()} {
		if _, err := os.Stat(f); err == nil {
			t.Errorf("%s left behind", f)
		}
	}
}

// The keeper exits when tor does, and then clears tor's files only if they are still its own.
func TestKeeperTorExits(t *testing.T) {
	for _, own := range []bool{true, false} {
		p := testPaths(t)
		if err := p.Prepare(os.Getuid()); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{p.Socks(), p.Control(), p.PidFile()} {
			os.WriteFile(f, nil, 0o600)
		}
		pid := os.Getpid()
		if !own {
			pid = 1 // a new keeper's, started since
		}
		os.WriteFile(p.KeeperPid(), []byte(strconv.Itoa(pid)+"\n"), 0o600)
		exited := make(chan struct{})
		close(exited)
		k := &keeper{p: p, idle: time.Hour, logf: t.Logf, exited: exited, ticks: make(chan time.Time)}
		if code := k.loop(nil); code != 0 {
			t.Errorf("exit %d", code)
		}
		_, err := os.Stat(p.Control())
		if own && err == nil || !own && err != nil {
			t.Errorf("own %v: control socket stat: %v", own, err)
		}
	}
}

// Probe (--doctor) sees no tor, then a running bootstrapped one with IsolateSOCKSAuth.
func TestProbe(t *testing.T) {
	p := testPaths(t)
	o, _ := fakeOptions(t, p, "")
	stop(t, p)
	if err := p.Prepare(os.Getuid()); err != nil {
		t.Fatal(err)
	}
	if st, err := Probe(context.Background(), p); err != nil || st.Running || st.Stale {
		t.Errorf("before: %+v %v", st, err)
	}
	tor, err := Ensure(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	tor.Release()
	st, err := Probe(context.Background(), p)
	if err != nil || !st.Running || st.Pid != tor.Pid || st.Bootstrap.Percent != 100 || !st.IsolateSOCKSAuth {
		t.Errorf("running: %+v %v", st, err)
	}
	if isolatesAuth([]string{"SocksPort=9050 NoIsolateSOCKSAuth"}) || !isolatesAuth([]string{"SocksPort=9050"}) {
		t.Error("isolatesAuth")
	}
}
