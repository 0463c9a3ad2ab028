// Package udprelay carries UDP between the program's sandboxed sockets and services on this
// machine's loopback addresses, for torsocks' "AllowOutboundLocalhost 2". The program's UDP socket
// stays in the sandbox (internal/sandbox), where nothing can leave. The sandbox's catch-all sees a
// copy of every datagram and hands those to loopback destinations to Inject, which forwards each
// from a socket of the relay's own in the host's namespace, connected to exactly that
// destination; answers go back to the program from a mirror socket bound to the destination's
// address and port inside the sandbox. Mirrors receive nothing (a socket filter drops it all):
// they exist so that the sandbox does not refuse the program's datagrams, and so that answers
// come from the right address. Nothing but loopback can be reached.
package udprelay

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gotorsocks/torsocks/internal/sandbox"
)

// idle is how long a flow (program socket -> destination) lives without traffic.
const idle = 2 * time.Minute

// Relay mirrors loopback destinations into the sandbox.
type Relay struct {
	sb *sandbox.Sandbox

	mu      sync.Mutex                 // guards mirrors and closed
	mirrors map[netip.AddrPort]*mirror // loopback destination -> its mirror in the sandbox
	closed  bool
}

// mirror is one loopback destination's socket in the sandbox and its flows.
type mirror struct {
	conn  *net.UDPConn
	dst   netip.AddrPort
	mu    sync.Mutex                      // guards flows
	flows map[netip.AddrPort]*net.UDPConn // program socket address -> host socket connected to dst
}

// New returns a relay creating its mirrors in sb.
func New(sb *sandbox.Sandbox) *Relay {
	return &Relay{sb: sb, mirrors: map[netip.AddrPort]*mirror{}}
}

// Ensure makes the mirror of dst (a loopback address), so that datagrams the program sends there
// are accepted in the sandbox (and forwarded through Inject). It is idempotent. A destination a
// socket of the program itself owns in the sandbox is left to it.
func (r *Relay) Ensure(dst netip.AddrPort) error {
	_, err := r.ensure(dst)
	return err
}

// ensure returns dst's mirror, made if needed; nil if a socket of the program owns dst.
func (r *Relay) ensure(dst netip.AddrPort) (*mirror, error) {
	if !dst.Addr().Unmap().IsLoopback() {
		return nil, fmt.Errorf("UDP relay: %v is not a loopback address", dst)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, fmt.Errorf("UDP relay closed")
	}
	if m, ok := r.mirrors[dst]; ok {
		return m, nil
	}
	var family int
	var sa unix.Sockaddr
	if a := dst.Addr().Unmap(); a.Is4() {
		family, sa = unix.AF_INET, &unix.SockaddrInet4{Port: int(dst.Port()), Addr: a.As4()}
	} else {
		family, sa = unix.AF_INET6, &unix.SockaddrInet6{Port: int(dst.Port()), Addr: a.As16()}
	}
	fd, err := r.sb.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	dropAll := []unix.SockFilter{{Code: 0x06, K: 0}} // BPF_RET|BPF_K 0: keep nothing
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: 1, Filter: &dropAll[0]}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("UDP relay: mirror filter: %w", err)
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		if err == unix.EADDRINUSE {
			return nil, nil // the program's own socket: its datagrams stay in the sandbox
		}
		return nil, fmt.Errorf("UDP relay: bind %v in the sandbox: %w", dst, err)
	}
	f := os.NewFile(uintptr(fd), "udp-mirror")
	pc, err := net.FilePacketConn(f)
	f.Close()
	if err != nil {
		return nil, err
	}
	m := &mirror{conn: pc.(*net.UDPConn), dst: dst, flows: map[netip.AddrPort]*net.UDPConn{}}
	r.mirrors[dst] = m
	return m, nil
}

// Inject forwards a UDP datagram that a program socket at src sent to dst (a loopback address),
// as seen by the sandbox's catch-all, which sees them all, once each. Datagrams a mirror sent
// back (answers) and datagrams to a destination a program socket owns are left alone.
func (r *Relay) Inject(src, dst netip.AddrPort, data []byte) error {
	r.mu.Lock()
	_, fromMirror := r.mirrors[src]
	r.mu.Unlock()
	if fromMirror {
		return nil
	}
	m, err := r.ensure(dst)
	if err != nil || m == nil {
		return err
	}
	m.forward(src, data)
	return nil
}

// Close stops every mirror.
func (r *Relay) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	for _, m := range r.mirrors {
		m.conn.Close()
	}
	return nil
}

// forward sends data to the destination from the host socket of the program socket src (made on
// its first datagram), whose answers go back to src from the mirror.
func (m *mirror) forward(src netip.AddrPort, data []byte) {
	m.mu.Lock()
	up, ok := m.flows[src]
	if !ok {
		var err error
		if up, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(m.dst)); err != nil {
			m.mu.Unlock()
			return
		}
		m.flows[src] = up
		go m.answers(src, up)
	}
	m.mu.Unlock()
	up.Write(data)
}

// answers relays what the destination sends to src's host socket back to src, until idle.
func (m *mirror) answers(src netip.AddrPort, up *net.UDPConn) {
	defer func() {
		m.mu.Lock()
		delete(m.flows, src)
		m.mu.Unlock()
		up.Close()
	}()
	b := make([]byte, 65536)
	for {
		up.SetReadDeadline(time.Now().Add(idle))
		k, err := up.Read(b)
		if err != nil {
			return
		}
		m.conn.WriteToUDPAddrPort(b[:k], src)
	}
}
