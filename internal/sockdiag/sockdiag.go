// Package sockdiag has one job: list the SO_COOKIE of every live TCP socket of
// the caller's network namespace, by a NETLINK_SOCK_DIAG dump. The connection
// registry uses the list to reclaim the entries of sockets that are gone.
package sockdiag

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Layouts from linux/inet_diag.h and linux/netlink.h (the same on every
// architecture: only fixed-size fields, all naturally aligned).
const (
	// struct nlmsghdr: len u32, type u16, flags u16, seq u32, pid u32.
	sizeofNlMsghdr = 16
	// struct inet_diag_sockid: sport be16, dport be16, src [4]be32,
	// dst [4]be32, if u32, cookie [2]u32.
	sizeofInetDiagSockid = 2 + 2 + 16 + 16 + 4 + 8
	// struct inet_diag_req_v2: family u8, protocol u8, ext u8, pad u8,
	// states u32, id inet_diag_sockid.
	sizeofInetDiagReqV2 = 4 + 4 + sizeofInetDiagSockid // 56
	// struct inet_diag_msg: family, state, timer, retrans (u8 each), id
	// inet_diag_sockid, expires, rqueue, wqueue, uid, inode (u32 each).
	sizeofInetDiagMsg = 4 + sizeofInetDiagSockid + 5*4 // 72
	// Offset of id.idiag_cookie inside struct inet_diag_msg.
	cookieOffset = 4 + 2 + 2 + 16 + 16 + 4 // 44
	// Offset of idiag_inode inside struct inet_diag_msg.
	inodeOffset = 4 + sizeofInetDiagSockid + 4*4 // 68
	// struct nlattr (len u16, type u16) with a u32 payload.
	sizeofProtocolAttr = 8
	// INET_DIAG_REQ_PROTOCOL, from the enum in linux/inet_diag.h.
	inetDiagReqProtocol = 3

	// recvBufSize is the receive buffer. The kernel caps one dump message
	// batch at 32 KiB (netlink_recvmsg's max_recvmsg_len); a truncated
	// batch (MSG_TRUNC) is reported as an error, never silently dropped.
	recvBufSize = 32 << 10
)

// TCP states (include/net/tcp_states.h) left out of the dump: TIME_WAIT and
// NEW_SYN_RECV entries are kernel mini-sockets that no descriptor refers to
// (the orphan rule below would drop them anyway; the kernel need not send
// them). A TIME_WAIT mini-socket carries on the cookie of the closed socket it
// replaces (inet_twsk_alloc copies sk_cookie).
const (
	tcpTimeWait   = 6
	tcpNewSynRecv = 12
	dumpStates    = 0xffffffff &^ (1<<tcpTimeWait | 1<<tcpNewSynRecv)
)

// LiveTCPCookies returns the SO_COOKIE of every TCP socket (IPv4 and IPv6) of
// the caller's network namespace that a file descriptor still refers to. MPTCP
// sockets (IPPROTO_MPTCP, which Go 1.24+ uses for listeners by default) are
// TCP sockets to the program and are listed too, by the cookie of the MPTCP
// socket itself. Sockets of other network namespaces are not listed.
//
// Listed: a socket that is connected, listening, connecting, or shutting down
// while a descriptor (in any process) still refers to it. Not listed:
//   - orphans, sockets whose last descriptor is closed but which the kernel
//     keeps while TCP finishes its close (FIN_WAIT1, FIN_WAIT2, LAST_ACK,
//     CLOSING, and TIME_WAIT mini-sockets): they keep the closed socket's
//     cookie, and are recognised by an inode number of 0 (no struct socket);
//   - sockets in the CLOSE state (never bound or connected, or their
//     connection fully finished), which the kernel keeps in no TCP table.
//
// A dump is not an atomic snapshot: a socket created during the dump may or may
// not be listed, and the kernel resumes a dump by position within a hash
// bucket, so a socket alive for the whole dump can, rarely, be missed when
// another socket of the same bucket goes away between two batches. Callers
// that must not miss a live socket take the union of two dumps.
func LiveTCPCookies() (map[uint64]struct{}, error) {
	return cookies(query{states: dumpStates})
}

// query says which sockets a dump lists.
type query struct {
	states  uint32 // bit mask of 1<<state
	orphans bool   // also list sockets no descriptor refers to (tests)
}

// cookies dumps the TCP and MPTCP sockets q selects.
func cookies(q query) (map[uint64]struct{}, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("sockdiag: netlink socket: %w", err)
	}
	defer unix.Close(fd)
	set := make(map[uint64]struct{})
	buf := make([]byte, recvBufSize)
	seq := uint32(0)
	for _, protocol := range [...]uint32{unix.IPPROTO_TCP, unix.IPPROTO_MPTCP} {
		for _, family := range [...]uint8{unix.AF_INET, unix.AF_INET6} {
			seq++
			err := dump(fd, family, protocol, q, seq, buf, set)
			if err != nil && protocol == unix.IPPROTO_MPTCP && errors.Is(err, unix.ENOENT) && !mptcpAvailable() {
				// No MPTCP diag handler, and no MPTCP socket can be made
				// here: there is none to list.
				continue
			}
			if err != nil {
				return nil, err
			}
		}
	}
	return set, nil
}

// mptcpAvailable reports whether an MPTCP socket can be created in this
// network namespace.
func mptcpAvailable() bool {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_MPTCP)
	if err != nil {
		return false
	}
	unix.Close(fd)
	return true
}

// request builds the SOCK_DIAG_BY_FAMILY dump request for one address family.
func request(family uint8, protocol, states, seq uint32) []byte {
	n := sizeofNlMsghdr + sizeofInetDiagReqV2
	if protocol > 0xff {
		n += sizeofProtocolAttr
	}
	b := make([]byte, n)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(len(b)))                     // nlmsg_len
	ne.PutUint16(b[4:], unix.SOCK_DIAG_BY_FAMILY)           // nlmsg_type
	ne.PutUint16(b[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP) // nlmsg_flags
	ne.PutUint32(b[8:], seq)                                // nlmsg_seq
	r := b[sizeofNlMsghdr:]                                 // nlmsg_pid 0: the kernel
	r[0] = family                                           // sdiag_family
	r[1] = uint8(protocol)                                  // sdiag_protocol
	ne.PutUint32(r[4:], states)                             // idiag_states; ext, pad, id: zero
	if protocol > 0xff {
		// A protocol number too big for sdiag_protocol (MPTCP) goes in an
		// INET_DIAG_REQ_PROTOCOL attribute (u32), as ss(8) sends it.
		a := r[sizeofInetDiagReqV2:]
		ne.PutUint16(a[0:], sizeofProtocolAttr)  // nla_len
		ne.PutUint16(a[2:], inetDiagReqProtocol) // nla_type
		ne.PutUint32(a[4:], protocol)
	}
	return b
}

// dump runs one dump (one family, one protocol) on fd and adds the cookies it
// reports to set.
func dump(fd int, family uint8, protocol uint32, q query, seq uint32, buf []byte, set map[uint64]struct{}) error {
	kernel := &unix.SockaddrNetlink{Family: unix.AF_NETLINK}
	for {
		err := unix.Sendto(fd, request(family, protocol, q.states, seq), 0, kernel)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("sockdiag: send dump request: %w", err)
		}
		break
	}
	for {
		n, _, flags, from, err := unix.Recvmsg(fd, buf, nil, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("sockdiag: receive: %w", err)
		}
		if flags&unix.MSG_TRUNC != 0 {
			return errors.New("sockdiag: netlink message truncated")
		}
		if sa, ok := from.(*unix.SockaddrNetlink); !ok || sa.Pid != 0 {
			continue // not from the kernel
		}
		done, err := parse(buf[:n], seq, q.orphans, set)
		if err != nil || done {
			return err
		}
	}
}

// parse reads one batch of netlink messages into set, leaving out orphans
// unless asked. It reports done at NLMSG_DONE.
func parse(b []byte, seq uint32, orphans bool, set map[uint64]struct{}) (done bool, err error) {
	ne := binary.NativeEndian
	for len(b) >= sizeofNlMsghdr {
		l := ne.Uint32(b[0:])
		typ := ne.Uint16(b[4:])
		mseq := ne.Uint32(b[8:])
		if l < sizeofNlMsghdr || uint64(l) > uint64(len(b)) {
			return false, fmt.Errorf("sockdiag: bad netlink message length %d", l)
		}
		payload := b[sizeofNlMsghdr:l]
		if al := (l + 3) &^ 3; uint64(al) < uint64(len(b)) { // NLMSG_ALIGN
			b = b[al:]
		} else {
			b = nil
		}
		if mseq != seq {
			continue // a stale answer to an earlier request
		}
		switch typ {
		case unix.NLMSG_DONE:
			// A dump's DONE carries the dump's final status (an int).
			if len(payload) >= 4 {
				if e := int32(ne.Uint32(payload)); e < 0 {
					return true, fmt.Errorf("sockdiag: dump: %w", unix.Errno(-e))
				}
			}
			return true, nil
		case unix.NLMSG_ERROR:
			if len(payload) < 4 {
				return true, errors.New("sockdiag: short NLMSG_ERROR")
			}
			if e := int32(ne.Uint32(payload)); e < 0 {
				return true, fmt.Errorf("sockdiag: dump request: %w", unix.Errno(-e))
			}
			return true, nil // an acknowledgement: nothing more follows
		case unix.SOCK_DIAG_BY_FAMILY:
			if len(payload) < sizeofInetDiagMsg {
				return false, fmt.Errorf("sockdiag: short inet_diag_msg (%d bytes)", len(payload))
			}
			if !orphans && ne.Uint32(payload[inodeOffset:]) == 0 {
				continue // no descriptor refers to it
			}
			c0 := ne.Uint32(payload[cookieOffset:])
			c1 := ne.Uint32(payload[cookieOffset+4:])
			set[uint64(c0)|uint64(c1)<<32] = struct{}{}
		}
	}
	return false, nil
}
