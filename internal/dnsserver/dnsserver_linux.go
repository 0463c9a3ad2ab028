// Package dnsserver puts the DNS responder on the wire for the traced program: on UDP port 53 of
// every address inside the UDP sandbox (answering from the very address the program sent to, so
// resolvers that check the source of an answer accept it), on a loopback TCP listener that the
// supervisor connects the program's port-53 TCP sockets to (DNS over TCP, used after truncation),
// and with a catch-all that logs, once in a while, the datagrams to other ports that the sandbox
// swallows. What to answer is the Answerer's business (internal/dns).
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
	"time"

	"golang.org/x/net/bpf"
	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/gotorsocks/torsocks/internal/acceptloop"
	"github.com/gotorsocks/torsocks/internal/portgate"
	"github.com/gotorsocks/torsocks/internal/sandbox"
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
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{ans: ans, log: log, dropped: dropped, sem: make(chan struct{}, 256),
		seen: map[netip.Addr]time.Time{}, ctx: ctx, cancel: cancel}
	fail := func(err error) (*Server, error) {
		s.Close()
		return nil, err
	}
	pc4, err := sandboxUDP(sb, unix.AF_INET, &unix.SockaddrInet4{Port: 53})
	if err != nil {
		return fail(err)
	}
	s.udp = append(s.udp, udpSocket{conn: pc4.(*net.UDPConn), dst: dst4, from: from4})
	if err := ipv4.NewPacketConn(pc4).SetControlMessage(ipv4.FlagDst, true); err != nil {
		return fail(fmt.Errorf("IP_PKTINFO: %w", err))
	}
	pc6, err := sandboxUDP(sb, unix.AF_INET6, &unix.SockaddrInet6{Port: 53})
	if err != nil {
		return fail(err)
	}
	s.udp = append(s.udp, udpSocket{conn: pc6.(*net.UDPConn), dst: dst6, from: from6})
	if err := ipv6.NewPacketConn(pc6).SetControlMessage(ipv6.FlagDst, true); err != nil {
		return fail(fmt.Errorf("IPV6_RECVPKTINFO: %w", err))
	}
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
	s.wg.Add(5)
	go s.serveUDP(s.udp[0])
	go s.serveUDP(s.udp[1])
	go s.serveTCP()
	go s.catchAll(s.raw[0], unix.AF_INET)
	go s.catchAll(s.raw[1], unix.AF_INET6)
	return s, nil
}

func sandboxUDP(sb *sandbox.Sandbox, family int, sa unix.Sockaddr) (net.PacketConn, error) {
	fd, err := sb.SocketUnpooled(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if family == unix.AF_INET6 {
		unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1)
		// Answering from the queried address: IPv6 accepts an IPV6_PKTINFO source only if it is
		// assigned to an interface (the sandbox's local route for ::/0 does not count, unlike
		// IPv4's), or with IPV6_FREEBIND.
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_FREEBIND, 1); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("IPV6_FREEBIND on the DNS responder: %w", err)
		}
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind DNS responder in the sandbox: %w", err)
	}
	f := os.NewFile(uintptr(fd), "dns-udp")
	defer f.Close()
	pc, err := net.FilePacketConn(f)
	if err != nil {
		return nil, fmt.Errorf("DNS responder socket: %w", err)
	}
	return pc, nil
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
	for _, u := range s.udp {
		u.conn.Close()
	}
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
	if now, ok := s.ans.(NowAnswerer); ok {
		if r, ok := now.AnswerNow(q, max); ok {
			if r != nil {
				reply(r)
			}
			return
		}
	}
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
	conn *net.UDPConn
	dst  func(oob []byte) net.IP // nil if the kernel did not say
	from func(src net.IP) []byte
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
