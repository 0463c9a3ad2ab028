package supervisortest

import (
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"

	"github.com/gotorsocks/torsocks/internal/socks5"
)

// Tor is a stand-in for Tor's SocksPort that connects nowhere: it accepts any method and any
// credentials, records each CONNECT, and answers it with the reply code Reply chooses (success
// when Reply is nil), after Reply returns: a test holds a connect waiting for Tor by blocking in it.
type Tor struct {
	ln net.Listener
	// Reply, when set, gives the reply code for a request (it may block).
	Reply func(Connect) byte

	mu       sync.Mutex
	connects []Connect
	conns    []net.Conn
	wg       sync.WaitGroup
}

// Connect is one CONNECT request Tor received.
type Connect struct {
	Host               string
	Port               uint16
	Username, Password string
}

// StartTor listens on 127.0.0.1 (an ephemeral port) until the test ends.
func StartTor(tb testing.TB, reply func(Connect) byte) *Tor {
	tb.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	t := &Tor{ln: ln, Reply: reply}
	t.wg.Add(1)
	go t.serve()
	tb.Cleanup(func() { t.Close() })
	return t
}

// Addr is the SocksPort.
func (t *Tor) Addr() netip.AddrPort { return t.ln.Addr().(*net.TCPAddr).AddrPort() }

// Connects are the requests received so far.
func (t *Tor) Connects() []Connect {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]Connect(nil), t.connects...)
}

// Close stops listening, closes the connections and waits for their handlers.
func (t *Tor) Close() error {
	err := t.ln.Close()
	t.mu.Lock()
	for _, c := range t.conns {
		c.Close()
	}
	t.mu.Unlock()
	t.wg.Wait()
	return err
}

// serve runs a handler per connection until the listener is closed.
func (t *Tor) serve() {
	defer t.wg.Done()
	for c, err := t.ln.Accept(); err == nil; c, err = t.ln.Accept() {
		t.mu.Lock()
		t.conns = append(t.conns, c)
		t.mu.Unlock()
		t.wg.Add(1)
		go t.handle(c)
	}
}

// handle speaks the server side of RFC 1928/1929, just enough for the supervisor's client.
func (t *Tor) handle(c net.Conn) {
	defer t.wg.Done()
	defer c.Close()
	var req Connect
	b := make([]byte, 2)
	if _, err := io.ReadFull(c, b); err != nil {
		return
	}
	methods := make([]byte, b[1])
	if _, err := io.ReadFull(c, methods); err != nil {
		return
	}
	method := byte(socks5.MethodNoAuth)
	for _, m := range methods {
		if m == socks5.MethodUserPass {
			method = socks5.MethodUserPass
		}
	}
	c.Write([]byte{socks5.Version, method})
	if method == socks5.MethodUserPass {
		// ver ulen user plen pass
		var err error
		if _, err = io.ReadFull(c, b); err != nil {
			return
		}
		u := make([]byte, int(b[1])+1)
		if _, err = io.ReadFull(c, u); err != nil {
			return
		}
		p := make([]byte, u[len(u)-1])
		if _, err = io.ReadFull(c, p); err != nil {
			return
		}
		req.Username, req.Password = string(u[:len(u)-1]), string(p)
		c.Write([]byte{socks5.AuthVersion, 0})
	}
	hdr := make([]byte, 4) // ver cmd rsv atyp
	if _, err := io.ReadFull(c, hdr); err != nil {
		return
	}
	var host []byte
	switch hdr[3] {
	case socks5.AtypIPv4:
		host = make([]byte, 4)
	case socks5.AtypIPv6:
		host = make([]byte, 16)
	case socks5.AtypDomain:
		if _, err := io.ReadFull(c, b[:1]); err != nil {
			return
		}
		host = make([]byte, b[0])
	}
	if _, err := io.ReadFull(c, host); err != nil {
		return
	}
	if _, err := io.ReadFull(c, b); err != nil {
		return
	}
	req.Port = uint16(b[0])<<8 | uint16(b[1])
	if a, ok := netip.AddrFromSlice(host); ok && hdr[3] != socks5.AtypDomain {
		req.Host = a.String()
	} else {
		req.Host = string(host)
	}
	t.mu.Lock()
	t.connects = append(t.connects, req)
	t.mu.Unlock()
	code := byte(socks5.ReplySucceeded)
	if t.Reply != nil {
		code = t.Reply(req)
	}
	c.Write([]byte{socks5.Version, code, 0, socks5.AtypIPv4, 0, 0, 0, 0, 0, 0})
	if code == socks5.ReplySucceeded {
		io.Copy(io.Discard, c) // until the program's side closes
	}
}
