package supervisor

import (
	"runtime"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/gotorsocks/torsocks/internal/seccomp"
)

// TestPidfdCacheBound: at most max pidfds are kept, the others are closed, and a pidfd taken is
// no longer kept.
func TestPidfdCacheBound(t *testing.T) {
	pc := pidfdCache{max: 4}
	var fds []int
	for range 10 { // all made first: a number closed is not given again before the check
		fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
		if err != nil {
			t.Fatal(err)
		}
		fds = append(fds, fd)
	}
	for i, fd := range fds {
		pc.give(i+1, fd)
	}
	if len(pc.m) != 4 {
		t.Fatalf("%d kept, want 4", len(pc.m))
	}
	open := 0
	for _, fd := range fds {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil {
			open++
		}
	}
	if open != 4 {
		t.Fatalf("%d of the descriptors open, want the 4 kept", open)
	}
	for tid, fd := range pc.m {
		if got := pc.take(tid); got != fd || pc.take(tid) != -1 {
			t.Fatalf("take(%d) = %d, then again: want %d, then -1", tid, got, fd)
		}
		unix.Close(fd)
	}
	none := pidfdCache{}
	fd, _ := unix.Eventfd(0, unix.EFD_CLOEXEC)
	none.give(1, fd)
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil || none.take(1) != -1 {
		t.Fatal("a cache of size 0 kept a descriptor")
	}
}

// TestPidfdCacheStale: a kept pidfd whose thread is gone (the id now another thread's) fails
// pidfd_getfd with ESRCH, and the call opens a fresh one for the thread that has the id, copies
// through it, and keeps that one instead.
func TestPidfdCacheStale(t *testing.T) {
	// A pidfd of a thread that exits: a goroutine locked to its thread returns without
	// unlocking, which ends the thread.
	// (Not on the main thread, which the runtime keeps instead of ending it.)
	stale := -2
	for try := 0; stale == -2; try++ {
		if try == 100 {
			t.Skip("every goroutine ran on the main thread")
		}
		dead := make(chan int)
		go func() {
			runtime.LockOSThread()
			if unix.Gettid() == unix.Getpid() {
				runtime.UnlockOSThread()
				dead <- -2 // try again on another thread
				return
			}
			fd, tgid, err := seccomp.OpenThread(unix.Gettid())
			if err != nil || tgid != 0 {
				unix.Close(fd)
				fd = -1 // no PIDFD_THREAD on this kernel
			}
			dead <- fd
		}()
		stale = <-dead
	}
	if stale < 0 {
		t.Skip("pidfd_open(PIDFD_THREAD) not supported")
	}
	// Until the thread is released (POLLHUP: no task any more). The bound only keeps a
	// broken kernel or runtime from hanging the test.
	for {
		fds := []unix.PollFd{{Fd: int32(stale), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 60000)
		if err != nil && err != unix.EINTR {
			t.Fatal(err)
		}
		if err == nil && n == 0 {
			t.Fatal("the thread did not exit")
		}
		if fds[0].Revents&unix.POLLHUP != 0 {
			break
		}
		runtime.Gosched()
	}
	if _, err := seccomp.GetFD(stale, 0); !isStale(err) {
		t.Fatalf("pidfd_getfd through the pidfd of a thread gone: %v, want ESRCH", err)
	}

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid := unix.Gettid()
	s := &Supervisor{tr: procTracee{}}
	s.pidfds.max = 4
	s.pidfds.give(tid, stale) // as if tid's previous thread had left it
	var pipe [2]int
	if err := unix.Pipe2(pipe[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pipe[0])
	defer unix.Close(pipe[1])
	c := &call{s: s, tid: tid, pidfd: -1}
	cp, err := c.getfdLater(pipe[0])
	if err != nil {
		t.Fatalf("getfdLater with a stale cached pidfd: %v", err)
	}
	defer unix.Close(cp)
	var a, b unix.Stat_t
	unix.Fstat(pipe[0], &a)
	unix.Fstat(cp, &b)
	if a.Ino != b.Ino || a.Dev != b.Dev {
		t.Fatal("the copy is not the descriptor asked for")
	}
	if !c.keep || c.cached {
		t.Fatalf("keep %v cached %v", c.keep, c.cached)
	}
	fresh := c.pidfd
	c.close()
	if got := s.pidfds.take(tid); got != fresh {
		t.Fatalf("kept %d after the call, want its fresh pidfd %d", got, fresh)
	} else {
		// The next call of the thread copies through the kept one, without opening another.
		c2 := &call{s: s, tid: tid, pidfd: -1}
		s.pidfds.give(tid, got)
		cp2, err := c2.getfdLater(pipe[1])
		if err != nil || c2.pidfd != got {
			t.Fatalf("second call: %v, pidfd %d, want the kept %d", err, c2.pidfd, got)
		}
		unix.Close(cp2)
		c2.close()
		unix.Close(s.pidfds.take(tid))
	}
}
