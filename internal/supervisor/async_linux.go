package supervisor

import (
	"container/list"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/gotorsocks/torsocks/internal/policy"
	"github.com/gotorsocks/torsocks/internal/relay"
	"github.com/gotorsocks/torsocks/internal/socks5"
)

// Asynchronous connects (AsyncConnect 1, issue 11), on the sealed network (sealed_linux.go).
//
// A connect on a non-blocking sealed socket P to a destination D that goes through Tor is
// answered EINPROGRESS at once, and the kernel itself keeps P "in progress" until Tor has
// answered, so that P becomes writable only with a connection to D and SO_ERROR carries the
// errno a blocking connect gets:
//
//  1. hold: the supervisor holds a listener of its own in the sandbox bound to D (holdListener)
//     with a socket filter that drops every packet. It connects P itself (its pidfd_getfd copy;
//     never CONTINUE): P's SYN reaches the hold listener and is dropped, so P sits in SYN_SENT,
//     as against a slow server: no POLLOUT, a second connect() gets EALREADY from the kernel,
//     getpeername ENOTCONN. A raw TCP socket in the sandbox (sniffer) notes P's SYN, whose
//     sequence number (the ISN) step 3 needs.
//  2. Tor says yes: the supervisor binds a new sandbox socket S to D (SO_REUSEPORT, alongside the
//     hold listener) and connects it to P's local address. S's SYN meets P in SYN_SENT: TCP
//     simultaneous open, both become ESTABLISHED, P is writable with SO_ERROR 0 and peer D.
//     S is relayed to the supervisor's own connection through Tor (relayJoined), as a
//     blocking connect's endpoint is.
//  3. Tor says no: the connect of P is failed with the errno of proxyFailed: ECONNREFUSED by a
//     reset from D acknowledging P's SYN (sendReset), ENETUNREACH and EHOSTUNREACH by an ICMP
//     (ICMPv6) destination unreachable quoting P's SYN (sendUnreachable), both sent from raw
//     sockets in the sandbox once the sniffer has P's ISN (in SYN_SENT the kernel aborts the
//     connect with the errno); ETIMEDOUT by TCP_USER_TIMEOUT, which fails P at its next SYN
//     retransmission (within 1 s in the first 5 s, then within the SYN backoff: 2, 4 ... 64 s);
//     any other errno (Tor's onion-service codes, EIO, EINVAL) as ECONNABORTED by SOCK_DESTROY
//     (sock_diag), the only abort errno the kernel offers for it.
//
// No byte of the SOCKS exchange can reach P: the supervisor speaks SOCKS on a socket of its own.
// The kernel, not the supervisor, keeps the program's view exact (poll, epoll registered before
// or after, EALREADY, EISCONN, SO_ERROR, getpeername), so nothing in the program has to be
// emulated. The program's own limits still apply to P as to a direct connection (its SYN
// retries, TCP_SYNCNT, TCP_USER_TIMEOUT: 131 s by default); ConnectTimeout bounds the Tor side.
//
// If the supervisor dies, the hold listeners go with it: a pending P's next SYN retransmission
// meets no listener and fails ECONNREFUSED; relayed connections end as blocking ones do.
//
// Limits: blocking connects keep the synchronous path (sealed_linux.go), as do DNS over TCP and
// Direct destinations (local, fast). A hold listener and an inner listener of the synchronous
// path must not share a destination (both listen on it, see acquireHold): a non-blocking connect
// to a destination whose inner listener is in use is served synchronously (answered 0 or the
// errno once Tor has answered, as before), and a blocking connect to a destination whose hold
// listener is in use waits for it (released once its connect is joined or failed; at most 5 s,
// then EADDRINUSE: ECONNREFUSED and a line). Either listener kept idle gives way to the other.

// asyncState is the state of the asynchronous connects (Supervisor.async).
type asyncState struct {
	initOnce sync.Once
	initErr  error
	sniff    [2]int // raw IPPROTO_TCP sockets in the sandbox (IPv4, IPv6), SYNs only
	icmp     [2]int // raw ICMP and ICMPv6 sockets in the sandbox, send only
	rst      [2]int // raw IPPROTO_RAW sockets in the sandbox (IPv4, IPv6; header included), send only
	diag     int    // NETLINK_SOCK_DIAG socket in the sandbox (SOCK_DESTROY)

	diagMu sync.Mutex // one request at a time on diag

	// sniffMu[i] is held while sniff[i] is drained (drainSYNs), and guards sniffBuf[i].
	sniffMu  [2]sync.Mutex
	sniffBuf [2][]byte
	// unread counts the SYNs of the synchronous path's joins (join) queued on the sniffers
	// since an asynchronous connect last read them all: no completion reads them.
	unread atomic.Int32

	mu       sync.Mutex // guards holds, holdIdle, pending, early, warned
	holds    map[netip.AddrPort]*holdListener
	holdIdle idleList[*holdListener] // those with no use (idle.go)
	pending  map[connTuple]*pendingConnect
	early    map[connTuple]uint32 // ISNs of SYNs seen before their connect was recorded
	warned   bool                 // the "served synchronously" warning was logged
}

// connTuple names a connection attempt by P's local address and the destination, both unmapped.
type connTuple struct{ local, remote netip.AddrPort }

// holdListener is a listening socket in the sandbox bound to dest that drops every packet. It
// is kept while a connect to dest is pending (refs), and then for holdIdleTime more (idle), so
// that sequential asynchronous connects to one destination do not make and close a listener each
// (a socket from the sandbox's pool, the filter, two options, bind, listen and close: about 8
// system calls a connect): at most maxIdleHolds are kept idle, the least recently used going
// first. An idle one gives way to an inner listener of the synchronous path (dropIdleHold).
type holdListener struct {
	dest   netip.AddrPort
	fd     int
	refs   int           // guarded by asyncState.mu
	idle   *list.Element // guarded by asyncState.mu: its place in holdIdle while refs == 0
	unused chan struct{} // guarded by asyncState.mu: closed when refs drops to 0
}

const (
	holdIdleTime = time.Second
	maxIdleHolds = 16
)

// pendingConnect is one asynchronous connect waiting for Tor.
type pendingConnect struct {
	tuple    connTuple
	dest     netip.AddrPort // as the program gave it
	domain   int            // P's family
	cookie   uint64
	keep     int // P's copy (the call's, connect leaves it open), held while pending (closed when done)
	hold     *holdListener
	host     string // stand-in name, or ""
	target   string // for log lines
	release  func() // the stand-in's reference, or nil
	auth     *socks5.Auth
	tid      int // the calling thread
	tgid     int // its process, if the call knew it (else 0: looked up by logPid, only to log)
	deadline time.Time

	isn     uint32 // guarded by asyncState.mu
	haveISN bool   // guarded by asyncState.mu
}

// noteISN records p's ISN; s.async.mu is held.
func (p *pendingConnect) noteISN(isn uint32) {
	p.isn, p.haveISN = isn, true
}

// connectAsync serves, when it can, a connect on a sealed TCP socket asynchronously (see the top
// of this file). st is cp's TCP state, read by the caller (not connected). handled false: the
// caller serves it synchronously.
func (s *Supervisor) connectAsync(c *call, cp int, si sockInfo, dest netip.AddrPort, st int) (handled bool, err error) {
	fl, ferr := unix.FcntlInt(uintptr(cp), unix.F_GETFL, 0)
	if ferr != nil {
		return true, failed(ferr)
	}
	nonblock := fl&unix.O_NONBLOCK != 0
	if st == unix.BPF_TCP_SYN_SENT || st == unix.BPF_TCP_SYN_RECV {
		// An asynchronous connect of this socket is in progress: the kernel's answer, EALREADY,
		// or for a blocking socket the outcome once there is one.
		if nonblock {
			return true, failed(unix.EALREADY)
		}
		c.lease.release()
		rc := &rawConn{c: c, fd: cp, pidfd: c.pidfd, deadline: time.Now().Add(s.opts.ConnectTimeout + 10*time.Second)}
		if err := rc.wait(unix.POLLOUT); err != nil {
			return true, failed(err)
		}
		soerr, err := unix.GetsockoptInt(cp, unix.SOL_SOCKET, unix.SO_ERROR)
		if err == nil && soerr != 0 {
			err = unix.Errno(soerr)
		}
		if err != nil {
			return true, failed(err)
		}
		return true, nil
	}
	if !nonblock {
		return false, nil
	}
	if dest.Port() == 53 && s.opts.DNSTCP != nil {
		return false, nil
	}
	host := ""
	var release func()
	if l := s.standIn(dest); l.InRange {
		if l.Name == "" {
			return true, unallocatedStandIn(dest)
		}
		host, release = l.Name, l.Release
	}
	if host == "" {
		d := s.pol.Connect(dest)
		switch d.Action {
		case policy.Refuse:
			return true, refused(d.Errno, d.Reason)
		case policy.Direct:
			return false, nil
		}
	}
	serveSync := func(why error) (bool, error) {
		if release != nil {
			release()
		}
		s.async.mu.Lock()
		first := !s.async.warned
		s.async.warned = true
		s.async.mu.Unlock()
		if first {
			c.logf(slog.LevelWarn, "asynchronous connects unavailable, non-blocking connects wait for Tor (AsyncConnect): %v", why)
		}
		return false, nil
	}
	if err := s.asyncInit(); err != nil {
		return serveSync(err)
	}
	h, err := s.acquireHold(dest)
	if errors.Is(err, errInnerInUse) {
		// The synchronous path holds an inner listener for dest: served synchronously.
		if release != nil {
			release()
		}
		return false, nil
	}
	if err != nil {
		return serveSync(err)
	}
	sa, err := toSockaddr(si.domain, dest)
	if err != nil {
		s.releaseHold(h)
		if release != nil {
			release()
		}
		return true, failed(err)
	}
	if s.async.unread.Load() >= maxUnreadSYNs {
		// Room for P's SYN on the sniffers, which the synchronous path's SYNs fill (each
		// completion reads those of its own family, see drainSYNs).
		s.async.unread.Store(0)
		s.drainSYNs(0, false)
		s.drainSYNs(1, false)
	}
	cerr := unix.Connect(cp, sa)
	if cerr != unix.EINPROGRESS {
		// The kernel's own answer: the failure of an earlier asynchronous attempt, reported
		// once (and the socket reset), or an error of the socket's.
		s.releaseHold(h)
		if release != nil {
			release()
		}
		if cerr == nil {
			// Only the hold listener is at dest and it answers nothing: not reached.
			unix.Shutdown(cp, unix.SHUT_RDWR)
			return true, &callError{errno: unix.ECONNREFUSED, level: slog.LevelWarn, msg: fmt.Sprintf("connection to %s: the held connect completed by itself", dest), pc: caller()}
		}
		return true, failed(cerr)
	}
	local, err := boundAddr(cp, si.domain)
	if err != nil {
		// P is in SYN_SENT with nobody to complete it: fail it now.
		unix.SetsockoptInt(cp, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, 1)
		unix.Shutdown(cp, unix.SHUT_RDWR)
		s.releaseHold(h)
		if release != nil {
			release()
		}
		return true, failed(err)
	}
	target := dest.String()
	if host != "" {
		target = fmt.Sprintf("%s:%d (stand-in %s)", host, dest.Port(), dest.Addr())
	}
	p := &pendingConnect{
		tuple:  connTuple{unmap(local), unmap(dest)},
		dest:   dest,
		domain: si.domain, cookie: si.cookie, keep: cp, hold: h,
		host: host, target: target, release: release,
		auth: s.credentials(c), tid: c.tid, tgid: c.tgid,
		deadline: time.Now().Add(s.opts.ConnectTimeout),
	}
	s.async.mu.Lock()
	if s.async.pending == nil {
		s.async.pending = map[connTuple]*pendingConnect{}
	}
	if old := s.async.pending[p.tuple]; old != nil {
		// The kernel gave this tuple to a new socket: the old one is closed.
		delete(s.async.pending, old.tuple)
	}
	s.async.pending[p.tuple] = p
	if isn, ok := s.async.early[p.tuple]; ok {
		p.noteISN(isn)
		delete(s.async.early, p.tuple)
	}
	s.async.mu.Unlock()
	c.kept = true // cp is p.keep now (no duplicate: a fcntl and a close less per connect)
	go s.completeAsync(p)
	return true, failed(unix.EINPROGRESS)
}

func unmap(ap netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()) }

// connecting reports whether TCP socket fd is in SYN_SENT or SYN_RECV (tcpState: its state).
func connecting(fd int) (bool, int) {
	st, err := tcpState(fd)
	return err == nil && (st == unix.BPF_TCP_SYN_SENT || st == unix.BPF_TCP_SYN_RECV), st
}

// completeAsync asks Tor for p's destination and completes or fails p's connect accordingly.
func (s *Supervisor) completeAsync(p *pendingConnect) {
	// P's SYN has left (with the connect): it and whatever else is queued are read now, off the
	// receiver's path.
	s.drainSYNs(sniffIndex(p.tuple.remote), false)
	up, err := s.asyncTor(p)
	if err == nil {
		err = s.asyncJoin(p, up)
		if err == nil {
			p.release = nil // the relay owns it
		}
	}
	if err != nil {
		s.asyncFail(p, err)
	}
	s.async.mu.Lock()
	if s.async.pending[p.tuple] == p {
		delete(s.async.pending, p.tuple)
	}
	s.async.mu.Unlock()
	if p.hold != nil {
		s.releaseHold(p.hold)
	}
	unix.Close(p.keep)
	if p.release != nil {
		p.release()
	}
}

// asyncTor is the supervisor's own connection through Tor to p's destination: connected to the
// SocksPort (through its gate when it is a unix socket) and past the SOCKS5 handshake. Its
// socket is made with raw non-blocking system calls (torSocket), not a net.Dialer (no context
// goroutine, no keep-alive options, no getsockname and getpeername: the dialer was 11.5% of the
// supervisor's CPU under concurrent asynchronous connects), and waited on in the Go runtime's
// poller (polledConn), not in ppoll: with many connects waiting for Tor at once, each blocked
// in a system call, the runtime kept taking their processors back and handing them over
// (sysmon every 20 µs, a thread woken and put back to sleep each time).
func (s *Supervisor) asyncTor(p *pendingConnect) (int, error) {
	target := s.opts.Socks
	var expect func(uint16)
	if s.opts.SocksRelay != nil {
		target, expect = s.opts.SocksRelay.Addr(), s.opts.SocksRelay.Expect
	}
	target = unmap(target)
	req := socks5.Request{Cmd: socks5.CmdConnect, Host: p.host, Port: p.dest.Port()}
	if req.Host == "" {
		req.Host = p.dest.Addr().WithZone("").String()
	}
	if expect == nil {
		defer s.torPool.refill(s, target)
	}
	for {
		// A connection made ahead (torpool_linux.go) if there is one.
		var pc *polledConn
		var err error
		pooled := false
		if expect == nil {
			if fd := s.torPool.get(); fd >= 0 {
				if pc, err = newPolledConn(fd, p.deadline); err != nil {
					return -1, err // fd closed with the file
				}
				pooled = true
			}
		}
		if pc == nil {
			if pc, err = torSocket(target, expect, p.deadline); err != nil {
				// As a net.Dialer's error was: its errno, ETIMEDOUT at the deadline.
				errno := unix.ECONNREFUSED
				if errors.Is(err, os.ErrDeadlineExceeded) {
					errno = unix.ETIMEDOUT
				} else {
					errors.As(err, &errno)
				}
				return -1, s.torUnreachable(errno, target)
			}
		}
		// No call: this runs after the connect was answered, on a goroutine of its own.
		if s.opts.StepByStep {
			_, err = socks5.Handshake(pc, req, p.auth)
		} else {
			_, err = socks5.HandshakePipelined(pc, req, p.auth)
		}
		if err == nil {
			return pc.detach()
		}
		pc.f.Close()
		if !pooled || !closedBeforeRequest(err) {
			return -1, err
		}
		// Made ahead, and closed by the SocksPort since get found it alive: on a new one.
	}
}

// polledConn is a non-blocking socket of the supervisor's own registered with the Go runtime's
// poller (os.NewFile): its waits park the goroutine, and its deadline is the file's.
type polledConn struct {
	f  *os.File
	rc syscall.RawConn
}

func newPolledConn(fd int, deadline time.Time) (*polledConn, error) {
	f := os.NewFile(uintptr(fd), "tor")
	if err := f.SetDeadline(deadline); err != nil {
		f.Close()
		return nil, fmt.Errorf("not pollable: %w", err)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &polledConn{f: f, rc: rc}, nil
}

func (c *polledConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	var err error
	if rerr := c.rc.Read(func(fd uintptr) bool {
		for {
			n, _, err = unix.Recvfrom(int(fd), p, unix.MSG_DONTWAIT)
			if err != unix.EINTR {
				return err != unix.EAGAIN
			}
		}
	}); rerr != nil {
		return 0, rerr
	}
	if err == nil && n == 0 {
		return 0, io.EOF
	}
	return n, err
}

func (c *polledConn) Write(p []byte) (int, error) {
	done := 0
	var err error
	if werr := c.rc.Write(func(fd uintptr) bool {
		for done < len(p) {
			var n int
			n, err = unix.SendmsgN(int(fd), p[done:], nil, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
			switch err {
			case nil:
				done += n
			case unix.EINTR:
			case unix.EAGAIN:
				return false
			default:
				return true
			}
		}
		return true
	}); werr != nil {
		return done, werr
	}
	return done, err
}

// detach takes the socket out of the poller and returns a descriptor of it (a duplicate: the
// file's own is closed with it) for the relay, which makes its own waits.
func (c *polledConn) detach() (int, error) {
	fd := -1
	var err error
	if cerr := c.rc.Control(func(s uintptr) { fd, err = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); cerr != nil {
		err = cerr
	}
	c.f.Close()
	if err != nil {
		return -1, fmt.Errorf("dup: %w", err)
	}
	return fd, nil
}

// torSocket connects a new socket of the supervisor's own (non-blocking, close-on-exec,
// TCP_NODELAY as a Go connection has it) to target, an IPv4 or IPv6 address, announcing its
// local port to expect first when set (target is then IPv4). It waits until deadline
// (os.ErrDeadlineExceeded) in the Go runtime's poller (polledConn).
func torSocket(target netip.AddrPort, expect func(uint16), deadline time.Time) (*polledConn, error) {
	domain := unix.AF_INET
	if !target.Addr().Is4() {
		domain = unix.AF_INET6
	}
	fd, err := unix.Socket(domain, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	tuneUp(fd, target)
	if expect != nil {
		if err := unix.Bind(fd, &unix.SockaddrInet4{}); err != nil {
			unix.Close(fd)
			return nil, err
		}
		bound, err := boundAddr(fd, unix.AF_INET)
		if err != nil {
			unix.Close(fd)
			return nil, err
		}
		expect(bound.Port())
	}
	sa, err := toSockaddr(domain, target)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	if err := unix.Connect(fd, sa); err != nil && err != unix.EINPROGRESS && err != unix.EINTR {
		unix.Close(fd)
		return nil, err
	}
	pc, err := newPolledConn(fd, deadline)
	if err != nil {
		return nil, err // fd closed with the file
	}
	// Connecting again says how it went: EISCONN once connected (on loopback the handshake is
	// done when the first connect returns: no wait), EALREADY while in progress, the error
	// once it failed.
	var cerr error
	if werr := pc.rc.Write(func(s uintptr) bool {
		switch err := unix.Connect(int(s), sa); err {
		case nil, unix.EISCONN:
			cerr = nil
		case unix.EALREADY, unix.EINPROGRESS, unix.EINTR:
			return false
		default:
			cerr = err
		}
		return true
	}); werr != nil {
		cerr = werr
	}
	if cerr != nil {
		pc.f.Close()
		return nil, cerr
	}
	return pc, nil
}

// asyncJoin completes p's connect with the simultaneous open of step 2 and relays it to up
// (which it owns from now on).
func (s *Supervisor) asyncJoin(p *pendingConnect, up int) error {
	if inProgress, st := connecting(p.keep); !inProgress {
		// The program's socket failed or was closed meanwhile (its own timeout): nothing to do.
		unix.Close(up)
		if s.debug() {
			s.logPending(p, slog.LevelDebug, fmt.Sprintf("connection to %s: the program's socket was gone (state %d) when Tor answered", p.target, st), caller())
		}
		return nil
	}
	// Counted from before the program's socket can become connected (WaitRelays): the program
	// may write and exit before the relay has started.
	s.relays.Add(1)
	in, err := s.simultaneousOpen(p)
	if err != nil {
		s.relays.Add(-1)
		unix.Close(up)
		return fmt.Errorf("joining it to the program's socket in the sandbox: %w", err)
	}
	// P is connected: its SYNs are over, the hold listener is no longer needed for it (the
	// sooner it is idle, the sooner a blocking connect to dest can have its inner listener).
	s.releaseHold(p.hold)
	p.hold = nil
	if err := s.relayJoined(in, up, p.release); err != nil {
		return fmt.Errorf("joining it to the program's socket in the sandbox: %w", err)
	}
	s.proxied.Add(1)
	if s.debug() {
		s.logPending(p, slog.LevelDebug, fmt.Sprintf("connection to %s carried through Tor (sealed network, asynchronous connect)", p.target), caller())
	}
	return nil
}

// relayJoined relays between the supervisor's end of a joined connection (in) and its
// connection through Tor (up, TCP_NODELAY already), both non-blocking and owned from now on;
// done runs when the relay ends. The caller counted it in s.relays.
func (s *Supervisor) relayJoined(in, up int, done func()) error {
	tuneInner(in)
	err := relay.StartNonblocking(in, up, func() {
		s.relays.Add(-1)
		if done != nil {
			done()
		}
	})
	if err != nil {
		s.relays.Add(-1) // in and up are reset and closed
		return fmt.Errorf("relay: %w", err)
	}
	return nil
}

// simultaneousOpen connects a new sandbox socket bound to p's destination to p's socket.
func (s *Supervisor) simultaneousOpen(p *pendingConnect) (int, error) {
	dest, local := p.tuple.remote, p.tuple.local
	domain := unix.AF_INET
	if !dest.Addr().Is4() {
		domain = unix.AF_INET6
	}
	fd, err := s.opts.Sandbox.Socket(domain, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	if err := bindShared(fd, domain, dest); err != nil {
		return -1, err
	}
	sa, _ := toSockaddr(domain, local)
	if err := unix.Connect(fd, sa); err != nil && err != unix.EINPROGRESS {
		return -1, fmt.Errorf("connect %s -> %s: %w", dest, local, err)
	}
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	for deadline := time.Now().Add(5 * time.Second); ; {
		left := time.Until(deadline)
		if left <= 0 {
			return -1, fmt.Errorf("connect %s -> %s: %w", dest, local, unix.ETIMEDOUT)
		}
		n, err := unix.Poll(pfd, int(left/time.Millisecond)+1)
		if err == unix.EINTR || (err == nil && n == 0) {
			continue
		}
		if err != nil {
			return -1, err
		}
		break
	}
	if soerr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR); err != nil || soerr != 0 {
		if err == nil {
			err = unix.Errno(soerr)
		}
		return -1, fmt.Errorf("connect %s -> %s: %w", dest, local, err)
	}
	ok = true
	return fd, nil
}

// bindShared binds fd to dest alongside the hold listener (and the sockets of earlier joins).
func bindShared(fd, domain int, dest netip.AddrPort) error {
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
		return fmt.Errorf("SO_REUSEPORT: %w", err)
	}
	if domain == unix.AF_INET6 {
		unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1)
		// As openInner: an IPv6 address must be on an interface to be bound.
		unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_FREEBIND, 1)
	}
	sa, err := toSockaddr(domain, dest)
	if err == nil {
		err = unix.Bind(fd, sa)
	}
	if err != nil {
		return fmt.Errorf("bind %s in the sandbox: %w", dest, err)
	}
	return nil
}

// asyncFail fails p's connect with the errno a blocking connect gets for err (step 3), and logs
// the line a blocking connect logs.
func (s *Supervisor) asyncFail(p *pendingConnect, err error) {
	var ce *callError
	if !errors.As(proxyFailed(p.target, err), &ce) {
		ce = &callError{errno: errnoOf(err)}
	}
	if ce.msg != "" {
		s.logPending(p, ce.level, ce.msg, ce.pc)
	}
	if inProgress, _ := connecting(p.keep); !inProgress {
		return // already failed or closed
	}
	how := "SOCK_DESTROY"
	var ferr error
	switch ce.errno {
	case unix.ETIMEDOUT:
		// Fails P at its next SYN retransmission (the timer clamps to the user timeout). The
		// hold listener must stay until then: without it the retransmitted SYN would be
		// answered with a reset (ECONNREFUSED).
		ferr = unix.SetsockoptInt(p.keep, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, 1)
		how = "TCP_USER_TIMEOUT"
		if ferr == nil && waitFailed(p.keep, maxSynBackoff) {
			return
		}
	case unix.ECONNREFUSED:
		// A reset, not an ICMP port unreachable: see sendReset.
		how = "RST"
		isn, ok := s.waitISN(p)
		if ferr = errNoSYN; ok {
			ferr = s.sendReset(p, isn)
		}
		if ferr == nil && waitFailed(p.keep, time.Second) {
			return
		}
	case unix.ENETUNREACH, unix.EHOSTUNREACH:
		how = "ICMP"
		isn, ok := s.waitISN(p)
		if ferr = errNoSYN; ok {
			ferr = s.sendUnreachable(p, ce.errno, isn)
		}
		if ferr == nil && waitFailed(p.keep, time.Second) {
			return
		}
	}
	if ferr2 := s.destroy(p); ferr2 != nil {
		// Last resort: P fails ETIMEDOUT at its next retransmission.
		unix.SetsockoptInt(p.keep, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, 1)
		s.logPending(p, slog.LevelWarn, fmt.Sprintf("connection to %s: failing the program's connect (%s: %v; SOCK_DESTROY: %v): it fails at its next SYN retransmission", p.target, how, ferr, ferr2), caller())
	}
}

var errNoSYN = errors.New("the program's SYN was not seen")

// waitISN reads the sniffer until it has seen p's SYN (it left with the supervisor's connect of
// P: normally queued already, or read by a later connect's drain), waiting a little (1.5 s:
// P's first retransmission, which carries the same ISN, comes after 1 s), and returns its ISN.
func (s *Supervisor) waitISN(p *pendingConnect) (uint32, bool) {
	i := sniffIndex(p.tuple.remote)
	for deadline := time.Now().Add(1500 * time.Millisecond); ; {
		s.drainSYNs(i, true)
		s.async.mu.Lock()
		isn, ok := p.isn, p.haveISN
		s.async.mu.Unlock()
		left := time.Until(deadline)
		if ok || left <= 0 {
			return isn, ok
		}
		pfd := []unix.PollFd{{Fd: int32(s.async.sniff[i]), Events: unix.POLLIN}}
		unix.Poll(pfd, int(min(left, 100*time.Millisecond)/time.Millisecond)+1)
	}
}

// maxSynBackoff bounds the time to a SYN retransmission (TCP_RTO_MAX is 120 s).
const maxSynBackoff = 125 * time.Second

// waitFailed waits until socket fd is no longer connecting (true), or timeout (false).
func waitFailed(fd int, timeout time.Duration) bool {
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); {
		n, err := unix.Poll(pfd, int(time.Until(deadline)/time.Millisecond)+1)
		if err == nil && n > 0 {
			inProgress, _ := connecting(fd)
			return !inProgress
		}
		if err != nil && err != unix.EINTR {
			return false
		}
	}
	return false
}

// logPending logs msg on behalf of p's process, attributed to pc. The process is looked up here,
// not at connect (a /proc read per connect, 6% of the supervisor's CPU under 16 connecting
// goroutines): the thread that waits for its connect is normally still there; if not, its id.
func (s *Supervisor) logPending(p *pendingConnect, level slog.Level, msg string, pc uintptr) {
	if !s.log.Enabled(context.Background(), level) {
		return
	}
	pid := p.tgid
	if pid == 0 {
		pid = p.tid
		if tgid, err := s.tr.Tgid(p.tid); err == nil {
			pid = tgid
		}
	}
	s.logPid(pid, level, msg, pc)
}

// logPid logs msg on behalf of the program's process pid, attributed to pc.
func (s *Supervisor) logPid(pid int, level slog.Level, msg string, pc uintptr) {
	ctx := context.Background()
	if !s.log.Enabled(ctx, level) {
		return
	}
	r := slog.NewRecord(time.Now(), level, msg, pc)
	r.AddAttrs(slog.Int("pid", pid))
	s.log.Handler().Handle(ctx, r)
}

// The hold listeners.

// errInnerInUse: an inner listener of the synchronous path is in use for the destination.
var errInnerInUse = errors.New("an inner listener is in use for the destination")

// A hold listener and an inner listener (sealed_linux.go) must never listen on one destination
// together: both are bound with SO_REUSEPORT, so the kernel would spread the SYNs between them
// (a program's asynchronous connect accepted by the inner listener, connected to nobody; a
// blocking connect's SYN dropped by the hold listener). Exclusion: a hold listener is made under
// innerMu after checking that no inner listener is registered for its destination (an idle one
// is closed; one in use: errInnerInUse, the connect is served synchronously); an inner listener's
// socket is made (join, under its own mu) after its registration (under innerMu) and after
// checking that no hold listener exists for it (an idle one is closed; one in use: EADDRINUSE).
// Lock order: innerMu, then an innerListener's mu, then async.mu.

// acquireHold returns the hold listener for dest (unmapped), made if needed, counted as used
// until releaseHold; errInnerInUse if the synchronous path has an inner listener in use there.
func (s *Supervisor) acquireHold(dest netip.AddrPort) (*holdListener, error) {
	dest = unmap(dest)
	if h := s.reuseHold(dest); h != nil {
		return h, nil
	}
	s.innerMu.Lock()
	defer s.innerMu.Unlock()
	if s.clearIdleInner(dest) {
		return nil, errInnerInUse
	}
	s.async.mu.Lock()
	defer s.async.mu.Unlock()
	if h := s.async.holds[dest]; h != nil { // made meanwhile
		s.useHold(h)
		return h, nil
	}
	domain := unix.AF_INET
	if !dest.Addr().Is4() {
		domain = unix.AF_INET6
	}
	fd, err := s.opts.Sandbox.Socket(domain, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if err := attachFilter(fd, dropAll); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("hold listener %s: %w", dest, err)
	}
	err = bindShared(fd, domain, dest)
	if err == nil {
		err = unix.Listen(fd, 1)
	}
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	if s.async.holds == nil {
		s.async.holds = map[netip.AddrPort]*holdListener{}
	}
	h := &holdListener{dest: dest, fd: fd, refs: 1, unused: make(chan struct{})}
	s.async.holds[dest] = h
	return h, nil
}

// reuseHold counts one more use of the hold listener for dest if there is one.
func (s *Supervisor) reuseHold(dest netip.AddrPort) *holdListener {
	s.async.mu.Lock()
	defer s.async.mu.Unlock()
	h := s.async.holds[dest]
	if h != nil {
		s.useHold(h)
	}
	return h
}

// useHold counts one more use of h; async.mu is held.
func (s *Supervisor) useHold(h *holdListener) {
	if h.idle != nil {
		s.async.holdIdle.unpark(h.idle)
		h.idle = nil
	}
	if h.refs == 0 {
		h.unused = make(chan struct{})
	}
	h.refs++
}

// releaseHold drops one use of h; after the last, h stays idle for holdIdleTime (if fewer than
// maxIdleHolds others are idle).
func (s *Supervisor) releaseHold(h *holdListener) {
	a := &s.async
	a.mu.Lock()
	defer a.mu.Unlock()
	h.refs--
	if h.refs > 0 {
		return
	}
	close(h.unused)
	h.idle = a.holdIdle.park(h, s.dropHold, s.expireHolds)
}

// dropHold forgets the idle hold listener h and closes it; async.mu is held.
func (s *Supervisor) dropHold(h *holdListener) {
	a := &s.async
	if h.idle != nil {
		a.holdIdle.unpark(h.idle)
		h.idle = nil
	}
	if a.holds[h.dest] == h {
		delete(a.holds, h.dest)
	}
	unix.Close(h.fd)
	h.fd = -1
}

// holdInUse reports whether a hold listener for dest (an inner listener's destination) is in
// use, with a channel closed when it no longer is; one kept idle is closed, so that the inner
// listener can take its place.
func (s *Supervisor) holdInUse(dest netip.AddrPort) (bool, <-chan struct{}) {
	a := &s.async
	a.mu.Lock()
	defer a.mu.Unlock()
	h := a.holds[unmap(dest)]
	if h == nil && dest.Addr().Zone() != "" {
		// A scoped destination: the inner listener's zone is the sandbox's lo (joinDest), the
		// hold listener's the program's.
		for _, o := range a.holds {
			if o.dest.Port() == dest.Port() && o.dest.Addr().WithZone("") == dest.Addr().Unmap().WithZone("") {
				h = o
				break
			}
		}
	}
	switch {
	case h == nil:
		return false, nil
	case h.refs > 0:
		return true, h.unused
	}
	s.dropHold(h)
	return false, nil
}

// expireHolds closes the hold listeners idle for holdIdleTime, and comes back for the others.
func (s *Supervisor) expireHolds() {
	a := &s.async
	a.mu.Lock()
	defer a.mu.Unlock()
	a.holdIdle.expire(s.dropHold, s.expireHolds)
}

// Socket filters (classic BPF).
var (
	dropAll = []bpf.Instruction{bpf.RetConstant{Val: 0}}
	// synOnly4 keeps the TCP segments with SYN and without ACK; a raw IPv4 socket's filter sees
	// the IP header first.
	synOnly4 = []bpf.Instruction{
		bpf.LoadMemShift{Off: 0},           // X = IP header length
		bpf.LoadIndirect{Off: 13, Size: 1}, // TCP flags
		bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0x12},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0x02, SkipFalse: 1},
		bpf.RetConstant{Val: 0xffff},
		bpf.RetConstant{Val: 0},
	}
	// synOnly6: a raw IPv6 socket's filter sees the TCP header first.
	synOnly6 = []bpf.Instruction{
		bpf.LoadAbsolute{Off: 13, Size: 1},
		bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0x12},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0x02, SkipFalse: 1},
		bpf.RetConstant{Val: 0xffff},
		bpf.RetConstant{Val: 0},
	}
)

func attachFilter(fd int, prog []bpf.Instruction) error {
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return err
	}
	f := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		f[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	fp := unix.SockFprog{Len: uint16(len(f)), Filter: &f[0]}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fp); err != nil {
		return fmt.Errorf("SO_ATTACH_FILTER: %w", err)
	}
	return nil
}

// asyncInit makes, once, the raw and netlink sockets of the sandbox that steps 1 and 3 use, and
// starts the sniffers.
func (s *Supervisor) asyncInit() error {
	s.async.initOnce.Do(func() { s.async.initErr = s.asyncOpen() })
	return s.async.initErr
}

func (s *Supervisor) asyncOpen() error {
	a := &s.async
	a.sniff, a.icmp, a.rst, a.diag = [2]int{-1, -1}, [2]int{-1, -1}, [2]int{-1, -1}, -1
	if s.opts.Sandbox == nil {
		return errors.New("no sandbox")
	}
	mk := func(domain, typ, proto int) (int, error) {
		fd, err := s.opts.Sandbox.SocketUnpooled(domain, typ|unix.SOCK_CLOEXEC, proto)
		if err != nil {
			return -1, fmt.Errorf("socket(%d, %d, %d) in the sandbox: %w", domain, typ, proto, err)
		}
		return fd, nil
	}
	var err error
	for i, domain := range []int{unix.AF_INET, unix.AF_INET6} {
		if a.sniff[i], err = mk(domain, unix.SOCK_RAW, unix.IPPROTO_TCP); err != nil {
			return err
		}
		prog := synOnly4
		if domain == unix.AF_INET6 {
			prog = synOnly6
			if err := unix.SetsockoptInt(a.sniff[i], unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1); err != nil {
				return fmt.Errorf("IPV6_RECVPKTINFO: %w", err)
			}
		}
		if err := attachFilter(a.sniff[i], prog); err != nil {
			return err
		}
		unix.SetsockoptInt(a.sniff[i], unix.SOL_SOCKET, unix.SO_RCVBUF, 1<<20)
		a.sniffBuf[i] = make([]byte, 256+128)
		proto := unix.IPPROTO_ICMP
		if domain == unix.AF_INET6 {
			proto = unix.IPPROTO_ICMPV6
		}
		if a.icmp[i], err = mk(domain, unix.SOCK_RAW, proto); err != nil {
			return err
		}
		if err := attachFilter(a.icmp[i], dropAll); err != nil {
			return err
		}
		if a.rst[i], err = mk(domain, unix.SOCK_RAW, unix.IPPROTO_RAW); err != nil {
			return err
		}
		if domain == unix.AF_INET6 {
			if err := unix.SetsockoptInt(a.rst[i], unix.IPPROTO_IPV6, unix.IPV6_HDRINCL, 1); err != nil {
				return fmt.Errorf("IPV6_HDRINCL: %w", err)
			}
		}
		if err := attachFilter(a.rst[i], dropAll); err != nil {
			return err
		}
	}
	if a.diag, err = mk(unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_SOCK_DIAG); err != nil {
		return err
	}
	return nil
}

// sniffIndex is the sniffer that sees the SYNs to dest: IPv4 (an IPv6 socket's too, to a mapped
// address) or IPv6.
func sniffIndex(dest netip.AddrPort) int {
	if dest.Addr().Unmap().Is4() {
		return 0
	}
	return 1
}

// maxUnreadSYNs: after this many SYNs of the synchronous path, an asynchronous connect reads the
// sniffers before it connects P (the queues, SO_RCVBUF, hold a few hundred).
const maxUnreadSYNs = 64

// drainSYNs reads, without waiting, the SYNs of the sandbox that the sniffer i (sniffIndex) has
// queued, and records the ISNs of pending connects (P's SYN and its retransmissions carry the
// same one). The sniffers are read here, by each asynchronous connect's completion (and before
// its connect when the synchronous path queued many, see unread) and by waitISN, not by
// goroutines of their own: a goroutine blocked in recvmsg, woken for every SYN of the sandbox
// (two an asynchronous connect, one a synchronous), cost two context switches a SYN and kept
// the Go runtime retaking its processor (sysmon every 20 µs). Only an ISN that step 3 needs is
// ever used; should a queue ever be full when P's SYN comes, waitISN has its retransmission
// (same ISN) a second later. wait: take the sniffer even if another drain holds it (else that
// one reads what is queued).
func (s *Supervisor) drainSYNs(i int, wait bool) {
	a := &s.async
	if wait {
		a.sniffMu[i].Lock()
	} else if !a.sniffMu[i].TryLock() {
		return
	}
	defer a.sniffMu[i].Unlock()
	fd, domain := a.sniff[i], unix.AF_INET
	if i == 1 {
		domain = unix.AF_INET6
	}
	buf, oob := a.sniffBuf[i][:256], a.sniffBuf[i][256:]
	for {
		n, oobn, from, err := recvmsgFrom(fd, buf, oob, unix.MSG_DONTWAIT)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return // EAGAIN: nothing more queued
		}
		var src, dst netip.Addr
		tcp := buf[:n]
		if domain == unix.AF_INET {
			if n < 20 {
				continue
			}
			ihl := int(buf[0]&0x0f) * 4
			if n < ihl+8 {
				continue
			}
			src, _ = netip.AddrFromSlice(buf[12:16])
			dst, _ = netip.AddrFromSlice(buf[16:20])
			tcp = buf[ihl:n]
		} else {
			if !from.Addr().Is6() || n < 8 {
				continue
			}
			src = from.Addr()
			msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
			if err != nil {
				continue
			}
			for _, m := range msgs {
				if m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_PKTINFO && len(m.Data) >= 16 {
					dst = netip.AddrFrom16([16]byte(m.Data[:16]))
				}
			}
			if !dst.IsValid() {
				continue
			}
		}
		t := connTuple{
			local:  netip.AddrPortFrom(src.Unmap(), binary.BigEndian.Uint16(tcp[0:])),
			remote: netip.AddrPortFrom(dst.Unmap(), binary.BigEndian.Uint16(tcp[2:])),
		}
		isn := binary.BigEndian.Uint32(tcp[4:])
		s.async.mu.Lock()
		if p := s.async.pending[t]; p != nil {
			p.noteISN(isn)
		} else if len(s.async.holds) > 0 {
			// Perhaps the SYN of a connect about to be recorded.
			if s.async.early == nil || len(s.async.early) >= 4096 {
				s.async.early = map[connTuple]uint32{}
			}
			s.async.early[t] = isn
		}
		s.async.mu.Unlock()
	}
}

// sendReset fails p's connect with ECONNREFUSED by a reset from the destination that
// acknowledges p's SYN (isn+1), sent from a raw socket in the sandbox: in SYN_SENT the kernel
// takes it (tcp_reset), sets the socket's error and only then closes it and wakes its waiters.
//
// An ICMP port unreachable gives the same errno but not atomically: tcp_v4_err and tcp_v6_err
// (Linux 6.18 here) first queue the ICMP on the socket's error queue, even without IP_RECVERR,
// which wakes its waiters (poll reports POLLERR for a non-empty error queue), and only then set
// the error and close it (tcp_done_with_error). A
// program polling on another CPU in that window read SO_ERROR 0 with the socket still in
// SYN_SENT, took the connect for a success and got ECONNREFUSED from its first write
// (TestSealedRefusedExact; TestSealedNoLeakedRelays flaked on it).
func (s *Supervisor) sendReset(p *pendingConnect, isn uint32) error {
	local, dest := p.tuple.local, p.tuple.remote
	tcp := make([]byte, 20)
	binary.BigEndian.PutUint16(tcp[0:], dest.Port())
	binary.BigEndian.PutUint16(tcp[2:], local.Port())
	binary.BigEndian.PutUint32(tcp[8:], isn+1) // ack
	tcp[12] = 5 << 4                           // data offset: 20 bytes
	tcp[13] = 0x14                             // RST|ACK
	if local.Addr().Is4() {
		d4, l4 := dest.Addr().As4(), local.Addr().As4()
		pseudo := make([]byte, 0, 12+len(tcp))
		pseudo = append(pseudo, d4[:]...)
		pseudo = append(pseudo, l4[:]...)
		pseudo = append(pseudo, 0, unix.IPPROTO_TCP, 0, byte(len(tcp)))
		binary.BigEndian.PutUint16(tcp[16:], inetChecksum(append(pseudo, tcp...)))
		pkt := make([]byte, 20, 20+len(tcp))
		pkt[0] = 0x45
		binary.BigEndian.PutUint16(pkt[2:], uint16(20+len(tcp)))
		pkt[8], pkt[9] = 64, unix.IPPROTO_TCP // the kernel fills in the id and the checksum
		copy(pkt[12:16], d4[:])
		copy(pkt[16:20], l4[:])
		return unix.Sendto(s.async.rst[0], append(pkt, tcp...), 0, &unix.SockaddrInet4{Addr: l4})
	}
	d16, l16 := dest.Addr().As16(), local.Addr().As16()
	pseudo := make([]byte, 0, 40+len(tcp))
	pseudo = append(pseudo, d16[:]...)
	pseudo = append(pseudo, l16[:]...)
	pseudo = append(pseudo, 0, 0, 0, byte(len(tcp)), 0, 0, 0, unix.IPPROTO_TCP)
	binary.BigEndian.PutUint16(tcp[16:], inetChecksum(append(pseudo, tcp...)))
	pkt := make([]byte, 40, 40+len(tcp))
	pkt[0] = 0x60
	binary.BigEndian.PutUint16(pkt[4:], uint16(len(tcp)))
	pkt[6], pkt[7] = unix.IPPROTO_TCP, 64
	copy(pkt[8:24], d16[:])
	copy(pkt[24:40], l16[:])
	return unix.Sendto(s.async.rst[1], append(pkt, tcp...), 0, &unix.SockaddrInet6{Addr: l16})
}

// sendUnreachable fails p's connect with errno (ENETUNREACH, EHOSTUNREACH) by an ICMP (ICMPv6)
// destination unreachable that quotes p's SYN (isn). Not atomic (see sendReset): in a narrow
// window a program polling on another CPU can read SO_ERROR 0 before the error is set.
func (s *Supervisor) sendUnreachable(p *pendingConnect, errno unix.Errno, isn uint32) error {
	local, dest := p.tuple.local, p.tuple.remote
	tcp := make([]byte, 8)
	binary.BigEndian.PutUint16(tcp[0:], local.Port())
	binary.BigEndian.PutUint16(tcp[2:], dest.Port())
	binary.BigEndian.PutUint32(tcp[4:], isn)
	if local.Addr().Is4() {
		code := map[unix.Errno]byte{unix.ENETUNREACH: 0, unix.EHOSTUNREACH: 1, unix.ECONNREFUSED: 3}[errno]
		msg := make([]byte, 8+20+8)
		msg[0], msg[1] = 3, code // destination unreachable
		ip := msg[8:28]
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], 60)
		ip[8], ip[9] = 64, unix.IPPROTO_TCP
		l4, d4 := local.Addr().As4(), dest.Addr().As4()
		copy(ip[12:16], l4[:])
		copy(ip[16:20], d4[:])
		binary.BigEndian.PutUint16(ip[10:], inetChecksum(ip))
		copy(msg[28:], tcp)
		binary.BigEndian.PutUint16(msg[2:], inetChecksum(msg))
		return unix.Sendto(s.async.icmp[0], msg, 0, &unix.SockaddrInet4{Addr: l4})
	}
	code := map[unix.Errno]byte{unix.ENETUNREACH: 0, unix.EHOSTUNREACH: 3, unix.ECONNREFUSED: 4}[errno]
	msg := make([]byte, 8+40+8)
	msg[0], msg[1] = 1, code // destination unreachable; the kernel fills the checksum
	ip := msg[8:48]
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], 32)
	ip[6], ip[7] = unix.IPPROTO_TCP, 64
	l16, d16 := local.Addr().As16(), dest.Addr().As16()
	copy(ip[8:24], l16[:])
	copy(ip[24:40], d16[:])
	copy(msg[48:], tcp)
	return unix.Sendto(s.async.icmp[1], msg, 0, &unix.SockaddrInet6{Addr: l16})
}

func inetChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// destroy aborts p's socket with ECONNABORTED (SOCK_DESTROY, by its addresses and cookie).
func (s *Supervisor) destroy(p *pendingConnect) error {
	local, err := boundAddr(p.keep, p.domain)
	if err != nil {
		return err
	}
	peer, err := unix.Getpeername(p.keep)
	_ = peer
	dest := p.dest
	if err == nil {
		dest = sockaddrAddrPort(peer)
	}
	if p.domain == unix.AF_INET6 {
		local = netip.AddrPortFrom(netip.AddrFrom16(local.Addr().As16()), local.Port())
		dest = netip.AddrPortFrom(netip.AddrFrom16(dest.Addr().As16()), dest.Port())
	}
	const hdr = unix.SizeofNlMsghdr
	msg := make([]byte, hdr+56)
	binary.LittleEndian.PutUint32(msg[0:], uint32(len(msg)))
	binary.LittleEndian.PutUint16(msg[4:], unix.SOCK_DESTROY)
	binary.LittleEndian.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	r := msg[hdr:]
	r[0], r[1] = byte(p.domain), unix.IPPROTO_TCP
	binary.LittleEndian.PutUint32(r[4:], ^uint32(0)) // all states
	id := r[8:]
	binary.BigEndian.PutUint16(id[0:], local.Port())
	binary.BigEndian.PutUint16(id[2:], dest.Port())
	if p.domain == unix.AF_INET {
		l4, d4 := local.Addr().As4(), dest.Addr().As4()
		copy(id[4:], l4[:])
		copy(id[20:], d4[:])
	} else {
		l16, d16 := local.Addr().As16(), dest.Addr().As16()
		copy(id[4:], l16[:])
		copy(id[20:], d16[:])
	}
	binary.LittleEndian.PutUint32(id[40:], uint32(p.cookie))
	binary.LittleEndian.PutUint32(id[44:], uint32(p.cookie>>32))
	s.async.diagMu.Lock()
	defer s.async.diagMu.Unlock()
	if err := unix.Sendto(s.async.diag, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("SOCK_DESTROY: %w", err)
	}
	buf := make([]byte, 512)
	n, _, err := unix.Recvfrom(s.async.diag, buf, 0)
	if err != nil {
		return fmt.Errorf("SOCK_DESTROY ack: %w", err)
	}
	if n >= hdr+4 && binary.LittleEndian.Uint16(buf[4:]) == unix.NLMSG_ERROR {
		if code := int32(binary.LittleEndian.Uint32(buf[hdr:])); code != 0 {
			return fmt.Errorf("SOCK_DESTROY: %w", unix.Errno(-code))
		}
		return nil
	}
	return errors.New("SOCK_DESTROY: unexpected answer")
}
