package supervisor

import (
	"errors"
	"sync"

	"golang.org/x/sys/unix"
)

// pidfdCache keeps the thread pidfds (PIDFD_THREAD) of the threads that made calls, so that the
// next call of the same thread takes its descriptor copy without a pidfd_open and a close.
//
// Why a cached pidfd is as good as a fresh one:
//   - A thread pidfd names one thread (its struct pid) for the pidfd's whole life, never another
//     one: a thread id reused by a later thread gets a new struct pid. Once its thread is gone
//     (released), pidfd_getfd on it fails with ESRCH (pidfd_get_task).
//   - The calling thread X had the call's id T from the notification on, and has it until the
//     validity check (ID_VALID: the notification is pending only while X is in the call). A pidfd
//     of T's that pidfd_getfd succeeds on names a thread P that had id T when the pidfd was opened
//     and still holds it (an id is not given again while its thread exists, zombie or not). The
//     first use of a cached pidfd is that pidfd_getfd (getfd, getfdLater, in the order they have
//     with the check), so P held T over an interval that overlaps X's: P is X. A pidfd that names
//     a thread gone fails ESRCH there and is replaced by a fresh one, checked as any fresh one
//     (c.unchecked); nothing else (the waits that poll it for the thread's exit) uses a cached
//     pidfd before that copy succeeded.
//   - An exec by another thread of the process hands the leader's id, with its struct pid, to
//     the exec'ing thread (de_thread): the pidfd then names that thread, which is the one that
//     has the id and can make a call with it.
//   - Only pidfds of the real kernel opened with PIDFD_THREAD are kept: the fallback of older
//     kernels names the process, which a reused thread id in another process would get wrong.
//
// Ownership: a call takes its thread's pidfd out of the cache (take) and gives it back when it
// is done (give, from call.close): a pidfd is never in the cache and in a call at once, so
// an eviction cannot close one in use. A thread makes one call at a time.
//
// Bound: at most max pidfds (a 32nd of the descriptor limit, at most 64); when full, giving one
// back closes another (any). The pidfds of threads that exited are dead weight until then.
type pidfdCache struct {
	mu  sync.Mutex  // guards m
	m   map[int]int // tid -> pidfd, not in use
	max int         // 0: nothing is kept
}

// pidfdCacheSize is the bound for the descriptor limit (the Go runtime has raised the soft limit
// to the hard one at start).
func pidfdCacheSize() int {
	var rl unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) != nil {
		return 0
	}
	return int(min(rl.Cur/32, 64))
}

// take removes and returns tid's pidfd, -1 if none is kept.
func (pc *pidfdCache) take(tid int) int {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	fd, ok := pc.m[tid]
	if !ok {
		return -1
	}
	delete(pc.m, tid)
	return fd
}

// give keeps fd as tid's pidfd, closing another if the cache is full, or closes fd if nothing is
// kept.
func (pc *pidfdCache) give(tid, fd int) {
	evict := -1
	pc.mu.Lock()
	switch old, ok := pc.m[tid]; {
	case pc.max == 0:
		evict, fd = fd, -1
	case ok:
		evict = old // not expected: a thread makes one call at a time
	case len(pc.m) >= pc.max:
		for t, f := range pc.m {
			delete(pc.m, t)
			evict = f
			break
		}
	}
	if fd >= 0 {
		if pc.m == nil {
			pc.m = make(map[int]int, pc.max)
		}
		pc.m[tid] = fd
	}
	pc.mu.Unlock()
	if evict >= 0 {
		unix.Close(evict)
	}
}

// isStale reports the error of pidfd_getfd on a pidfd whose thread is gone.
func isStale(err error) bool { return errors.Is(err, unix.ESRCH) }
