package supervisor

// Connections to Tor's SocksPort made ahead of need (the sealed network's torConn).
//
// A proxied connect in the sealed network is the supervisor's own connection to the SocksPort,
// past the SOCKS5 handshake, joined to the program's socket. Connecting to the SocksPort is a
// loopback handshake the program waited for: about a tenth of a blocking connect's time
// (docs/benchmarks.md). A few such connections are made in the background after a connect
// took one, so that the next connect finds one ready and only sends its request.
//
// Why that is the same connection: nothing of the program is on a SocksPort connection before
// its handshake. Tor decides a stream's circuit from what the handshake says (the destination,
// the SOCKS credentials of IsolateSOCKSAuth and IsolatePID) and from the client's address and
// the port it came in on, which are the same for every connection the supervisor makes. A pooled
// connection carries exactly the bytes a new one would, only sooner.
//
// What can go wrong with one made ahead, and what get does about it:
//   - Tor closed it (restarted, or a SocksPort that closes idle clients): it polls readable or
//     hung up; get closes it and takes the next, or returns none and the caller connects.
//   - Its connect failed or is still in progress: it does not poll writable alone; the same.
//   - It waited long: one older than torPoolAge is closed unused, so that a program that
//     connects once a minute does not get connections Tor may be about to time out.
// Filling stops at the first failure: with Tor down, the caller's own connect reports why.
//
// Locking: mu guards idle, filling and closed. One goroutine fills at a time (filling); it
// connects outside the lock and takes mu only to add what it made.

import (
	"errors"
	"io"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

const (
	torPoolSize = 4                // connections kept ready at most
	torPoolLow  = torPoolSize / 2  // get refills when it leaves this few or fewer
	torPoolAge  = 10 * time.Second // a ready connection older than this is closed unused
)

type torPool struct {
	mu      sync.Mutex
	idle    []pooledConn // newest last
	filling bool         // a fill goroutine runs
	closed  bool         // the supervisor stopped: nothing is kept any more
}

type pooledConn struct {
	fd int
	at time.Time
}

// get returns a socket of the supervisor's own, connected to target and unused, or -1 when
// there is none ready. It does not refill: the caller calls refill once its request is sent,
// while it waits for Tor (the fill goroutine's wake-up is not on the program's path).
func (p *torPool) get() int {
	now := time.Now()
	fd := -1
	p.mu.Lock()
	for fd < 0 && len(p.idle) > 0 {
		pc := p.idle[len(p.idle)-1]
		p.idle = p.idle[:len(p.idle)-1]
		if now.Sub(pc.at) > torPoolAge {
			// The newest is too old: so are the others.
			for _, o := range p.idle {
				unix.Close(o.fd)
			}
			p.idle = p.idle[:0]
			unix.Close(pc.fd)
			break
		}
		if !readyIdle(pc.fd) {
			unix.Close(pc.fd)
			continue
		}
		fd = pc.fd
	}
	p.mu.Unlock()
	return fd
}

// refill starts filling the pool in the background when it holds torPoolLow or fewer.
func (p *torPool) refill(s *Supervisor, target netip.AddrPort) {
	p.mu.Lock()
	fill := !p.filling && !p.closed && len(p.idle) <= torPoolLow
	if fill {
		p.filling = true
	}
	p.mu.Unlock()
	if fill {
		go p.fill(s, target)
	}
}

// readyIdle reports whether fd is connected and nothing came on it: writable, not readable, no
// error and no hang-up.
func readyIdle(fd int) bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLOUT | unix.POLLRDHUP}}
	for {
		n, err := unix.Poll(fds, 0)
		if err == unix.EINTR {
			continue
		}
		return err == nil && n == 1 && fds[0].Revents == unix.POLLOUT
	}
}

// fill connects until the pool holds torPoolSize, and stops at the first connection that fails.
func (p *torPool) fill(s *Supervisor, target netip.AddrPort) {
	for {
		p.mu.Lock()
		if p.closed || len(p.idle) >= torPoolSize {
			p.filling = false
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
		fd, pending, err := s.ownConnStart(target)
		if err == nil && pending {
			// Off loopback: wait for the handshake, a little.
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
			for {
				_, err = unix.Poll(fds, int(time.Second/time.Millisecond))
				if err != unix.EINTR {
					break
				}
			}
		}
		if err == nil && !readyIdle(fd) {
			unix.Close(fd)
			err = unix.ECONNREFUSED
		}
		p.mu.Lock()
		if err != nil || p.closed {
			if err == nil {
				unix.Close(fd)
			}
			p.filling = false
			p.mu.Unlock()
			return
		}
		p.idle = append(p.idle, pooledConn{fd: fd, at: time.Now()})
		p.mu.Unlock()
	}
}

// close closes the connections kept and keeps none from now on.
func (p *torPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for _, pc := range p.idle {
		unix.Close(pc.fd)
	}
	p.idle = nil
}

// closedBeforeRequest reports whether a handshake's error says the SocksPort had closed the
// connection (Tor restarting): a connection made ahead that died between torPool.get and the
// request, which is sent again on a new one.
func closedBeforeRequest(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, unix.ECONNRESET) || errors.Is(err, unix.EPIPE)
}
