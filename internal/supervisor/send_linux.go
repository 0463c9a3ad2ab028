package supervisor

import (
	"encoding/binary"
	"log/slog"

	"golang.org/x/sys/unix"
)

// maxEmulatedSend bounds the bytes one emulated send carries; a send may legally send less than
// it was given, and callers of send loop.
const maxEmulatedSend = 64 << 10

type sendKind int

const (
	kindSendto sendKind = iota
	kindSendmsg
	kindSendmmsg
)

// sendArgs are the arguments of sendto/sendmsg/sendmmsg (from registers or, for the i386
// socketcall, read from memory).
type sendArgs struct {
	kind          sendKind
	fd            int
	buf, len      uint64 // sendto
	name, namelen uint64 // sendto
	msg, vlen     uint64 // sendmsg: msghdr; sendmmsg: mmsghdr array
	flags         int
}

// send serves a send-family call the filter notified: one carrying MSG_FASTOPEN (a connect in
// disguise), or any i386 socketcall send (its flags are in memory, beyond the filter's sight).
//
// On unix, netlink and sandboxed UDP sockets the supervisor sends the data itself (sendLocal). On
// a TCP socket:
//   - connected: MSG_FASTOPEN fails with EISCONN as the kernel would fail it; without it (i386
//     socketcall only) the supervisor sends the data itself, so flags changed in memory by a racing
//     thread after this decision cannot matter;
//   - not connected: MSG_FASTOPEN with an address becomes a proxied connect followed by the send;
//     anything else fails as a send on an unconnected TCP socket does (EPIPE).
func (s *Supervisor) send(c *call, a sendArgs) (reply, error) {
	cp, si, err := c.sock(a.fd)
	if err != nil {
		return reply{}, fromErr("send", err)
	}
	defer unix.Close(cp)
	local := si.domain == unix.AF_UNIX || si.domain == unix.AF_NETLINK ||
		(!si.isTCP() && s.inSandbox(cp, si))
	if !si.isTCP() && !local {
		return reply{}, refused(unix.EPERM, "send on a non-TCP internet socket refused: Tor carries TCP only")
	}
	if local {
		// Nothing this socket sends can leave the machine, but the kernel must not run the call:
		// it would look the descriptor number up again (see copy_linux.go). The supervisor sends
		// the data itself on the copy, which may block: the receiver role goes first.
		c.lease.release()
		return s.sendLocal(c, cp, si, a)
	}
	msg, err := s.readSend(c, a, maxEmulatedSend)
	if err != nil {
		return reply{}, fromErr("send", err)
	}
	fastopen := msg.flags&unix.MSG_FASTOPEN != 0
	connected := isConnected(cp)
	switch {
	case connected && fastopen:
		return reply{}, failed(unix.EISCONN)
	case !connected && !fastopen:
		return reply{}, failed(unix.EPIPE)
	case !connected && msg.name == nil:
		return reply{}, failed(unix.EINVAL) // what the kernel answers: a Fast Open connect needs an address
	}
	c.lease.release()
	if !connected {
		dest, unspec, err := parseSockaddr(si.domain, msg.name)
		switch {
		case unspec:
			return reply{}, failed(unix.EOPNOTSUPP) // as the kernel: no Fast Open to AF_UNSPEC
		case err != nil:
			return reply{}, failed(err)
		}
		// The data follows the connect in this call: the connect completes first, even on a
		// non-blocking socket (no asynchronous connect: the kernel would queue the data in the
		// SYN, which Tor would never see).
		c.connectFirst = true
		if err := s.connectInet(c, cp, si, dest); err != nil {
			return reply{}, err
		}
	}
	n, err := sendRaw(cp, msg.data, nil, msg.flags&^unix.MSG_FASTOPEN|unix.MSG_NOSIGNAL)
	return c.sent(a, n, err)
}

// sent is the answer to a send-family call the supervisor carried out: the bytes sent, or for
// sendmmsg one message (its msg_len set), or the error.
func (c *call) sent(a sendArgs, n int, err error) (reply, error) {
	if err != nil {
		return reply{}, failed(err)
	}
	if a.kind == kindSendmmsg {
		c.writeMsgLen(a, n)
		return value(1), nil
	}
	return value(int64(n)), nil
}

// sendMsg is what one send carries.
type sendMsg struct {
	name       []byte // destination sockaddr, nil if none
	data       []byte // up to the limit given to readSend
	flags      int
	controlLen uint64 // bytes of ancillary data (not read)
	total      uint64 // bytes the program asked to send (data may hold fewer)
}

// sendLocal sends, on the copy of a unix, netlink or sandboxed UDP socket, what the program asked
// to send. A datagram is sent whole (up to 1 MiB) or not at all.
func (s *Supervisor) sendLocal(c *call, cp int, si sockInfo, a sendArgs) (reply, error) {
	limit := maxEmulatedSend
	if si.typ != unix.SOCK_STREAM {
		limit = 1 << 20
	}
	msg, err := s.readSend(c, a, limit)
	if err != nil {
		return reply{}, fromErr("send", err)
	}
	if si.typ != unix.SOCK_STREAM && msg.total > uint64(len(msg.data)) {
		return reply{}, failed(unix.EMSGSIZE)
	}
	if msg.controlLen > 0 {
		return reply{}, refused(unix.EOPNOTSUPP, "sendmsg with ancillary data through the i386 socketcall is not supported under torsocks")
	}
	flags := msg.flags&^unix.MSG_FASTOPEN | unix.MSG_NOSIGNAL
	if si.domain != unix.AF_UNIX {
		n, err := sendRaw(cp, msg.data, msg.name, flags)
		return c.sent(a, n, err)
	}
	// With the caller's credentials (creds_linux.go): a datagram's destination is checked at send
	// time, and a receiver with SO_PASSCRED gets the sender's uid and gid.
	var n int
	var sendErr error
	sent := false
	err = c.unixCall(msg.name, unixSendCaps, func(sa []byte) error {
		sent = true
		n, sendErr = sendRaw(cp, msg.data, sa, flags)
		return nil
	})
	if !sent {
		return reply{}, fromErr("send", err)
	}
	return c.sent(a, n, sendErr)
}

// readSend reads the destination and at most limit bytes of data of a send-family call from the
// program's memory; a datagram socket's caller passes a limit it checks against the message's full
// length.
func (s *Supervisor) readSend(c *call, a sendArgs, limit int) (sendMsg, error) {
	return parseSend(c.read, c.abi.PtrSize, a, limit)
}

// memReader reads n bytes at addr of the program's memory (call.read in the supervisor; a byte
// slice in the fuzz test).
type memReader func(addr uint64, n int) ([]byte, error)

// parseSend reads the destination and up to limit bytes of data of a send-family call through
// read, for an ABI with ptrSize-byte pointers. Everything it reads is the program's and may be
// anything: lengths are checked as the kernel checks them (an iovec longer than the ABI's ssize_t
// is EINVAL), sizes bounded, and nothing is trusted to be consistent.
func parseSend(read memReader, ptrSize int, a sendArgs, limit int) (sendMsg, error) {
	m := sendMsg{flags: a.flags}
	ps := uint64(ptrSize)
	maxLen := uint64(1<<63 - 1)
	if ps == 4 {
		maxLen = 1<<31 - 1
	}
	word := func(b []byte) uint64 {
		if ps == 4 {
			return uint64(binary.LittleEndian.Uint32(b))
		}
		return binary.LittleEndian.Uint64(b)
	}
	var iovs [][2]uint64 // base, len
	switch a.kind {
	case kindSendto:
		if a.name != 0 && a.namelen > 0 {
			if a.namelen > maxSockaddrLen {
				return m, unix.EINVAL
			}
			b, err := read(a.name, int(a.namelen))
			if err != nil {
				return m, err
			}
			m.name = b
		}
		n := a.len
		if n > 1<<31-1 {
			n = 1<<31 - 1 // sendto's length is clamped to INT_MAX by the kernel, not refused
		}
		iovs = append(iovs, [2]uint64{a.buf, n})
	case kindSendmsg, kindSendmmsg:
		if a.kind == kindSendmmsg && a.vlen == 0 {
			return m, nil
		}
		// struct msghdr: name, namelen (int, padded to a pointer), iov, iovlen (size_t),
		// control, controllen, flags.
		hdrLen := 7 * ps
		if ps == 8 {
			hdrLen = 56
		}
		h, err := read(a.msg, int(hdrLen))
		if err != nil {
			return m, err
		}
		name := word(h[0:])
		namelen := uint64(binary.LittleEndian.Uint32(h[ps:]))
		iov := word(h[2*ps:])
		iovlen := word(h[3*ps:])
		m.controlLen = word(h[5*ps:])
		if name != 0 && namelen > 0 {
			if namelen > maxSockaddrLen {
				return m, unix.EINVAL
			}
			if m.name, err = read(name, int(namelen)); err != nil {
				return m, err
			}
		}
		if iovlen > 1024 {
			return m, unix.EMSGSIZE
		}
		if iovlen > 0 {
			ib, err := read(iov, int(iovlen*2*ps))
			if err != nil {
				return m, err
			}
			for i := uint64(0); i < iovlen; i++ {
				iovs = append(iovs, [2]uint64{word(ib[2*ps*i:]), word(ib[2*ps*i+ps:])})
			}
		}
	}
	for _, v := range iovs {
		if v[1] > maxLen {
			return m, unix.EINVAL
		}
		if m.total += v[1]; m.total < v[1] {
			m.total = 1<<64 - 1 // saturate: only compared with what was read
		}
		room := limit - len(m.data)
		if room <= 0 {
			continue // keep counting total
		}
		n := v[1]
		if n > uint64(room) {
			n = uint64(room)
		}
		if n == 0 {
			continue
		}
		b, err := read(v[0], int(n))
		if err != nil {
			return m, err
		}
		m.data = append(m.data, b...)
	}
	return m, nil
}

// writeMsgLen stores the bytes sent in msg_len of the first struct mmsghdr (after its msghdr).
func (c *call) writeMsgLen(a sendArgs, n int) {
	off := uint64(28)
	if c.abi.PtrSize == 8 {
		off = 56
	}
	v := uint32(n)
	if err := c.write(a.msg+off, []byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)}); err != nil {
		c.logf(slog.LevelDebug, "sendmmsg: store msg_len: %v", err)
	}
}
