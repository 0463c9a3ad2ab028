package supervisor

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/gotorsocks/torsocks/internal/policy"
	"github.com/gotorsocks/torsocks/internal/registry"
	"github.com/gotorsocks/torsocks/internal/relay"
	"github.com/gotorsocks/torsocks/internal/sockdiag"
	"github.com/gotorsocks/torsocks/internal/socks5"
	"github.com/gotorsocks/torsocks/internal/standin"
)

// The data path of a connect, top to bottom. The worker and the answer are in
// supervisor_linux.go and call_linux.go; everything between them is in this file, in the order
// it runs, with hops only for the mechanisms named after them (the inner endpoint: sealed_linux.go;
// asynchronous connects: async_linux.go; the SOCKS5 protocol: internal/socks5; the relay:
// internal/relay):
//
//	worker         receives the notification, lends it the receiver role, starts the watchdog
//	serve          runs dispatch, which picks connect
//	connect        copies the program's socket (pidfd_getfd), asks the copy what it is, reads the
//	               address once; unix, netlink and UDP sockets go to connectCopy / connectUDP
//	connectInet    the program's TCP socket lives in the sandbox (SealedNetwork 1): connectSealed;
//	               on the host network (SealedNetwork 0, or no sandbox): connectTCP
//	connectSealed  decides by the policy (DNS responder, stand-in by name, direct, or Tor); a
//	               non-blocking socket goes asynchronous (connectAsync) and returns EINPROGRESS
//	torConn        the supervisor's own socket to Tor's SocksPort (ownConn, connectWait), the
//	               SOCKS5 handshake on it (handshake, over rawConn)
//	joinRelay      joins the program's socket to it through the inner endpoint (join) and hands
//	               both to internal/relay
//	connectTCP     the host-network path: the same decisions; proxy connects the program's socket
//	               itself to Tor (connectTor, connectWait), handshake, then the registry entry
//	               getpeername answers from
//	answer         answers the kernel: 0, or the errno with one line (proxyFailed, refused)
//
// rawConn's waits poll the listener too while the call holds the receiver role, and hand the role
// over when another notification comes, so a connect waiting for Tor holds nobody up.

// connect decides and serves connect(fd, addr, addrlen).
func (s *Supervisor) connect(c *call, fd int, addr, addrlen uint64) (reply, error) {
	// A datagram socket's protocol and cookie are not read: nothing below needs them. The copy
	// is taken before the notification is checked (getfdLater): c.read checks it next, before
	// anything is decided or logged on what the copy says.
	cp, si, err := c.sockFor(fd, true)
	if err != nil {
		if c.unchecked {
			// The check not made yet: a thread that is gone (its id perhaps another's now)
			// is no error to report.
			if verr := c.s.k.Valid(c.id); verr != nil {
				err = verr
			}
		}
		return reply{}, fromErr("connect", err)
	}
	defer func() {
		if !c.kept {
			unix.Close(cp)
		}
	}()
	// The address is read once; every decision and the connect itself use these bytes.
	raw, err := c.read(addr, int(min(addrlen, maxSockaddrLen)))
	if err != nil {
		return reply{}, fromErr("connect", err)
	}
	if !si.isInet() && si.domain != unix.AF_UNIX && si.domain != unix.AF_NETLINK {
		return reply{}, refused(unix.EPERM, fmt.Sprintf("connect on a socket of family %d refused", si.domain))
	}
	switch {
	case si.domain == unix.AF_UNIX || si.domain == unix.AF_NETLINK:
		// This socket can only reach a unix or netlink peer on this machine. The connect is still
		// made here, on the copy (see copy_linux.go): the kernel would look the descriptor number
		// up again, and it may name another socket by then. A unix connect is made with the
		// calling thread's credentials (creds_linux.go): unix peers see the program's uid and gid
		// in SO_PEERCRED, but the supervisor's pid. A unix server may be slow to accept: the
		// receiver role goes first.
		c.lease.release()
		return s.connectCopy(c, cp, si, raw)
	case !si.isTCP():
		// A datagram connect never waits: the worker keeps the receiver role (glibc connects a
		// UDP socket to every address getaddrinfo returns, to sort them).
		return s.connectUDP(c, cp, si, raw)
	}
	dest, unspec, err := parseSockaddr(si.domain, raw)
	if err != nil {
		return reply{}, failed(err)
	}
	if unspec {
		// connect(AF_UNSPEC) disconnects. Done here on the copy (not by the kernel re-reading the
		// address), and the registry forgets the socket.
		err := disconnect(cp)
		s.reg.Destroy(si.cookie)
		if err != nil {
			return reply{}, failed(err)
		}
		return value(0), nil
	}
	if conn := s.reg.Lookup(si.cookie); conn != nil {
		conn.Put()
		return reply{}, failed(unix.EISCONN)
	}
	if err := s.connectInet(c, cp, si, dest); err != nil {
		return reply{}, err
	}
	return value(0), nil
}

// connectInet serves a TCP connect (or Fast Open send) to dest: sockets of the sandbox (the
// sealed network) by connectSealed, the others by connectTCP.
func (s *Supervisor) connectInet(c *call, cp int, si sockInfo, dest netip.AddrPort) error {
	if s.sealed(cp, si) {
		return s.connectSealed(c, cp, si, dest)
	}
	return s.connectTCP(c, cp, si, dest)
}

// sealed reports whether the TCP socket cp (si) lives in the sandbox (SealedNetwork).
func (s *Supervisor) sealed(cp int, si sockInfo) bool {
	return s.opts.SealedNetwork && s.inSandbox(cp, si)
}

// inSandbox reports whether socket cp (si) lives in the sandbox: known from sockCache, or asked
// of the kernel (SO_NETNS_COOKIE).
func (s *Supervisor) inSandbox(cp int, si sockInfo) bool {
	return s.opts.Sandbox != nil && (si.sandbox || s.opts.Sandbox.Contains(cp))
}

// connectSealed serves connect() on a TCP socket of the sandbox (the sealed network: drawn at
// the top of sealed_linux.go). It decides as connectTCP does. Its errors are the call's answer.
func (s *Supervisor) connectSealed(c *call, cp int, si sockInfo, dest netip.AddrPort) error {
	// One getsockopt(TCP_INFO) says both whether the socket is connected and whether an
	// asynchronous connect of it is in progress (connectAsync), where a getpeername and the
	// TCP_INFO were two system calls.
	st, err := tcpState(cp)
	if err != nil {
		return failed(err)
	}
	if connectedState(st) {
		return failed(unix.EISCONN)
	}
	// A scoped (link-local) destination goes to Tor as with SealedNetwork 0 (the address without
	// its zone); its inner endpoint is the address on the sandbox's lo (joinDest).
	joinDest := dest
	if dest.Addr().Zone() != "" {
		joinDest = netip.AddrPortFrom(dest.Addr().WithZone(sandboxLoZone), dest.Port())
	}
	if s.opts.AsyncConnect && !c.connectFirst {
		if handled, err := s.connectAsync(c, cp, si, dest, st); handled {
			return err
		}
	}
	if dest.Port() == 53 && s.opts.DNSTCP != nil {
		up, err := s.ownConn(c, s.opts.DNSTCP.TCPAddr(), s.opts.DNSTCP.Expect)
		if err != nil {
			return proxyFailed(dest.String(), fmt.Errorf("DNS over TCP to %s: %w", dest, err))
		}
		return s.joinRelay(c, cp, si, joinDest, up, nil)
	}
	host := ""
	var release func()
	if l := s.standIn(dest); l.InRange {
		if l.Name == "" {
			return unallocatedStandIn(dest)
		}
		host, release = l.Name, l.Release
	}
	if host == "" {
		d := s.pol.Connect(dest)
		switch d.Action {
		case policy.Refuse:
			return refused(d.Errno, d.Reason)
		case policy.Direct:
			c.lease.release() // a loopback server may be slow to accept
			if s.mirrors.covers(dest) {
				return s.connectOwnListener(c, cp, si, dest)
			}
			up, err := s.ownConn(c, dest, nil)
			if err != nil {
				var ce *callError
				if errors.As(err, &ce) || isGone(err) {
					return err
				}
				return failed(err)
			}
			return s.joinRelay(c, cp, si, joinDest, up, nil)
		}
	}
	target := dest.String()
	if host != "" {
		target = fmt.Sprintf("%s:%d (stand-in %s)", host, dest.Port(), dest.Addr())
	}
	// The program's socket is joined to its inner endpoint while Tor's answer is awaited: the
	// join does not depend on it, and it is undone if Tor refuses (unjoin).
	in, joined := -1, false
	var joinErr error
	up, err := s.torConn(c, dest, host, func() {
		in, joinErr = s.joinInner(c, cp, si, joinDest)
		joined = true
	})
	if err != nil {
		if in >= 0 {
			unjoin(cp, in)
		}
		if release != nil {
			release()
		}
		return proxyFailed(target, err)
	}
	if !joined {
		in, joinErr = s.joinInner(c, cp, si, joinDest) // the handshake never waited
	}
	if joinErr != nil {
		unix.Close(up)
		if release != nil {
			release()
		}
		return joinErr
	}
	if err := s.relayJoin(dest, in, up, release); err != nil {
		return err
	}
	s.proxied.Add(1)
	if s.debug() {
		c.logf(slog.LevelDebug, "connection to %s carried through Tor (sealed network)", target)
	}
	return nil
}

// torConn is the supervisor's own connection through Tor to dest (or host, by name): connected to
// the SocksPort and past the SOCKS5 handshake. meanwhile, if set, runs once the request is sent,
// before the first wait for Tor's answer (not at all if the handshake fails before that).
func (s *Supervisor) torConn(c *call, dest netip.AddrPort, host string, meanwhile func()) (int, error) {
	target := s.opts.Socks
	var expect func(uint16)
	if s.opts.SocksRelay != nil {
		target, expect = s.opts.SocksRelay.Addr(), s.opts.SocksRelay.Expect
	}
	if expect == nil {
		// The pool's refill waits until the request is out too; meanwhile runs once, even if
		// the request is sent twice (below).
		then, ran := meanwhile, false
		meanwhile = func() {
			if ran {
				return
			}
			ran = true
			s.torPool.refill(s, target)
			if then != nil {
				then()
			}
		}
	}
	for {
		var fd int
		var err error
		pending, pooled := false, false
		if expect == nil {
			if fd = s.torPool.get(); fd >= 0 {
				pooled = true
			} else {
				fd, pending, err = s.ownConnStart(target)
			}
		} else {
			fd, err = s.ownConn(c, target, expect)
		}
		if err != nil {
			return -1, s.torUnreachable(err, target)
		}
		rc := &rawConn{c: c, fd: fd, pidfd: c.pidfd, deadline: time.Now().Add(s.opts.ConnectTimeout), own: true, pending: pending}
		err = s.handshake(c, rc, dest, host, meanwhile)
		if err == nil {
			return fd, nil
		}
		unix.Close(fd)
		if pooled && closedBeforeRequest(err) {
			continue // the request again, on a new connection
		}
		var pe *pendingError
		if errors.As(err, &pe) {
			// The connect to the SocksPort failed (or timed out), found by the first send.
			err = pe.err
			if errors.Is(err, os.ErrDeadlineExceeded) {
				err = unix.ETIMEDOUT // as ownConn says it
			}
			return -1, s.torUnreachable(err, target)
		}
		return -1, err
	}
}

// ownConnStart starts connecting a new socket of the supervisor's own, on the host network, to
// target and does not wait: pending says the connect is in progress (EINPROGRESS), and the
// caller's first send on it (rawConn with pending) waits for it and reports its error. On
// loopback, where Tor's SocksPort usually is, the handshake has completed by the time connect
// returns, so the first send just goes, where waiting was a poll and a getsockopt(SO_ERROR).
// A send on a connecting TCP socket is a wait for the connection (tcp_sendmsg_locked,
// sk_stream_wait_connect): with MSG_DONTWAIT it says EAGAIN while SYN_SENT, the connect's error
// once it failed (sock_error, then EPIPE without one), and sends once established.
func (s *Supervisor) ownConnStart(target netip.AddrPort) (fd int, pending bool, err error) {
	domain := unix.AF_INET
	if !target.Addr().Unmap().Is4() {
		domain = unix.AF_INET6
	}
	target = netip.AddrPortFrom(target.Addr().Unmap(), target.Port())
	fd, err = unix.Socket(domain, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		if why := outOfDescriptors(err); why != "" {
			return -1, false, &callError{errno: unix.ENOBUFS, level: slog.LevelWarn, msg: why, pc: caller()}
		}
		return -1, false, err
	}
	tuneUp(fd, target)
	sa, _ := toSockaddr(domain, target)
	for {
		err = unix.Connect(fd, sa)
		if err != unix.EINTR {
			break
		}
	}
	switch err {
	case nil:
		return fd, false, nil
	case unix.EINPROGRESS, unix.EALREADY:
		return fd, true, nil
	}
	unix.Close(fd)
	return -1, false, err
}

// pendingError is the error of a connect found by the first send on its socket (rawConn with
// pending): the connect's, not the send's.
type pendingError struct{ err error }

func (e *pendingError) Error() string { return e.err.Error() }
func (e *pendingError) Unwrap() error { return e.err }

// ownConn connects a new socket of the supervisor's own, on the host network, to target (through
// expect's gate when set), waiting as a proxied connect waits: within ConnectTimeout, giving up
// when the calling thread exits, watching the listener while it holds the receiver role.
func (s *Supervisor) ownConn(c *call, target netip.AddrPort, expect func(uint16)) (int, error) {
	domain := unix.AF_INET
	if !target.Addr().Unmap().Is4() {
		domain = unix.AF_INET6
	}
	target = netip.AddrPortFrom(target.Addr().Unmap(), target.Port())
	open := func() (int, error) {
		return unix.Socket(domain, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	}
	fd, err := open()
	if isOutOfDescriptors(err) {
		fd, err = s.whenDescriptorsFree(c, err, open)
	}
	if err != nil {
		if why := outOfDescriptors(err); why != "" {
			return -1, &callError{errno: unix.ENOBUFS, level: slog.LevelWarn, msg: why, pc: caller()}
		}
		return -1, err
	}
	tuneUp(fd, target)
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

// joinRelay joins the program's socket (copy cp) to the supervisor's connection up (which it
// owns from now on, success or not) and relays between them (internal/relay). release, if set,
// runs when the relay ends (or at once on failure).
func (s *Supervisor) joinRelay(c *call, cp int, si sockInfo, dest netip.AddrPort, up int, release func()) error {
	in, err := s.joinInner(c, cp, si, dest)
	if err != nil {
		unix.Close(up)
		if release != nil {
			release()
		}
		return err
	}
	return s.relayJoin(dest, in, up, release)
}

// joinInner connects the program's socket (copy cp) to its inner endpoint for dest in the sandbox
// and returns the supervisor's end of that connection. Its error is the call's answer.
func (s *Supervisor) joinInner(c *call, cp int, si sockInfo, dest netip.AddrPort) (int, error) {
	// The inner listener is in use for the join only: the accepted connection does not need
	// it, and a listener kept for the relay's lifetime would hold dest's port in the sandbox.
	l := s.acquireInner(dest)
	in, err := s.join(c, cp, si, l)
	s.releaseInner(l)
	if err != nil {
		return -1, joinFailed(dest, err)
	}
	return in, nil
}

// joinFailed is the answer to a connect whose join (or relay) failed.
func joinFailed(dest netip.AddrPort, err error) error {
	if isGone(err) {
		return err
	}
	if why := outOfDescriptors(err); why != "" {
		return &callError{errno: unix.ENOBUFS, level: slog.LevelWarn, msg: fmt.Sprintf("connection to %s refused: %s", dest, why), pc: caller()}
	}
	return &callError{errno: unix.ECONNREFUSED, level: slog.LevelWarn, msg: fmt.Sprintf("connection to %s: joining it to the program's socket in the sandbox failed: %v", dest, err), pc: caller()}
}

// unjoin undoes joinInner for a connect that failed after it (Tor refused): the program's socket
// is disconnected (connect AF_UNSPEC, as a connect that failed leaves it: unconnected, and
// connectable again) and the reset that leaves pending on it is taken, so that the program reads
// only the connect's own error; in is closed.
func unjoin(cp, in int) {
	disconnect(cp)
	unix.GetsockoptInt(cp, unix.SOL_SOCKET, unix.SO_ERROR)
	unix.Close(in)
}

// relayJoin relays between in, the supervisor's end of the program's connection in the sandbox,
// and up, its connection out (it owns both from now on, success or not). release, if set, runs
// when the relay ends (or at once on failure).
func (s *Supervisor) relayJoin(dest netip.AddrPort, in, up int, release func()) error {
	// in has TCP_NODELAY from the inner listener (openInner), up from where it was made (tuneUp).
	innerCongestion(in)
	s.relays.Add(1)
	// Both are non-blocking: in from accept4, up from ownConn.
	err := relay.StartNonblocking(in, up, func() {
		s.relays.Add(-1)
		if release != nil {
			release()
		}
	})
	if err != nil {
		// in and up are reset: the program's socket, just connected, reads a reset.
		s.relays.Add(-1)
		if release != nil {
			release()
		}
		return joinFailed(dest, fmt.Errorf("relay: %w", err))
	}
	return nil
}

// connectTCP connects the copy cp of the program's TCP socket the way the policy says, and
// registers it: port 53 of any address goes to the DNS responder; a stand-in address goes through
// Tor by its name; loopback may go direct; the rest goes through Tor. It serves connect() and
// TCP Fast Open sends alike. Its errors are the call's answer.
func (s *Supervisor) connectTCP(c *call, cp int, si sockInfo, dest netip.AddrPort) error {
	if dest.Port() == 53 && s.opts.DNSTCP != nil {
		if err := s.connectDNS(c, cp, si, dest); err != nil {
			return proxyFailed(dest.String(), err)
		}
		return nil
	}
	if l := s.standIn(dest); l.InRange {
		if l.Name == "" {
			return unallocatedStandIn(dest)
		}
		if err := s.proxy(c, cp, si, dest, l.Name, l.Release); err != nil {
			return proxyFailed(fmt.Sprintf("%s:%d (stand-in %s)", l.Name, dest.Port(), dest.Addr()), err)
		}
		return nil
	}
	d := s.pol.Connect(dest)
	switch d.Action {
	case policy.Refuse:
		return refused(d.Errno, d.Reason)
	case policy.Direct:
		return s.direct(c, cp, si, dest)
	}
	if err := s.proxy(c, cp, si, dest, "", nil); err != nil {
		return proxyFailed(dest.String(), err)
	}
	return nil
}

// standIn looks dest's address up among the stand-ins (nothing in range without StandIns).
func (s *Supervisor) standIn(dest netip.AddrPort) standin.Lookup {
	if s.opts.StandIns == nil {
		return standin.Lookup{Release: func() {}}
	}
	return s.opts.StandIns.StandIn(dest.Addr().Unmap())
}

// unallocatedStandIn refuses a connect to a stand-in address no name is bound to.
func unallocatedStandIn(dest netip.AddrPort) error {
	return refused(unix.EHOSTUNREACH, fmt.Sprintf("connection to %s refused: it is a stand-in address that no name was resolved to (or no longer is)", dest))
}

// proxy carries the program's socket (copy cp) through Tor to dest (or to host, when set, by
// name), records it in the registry, and returns nil once the program may use the connection.
// release, if set, runs when the connection's registry entry is freed (for a stand-in: the
// reference that keeps its name from being reused), or at once if the connection fails.
func (s *Supervisor) proxy(c *call, cp int, si sockInfo, dest netip.AddrPort, host string, release func()) (err error) {
	defer func() {
		if err != nil && release != nil {
			release()
		}
	}()
	rc := &rawConn{c: c, fd: cp, pidfd: c.pidfd, deadline: time.Now().Add(s.opts.ConnectTimeout)}
	if err := s.connectTor(rc, si); err != nil {
		return err
	}
	err = s.handshake(c, rc, dest, host, nil)
	if err != nil {
		// The socket is connected to Tor with a failed request on it: make sure the program cannot
		// use it as if it were connected to dest.
		unix.Shutdown(cp, unix.SHUT_RDWR)
		return err
	}
	conn := registry.NewConnSock(sockOf(cp, si), dest, host, release)
	release = nil // owned by conn now
	if err := s.reg.Add(conn); err != nil {
		conn.Put()
		unix.Shutdown(cp, unix.SHUT_RDWR)
		return &callError{errno: unix.EISCONN, msg: fmt.Sprintf("record connection: %v", err)}
	}
	s.sweeper.Added()
	s.proxied.Add(1)
	for n := int64(s.reg.Len()); ; {
		p := s.peak.Load()
		if n <= p || s.peak.CompareAndSwap(p, n) {
			break
		}
	}
	if s.debug() {
		name := host
		if name == "" {
			name = dest.Addr().WithZone("").String()
		}
		c.logf(slog.LevelDebug, "connection to %s (%s) carried through Tor", dest, name)
	}
	return nil
}

// handshake asks Tor, over rc (connected to the SocksPort), for a connection to dest (or to host,
// by name, when set).
func (s *Supervisor) handshake(c *call, rc *rawConn, dest netip.AddrPort, host string, meanwhile func()) error {
	req := socks5.Request{Cmd: socks5.CmdConnect, Host: host, Port: dest.Port()}
	if req.Host == "" {
		req.Host = dest.Addr().WithZone("").String()
	}
	auth := s.credentials(c)
	if s.opts.StepByStep {
		_, err := socks5.Handshake(rc, req, auth)
		return err
	}
	if rc.own {
		// The supervisor's own socket: the answers are peeked and only the handshake's bytes
		// taken (peekReader), with the low-water mark below raised for the first wait only.
		pr := &peekReader{rc: rc, meanwhile: meanwhile}
		if auth == nil && unix.SetsockoptInt(rc.fd, unix.SOL_SOCKET, unix.SO_RCVLOWAT, 2+4) == nil {
			pr.raised = true
		}
		_, err := socks5.HandshakePipelined(struct {
			io.Reader
			io.Writer
		}{pr, rc}, req, auth)
		if err == nil {
			err = pr.done()
		}
		return err // on error the socket is closed: its mark does not matter
	}
	// Pipelined: every answer comes after one round trip. Raising the socket's receive low-water
	// mark to the shortest complete answer prefix (method selection, the auth status if any, the
	// reply header) makes poll wake once for all of it instead of once for the method selection
	// and again for the reply. The mark may be the program's socket option too, so it is put back
	// as it was; nothing else uses the socket meanwhile (the program is inside connect).
	// Only without credentials: with them the method selection comes alone first.
	lowat := auth == nil
	old, gerr := unix.GetsockoptInt(rc.fd, unix.SOL_SOCKET, unix.SO_RCVLOWAT)
	if gerr == nil && lowat {
		unix.SetsockoptInt(rc.fd, unix.SOL_SOCKET, unix.SO_RCVLOWAT, 2+4)
	}
	_, err := socks5.HandshakePipelined(rc, req, auth)
	if gerr == nil && lowat {
		unix.SetsockoptInt(rc.fd, unix.SOL_SOCKET, unix.SO_RCVLOWAT, old)
	}
	return err
}

// connectTor connects the copy to Tor's SocksPort, choosing the address family the socket can use.
// Its errors carry the errno the program gets (a *callError), or say the thread is gone.
func (s *Supervisor) connectTor(rc *rawConn, si sockInfo) error {
	target := s.opts.Socks
	var err error
	switch {
	case s.opts.SocksRelay != nil:
		target = s.opts.SocksRelay.Addr()
		err = connectGated(rc, si, target, s.opts.SocksRelay.Expect)
	case si.domain == unix.AF_INET6:
		v6only, _ := unix.GetsockoptInt(rc.fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY)
		switch {
		case s.opts.SocksV6.IsValid():
			target = s.opts.SocksV6
		case target.Addr().Is4() && v6only == 1:
			return &callError{errno: unix.ENETUNREACH, msg: fmt.Sprintf("an IPv6-only socket (IPV6_V6ONLY) cannot reach Tor's IPv4 SocksPort %s; configure an IPv6 SocksPort (TorAddressIPv6)", target)}
		case target.Addr().Is4():
			target = netip.AddrPortFrom(netip.AddrFrom16(target.Addr().As16()), target.Port())
		}
		sa, _ := toSockaddr(si.domain, target)
		err = connectWait(rc, sa)
	default:
		if !target.Addr().Unmap().Is4() {
			return &callError{errno: unix.EAFNOSUPPORT, msg: fmt.Sprintf("an IPv4 socket cannot reach Tor's IPv6 SocksPort %s; set TorAddress to an IPv4 address", target)}
		}
		sa, _ := toSockaddr(si.domain, target)
		err = connectWait(rc, sa)
	}
	return s.torUnreachable(err, target)
}

// torUnreachable is the error for a failed connect to Tor's SocksPort target (nil stays nil).
func (s *Supervisor) torUnreachable(err error, target netip.AddrPort) error {
	if err != nil {
		var ce *callError
		if isGone(err) || errors.As(err, &ce) {
			return err
		}
		errno := errnoOf(err)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			errno = unix.ETIMEDOUT
		}
		where := target.String()
		if s.opts.SocksRelay != nil {
			where = "(through its unix-socket relay)"
		}
		return &callError{errno: errno, msg: fmt.Sprintf("cannot reach Tor's SocksPort %s: %v (is tor running?)", where, err)}
	}
	return nil
}

// connectWait connects the copy in rc to sa, waiting (within rc's deadline) when the program's
// socket is non-blocking.
func connectWait(rc *rawConn, sa unix.Sockaddr) error {
	err := unix.Connect(rc.fd, sa)
	if err == unix.EINPROGRESS || err == unix.EINTR || err == unix.EALREADY {
		if err = rc.wait(unix.POLLOUT); err == nil {
			var soerr int
			soerr, err = unix.GetsockoptInt(rc.fd, unix.SOL_SOCKET, unix.SO_ERROR)
			if err == nil && soerr != 0 {
				err = unix.Errno(soerr)
			}
		}
	}
	return err
}

// proxyFailed is the answer to a failed proxied connect to target: the errno torsocks gives
// (the SOCKS reply's, or the one a *callError carries) and one clear line.
func proxyFailed(target string, err error) error {
	if isGone(err) {
		return err
	}
	errno := socks5.Errno(err)
	var ce *callError
	if errors.As(err, &ce) {
		errno = ce.errno
	}
	return &callError{errno: errno, level: slog.LevelWarn, msg: fmt.Sprintf("connection to %s through Tor failed: %v", target, err), pc: caller()}
}

// isoCredential is one process's SOCKS credentials under IsolatePID.
type isoCredential struct {
	start string // process start time, so a recycled pid gets new credentials
	auth  *socks5.Auth
}

// credentials returns the SOCKS credentials for a connect made by c's process: under IsolatePID
// its own, random, kept while the process lives.
func (s *Supervisor) credentials(c *call) *socks5.Auth {
	if !s.opts.IsolatePID {
		return s.opts.Auth
	}
	pid := c.pid()
	start := s.tr.Started(pid)
	s.isoMu.Lock()
	defer s.isoMu.Unlock()
	if cr, ok := s.iso[pid]; ok && cr.start == start {
		return cr.auth
	}
	if len(s.iso) >= 1024 {
		// Forget processes that are gone (or whose pid now names another process), so the table
		// stays as large as the tree, not as its history.
		for p, cr := range s.iso {
			if s.tr.Started(p) != cr.start {
				delete(s.iso, p)
			}
		}
	}
	b := make([]byte, 16)
	rand.Read(b)
	a := &socks5.Auth{Username: "torsocks-" + strconv.Itoa(pid) + "-" + hex.EncodeToString(b[:8]), Password: hex.EncodeToString(b[8:])}
	s.iso[pid] = isoCredential{start: start, auth: a}
	return a
}

// rawConn speaks on the copy of the program's socket without touching its flags: the open file
// description (and its O_NONBLOCK) is shared with the program, so it uses MSG_DONTWAIT and poll
// and never hands the descriptor to the Go runtime's poller. It gives up at deadline or when the
// calling thread exits (its pidfd polls readable). The asynchronous path uses it on its own socket
// to Tor too, after the connect was answered: no call (c nil: no receiver role to watch) and no
// thread (pidfd -1).
type rawConn struct {
	c         *call // whose receiver role wait hands over when the listener has something; or nil
	fd, pidfd int
	deadline  time.Time
	own       bool // fd is a socket of the supervisor's own (ownConn), with default options
	// pending: fd's connect is in progress (ownConnStart); the first Write waits for it, and
	// an error before anything was sent is the connect's (a *pendingError).
	pending bool
}

func (r *rawConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		n, _, err := unix.Recvfrom(r.fd, p, unix.MSG_DONTWAIT)
		switch {
		case err == nil && n == 0:
			return 0, io.EOF
		case err == nil:
			return n, nil
		case err == unix.EAGAIN || err == unix.EINTR:
			if err := r.wait(unix.POLLIN); err != nil {
				return 0, err
			}
		default:
			return 0, err
		}
	}
}

func (r *rawConn) Write(p []byte) (int, error) {
	done := 0
	for done < len(p) {
		n, err := unix.SendmsgN(r.fd, p[done:], nil, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
		switch {
		case err == nil:
			done += n
			r.pending = false
		case err == unix.EAGAIN || err == unix.EINTR:
			if err := r.wait(unix.POLLOUT); err != nil {
				return done, r.connectErr(err)
			}
		default:
			return done, r.connectErr(err)
		}
	}
	return done, nil
}

// connectErr is err, as the connect's error (*pendingError) while the connect is pending.
func (r *rawConn) connectErr(err error) error {
	if r.pending {
		return &pendingError{err: err}
	}
	return err
}

func (r *rawConn) wait(events int16) error {
	for {
		left := time.Until(r.deadline)
		if left <= 0 {
			return os.ErrDeadlineExceeded
		}
		ms := int(left / time.Millisecond)
		if ms < 1 {
			ms = 1
		}
		fds := []unix.PollFd{{Fd: int32(r.fd), Events: events}}
		task, lst := -1, -1
		if r.pidfd >= 0 {
			task = len(fds)
			fds = append(fds, unix.PollFd{Fd: int32(r.pidfd), Events: unix.POLLIN})
		}
		if r.c != nil && r.c.lease.Held() {
			// This worker is the receiver: another thread's call must not wait for Tor's answer.
			lst = len(fds)
			fds = append(fds, unix.PollFd{Fd: int32(r.c.s.k.FD()), Events: unix.POLLIN})
		}
		n, err := unix.Poll(fds, ms)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			continue
		}
		if lst >= 0 && fds[lst].Revents != 0 {
			r.c.lease.handOver()
		}
		if task >= 0 && fds[task].Revents != 0 {
			return errTaskGone
		}
		if fds[0].Revents != 0 {
			return nil
		}
	}
}

// peekReader reads the SOCKS5 answers on the supervisor's own socket to Tor (rc) with as few
// system calls as it can: it waits for data first (right after the request nothing has come
// yet), then peeks at everything there is (MSG_PEEK) and hands it out from its buffer. Only the
// bytes handed out are taken off the socket (consume): socks5's handshake reads exactly its
// answers and never a byte more, so what follows the reply (a server that speaks first: an SSH
// or SMTP banner) stays in the socket for the relay.
//
// With raised, the caller has set the socket's SO_RCVLOWAT to the shortest complete answer
// prefix (see handshake), so that the first wait wakes once for the method selection and the
// reply, which Tor sends a circuit's round trip apart. Any later wait (a reply cut in pieces)
// lowers it back to 1 first, so that a short tail cannot stay below the mark; done lowers it at
// the latest, before the relay gets the socket. The common case is setsockopt, poll, one peek,
// one recv and setsockopt, where reading field by field was two more recv and one that found
// nothing.
//
// Never on the program's socket: its options are the program's.
type peekReader struct {
	rc        *rawConn
	buf       [64]byte // Tor's answers (12 bytes, 14 with credentials); a longer one in turns
	have, off int      // bytes peeked into buf (still in the socket); of them, handed out
	raised    bool     // SO_RCVLOWAT is above 1
	waited    bool     // the first wait is done
	meanwhile func()   // run before the first wait (the request is out by then), then nil
}

func (p *peekReader) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	for p.off == p.have {
		// All that was peeked is the handshake's: take it off the socket before waiting, or
		// poll would find it and not wait.
		if err := p.consume(); err != nil {
			return 0, err
		}
		if p.waited {
			if err := p.lower(); err != nil {
				return 0, err
			}
		}
		if f := p.meanwhile; f != nil {
			p.meanwhile = nil
			f()
		}
		if err := p.rc.wait(unix.POLLIN); err != nil {
			return 0, err
		}
		p.waited = true
		n, _, err := unix.Recvfrom(p.rc.fd, p.buf[:], unix.MSG_DONTWAIT|unix.MSG_PEEK)
		switch {
		case err == unix.EAGAIN || err == unix.EINTR:
		case err != nil:
			return 0, err
		case n == 0:
			return 0, io.EOF
		default:
			p.have = n
		}
	}
	n := copy(b, p.buf[p.off:p.have])
	p.off += n
	return n, nil
}

// consume takes the bytes handed out off the socket (they were peeked: they are there).
func (p *peekReader) consume() error {
	for p.off > 0 {
		n, _, err := unix.Recvfrom(p.rc.fd, p.buf[:p.off], unix.MSG_DONTWAIT)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return fmt.Errorf("taking the SOCKS5 answers off the socket: %w", err)
		case n != p.off:
			return fmt.Errorf("taking the SOCKS5 answers off the socket: %d bytes of %d", n, p.off)
		}
		p.have, p.off = 0, 0
	}
	return nil
}

// lower puts SO_RCVLOWAT back to its default, 1, if it was raised.
func (p *peekReader) lower() error {
	if !p.raised {
		return nil
	}
	if err := unix.SetsockoptInt(p.rc.fd, unix.SOL_SOCKET, unix.SO_RCVLOWAT, 1); err != nil {
		return fmt.Errorf("SO_RCVLOWAT: %w", err)
	}
	p.raised = false
	return nil
}

// done ends a handshake that succeeded: its bytes taken, the mark back to 1.
func (p *peekReader) done() error {
	if err := p.consume(); err != nil {
		return err
	}
	return p.lower()
}

// The connects that do not go through Tor.

// connectDNS connects a TCP socket aimed at port 53 (of any address) to the supervisor's DNS
// responder instead: names go through Tor like every other lookup. getpeername still shows the
// nameserver the program asked for.
func (s *Supervisor) connectDNS(c *call, cp int, si sockInfo, dest netip.AddrPort) error {
	rc := &rawConn{c: c, fd: cp, pidfd: c.pidfd, deadline: time.Now().Add(s.opts.ConnectTimeout)}
	if err := connectGated(rc, si, s.opts.DNSTCP.TCPAddr(), s.opts.DNSTCP.Expect); err != nil {
		return fmt.Errorf("DNS over TCP to %s: %w", dest, err)
	}
	conn := registry.NewConnSock(sockOf(cp, si), dest, "", nil)
	if err := s.reg.Add(conn); err != nil {
		conn.Put()
	} else {
		s.sweeper.Added()
	}
	return nil
}

// connectGated connects the program's socket (its copy in rc) to one of the supervisor's own
// loopback listeners (IPv4 target), announcing the socket's local port to the listener first
// (binding it to an ephemeral port if the program has not bound it), so the listener can refuse
// everybody else.
func connectGated(rc *rawConn, si sockInfo, target netip.AddrPort, expect func(uint16)) error {
	local := netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
	if si.domain == unix.AF_INET6 {
		if v6only, _ := unix.GetsockoptInt(rc.fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY); v6only == 1 {
			return &callError{errno: unix.ENETUNREACH, msg: "an IPv6-only socket cannot reach torsocks' own loopback listener " + target.String()}
		}
		target = netip.AddrPortFrom(netip.AddrFrom16(target.Addr().As16()), target.Port())
		local = netip.AddrPortFrom(netip.IPv6Unspecified(), 0)
	}
	bound, err := boundAddr(rc.fd, si.domain)
	if err != nil {
		return err
	}
	if bound.Port() == 0 {
		sa, _ := toSockaddr(si.domain, local)
		if err := unix.Bind(rc.fd, sa); err != nil {
			return fmt.Errorf("bind before connecting to %s: %w", target, err)
		}
		if bound, err = boundAddr(rc.fd, si.domain); err != nil {
			return err
		}
	}
	expect(bound.Port())
	sa, _ := toSockaddr(si.domain, target)
	return connectWait(rc, sa)
}

// direct connects the program's socket to dest itself, with the address it read: the kernel never
// re-reads the program's memory, so a racing thread cannot redirect the connection.
//
// A signal to the supervisor's thread (the Go runtime preempts with SIGURG) interrupts a blocking
// connect while the kernel goes on connecting, and the restarted call reports EALREADY. A
// non-blocking program is told EINPROGRESS, which is what its own connect would have said; a
// blocking one is answered when the connection is made or has failed, as its own connect would be.
func (s *Supervisor) direct(c *call, cp int, si sockInfo, dest netip.AddrPort) error {
	sa, err := toSockaddr(si.domain, dest)
	if err != nil {
		return failed(err)
	}
	c.lease.release() // a loopback server of the program's own may be slow to accept
	err = unix.Connect(cp, sa)
	switch {
	case err == nil:
		return nil
	case err == unix.EINTR || err == unix.EALREADY:
		fl, ferr := unix.FcntlInt(uintptr(cp), unix.F_GETFL, 0)
		if ferr != nil || fl&unix.O_NONBLOCK != 0 {
			return failed(unix.EINPROGRESS)
		}
		rc := &rawConn{c: c, fd: cp, pidfd: c.pidfd, deadline: time.Now().Add(s.opts.ConnectTimeout)}
		if err := rc.wait(unix.POLLOUT); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return failed(unix.ETIMEDOUT)
			}
			return proxyFailed(dest.String(), err)
		}
		soerr, err := unix.GetsockoptInt(cp, unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			return failed(err)
		}
		if soerr != 0 {
			return failed(unix.Errno(soerr))
		}
		return nil
	default:
		return failed(err)
	}
}

// disconnect is connect(fd, {AF_UNSPEC}), which x/sys/unix cannot express.
func disconnect(fd int) error {
	var sa [16]byte // sa_family 0 = AF_UNSPEC
	_, _, errno := unix.Syscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&sa[0])), uintptr(len(sa)))
	if errno != 0 {
		return errno
	}
	return nil
}

// connectUDP serves connect() on a datagram socket. Only sockets of the UDP sandbox exist (others
// are refused at creation; one inherited would be refused at start), and nothing sent from there
// leaves it, so any destination is allowed: glibc connects UDP sockets to every address
// getaddrinfo returns just to sort them, sending nothing. Datagrams the sandbox swallows (anything
// but DNS) are logged by the DNS server's catch-all, and the program's next receive on a connected
// socket fails with ECONNREFUSED. The connect is made on the copy (see copy_linux.go).
func (s *Supervisor) connectUDP(c *call, cp int, si sockInfo, raw []byte) (reply, error) {
	if !s.inSandbox(cp, si) {
		return reply{}, refused(unix.EPERM, "connect on a UDP or raw socket refused: Tor carries TCP only")
	}
	if s.opts.UDPLoopback != nil {
		if dest, unspec, err := parseSockaddr(si.domain, raw); err == nil && !unspec && dest.Addr().IsLoopback() {
			if err := s.opts.UDPLoopback.Ensure(dest); err != nil {
				c.logf(slog.LevelWarn, "UDP to %s (AllowOutboundLocalhost 2): %v", dest, err)
			}
		}
	}
	return s.connectCopy(c, cp, si, raw)
}

// sockOf names the connected socket cp for the registry's sweeper (sockdiag.Prober): its
// addresses, or only its cookie if they cannot be read (the connection is gone already; the
// sweeper drops such an entry).
func sockOf(cp int, si sockInfo) sockdiag.Socket {
	sock, err := sockdiag.SocketOf(cp, si.cookie)
	if err != nil {
		return sockdiag.Socket{Cookie: si.cookie}
	}
	return sock
}
