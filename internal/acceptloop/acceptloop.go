// Package acceptloop keeps the supervisor's listeners serving through temporary Accept failures:
// a program that uses up the descriptors (EMFILE, ENFILE) or the memory (ENOBUFS, ENOMEM) must
// slow a listener down for a moment, not end it for the rest of the run.
package acceptloop

import (
	"errors"
	"net"
	"syscall"
	"time"
)

// Backoff bounds the wait after a temporary failure.
const (
	minDelay = 5 * time.Millisecond
	maxDelay = time.Second
)

// Backoff is the state of one accept loop. The zero value is ready; it is used by that loop's
// goroutine only.
type Backoff struct{ delay time.Duration }

// Retry tells the loop what to do after Accept returned err: true after waiting a while when the
// failure is temporary (the wait doubles from 5 ms to 1 s while failures go on), false when the
// loop must end (the listener was closed, or an error that will not pass). A nil err resets the
// wait and returns true.
func (b *Backoff) Retry(err error) bool {
	if err == nil {
		b.delay = 0
		return true
	}
	if errors.Is(err, net.ErrClosed) || !Temporary(err) {
		return false
	}
	if b.delay == 0 {
		b.delay = minDelay
	} else {
		b.delay = min(2*b.delay, maxDelay)
	}
	time.Sleep(b.delay)
	return true
}

// Temporary reports whether an Accept error is one that passes by itself.
func Temporary(err error) bool {
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.EINTR} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
