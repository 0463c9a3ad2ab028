package supervisor

import (
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// pipeSide is a Side over the read ends of pipes: ServeSide reads one byte and reports it.
type pipeSide struct {
	mu     sync.Mutex // guards fds
	fds    []int
	served chan byte
	block  chan struct{} // if not nil, ServeSide waits for it to close after reading
}

func (p *pipeSide) SideFDs() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fds
}

func (p *pipeSide) ServeSide(fd int) {
	var b [1]byte
	if n, err := unix.Read(fd, b[:]); n != 1 || err != nil {
		return
	}
	if p.block != nil {
		<-p.block
	}
	p.served <- b[0]
}

// newPipeSide makes a pipeSide with one pipe and returns it with the pipe's write end.
func newPipeSide(t *testing.T) (*pipeSide, int) {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
	return &pipeSide{fds: []int{fds[0]}, served: make(chan byte, 16)}, fds[1]
}

// TestSideServedWhileWaiting: input on a side descriptor is served by the worker waiting at the
// listener, between notifications, and the notifications are still served.
func TestSideServedWhileWaiting(t *testing.T) {
	side, w := newPipeSide(t)
	h := serve(t, Options{Side: side}, nil)
	p := h.tr.Process(100, memBase, 0x1000)
	h.socket(p, 4, unix.AF_UNIX, unix.SOCK_STREAM)
	for i := byte(1); i <= 3; i++ {
		unix.Write(w, []byte{i})
		if b, ok := within(side.served, 5*time.Second); !ok || b != i {
			t.Fatalf("side input %d: served %d, %v", i, b, ok)
		}
		if r := h.answer(h.notify(100, host.Getpeername, 4, memBase, memBase+0x10)); r.Flags != unix.SECCOMP_USER_NOTIF_FLAG_CONTINUE {
			t.Errorf("getpeername: %+v", r)
		}
	}
}

// TestSideStuckHandsOver: side work that blocks loses the receiver role to the watchdog, as a
// call does: the next notification is served meanwhile.
func TestSideStuckHandsOver(t *testing.T) {
	side, w := newPipeSide(t)
	side.block = make(chan struct{})
	h := serve(t, Options{Side: side}, nil)
	p := h.tr.Process(100, memBase, 0x1000)
	h.socket(p, 4, unix.AF_UNIX, unix.SOCK_STREAM)
	unix.Write(w, []byte{7})
	if r := h.answer(h.notify(100, host.Getpeername, 4, memBase, memBase+0x10)); r.Flags != unix.SECCOMP_USER_NOTIF_FLAG_CONTINUE {
		t.Errorf("getpeername: %+v", r)
	}
	close(side.block)
	if b, ok := within(side.served, 5*time.Second); !ok || b != 7 {
		t.Fatalf("side input: served %d, %v", b, ok)
	}
	// The worker that served it left the role to the follower, which serves side input too.
	unix.Write(w, []byte{8})
	if b, ok := within(side.served, 5*time.Second); !ok || b != 8 {
		t.Fatalf("side input after the hand-over: served %d, %v", b, ok)
	}
}

// TestSideGrows: a descriptor added to the side set while the worker waits is polled once the
// wait wakes for one of the old ones (the Side's wake-up descriptor).
func TestSideGrows(t *testing.T) {
	side, wake := newPipeSide(t)
	h := serve(t, Options{Side: side}, nil)
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	// Usually the worker is back at the listener, with the old set, when the set grows.
	p := h.tr.Process(100, memBase, 0x1000)
	h.socket(p, 4, unix.AF_UNIX, unix.SOCK_STREAM)
	h.answer(h.notify(100, host.Getpeername, 4, memBase, memBase+0x10))
	side.mu.Lock()
	side.fds = append(side.fds, fds[0])
	side.mu.Unlock()
	unix.Write(fds[1], []byte{2}) // not polled yet
	unix.Write(wake, []byte{1})
	got := map[byte]bool{}
	for len(got) < 2 {
		b, ok := within(side.served, 5*time.Second)
		if !ok {
			t.Fatalf("served %v, want the wake-up and the new descriptor's input", got)
		}
		got[b] = true
	}
}
