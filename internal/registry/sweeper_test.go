package registry

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"

	"golang.org/x/sys/unix"

	"github.com/gotorsocks/torsocks/internal/sockdiag"
	"github.com/gotorsocks/torsocks/internal/socks5test"
)

// liveSet is a fake list of live sockets.
type liveSet struct {
	mu    sync.Mutex
	m     map[uint64]struct{}
	err   error
	calls int
	hook  func(call int) // runs inside the call, without mu
}

func (l *liveSet) set(cookies ...uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.m = map[uint64]struct{}{}
	for _, c := range cookies {
		l.m[c] = struct{}{}
	}
}

func (l *liveSet) get() (map[uint64]struct{}, error) {
	l.mu.Lock()
	l.calls++
	call, hook := l.calls, l.hook
	l.mu.Unlock()
	if hook != nil {
		hook(call)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return nil, l.err
	}
	m := make(map[uint64]struct{}, len(l.m))
	for c := range l.m {
		m[c] = struct{}{}
	}
	return m, nil
}

func addN(t *testing.T, r *Registry, s *Sweeper, from, to uint64) {
	t.Helper()
	for c := from; c <= to; c++ {
		if err := r.Add(NewConn(c, netip.AddrPortFrom(testAddr, 80), "", nil)); err != nil {
			t.Fatal(err)
		}
		s.Added()
	}
}

// settle waits for the running sweep, if any.
func settle(s *Sweeper) {
	s.mu.Lock()
	done := s.done
	s.mu.Unlock()
	if done != nil {
		<-done
	}
}

func TestSweeperThreshold(t *testing.T) {
	r := New()
	var l liveSet
	l.set(2, 4)
	s := NewSweeper(r, l.get, 8, t.Logf)
	defer s.Close()
	addN(t, r, s, 1, 7)
	settle(s)
	if l.calls != 0 || r.Len() != 7 {
		t.Fatalf("swept below the threshold: %d calls, Len %d", l.calls, r.Len())
	}
	addN(t, r, s, 8, 8) // Len 8 = min: one sweep, two dumps
	settle(s)
	if l.calls != 2 || r.Len() != 2 {
		t.Fatalf("after the sweep: %d dumps, Len %d; want 2, 2", l.calls, r.Len())
	}
	if got := s.next.Load(); got != 8 { // max(min, 2*2)
		t.Fatalf("next threshold %d, want 8", got)
	}
	l.set(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16)
	addN(t, r, s, 9, 14) // Len 8: sweep; 8 live
	settle(s)
	if r.Len() != 8 || s.next.Load() != 16 {
		t.Fatalf("Len %d, next %d; want 8, 16", r.Len(), s.next.Load())
	}
}

func TestSweeperFailSafe(t *testing.T) {
	r := New()
	l := liveSet{err: errors.New("netlink says no")}
	var logged atomic.Int32
	s := NewSweeper(r, l.get, 4, func(f string, a ...any) {
		logged.Add(1)
		t.Logf(f, a...)
	})
	defer s.Close()
	addN(t, r, s, 1, 4)
	settle(s)
	if r.Len() != 4 || logged.Load() != 1 {
		t.Fatalf("failed dump: Len %d (want 4, nothing reclaimed), logged %d", r.Len(), logged.Load())
	}
	if s.next.Load() != 8 {
		t.Fatalf("next %d, want 8: back off rather than retry at every Add", s.next.Load())
	}
	// Failure of the second dump also reclaims nothing.
	l.hook = func(call int) {
		l.mu.Lock()
		defer l.mu.Unlock()
		if call%2 == 1 {
			l.err = nil
		} else {
			l.err = errors.New("second dump failed")
		}
	}
	addN(t, r, s, 5, 8)
	settle(s)
	if r.Len() != 8 {
		t.Fatalf("Len %d after a failed second dump", r.Len())
	}
}

// A socket connected and registered while the dump runs is not in the dump;
// its entry must survive the sweep.
func TestSweeperSparesNewerEntries(t *testing.T) {
	r := New()
	var l liveSet
	l.set() // the dump sees no socket
	s := NewSweeper(r, l.get, 3, t.Logf)
	defer s.Close()
	l.hook = func(call int) {
		if call == 1 {
			r.Add(NewConn(100, netip.AddrPortFrom(testAddr, 80), "", nil))
		}
	}
	addN(t, r, s, 1, 3)
	settle(s)
	if c := r.Lookup(100); c == nil || r.Len() != 1 {
		t.Fatalf("Len %d; entry registered during the dump reclaimed: %v", r.Len(), c == nil)
	} else {
		c.Put()
	}
}

// The live set is the union of two dumps: a socket missing from one of them
// is kept.
func TestSweeperUnionOfDumps(t *testing.T) {
	r := New()
	var l liveSet
	s := NewSweeper(r, l.get, 4, t.Logf)
	defer s.Close()
	l.hook = func(call int) {
		if call == 1 {
			l.set(1) // first dump misses 2
		} else {
			l.set(2) // second misses 1
		}
	}
	addN(t, r, s, 1, 4)
	settle(s)
	for c := uint64(1); c <= 4; c++ {
		got := r.Lookup(c)
		if (got != nil) != (c <= 2) {
			t.Fatalf("cookie %d: present %v", c, got != nil)
		}
		if got != nil {
			got.Put()
		}
	}
}

func TestSweeperSingleFlightAndBackpressure(t *testing.T) {
	// In a bubble: "Added waits" is checked when every goroutine is blocked, not after a while.
	synctest.Test(t, func(t *testing.T) {
		r := New()
		var l liveSet
		l.set()
		gate := make(chan struct{})
		var inside, most atomic.Int32
		l.hook = func(int) {
			n := inside.Add(1)
			defer inside.Add(-1)
			for {
				m := most.Load()
				if n <= m || most.CompareAndSwap(m, n) {
					break
				}
			}
			<-gate
		}
		const min = 10
		s := NewSweeper(r, l.get, min, t.Logf)
		// Many goroutines add below backlog*min: none may block, one sweep runs.
		var wg sync.WaitGroup
		var next atomic.Uint64
		for range 8 {
			wg.Go(func() {
				for range (backlog*min - 1) / 8 {
					c := next.Add(1)
					if err := r.Add(NewConn(c, netip.AddrPortFrom(testAddr, 80), "", nil)); err != nil {
						t.Error(err)
					}
					s.Added()
				}
			})
		}
		wg.Wait()
		// At backlog*min, Added waits for the sweep.
		blocked := make(chan struct{})
		go func() {
			defer close(blocked)
			for r.Len() < backlog*min {
				c := next.Add(1)
				r.Add(NewConn(c, netip.AddrPortFrom(testAddr, 80), "", nil))
				s.Added()
			}
		}()
		// Once every goroutine of the bubble is blocked (the sweep at the gate, the adder in Added, if
		// it waits), the adder must not have returned.
		synctest.Wait()
		select {
		case <-blocked:
			t.Error("Added did not wait at backlog times the threshold")
		default:
		}
		close(gate)
		<-blocked
		s.Close()
		if most.Load() != 1 {
			t.Fatalf("%d dumps ran at once, want 1", most.Load())
		}
		if r.Len() > backlog*min { // entries after the sweep's generation remain
			t.Fatalf("Len %d", r.Len())
		}
		// After Close, no sweep starts.
		calls := l.calls
		addN(t, r, s, 1000, 1000+backlog*min)
		if l.calls != calls {
			t.Fatal("sweep after Close")
		}
	})
}

// cookieOf reads a socket's SO_COOKIE.
func cookieOf(t *testing.T, c syscall.Conn) uint64 {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v uint64
	var gerr error
	rc.Control(func(fd uintptr) { v, gerr = unix.GetsockoptUint64(int(fd), unix.SOL_SOCKET, unix.SO_COOKIE) })
	if gerr != nil {
		t.Fatal(gerr)
	}
	return v
}

// With the real sock_diag dump: entries of closed sockets are reclaimed,
// entries of open ones, and of a closed descriptor whose socket lives on in a
// duplicate, are kept.
func TestSweeperWithSockDiag(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer socks5test.Serve(ln, nil).Close() // accepts and holds every connection
	r := New()
	s := NewSweeper(r, sockdiag.LiveTCPCookies, 1<<30, t.Logf) // no sweep of its own
	defer s.Close()
	var conns []*net.TCPConn
	var cookies []uint64
	for i := range 6 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		tc := c.(*net.TCPConn)
		conns = append(conns, tc)
		cookies = append(cookies, cookieOf(t, tc))
		if err := r.Add(NewConn(cookies[i], netip.AddrPortFrom(testAddr, uint16(i)), "", nil)); err != nil {
			t.Fatal(err)
		}
	}
	dup, err := conns[0].File() // socket 0 lives on in a duplicate descriptor
	if err != nil {
		t.Fatal(err)
	}
	defer dup.Close()
	for _, c := range conns[:3] {
		c.Close()
	}
	defer func() {
		for _, c := range conns[3:] {
			c.Close()
		}
	}()
	if _, err := s.sweep(); err != nil {
		t.Fatal(err)
	}
	for i, cookie := range cookies {
		got := r.Lookup(cookie)
		if want := i == 0 || i >= 3; (got != nil) != want {
			t.Errorf("socket %d: registered %v, want %v", i, got != nil, want)
		}
		if got != nil {
			got.Put()
		}
	}
}

// Probing mode: each entry is asked about; an entry is dropped only when two lookups in a row
// find it dead; one whose lookup fails is kept; the threshold follows the live count.
func TestProbingSweeper(t *testing.T) {
	r := New()
	var mu sync.Mutex
	asked := map[uint64]int{}
	alive := func(c *Conn) (bool, error) {
		mu.Lock()
		defer mu.Unlock()
		asked[c.Cookie]++
		switch c.Cookie % 4 {
		case 0:
			return true, nil
		case 1:
			return false, nil
		case 2:
			return asked[c.Cookie] > 1, nil // dead at the first look only: kept
		}
		return false, errors.New("lookup failed") // kept
	}
	s := NewProbingSweeper(r, alive, 8, t.Logf)
	defer s.Close()
	addN(t, r, s, 1, 8) // Len 8 = min: one sweep
	settle(s)
	for c := uint64(1); c <= 8; c++ {
		got := r.Lookup(c)
		if want := c%4 != 1; (got != nil) != want {
			t.Errorf("cookie %d: registered %v, want %v", c, got != nil, want)
		}
		if got != nil {
			got.Put()
		}
		if want := map[uint64]int{0: 1, 1: 2, 2: 2, 3: 1}[c%4]; asked[c] != want {
			t.Errorf("cookie %d asked %d times, want %d", c, asked[c], want)
		}
	}
	if got := s.next.Load(); got != 12 { // max(min, 2*6 live)
		t.Fatalf("next threshold %d, want 12", got)
	}
}

// With the real lookups (sockdiag.Prober): entries of closed sockets are reclaimed, entries of
// open ones, and of a closed descriptor whose socket lives on in a duplicate, are kept.
func TestProbingSweeperWithSockDiag(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer socks5test.Serve(ln, nil).Close() // accepts and holds every connection
	r := New()
	p := sockdiag.NewProber()
	defer p.Close()
	s := NewProbingSweeper(r, func(c *Conn) (bool, error) { return p.Alive(c.Sock) }, 1<<30, t.Logf)
	defer s.Close()
	var conns []*net.TCPConn
	var cookies []uint64
	for i := range 6 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		tc := c.(*net.TCPConn)
		conns = append(conns, tc)
		cookies = append(cookies, cookieOf(t, tc))
		rc, _ := tc.SyscallConn()
		var sock sockdiag.Socket
		var serr error
		rc.Control(func(fd uintptr) { sock, serr = sockdiag.SocketOf(int(fd), cookies[i]) })
		if serr != nil {
			t.Fatal(serr)
		}
		if err := r.Add(NewConnSock(sock, netip.AddrPortFrom(testAddr, uint16(i)), "", nil)); err != nil {
			t.Fatal(err)
		}
	}
	dup, err := conns[0].File() // socket 0 lives on in a duplicate descriptor
	if err != nil {
		t.Fatal(err)
	}
	defer dup.Close()
	for _, c := range conns[:3] {
		c.Close()
	}
	defer func() {
		for _, c := range conns[3:] {
			c.Close()
		}
	}()
	if live, err := s.sweep(); err != nil || live != 4 {
		t.Fatalf("sweep: %d live, %v; want 4", live, err)
	}
	for i, cookie := range cookies {
		got := r.Lookup(cookie)
		if want := i == 0 || i >= 3; (got != nil) != want {
			t.Errorf("socket %d: registered %v, want %v", i, got != nil, want)
		}
		if got != nil {
			got.Put()
		}
	}
}
