package relay

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// pair is one relayed connection as its two ends see it: x ──(a)relay(b)── y.
type pair struct {
	x, y *net.TCPConn
	done chan struct{}
}

// tcpPair returns a connected TCP loopback pair: the client as a *net.TCPConn and the
// accepted end as a raw descriptor, or the other way round.
func tcpPair(t testing.TB, ln *net.TCPListener) (*net.TCPConn, int) {
	t.Helper()
	c, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	f, err := s.File() // a dup, blocking mode as it comes
	s.Close()
	if err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Dup(int(f.Fd()))
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	return c, fd
}

// newRelay is New(n) with a short pipeIdle, so that waitIdle does not wait long.
func newRelay(n int) *Relay {
	r := New(n)
	r.pipeIdle = 50
	return r
}

func listen(t testing.TB) *net.TCPListener {
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func newPair(t testing.TB, r *Relay, ln *net.TCPListener) *pair {
	t.Helper()
	x, a := tcpPair(t, ln)
	y, b := tcpPair(t, ln)
	p := &pair{x: x, y: y, done: make(chan struct{})}
	if err := r.Start(a, b, func() { close(p.done) }); err != nil {
		t.Fatal(err)
	}
	return p
}

// send writes n random bytes (seeded) to w and closes its write side; returns their hash.
func sendAll(w *net.TCPConn, n int, seed int64) ([32]byte, error) {
	h := sha256.New()
	rnd := rand.New(rand.NewSource(seed))
	buf := make([]byte, 256<<10)
	for left := n; left > 0; {
		k := min(left, len(buf))
		rnd.Read(buf[:k])
		h.Write(buf[:k])
		if _, err := w.Write(buf[:k]); err != nil {
			return [32]byte{}, err
		}
		left -= k
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum, w.CloseWrite()
}

func readAll(r io.Reader) ([32]byte, int64, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum, n, err
}

func waitDone(t *testing.T, p *pair) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatal("the relay did not end")
	}
}

// waitIdle waits until r relays nothing and, after pipeIdle, holds no pipe.
func waitIdle(t *testing.T, r *Relay) {
	t.Helper()
	for i := 0; ; i++ {
		c, p := r.Stats()
		if c == 0 && p == 0 {
			return
		}
		if i > 3000+r.pipeIdle {
			t.Fatalf("relay not idle: %d connections, %d pipes", c, p)
		}
		time.Sleep(time.Millisecond)
	}
}

// Bulk both ways at once, each direction half-closed when its sender is done: every byte arrives
// in order, each side reads EOF, and the relay ends (done, no pipe left).
func TestBulkBothWaysHalfClose(t *testing.T) {
	for _, noPipes := range []bool{false, true} {
		t.Run(fmt.Sprintf("noPipes=%v", noPipes), func(t *testing.T) {
			r := newRelay(2)
			r.noPipes = noPipes
			ln := listen(t)
			p := newPair(t, r, ln)
			type res struct {
				sum [32]byte
				n   int64
				err error
			}
			const up, down = 48 << 20, 24 << 20
			sent := make(chan res, 2)
			got := make(chan res, 2)
			go func() { s, err := sendAll(p.x, up, 1); sent <- res{s, up, err} }()
			go func() { s, err := sendAll(p.y, down, 2); sent <- res{s, down, err} }()
			go func() { s, n, err := readAll(p.y); got <- res{s, n, err} }()
			go func() { s, n, err := readAll(p.x); got <- res{s, n, err} }()
			sums := map[int64][32]byte{}
			for i := 0; i < 2; i++ {
				s := <-sent
				if s.err != nil {
					t.Fatal(s.err)
				}
				sums[s.n] = s.sum
			}
			for i := 0; i < 2; i++ {
				g := <-got
				if g.err != nil {
					t.Fatal(g.err)
				}
				if want, ok := sums[g.n]; !ok || want != g.sum {
					t.Fatalf("received %d bytes with another hash than sent", g.n)
				}
			}
			waitDone(t, p)
			p.x.Close()
			p.y.Close()
			waitIdle(t, r)
		})
	}
}

// Half-close one way while the other goes on: x shuts its write side first, y still sends a
// reply after reading the EOF; then y closes.
func TestHalfCloseThenReply(t *testing.T) {
	r := newRelay(1)
	ln := listen(t)
	for _, first := range []string{"x", "y"} {
		p := newPair(t, r, ln)
		a, b := p.x, p.y
		if first == "y" {
			a, b = p.y, p.x
		}
		if _, err := a.Write([]byte("request")); err != nil {
			t.Fatal(err)
		}
		a.CloseWrite()
		req, err := io.ReadAll(b)
		if err != nil || string(req) != "request" {
			t.Fatalf("%s first: got %q, %v", first, req, err)
		}
		if _, err := b.Write(bytes.Repeat([]byte("r"), 1<<20)); err != nil {
			t.Fatal(err)
		}
		b.CloseWrite()
		resp, err := io.ReadAll(a)
		if err != nil || len(resp) != 1<<20 {
			t.Fatalf("%s first: reply %d bytes, %v", first, len(resp), err)
		}
		waitDone(t, p)
		p.x.Close()
		p.y.Close()
	}
	waitIdle(t, r)
}

// A reset on one side resets the other.
func TestResetPassedOn(t *testing.T) {
	r := newRelay(1)
	ln := listen(t)
	for _, side := range []string{"x", "y"} {
		p := newPair(t, r, ln)
		a, b := p.x, p.y
		if side == "y" {
			a, b = p.y, p.x
		}
		if _, err := a.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 5)
		if _, err := io.ReadFull(b, buf); err != nil {
			t.Fatal(err)
		}
		a.SetLinger(0)
		a.Close()
		waitDone(t, p)
		b.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err := b.Read(buf)
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("reset by %s: the other side read %v, want ECONNRESET", side, err)
		}
		b.Close()
	}
	waitIdle(t, r)
}

// A side closed while data is still coming its way: the relay's write fails and resets the
// other side, which sees its writes fail.
func TestWriteToClosedSideResets(t *testing.T) {
	r := newRelay(1)
	ln := listen(t)
	p := newPair(t, r, ln)
	p.x.Close() // FIN: the relay shuts y's... side for writing, y keeps sending
	chunk := make([]byte, 64<<10)
	p.y.SetWriteDeadline(time.Now().Add(20 * time.Second))
	var err error
	for i := 0; i < 4096 && err == nil; i++ {
		_, err = p.y.Write(chunk)
	}
	if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("writing to a relay whose other side is closed: %v, want a reset", err)
	}
	waitDone(t, p)
	p.y.Close()
	waitIdle(t, r)
}

// Unix socketpairs relay as TCP sockets do.
// TestSocketpair: Start with blocking sockets (it makes them non-blocking), and the
// non-blocking start with sockets made non-blocking.
func TestSocketpair(t *testing.T) {
	for _, nonblocking := range []bool{false, true} {
		t.Run(fmt.Sprintf("nonblocking=%v", nonblocking), func(t *testing.T) {
			r := newRelay(1)
			x, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			flags := unix.SOCK_CLOEXEC
			if nonblocking {
				flags |= unix.SOCK_NONBLOCK
			}
			y, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|flags, 0)
			if err != nil {
				t.Fatal(err)
			}
			start := r.Start
			if nonblocking {
				unix.SetNonblock(x[1], true)
				unix.SetNonblock(y[0], false)
				start = func(a, b int, done func()) error { return r.start(a, b, done, true) }
			}
			done := make(chan struct{})
			if err := start(x[1], y[1], func() { close(done) }); err != nil {
				t.Fatal(err)
			}
			xf, yf := os.NewFile(uintptr(x[0]), "x"), os.NewFile(uintptr(y[0]), "y")
			defer xf.Close()
			defer yf.Close()
			data := bytes.Repeat([]byte("0123456789"), 300000)
			go func() {
				xf.Write(data)
				unix.Shutdown(x[0], unix.SHUT_WR)
			}()
			got, err := io.ReadAll(yf)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("got %d bytes (%v), want %d", len(got), err, len(data))
			}
			unix.Shutdown(y[0], unix.SHUT_WR)
			if rest, err := io.ReadAll(xf); err != nil || len(rest) != 0 {
				t.Fatalf("x read %d bytes, %v; want EOF", len(rest), err)
			}
			<-done
			waitIdle(t, r)
		})
	}
}

// Thousands of idle connections cost no goroutine and no pipe; closing them all (orderly, both
// ways) ends every relay.
func TestManyIdle(t *testing.T) {
	n := 2000
	if testing.Short() {
		n = 200
	}
	var rl unix.Rlimit
	unix.Getrlimit(unix.RLIMIT_NOFILE, &rl)
	if need := uint64(4*n + 100); rl.Cur < need {
		n = int(rl.Cur-100) / 4
	}
	r := newRelay(2)
	ln := listen(t)
	before := runtime.NumGoroutine()
	pairs := make([]*pair, n)
	for i := range pairs {
		pairs[i] = newPair(t, r, ln)
	}
	// One byte each way through every connection: each relay works.
	for _, p := range pairs {
		p.x.Write([]byte{1})
		p.y.Write([]byte{2})
	}
	b := make([]byte, 1)
	for _, p := range pairs {
		if _, err := io.ReadFull(p.y, b); err != nil || b[0] != 1 {
			t.Fatalf("y: %v %v", b, err)
		}
		if _, err := io.ReadFull(p.x, b); err != nil || b[0] != 2 {
			t.Fatalf("x: %v %v", b, err)
		}
	}
	conns, pipes := r.Stats()
	if g := runtime.NumGoroutine(); g > before+2 {
		t.Errorf("%d goroutines with %d connections relayed, %d before", g, n, before)
	}
	if conns != int64(n) || pipes > 2*maxFreePipes {
		t.Errorf("%d connections idle: relay counts %d connections, %d pipes", n, conns, pipes)
	}
	for _, p := range pairs {
		p.x.Close()
		p.y.Close()
	}
	for _, p := range pairs {
		waitDone(t, p)
	}
	waitIdle(t, r)
}
