// Package socks5test is a test double for Tor's SocksPort: a SOCKS5 server (CONNECT, RESOLVE,
// RESOLVE_PTR, optional RFC 1929 auth) that dials out from chosen source addresses, and canary
// listeners that record who connects to a destination so tests can tell proxied from leaked.
package socks5test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gotorsocks/torsocks/internal/socks5"
)

// Timeouts of the server.
const (
	dialTimeout      = 5 * time.Second
	handshakeTimeout = 10 * time.Second
)

// Options configure a Server.
type Options struct {
	// Listen holds the addresses to listen on: "127.0.0.1:9050", "[::1]:0", or a path
	// starting with "/" for a Unix socket.
	Listen []string
	// SourceV4 and SourceV6 are the local addresses outgoing connections are bound to,
	// by destination family; the zero Addr means no binding.
	SourceV4, SourceV6 netip.Addr
	// Users, if non-nil, makes the server require RFC 1929 auth (method 02) with one of
	// these username/password pairs. Otherwise it selects method 00.
	Users map[string]string
	// ReplyFor, if set, may force a reply code for a request's destination (host as sent,
	// or the IP in text for ATYP 1/4); 0 means proceed normally.
	ReplyFor func(host string, port uint16) byte
	// Resolve answers RESOLVE (first address) and, reversed, RESOLVE_PTR. Unknown names get
	// reply 4 (host unreachable).
	Resolve map[string][]netip.Addr
	// ResolveName, if set, finds the address for a CONNECT by name; the default is the
	// first address in Resolve.
	ResolveName func(host string) (netip.Addr, bool)
	// Logf, if set, receives a line per request (t.Logf fits).
	Logf func(format string, args ...any)
	// ReplyDelay, if set, is how long the server waits after reading a CONNECT request before
	// it handles it (a circuit round trip); MaxInFlight counts the requests waiting at once.
	ReplyDelay time.Duration
	// Redirect, if set, may send a CONNECT to another address than the one asked for (a
	// destination "far away" whose port is in use on this test machine): ok false keeps it.
	Redirect func(dest netip.AddrPort) (to netip.AddrPort, ok bool)
}

// Request is one request the server received.
type Request struct {
	Cmd                byte
	Host               string // the name, or the IP in text for ATYP 1 and 4
	Port               uint16
	Username, Password string // empty without auth
	ATYP               byte
	Remote             net.Addr // the client's address
}

// Server is a running SOCKS5 server. Close stops it.
type Server struct {
	opts   Options
	sinks  []*Sink // a listener's each, serving the clients
	ctx    context.Context
	cancel context.CancelFunc
	out    connSet // the connections to destinations

	mu          sync.Mutex
	reqs        []Request
	inFlight    int // CONNECT requests read and not yet answered (guarded by mu)
	maxInFlight int // the most inFlight has been (guarded by mu)
	once        sync.Once
	err         error
}

// Start listens on every address of opts.Listen and serves until Close.
func Start(opts Options) (*Server, error) {
	if len(opts.Listen) == 0 {
		return nil, errors.New("socks5test: no listen address")
	}
	var lns []net.Listener
	for _, addr := range opts.Listen {
		ln, err := listen(addr)
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return nil, fmt.Errorf("socks5test: listening on %s: %w", addr, err)
		}
		lns = append(lns, ln)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{opts: opts, ctx: ctx, cancel: cancel}
	for _, ln := range lns {
		s.sinks = append(s.sinks, Serve(ln, s.client))
	}
	return s, nil
}

// listen opens a TCP listener, or a Unix one for a path (replacing a stale socket file).
func listen(addr string) (net.Listener, error) {
	if !strings.HasPrefix(addr, "/") {
		return net.Listen("tcp", addr)
	}
	if fi, err := os.Lstat(addr); err == nil && fi.Mode()&os.ModeSocket != 0 {
		if err := os.Remove(addr); err != nil {
			return nil, fmt.Errorf("removing stale socket: %w", err)
		}
	}
	return net.Listen("unix", addr)
}

// Addrs returns the listeners' addresses (with the ports chosen for ":0").
func (s *Server) Addrs() []net.Addr {
	addrs := make([]net.Addr, len(s.sinks))
	for i, k := range s.sinks {
		addrs[i] = k.Addr()
	}
	return addrs
}

// Requests returns every request seen so far, in order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.reqs)
}

// MaxInFlight is the largest number of CONNECT requests that waited out ReplyDelay at once.
func (s *Server) MaxInFlight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxInFlight
}

// Accepted is how many connections the server's listeners have accepted in all.
func (s *Server) Accepted() int {
	n := 0
	for _, k := range s.sinks {
		n += k.Accepted()
	}
	return n
}

// WaitAccepted waits until the listeners have accepted n connections in all, for at most
// timeout, and reports whether they have.
func (s *Server) WaitAccepted(n int, timeout time.Duration) bool {
	if len(s.sinks) == 1 {
		return s.sinks[0].WaitAccepted(n, timeout)
	}
	for deadline := time.Now().Add(timeout); s.Accepted() < n; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

// Close stops the listeners, closes every live connection and waits for all goroutines.
func (s *Server) Close() error {
	s.once.Do(func() {
		s.out.closeAll()
		s.cancel()
		var errs []error
		for _, k := range s.sinks {
			errs = append(errs, k.Close())
		}
		s.err = errors.Join(errs...)
	})
	return s.err
}

func (s *Server) logf(format string, args ...any) {
	if s.opts.Logf != nil {
		s.opts.Logf("socks5test: "+format, args...)
	}
}

// client serves one client connection (Sink closes it).
func (s *Server) client(c net.Conn) {
	if err := s.handle(c); err != nil {
		s.logf("client %s: %v", c.RemoteAddr(), err)
	}
}

// handle runs one client connection: negotiation, request, then the command.
func (s *Server) handle(c net.Conn) error {
	c.SetDeadline(time.Now().Add(handshakeTimeout))
	user, pass, err := s.negotiate(c)
	if err != nil {
		return err
	}
	req, err := readRequest(c)
	if err != nil {
		var code replyCode
		if errors.As(err, &code) {
			writeReply(c, byte(code), netip.Addr{}, 0)
		}
		return err
	}
	req.Username, req.Password, req.Remote = user, pass, c.RemoteAddr()
	s.mu.Lock()
	s.reqs = append(s.reqs, req)
	s.mu.Unlock()
	s.logf("%s from %s", socks5.Request{Cmd: req.Cmd, Host: req.Host, Port: req.Port}, req.Remote)

	if d := s.opts.ReplyDelay; d > 0 && req.Cmd == socks5.CmdConnect {
		s.mu.Lock()
		s.inFlight++
		s.maxInFlight = max(s.maxInFlight, s.inFlight)
		s.mu.Unlock()
		select {
		case <-time.After(d):
		case <-s.ctx.Done():
		}
		s.mu.Lock()
		s.inFlight--
		s.mu.Unlock()
	}
	if s.opts.ReplyFor != nil {
		if code := s.opts.ReplyFor(req.Host, req.Port); code != 0 {
			return writeReply(c, code, netip.Addr{}, 0)
		}
	}
	switch req.Cmd {
	case socks5.CmdConnect:
		return s.connect(c, req)
	case socks5.CmdResolve:
		ip, ok := s.lookup(req.Host)
		if !ok {
			return writeReply(c, socks5.ReplyHostUnreachable, netip.Addr{}, 0)
		}
		return writeReply(c, socks5.ReplySucceeded, ip, 0)
	case socks5.CmdResolvePTR:
		name, ok := s.reverse(req.Host)
		if !ok {
			return writeReply(c, socks5.ReplyHostUnreachable, netip.Addr{}, 0)
		}
		return writeNameReply(c, name, 0)
	default:
		return writeReply(c, socks5.ReplyCommandNotSupported, netip.Addr{}, 0)
	}
}

// negotiate reads the greeting, selects a method and runs RFC 1929 when Users is set.
func (s *Server) negotiate(c net.Conn) (user, pass string, err error) {
	var hdr [2]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return "", "", fmt.Errorf("reading greeting: %w", err)
	}
	if hdr[0] != socks5.Version {
		return "", "", fmt.Errorf("greeting version 0x%02x", hdr[0])
	}
	methods := make([]byte, hdr[1])
	if _, err := io.ReadFull(c, methods); err != nil {
		return "", "", fmt.Errorf("reading methods: %w", err)
	}
	want := socks5.MethodNoAuth
	if s.opts.Users != nil {
		want = socks5.MethodUserPass
	}
	if !slices.Contains(methods, want) {
		c.Write([]byte{socks5.Version, socks5.MethodNoAcceptable})
		return "", "", fmt.Errorf("client offered methods % x, need 0x%02x", methods, want)
	}
	if _, err := c.Write([]byte{socks5.Version, want}); err != nil {
		return "", "", fmt.Errorf("sending method selection: %w", err)
	}
	if want == socks5.MethodNoAuth {
		return "", "", nil
	}
	var ver [1]byte
	if _, err := io.ReadFull(c, ver[:]); err != nil {
		return "", "", fmt.Errorf("reading auth version: %w", err)
	}
	if ver[0] != socks5.AuthVersion {
		c.Write([]byte{socks5.AuthVersion, 1})
		return "", "", fmt.Errorf("auth version 0x%02x", ver[0])
	}
	if user, err = readString(c); err == nil {
		pass, err = readString(c)
	}
	if err != nil {
		return "", "", fmt.Errorf("reading credentials: %w", err)
	}
	if p, ok := s.opts.Users[user]; !ok || p != pass {
		c.Write([]byte{socks5.AuthVersion, 1})
		return "", "", fmt.Errorf("bad credentials for user %q", user)
	}
	if _, err := c.Write([]byte{socks5.AuthVersion, 0}); err != nil {
		return "", "", fmt.Errorf("sending auth status: %w", err)
	}
	return user, pass, nil
}

// replyCode is a request error that deserves a SOCKS reply with this code.
type replyCode byte

func (c replyCode) Error() string { return (&socks5.ReplyError{Code: byte(c)}).Error() }

// readRequest reads a request: ver cmd rsv atyp addr port.
func readRequest(r io.Reader) (Request, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return Request{}, fmt.Errorf("reading request: %w", err)
	}
	if hdr[0] != socks5.Version {
		return Request{}, fmt.Errorf("request version 0x%02x", hdr[0])
	}
	req := Request{Cmd: hdr[1], ATYP: hdr[3]}
	var n int
	switch req.ATYP {
	case socks5.AtypIPv4:
		n = 4
	case socks5.AtypIPv6:
		n = 16
	case socks5.AtypDomain:
		name, err := readString(r)
		if err != nil {
			return Request{}, fmt.Errorf("reading request name: %w", err)
		}
		req.Host = name
	default:
		return Request{}, fmt.Errorf("request address type 0x%02x: %w", req.ATYP, replyCode(socks5.ReplyAddressNotSupported))
	}
	buf := make([]byte, n+2)
	if _, err := io.ReadFull(r, buf); err != nil {
		return Request{}, fmt.Errorf("reading request address: %w", err)
	}
	if n > 0 {
		ip, _ := netip.AddrFromSlice(buf[:n])
		req.Host = ip.String()
	}
	req.Port = binary.BigEndian.Uint16(buf[n:])
	return req, nil
}

// readString reads a length byte and that many bytes.
func readString(r io.Reader) (string, error) {
	var l [1]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return "", err
	}
	b := make([]byte, l[0])
	if _, err := io.ReadFull(r, b); err != nil {
		return "", err
	}
	return string(b), nil
}

// writeReply sends a reply with an IP address. Like Tor, an invalid (zero) addr becomes the
// unspecified address of the family of the client's connection (10 bytes over IPv4 and Unix
// sockets, 22 over IPv6).
func writeReply(c net.Conn, code byte, addr netip.Addr, port uint16) error {
	if !addr.IsValid() {
		addr = netip.IPv4Unspecified()
		if clientIsV6(c) {
			addr = netip.IPv6Unspecified()
		}
	}
	addr = addr.Unmap()
	b := []byte{socks5.Version, code, 0, socks5.AtypIPv4}
	if addr.Is6() {
		b[3] = socks5.AtypIPv6
	}
	b = append(b, addr.AsSlice()...)
	b = binary.BigEndian.AppendUint16(b, port)
	if _, err := c.Write(b); err != nil {
		return fmt.Errorf("sending reply 0x%02x: %w", code, err)
	}
	return nil
}

// writeNameReply sends a success reply carrying a name (RESOLVE_PTR).
func writeNameReply(c net.Conn, name string, port uint16) error {
	b := append([]byte{socks5.Version, socks5.ReplySucceeded, 0, socks5.AtypDomain, byte(len(name))}, name...)
	b = binary.BigEndian.AppendUint16(b, port)
	if _, err := c.Write(b); err != nil {
		return fmt.Errorf("sending name reply: %w", err)
	}
	return nil
}

// clientIsV6 reports whether the client reached us over IPv6.
func clientIsV6(c net.Conn) bool {
	if a, ok := c.LocalAddr().(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap().Is6()
	}
	return false
}

// parseIP accepts an IP literal, with or without brackets.
func parseIP(host string) (netip.Addr, bool) {
	ip, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
	return ip.Unmap(), err == nil
}

// lookup answers RESOLVE: IP literals stand for themselves, names come from Resolve.
func (s *Server) lookup(host string) (netip.Addr, bool) {
	if ip, ok := parseIP(host); ok {
		return ip, true
	}
	addrs, ok := s.opts.Resolve[host]
	if !ok {
		for name, a := range s.opts.Resolve {
			if strings.EqualFold(name, host) {
				addrs, ok = a, true
				break
			}
		}
	}
	if !ok || len(addrs) == 0 {
		return netip.Addr{}, false
	}
	return addrs[0], true
}

// reverse answers RESOLVE_PTR from the reversed Resolve map (first name in sorted order).
func (s *Server) reverse(host string) (string, bool) {
	ip, ok := parseIP(host)
	if !ok {
		return "", false
	}
	var names []string
	for name, addrs := range s.opts.Resolve {
		for _, a := range addrs {
			if a.Unmap() == ip {
				names = append(names, name)
			}
		}
	}
	if len(names) == 0 {
		return "", false
	}
	sort.Strings(names)
	return names[0], true
}

// connect dials the destination, replies and relays.
func (s *Server) connect(c net.Conn, req Request) error {
	ip, ok := parseIP(req.Host)
	if !ok {
		if s.opts.ResolveName != nil {
			ip, ok = s.opts.ResolveName(req.Host)
		} else {
			ip, ok = s.lookup(req.Host)
		}
		if !ok {
			writeReply(c, socks5.ReplyHostUnreachable, netip.Addr{}, 0)
			return fmt.Errorf("cannot resolve %q", req.Host)
		}
	}
	ip = ip.Unmap()
	d := net.Dialer{Timeout: dialTimeout}
	if src := s.opts.SourceV4; ip.Is4() && src.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
	}
	if src := s.opts.SourceV6; ip.Is6() && src.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
	}
	target := netip.AddrPortFrom(ip, req.Port)
	if s.opts.Redirect != nil {
		if to, ok := s.opts.Redirect(target); ok {
			target = to
		}
	}
	dst := target.String()
	out, err := d.DialContext(s.ctx, "tcp", dst)
	if err != nil {
		writeReply(c, dialReplyCode(err), netip.Addr{}, 0)
		return fmt.Errorf("dialling %s: %w", dst, err)
	}
	if !s.out.add(out) {
		return errors.New("server closed")
	}
	defer s.out.remove(out)

	bound := netip.Addr{}
	if la, ok := out.LocalAddr().(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(la.IP); ok && ip.Unmap().Is6() == clientIsV6(c) {
			bound = ip.Unmap()
		}
	}
	port := uint16(0)
	if bound.IsValid() {
		port = uint16(out.LocalAddr().(*net.TCPAddr).Port)
	}
	if err := writeReply(c, socks5.ReplySucceeded, bound, port); err != nil {
		return err
	}
	c.SetDeadline(time.Time{})
	relay(c, out)
	return nil
}

// dialReplyCode maps a dial error to a SOCKS5 reply code.
func dialReplyCode(err error) byte {
	var to interface{ Timeout() bool }
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return socks5.ReplyConnectionRefused
	case errors.Is(err, syscall.ENETUNREACH):
		return socks5.ReplyNetworkUnreachable
	case errors.Is(err, syscall.EHOSTUNREACH):
		return socks5.ReplyHostUnreachable
	case errors.As(err, &to) && to.Timeout():
		return socks5.ReplyTTLExpired
	default:
		return socks5.ReplyGeneralFailure
	}
}

// relay copies both ways until both directions end, half-closing each side when the
// other reaches EOF; an error in either direction closes both.
func relay(a, b net.Conn) {
	var wg sync.WaitGroup
	wg.Add(2)
	pipe := func(dst, src net.Conn) {
		defer wg.Done()
		if _, err := io.Copy(dst, src); err != nil {
			a.Close()
			b.Close()
			return
		}
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		} else {
			dst.Close()
		}
	}
	go pipe(a, b)
	go pipe(b, a)
	wg.Wait()
}
