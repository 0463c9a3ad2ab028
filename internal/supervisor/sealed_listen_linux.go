package supervisor

import (
	"errors"
	"fmt"
	"github.com/gotorsocks/torsocks/internal/relay"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gotorsocks/torsocks/internal/sockdiag"
)

// Listeners of the sealed network (SealedNetwork 1). A TCP socket of the program lives in the
// sandbox namespace, so a listener it opens there is reachable from nowhere but the sandbox. The
// supervisor mirrors it on the host network:
//
//	client on the host ──► mirror (the supervisor's own socket, host network, same address and port)
//	                          │ accept
//	                          ▼
//	     the supervisor's sandbox socket, bound to the client's address and port ──► the program's
//	     listener (sandbox) ── the program's accept() shows the client's address
//	                          relay both ways (startRelay)
//
//   - listen() (listenSealed): the policy decides first, as with SealedNetwork 0 (loopback, or any
//     address with AllowInbound). The supervisor then binds its own socket on the host to the
//     address and port the program's socket is bound to in the sandbox and listens on it; a port
//     taken on the host fails the program's listen() with EADDRINUSE and one line (an address that
//     is not this machine's: EADDRNOTAVAIL), before the program's socket listens. A socket still
//     unbound at listen() (the kernel would bind it to the wildcard address and an ephemeral
//     port) gets the port the host picks for the mirror, so no conflict is possible; a socket
//     the program bound to port 0 got a port that was free on the host at bind() time (bind,
//     below), so the listen fails as above only if something on the host took it in between.
//   - Inbound connections (inbound): accepted on the mirror, then a new sandbox socket of the
//     supervisor's, bound to the client's own address and port (every address is local in the
//     sandbox), connects to the address the client reached (the program's listener takes it,
//     whether bound to it or to the wildcard address), and the two are relayed as a proxied
//     connection is. Nothing the program sets on its sockets reaches the host socket.
//   - Lifetime: the supervisor keeps no descriptor of the program's listener (a copy would keep
//     it open after the program closed it). A watcher lists the sandbox's listening sockets by
//     sock_diag (sockdiag.ListeningTCPCookies on a NETLINK_SOCK_DIAG socket made in the sandbox)
//     every mirrorPoll while any mirror exists, at once when an inbound connection finds no
//     listener, and when the program listens again on a mirrored address; a mirror whose program
//     listeners are all gone (two dumps agree) is closed. So a closed listener's host port is
//     released within mirrorPoll; a client connecting in between is reset.
//   - The program connecting to its own listener (AllowOutboundLocalhost 1): connected in the
//     sandbox directly (connectOwnListener), with no relay; the mirror is for others.

// mirrorPoll is how often the watcher checks that the program's listeners are still there.
const mirrorPoll = 500 * time.Millisecond

// mirror is the supervisor's listening socket on the host network for one address and port
// the program listens on in the sandbox.
type mirror struct {
	host   netip.AddrPort // where it listens (its key in mirrorSet.byHost)
	fd     int            // the listening socket (blocking); closed by its accept loop
	domain int            // the program's listener's family, which the host socket has too

	// progs are the program's listening sockets this mirror serves (one, or several with
	// SO_REUSEPORT), by SO_COOKIE, with the address each is bound to in the sandbox.
	progs   map[uint64]progListener // guarded by mirrorSet.mu
	closing bool                    // guarded by mirrorSet.mu: shut down, its loop ending
	done    chan struct{}           // closed once fd is closed
}

// progListener is a listening socket of the program in the sandbox.
type progListener struct {
	addr netip.AddrPort // what it is bound to
	gen  uint64         // mirrorSet.gen when it was added: only dumps begun later can drop it
}

// mirrorSet is the supervisor's mirrors (the zero value is ready).
type mirrorSet struct {
	mu       sync.Mutex                 // guards byHost, gen, watching, stopped and each mirror's progs and closing
	gen      uint64                     // counts additions to progs and dumps begun
	byHost   map[netip.AddrPort]*mirror // open mirrors
	watching bool                       // the watcher goroutine runs
	stopped  bool                       // closeAll ran: no new mirror
	kick     chan struct{}              // wakes the watcher early (buffered, 1)
	stop     chan struct{}              // closed by closeAll

	diagMu sync.Mutex // guards diag and serialises the dumps on it
	diag   int        // NETLINK_SOCK_DIAG socket in the sandbox, made on first use (0: none)

	warnOnce sync.Once // the watcher's dump failure is logged once
}

// serving returns the mirror serving the program's listener cookie, if any (mu held).
func (ms *mirrorSet) serving(cookie uint64) *mirror {
	for _, m := range ms.byHost {
		if _, ok := m.progs[cookie]; ok {
			return m
		}
	}
	return nil
}

// covers reports whether a listener of the program in the sandbox takes connections to dest.
func (ms *mirrorSet) covers(dest netip.AddrPort) bool {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	d := dest.Addr().Unmap()
	for _, m := range ms.byHost {
		if m.host.Port() != dest.Port() {
			continue
		}
		for _, p := range m.progs {
			la := p.addr.Addr().Unmap()
			if la == d || (la.IsUnspecified() && (m.domain == unix.AF_INET6 || d.Is4())) {
				return true
			}
		}
	}
	return false
}

// listenSealed serves listen() on a TCP socket of the sandbox (copy cp, bound to local there, or
// unbound: local's port is 0), which the policy allowed: the mirror first, then the program's
// socket listens. See the top of this file.
func (s *Supervisor) listenSealed(c *call, cp int, si sockInfo, local netip.AddrPort, backlog int) (reply, error) {
	ms := &s.mirrors
	if local.Port() != 0 {
		if done, r, err := s.listenMirrored(cp, si, local, backlog); done {
			return r, err
		}
	}
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if ms.stopped {
		return reply{}, failed(unix.ENETDOWN)
	}
	m, err := openMirror(cp, si.domain, local, backlog)
	if err != nil {
		return reply{}, err
	}
	shareWildcard(cp, local)
	switch {
	case local.Port() != 0:
		if err := unix.Listen(cp, backlog); err != nil {
			unix.Close(m.fd)
			return reply{}, failed(err)
		}
	default:
		// Unbound: the kernel would bind it to the wildcard address and an ephemeral port; it
		// gets the one the host gave the mirror.
		sa, _ := toSockaddr(si.domain, netip.AddrPortFrom(local.Addr(), m.host.Port()))
		err := unix.Bind(cp, sa)
		if err == nil {
			local = netip.AddrPortFrom(local.Addr(), m.host.Port())
			if err := unix.Listen(cp, backlog); err != nil {
				unix.Close(m.fd)
				return reply{}, failed(err)
			}
			break
		}
		unix.Close(m.fd)
		if err != unix.EINVAL {
			return reply{}, refused(errnoOf(err), fmt.Sprintf("listening on %s: binding the program's socket in the sandbox to the port of its mirror on this machine failed: %v", local, err))
		}
		// Bound to an address without a port yet (IP_BIND_ADDRESS_NO_PORT): listen() picks
		// it in the sandbox, and the mirror follows.
		if err := unix.Listen(cp, backlog); err != nil {
			return reply{}, failed(err)
		}
		if local, err = boundAddr(cp, si.domain); err == nil {
			m, err = openMirror(cp, si.domain, local, backlog)
		}
		if err != nil {
			unix.Shutdown(cp, unix.SHUT_RD) // a listener stops listening: the call failed
			return reply{}, failed(err)
		}
	}
	ms.gen++
	m.progs = map[uint64]progListener{si.cookie: {addr: local, gen: ms.gen}}
	if ms.byHost == nil {
		ms.byHost = map[netip.AddrPort]*mirror{}
		ms.kick = make(chan struct{}, 1)
		ms.stop = make(chan struct{})
	}
	ms.byHost[m.host] = m
	go s.acceptLoop(m)
	if !ms.watching {
		ms.watching = true
		go s.watchMirrors()
	}
	if s.debug() {
		c.logf(slog.LevelDebug, "listener on %s (sandbox) mirrored on this machine's %s", local, m.host)
	}
	return value(0), nil
}

// shareWildcard gives a program's listener on the wildcard address SO_REUSEPORT (set by the
// supervisor on the copy, before it listens), so that the inner listener of a connect to a
// destination with the same port can still be bound in the sandbox (openInner; the
// asynchronous path's hold listener too). The kernel delivers a connection to the listener
// bound to its exact address first, so the program's listener never gets its own outgoing
// connections. The program sees the option set, and a second socket of its own with
// SO_REUSEPORT may then bind the same port, where without torsocks it would get EADDRINUSE.
func shareWildcard(cp int, local netip.AddrPort) {
	if local.Addr().IsUnspecified() {
		unix.SetsockoptInt(cp, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}
}

// listenMirrored serves listen() on a socket bound to local when a mirror serves it already
// (listen() again, for a new backlog) or listens on local: another socket the kernel let share
// the address (SO_REUSEPORT), or the program's listener there is gone and the watcher has not
// seen it yet. done is false when no mirror is there (any more): the caller opens one.
func (s *Supervisor) listenMirrored(cp int, si sockInfo, local netip.AddrPort, backlog int) (done bool, r reply, err error) {
	ms := &s.mirrors
	ms.mu.Lock()
	m := ms.serving(si.cookie)
	if m == nil {
		m = ms.byHost[local]
	}
	ms.mu.Unlock()
	if m == nil {
		return false, reply{}, nil
	}
	live, gen := s.liveListeners()
	ms.mu.Lock()
	if m.closing {
		ms.mu.Unlock()
		<-m.done // its port is free again
		return false, reply{}, nil
	}
	defer ms.mu.Unlock()
	ms.prune(m, live, gen)
	if err := unix.Listen(cp, backlog); err != nil {
		return true, reply{}, failed(err)
	}
	ms.gen++
	m.progs[si.cookie] = progListener{addr: local, gen: ms.gen}
	return true, value(0), nil
}

// openMirror makes the supervisor's listening socket on the host network for a program socket
// of family domain bound to local in the sandbox (port 0: any port). cp is the program's socket,
// whose IPV6_V6ONLY the mirror copies. Its errors are the call's answer.
func openMirror(cp, domain int, local netip.AddrPort, backlog int) (*mirror, error) {
	fd, err := unix.Socket(domain, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, failed(err)
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	// SO_REUSEADDR: connections of an earlier listener on this port may be in TIME_WAIT.
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	if domain == unix.AF_INET6 {
		v6only, err := unix.GetsockoptInt(cp, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY)
		if err != nil {
			return nil, failed(err)
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, v6only); err != nil {
			return nil, failed(err)
		}
	}
	sa, err := toSockaddr(domain, local)
	if err == nil {
		err = unix.Bind(fd, sa)
	}
	if err != nil {
		switch errnoOf(err) {
		case unix.EADDRINUSE:
			return nil, refused(unix.EADDRINUSE, fmt.Sprintf("listening on %s refused: that port is in use on this machine, where torsocks makes the program's listener reachable (SealedNetwork)", local))
		case unix.EADDRNOTAVAIL:
			return nil, refused(unix.EADDRNOTAVAIL, fmt.Sprintf("listening on %s refused: not an address of this machine", local))
		}
		return nil, refused(errnoOf(err), fmt.Sprintf("listening on %s: binding its mirror on this machine failed: %v", local, err))
	}
	if err := unix.Listen(fd, backlog); err != nil {
		return nil, refused(errnoOf(err), fmt.Sprintf("listening on %s: its mirror on this machine: %v", local, err))
	}
	bound, err := boundAddr(fd, domain)
	if err != nil {
		return nil, failed(err)
	}
	ok = true
	return &mirror{host: bound, fd: fd, domain: domain, done: make(chan struct{})}, nil
}

// acceptLoop accepts the host's connections on m until closeMirror shuts it down, then closes
// it.
func (s *Supervisor) acceptLoop(m *mirror) {
	defer close(m.done)
	defer unix.Close(m.fd)
	for {
		fd, _, err := unix.Accept4(m.fd, unix.SOCK_CLOEXEC)
		s.mirrors.mu.Lock()
		closing := m.closing
		s.mirrors.mu.Unlock()
		if closing {
			if err == nil {
				unix.Close(fd)
			}
			return
		}
		switch {
		case err == nil:
			// Counted from now (WaitRelays): the program may accept, write and exit before
			// the relay has started.
			s.relays.Add(1)
			go s.inbound(m, fd)
		case err == unix.EINTR || err == unix.ECONNABORTED || err == unix.EAGAIN:
		case err == unix.EMFILE || err == unix.ENFILE || err == unix.ENOBUFS || err == unix.ENOMEM:
			// The connection waits in the backlog; try again a little later.
			s.log.Warn(fmt.Sprintf("accepting a connection for the program's listener on %s: %v", m.host, err))
			time.Sleep(100 * time.Millisecond)
		default:
			s.log.Warn(fmt.Sprintf("the program's listener on %s is no longer reachable from this machine: accept: %v", m.host, err))
			s.mirrors.mu.Lock()
			s.closeMirror(m)
			s.mirrors.mu.Unlock()
			return
		}
	}
}

// closeMirror stops m (mirrors.mu held): removed from the set, its loop woken (shutdown makes a
// blocked accept return) to close it.
func (s *Supervisor) closeMirror(m *mirror) {
	if m.closing {
		return
	}
	m.closing = true
	if s.mirrors.byHost[m.host] == m {
		delete(s.mirrors.byHost, m.host)
	}
	unix.Shutdown(m.fd, unix.SHUT_RDWR)
}

// closeMirrors closes every mirror and stops the watcher (the supervisor is done).
func (s *Supervisor) closeMirrors() {
	ms := &s.mirrors
	ms.mu.Lock()
	if !ms.stopped {
		ms.stopped = true
		for _, m := range ms.byHost {
			s.closeMirror(m)
		}
		if ms.stop != nil {
			close(ms.stop)
		}
	}
	ms.mu.Unlock()
	ms.diagMu.Lock()
	if ms.diag > 0 {
		unix.Close(ms.diag)
		ms.diag = 0
	}
	ms.diagMu.Unlock()
}

// kickWatcher makes the watcher check now.
func (s *Supervisor) kickWatcher() {
	select {
	case s.mirrors.kick <- struct{}{}:
	default:
	}
}

// watchMirrors closes the mirrors whose program listeners are gone; it runs while any mirror is
// open.
func (s *Supervisor) watchMirrors() {
	ms := &s.mirrors
	t := time.NewTicker(mirrorPoll)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-ms.kick:
		case <-ms.stop:
		}
		live, gen := s.liveListeners()
		ms.mu.Lock()
		if ms.stopped || len(ms.byHost) == 0 {
			ms.watching = false
			ms.mu.Unlock()
			return
		}
		if live != nil {
			for _, m := range ms.byHost {
				ms.prune(m, live, gen)
				if len(m.progs) == 0 {
					if s.debug() {
						s.log.Debug(fmt.Sprintf("the program's listener on %s is closed: its mirror on this machine is closed too", m.host))
					}
					s.closeMirror(m)
				}
			}
		}
		ms.mu.Unlock()
	}
}

// prune drops from m the program's listeners that the dumps begun at gen no longer list (mu
// held); those added since are kept, the dumps may have missed them.
func (ms *mirrorSet) prune(m *mirror, live map[uint64]struct{}, gen uint64) {
	if live == nil {
		return
	}
	for k, p := range m.progs {
		if _, ok := live[k]; !ok && p.gen < gen {
			delete(m.progs, k)
		}
	}
}

// liveListeners returns the cookies of the sandbox's listening TCP sockets: the union of two
// dumps (a dump can miss a socket that stayed, see sockdiag), nil if they could not be listed;
// and the generation the dumps began at (see prune).
func (s *Supervisor) liveListeners() (map[uint64]struct{}, uint64) {
	ms := &s.mirrors
	ms.mu.Lock()
	ms.gen++
	gen := ms.gen
	ms.mu.Unlock()
	return s.dumpListeners(), gen
}

// dumpListeners lists the sandbox's listening sockets (see liveListeners).
func (s *Supervisor) dumpListeners() map[uint64]struct{} {
	ms := &s.mirrors
	ms.diagMu.Lock()
	defer ms.diagMu.Unlock()
	warn := func(err error) {
		ms.mu.Lock()
		stopped := ms.stopped // the run is ending: the sandbox may be closed already
		ms.mu.Unlock()
		if !stopped {
			ms.warnOnce.Do(func() {
				s.log.Warn(fmt.Sprintf("cannot watch the program's listeners (their mirrors stay open until it exits): %v", err))
			})
		}
	}
	if ms.diag <= 0 {
		fd, err := s.opts.Sandbox.SocketUnpooled(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
		if err != nil {
			warn(err)
			return nil
		}
		ms.diag = fd
	}
	live, err := sockdiag.ListeningTCPCookies(ms.diag)
	if err == nil {
		var again map[uint64]struct{}
		if again, err = sockdiag.ListeningTCPCookies(ms.diag); err == nil {
			for k := range again {
				live[k] = struct{}{}
			}
			return live
		}
	}
	warn(err)
	unix.Close(ms.diag)
	ms.diag = 0
	return nil
}

// inbound carries one connection accepted on mirror m (the supervisor's host socket fd) to the
// program's listener in the sandbox.
func (s *Supervisor) inbound(m *mirror, fd int) {
	in, err := s.dialListener(m, fd)
	if err != nil {
		s.relays.Add(-1)
		// Reset, as a closed port would.
		unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
		unix.Close(fd)
		if errors.Is(err, unix.ECONNREFUSED) {
			s.kickWatcher() // the program's listener is gone
		}
		if s.debug() {
			s.log.Debug(fmt.Sprintf("inbound connection on %s: %v", m.host, err))
		}
		return
	}
	if err := s.startRelay(in, fd); err != nil {
		s.log.Warn(fmt.Sprintf("inbound connection on %s: %v", m.host, err))
	}
}

// dialListener connects a new sandbox socket of the supervisor's, bound to the address and port
// of the client of the host connection fd, to the address that client reached. The program's
// listener (bound to it, or to the wildcard address) takes it.
func (s *Supervisor) dialListener(m *mirror, fd int) (int, error) {
	peer, err := clientAddr(fd)
	if err != nil {
		return -1, err
	}
	target, err := boundAddr(fd, m.domain)
	if err != nil {
		return -1, err
	}
	if target.Addr().IsLinkLocalUnicast() || peer.Addr().IsLinkLocalUnicast() {
		// A scoped (link-local) address names an interface of this machine, which the sandbox
		// does not have: through its loopback to the wildcard listener that took it.
		lo := netip.IPv6Loopback()
		target, peer = netip.AddrPortFrom(lo, target.Port()), netip.AddrPortFrom(lo, 0)
	}
	// The client's port may be taken in the sandbox: then any port of the client's address;
	// then, in case that fails too, any address.
	var last error
	for _, src := range []netip.AddrPort{peer, netip.AddrPortFrom(peer.Addr(), 0), {}} {
		in, err := s.opts.Sandbox.Socket(m.domain, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return -1, fmt.Errorf("a socket in the sandbox: %w", err)
		}
		err = dialFrom(in, m.domain, src, target)
		if err == nil {
			return in, nil
		}
		unix.Close(in)
		if errors.Is(err, unix.ECONNREFUSED) || errors.Is(err, unix.ETIMEDOUT) {
			return -1, fmt.Errorf("the program's listener %s: %w", target, err)
		}
		last = err
	}
	return -1, fmt.Errorf("the program's listener %s: %w", target, last)
}

// dialFrom binds in (a non-blocking socket of family domain) to src when valid and connects it to
// target, waiting for the handshake (on the sandbox's loopback it is immediate unless the
// program's backlog is full).
func dialFrom(in, domain int, src, target netip.AddrPort) error {
	if src.IsValid() {
		unix.SetsockoptInt(in, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		if domain == unix.AF_INET6 {
			unix.SetsockoptInt(in, unix.IPPROTO_IPV6, unix.IPV6_FREEBIND, 1)
		}
		sa, err := toSockaddr(domain, src)
		if err != nil {
			return err
		}
		if err := unix.Bind(in, sa); err != nil {
			return fmt.Errorf("bind %s: %w", src, err)
		}
	}
	sa, err := toSockaddr(domain, target)
	if err != nil {
		return err
	}
	err = unix.Connect(in, sa)
	if err != unix.EINPROGRESS && err != unix.EINTR {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return unix.ETIMEDOUT
		}
		fds := []unix.PollFd{{Fd: int32(in), Events: unix.POLLOUT}}
		n, err := unix.Poll(fds, int(left/time.Millisecond)+1)
		if err == unix.EINTR || (err == nil && n == 0) {
			continue
		}
		if err != nil {
			return err
		}
		soerr, err := unix.GetsockoptInt(in, unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			return err
		}
		if soerr != 0 {
			return unix.Errno(soerr)
		}
		return nil
	}
}

// clientAddr returns a connected socket's peer address, with its zone.
func clientAddr(fd int) (netip.AddrPort, error) {
	sa, err := unix.Getpeername(fd)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("getpeername: %w", err)
	}
	switch v := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(v.Addr), uint16(v.Port)), nil
	case *unix.SockaddrInet6:
		a := netip.AddrFrom16(v.Addr)
		if v.ZoneId != 0 {
			a = a.WithZone(fmt.Sprint(v.ZoneId))
		}
		return netip.AddrPortFrom(a, uint16(v.Port)), nil
	}
	return netip.AddrPort{}, errors.New("getpeername: not an inet address")
}

// startRelay relays between in (the supervisor's sandbox end) and up (its host end), both
// connected, owned from now on, closed when the relay ends. It is the one place the listener
// code starts a relay; the accept loop counted it in s.relays.
func (s *Supervisor) startRelay(in, up int) error {
	tuneInner(in)
	unix.SetsockoptInt(up, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	if err := relay.Start(in, up, func() { s.relays.Add(-1) }); err != nil {
		s.relays.Add(-1) // in and up are reset and closed
		return fmt.Errorf("relay: %w", err)
	}
	return nil
}

// connectOwnListener connects the program's sandbox socket (copy cp) to dest, where one of the
// program's own listeners is (mirrors.covers): inside the sandbox, no relay. The policy allowed
// the connection (a loopback destination with AllowOutboundLocalhost).
func (s *Supervisor) connectOwnListener(c *call, cp int, si sockInfo, dest netip.AddrPort) error {
	sa, err := toSockaddr(si.domain, dest)
	if err != nil {
		return failed(err)
	}
	rc := &rawConn{c: c, fd: cp, pidfd: c.pidfd, deadline: time.Now().Add(s.opts.ConnectTimeout)}
	if err := connectWait(rc, sa); err != nil {
		if errors.Is(err, errTaskGone) || isGone(err) {
			return err
		}
		return failed(err)
	}
	return nil
}

// sandboxLoZone is the zone of the sandbox's lo (ifindex 1 in a new namespace), where the inner
// endpoint of a scoped destination is.
const sandboxLoZone = "1"

// bind serves bind(fd, addr, addrlen), notified with SealedNetwork only. A TCP socket of the
// sandbox bound to port 0 would get its port from the sandbox, which knows nothing of the host's
// ports, and the mirror of a listener on it could then find the port taken on the host
// (listenSealed: EADDRINUSE; a server that binds port 0 and listens, as test suites and
// notebooks do, failed so about once in a few hundred runs on a busy machine). Here the port is
// picked on the host instead, where the kernel knows which are free (hostPort), and the copy of
// the program's socket is bound to it in the sandbox; a port taken in the sandbox is tried again.
// Every other bind runs as without torsocks: a bind sends nothing, whatever the address.
func (s *Supervisor) bind(c *call, fd int, addr, addrlen uint64) (reply, error) {
	cp, si, err := c.sock(fd)
	if err != nil {
		return reply{}, fromErr("bind", err)
	}
	defer unix.Close(cp)
	if !si.isTCP() || !s.sealed(cp, si) {
		return letRun(), nil
	}
	raw, err := c.read(addr, int(min(addrlen, maxSockaddrLen)))
	if err != nil {
		return reply{}, fromErr("bind", err)
	}
	local, unspec, err := parseSockaddr(si.domain, raw)
	if err != nil || unspec || local.Port() != 0 || local.Addr().Zone() != "" {
		return letRun(), nil // the kernel answers as it would (EINVAL, EAFNOSUPPORT...)
	}
	if noPort, _ := unix.GetsockoptInt(cp, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT); noPort != 0 {
		return letRun(), nil // the port is picked at connect, per destination: not a listener's
	}
	for range 8 {
		port, err := hostPort(cp, si.domain, local.Addr())
		if err != nil {
			// Not an address of this machine (nothing could be mirrored there), or no socket
			// for the probe: the sandbox picks the port, as it always did. A bind sends
			// nothing, so letting it run cannot reach the network.
			return letRun(), nil
		}
		sa, err := toSockaddr(si.domain, netip.AddrPortFrom(local.Addr(), port))
		if err != nil {
			return letRun(), nil
		}
		switch err := unix.Bind(cp, sa); err {
		case nil:
			return value(0), nil
		case unix.EADDRINUSE:
			continue // taken in the sandbox (a connection of the program's): another one
		default:
			return reply{}, failed(err)
		}
	}
	return letRun(), nil
}

// hostPort returns a port that is free on the host network for a listener of family domain on
// addr (IPV6_V6ONLY as on the program's socket cp): the one the kernel gives a socket of the
// supervisor's own bound there to port 0, closed at once.
func hostPort(cp, domain int, addr netip.Addr) (uint16, error) {
	fd, err := unix.Socket(domain, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	if domain == unix.AF_INET6 {
		v6only, err := unix.GetsockoptInt(cp, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY)
		if err != nil {
			return 0, err
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, v6only); err != nil {
			return 0, err
		}
	}
	sa, err := toSockaddr(domain, netip.AddrPortFrom(addr, 0))
	if err != nil {
		return 0, err
	}
	if err := unix.Bind(fd, sa); err != nil {
		return 0, err
	}
	bound, err := boundAddr(fd, domain)
	if err != nil {
		return 0, err
	}
	return bound.Port(), nil
}
