package supervisortest

import (
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gotorsocks/torsocks/internal/seccomp"
)

// Kernel is a fake seccomp notification listener (supervisor.Kernel). Notifications are queued
// with Notify; a pipe stands for the listener's descriptor: readable while one is queued, hung up
// after Hangup. It checks what the real kernel enforces: an answer goes to a pending
// notification, once; a second answer, or one to an id never received, is recorded in Violations.
type Kernel struct {
	r, w int // the pipe: one byte per queued notification

	mu         sync.Mutex
	cond       *sync.Cond
	nextID     uint64
	queue      []seccomp.Notif
	pending    map[uint64]bool // received, not answered
	answers    map[uint64]Answer
	installed  map[uint64][]int
	violations []string
	hungUp     bool
}

// Answer is what the supervisor answered to one notification.
type Answer struct {
	Resp      seccomp.Resp
	Installed []int // descriptors installed with AddFD (the fake's copies; the test closes them)
}

// NewKernel returns an empty fake listener.
func NewKernel() (*Kernel, error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, err
	}
	k := &Kernel{r: p[0], w: p[1], nextID: 1, pending: map[uint64]bool{}, answers: map[uint64]Answer{}, installed: map[uint64][]int{}}
	k.cond = sync.NewCond(&k.mu)
	return k, nil
}

// Notify queues a notification from thread tid and returns its id.
func (k *Kernel) Notify(tid int, data seccomp.Data) uint64 {
	k.mu.Lock()
	id := k.nextID
	k.nextID++
	k.queue = append(k.queue, seccomp.Notif{ID: id, Pid: uint32(tid), Data: data})
	k.mu.Unlock()
	unix.Write(k.w, []byte{0})
	return id
}

// Hangup makes Wait report that no task uses the filter any more, once the queue is empty.
func (k *Kernel) Hangup() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.hungUp {
		k.hungUp = true
		unix.Close(k.w)
	}
}

// Close closes the pipe (after Serve has returned).
func (k *Kernel) Close() {
	k.Hangup()
	unix.Close(k.r)
}

// Cancel makes a notification no longer valid, as a signal to the thread or its death does.
func (k *Kernel) Cancel(id uint64) {
	k.mu.Lock()
	delete(k.pending, id)
	k.mu.Unlock()
}

// WaitAnswer waits up to timeout for the answer to notification id.
func (k *Kernel) WaitAnswer(id uint64, timeout time.Duration) (Answer, error) {
	deadline := time.Now().Add(timeout)
	t := time.AfterFunc(timeout, func() { k.mu.Lock(); k.cond.Broadcast(); k.mu.Unlock() })
	defer t.Stop()
	k.mu.Lock()
	defer k.mu.Unlock()
	for {
		if a, ok := k.answers[id]; ok {
			return a, nil
		}
		if !time.Now().Before(deadline) {
			return Answer{}, fmt.Errorf("notification %d: no answer within %v", id, timeout)
		}
		k.cond.Wait()
	}
}

// Violations are the answers the real kernel would have refused (ENOENT): twice, or to an id not
// pending.
func (k *Kernel) Violations() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]string(nil), k.violations...)
}

// FD is the pipe's read end: readable while a notification is queued.
func (k *Kernel) FD() int { return k.r }

// Wait blocks until a notification is queued (true) or the fake hung up (false).
func (k *Kernel) Wait() (bool, error) {
	fds := []unix.PollFd{{Fd: int32(k.r), Events: unix.POLLIN}}
	for {
		if _, err := unix.Poll(fds, -1); err != nil && err != unix.EINTR {
			return false, err
		}
		if fds[0].Revents&unix.POLLIN != 0 {
			return true, nil
		}
		if fds[0].Revents&(unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0 {
			return false, nil
		}
	}
}

// Recv takes the first queued notification.
func (k *Kernel) Recv(n *seccomp.Notif) error {
	var b [1]byte
	if _, err := unix.Read(k.r, b[:]); err != nil {
		return seccomp.ErrNotifGone
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.queue) == 0 {
		return seccomp.ErrNotifGone
	}
	*n = k.queue[0]
	k.queue = k.queue[1:]
	k.pending[n.ID] = true
	return nil
}

// Send records the answer to a pending notification.
func (k *Kernel) Send(r *seccomp.Resp) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.pending[r.ID] {
		if _, ok := k.answers[r.ID]; ok {
			k.violations = append(k.violations, fmt.Sprintf("notification %d answered twice", r.ID))
		}
		return seccomp.ErrNotifGone
	}
	delete(k.pending, r.ID)
	k.answers[r.ID] = Answer{Resp: *r, Installed: k.installed[r.ID]}
	k.cond.Broadcast()
	return nil
}

// AddFD "installs" a copy of srcfd: the copy is kept in the answer, its number returned.
func (k *Kernel) AddFD(id uint64, srcfd int, cloexec bool) (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.pending[id] {
		return -1, seccomp.ErrNotifGone
	}
	fd, err := unix.FcntlInt(uintptr(srcfd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("SECCOMP_IOCTL_NOTIF_ADDFD: %w", err)
	}
	k.installed[id] = append(k.installed[id], fd)
	return fd, nil
}

// Valid reports seccomp.ErrNotifGone unless id is pending.
func (k *Kernel) Valid(id uint64) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.pending[id] {
		return seccomp.ErrNotifGone
	}
	return nil
}
