package supervisor

import (
	"container/list"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gotorsocks/torsocks/internal/sandbox"
)

// The sealed network (SealedNetwork 1, issue 10). The program's TCP sockets are made in the
// sandbox network namespace (socket(): policy.Sandboxed, Sandbox.Socket, ADDFD), where the only
// interface is lo and every address is local: nothing the program sets on them (IP_OPTIONS source
// routes, IPV6_RTHDR, SO_BINDTODEVICE...) can send a packet out of the machine. A connect on such
// a socket is carried out with two connections:
//
//	program ── its sandbox socket ──► inner listener (sandbox, bound to dest) ─ accepted ─┐
//	                                                                                       │ relay
//	Tor's SocksPort ◄── the supervisor's own socket (host network, SOCKS5 done on it) ◄────┘
//	                   (internal/relay: an epoll loop, splice(2) between the two sockets)
//
//  1. upstream: the supervisor connects a fresh socket of its own (no option the program set) to
//     Tor's SocksPort on the host network and does the SOCKS5 handshake there (the same
//     socks5.HandshakePipelined over the same rawConn, polling the calling thread's pidfd, the
//     deadline and the listener). A blocking connect thus returns after Tor answered, with the
//     same errno and log line as before (proxyFailed), and the program's socket stays
//     unconnected on failure. Port 53 (DNS over TCP) goes to the DNS responder's gated listener,
//     and Direct destinations (Tor's SocksPort, loopback with AllowOutboundLocalhost) to the
//     destination itself, the same way, without SOCKS.
//  2. join: the program's socket (its pidfd_getfd copy) is connected, inside the sandbox, to an
//     inner listener the supervisor holds bound to the destination address and port, so
//     getpeername shows the destination and getsockname a sandbox-local address with no help.
//     There is one inner listener per destination, shared by the connects to it, kept while one
//     of them is being joined and for a few seconds after (innerListener), made from
//     the sandbox's socket pool; connect-then-accept is serialised per destination, so the
//     connection accepted is the one just made (checked: its peer is the copy's getsockname;
//     a stale one of a join that gave up is reset and skipped).
//  3. relay: the accepted connection and the upstream are handed to internal/relay (raw
//     descriptors: no net.Conn, no goroutine per connection); EOF on one side is passed on as a
//     half-close, an error (RST, EPIPE) resets both (linger 0) and closes them. The program's exit
//     closes its socket, which ends the relay the same way; the supervisor's death closes all.
//
// Descriptors: each relayed connection holds two in the supervisor (the Go runtime raises the
// soft RLIMIT_NOFILE to the hard limit at start and gives the program back its own: see
// run.descriptorLimit). When they run out (EMFILE, ENFILE) at any step, the connect fails with
// ENOBUFS and one line saying so (outOfDescriptors).

// innerListener is the supervisor's listening socket in the sandbox for one destination. It is
// kept while a connect to dest is being joined (refs), and then for innerIdle more
// (idle), so that sequential connects to one destination (a crawler, a test suite, an HTTP
// client without keep-alive) do not make a listener each: at most maxIdleInner are kept idle,
// the least recently used going first.
type innerListener struct {
	dest netip.AddrPort
	refs int           // guarded by Supervisor.innerMu
	idle *list.Element // guarded by innerMu: its place in Supervisor.innerIdle while refs == 0

	mu sync.Mutex // serialises connect-then-accept on fd, and guards fd
	fd int        // -1 until the first connect makes it
}

const (
	innerIdle    = 5 * time.Second
	maxIdleInner = 64
)

// acquireInner returns the inner listener for dest, counted as used until releaseInner.
func (s *Supervisor) acquireInner(dest netip.AddrPort) *innerListener {
	s.innerMu.Lock()
	defer s.innerMu.Unlock()
	if s.inner == nil {
		s.inner = map[netip.AddrPort]*innerListener{}
	}
	l := s.inner[dest]
	if l == nil {
		l = &innerListener{dest: dest, fd: -1}
		s.inner[dest] = l
	}
	if l.idle != nil {
		s.innerIdle.unpark(l.idle)
		l.idle = nil
	}
	l.refs++
	return l
}

// releaseInner drops one use of l; after the last, l stays idle for innerIdle (if it has a
// socket and fewer than maxIdleInner others are idle).
func (s *Supervisor) releaseInner(l *innerListener) {
	s.innerMu.Lock()
	defer s.innerMu.Unlock()
	l.refs--
	if l.refs > 0 {
		return
	}
	l.mu.Lock()
	made := l.fd >= 0
	l.mu.Unlock()
	if !made {
		s.dropInner(l)
		return
	}
	l.idle = s.innerIdle.park(l, s.dropInner, s.expireInner)
}

// dropInner forgets l (refs == 0) and closes its socket; innerMu is held. Connections accepted
// from it are not affected.
func (s *Supervisor) dropInner(l *innerListener) {
	if l.idle != nil {
		s.innerIdle.unpark(l.idle)
		l.idle = nil
	}
	if s.inner[l.dest] == l {
		delete(s.inner, l.dest)
	}
	l.mu.Lock()
	if l.fd >= 0 {
		unix.Close(l.fd)
		l.fd = -1
	}
	l.mu.Unlock()
}

// clearIdleInner reports whether an inner listener for dest (as given, IPv4-mapped, or on the
// sandbox's lo for a scoped address) is in use; one kept idle is closed, so that an asynchronous
// connect's hold listener can take its place. innerMu is held.
func (s *Supervisor) clearIdleInner(dest netip.AddrPort) bool {
	keys := []netip.AddrPort{dest, unmap(dest), netip.AddrPortFrom(netip.AddrFrom16(dest.Addr().As16()), dest.Port())}
	if dest.Addr().Zone() != "" {
		keys = append(keys, netip.AddrPortFrom(dest.Addr().WithZone(sandboxLoZone), dest.Port()))
	}
	for _, d := range keys {
		l := s.inner[d]
		switch {
		case l == nil:
		case l.refs > 0:
			return true
		default:
			s.dropInner(l)
		}
	}
	return false
}

// expireInner closes the listeners idle for innerIdle, and comes back for the others.
func (s *Supervisor) expireInner() {
	s.innerMu.Lock()
	defer s.innerMu.Unlock()
	s.innerIdle.expire(s.dropInner, s.expireInner)
}

// openInner makes l's listening socket in the sandbox (l.mu held).
func (s *Supervisor) openInner(l *innerListener) error {
	domain := unix.AF_INET
	if !l.dest.Addr().Is4() {
		domain = unix.AF_INET6
	}
	fd, err := s.opts.Sandbox.Socket(domain, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("inner endpoint %s in the sandbox: %w", l.dest, err)
	}
	// SO_REUSEADDR: connections of an earlier listener of this destination may linger
	// (TIME_WAIT, or still relayed after it closed). SO_REUSEPORT: the program may listen on
	// the wildcard address with dest's port (a peer-to-peer node on its usual port, with
	// AllowInbound); listenSealed gives that listener SO_REUSEPORT too, so that both can be
	// bound, and the kernel prefers the listener bound to the exact address for dest.
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	// The connections accepted from it have TCP_NODELAY from it (innerCongestion): once here,
	// not once per connection.
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	if domain == unix.AF_INET6 {
		unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1)
		// An IPv6 address must be on an interface to be bound, the sandbox's local ::/0 route
		// is not enough (for IPv4 it is); it delivers the connection all the same.
		unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_FREEBIND, 1)
	}
	sa, err := toSockaddr(domain, l.dest)
	if err == nil {
		err = unix.Bind(fd, sa)
	}
	if err == nil {
		err = unix.Listen(fd, 64)
	}
	if err != nil {
		unix.Close(fd)
		return fmt.Errorf("inner endpoint %s in the sandbox: %w", l.dest, err)
	}
	l.fd = fd
	return nil
}

// join connects the program's socket (copy cp) to dest inside the sandbox and returns the
// supervisor's end of that connection (non-blocking, close-on-exec).
func (s *Supervisor) join(c *call, cp int, si sockInfo, l *innerListener) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	// Never alongside a hold listener of an asynchronous connect (see acquireHold): one in use
	// is waited for, a little (it is released as soon as its connect is joined or has failed).
	for deadline := time.Now().Add(5 * time.Second); l.fd < 0; {
		busy, unused := s.holdInUse(l.dest)
		if !busy {
			if err := s.openInner(l); err != nil {
				return -1, err
			}
			break
		}
		c.lease.release() // waiting for another connect: hold nobody up
		select {
		case <-unused:
		case <-time.After(time.Until(deadline)):
			return -1, fmt.Errorf("inner endpoint %s in the sandbox: an asynchronous connect to it is in progress: %w", l.dest, unix.EADDRINUSE)
		}
	}
	sa, err := toSockaddr(si.domain, l.dest)
	if err != nil {
		return -1, err
	}
	// On loopback the handshake completes within connect (or at once after EINPROGRESS).
	rc := &rawConn{c: c, fd: cp, pidfd: c.pidfd, deadline: time.Now().Add(5 * time.Second)}
	err = connectWait(rc, sa)
	s.async.unread.Add(1) // its SYN, queued on a sniffer (async_linux.go)
	if err != nil {
		return -1, fmt.Errorf("connect to the inner endpoint %s: %w", l.dest, err)
	}
	local, err := boundAddr(cp, si.domain)
	if err != nil {
		return -1, err
	}
	lr := &rawConn{c: c, fd: l.fd, pidfd: -1, deadline: time.Now().Add(5 * time.Second)}
	for {
		fd, peer, err := accept4(l.fd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		if err == unix.EAGAIN || err == unix.EINTR || err == unix.ECONNABORTED {
			if err := lr.wait(unix.POLLIN); err != nil {
				return -1, fmt.Errorf("accept on the inner endpoint %s: %w", l.dest, err)
			}
			continue
		}
		if err != nil {
			return -1, fmt.Errorf("accept on the inner endpoint %s: %w", l.dest, err)
		}
		if peer.Addr().Unmap() != local.Addr().Unmap() || peer.Port() != local.Port() {
			// Only the supervisor connects to its inner listeners, under l.mu: a connection
			// of an earlier join that gave up (its connect completed after the deadline).
			resetClose(fd)
			continue
		}
		return fd, nil
	}
}

// tuneInner sets the options of the supervisor's sandbox end of a relayed connection: TCP_NODELAY
// (as a Go *net.TCPConn has it: small writes of the program reach Tor at once), and the sandbox's
// congestion control (sandbox.LoopbackCongestion, the one that matters for downloads: this
// socket sends them). That is the namespace's default already unless the factory could not set
// it (a read-only /proc/sys), which the first inner socket tells (innerDefault); only then is it
// set on each, by setsockopt.
func tuneInner(in int) {
	unix.SetsockoptInt(in, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	innerCongestion(in)
}

// innerCongestion is tuneInner without TCP_NODELAY, for a socket accepted from an inner listener
// (openInner), which has it from the listener: an accepted TCP socket is a copy of its listener
// (tcp_create_openreq_child clones it, sk_clone_lock, and does not reset nonagle);
// TestAcceptedInheritsNodelay checks it on the running kernel.
func innerCongestion(in int) {
	switch innerDefault.Load() {
	case ccUnknown:
		if cc, err := unix.GetsockoptString(in, unix.IPPROTO_TCP, unix.TCP_CONGESTION); err == nil && cc == sandbox.LoopbackCongestion {
			innerDefault.Store(ccDefault)
			return
		}
		innerDefault.Store(ccSet)
		fallthrough
	case ccSet:
		unix.SetsockoptString(in, unix.IPPROTO_TCP, unix.TCP_CONGESTION, sandbox.LoopbackCongestion)
	}
}

// innerDefault says whether the sandbox's sockets have sandbox.LoopbackCongestion by default
// (ccDefault) or need it set (ccSet); ccUnknown until the first inner socket (tuneInner). One
// sandbox per process: the answer holds for the process's life.
var innerDefault atomic.Int32

const (
	ccUnknown = iota
	ccDefault
	ccSet
)

// tuneUp sets the options of the supervisor's own socket to target (its connection through Tor,
// or a direct one the policy allows), once, where it is made (ownConnStart, ownConn, torSocket;
// the SocksPort connections made ahead get them in the background): TCP_NODELAY, as a Go
// *net.TCPConn has it (small writes of the program reach Tor at once), and, when target is on this
// machine's loopback, as Tor's SocksPort usually is, the sandbox's congestion control: nothing is
// congested there either, and the relay sends the program's uploads on it by splice, in bursts,
// which a pacing default (bbr) makes cost (about a third of the supervisor's CPU in an upload,
// docs/sealed-network.md). To any other address it keeps the host's default.
func tuneUp(fd int, target netip.AddrPort) {
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	if target.Addr().Unmap().IsLoopback() {
		unix.SetsockoptString(fd, unix.IPPROTO_TCP, unix.TCP_CONGESTION, sandbox.LoopbackCongestion)
	}
}

// resetClose closes a socket of the supervisor's own with an RST.
func resetClose(fd int) {
	unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	unix.Close(fd)
}

// outOfDescriptors says why a step of a sealed connect failed when the supervisor has no
// descriptor left (EMFILE, ENFILE), "" for other errors. The connect then fails with ENOBUFS and
// this line, never another way out.
func outOfDescriptors(err error) string {
	if !isOutOfDescriptors(err) {
		return ""
	}
	var rl unix.Rlimit
	unix.Getrlimit(unix.RLIMIT_NOFILE, &rl)
	open := -1
	if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
		open = len(ents) - 1 // less ReadDir's own
	}
	limit := fmt.Sprintf("its limit is %d (RLIMIT_NOFILE)", rl.Cur)
	if errors.Is(err, unix.ENFILE) {
		limit = "the system's limit (fs.file-max) is reached"
	}
	return fmt.Sprintf("torsocks has no descriptor left for it (%d open, %s; each relayed connection takes two)", open, limit)
}

// isOutOfDescriptors reports whether err says the supervisor's (or the system's) descriptor table
// is full.
func isOutOfDescriptors(err error) bool {
	return errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE)
}

func sockaddrAddrPort(sa unix.Sockaddr) netip.AddrPort {
	switch v := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(v.Addr), uint16(v.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(v.Addr), uint16(v.Port))
	}
	return netip.AddrPort{}
}
