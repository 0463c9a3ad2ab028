// Package dnsserver puts the DNS responder on the wire for the traced program: on UDP port 53 of
// every address inside the UDP sandbox (answering from the very address the program sent to, so
// resolvers that check the source of an answer accept it), on a loopback TCP listener that the
// supervisor connects the program's port-53 TCP sockets to (DNS over TCP, used after truncation),
// and with a catch-all that logs, once in a while, the datagrams to other ports that the sandbox
// swallows. What to answer is the Answerer's business (internal/dns). The UDP queries are read by
// goroutines of the server's own (Start) or, in torsocks, by the supervisor's worker waiting at the
// seccomp listener (StartSide: supervisor.Side), which saves a thread wake-up per lookup.
package dnsserver

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/gotorsocks/torsocks/internal/acceptloop"
	"github.com/gotorsocks/torsocks/internal/portgate"
	"github.com/gotorsocks/torsocks/internal/sandbox"
	"github.com/gotorsocks/torsocks/internal/sockaddr"
)

// Answerer answers one DNS query message; nil means drop it.
type Answerer interface {
	Answer(ctx context.Context, query []byte, maxSize int) []byte
}

// NowAnswerer is an Answerer that can also answer without waiting: AnswerNow returns what Answer
// would, with ok true, when that needs nothing to wait for (map mode, .onion, local names, a
// cached result); ok false when Answer would wait (a lookup through Tor, a stand-in table to
// reclaim), and the query then goes to Answer on its own goroutine. The server answers what it
// can on the goroutine that read the query: no goroutine started, no other thread woken.
type NowAnswerer interface {
	Answerer
	AnswerNow(query []byte, maxSize int) (resp []byte, ok bool)
}

// Server serves an Answerer.
type Server struct {
	ans     Answerer
	log     *slog.Logger
	dropped Dropped
	sem     chan struct{} // bounds queries being answered at once
	tcp     net.Listener
	udp     []udpSocket // IPv4, IPv6
	raw     []*os.File

	// Served as a supervisor.Side (StartSide): the UDP sockets are raw non-blocking descriptors
	// the supervisor's waiting worker polls and hands to ServeSide, not goroutines of the Go
	// netpoller. sideFDs is what SideFDs returns (nil once closing). fdMu guards the
	// descriptors' lives: read-held while one is used (ServeSide, a late answer), held to close
	// them; sideClosed is set under it. bufMu guards sideBuf and sideOOB (ServeSide's).
	side       bool
	sideFDs    atomic.Pointer[[]int]
	fdMu       sync.RWMutex
	sideClosed bool
	bufMu      sync.Mutex
	sideBuf    []byte
	sideOOB    []byte

	gate portgate.Gate // local ports of program sockets being connected to the TCP listener

	mu   sync.Mutex               // guards seen
	seen map[netip.Addr]time.Time // last catch-all log line per destination

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Dropped is told of a datagram the sandbox swallowed (not DNS) and returns true if it took care
// of it (then it is not logged as refused).
type Dropped func(src, dst netip.AddrPort, payload []byte) bool

// Start serves ans inside sb (UDP) and on a loopback TCP listener in the caller's namespace.
// dropped, if not nil, sees each datagram the sandbox swallowed.
func Start(sb *sandbox.Sandbox, ans Answerer, log *slog.Logger, dropped Dropped) (*Server, error) {
	return start(sb, ans, log, dropped, false)
}

// StartSide is Start, except that the UDP queries are served by whoever polls SideFDs and calls
// ServeSide (the supervisor's worker waiting at the seccomp listener: supervisor.Side), not by
// goroutines of the server's own. Nothing answers them while nobody polls.
func StartSide(sb *sandbox.Sandbox, ans Answerer, log *slog.Logger, dropped Dropped) (*Server, error) {
	return start(sb, ans, log, dropped, true)
}

func start(sb *sandbox.Sandbox, ans Answerer, log *slog.Logger, dropped Dropped, side bool) (*Server, error) {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{ans: ans, log: log, dropped: dropped, sem: make(chan struct{}, 256),
		seen: map[netip.Addr]time.Time{}, ctx: ctx, cancel: cancel, side: side}
	fail := func(err error) (*Server, error) {
		s.Close()
		return nil, err
	}
	for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
		u := udpSocket{fd: -1, dst: dst4, from: from4}
		var sa unix.Sockaddr = &unix.SockaddrInet4{Port: 53}
		if fam == unix.AF_INET6 {
			u.dst, u.from, sa = dst6, from6, &unix.SockaddrInet6{Port: 53}
		}
		fd, err := sandboxUDP(sb, fam, sa)
		if err != nil {
			return fail(err)
		}
		if !side {
			pc, err := packetConn(fd)
			if err != nil {
				return fail(err)
			}
			u.conn = pc
		} else {
			u.fd = fd
		}
		s.udp = append(s.udp, u)
	}
	if side {
		s.sideBuf, s.sideOOB = make([]byte, 4096), make([]byte, 128)
		fds := []int{s.udp[0].fd, s.udp[1].fd}
		s.sideFDs.Store(&fds)
	}
	var err error
	if s.tcp, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		return fail(fmt.Errorf("DNS TCP listener: %w", err))
	}
	for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
		fd, err := sb.SocketUnpooled(fam, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.IPPROTO_UDP)
		if err != nil {
			return fail(err)
		}
		if fam == unix.AF_INET6 {
			unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
		}
		if err := attachNotDNS(fd, fam); err != nil {
			unix.Close(fd)
			return fail(err)
		}
		s.raw = append(s.raw, os.NewFile(uintptr(fd), "udp-catch-all"))
	}
	if !side {
		s.wg.Add(2)
		go s.serveUDP(s.udp[0])
		go s.serveUDP(s.udp[1])
	}
	s.wg.Add(3)
	go s.serveTCP()
	go s.catchAll(s.raw[0], unix.AF_INET)
	go s.catchAll(s.raw[1], unix.AF_INET6)
	return s, nil
}

// sandboxUDP makes one of the responder's UDP sockets (non-blocking): bound to port 53 of every
// address of family in the sandbox, with the destination of each datagram in its control messages
// (IP_PKTINFO, IPV6_RECVPKTINFO).
func sandboxUDP(sb *sandbox.Sandbox, family int, sa unix.Sockaddr) (int, error) {
	fd, err := sb.SocketUnpooled(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return -1, err
	}
	fail := func(err error) (int, error) {
		unix.Close(fd)
		return -1, err
	}
	if family == unix.AF_INET6 {
		unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1)
		// Answering from the queried address: IPv6 accepts an IPV6_PKTINFO source only if it is
		// assigned to an interface (the sandbox's local route for ::/0 does not count, unlike
		// IPv4's), or with IPV6_FREEBIND.
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_FREEBIND, 1); err != nil {
			return fail(fmt.Errorf("IPV6_FREEBIND on the DNS responder: %w", err))
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1); err != nil {
			return fail(fmt.Errorf("IPV6_RECVPKTINFO: %w", err))
		}
	} else if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_PKTINFO, 1); err != nil {
		return fail(fmt.Errorf("IP_PKTINFO: %w", err))
	}
	if err := unix.Bind(fd, sa); err != nil {
		return fail(fmt.Errorf("bind DNS responder in the sandbox: %w", err))
	}
	return fd, nil
}

// packetConn makes a UDP socket a *net.UDPConn of the Go netpoller (Start's goroutines); fd is
// closed.
func packetConn(fd int) (*net.UDPConn, error) {
	f := os.NewFile(uintptr(fd), "dns-udp")
	defer f.Close()
	pc, err := net.FilePacketConn(f)
	if err != nil {
		return nil, fmt.Errorf("DNS responder socket: %w", err)
	}
	return pc.(*net.UDPConn), nil
}

// TCPAddr is where the supervisor connects the program's port-53 TCP sockets.
func (s *Server) TCPAddr() netip.AddrPort {
	return s.tcp.Addr().(*net.TCPAddr).AddrPort()
}

// Expect announces that a program socket bound to local port port is about to connect to the TCP
// listener; connections from other ports (other local users) are refused.
func (s *Server) Expect(port uint16) { s.gate.Expect(port) }

// Close stops serving and waits.
func (s *Server) Close() error {
	s.cancel()
	s.sideFDs.Store(nil)
	s.fdMu.Lock()
	s.sideClosed = true
	for _, u := range s.udp {
		if u.conn != nil {
			u.conn.Close()
		} else {
			unix.Close(u.fd)
		}
	}
	s.fdMu.Unlock()
	if s.tcp != nil {
		s.tcp.Close()
	}
	// The catch-all goroutines stop at once; what their sockets still hold is handled here.
	for _, f := range s.raw {
		f.SetReadDeadline(time.Now())
	}
	s.wg.Wait()
	for i, f := range s.raw {
		family := unix.AF_INET
		if i == 1 {
			family = unix.AF_INET6
		}
		s.drain(f, family)
		f.Close()
	}
	return nil
}

// answer answers q and hands the answer to reply, on the caller's goroutine when the Answerer can
// answer at once (NowAnswerer), else on a goroutine of its own (at most cap(sem) at once) with a
// copy of q: the caller reuses q's buffer once answer returns.
func (s *Server) answer(q []byte, max int, reply func([]byte)) {
	if r, ok := s.answerNow(q, max); ok {
		if r != nil {
			reply(r)
		}
		return
	}
	s.answerLater(q, max, reply)
}

// answerNow is the Answerer's answer to q if it has one without waiting (NowAnswerer).
func (s *Server) answerNow(q []byte, max int) ([]byte, bool) {
	if now, ok := s.ans.(NowAnswerer); ok {
		return now.AnswerNow(q, max)
	}
	return nil, false
}

// answerLater is answer's goroutine: the Answerer's answer to a copy of q, handed to reply.
func (s *Server) answerLater(q []byte, max int, reply func([]byte)) {
	select {
	case s.sem <- struct{}{}:
	case <-s.ctx.Done():
		return
	}
	q = bytes.Clone(q)
	s.wg.Add(1)
	go func() {
		defer func() { <-s.sem; s.wg.Done() }()
		ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
		defer cancel()
		if r := s.ans.Answer(ctx, q, max); r != nil {
			reply(r)
		}
	}()
}

// serveUDP answers the queries that reach c, each from the address the program sent it to, so
// that the program sees its nameserver answering.
func (s *Server) serveUDP(c udpSocket) {
	defer s.wg.Done()
	oob := make([]byte, 128)
	buf := make([]byte, 4096)
	for {
		n, oobn, _, src, err := c.conn.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			return
		}
		dst := c.dst(oob[:oobn])
		if dst == nil {
			continue
		}
		q := buf[:n]
		s.answer(q, udpMax(q), func(r []byte) {
			if _, _, err := c.conn.WriteMsgUDPAddrPort(r, c.from(dst), src); err != nil {
				s.log.Warn(fmt.Sprintf("DNS answer to %v: %v", src, err))
			}
		})
	}
}

// udpSocket is one of the responder's UDP sockets (IPv4 or IPv6) with its family's packet info:
// the address a query was sent to, and the control message that answers from it.
type udpSocket struct {
	conn *net.UDPConn            // served by serveUDP (Start); nil for StartSide
	fd   int                     // StartSide's: served by ServeSide; -1 for Start
	dst  func(oob []byte) net.IP // nil if the kernel did not say
	from func(src net.IP) []byte
}

// SideFDs are the UDP sockets to poll for queries (StartSide; none for Start, and once closing).
func (s *Server) SideFDs() []int {
	if p := s.sideFDs.Load(); p != nil {
		return *p
	}
	return nil
}

// ServeSide answers one query waiting on fd, one of SideFDs, from the address it was sent to
// (as serveUDP does), without blocking: the answer is sent at once when the Answerer has it
// without waiting (map mode, stand-ins, cached results), else later by a goroutine. fd is
// ignored if it is not one of the server's sockets any more (closed, its number perhaps reused).
func (s *Server) ServeSide(fd int) {
	s.fdMu.RLock()
	defer s.fdMu.RUnlock()
	if s.sideClosed || !s.side {
		return
	}
	var u *udpSocket
	for i := range s.udp {
		if s.udp[i].fd == fd {
			u = &s.udp[i]
		}
	}
	if u == nil {
		return
	}
	s.bufMu.Lock()
	defer s.bufMu.Unlock()
	var from unix.RawSockaddrAny
	n, oobn, fromLen, err := recvmsgRaw(fd, s.sideBuf, s.sideOOB, &from)
	if err != nil {
		return // EAGAIN (nothing queued after all), or an error queued on the socket, now cleared
	}
	dst := u.dst(s.sideOOB[:oobn])
	if dst == nil {
		return
	}
	q := s.sideBuf[:n]
	max := udpMax(q)
	if r, ok := s.answerNow(q, max); ok {
		if r != nil {
			s.sendSide(u, r, dst, &from, fromLen)
		}
		return
	}
	to := from // the goroutine's copy: from stays on this one's stack
	s.answerLater(q, max, func(r []byte) {
		s.fdMu.RLock()
		defer s.fdMu.RUnlock()
		if !s.sideClosed {
			s.sendSide(u, r, dst, &to, fromLen)
		}
	})
}

// sendSide sends answer r to the program's address to, from dst (its nameserver); s.fdMu is
// read-held.
func (s *Server) sendSide(u *udpSocket, r []byte, dst net.IP, to *unix.RawSockaddrAny, toLen uint32) {
	if err := sendmsgRaw(u.fd, r, u.from(dst), to, toLen); err != nil {
		s.log.Warn(fmt.Sprintf("DNS answer to %v: %v", sockaddr.AddrPort(to), err))
	}
}

// recvmsgRaw receives one datagram without waiting, with its sender's address as the kernel gave
// it (x/sys/unix's Recvmsg asks the socket's protocol for every inet address it converts, one
// system call more).
func recvmsgRaw(fd int, p, oob []byte, from *unix.RawSockaddrAny) (n, oobn int, fromLen uint32, err error) {
	iov := unix.Iovec{Base: &p[0]}
	iov.SetLen(len(p))
	msg := unix.Msghdr{Name: (*byte)(unsafe.Pointer(from)), Namelen: uint32(unix.SizeofSockaddrAny), Iov: &iov, Iovlen: 1}
	msg.Control = &oob[0]
	msg.SetControllen(len(oob))
	r, _, errno := unix.Syscall(unix.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(&msg)), unix.MSG_DONTWAIT)
	if errno != 0 {
		return 0, 0, 0, errno
	}
	return int(r), int(msg.Controllen), msg.Namelen, nil
}

// sendmsgRaw sends p with control messages oob to the address to (toLen bytes of it).
func sendmsgRaw(fd int, p, oob []byte, to *unix.RawSockaddrAny, toLen uint32) error {
	msg := unix.Msghdr{Name: (*byte)(unsafe.Pointer(to)), Namelen: toLen}
	var iov unix.Iovec
	if len(p) > 0 {
		iov.Base = &p[0]
		iov.SetLen(len(p))
		msg.Iov, msg.Iovlen = &iov, 1
	}
	if len(oob) > 0 {
		msg.Control = &oob[0]
		msg.SetControllen(len(oob))
	}
	_, _, errno := unix.Syscall(unix.SYS_SENDMSG, uintptr(fd), uintptr(unsafe.Pointer(&msg)), unix.MSG_DONTWAIT)
	if errno != 0 {
		return errno
	}
	return nil
}

// dst4 and dst6 read the IP_PKTINFO / IPV6_PKTINFO destination (what a malformed message list
// still gave, if anything).
func dst4(oob []byte) net.IP {
	var cm ipv4.ControlMessage
	cm.Parse(oob)
	return cm.Dst
}

func dst6(oob []byte) net.IP {
	var cm ipv6.ControlMessage
	cm.Parse(oob)
	return cm.Dst
}

func from4(src net.IP) []byte { return (&ipv4.ControlMessage{Src: src}).Marshal() }
func from6(src net.IP) []byte { return (&ipv6.ControlMessage{Src: src}).Marshal() }

// udpMax is the largest UDP answer the query allows: 512, or its EDNS buffer size (up to 4096).
func udpMax(q []byte) int {
	var p dnsmessage.Parser
	if _, err := p.Start(q); err != nil {
		return 512
	}
	if err := p.SkipAllQuestions(); err != nil {
		return 512
	}
	if err := p.SkipAllAnswers(); err != nil {
		return 512
	}
	if err := p.SkipAllAuthorities(); err != nil {
		return 512
	}
	for {
		h, err := p.AdditionalHeader()
		if err != nil {
			return 512
		}
		if h.Type == dnsmessage.TypeOPT {
			size := int(h.Class)
			return min(max(size, 512), 4096)
		}
		if err := p.SkipAdditional(); err != nil {
			return 512
		}
	}
}

func (s *Server) serveTCP() {
	defer s.wg.Done()
	var backoff acceptloop.Backoff // EMFILE from a descriptor storm must not end DNS over TCP
	for {
		c, err := s.tcp.Accept()
		if !backoff.Retry(err) {
			return
		}
		if err != nil {
			continue
		}
		port := c.RemoteAddr().(*net.TCPAddr).AddrPort().Port()
		if !s.gate.Admit(port) {
			c.Close()
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer c.Close()
			var wmu sync.Mutex
			for {
				c.SetReadDeadline(time.Now().Add(30 * time.Second))
				var l [2]byte
				if _, err := io.ReadFull(c, l[:]); err != nil {
					return
				}
				q := make([]byte, binary.BigEndian.Uint16(l[:]))
				if _, err := io.ReadFull(c, q); err != nil {
					return
				}
				s.answer(q, 65535, func(r []byte) {
					wmu.Lock()
					defer wmu.Unlock()
					b := binary.BigEndian.AppendUint16(nil, uint16(len(r)))
					c.Write(append(b, r...))
				})
			}
		}()
	}
}

// catchAll reads copies of every UDP datagram delivered in the sandbox and logs, at most once a
// minute per destination, those that were not DNS: they went nowhere (or hands them to the
// Dropped callback).
func (s *Server) catchAll(f *os.File, family int) {
	defer s.wg.Done()
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	buf := make([]byte, 65536) // whole datagrams: a Dropped callback may forward them
	oob := make([]byte, 128)
	for {
		var n, oobn int
		var from unix.Sockaddr
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			n, oobn, _, from, rerr = unix.Recvmsg(int(fd), buf, oob, 0)
			return rerr != unix.EAGAIN
		})
		if err != nil || (rerr != nil && rerr != unix.EINTR) {
			return
		}
		if rerr == nil {
			s.seenRaw(family, buf[:n], oob[:oobn], from)
		}
	}
}

// drain handles what the catch-all sockets still hold (a program that sent a datagram just before
// exiting must still get its line), without waiting.
func (s *Server) drain(f *os.File, family int) {
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	buf := make([]byte, 65536)
	oob := make([]byte, 128)
	rc.Control(func(fd uintptr) {
		for {
			n, oobn, _, from, err := unix.Recvmsg(int(fd), buf, oob, unix.MSG_DONTWAIT)
			if err != nil {
				return
			}
			s.seenRaw(family, buf[:n], oob[:oobn], from)
		}
	})
}

// seenRaw handles one datagram copy from a catch-all socket: an IPv4 packet with its header, or
// (IPv6) a UDP header and payload with the destination in IPV6_PKTINFO.
func (s *Server) seenRaw(family int, pkt, oob []byte, from unix.Sockaddr) {
	var src, dst netip.Addr
	var udp []byte
	if family == unix.AF_INET {
		if len(pkt) < 20 {
			return
		}
		ihl := int(pkt[0]&0xf) * 4
		if len(pkt) < ihl+8 {
			return
		}
		src = netip.AddrFrom4([4]byte(pkt[12:16]))
		dst = netip.AddrFrom4([4]byte(pkt[16:20]))
		udp = pkt[ihl:]
	} else {
		if len(pkt) < 8 {
			return
		}
		udp = pkt
		if sa, ok := from.(*unix.SockaddrInet6); ok {
			src = netip.AddrFrom16(sa.Addr)
		}
		msgs, _ := unix.ParseSocketControlMessage(oob)
		for _, m := range msgs {
			if m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_PKTINFO && len(m.Data) >= 16 {
				dst = netip.AddrFrom16([16]byte(m.Data[:16]))
			}
		}
	}
	sport, dport := binary.BigEndian.Uint16(udp[0:]), binary.BigEndian.Uint16(udp[2:])
	if dport == 53 || sport == 53 {
		return
	}
	if s.dropped != nil && s.dropped(netip.AddrPortFrom(src, sport), netip.AddrPortFrom(dst, dport), udp[8:]) {
		return
	}
	s.mu.Lock()
	last, ok := s.seen[dst]
	logIt := !ok || time.Since(last) > time.Minute
	if logIt {
		s.seen[dst] = time.Now()
	}
	s.mu.Unlock()
	if logIt {
		s.log.Warn(fmt.Sprintf("UDP to %s refused: Tor carries TCP only (the datagram was dropped)", netip.AddrPortFrom(dst, dport)))
	}
}

// attachNotDNS attaches to the catch-all raw socket fd (family AF_INET or AF_INET6) a socket
// filter that drops DNS datagrams, those from or to port 53: every query and every answer is
// delivered to the catch-all too, and seenRaw would only skip them, after the kernel woke the
// catch-all's goroutine for each (two wake-ups and three recvmsg per lookup). It drops only what
// seenRaw skips, so what the catch-all logs or hands to Dropped is unchanged. The kernel runs the
// filter on the packet as the raw socket would receive it: for IPv4 from the IP header (the
// UDP header is IHL words into it), for IPv6 from the UDP header.
func attachNotDNS(fd, family int) error {
	var prog []bpf.Instruction
	if family == unix.AF_INET {
		prog = []bpf.Instruction{
			bpf.LoadMemShift{Off: 0},          // X = IHL*4
			bpf.LoadIndirect{Off: 0, Size: 2}, // source port
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: 53, SkipTrue: 3},
			bpf.LoadIndirect{Off: 2, Size: 2}, // destination port
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: 53, SkipTrue: 1},
			bpf.RetConstant{Val: 0xffffffff}, // keep it whole
			bpf.RetConstant{Val: 0},          // drop
		}
	} else {
		prog = []bpf.Instruction{
			bpf.LoadAbsolute{Off: 0, Size: 2}, // source port
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: 53, SkipTrue: 3},
			bpf.LoadAbsolute{Off: 2, Size: 2}, // destination port
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: 53, SkipTrue: 1},
			bpf.RetConstant{Val: 0xffffffff},
			bpf.RetConstant{Val: 0},
		}
	}
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return fmt.Errorf("catch-all filter: %w", err)
	}
	ins := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		ins[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: uint16(len(ins)), Filter: &ins[0]}); err != nil {
		return fmt.Errorf("SO_ATTACH_FILTER on the UDP catch-all: %w", err)
	}
	return nil
}
