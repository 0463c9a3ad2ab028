package socks5test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Sink is the accept loop of a test server: it accepts every connection of a listener, records
// the connection's remote address and hands it to a handler in a goroutine of its own. Close
// stops the listener, closes the connections still open and waits for the goroutines.
//
// Sync tells a test when the sink has seen everything that reached it: it connects to the sink
// itself and waits until that connection is accepted. The listener's queue is first in, first
// out, so every connection that was in it before (a program's, already gone) is recorded by
// then. The test's own connections are left out of Accepted and Remotes. A test that must show
// that nothing came waits for that event, not for a while.
type Sink struct {
	ln     net.Listener
	handle func(net.Conn)
	wg     sync.WaitGroup
	rec    *record[net.Addr]
	conns  connSet
	once   sync.Once
	err    error
}

// Serve runs the accept loop of ln until Close. handle owns the connection it is given only
// while it runs: the sink closes it when handle returns, and at Close. A nil handle holds every
// connection open without reading or writing (a server that never answers). handle may be given
// a connection of Sync's, which closes without sending anything.
func Serve(ln net.Listener, handle func(net.Conn)) *Sink {
	s := &Sink{ln: ln, handle: handle, rec: newRecord(addrString)}
	s.wg.Add(1)
	go s.serve()
	return s
}

// Listen listens on network and addr ("tcp" or "unix") and serves it; see Serve.
func Listen(network, addr string, handle func(net.Conn)) (*Sink, error) {
	ln, err := net.Listen(network, addr)
	if err != nil {
		return nil, fmt.Errorf("socks5test: listening on %s %s: %w", network, addr, err)
	}
	return Serve(ln, handle), nil
}

// Addr returns the listening address.
func (s *Sink) Addr() net.Addr { return s.ln.Addr() }

// Accepted returns how many connections were accepted (Sync's own left out).
func (s *Sink) Accepted() int { return s.rec.count() }

// Remotes returns the remote address of every accepted connection, in order (Sync's own left out).
func (s *Sink) Remotes() []net.Addr { return s.rec.list() }

// WaitAccepted waits until at least n connections were accepted or the timeout passes, and
// reports whether they were. Use it where a connection is expected: a client may finish before
// the accept loop has recorded its connection.
func (s *Sink) WaitAccepted(n int, timeout time.Duration) bool { return s.rec.wait(n, timeout) }

var fenceSeq atomic.Int64

// Sync returns once every connection that was queued on the listener before the call is
// recorded: it connects to the listener (from an address of its own, left out of Accepted and
// Remotes) and waits until the sink has accepted that connection. timeout only keeps a broken
// sink from hanging the test; when it passes, Sync says so.
func (s *Sink) Sync(timeout time.Duration) error {
	d := net.Dialer{Timeout: timeout}
	if a, ok := s.ln.Addr().(*net.UnixAddr); ok {
		// An unnamed client would look like any other; an abstract name tells the fence apart.
		d.LocalAddr = &net.UnixAddr{Net: a.Net, Name: "@socks5test-fence-" + strconv.Itoa(os.Getpid()) + "-" + strconv.FormatInt(fenceSeq.Add(1), 10)}
	}
	c, err := d.Dial(s.ln.Addr().Network(), syncTarget(s.ln.Addr()))
	if err != nil {
		return fmt.Errorf("socks5test: sync with %v: %w", s.ln.Addr(), err)
	}
	defer c.Close()
	if err := s.rec.fence(c.LocalAddr().String(), timeout); err != nil {
		return fmt.Errorf("socks5test: sync with %v: %w", s.ln.Addr(), err)
	}
	return nil
}

// addrString is a.String(), "" for none (an unnamed unix peer).
func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// syncTarget is the address Sync dials: a wildcard listener is reached on loopback.
func syncTarget(a net.Addr) string {
	ta, ok := a.(*net.TCPAddr)
	if !ok || !ta.IP.IsUnspecified() {
		return a.String()
	}
	if ta.IP.To4() != nil {
		return net.JoinHostPort("127.0.0.1", strconv.Itoa(ta.Port))
	}
	return net.JoinHostPort("::1", strconv.Itoa(ta.Port))
}

// Close stops the listener, closes the live connections and waits for all goroutines.
func (s *Sink) Close() error {
	s.once.Do(func() {
		s.conns.closeAll()
		s.rec.close()
		if err := s.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			s.err = err
		}
		s.wg.Wait()
	})
	return s.err
}

// connSet is a server's live connections, closed all at once when the server closes.
type connSet struct {
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// add registers a live connection; it returns false (and closes c) once the set is closed.
func (s *connSet) add(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.Close()
		return false
	}
	if s.conns == nil {
		s.conns = map[net.Conn]struct{}{}
	}
	s.conns[c] = struct{}{}
	return true
}

// remove forgets c and closes it.
func (s *connSet) remove(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.Close()
}

// closeAll closes every live connection, and every one added from now on.
func (s *connSet) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
}

func (s *Sink) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		fence, _ := s.rec.add(c.RemoteAddr())
		if !s.conns.add(c) {
			return
		}
		if fence || s.handle == nil {
			continue // held open until Close (a fence is closed by its dialler)
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.conns.remove(c)
			s.handle(c)
		}()
	}
}
