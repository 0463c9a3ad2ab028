// Package unixrelay lets the program's TCP sockets reach a Tor SocksPort that listens on a unix
// socket (Tor's "SocksPort unix:/path"): an internet socket cannot connect to a unix socket, so
// the supervisor connects it to a loopback listener of its own, which admits only the ports the
// supervisor announced and relays each connection, byte for byte, to the unix socket. The SOCKS
// exchange itself is still spoken by the supervisor on the program's socket, through the relay.
package unixrelay

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"

	"github.com/gotorsocks/torsocks/internal/acceptloop"
	"github.com/gotorsocks/torsocks/internal/portgate"
)

// Relay is a loopback listener relaying to a unix socket.
type Relay struct {
	path string
	ln   net.Listener
	gate portgate.Gate
	wg   sync.WaitGroup
}

// Start listens on 127.0.0.1 and relays to the unix socket at path.
func Start(path string) (*Relay, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("unix SocksPort relay: %w", err)
	}
	r := &Relay{path: path, ln: ln}
	r.wg.Add(1)
	go r.serve()
	return r, nil
}

// Addr is the loopback address to connect to instead of the unix socket.
func (r *Relay) Addr() netip.AddrPort { return r.ln.Addr().(*net.TCPAddr).AddrPort() }

// Expect announces a connection from local port p.
func (r *Relay) Expect(p uint16) { r.gate.Expect(p) }

// Close stops accepting; relayed connections end with their peers.
func (r *Relay) Close() error {
	err := r.ln.Close()
	r.wg.Wait()
	return err
}

func (r *Relay) serve() {
	defer r.wg.Done()
	var backoff acceptloop.Backoff // EMFILE from a descriptor storm must not end the relay
	for {
		c, err := r.ln.Accept()
		if !backoff.Retry(err) {
			return
		}
		if err != nil {
			continue
		}
		if !r.gate.Admit(c.RemoteAddr().(*net.TCPAddr).AddrPort().Port()) {
			c.Close()
			continue
		}
		go r.relay(c.(*net.TCPConn))
	}
}

func (r *Relay) relay(c *net.TCPConn) {
	defer c.Close()
	u, err := net.Dial("unix", r.path)
	if err != nil {
		return // the program sees the connection closed: its SOCKS handshake fails with EIO
	}
	uc := u.(*net.UnixConn)
	defer uc.Close()
	done := make(chan struct{})
	go func() {
		io.Copy(uc, c)
		uc.CloseWrite()
		close(done)
	}()
	io.Copy(c, uc)
	c.CloseWrite()
	<-done
}
