package supervisor

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// Side is input on descriptors of the supervisor's own that the worker holding the receiver role
// serves while it waits for notifications: the DNS responder's UDP sockets in the sandbox
// (internal/dnsserver, Server.SideFDs). A name lookup is a socket() and a connect() notification
// and then a query on the socket; the thread that the connect woke, back at the listener, is
// the one the query wakes, and answers it there. Served by the Go netpoller instead, the query
// woke a second thread, and while it ran the runtime saw both of its Ps busy (one of them in the
// listener's poll) and kept its monitor thread (sysmon) waking every 20 µs: about half the
// supervisor's context switches per lookup (docs/benchmarks.md, "Name lookups").
//
// The side work runs with the role lent to it as a call does (lease and watchdog): if it takes
// longer than leadLimit (a log line to a full stderr pipe), a follower takes over the listener
// and the side descriptors, and this worker leaves the role to it. Only the role's holder polls
// the side descriptors, so they are served one readiness at a time. They are not polled while no
// worker waits at the listener (all MaxInflight busy), as notifications are not.
type Side interface {
	// SideFDs are the descriptors to poll for input (POLLIN). It is called before every wait
	// and may change between calls; a descriptor it stops returning may still be in a poll that
	// started before. A wait in progress sees a change only when one of the descriptors it polls
	// is readable: a Side whose set grows includes one to wake it with (an eventfd). With none
	// the worker waits at the listener alone until the next notification.
	SideFDs() []int
	// ServeSide handles input on fd, one of SideFDs, without blocking (one datagram: the poll
	// is level-triggered). It must ignore an fd that is not one of its descriptors any more.
	ServeSide(fd int)
}

// waitNotif is Kernel.Wait for the worker holding the receiver role, serving Options.Side's
// descriptors in between (Side). kept is false when side work ran past leadLimit and the role
// went to a follower: the worker no longer holds it.
func (s *Supervisor) waitNotif(w *waitState) (more, kept bool, err error) {
	pfds := &w.pfds
	side := s.opts.Side
	for {
		var fds []int
		if side != nil {
			fds = side.SideFDs()
		}
		if len(fds) == 0 {
			more, err := s.k.Wait()
			return more, true, err
		}
		p := append((*pfds)[:0], unix.PollFd{Fd: int32(s.k.FD()), Events: unix.POLLIN})
		for _, fd := range fds {
			p = append(p, unix.PollFd{Fd: int32(fd), Events: unix.POLLIN})
		}
		*pfds = p
		if _, err := unix.Poll(p, -1); err != nil {
			if err == unix.EINTR {
				continue
			}
			return false, true, fmt.Errorf("poll seccomp listener: %w", err)
		}
		// Side input first: a program flooding notifications must not starve its own lookups.
		for _, f := range p[1:] {
			if f.Revents&unix.POLLNVAL != 0 {
				// Closed under the poll (the side is shutting down): no busy loop on it.
				more, err := s.k.Wait()
				return more, true, err
			}
			if f.Revents != 0 && !s.serveSide(side, int(f.Fd)) {
				return false, false, nil
			}
		}
		if p[0].Revents&unix.POLLIN != 0 {
			return true, true, nil
		}
		// As seccomp.Listener.Wait: POLLHUP is the end (no task uses the filter any more),
		// POLLERR is not (a signal pending on this thread while the kernel's poll took the
		// listener's lock).
		if p[0].Revents&(unix.POLLHUP|unix.POLLNVAL) != 0 {
			return false, true, nil
		}
	}
}

// waitState is one worker's, for waitNotif.
type waitState struct {
	pfds []unix.PollFd // the poll set, reused
}

// serveSide serves input on a side descriptor with the role lent to it, and reports whether the
// role came back (see Side).
func (s *Supervisor) serveSide(side Side, fd int) bool {
	l := s.role.lend()
	watchdog := time.AfterFunc(leadLimit, l.release)
	side.ServeSide(fd)
	return watchdog.Stop() && l.reclaim()
}
