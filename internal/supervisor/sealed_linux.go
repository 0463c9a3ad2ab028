package supervisor

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gotorsocks/torsocks/internal/policy"
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
//	                   (io.Copy both ways: splice(2) between the two *net.TCPConn)
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
//     There is one inner listener per destination, shared by the connects to it and kept while
//     any of them is in progress or relayed (innerListener); connect-then-accept is serialised
//     per destination, so the connection accepted is the one just made (checked: its peer is
//     the copy's getsockname).
//  3. relay: two goroutines io.Copy between the accepted connection and the upstream; EOF on one
//     side is passed on as a half-close (CloseWrite), an error (RST, EPIPE) resets both (linger 0)
//     and closes them. The program's exit closes its socket, which ends the relay the same way.

// innerListener is the supervisor's listening socket in the sandbox for one destination.
type innerListener struct {
	dest netip.AddrPort
	refs int // guarded by Supervisor.innerMu

	mu sync.Mutex // serialises connect-then-accept on fd
	fd int        // -1 until the first connect makes it
}

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
	l.refs++
	return l
}

// releaseInner drops one use of l; the last closes its socket.
func (s *Supervisor) releaseInner(l *innerListener) {
	s.innerMu.Lock()
	defer s.innerMu.Unlock()
	l.refs--
	if l.refs > 0 {
		return
	}
	delete(s.inner, l.dest)
	l.mu.Lock()
	if l.fd >= 0 {
		unix.Close(l.fd)
		l.fd = -1
	}
	l.mu.Unlock()
}

// open makes l's listening socket in the sandbox (l.mu held).
func (s *Supervisor) openInner(l *innerListener) error {
	domain := unix.AF_INET
	if !l.dest.Addr().Is4() {
		domain = unix.AF_INET6
	}
	fd, err := s.opts.Sandbox.Socket(domain, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	// SO_REUSEADDR: connections of an earlier listener of this destination may linger
	// (TIME_WAIT, or still relayed after it closed).
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
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
// supervisor's end of that connection.
func (s *Supervisor) join(c *call, cp int, si sockInfo, l *innerListener) (*net.TCPConn, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fd < 0 {
		if err := s.openInner(l); err != nil {
			return nil, err
		}
	}
	sa, err := toSockaddr(si.domain, l.dest)
	if err != nil {
		return nil, err
	}
	// On loopback the handshake completes within connect (or at once after EINPROGRESS).
	rc := &rawConn{c: c, fd: cp, pidfd: c.pidfd, deadline: time.Now().Add(5 * time.Second)}
	if err := connectWait(rc, sa); err != nil {
		return nil, fmt.Errorf("connect to the inner endpoint %s: %w", l.dest, err)
	}
	local, err := boundAddr(cp, si.domain)
	if err != nil {
		return nil, err
	}
	lr := &rawConn{c: c, fd: l.fd, pidfd: -1, deadline: time.Now().Add(5 * time.Second)}
	for {
		fd, rsa, err := unix.Accept4(l.fd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		if err == unix.EAGAIN || err == unix.EINTR || err == unix.ECONNABORTED {
			if err := lr.wait(unix.POLLIN); err != nil {
				return nil, fmt.Errorf("accept on the inner endpoint %s: %w", l.dest, err)
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("accept on the inner endpoint %s: %w", l.dest, err)
		}
		if peer := sockaddrAddrPort(rsa); peer.Addr().Unmap() != local.Addr().Unmap() || peer.Port() != local.Port() {
			// Only the supervisor connects to its inner listeners, under l.mu: not reached.
			unix.Close(fd)
			return nil, fmt.Errorf("inner endpoint %s: accepted %s, expected %s", l.dest, peer, local)
		}
		return fileTCPConn(fd)
	}
}

// fileTCPConn hands a connected socket of the supervisor's own to the Go runtime.
func fileTCPConn(fd int) (*net.TCPConn, error) {
	f := os.NewFile(uintptr(fd), "tcp")
	conn, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, err
	}
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		conn.Close()
		return nil, errors.New("not a TCP connection")
	}
	return tc, nil
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

// sealedUnsupported fails a kind of connect the sealed network does not carry yet: closed,
// never around Tor.
func sealedUnsupported(what string) error {
	return refused(unix.EPERM, what+" is not supported with SealedNetwork yet")
}

// connectSealed serves connect() on a TCP socket of the sandbox (see the top of this file). It
// decides as connectTCP does. Its errors are the call's answer.
func (s *Supervisor) connectSealed(c *call, cp int, si sockInfo, dest netip.AddrPort) error {
	if isConnected(cp) {
		return failed(unix.EISCONN)
	}
	if dest.Addr().Zone() != "" {
		return sealedUnsupported(fmt.Sprintf("connection to %s (a scoped address)", dest))
	}
	if s.opts.AsyncConnect {
		if handled, err := s.connectAsync(c, cp, si, dest); handled {
			return err
		}
	}
	if dest.Port() == 53 && s.opts.DNSTCP != nil {
		up, err := s.ownConn(c, s.opts.DNSTCP.TCPAddr(), s.opts.DNSTCP.Expect)
		if err != nil {
			return proxyFailed(dest.String(), fmt.Errorf("DNS over TCP to %s: %w", dest, err))
		}
		return s.joinRelay(c, cp, si, dest, up, nil)
	}
	host := ""
	var release func()
	if s.opts.StandIn != nil {
		name, rel, isStandIn, ok := s.opts.StandIn(dest.Addr().Unmap())
		if isStandIn {
			if !ok {
				return refused(unix.EHOSTUNREACH, fmt.Sprintf("connection to %s refused: it is a stand-in address that no name was resolved to (or no longer is)", dest))
			}
			host, release = name, rel
		}
	}
	if host == "" {
		d := s.pol.Connect(dest)
		switch d.Action {
		case policy.Refuse:
			return refused(d.Errno, d.Reason)
		case policy.Direct:
			c.lease.release() // a loopback server may be slow to accept
			up, err := s.ownConn(c, dest, nil)
			if err != nil {
				var ce *callError
				if errors.As(err, &ce) || isGone(err) {
					return err
				}
				return failed(err)
			}
			return s.joinRelay(c, cp, si, dest, up, nil)
		}
	}
	target := dest.String()
	if host != "" {
		target = fmt.Sprintf("%s:%d (stand-in %s)", host, dest.Port(), dest.Addr())
	}
	up, err := s.torConn(c, dest, host)
	if err != nil {
		if release != nil {
			release()
		}
		return proxyFailed(target, err)
	}
	if err := s.joinRelay(c, cp, si, dest, up, release); err != nil {
		return err
	}
	s.proxied.Add(1)
	if s.debug() {
		c.logf(slog.LevelDebug, "connection to %s carried through Tor (sealed network)", target)
	}
	return nil
}

// ownConn connects a new socket of the supervisor's own, on the host network, to target (through
// expect's gate when set), waiting as a proxied connect waits: within ConnectTimeout, giving up
// when the calling thread exits, watching the listener while it holds the receiver role.
func (s *Supervisor) ownConn(c *call, target netip.AddrPort, expect func(uint16)) (int, error) {
	domain := unix.AF_INET
	if !target.Addr().Unmap().Is4() {
		domain = unix.AF_INET6
	}
	target = netip.AddrPortFrom(target.Addr().Unmap(), target.Port())
	fd, err := unix.Socket(domain, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	rc := &rawConn{c: c, fd: fd, pidfd: c.pidfd, deadline: time.Now().Add(s.opts.ConnectTimeout)}
	if expect != nil {
		err = connectGated(rc, sockInfo{domain: domain}, target, expect)
	} else {
		sa, _ := toSockaddr(domain, target)
		err = connectWait(rc, sa)
	}
	if err != nil {
		unix.Close(fd)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			err = unix.ETIMEDOUT
		}
		return -1, err
	}
	return fd, nil
}

// torConn is the supervisor's own connection through Tor to dest (or host, by name): connected to
// the SocksPort and past the SOCKS5 handshake.
func (s *Supervisor) torConn(c *call, dest netip.AddrPort, host string) (int, error) {
	target := s.opts.Socks
	var expect func(uint16)
	if s.opts.SocksRelay != nil {
		target, expect = s.opts.SocksRelay.Addr(), s.opts.SocksRelay.Expect
	}
	fd, err := s.ownConn(c, target, expect)
	if err != nil {
		return -1, s.torUnreachable(err, target)
	}
	rc := &rawConn{c: c, fd: fd, pidfd: c.pidfd, deadline: time.Now().Add(s.opts.ConnectTimeout)}
	err = s.handshake(c, rc, dest, host)
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// joinRelay joins the program's socket (copy cp) to the supervisor's connection up (which it
// owns from now on, success or not) and relays between them. release, if set, runs when the
// relay ends (or at once on failure).
func (s *Supervisor) joinRelay(c *call, cp int, si sockInfo, dest netip.AddrPort, up int, release func()) error {
	upc, err := fileTCPConn(up)
	var in *net.TCPConn
	var l *innerListener
	if err == nil {
		l = s.acquireInner(dest)
		in, err = s.join(c, cp, si, l)
	}
	if err != nil {
		if upc != nil {
			upc.Close()
		}
		if l != nil {
			s.releaseInner(l)
		}
		if release != nil {
			release()
		}
		if isGone(err) {
			return err
		}
		return &callError{errno: unix.ECONNREFUSED, level: slog.LevelWarn, msg: fmt.Sprintf("connection to %s: joining it to the program's socket in the sandbox failed: %v", dest, err), pc: caller()}
	}
	upc.SetNoDelay(true)
	s.relays.Add(1)
	s.relayWG.Add(1)
	go s.relay(in, upc, func() {
		s.releaseInner(l)
		if release != nil {
			release()
		}
	})
	return nil
}

// relay copies both ways between the program's side (in) and the supervisor's upstream (up)
// until both directions are done, then closes both and runs done. EOF is passed on as a
// half-close; an error on either side resets both.
func (s *Supervisor) relay(in, up *net.TCPConn, done func()) {
	defer s.relayWG.Done()
	defer s.relays.Add(-1)
	var once sync.Once
	abort := func() {
		once.Do(func() {
			in.SetLinger(0)
			up.SetLinger(0)
			in.Close()
			up.Close()
		})
	}
	var wg sync.WaitGroup
	pipe := func(dst, src *net.TCPConn) {
		defer wg.Done()
		if _, err := io.Copy(dst, src); err != nil {
			abort()
			return
		}
		if err := dst.CloseWrite(); err != nil {
			abort()
		}
	}
	wg.Add(2)
	go pipe(up, in)
	pipe(in, up)
	wg.Wait()
	once.Do(func() {
		in.Close()
		up.Close()
	})
	done()
}
