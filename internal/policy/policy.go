// Package policy decides what happens to each network operation of the traced program: carried
// through Tor, let through directly, or refused, and in words why. It knows nothing of syscalls or
// sockets; the supervisor asks it and carries out the answer.
package policy

import (
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// Action is what the supervisor does with a connect.
type Action int

const (
	// Proxy carries the connection through Tor's SocksPort.
	Proxy Action = iota
	// Direct connects the program's socket to the destination itself (loopback when allowed, and
	// Tor's own SocksPort for Tor-aware programs). The supervisor still makes the connect, with the
	// address it read, so a racing thread cannot change it afterwards.
	Direct
	// Refuse fails the call with Errno.
	Refuse
	// Sandboxed creates the socket inside the UDP sandbox (internal/sandbox), whose datagrams
	// cannot leave the machine; only the DNS responder answers there.
	Sandboxed
)

func (a Action) String() string {
	switch a {
	case Proxy:
		return "proxy"
	case Direct:
		return "direct"
	case Sandboxed:
		return "sandboxed"
	default:
		return "refuse"
	}
}

// Decision is the answer for one operation.
type Decision struct {
	Action Action
	Errno  unix.Errno // for Refuse
	Reason string     // for Refuse: one line saying what was refused and why
}

// Policy holds the settings that decide. It is immutable once built: the supervisor reads it from
// many goroutines without a lock.
type Policy struct {
	// AllowOutboundLocalhost: 0 refuse loopback destinations, 1 TCP to loopback goes direct,
	// 2 also UDP to loopback (torsocks' AllowOutboundLocalhost).
	AllowOutboundLocalhost int
	// AllowInbound lets programs listen on non-loopback addresses.
	AllowInbound bool
	// EnableIPv6 allows AF_INET6 sockets; when false they are refused with ENOSYS like torsocks.
	EnableIPv6 bool
	// SocksPorts are Tor's SocksPort addresses: a Tor-aware program may connect to them directly.
	SocksPorts []netip.AddrPort
	// UDPSandbox: UDP sockets are created in the sandbox (so DNS works) instead of refused.
	UDPSandbox bool
	// UDPReady, when set, is asked before a socket is sandboxed: it makes the sandbox (started on
	// first use) ready and reports whether it is; false refuses a UDP socket as if UDPSandbox were
	// false, and leaves a SealedTCP socket on the host network (the fallback the supervisor
	// warns of). It must be safe for concurrent use.
	UDPReady func() bool
	// SealedTCP: TCP sockets are created in the sandbox too (SealedNetwork); needs the sandbox.
	SealedTCP bool
}

func refuse(errno unix.Errno, format string, args ...any) Decision {
	return Decision{Action: Refuse, Errno: errno, Reason: fmt.Sprintf(format, args...)}
}

// Connect decides a TCP connect to dest (IPv4-mapped IPv6 addresses already unmapped).
func (p *Policy) Connect(dest netip.AddrPort) Decision {
	a := dest.Addr()
	for _, s := range p.SocksPorts {
		if s == dest {
			return Decision{Action: Direct}
		}
	}
	switch {
	case a.IsUnspecified():
		return refuse(unix.EPERM, "connection to %s refused: not a destination", dest)
	case a.IsLoopback():
		if p.AllowOutboundLocalhost >= 1 {
			return Decision{Action: Direct}
		}
		return refuse(unix.EPERM, "connection to %s refused: local addresses are not reached through Tor (it might be a TCP DNS query to a local resolver); AllowOutboundLocalhost 1 allows it", dest)
	case a.IsMulticast() || (a.Is4() && a == netip.AddrFrom4([4]byte{255, 255, 255, 255})):
		return refuse(unix.ENETUNREACH, "connection to %s refused: not a unicast address", dest)
	case dest.Port() == 0:
		return refuse(unix.ECONNREFUSED, "connection to %s refused: port 0", dest)
	}
	return Decision{Action: Proxy}
}

// Socket decides the creation of a socket the filter did not let through by itself.
func (p *Policy) Socket(domain, typ, proto int) Decision {
	base := typ & 0xf
	switch domain {
	case unix.AF_UNIX, unix.AF_NETLINK:
		return Decision{Action: Direct}
	case unix.AF_INET, unix.AF_INET6:
		if domain == unix.AF_INET6 && !p.EnableIPv6 {
			return refuse(unix.ENOSYS, "IPv6 socket refused: EnableIPv6 is 0")
		}
		switch {
		case base == unix.SOCK_STREAM && (proto == 0 || proto == unix.IPPROTO_TCP) && p.SealedTCP && (p.UDPReady == nil || p.UDPReady()):
			return Decision{Action: Sandboxed}
		case base == unix.SOCK_STREAM && (proto == 0 || proto == unix.IPPROTO_TCP):
			return Decision{Action: Direct}
		case base == unix.SOCK_STREAM:
			return refuse(unix.EPERM, "%s stream socket with protocol %d refused: Tor carries plain TCP only", familyName(domain), proto)
		case base == unix.SOCK_DGRAM && (proto == unix.IPPROTO_ICMP || proto == unix.IPPROTO_ICMPV6):
			return refuse(unix.EPERM, "ICMP socket refused: Tor carries TCP only")
		case base == unix.SOCK_DGRAM && p.UDPSandbox && (proto == 0 || proto == unix.IPPROTO_UDP) && (p.UDPReady == nil || p.UDPReady()):
			return Decision{Action: Sandboxed}
		case base == unix.SOCK_DGRAM:
			return refuse(unix.EPERM, "UDP socket refused: Tor carries TCP only")
		case base == unix.SOCK_RAW:
			return refuse(unix.EPERM, "raw %s socket refused: it would send packets around Tor", familyName(domain))
		default:
			return refuse(unix.EPERM, "%s socket of type %d refused: Tor carries TCP only", familyName(domain), base)
		}
	case unix.AF_PACKET:
		return refuse(unix.EPERM, "packet socket refused: it would send frames around Tor")
	default:
		return refuse(unix.EAFNOSUPPORT, "socket of address family %d refused: only unix, netlink, IPv4 and IPv6 TCP sockets are allowed under torsocks", domain)
	}
}

// Listen decides listen() on a socket bound to local (unbound sockets listen on the wildcard
// address, so callers pass the unspecified address for them).
func (p *Policy) Listen(local netip.AddrPort) Decision {
	if local.Addr().Unmap().IsLoopback() || p.AllowInbound {
		return Decision{Action: Direct}
	}
	return refuse(unix.EPERM, "listening on %s refused: inbound connections from outside this machine are off (AllowInbound 1 allows them)", local)
}

func familyName(domain int) string {
	if domain == unix.AF_INET6 {
		return "IPv6"
	}
	return "IPv4"
}
