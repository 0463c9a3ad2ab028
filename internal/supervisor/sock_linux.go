package supervisor

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/gotorsocks/torsocks/internal/sockaddr"
)

// sockInfo is what the kernel says about a socket: the only trustworthy basis for a decision.
type sockInfo struct {
	domain, typ, proto int
	cookie             uint64
	// sandbox: known to be a socket the supervisor made in the sandbox (sockCache), so
	// Sandbox.Contains need not ask; false says nothing.
	sandbox bool
}

func (si sockInfo) isInet() bool { return si.domain == unix.AF_INET || si.domain == unix.AF_INET6 }
func (si sockInfo) isTCP() bool {
	return si.isInet() && si.typ == unix.SOCK_STREAM && si.proto == unix.IPPROTO_TCP
}

func getSockInfo(fd int) (sockInfo, error) { return readSockInfo(fd, false, 0) }

// readSockInfo is getSockInfo; with forConnect, a datagram socket's protocol and cookie are left
// 0, unread: connect decides on one by its family and namespace alone (connectUDP, connectCopy)
// and never registers it. Two getsockopt less per UDP connect, which every name lookup makes.
// cookie, when not 0, is fd's SO_COOKIE, read already.
func readSockInfo(fd int, forConnect bool, cookie uint64) (sockInfo, error) {
	si := sockInfo{cookie: cookie}
	var err error
	if si.domain, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN); err != nil {
		return si, fmt.Errorf("SO_DOMAIN: %w", err)
	}
	if si.typ, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); err != nil {
		return si, fmt.Errorf("SO_TYPE: %w", err)
	}
	if forConnect && si.typ == unix.SOCK_DGRAM {
		return si, nil
	}
	if si.proto, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL); err != nil {
		return si, fmt.Errorf("SO_PROTOCOL: %w", err)
	}
	if si.isInet() && si.cookie == 0 {
		if si.cookie, err = unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_COOKIE); err != nil {
			return si, fmt.Errorf("SO_COOKIE: %w", err)
		}
	}
	return si, nil
}

const (
	sizeofSockaddrIn  = 16
	sizeofSockaddrIn6 = 28
	sin6LenRFC2133    = 24
	maxSockaddrLen    = 128
)

// parseSockaddr reads a connect() address for a socket of family domain the way the kernel's TCP
// code does. unspec reports AF_UNSPEC (a disconnect request).
func parseSockaddr(domain int, b []byte) (dest netip.AddrPort, unspec bool, err error) {
	if len(b) < 2 {
		return dest, false, unix.EINVAL
	}
	family := int(binary.LittleEndian.Uint16(b))
	if family == unix.AF_UNSPEC {
		return dest, true, nil
	}
	switch domain {
	case unix.AF_INET:
		if len(b) < sizeofSockaddrIn {
			return dest, false, unix.EINVAL
		}
		if family != unix.AF_INET {
			return dest, false, unix.EAFNOSUPPORT
		}
		port := binary.BigEndian.Uint16(b[2:])
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), port), false, nil
	case unix.AF_INET6:
		if len(b) < sin6LenRFC2133 {
			return dest, false, unix.EINVAL
		}
		if family != unix.AF_INET6 {
			return dest, false, unix.EAFNOSUPPORT
		}
		port := binary.BigEndian.Uint16(b[2:])
		a := netip.AddrFrom16([16]byte(b[8:24]))
		if a.Is4In6() {
			a = a.Unmap()
		} else if len(b) >= sizeofSockaddrIn6 {
			if scope := binary.LittleEndian.Uint32(b[24:]); scope != 0 && a.IsLinkLocalUnicast() {
				a = a.WithZone(fmt.Sprint(scope))
			}
		}
		return netip.AddrPortFrom(a, port), false, nil
	}
	return dest, false, unix.EAFNOSUPPORT
}

// sockaddrBytes encodes dest as the kernel would return it for a socket of family domain
// (getpeername on an IPv6 socket connected to an IPv4 destination shows a v4-mapped address).
func sockaddrBytes(domain int, dest netip.AddrPort) []byte {
	if domain == unix.AF_INET && dest.Addr().Is4() {
		b := make([]byte, sizeofSockaddrIn)
		binary.LittleEndian.PutUint16(b, unix.AF_INET)
		binary.BigEndian.PutUint16(b[2:], dest.Port())
		a := dest.Addr().As4()
		copy(b[4:], a[:])
		return b
	}
	b := make([]byte, sizeofSockaddrIn6)
	binary.LittleEndian.PutUint16(b, unix.AF_INET6)
	binary.BigEndian.PutUint16(b[2:], dest.Port())
	a := dest.Addr().As16()
	copy(b[8:], a[:])
	return b
}

// toSockaddr converts an address to a unix.Sockaddr usable on a socket of family domain.
func toSockaddr(domain int, ap netip.AddrPort) (unix.Sockaddr, error) {
	a := ap.Addr()
	switch domain {
	case unix.AF_INET:
		if !a.Unmap().Is4() {
			return nil, fmt.Errorf("an IPv4 socket cannot reach %s: %w", ap, unix.EAFNOSUPPORT)
		}
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: a.Unmap().As4()}, nil
	case unix.AF_INET6:
		sa := &unix.SockaddrInet6{Port: int(ap.Port()), Addr: a.As16()}
		if z, err := strconv.ParseUint(a.Zone(), 10, 32); err == nil {
			sa.ZoneId = uint32(z) // a numeric zone is an interface index (parseSockaddr's)
		}
		return sa, nil
	}
	return nil, unix.EAFNOSUPPORT
}

// boundAddr returns the local address of a socket, the unspecified address for an unbound one.
func boundAddr(fd, domain int) (netip.AddrPort, error) {
	ap, err := sockName(unix.SYS_GETSOCKNAME, fd)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("getsockname: %w", err)
	}
	if ap.IsValid() {
		return ap, nil
	}
	if domain == unix.AF_INET6 {
		return netip.AddrPortFrom(netip.IPv6Unspecified(), 0), nil
	}
	return netip.AddrPortFrom(netip.IPv4Unspecified(), 0), nil
}

// isConnected reports whether a TCP socket has a peer.
func isConnected(fd int) bool {
	_, err := sockName(unix.SYS_GETPEERNAME, fd)
	return err == nil
}

// connectedState reports whether a TCP socket in state st (tcpState) has a peer, as isConnected
// does: getpeername (inet_getname) fails with ENOTCONN without a destination port (a socket
// closed or listening) and in SYN_SENT, and answers in every other state (SYN_RECV included).
func connectedState(st int) bool {
	switch st {
	case unix.BPF_TCP_CLOSE, unix.BPF_TCP_SYN_SENT, unix.BPF_TCP_LISTEN:
		return false
	}
	return true
}

// The socket address calls below are x/sys/unix's without its extra getsockopt(SO_PROTOCOL):
// unix.Getsockname, Getpeername, Accept4 and Recvmsg ask it of the socket for every inet
// address they convert (to tell L2TP sockets apart), a system call more each (strace: 3 a
// connect on the asynchronous path).

// sockName runs getsockname or getpeername (nr) on fd: the inet address, or the zero AddrPort
// for another family.
func sockName(nr uintptr, fd int) (netip.AddrPort, error) {
	var rsa unix.RawSockaddrAny
	n := uint32(unix.SizeofSockaddrAny)
	_, _, errno := unix.Syscall(nr, uintptr(fd), uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&n)))
	if errno != 0 {
		return netip.AddrPort{}, errno
	}
	return sockaddr.AddrPort(&rsa), nil
}

// accept4 is unix.Accept4 returning the peer's inet address.
func accept4(fd, flags int) (int, netip.AddrPort, error) {
	var rsa unix.RawSockaddrAny
	n := uint32(unix.SizeofSockaddrAny)
	nfd, _, errno := unix.Syscall6(unix.SYS_ACCEPT4, uintptr(fd), uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&n)), uintptr(flags), 0, 0)
	if errno != 0 {
		return -1, netip.AddrPort{}, errno
	}
	return int(nfd), sockaddr.AddrPort(&rsa), nil
}

// recvmsgFrom is unix.Recvmsg returning the source's inet address.
func recvmsgFrom(fd int, p, oob []byte, flags int) (n, oobn int, from netip.AddrPort, err error) {
	var rsa unix.RawSockaddrAny
	iov := unix.Iovec{Base: &p[0]}
	iov.SetLen(len(p))
	msg := unix.Msghdr{Name: (*byte)(unsafe.Pointer(&rsa)), Namelen: uint32(unix.SizeofSockaddrAny), Iov: &iov, Iovlen: 1}
	if len(oob) > 0 {
		msg.Control = &oob[0]
		msg.SetControllen(len(oob))
	}
	r, _, errno := unix.Syscall(unix.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(&msg)), uintptr(flags))
	if errno != 0 {
		return 0, 0, netip.AddrPort{}, errno
	}
	return int(r), int(msg.Controllen), sockaddr.AddrPort(&rsa), nil
}
