// Package relay joins pairs of connected stream sockets of the supervisor's own and copies
// between them both ways until both directions are done: the sealed network's data path (the
// program's side in the sandbox, the supervisor's upstream on the host network; see
// internal/supervisor/sealed_linux.go), and any other pair a caller hands over.
//
// Shape: a few event loops (at most GOMAXPROCS, at most maxLoops), each one goroutine with an
// epoll instance of its own, with both sockets of each of its connections registered
// edge-triggered; the goroutine waits for that instance in the Go runtime's poller (the epoll
// instance is itself pollable), so an idle loop holds no thread. No goroutine, no buffer and no pipe belongs to an idle connection:
// what an open connection costs the supervisor is its two sockets and a conn (some 200 bytes).
// Data goes through splice(2): socket → pipe → socket, with no copy to user space. A loop takes
// an empty pipe from its own small free list for each transfer and puts it back as soon as the
// destination has taken everything; only a direction whose destination is full keeps its pipe
// (with the bytes in it) until the destination can take them. Free pipes beyond maxFreePipes are
// closed, and all of a loop's free pipes are closed when it has had no connection for pipeIdle:
// a supervisor whose relays are gone soon holds no pipe (and one making connections one after
// the other does not make a pipe for each). When no pipe can be made (descriptors used up), the
// direction falls back to read/write through the loop's buffer, keeping what the destination
// could not take in a buffer of its own until it can.
//
// Semantics, as a direct connection would behave:
//   - end of stream on one side (EOF) is passed on as a half-close: shutdown(SHUT_WR) of the
//     other side, once every byte read before it has been written;
//   - an error on either side (RST, EPIPE, a pending SO_ERROR) resets both (SO_LINGER 0, close);
//   - when both directions have passed their EOF on, both sockets are closed normally;
//   - then, and only then, done runs (once, on the loop's goroutine: it must not block).
//
// Locking: loop.mu guards loop.conns and loop.free (the slot table: Start, on any goroutine,
// inserts; the loop's goroutine looks events up and removes). Everything else of a loop (its pipe
// free list, its buffer, its pending list, its count of live connections) and every field of a
// conn after Start has inserted it belong to the loop's goroutine alone, which is the only one
// that touches them; Start's writes to a new conn happen before its insertion under loop.mu, and
// the loop reads the conn only after looking it up under loop.mu. Relay.mu guards the creation
// of the loops. The counters (Stats) are atomics.
package relay

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	maxLoops     = 4
	maxFreePipes = 4       // empty pipes a loop keeps for the next transfers
	pipeSize     = 1 << 20 // asked of each pipe (F_SETPIPE_SZ), as Go's own splice does
	chunk        = pipeSize
	// budget bounds the transfers one direction makes in a row before the loop serves the other
	// connections (it comes back to it after the next epoll_wait, which then does not wait).
	budget   = 16
	maxEvent = 128
	pipeIdle = 2000     // ms without a connection after which a loop closes its free pipes (default)
	bufSize  = 64 << 10 // the loop's buffer for the read/write fallback
)

// Relay is a set of event loops. Make one with New, or use the package's Start.
type Relay struct {
	n        int  // loops to make
	noPipes  bool // tests: every transfer takes the read/write fallback
	pipeIdle int  // ms: see the constant

	mu    sync.Mutex // guards loops (made on first use)
	loops []*loop

	next  atomic.Uint32
	conns atomic.Int64 // connections relayed now
	pipes atomic.Int64 // pipes open now (free or holding data)
}

// New returns a relay that will run n event loops (0: GOMAXPROCS, at most maxLoops), started
// on first use. Its loops live as long as the process.
func New(n int) *Relay {
	if n <= 0 {
		n = min(runtime.GOMAXPROCS(0), maxLoops)
	}
	return &Relay{n: n, pipeIdle: pipeIdle}
}

var std = New(0)

// Start relays between the connected stream sockets a and b, which belong to the relay from then
// on (it makes them non-blocking), until both directions are done (see the package comment);
// then it closes them and runs done (if not nil), exactly once. On error (no event loop could be
// made, or a socket could not be registered: descriptors or memory used up) both sockets are
// reset and closed, done is not run, and the error says why.
func Start(a, b int, done func()) error { return std.Start(a, b, done) }

// StartNonblocking is Start for sockets the caller made non-blocking itself (SOCK_NONBLOCK at
// creation or accept4): their flags are not asked again (two fcntl less per connection).
func StartNonblocking(a, b int, done func()) error { return std.start(a, b, done, true) }

// Stats returns how many connections the package's relay carries now and how many pipes it holds.
func Stats() (conns, pipes int64) { return std.Stats() }

// Stats returns how many connections r carries now and how many pipes it holds.
func (r *Relay) Stats() (conns, pipes int64) { return r.conns.Load(), r.pipes.Load() }

// Start is the package's Start on r.
func (r *Relay) Start(a, b int, done func()) error { return r.start(a, b, done, false) }

func (r *Relay) start(a, b int, done func(), nonblocking bool) error {
	l, err := r.loop()
	if err == nil {
		err = l.add(a, b, done, nonblocking)
	}
	if err != nil {
		reset(a)
		reset(b)
		return err
	}
	return nil
}

// loop picks the loop for a new connection (round robin), making the loops on first use.
func (r *Relay) loop() (*loop, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.loops) < r.n {
		l, err := newLoop(r)
		if err == nil {
			r.loops = append(r.loops, l)
			return l, nil
		}
		if len(r.loops) == 0 {
			return nil, err
		}
	}
	return r.loops[int(r.next.Add(1)%uint32(len(r.loops)))], nil
}

// loop is one event loop; see the package comment for what belongs to whom.
type loop struct {
	r      *Relay
	epfd   int
	file   *os.File        // epfd, for the Go runtime's poller (never closed: loops live forever)
	rc     syscall.RawConn // file's
	wakefd int             // an eventfd: doomed has conns to reset
	live   atomic.Int64    // conns added and not ended

	mu     sync.Mutex // guards conns, free and doomed
	conns  []*conn    // by slot; nil: free
	free   []int32    // free slots
	doomed []*conn    // conns whose second socket could not be registered (add)

	// The loop goroutine's own.
	pipes   []*pipe // empty pipes
	buf     []byte  // the read/write fallback's buffer (made when first needed)
	pending []*dir  // directions that used their budget and have more to do
}

type pipe struct{ r, w int }

// conn is one relayed pair: fd[0] and fd[1], and its two directions, d[0] (fd[0] → fd[1]) and
// d[1] (fd[1] → fd[0]).
type conn struct {
	fd   [2]int
	d    [2]dir
	slot int32
	gen  uint32 // told apart from an earlier conn of the same slot in the events
	done func()
	end  bool // closed: events and pending work still queued for it are dropped
	// out[i]: fd[i] is registered for EPOLLOUT too. A socket is registered for EPOLLIN alone at
	// first: both are writable at once, and EPOLLOUT would wake the loop for every new
	// connection to find nothing to read (a wake-up and two splice that said EAGAIN, per
	// connection). It is added (blocked) when a transfer into the socket would block, and kept.
	out [2]bool
}

// dir is one direction of a conn.
type dir struct {
	c        *conn
	src, dst int
	p        *pipe  // a pipe holding the n bytes read from src that dst has not taken yet
	n        int    // bytes in p
	held     []byte // the fallback's bytes read from src that dst has not taken yet
	eof      bool   // src said end of stream
	shut     bool   // the EOF was passed on (shutdown of dst's write side)
	waitSrc  bool   // src said EAGAIN: nothing to read until its next edge
	waitDst  bool   // dst said EAGAIN: no room until its next edge
	inQueue  bool   // in loop.pending
	queueGen uint32 // c.gen when queued
}

var gens atomic.Uint32

const wakeSlot = -1 // the event data of a loop's eventfd

func newLoop(r *Relay) (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("relay: epoll_create1: %w", err)
	}
	wfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("relay: eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: wakeSlot}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wfd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(wfd)
		return nil, fmt.Errorf("relay: epoll_ctl: %w", err)
	}
	// The epoll instance is itself pollable: the Go runtime's poller waits on it (see run).
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		unix.Close(wfd)
		return nil, fmt.Errorf("relay: epoll instance non-blocking: %w", err)
	}
	f := os.NewFile(uintptr(epfd), "relay-epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		unix.Close(wfd)
		return nil, fmt.Errorf("relay: %w", err)
	}
	l := &loop{r: r, epfd: epfd, wakefd: wfd, file: f, rc: rc}
	go l.run()
	return l, nil
}

// add registers a new conn of a and b (on Start's caller's goroutine), made non-blocking unless
// the caller says they are. The conn is in the table before its sockets are registered, so no
// event of theirs finds it missing.
func (l *loop) add(a, b int, done func(), nonblocking bool) error {
	for _, fd := range []int{a, b} {
		if nonblocking {
			break
		}
		fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
		if err == nil && fl&unix.O_NONBLOCK == 0 {
			_, err = unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl|unix.O_NONBLOCK)
		}
		if err != nil {
			return fmt.Errorf("relay: make socket %d non-blocking: %w", fd, err)
		}
	}
	c := &conn{fd: [2]int{a, b}, done: done, gen: gens.Add(1) & 0x7fffffff}
	c.d[0] = dir{c: c, src: a, dst: b}
	c.d[1] = dir{c: c, src: b, dst: a}
	l.mu.Lock()
	if n := len(l.free); n > 0 {
		c.slot = l.free[n-1]
		l.free = l.free[:n-1]
		l.conns[c.slot] = c
	} else {
		c.slot = int32(len(l.conns))
		l.conns = append(l.conns, c)
	}
	l.mu.Unlock()
	l.live.Add(1)
	l.r.conns.Add(1)
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET, Fd: c.slot << 1, Pad: int32(c.gen)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, a, &ev); err != nil {
		// Nothing registered: the loop never saw this conn.
		l.mu.Lock()
		l.conns[c.slot] = nil
		l.free = append(l.free, c.slot)
		l.mu.Unlock()
		l.live.Add(-1)
		l.r.conns.Add(-1)
		return fmt.Errorf("relay: epoll_ctl: %w", err)
	}
	ev.Fd |= 1
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, b, &ev); err != nil {
		// The loop may be serving a already: it resets the conn, and done runs.
		l.mu.Lock()
		l.doomed = append(l.doomed, c)
		l.mu.Unlock()
		var one [8]byte
		one[0] = 1
		unix.Write(l.wakefd, one[:])
	}
	return nil
}

// run is the loop's goroutine.
func (l *loop) run() {
	events := make([]unix.EpollEvent, maxEvent)
	idle := false // the deadline for closing the free pipes is set
	for {
		// Wait in the Go runtime's poller, not in epoll_wait: a thread blocked in a system
		// call keeps its P until sysmon takes it back, up to milliseconds later, which would
		// hold up the supervisor's other goroutines.
		switch want := len(l.pipes) > 0 && l.live.Load() == 0; {
		case want && !idle:
			l.file.SetReadDeadline(time.Now().Add(time.Duration(l.r.pipeIdle) * time.Millisecond))
			idle = true
		case !want && idle:
			l.file.SetReadDeadline(time.Time{})
			idle = false
		}
		err := l.rc.Read(func(uintptr) bool {
			for {
				n, err := unix.EpollWait(l.epfd, events, 0)
				if err == unix.EINTR {
					continue
				}
				if err != nil {
					panic(fmt.Sprintf("relay: epoll_wait: %v", err)) // EBADF, EFAULT, EINVAL: a bug
				}
				if n == 0 && len(l.pending) == 0 {
					return false // nothing to do: park until the epoll instance is readable
				}
				l.serve(events[:n])
				if l.live.Load() == 0 && len(l.pipes) > 0 {
					return true // back out to set the idle deadline
				}
			}
		})
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if l.live.Load() == 0 {
				for _, p := range l.pipes {
					l.closePipe(p)
				}
				l.pipes, l.buf = nil, nil
			}
		} else if err != nil {
			panic(fmt.Sprintf("relay: waiting for events: %v", err))
		}
	}
}

// serve serves a batch of events, then the directions that had used their budget.
func (l *loop) serve(events []unix.EpollEvent) {
	for _, ev := range events {
		if ev.Fd == wakeSlot {
			l.wake()
			continue
		}
		slot, side := ev.Fd>>1, int(ev.Fd&1)
		l.mu.Lock()
		var c *conn
		if int(slot) < len(l.conns) {
			c = l.conns[slot]
		}
		l.mu.Unlock()
		if c == nil || c.gen != uint32(ev.Pad) || c.end {
			continue // an event of a conn ended in this batch
		}
		l.event(c, side, ev.Events)
	}
	if len(l.pending) > 0 {
		todo := l.pending
		l.pending = nil
		for _, d := range todo {
			d.inQueue = false
			if !d.c.end && d.c.gen == d.queueGen {
				l.run1(d)
			}
		}
	}
}

// wake resets the doomed conns.
func (l *loop) wake() {
	var b [8]byte
	unix.Read(l.wakefd, b[:])
	l.mu.Lock()
	doomed := l.doomed
	l.doomed = nil
	l.mu.Unlock()
	for _, c := range doomed {
		if !c.end {
			l.end(c, true)
		}
	}
}

// event serves what epoll said of c's socket fd[side].
func (l *loop) event(c *conn, side int, ev uint32) {
	if ev&unix.EPOLLERR != 0 {
		// A pending error (RST): the directions would find it only if they touch the socket.
		if soerr, err := unix.GetsockoptInt(c.fd[side], unix.SOL_SOCKET, unix.SO_ERROR); err != nil || soerr != 0 {
			l.end(c, true)
			return
		}
	}
	if ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		c.d[side].waitSrc = false
		l.run1(&c.d[side])
	}
	if ev&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 && !c.end {
		c.d[1-side].waitDst = false
		l.run1(&c.d[1-side])
	}
}

// run1 pumps d and ends its conn on an error (a reset) or when both directions are done.
func (l *loop) run1(d *dir) {
	c := d.c
	if c.end {
		return
	}
	if err := l.pump(d); err != nil {
		l.end(c, true)
		return
	}
	if c.d[0].shut && c.d[1].shut {
		l.end(c, false)
	}
}

// pump moves data along d until it must wait for an edge, or has used its budget (then it is
// queued to go on after the next epoll_wait). An error means: reset the conn.
func (l *loop) pump(d *dir) error {
	for i := 0; i < budget; i++ {
		// First what was read and not yet taken.
		if d.n > 0 {
			m, err := splice(d.p.r, d.dst, d.n)
			if err == unix.EAGAIN {
				return l.blocked(d)
			}
			if err != nil {
				return err
			}
			d.n -= m
			if d.n > 0 {
				continue
			}
			l.putPipe(d.p)
			d.p = nil
		}
		if len(d.held) > 0 {
			m, err := send(d.dst, d.held)
			if err == unix.EAGAIN {
				return l.blocked(d)
			}
			if err != nil {
				return err
			}
			if d.held = d.held[m:]; len(d.held) > 0 {
				continue
			}
			d.held = nil
		}
		if d.eof {
			if !d.shut {
				d.shut = true
				if err := unix.Shutdown(d.dst, unix.SHUT_WR); err != nil {
					return err
				}
			}
			return nil
		}
		if d.waitSrc {
			return nil
		}
		p := l.getPipe()
		if p == nil {
			// No pipe (descriptors used up): through the loop's buffer.
			if l.buf == nil {
				l.buf = make([]byte, bufSize)
			}
			k, err := unix.Read(d.src, l.buf)
			switch {
			case err == unix.EAGAIN:
				d.waitSrc = true
				return nil
			case err != nil:
				return err
			case k == 0:
				d.eof = true
				continue
			}
			m, err := send(d.dst, l.buf[:k])
			if err != nil && err != unix.EAGAIN {
				return err
			}
			if m < k {
				d.held = append([]byte(nil), l.buf[m:k]...)
			}
			continue
		}
		k, err := splice(d.src, p.w, chunk)
		if err != nil || k == 0 {
			l.putPipe(p) // empty
		}
		switch {
		case err == unix.EAGAIN:
			d.waitSrc = true
			return nil
		case err != nil:
			return err
		case k == 0:
			d.eof = true
			continue
		}
		d.p, d.n = p, k
	}
	if !d.inQueue {
		d.inQueue, d.queueGen = true, d.c.gen
		l.pending = append(l.pending, d)
	}
	return nil
}

// blocked: d's destination said EAGAIN; d waits for it to be writable, which epoll is asked to
// tell from now on (conn.out). epoll_ctl(MOD) polls the socket again and queues the event if
// it is writable already (fs/eventpoll.c, ep_modify), so room made between the EAGAIN and the
// MOD is not missed. An error (no memory) means: reset the conn.
func (l *loop) blocked(d *dir) error {
	d.waitDst = true
	c := d.c
	side := 0
	if d.dst == c.fd[1] {
		side = 1
	}
	if c.out[side] {
		return nil
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: c.slot<<1 | int32(side), Pad: int32(c.gen)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, d.dst, &ev); err != nil {
		return fmt.Errorf("relay: epoll_ctl: %w", err)
	}
	c.out[side] = true
	return nil
}

// end closes c's sockets (reset: with SO_LINGER 0, so the peers see an RST), frees its slot and
// pipes, and runs its done.
func (l *loop) end(c *conn, rst bool) {
	c.end = true
	for _, fd := range c.fd {
		if rst {
			reset(fd)
		} else {
			unix.Close(fd)
		}
	}
	for i := range c.d {
		d := &c.d[i]
		if d.p != nil {
			l.closePipe(d.p) // bytes nobody will take
			d.p = nil
		}
		d.held = nil
	}
	l.mu.Lock()
	l.conns[c.slot] = nil
	l.free = append(l.free, c.slot)
	if len(l.free) == len(l.conns) && len(l.conns) > 1024 {
		// Back to idle after a crowd: give the table's memory back.
		l.conns, l.free = nil, nil
	}
	l.mu.Unlock()
	l.r.conns.Add(-1)
	l.live.Add(-1)
	if c.done != nil {
		c.done()
	}
}

// getPipe returns an empty pipe, nil if none can be made.
func (l *loop) getPipe() *pipe {
	if l.r.noPipes {
		return nil
	}
	if n := len(l.pipes); n > 0 {
		p := l.pipes[n-1]
		l.pipes = l.pipes[:n-1]
		return p
	}
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		return nil
	}
	// A smaller pipe works too, with more calls.
	unix.FcntlInt(uintptr(fds[1]), unix.F_SETPIPE_SZ, pipeSize)
	l.r.pipes.Add(1)
	return &pipe{r: fds[0], w: fds[1]}
}

// putPipe takes back an empty pipe.
func (l *loop) putPipe(p *pipe) {
	if len(l.pipes) < maxFreePipes {
		l.pipes = append(l.pipes, p)
		return
	}
	l.closePipe(p)
}

func (l *loop) closePipe(p *pipe) {
	unix.Close(p.r)
	unix.Close(p.w)
	l.r.pipes.Add(-1)
}

func splice(from, to, n int) (int, error) {
	for {
		m, err := unix.Splice(from, nil, to, nil, n, unix.SPLICE_F_NONBLOCK|unix.SPLICE_F_MOVE)
		if err == unix.EINTR {
			continue
		}
		return int(m), err
	}
}

func send(fd int, b []byte) (int, error) {
	for {
		n, err := unix.SendmsgN(fd, b, nil, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, err
		}
		return n, nil
	}
}

// reset closes a socket with an RST (SO_LINGER 0) instead of a FIN.
func reset(fd int) {
	unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	unix.Close(fd)
}
