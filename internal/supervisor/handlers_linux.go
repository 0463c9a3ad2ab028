package supervisor

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gotorsocks/torsocks/internal/filter"
	"github.com/gotorsocks/torsocks/internal/policy"
)

// dispatch is the handler of every notified call: it picks the syscall's own by its number in the
// caller's ABI.
func (s *Supervisor) dispatch(c *call) (reply, error) {
	abi := c.abi
	if abi == nil {
		// The filter kills unknown architectures; answering is only defensive.
		s.log.Error(fmt.Sprintf("notification for unknown architecture %#x from pid %d", c.data.Arch, c.tid))
		return reply{}, failed(unix.ENOSYS)
	}
	nr := c.data.Nr
	switch nr {
	case abi.Connect:
		return s.connect(c, c.fdArg(0), c.arg(1), c.arg(2))
	case abi.Getpeername:
		return s.getpeername(c, c.fdArg(0), c.arg(1), c.arg(2))
	case abi.Listen:
		return s.listen(c, c.fdArg(0), int(int32(c.arg(1))))
	case abi.Bind:
		return s.bind(c, c.fdArg(0), c.arg(1), c.arg(2))
	case abi.Socket:
		return s.socket(c, int(int32(c.arg(0))), int(int32(c.arg(1))), int(int32(c.arg(2))), false)
	case abi.Sendto:
		return s.send(c, sendArgs{fd: c.fdArg(0), buf: c.arg(1), len: c.arg(2), flags: int(int32(c.arg(3))), name: c.arg(4), namelen: c.arg(5)})
	case abi.Sendmsg:
		return s.send(c, sendArgs{fd: c.fdArg(0), msg: c.arg(1), flags: int(int32(c.arg(2))), kind: kindSendmsg})
	case abi.Sendmmsg:
		return s.send(c, sendArgs{fd: c.fdArg(0), msg: c.arg(1), vlen: c.arg(2), flags: int(int32(c.arg(3))), kind: kindSendmmsg})
	case abi.Recvmsg:
		return s.recv(c, recvArgs{fd: c.fdArg(0), msg: c.arg(1), flags: int(int32(c.arg(2)))})
	case abi.Recvmmsg, abi.RecvmmsgTime64:
		return s.recv(c, recvArgs{fd: c.fdArg(0), msg: c.arg(1), vlen: uint64(uint32(c.arg(2))), flags: int(int32(c.arg(3))),
			timeout: c.arg(4), mmsg: true, ts32: abi.PtrSize == 4 && nr == abi.Recvmmsg})
	case abi.Socketcall:
		return s.socketcall(c)
	case abi.Ioctl:
		return s.ioctl(c, uint32(c.arg(1)))
	case abi.Setsockopt:
		return s.setsockopt(c, c.fdArg(0), int(int32(c.arg(1))), int(int32(c.arg(2))), c.arg(3), uint64(uint32(c.arg(4))), false)
	default:
		s.log.Error(fmt.Sprintf("unexpected notification for syscall %d (%s) from pid %d", nr, abi.Name, c.tid))
		return reply{}, failed(unix.ENOSYS)
	}
}

// ioctl refuses the requests the filter notifies (filter.RefusedIoctls): each is a way out that
// no program needs under torsocks.
func (s *Supervisor) ioctl(c *call, req uint32) (reply, error) {
	switch req {
	case filter.TIOCSTI:
		return reply{}, refused(unix.EPERM, "ioctl TIOCSTI refused: the program could type commands into the terminal that started torsocks")
	case filter.TIOCLINUX:
		return reply{}, refused(unix.EPERM, "ioctl TIOCLINUX refused: the program could paste commands into the console that started torsocks")
	case filter.TUNSETIFF:
		return reply{}, refused(unix.EPERM, "ioctl TUNSETIFF refused: a TUN/TAP device would carry traffic around Tor")
	default:
		return reply{}, refused(unix.EPERM, fmt.Sprintf("ioctl %#x refused: internal filter mismatch", req))
	}
}

// socketcallArgs is how many arguments each notified i386 socketcall sub-call reads from memory.
var socketcallArgs = map[uint64]int{filter.SysSocket: 3, filter.SysBind: 3, filter.SysConnect: 3, filter.SysListen: 2,
	filter.SysGetpeername: 3, filter.SysSendto: 6, filter.SysSendmsg: 3, filter.SysSendmmsg: 4,
	filter.SysRecvmsg: 3, filter.SysRecvmmsg: 5, filter.SysSetsockopt: 5}

// socketcall serves the i386 multiplexer: the sub-call is in a register, its arguments in memory.
func (s *Supervisor) socketcall(c *call) (reply, error) {
	sub := c.arg(0)
	n, ok := socketcallArgs[sub]
	if !ok {
		return reply{}, failed(unix.ENOSYS)
	}
	a, err := c.readArgs(c.arg(1), n)
	if err != nil {
		return reply{}, fromErr("socketcall", err)
	}
	fd := int(int32(uint32(a[0])))
	switch sub {
	case filter.SysSocket:
		return s.socket(c, int(int32(uint32(a[0]))), int(int32(uint32(a[1]))), int(int32(uint32(a[2]))), true)
	case filter.SysConnect:
		return s.connect(c, fd, a[1], a[2])
	case filter.SysListen:
		return s.listen(c, fd, int(int32(uint32(a[1]))))
	case filter.SysBind:
		return s.bind(c, fd, a[1], a[2])
	case filter.SysGetpeername:
		return s.getpeername(c, fd, a[1], a[2])
	case filter.SysSendto:
		return s.send(c, sendArgs{fd: fd, buf: a[1], len: a[2], flags: int(int32(uint32(a[3]))), name: a[4], namelen: a[5]})
	case filter.SysSendmsg:
		return s.send(c, sendArgs{fd: fd, msg: a[1], flags: int(int32(uint32(a[2]))), kind: kindSendmsg})
	case filter.SysSendmmsg:
		return s.send(c, sendArgs{fd: fd, msg: a[1], vlen: a[2], flags: int(int32(uint32(a[3]))), kind: kindSendmmsg})
	case filter.SysRecvmsg:
		return s.recv(c, recvArgs{fd: fd, msg: a[1], flags: int(int32(uint32(a[2])))})
	case filter.SysRecvmmsg:
		return s.recv(c, recvArgs{fd: fd, msg: a[1], vlen: a[2], flags: int(int32(uint32(a[3]))), timeout: a[4], mmsg: true, ts32: true})
	case filter.SysSetsockopt:
		return s.setsockopt(c, fd, int(int32(uint32(a[1]))), int(int32(uint32(a[2]))), a[3], a[4], true)
	}
	return reply{}, failed(unix.ENOSYS) // not reached: socketcallArgs lists the cases above
}

// socket serves a socket() the filter did not allow by itself: refusals (with the reason), UDP
// sockets made in the sandbox, and for the i386 socketcall, whose arguments are in memory, any
// allowed socket (created here: letting the kernel re-read the arguments would let a racing
// thread swap them). Sockets made here are installed in the program with ADDFD.
func (s *Supervisor) socket(c *call, domain, typ, proto int, viaMemory bool) (reply, error) {
	d := s.pol.Socket(domain, typ, proto)
	var create func() (int, error)
	switch {
	case d.Action == policy.Refuse:
		return reply{}, refused(d.Errno, d.Reason)
	case d.Action == policy.Sandboxed && s.opts.Sandbox != nil:
		create = func() (int, error) { return s.opts.Sandbox.Socket(domain, typ, proto) }
	case d.Action == policy.Direct && (viaMemory || s.opts.SealedNetwork):
		// SealedNetwork without a sandbox notifies TCP sockets all the same: made here, on the
		// host network, as the kernel would have.
		create = func() (int, error) { return unix.Socket(domain, typ, proto) }
	default:
		// The filter notifies only sockets it does not allow; policy and filter disagree.
		return reply{}, refused(unix.EPERM, fmt.Sprintf("socket(%d, %d, %d) refused: internal policy mismatch", domain, typ, proto))
	}
	fd, err := create()
	if isOutOfDescriptors(err) {
		fd, err = s.whenDescriptorsFree(c, err, create)
	}
	if err == nil && d.Action == policy.Sandboxed {
		s.socks.put(fd, domain, typ, proto) // connect knows it by its cookie (sockcache_linux.go)
	}
	if err != nil {
		// The supervisor's own table full is not the program's: ENOBUFS (socket(2): "the socket
		// cannot be created until sufficient resources are freed") and a line, never EPERM.
		if why := outOfDescriptors(err); why != "" {
			return reply{}, refused(unix.ENOBUFS, fmt.Sprintf("socket(%d, %d, %d) refused: %s", domain, typ, proto, why))
		}
		return reply{}, failed(err)
	}
	return install(fd, typ&unix.SOCK_CLOEXEC != 0), nil
}

// descriptorWait bounds how long a call that found the supervisor's descriptor table full waits
// for relayed connections to end before it fails.
const descriptorWait = 250 * time.Millisecond

// whenDescriptorsFree makes again what failed for want of descriptors (err), each time a relayed
// connection has ended, for at most descriptorWait without one ending. A program that has just
// closed its connections (as a program at its limit does before it opens more) would otherwise
// find their descriptors still held: the relay closes its two only once both sides have closed,
// which takes a wake-up or two of the relay and of the other side. Without relayed connections
// nothing will be freed, and the call fails at once. The receiver role goes first: this waits.
func (s *Supervisor) whenDescriptorsFree(c *call, err error, again func() (int, error)) (int, error) {
	fd := -1
	last, since := s.relays.Load(), time.Now()
	if last == 0 {
		return fd, err
	}
	c.lease.release()
	for time.Since(since) < descriptorWait {
		time.Sleep(time.Millisecond)
		if n := s.relays.Load(); n < last {
			last, since = n, time.Now()
			if fd, err = again(); !isOutOfDescriptors(err) {
				return fd, err
			}
		}
	}
	return fd, err
}

// listen refuses listening on a non-loopback address unless AllowInbound (an unbound socket counts
// as the wildcard address). An allowed listen is made here on the copy, not by the kernel, which
// would look the descriptor number up again (see copy_linux.go); on a socket of the sealed network
// it is mirrored on the host first (sealed_listen_linux.go).
func (s *Supervisor) listen(c *call, fd, backlog int) (reply, error) {
	cp, si, err := c.sock(fd)
	if err != nil {
		return reply{}, fromErr("listen", err)
	}
	defer unix.Close(cp)
	if si.isInet() {
		local, err := boundAddr(cp, si.domain)
		if err != nil {
			return reply{}, fromErr("listen", err)
		}
		if d := s.pol.Listen(local); d.Action == policy.Refuse {
			return reply{}, refused(d.Errno, d.Reason)
		}
		if si.isTCP() && s.sealed(cp, si) {
			return s.listenSealed(c, cp, si, local, backlog)
		}
	}
	if err := unix.Listen(cp, backlog); err != nil {
		return reply{}, failed(err)
	}
	return value(0), nil
}

// getpeername answers with the destination the program asked for on proxied sockets (the kernel
// would show Tor's address). Other sockets: the kernel answers; getpeername sends nothing.
func (s *Supervisor) getpeername(c *call, fd int, addr, lenAddr uint64) (reply, error) {
	if s.reg.Len() == 0 {
		// No connection is registered (a socket joined inside the sandbox never is: the
		// kernel's own answer is right for it), so the lookup below could only let the call
		// run: let it run without copying the socket (a pidfd_open, a pidfd_getfd, two
		// getsockopt and two close less per call). An Add done before this call was made is
		// seen (Len is stored under the registry's lock before Add returns).
		return letRun(), nil
	}
	cp, err := c.getfd(fd)
	if err != nil {
		return reply{}, fromErr("getpeername", err)
	}
	defer unix.Close(cp)
	// Only the family and the cookie matter here: two getsockopt, not four (getpeername on unix
	// sockets is common and answered by the kernel).
	domain, err := unix.GetsockoptInt(cp, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil || (domain != unix.AF_INET && domain != unix.AF_INET6) {
		return letRun(), nil
	}
	cookie, err := unix.GetsockoptUint64(cp, unix.SOL_SOCKET, unix.SO_COOKIE)
	if err != nil {
		return letRun(), nil
	}
	si := sockInfo{domain: domain, cookie: cookie}
	conn := s.reg.Lookup(si.cookie)
	if conn == nil {
		return letRun(), nil
	}
	defer conn.Put()
	lb, err := c.read(lenAddr, 4)
	if err != nil {
		return reply{}, fromErr("getpeername", err)
	}
	have := int(int32(uint32(lb[0]) | uint32(lb[1])<<8 | uint32(lb[2])<<16 | uint32(lb[3])<<24))
	if have < 0 {
		return reply{}, failed(unix.EINVAL)
	}
	sa := sockaddrBytes(si.domain, conn.Dest)
	out := sa
	if have < len(out) {
		out = out[:have]
	}
	if err := c.write(addr, out); err != nil {
		return reply{}, fromErr("getpeername", err)
	}
	n := uint32(len(sa))
	if err := c.write(lenAddr, []byte{byte(n), byte(n >> 8), byte(n >> 16), byte(n >> 24)}); err != nil {
		return reply{}, fromErr("getpeername", err)
	}
	return value(0), nil
}
