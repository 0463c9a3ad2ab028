package supervisor

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/gotorsocks/torsocks/internal/policy"
	"github.com/gotorsocks/torsocks/internal/seccomp"
)

// Received descriptors (VetReceivedSockets). A process outside the tree can hand the program a
// socket over a unix socket (SCM_RIGHTS): a TCP socket it connected itself, a UDP socket of the
// host's namespace. The program could then reach the network around Tor with calls the filter
// lets through (send, write). With Options.VetReceived the filter notifies recvmsg and recvmmsg,
// and the supervisor carries them out on its copy of the socket (the kernel must not: a
// CONTINUE'd call would look the descriptor number and the msghdr up again, and a racing thread
// could have swapped either), looks at every descriptor that arrived, and refuses the whole call
// (EACCES, one log line, the descriptors closed) if one of them could reach the network around Tor
// (vetReceived). Otherwise it installs them in the program (ADDFD), writes the data, address and
// control messages into the program's buffers and answers with the byte count.
//
// recvmmsg is served the same way, message by message: the first as the program asked (blocking
// or not), the others only if already queued (MSG_DONTWAIT), which recvmmsg allows (it returns
// fewer messages when its timeout expires, too). The whole call is vetted before anything is
// delivered.

// maxEmulatedRecv bounds the data one emulated call moves (all its messages together): a stream
// read returns less, as it may; a datagram longer than that arrives cut, with MSG_TRUNC.
const maxEmulatedRecv = 1 << 20

// recvOOBSize is the control buffer of the supervisor's own receive: room for SCM_MAX_FD
// descriptors, credentials, a pidfd, a security label and timestamps.
const recvOOBSize = 8192

// erestartsys is the kernel's ERESTARTSYS: answered when a signal is pending for the calling
// thread, so that its handler runs and the call restarts (or fails with EINTR) exactly as a
// blocking receive interrupted by the signal would.
const erestartsys = unix.Errno(512)

var errSignalPending = errors.New("a signal is pending for the calling thread")

// recvArgs are the arguments of recvmsg/recvmmsg (from registers or, for the i386 socketcall,
// read once from memory).
type recvArgs struct {
	fd      int
	msg     uint64 // struct msghdr (recvmsg) or the struct mmsghdr array (recvmmsg)
	vlen    uint64 // recvmmsg
	flags   int
	timeout uint64 // recvmmsg: struct timespec pointer, 0 for none
	mmsg    bool   // recvmmsg
	ts32    bool   // the timespec is i386's old 32-bit one
}

var oobPool = sync.Pool{New: func() any { b := make([]byte, recvOOBSize); return &b }}

// recv serves recvmsg and recvmmsg.
func (s *Supervisor) recv(c *call, a recvArgs) (reply, error) {
	cp, err := c.getfd(a.fd)
	if err != nil {
		return reply{}, fromErr("recvmsg", err)
	}
	// Most receives find their data queued and are answered at once: the worker keeps the
	// receiver role. One that waits watches the listener too and hands the role over when another
	// notification comes (waitReadable), and the watchdog hands it over anyway.
	defer unix.Close(cp)
	return s.recvOn(c, cp, a)
}

// received is one message the supervisor received for the program.
type received struct {
	hdr   recvHdr
	n     int    // the kernel's result (more than len(data) for a datagram cut with MSG_TRUNC)
	data  []byte // what was received
	name  []byte // the sender's address (the kernel's length), nil without msg_name
	cmsgs []cmsg
	flags int // msg_flags
}

func (s *Supervisor) recvOn(c *call, cp int, a recvArgs) (reply, error) {
	ps := c.abi.PtrSize
	var fds []int // every descriptor the supervisor received: closed when done
	var oobs []*[]byte
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
		for _, b := range oobs {
			oobPool.Put(b)
		}
	}()

	vlen := uint64(1)
	var end time.Time // recvmmsg timeout
	if a.mmsg {
		vlen = min(a.vlen, 1024) // UIO_MAXIOV, as the kernel clamps it
		if a.timeout != 0 {
			d, err := c.readTimespec(a.timeout, a.ts32)
			if err != nil {
				return reply{}, fromErr("recvmmsg", err)
			}
			end = time.Now().Add(d)
		}
		if vlen == 0 {
			return value(0), nil
		}
	}
	budget := maxEmulatedRecv
	var msgs []received
	for i := uint64(0); i < vlen; i++ {
		addr := a.msg
		if a.mmsg {
			addr += i * mmsghdrSize(ps)
		}
		h, err := parseRecvHdr(c.read, ps, addr)
		if err != nil {
			if i == 0 {
				return reply{}, fromErr("recvmsg", err)
			}
			break
		}
		flags := a.flags
		if i > 0 {
			flags |= unix.MSG_DONTWAIT
		}
		oob := oobPool.Get().(*[]byte)
		oobs = append(oobs, oob)
		m, got, err := s.recvOne(c, cp, h, flags, min(h.total, uint64(budget)), *oob)
		fds = append(fds, got...)
		if err != nil {
			if i == 0 {
				return reply{}, recvFailed(err)
			}
			break
		}
		msgs = append(msgs, m)
		budget -= len(m.data)
		if budget <= 0 || m.flags&unix.MSG_OOB != 0 {
			break
		}
		if !end.IsZero() && !time.Now().Before(end) {
			break
		}
	}

	// Vet what the program would get (the descriptors that fit its control buffers) before
	// anything is delivered: a refusal refuses the whole call.
	cloexec := a.flags&unix.MSG_CMSG_CLOEXEC != 0
	for _, m := range msgs {
		room := m.hdr.controllen
		if m.hdr.control == 0 {
			room = 0
		}
		_, _, _, passed, _ := buildControl(m.cmsgs, room, ps, nil)
		for _, fd := range passed {
			if why := s.vetReceived(fd); why != "" {
				return reply{}, refused(unix.EACCES, fmt.Sprintf("recvmsg refused: the message carries %s that torsocks did not make; the program could use it to reach the network around Tor", why))
			}
		}
	}

	var segs []seccomp.Seg
	for i, m := range msgs {
		room := m.hdr.controllen
		if m.hdr.control == 0 {
			room = 0
		}
		ctl, used, ctrunc, _, err := buildControl(m.cmsgs, room, ps, func(fd int) (int, error) {
			n, err := s.k.AddFD(c.id, fd, cloexec)
			if errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE) {
				return -1, errInstallStop
			}
			return n, err
		})
		if err != nil {
			return reply{}, fromErr("recvmsg", err)
		}
		segs = appendData(segs, m.hdr.iov, m.data)
		if m.hdr.name != 0 {
			segs = append(segs, seccomp.Seg{Addr: m.hdr.name, B: m.name[:min(len(m.name), m.hdr.namelen)]})
			segs = append(segs, seccomp.Seg{Addr: m.hdr.addr + offNamelen(ps), B: le32(uint32(len(m.name)))})
		}
		if len(ctl) > 0 {
			segs = append(segs, seccomp.Seg{Addr: m.hdr.control, B: ctl})
		}
		flags := m.flags &^ unix.MSG_CMSG_CLOEXEC
		if cloexec {
			flags |= unix.MSG_CMSG_CLOEXEC // the kernel reports it back too
		}
		if ctrunc {
			flags |= unix.MSG_CTRUNC
		}
		segs = append(segs, seccomp.Seg{Addr: m.hdr.addr + offControllen(ps), B: leWord(used, ps)})
		segs = append(segs, seccomp.Seg{Addr: m.hdr.addr + offMsgFlags(ps), B: le32(uint32(flags))})
		if a.mmsg {
			segs = append(segs, seccomp.Seg{Addr: a.msg + uint64(i)*mmsghdrSize(ps) + offMsgLen(ps), B: le32(uint32(m.n))})
		}
	}
	if a.mmsg && a.timeout != 0 {
		left := max(time.Until(end), 0)
		segs = append(segs, seccomp.Seg{Addr: a.timeout, B: timespecBytes(left, a.ts32)})
	}
	if err := c.writeV(segs); err != nil {
		if errors.Is(err, unix.EFAULT) {
			return reply{}, failed(unix.EFAULT) // as the kernel: the message is consumed, the call fails
		}
		return reply{}, fromErr("recvmsg", err)
	}
	if a.mmsg {
		return value(int64(len(msgs))), nil
	}
	return value(int64(msgs[0].n)), nil
}

// recvFailed is the answer to a receive that failed before anything was received.
func recvFailed(err error) error {
	if errors.Is(err, errSignalPending) {
		return failed(erestartsys)
	}
	return failed(err)
}

// recvOne receives one message on cp into buffers of at most size bytes of data, as recvmsg with
// the program's flags would, waiting (if the program's call would block) until something arrives.
// It returns the descriptors the supervisor got, which the caller closes, even on error.
func (s *Supervisor) recvOne(c *call, cp int, h recvHdr, flags int, size uint64, oob []byte) (received, []int, error) {
	m := received{hdr: h, data: make([]byte, size)}
	var name []byte
	if h.name != 0 {
		name = make([]byte, maxSockaddrLen)
	}
	mayBlock := flags&(unix.MSG_DONTWAIT|unix.MSG_ERRQUEUE) == 0
	kflags := flags | unix.MSG_DONTWAIT | unix.MSG_CMSG_CLOEXEC
	var fds []int
	var deadline time.Time
	first := true
	for {
		n, namelen, oobn, rflags, err := recvRaw(cp, m.data, name, oob, kflags)
		if err == unix.EINTR {
			continue
		}
		if err == nil {
			cm, perr := parseCmsgs(oob[:oobn], 8)
			for _, x := range cm {
				if x.carriesFds() {
					fds = append(fds, x.fds()...)
				}
			}
			if perr != nil {
				return m, fds, unix.EPROTO
			}
			m.n, m.flags, m.cmsgs = n, rflags, cm
			m.data = m.data[:min(n, len(m.data))]
			if name != nil {
				m.name = name[:min(namelen, len(name))]
			}
			if flags&unix.MSG_WAITALL != 0 && mayBlock && flags&unix.MSG_PEEK == 0 && n > 0 && n < len(m.data) && len(cm) == 0 {
				more, mfds, err := s.recvWaitAll(c, cp, m.data[n:], oob, kflags&^unix.MSG_WAITALL)
				fds = append(fds, mfds...)
				if err != nil {
					return m, fds, err
				}
				m.n += more
				m.data = m.data[:n+more]
			}
			return m, fds, nil
		}
		if err != unix.EAGAIN || !mayBlock {
			return m, fds, err
		}
		if first {
			first = false
			fl, ferr := unix.FcntlInt(uintptr(cp), unix.F_GETFL, 0)
			if ferr != nil {
				return m, fds, ferr
			}
			if fl&unix.O_NONBLOCK != 0 {
				return m, fds, unix.EAGAIN
			}
			if tv, terr := unix.GetsockoptTimeval(cp, unix.SOL_SOCKET, unix.SO_RCVTIMEO); terr == nil && (tv.Sec != 0 || tv.Usec != 0) {
				deadline = time.Now().Add(time.Duration(tv.Sec)*time.Second + time.Duration(tv.Usec)*time.Microsecond)
			}
		}
		if err := s.waitReadable(c, cp, deadline); err != nil {
			if errors.Is(err, errSignalPending) && !deadline.IsZero() {
				return m, fds, unix.EINTR // a socket with a receive timeout fails with EINTR (sock_intr_errno)
			}
			return m, fds, err
		}
	}
}

// recvWaitAll goes on reading a stream socket into buf for MSG_WAITALL: until it is full, the
// peer closes, an error, or a message with control data (the kernel stops there too).
func (s *Supervisor) recvWaitAll(c *call, cp int, buf, oob []byte, kflags int) (int, []int, error) {
	got := 0
	var fds []int
	typ, err := unix.GetsockoptInt(cp, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil || typ != unix.SOCK_STREAM {
		return 0, nil, nil
	}
	for got < len(buf) {
		n, _, oobn, _, err := recvRaw(cp, buf[got:], nil, oob, kflags)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			if werr := s.waitReadable(c, cp, time.Time{}); werr != nil {
				return got, fds, nil // what was read is delivered; the signal or exit is seen next
			}
			continue
		case err != nil || n == 0:
			return got, fds, nil
		}
		got += n
		if oobn > 0 {
			cm, _ := parseCmsgs(oob[:oobn], 8)
			for _, x := range cm {
				if x.carriesFds() {
					fds = append(fds, x.fds()...)
				}
			}
			// Descriptors after the first read would need merging into its control data; the
			// kernel would stop at them. They are closed: the program sees MSG_CTRUNC-free data
			// only up to here (rare: MSG_WAITALL with descriptors mid-stream).
			return got, fds, nil
		}
	}
	return got, fds, nil
}

// recvRaw is recvmsg(2) on the supervisor's descriptor.
func recvRaw(fd int, buf, name, oob []byte, flags int) (n, namelen, oobn, rflags int, err error) {
	var iov unix.Iovec
	msg := newMsghdr(&iov, buf, name, oob)
	r, _, errno := unix.Syscall(unix.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(&msg)), uintptr(flags))
	if errno != 0 {
		return 0, 0, 0, 0, errno
	}
	return int(r), int(msg.Namelen), int(msg.Controllen), int(msg.Flags), nil
}

// waitReadable waits until cp has something to receive (or an error or hang-up to report), the
// deadline passes (EAGAIN, as a receive timeout), the calling thread exits or its call is gone,
// or a signal is pending for it (errSignalPending). While the worker holds the receiver role the
// listener is watched too, and the role handed over when another call comes.
func (s *Supervisor) waitReadable(c *call, cp int, deadline time.Time) error {
	const check = 25 * time.Millisecond // signals and the notification's validity
	for {
		wait := check
		if !deadline.IsZero() {
			left := time.Until(deadline)
			if left <= 0 {
				return unix.EAGAIN
			}
			wait = min(wait, left)
		}
		fds := []unix.PollFd{{Fd: int32(cp), Events: unix.POLLIN | unix.POLLPRI}}
		task, lst := -1, -1
		if c.pidfd >= 0 {
			task = len(fds)
			fds = append(fds, unix.PollFd{Fd: int32(c.pidfd), Events: unix.POLLIN})
		}
		if c.lease.Held() {
			lst = len(fds)
			fds = append(fds, unix.PollFd{Fd: int32(s.k.FD()), Events: unix.POLLIN})
		}
		n, err := unix.Poll(fds, max(int(wait/time.Millisecond), 1))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if lst >= 0 && fds[lst].Revents != 0 {
			c.lease.handOver()
		}
		if task >= 0 && fds[task].Revents != 0 {
			return errTaskGone
		}
		if fds[0].Revents != 0 {
			return nil
		}
		if n == 0 {
			if signalPending(c.tid) {
				return errSignalPending
			}
			if err := s.k.Valid(c.id); err != nil {
				return err
			}
		}
	}
}

// signalPending reports whether thread tid has a signal pending that it does not block and that
// is sure to be delivered to it: one sent to the thread itself, or one sent to its process when it
// is the process's only thread. (A signal sent to a process of several threads may be taken by
// another; answering ERESTARTSYS then would show the program errno 512.) Ignored signals are never
// queued; fatal ones kill the thread, which the pidfd reports.
func signalPending(tid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(tid) + "/status")
	if err != nil {
		return false
	}
	var pnd, shd, blk uint64
	threads := 0
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case "Threads":
			threads, _ = strconv.Atoi(v)
		case "SigPnd":
			pnd, _ = strconv.ParseUint(v, 16, 64)
		case "ShdPnd":
			shd, _ = strconv.ParseUint(v, 16, 64)
		case "SigBlk":
			blk, _ = strconv.ParseUint(v, 16, 64)
		}
	}
	if threads != 1 {
		shd = 0
	}
	return (pnd|shd)&^blk != 0
}

// vetReceived says what fd, a descriptor a message brought, is if the program must not have it
// ("" if it may): a socket that could reach the network around Tor and that the supervisor did
// not make for this tree.
//
//   - unix and netlink sockets, pipes, files and every other non-socket descriptor: allowed;
//   - sockets of the UDP sandbox (SO_NETNS_COOKIE): allowed, nothing they send leaves it;
//   - IPv4/IPv6 TCP sockets of this network namespace: allowed if the registry knows them (the
//     supervisor connected them through Tor, or to the DNS responder), if they are not connected
//     (state CLOSE: their connect will be notified like any other), listening where the policy
//     lets the program listen, or connected to a destination the policy lets the program reach
//     directly (loopback with AllowOutboundLocalhost, Tor's SocksPort); refused otherwise (connected
//     elsewhere, connecting, closing);
//   - every other socket (UDP, raw, SCTP, MPTCP outside the sandbox, packet, vsock, ...): refused,
//     the tree cannot make them (policy.Socket);
//   - a TUN/TAP device (/dev/net/tun), attached elsewhere: refused.
func (s *Supervisor) vetReceived(fd int) string {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return "a descriptor torsocks cannot inspect"
	}
	if st.Mode&unix.S_IFMT == unix.S_IFCHR && unix.Major(st.Rdev) == 10 && unix.Minor(st.Rdev) == 200 {
		return "a TUN/TAP device (/dev/net/tun)"
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return ""
	}
	si, err := getSockInfo(fd)
	if err != nil {
		return "a socket torsocks cannot inspect"
	}
	if si.domain == unix.AF_UNIX || si.domain == unix.AF_NETLINK {
		return ""
	}
	if s.opts.Sandbox != nil && s.opts.Sandbox.Contains(fd) {
		return ""
	}
	if !si.isTCP() {
		switch d := s.pol.Socket(si.domain, si.typ, si.proto); {
		case si.isInet() && si.typ == unix.SOCK_DGRAM:
			return fmt.Sprintf("a %s UDP socket outside torsocks' sandbox", familyWord(si.domain))
		case d.Action == policy.Refuse:
			return fmt.Sprintf("a socket (family %d, type %d, protocol %d) of a kind torsocks refuses", si.domain, si.typ, si.proto)
		default:
			return fmt.Sprintf("a socket (family %d, type %d, protocol %d) outside torsocks' sandbox", si.domain, si.typ, si.proto)
		}
	}
	if !sameNetns(fd) {
		return "a TCP socket of another network namespace"
	}
	if conn := s.reg.Lookup(si.cookie); conn != nil {
		conn.Put()
		return ""
	}
	state, err := tcpState(fd)
	if err != nil {
		return "a TCP socket torsocks cannot inspect"
	}
	switch state {
	case tcpClose:
		return ""
	case tcpListen:
		local, err := boundAddr(fd, si.domain)
		if err != nil {
			return "a listening TCP socket torsocks cannot inspect"
		}
		if d := s.pol.Listen(local); d.Action == policy.Refuse {
			return fmt.Sprintf("a TCP socket listening on %s", local)
		}
		return ""
	}
	peer, err := peerAddr(fd)
	if err != nil {
		return fmt.Sprintf("a %s TCP socket that is connecting", familyWord(si.domain))
	}
	if d := s.pol.Connect(netip.AddrPortFrom(peer.Addr().Unmap(), peer.Port())); d.Action == policy.Direct {
		return ""
	}
	return fmt.Sprintf("a TCP socket connected to %s", peer)
}

func familyWord(domain int) string {
	if domain == unix.AF_INET6 {
		return "IPv6"
	}
	return "IPv4"
}

const (
	tcpClose  = 7  // TCP_CLOSE
	tcpListen = 10 // TCP_LISTEN
)

// tcpState is tcpi_state of TCP_INFO.
func tcpState(fd int) (int, error) {
	info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return 0, err
	}
	return int(info.State), nil
}

func peerAddr(fd int) (netip.AddrPort, error) {
	sa, err := unix.Getpeername(fd)
	if err != nil {
		return netip.AddrPort{}, err
	}
	switch v := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(v.Addr), uint16(v.Port)), nil
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(v.Addr), uint16(v.Port)), nil
	}
	return netip.AddrPort{}, unix.EAFNOSUPPORT
}

var ownNetns = sync.OnceValue(func() uint64 {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0
	}
	defer unix.Close(fd)
	c, _ := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	return c
})

// sameNetns reports whether socket fd lives in the supervisor's (and the program's) network
// namespace.
func sameNetns(fd int) bool {
	c, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	return err == nil && c != 0 && c == ownNetns()
}

// appendData adds the writes that spread data over the iovecs, in order, each to its length.
func appendData(segs []seccomp.Seg, iov [][2]uint64, data []byte) []seccomp.Seg {
	for _, v := range iov {
		if len(data) == 0 {
			break
		}
		n := min(uint64(len(data)), v[1])
		if n == 0 {
			continue
		}
		segs = append(segs, seccomp.Seg{Addr: v[0], B: data[:n]})
		data = data[n:]
	}
	return segs
}

func le32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }

func leWord(v uint64, ps int) []byte {
	if ps == 4 {
		return le32(uint32(v))
	}
	return binary.LittleEndian.AppendUint64(nil, v)
}

// readTimespec reads recvmmsg's timeout (EINVAL if it is not a valid time).
func (c *call) readTimespec(addr uint64, ts32 bool) (time.Duration, error) {
	var sec, nsec int64
	if ts32 {
		b, err := c.read(addr, 8)
		if err != nil {
			return 0, err
		}
		sec, nsec = int64(int32(binary.LittleEndian.Uint32(b))), int64(int32(binary.LittleEndian.Uint32(b[4:])))
	} else {
		b, err := c.read(addr, 16)
		if err != nil {
			return 0, err
		}
		sec, nsec = int64(binary.LittleEndian.Uint64(b)), int64(binary.LittleEndian.Uint64(b[8:]))
		if c.abi.PtrSize == 4 {
			nsec = int64(int32(nsec)) // a compat task's tv_nsec is 32 bits (get_timespec64)
		}
	}
	if sec < 0 || nsec < 0 || nsec >= 1e9 {
		return 0, unix.EINVAL
	}
	if sec > 1<<32 {
		sec = 1 << 32
	}
	return time.Duration(sec)*time.Second + time.Duration(nsec), nil
}

func timespecBytes(d time.Duration, ts32 bool) []byte {
	sec, nsec := int64(d/time.Second), int64(d%time.Second)
	if ts32 {
		return append(le32(uint32(sec)), le32(uint32(nsec))...)
	}
	b := binary.LittleEndian.AppendUint64(nil, uint64(sec))
	return binary.LittleEndian.AppendUint64(b, uint64(nsec))
}
