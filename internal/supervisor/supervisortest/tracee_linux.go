package supervisortest

import (
	"fmt"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/gotorsocks/torsocks/internal/seccomp"
)

// Tracee is a fake traced program (supervisor.Tracee): threads of processes, each process with a
// descriptor table of the test's own descriptors and a piece of memory. Nothing of it needs
// privileges: pidfd_getfd becomes a dup of the test's descriptor, process_vm_readv a copy.
type Tracee struct {
	mu      sync.Mutex
	threads map[int]*thread
	procs   map[int]*Process
	pidfds  map[int]*Process // the fake pidfds given out, by number: GetFD receives only that
}

type thread struct {
	p     *Process
	exitR int // polled readable once the thread exited (Exit)
	exitW int
}

// Process is one fake process of the program.
type Process struct {
	t     *Tracee
	pid   int
	start string
	fds   map[int]int // the program's number -> the test's descriptor
	base  uint64
	mem   []byte
	// ReadHook, when set, runs before every read of this process's memory (a test blocks it to
	// stand for a page fault on memory another process serves).
	ReadHook func(addr uint64, n int)
}

// NewTracee returns a program with no processes.
func NewTracee() *Tracee {
	return &Tracee{threads: map[int]*thread{}, procs: map[int]*Process{}, pidfds: map[int]*Process{}}
}

// Process adds process pid (its main thread has the same id) with size bytes of memory at base.
func (t *Tracee) Process(pid int, base uint64, size int) *Process {
	p := &Process{t: t, pid: pid, start: "1", fds: map[int]int{}, base: base, mem: make([]byte, size)}
	t.mu.Lock()
	t.procs[pid] = p
	t.mu.Unlock()
	p.Thread(pid)
	return p
}

// Thread adds thread tid to p.
func (p *Process) Thread(tid int) {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
		panic(err)
	}
	p.t.mu.Lock()
	p.t.threads[tid] = &thread{p: p, exitR: fds[0], exitW: fds[1]}
	p.t.mu.Unlock()
}

// Exit ends thread tid: its pidfds poll readable.
func (t *Tracee) Exit(tid int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if th := t.threads[tid]; th != nil && th.exitW >= 0 {
		unix.Close(th.exitW)
		th.exitW = -1
	}
}

// Restart gives p a new start time: the same pid now names another process.
func (p *Process) Restart(start string) {
	p.t.mu.Lock()
	p.start = start
	p.t.mu.Unlock()
}

// SetFD makes the program's descriptor n the test's descriptor fd (which the test keeps and closes).
func (p *Process) SetFD(n, fd int) {
	p.t.mu.Lock()
	p.fds[n] = fd
	p.t.mu.Unlock()
}

// Poke writes b into p's memory at addr.
func (p *Process) Poke(addr uint64, b []byte) {
	p.t.mu.Lock()
	defer p.t.mu.Unlock()
	copy(p.mem[addr-p.base:], b)
}

// Peek reads n bytes of p's memory at addr.
func (p *Process) Peek(addr uint64, n int) []byte {
	p.t.mu.Lock()
	defer p.t.mu.Unlock()
	return append([]byte(nil), p.mem[addr-p.base:addr-p.base+uint64(n)]...)
}

func (t *Tracee) thread(tid int) (*thread, error) {
	th := t.threads[tid]
	if th == nil {
		return nil, fmt.Errorf("no thread %d: %w", tid, unix.ESRCH)
	}
	return th, nil
}

// OpenThread returns a descriptor that polls readable once the thread exited.
func (t *Tracee) OpenThread(tid int) (int, int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	th, err := t.thread(tid)
	if err != nil {
		return -1, 0, err
	}
	fd, err := unix.FcntlInt(uintptr(th.exitR), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1, 0, err
	}
	t.pidfds[fd] = th.p
	return fd, th.p.pid, nil
}

// Tgid is the process of thread tid.
func (t *Tracee) Tgid(tid int) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	th, err := t.thread(tid)
	if err != nil {
		return 0, err
	}
	return th.p.pid, nil
}

// GetFD copies the program's descriptor fd of the process pidfd names.
func (t *Tracee) GetFD(pidfd, fd int) (int, error) {
	t.mu.Lock()
	p := t.pidfds[pidfd]
	src, ok := 0, false
	if p != nil {
		src, ok = p.fds[fd]
	}
	t.mu.Unlock()
	if !ok {
		return -1, fmt.Errorf("pidfd_getfd(fd %d): %w", fd, unix.EBADF)
	}
	return unix.FcntlInt(uintptr(src), unix.F_DUPFD_CLOEXEC, 0)
}

func (t *Tracee) proc(tid int) (*Process, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	th, err := t.thread(tid)
	if err != nil {
		return nil, err
	}
	return th.p, nil
}

// ReadMem copies len(b) bytes of the memory of thread tid's process (EFAULT outside it).
func (t *Tracee) ReadMem(tid int, addr uint64, b []byte) error {
	p, err := t.proc(tid)
	if err != nil {
		return err
	}
	if p.ReadHook != nil {
		p.ReadHook(addr, len(b))
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if addr < p.base || addr-p.base+uint64(len(b)) > uint64(len(p.mem)) {
		return fmt.Errorf("read %d bytes at %#x of pid %d: %w", len(b), addr, tid, unix.EFAULT)
	}
	copy(b, p.mem[addr-p.base:])
	return nil
}

// WriteMem writes the segments into the memory of thread tid's process (EFAULT outside it).
func (t *Tracee) WriteMem(tid int, segs []seccomp.Seg) error {
	p, err := t.proc(tid)
	if err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, s := range segs {
		if s.Addr < p.base || s.Addr-p.base+uint64(len(s.B)) > uint64(len(p.mem)) {
			return fmt.Errorf("write %d bytes at %#x of pid %d: %w", len(s.B), s.Addr, tid, unix.EFAULT)
		}
		copy(p.mem[s.Addr-p.base:], s.B)
	}
	return nil
}

// Started is process pid's start time ("" once unknown).
func (t *Tracee) Started(pid int) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if p := t.procs[pid]; p != nil {
		return p.start
	}
	return ""
}
