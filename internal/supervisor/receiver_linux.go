package supervisor

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// The receiver role. Workers take turns at it (leader/follower): only the worker holding it polls
// and receives from the listener, and it serves the call it received itself, so no call ever
// crosses to another thread. While it serves, the role is lent to the call (a lease); the role
// goes back to the listener with the worker when the call is done, unless someone released the
// lease first, handing the role to a follower:
//
//   - the handler, before work that may wait on the program or the network without watching the
//     listener (a direct or unix connect, a send);
//   - a wait on Tor or on a socket that also polls the listener (rawConn.wait, waitReadable),
//     when another notification is pending (handOver, which lets the follower run at once);
//   - the watchdog, after leadLimit, whatever the call is doing.
//
// Locking: receiver.mu is the role itself; it is locked by the worker that takes the role and
// unlocked by exactly one party: the lease's release (whoever wins its CAS), or the worker when
// serving stops. finished is guarded by mu. The counters are atomics, read without the role.

// receiver is the receiver role of one supervisor.
type receiver struct {
	mu       sync.Mutex // held by the role's holder
	finished bool       // the listener hung up or failed: every worker exits

	workers atomic.Int32 // running workers
	idle    atomic.Int32 // workers waiting for the role
	max     int          // at most this many workers
	spawn   func()       // starts a worker (which counts itself in workers)
}

// take blocks until the caller holds the role.
func (r *receiver) take() {
	r.idle.Add(1)
	r.mu.Lock()
	r.idle.Add(-1)
}

// finish ends serving: the caller holds the role and gives it up for good.
func (r *receiver) finish() {
	r.finished = true
	r.mu.Unlock()
}

// lend lends the role, which the caller holds, to the call it is about to serve.
func (r *receiver) lend() *lease {
	l := &lease{r: r}
	l.held.Store(true)
	return l
}

// lease is the receiver role lent to one call. Exactly one of release (any goroutine, any number
// of times) and reclaim (the serving worker, once, when the call is done) wins.
type lease struct {
	r    *receiver
	held atomic.Bool
}

// Held reports whether the call still holds the role (its waits then watch the listener too).
func (l *lease) Held() bool { return l != nil && l.held.Load() }

// release hands the role over, making sure a worker is waiting to take it (one is started if
// none is idle and fewer than max run). Idempotent; safe from any goroutine.
func (l *lease) release() { l.tryRelease() }

// tryRelease is release, reporting whether this call handed the role over.
func (l *lease) tryRelease() bool {
	if l == nil || !l.held.CompareAndSwap(true, false) {
		return false
	}
	r := l.r
	if r.idle.Load() == 0 && int(r.workers.Load()) < r.max {
		r.spawn()
	}
	r.mu.Unlock()
	return true
}

// handOver is release by the call's own goroutine when another notification is pending and the
// call is about to block in a system call (a wait that polled the listener): it also yields the
// processor, so that the follower just woken (or started) takes the role at once, on this
// thread, and receives that notification. Otherwise the follower waited until the runtime took
// the processor from this goroutine's blocked system call (sysmon, 20 µs or more) or woke
// another thread to steal it: per connect, 2-3 context switches more, and the futex and netpoll
// calls of those threads. Only where a notification is pending: a follower that found none would
// block in its receive with the processor, and this goroutine, queued, wait for it.
func (l *lease) handOver() {
	if l.tryRelease() {
		runtime.Gosched()
	}
}

// reclaim ends the lease when its call is done: true if the role was still held, and the caller
// (the worker that lent it) holds it again; false if it was released and went to another worker.
func (l *lease) reclaim() bool { return l.held.CompareAndSwap(true, false) }
