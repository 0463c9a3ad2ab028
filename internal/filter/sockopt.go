package filter

import (
	"fmt"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Socket options. The supervisor connects the program's own socket (or a copy of it): whatever
// option the program set before travels with the connection. A few of them decide where the
// packets go instead of the address connect names, and so would send the SYN to Tor's SocksPort
// somewhere else than loopback:
//   - IP_OPTIONS (a loose or strict source route: the first hop is the program's choice) and
//     IP_RETOPTS; IPV6_RTHDR (a routing header) and the other sticky IPv6 extension headers;
//   - SO_BINDTODEVICE, SO_BINDTOIFINDEX, IP_UNICAST_IF, IPV6_UNICAST_IF, IP_MULTICAST_IF,
//     IPV6_MULTICAST_IF, IPV6_PKTINFO (sticky: source address and interface), IPV6_NEXTHOP,
//     SO_DONTROUTE: the interface or next hop;
//   - IP_TRANSPARENT, SO_MARK, IPsec/XFRM policies, TCP repair, raw-socket headers: policy
//     routing, tunnels and hand-made packets (most need CAP_NET_ADMIN, which the program does not
//     have by default; they are refused all the same).
// A few more, set on the program's socket, make the kernel drop the SYN-ACK that answers it, and a
// blocking connect then waits in the kernel for the SYN retries to run out (about two minutes,
// whatever ConnectTimeout says; the supervisor's connect of the program's socket, to Tor's
// SocksPort without the sealed network, to the inner endpoint with it, is such a connect), and
// one makes the replies to a connection leave the machine:
//   - TCP_MD5SIG, TCP_MD5SIG_EXT and the TCP-AO keys (TCP_AO_ADD_KEY, TCP_AO_DEL_KEY,
//     TCP_AO_INFO, TCP_AO_GET_KEYS): a signed SYN is dropped by a peer without the key, an
//     unsigned SYN-ACK by a socket that requires one;
//   - IP_MINTTL, IPV6_MINHOPCOUNT: a minimum TTL above loopback's 64 drops every reply;
//   - SO_ATTACH_FILTER, SO_ATTACH_BPF on a TCP socket: a socket filter that drops everything
//     (on other sockets, UDP in the sandbox, netlink, unix, the supervisor carries them out: udev
//     monitors filter their netlink socket so);
//   - IP_FREEBIND, IPV6_FREEBIND: bind() to an address that is not this machine's; the
//     supervisor's connect to Tor's SocksPort then comes from it, and on IPv6 the SocksPort's
//     SYN-ACKs (from ::1) are routed out of the machine to that address, retransmitted for a
//     minute (seen by TestSealedOptionAttacks' sniffer without the sealed network).
// Rather than chasing that list as the kernel grows, setsockopt is allowed only for the options
// below, per level, checked on level and name in the filter (no notification on that path: these
// are the options programs set every day). Any other level or name is notified and refused with
// EPERM and one log line naming it. UDP sockets live in torsocks' sandbox network namespace, where
// no option leads anywhere, so SOL_UDP is allowed whole; netlink, kernel TLS and AF_ALG options
// carry no traffic of their own. docs/sealed-network.md has the table, option by option.
//
// The i386 socketcall form has its arguments in memory: it is notified, and the supervisor checks
// the same table (SockoptAllowed) and carries the allowed ones out on its copy of the socket.

// sockoptRange is an inclusive range of option names.
type sockoptRange struct{ lo, hi uint32 }

// sockoptLevel is one level's allowed names; all means every name of the level.
type sockoptLevel struct {
	level uint32
	all   bool
	names []sockoptRange
}

func r(lo, hi uint32) sockoptRange { return sockoptRange{lo, hi} }
func one(n uint32) sockoptRange    { return sockoptRange{n, n} }

// sockoptAllowlist: the options programs set that cannot change where a connection's packets go.
var sockoptAllowlist = []sockoptLevel{
	// SOL_SOCKET (asm-generic numbering, the same on amd64, i386 and arm64): all but SO_DONTROUTE
	// (5), SO_BINDTODEVICE (25), SO_ATTACH_FILTER (26), SO_MARK (36), SO_ATTACH_BPF (50),
	// SO_BINDTOIFINDEX (62) and the device-memory options (78-80); names above 83 are newer than
	// this list.
	{level: unix.SOL_SOCKET, names: []sockoptRange{r(1, 4), r(6, 24), r(27, 35), r(37, 49), r(51, 61), r(63, 77), r(81, 83)}},
	// IPPROTO_IP: TOS, TTL, RECVOPTS, PKTINFO (receiving it), MTU_DISCOVER, RECVERR, RECVTTL,
	// RECVTOS, MTU, PASSSEC, RECVORIGDSTADDR, NODEFRAG, CHECKSUM, BIND_ADDRESS_NO_PORT,
	// RECVFRAGSIZE, RECVERR_RFC4884, multicast TTL/loop/membership/filters (33-49),
	// LOCAL_PORT_RANGE. Not: HDRINCL, OPTIONS, ROUTER_ALERT, RETOPTS, PKTOPTIONS, FREEBIND,
	// IPSEC_POLICY, XFRM_POLICY, MINTTL, TRANSPARENT, MULTICAST_IF, UNICAST_IF, netfilter's (64+).
	{level: unix.IPPROTO_IP, names: []sockoptRange{r(1, 2), one(6), one(8), r(10, 14), one(18), one(20), r(22, 26), r(33, 49), one(51)}},
	// IPPROTO_IPV6: 2292PKTINFO, CHECKSUM, 2292HOPLIMIT, AUTHHDR, UNICAST_HOPS, multicast
	// hops/loop/membership, MTU_DISCOVER..FLOWINFO_SEND (23-33), MCAST_* and RECVPKTINFO (42-49),
	// RECVHOPLIMIT, HOPLIMIT, RECVHOPOPTS, RECVRTHDR, RECVDSTOPTS, RECVPATHMTU, PATHMTU,
	// DONTFRAG, RECVTCLASS, TCLASS, AUTOFLOWLABEL, ADDR_PREFERENCES, RECVORIGDSTADDR,
	// RECVFRAGSIZE. Not: ADDRFORM, the RFC 2292 and sticky extension headers (HOPOPTS, DSTOPTS,
	// RTHDR, RTHDRDSTOPTS, PKTOPTIONS), NEXTHOP, MULTICAST_IF, ROUTER_ALERT, IPSEC/XFRM policies,
	// HDRINCL, PKTINFO (sticky), TRANSPARENT, UNICAST_IF, MINHOPCOUNT, FREEBIND.
	{level: unix.IPPROTO_IPV6, names: []sockoptRange{one(2), r(7, 8), one(10), one(16), r(18, 21), r(23, 33), r(42, 49),
		r(51, 53), one(56), one(58), r(60, 62), r(66, 67), one(70), one(72), one(74), one(77)}},
	// IPPROTO_TCP: all but the repair options (TCP_REPAIR, REPAIR_QUEUE, QUEUE_SEQ,
	// REPAIR_OPTIONS, REPAIR_WINDOW, TCP_AO_REPAIR) and the signatures (TCP_MD5SIG,
	// TCP_MD5SIG_EXT, TCP_AO_ADD_KEY, TCP_AO_DEL_KEY, TCP_AO_INFO, TCP_AO_GET_KEYS); names above
	// 46 are newer than this list.
	{level: unix.IPPROTO_TCP, names: []sockoptRange{r(1, 13), r(15, 18), r(23, 28), r(30, 31), r(33, 37), r(43, 46)}},
	{level: unix.SOL_UDP, all: true},
	{level: unix.SOL_NETLINK, all: true},
	{level: unix.SOL_TLS, all: true},
	{level: unix.SOL_ALG, all: true},
}

// SockoptNotTCP tells whether setsockopt(level, name), off the allowlist, is harmless on every
// socket but TCP ones (the socket filters): the supervisor carries it out on the others.
func SockoptNotTCP(level, name int) bool {
	return level == unix.SOL_SOCKET && (name == unix.SO_ATTACH_FILTER || name == unix.SO_ATTACH_BPF)
}

// SockoptAllowed tells whether setsockopt(level, name) is on the allowlist.
func SockoptAllowed(level, name int) bool {
	for _, l := range sockoptAllowlist {
		if l.level != uint32(level) {
			continue
		}
		if l.all {
			return true
		}
		for _, n := range l.names {
			if uint32(name) >= n.lo && uint32(name) <= n.hi {
				return true
			}
		}
	}
	return false
}

// TCP-AO (Linux 6.7), not in x/sys/unix yet.
const (
	tcpAOaddkey  = 38 // TCP_AO_ADD_KEY
	tcpAOdelkey  = 39 // TCP_AO_DEL_KEY
	tcpAOinfo    = 40 // TCP_AO_INFO
	tcpAOgetkeys = 41 // TCP_AO_GET_KEYS
)

// sockoptNames are the refused options a log line names, with what each would do.
var sockoptNames = map[[2]int]string{
	{unix.SOL_SOCKET, unix.SO_DONTROUTE}:          "SO_DONTROUTE (sends past the routing table)",
	{unix.SOL_SOCKET, unix.SO_BINDTODEVICE}:       "SO_BINDTODEVICE (chooses the interface the connection leaves by)",
	{unix.SOL_SOCKET, unix.SO_MARK}:               "SO_MARK (policy routing)",
	{unix.SOL_SOCKET, unix.SO_BINDTOIFINDEX}:      "SO_BINDTOIFINDEX (chooses the interface the connection leaves by)",
	{unix.IPPROTO_IP, unix.IP_HDRINCL}:            "IP_HDRINCL (hand-made IP headers)",
	{unix.IPPROTO_IP, unix.IP_OPTIONS}:            "IP_OPTIONS (a source route would send the connection to a first hop the program chose)",
	{unix.IPPROTO_IP, unix.IP_ROUTER_ALERT}:       "IP_ROUTER_ALERT",
	{unix.IPPROTO_IP, unix.IP_RETOPTS}:            "IP_RETOPTS (IP options on the connection's packets)",
	{unix.IPPROTO_IP, unix.IP_IPSEC_POLICY}:       "IP_IPSEC_POLICY (an IPsec tunnel)",
	{unix.IPPROTO_IP, unix.IP_XFRM_POLICY}:        "IP_XFRM_POLICY (an IPsec tunnel)",
	{unix.IPPROTO_IP, unix.IP_TRANSPARENT}:        "IP_TRANSPARENT (policy routing)",
	{unix.IPPROTO_IP, unix.IP_MULTICAST_IF}:       "IP_MULTICAST_IF (chooses an interface)",
	{unix.IPPROTO_IP, unix.IP_UNICAST_IF}:         "IP_UNICAST_IF (chooses the interface the connection leaves by)",
	{unix.IPPROTO_IPV6, unix.IPV6_ADDRFORM}:       "IPV6_ADDRFORM",
	{unix.IPPROTO_IPV6, unix.IPV6_NEXTHOP}:        "IPV6_NEXTHOP (chooses the next hop)",
	{unix.IPPROTO_IPV6, unix.IPV6_RTHDR}:          "IPV6_RTHDR (a routing header would send the connection to a first hop the program chose)",
	{unix.IPPROTO_IPV6, unix.IPV6_HOPOPTS}:        "IPV6_HOPOPTS (extension headers on the connection's packets)",
	{unix.IPPROTO_IPV6, unix.IPV6_DSTOPTS}:        "IPV6_DSTOPTS (extension headers on the connection's packets)",
	{unix.IPPROTO_IPV6, unix.IPV6_RTHDRDSTOPTS}:   "IPV6_RTHDRDSTOPTS (extension headers on the connection's packets)",
	{unix.IPPROTO_IPV6, unix.IPV6_2292RTHDR}:      "IPV6_2292RTHDR (a routing header would send the connection to a first hop the program chose)",
	{unix.IPPROTO_IPV6, unix.IPV6_2292PKTOPTIONS}: "IPV6_2292PKTOPTIONS (extension headers on the connection's packets)",
	{unix.IPPROTO_IPV6, unix.IPV6_PKTINFO}:        "IPV6_PKTINFO (a sticky source address and interface)",
	{unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_IF}:   "IPV6_MULTICAST_IF (chooses an interface)",
	{unix.IPPROTO_IPV6, unix.IPV6_UNICAST_IF}:     "IPV6_UNICAST_IF (chooses the interface the connection leaves by)",
	{unix.IPPROTO_IPV6, unix.IPV6_TRANSPARENT}:    "IPV6_TRANSPARENT (policy routing)",
	{unix.IPPROTO_TCP, unix.TCP_REPAIR}:           "TCP_REPAIR (hand-made TCP state)",
	{unix.SOL_SOCKET, unix.SO_ATTACH_FILTER}:      "SO_ATTACH_FILTER (on a TCP socket a filter could drop the SYN-ACK and hold the connect for minutes)",
	{unix.SOL_SOCKET, unix.SO_ATTACH_BPF}:         "SO_ATTACH_BPF (on a TCP socket a filter could drop the SYN-ACK and hold the connect for minutes)",
	{unix.IPPROTO_IP, unix.IP_FREEBIND}:           "IP_FREEBIND (a source address not of this machine: the replies would be routed out to it)",
	{unix.IPPROTO_IPV6, unix.IPV6_FREEBIND}:       "IPV6_FREEBIND (a source address not of this machine: the replies would be routed out to it)",
	{unix.IPPROTO_IP, unix.IP_MINTTL}:             "IP_MINTTL (would drop the SYN-ACK and hold the connect for minutes)",
	{unix.IPPROTO_IPV6, unix.IPV6_MINHOPCOUNT}:    "IPV6_MINHOPCOUNT (would drop the SYN-ACK and hold the connect for minutes)",
	{unix.IPPROTO_TCP, unix.TCP_MD5SIG}:           "TCP_MD5SIG (a signed SYN is dropped: the connect would hang for minutes)",
	{unix.IPPROTO_TCP, unix.TCP_MD5SIG_EXT}:       "TCP_MD5SIG_EXT (a signed SYN is dropped: the connect would hang for minutes)",
	{unix.IPPROTO_TCP, tcpAOaddkey}:               "TCP_AO_ADD_KEY (a signed SYN is dropped: the connect would hang for minutes)",
	{unix.IPPROTO_TCP, tcpAOdelkey}:               "TCP_AO_DEL_KEY (TCP authentication)",
	{unix.IPPROTO_TCP, tcpAOinfo}:                 "TCP_AO_INFO (an unsigned SYN-ACK is dropped: the connect would hang for minutes)",
	{unix.IPPROTO_TCP, tcpAOgetkeys}:              "TCP_AO_GET_KEYS (TCP authentication)",
}

// SockoptName names setsockopt(level, name) for a log line.
func SockoptName(level, name int) string {
	if s, ok := sockoptNames[[2]int{level, name}]; ok {
		return s
	}
	return fmt.Sprintf("level %d option %d", level, name)
}

// setsockoptBlock emits the check of one ABI's setsockopt: the level (arg 1) and name (arg 2) are
// ints, so only their low 32 bits count, as the kernel reads them.
func (a *asm) setsockoptBlock(p string) {
	a.label(p + "setsockopt")
	a.ins(bpf.LoadAbsolute{Off: offArg(1), Size: 4})
	for _, l := range sockoptAllowlist {
		if l.all {
			a.jeq(l.level, p+"so_allow", "")
		} else {
			a.jeq(l.level, fmt.Sprintf("%sso_level%d", p, l.level), "")
		}
	}
	a.ret(actNotify)
	for _, l := range sockoptAllowlist {
		if l.all {
			continue
		}
		a.label(fmt.Sprintf("%sso_level%d", p, l.level))
		a.ins(bpf.LoadAbsolute{Off: offArg(2), Size: 4})
		for i, n := range l.names {
			next := fmt.Sprintf("%sso_level%d_%d", p, l.level, i)
			if n.lo == n.hi {
				a.jeq(n.lo, p+"so_allow", "")
				continue
			}
			a.jump(bpf.JumpGreaterOrEqual, n.lo, "", next)
			a.jump(bpf.JumpGreaterThan, n.hi, next, p+"so_allow")
			a.label(next)
		}
		a.ret(actNotify)
	}
	a.label(p + "so_allow")
	a.ret(actAllow)
}
