package socks5test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"
)

// CanaryOptions configure a Canary.
type CanaryOptions struct {
	// Addr is the TCP address to listen on, e.g. "203.0.113.10:80".
	Addr string
	// Allowed are the legitimate source addresses (the SOCKS server's); a connection from
	// any other source is a leak.
	Allowed []netip.Addr
	// Banner, if set, is sent as soon as a connection is accepted, before reading
	// (like an SSH or SMTP server).
	Banner string
	// Logf, if set, receives a line per connection.
	Logf func(format string, args ...any)
}

// Canary is a TCP listener on a destination address that records every accepted
// connection. It answers HTTP GET/HEAD requests with a short text naming the caller's
// address, and echoes anything else.
type Canary struct {
	opts CanaryOptions
	addr net.Addr // set before the handler can run (sink is set after Serve starts it)
	sink *Sink
}

// StartCanary listens on addr; connections from allowedSources are not leaks.
func StartCanary(addr string, allowedSources ...netip.Addr) (*Canary, error) {
	return StartCanaryWith(CanaryOptions{Addr: addr, Allowed: allowedSources})
}

// StartCanaryWith starts a canary with all options.
func StartCanaryWith(opts CanaryOptions) (*Canary, error) {
	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("socks5test: canary listening on %s: %w", opts.Addr, err)
	}
	c := &Canary{opts: opts, addr: ln.Addr()}
	c.sink = Serve(ln, c.handle)
	return c, nil
}

// Addr returns the listening address.
func (c *Canary) Addr() net.Addr { return c.addr }

// AddrPort returns the listening address as a netip.AddrPort.
func (c *Canary) AddrPort() netip.AddrPort {
	return c.addr.(*net.TCPAddr).AddrPort()
}

// Accepted returns how many connections were accepted.
func (c *Canary) Accepted() int { return c.sink.Accepted() }

// Remotes returns the remote address of every accepted connection, in order.
func (c *Canary) Remotes() []netip.AddrPort {
	var out []netip.AddrPort
	for _, r := range c.sink.Remotes() {
		out = append(out, unmapped(r.(*net.TCPAddr).AddrPort()))
	}
	return out
}

// Leaks returns the remote addresses of connections not from an allowed source.
func (c *Canary) Leaks() []netip.AddrPort {
	var leaks []netip.AddrPort
	for _, r := range c.Remotes() {
		if !slices.Contains(c.opts.Allowed, r.Addr()) {
			leaks = append(leaks, r)
		}
	}
	return leaks
}

// WaitAccepted waits until at least n connections were accepted or the timeout passes,
// and reports whether they were. Use it where a client may finish before the canary's
// accept loop has recorded its connection.
func (c *Canary) WaitAccepted(n int, timeout time.Duration) bool {
	return c.sink.WaitAccepted(n, timeout)
}

// Sync returns once every connection that reached the canary before the call is recorded
// (see Sink.Sync): call it before asserting that a canary saw nothing.
func (c *Canary) Sync(timeout time.Duration) error { return c.sink.Sync(timeout) }

// WaitCond waits on cond, whose lock the caller holds, until done reports true or timeout passes,
// and returns done's last answer. The timer sets an expired flag under the lock and wakes the
// waiter; the loop looks at the flag, not at the clock (comparing the clock with a deadline
// computed after arming the timer could see time left after the only wake-up and wait forever:
// seen under load in CI).
func WaitCond(cond *sync.Cond, timeout time.Duration, done func() bool) bool {
	expired := false
	t := time.AfterFunc(timeout, func() {
		cond.L.Lock()
		expired = true
		cond.Broadcast()
		cond.L.Unlock()
	})
	defer t.Stop()
	for !done() && !expired {
		cond.Wait()
	}
	return done()
}

// Close stops the listener, closes live connections and waits for all goroutines.
func (c *Canary) Close() error { return c.sink.Close() }

// handle serves one connection: optional banner, then HTTP or echo by the first bytes.
func (c *Canary) handle(conn net.Conn) {
	if c.opts.Logf != nil {
		c.opts.Logf("socks5test: canary %s: connection from %s", c.addr, conn.RemoteAddr())
	}
	if c.opts.Banner != "" {
		if _, err := io.WriteString(conn, c.opts.Banner); err != nil {
			return
		}
	}
	// Read until the first bytes decide: an HTTP method, or anything else.
	var first []byte
	buf := make([]byte, 4096)
	for len(first) < 4 && (isPrefix(first, "GET ") || isPrefix(first, "HEAD")) {
		n, err := conn.Read(buf)
		first = append(first, buf[:n]...)
		if err != nil {
			if len(first) > 0 {
				conn.Write(first)
			}
			return
		}
	}
	if bytes.HasPrefix(first, []byte("GET ")) || bytes.HasPrefix(first, []byte("HEAD")) {
		c.serveHTTP(conn, first)
		return
	}
	if _, err := conn.Write(first); err != nil {
		return
	}
	if _, err := io.Copy(conn, conn); err == nil {
		conn.(*net.TCPConn).CloseWrite()
	}
}

// isPrefix reports whether b is a prefix of s.
func isPrefix(b []byte, s string) bool {
	return len(b) <= len(s) && s[:len(b)] == string(b)
}

// serveHTTP reads the request head (up to 64 KiB, 10 s) and answers it.
func (c *Canary) serveHTTP(conn net.Conn, first []byte) {
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(io.MultiReader(bytes.NewReader(first), io.LimitReader(conn, 64<<10)))
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		if line == "\r\n" || line == "\n" {
			break
		}
	}
	body := CanaryBody(c.addr, conn.RemoteAddr())
	head := fmt.Sprintf("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n", len(body))
	if strings.HasPrefix(string(first), "HEAD") {
		body = ""
	}
	io.WriteString(conn, head+body)
}

// CanaryBody is the body a canary sends to an HTTP client.
func CanaryBody(listen, remote net.Addr) string {
	return fmt.Sprintf("canary %s says hello from %s\n", listen, remote)
}

// UDPCanary records every datagram sent to an address (for DNS and UDP leak tests).
// It never answers.
type UDPCanary struct {
	pc   net.PacketConn
	done chan struct{}
	rec  *record[netip.AddrPort] // the senders
	once sync.Once
	err  error
}

// StartUDPCanary listens for datagrams on addr, e.g. "192.0.2.53:53".
func StartUDPCanary(addr string) (*UDPCanary, error) {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("socks5test: UDP canary listening on %s: %w", addr, err)
	}
	u := &UDPCanary{pc: pc, done: make(chan struct{}), rec: newRecord(netip.AddrPort.String)}
	go u.serve()
	return u, nil
}

func (u *UDPCanary) serve() {
	defer close(u.done)
	defer u.rec.close()
	buf := make([]byte, 65536)
	for {
		_, from, err := u.pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		u.rec.add(unmapped(from.(*net.UDPAddr).AddrPort()))
	}
}

// unmapped is ap with an IPv4-mapped address as plain IPv4.
func unmapped(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// Addr returns the listening address.
func (u *UDPCanary) Addr() net.Addr { return u.pc.LocalAddr() }

// Packets returns how many datagrams arrived (Sync's left out).
func (u *UDPCanary) Packets() int { return u.rec.count() }

// Sources returns the sender of every datagram, in order (Sync's left out).
func (u *UDPCanary) Sources() []netip.AddrPort { return u.rec.list() }

// WaitPackets waits until at least n datagrams arrived or the timeout passes, and reports
// whether they did.
func (u *UDPCanary) WaitPackets(n int, timeout time.Duration) bool { return u.rec.wait(n, timeout) }

// Sync returns once every datagram that was queued on the canary's socket before the call is
// recorded: it sends a datagram of its own (left out of Packets and Sources) and waits until the
// canary has read it; the socket's queue is first in, first out. Call it before asserting that a
// canary saw nothing. timeout only keeps a broken canary from hanging the test.
func (u *UDPCanary) Sync(timeout time.Duration) error {
	la := u.pc.LocalAddr().(*net.UDPAddr)
	to := la.AddrPort()
	if la.IP.IsUnspecified() {
		to = netip.AddrPortFrom(netip.IPv6Loopback(), to.Port())
		if la.IP.To4() != nil {
			to = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), to.Port())
		}
	}
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(to))
	if err == nil {
		defer c.Close()
		_, err = c.Write([]byte("socks5test sync"))
	}
	if err == nil {
		err = u.rec.fence(unmapped(c.LocalAddr().(*net.UDPAddr).AddrPort()).String(), timeout)
	}
	if err != nil {
		return fmt.Errorf("socks5test: sync with %v: %w", to, err)
	}
	return nil
}

// Close stops the canary and waits for its goroutine.
func (u *UDPCanary) Close() error {
	u.once.Do(func() {
		u.err = u.pc.Close()
		<-u.done
	})
	return u.err
}
