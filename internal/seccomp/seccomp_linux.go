package seccomp

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Data mirrors struct seccomp_data (64 bytes): what the filter and the supervisor see of a syscall.
type Data struct {
	Nr                 int32
	Arch               uint32
	InstructionPointer uint64
	Args               [6]uint64
}

// Notif mirrors struct seccomp_notif (80 bytes).
type Notif struct {
	ID    uint64
	Pid   uint32 // a thread id, in the supervisor's pid namespace
	Flags uint32
	Data  Data
}

// Resp mirrors struct seccomp_notif_resp (24 bytes).
type Resp struct {
	ID    uint64
	Val   int64
	Error int32
	Flags uint32
}

// addFD mirrors struct seccomp_notif_addfd (24 bytes).
type addFD struct {
	ID         uint64
	Flags      uint32
	SrcFD      uint32
	NewFD      uint32
	NewFDFlags uint32
}

// Numbers of this package's own (the kernel's are golang.org/x/sys/unix's).
const (
	pidfdThread           = unix.O_EXCL // PIDFD_THREAD (Linux 6.9)
	listenerFilterFlags   = unix.SECCOMP_FILTER_FLAG_NEW_LISTENER | unix.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
	minimumKernelMajor    = 5
	minimumKernelMinor    = 19
	maxTraceeMemoryAccess = 1 << 20
)

// ErrNotifGone means the notification is no longer valid: the traced thread was killed or the
// syscall was interrupted. Nothing read for it may be trusted and it needs no answer.
var ErrNotifGone = errors.New("notification no longer valid")

// CheckKernel refuses kernels older than 5.19, the first with SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
// without which a signal to a thread blocked in a proxied connect corrupts its stream.
func CheckKernel() error {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return fmt.Errorf("uname: %w", err)
	}
	release := unix.ByteSliceToString(u.Release[:])
	major, minor, ok := parseRelease(release)
	if !ok {
		return fmt.Errorf("cannot read the kernel version from %q", release)
	}
	if major < minimumKernelMajor || (major == minimumKernelMajor && minor < minimumKernelMinor) {
		return fmt.Errorf("this kernel (Linux %s) is too old: torsocks needs Linux %d.%d or newer (seccomp user notification with WAIT_KILLABLE_RECV)",
			release, minimumKernelMajor, minimumKernelMinor)
	}
	return nil
}

func parseRelease(s string) (major, minor int, ok bool) {
	parts := strings.SplitN(s, ".", 3)
	if len(parts) < 2 {
		return 0, 0, false
	}
	major, err1 := strconv.Atoi(parts[0])
	minorStr := parts[1]
	if i := strings.IndexFunc(minorStr, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		minorStr = minorStr[:i]
	}
	minor, err2 := strconv.Atoi(minorStr)
	return major, minor, err1 == nil && err2 == nil
}

// CheckSizes verifies that the kernel's notification structures have the sizes this package uses.
func CheckSizes() error {
	var sizes struct{ Notif, Resp, Data uint16 }
	if _, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_GET_NOTIF_SIZES, 0, uintptr(unsafe.Pointer(&sizes))); errno != 0 {
		return fmt.Errorf("seccomp(SECCOMP_GET_NOTIF_SIZES): %w", errno)
	}
	if sizes.Notif != uint16(unsafe.Sizeof(Notif{})) || sizes.Resp != uint16(unsafe.Sizeof(Resp{})) || sizes.Data != uint16(unsafe.Sizeof(Data{})) {
		return fmt.Errorf("unexpected seccomp notification sizes %d/%d/%d", sizes.Notif, sizes.Resp, sizes.Data)
	}
	return nil
}

// InstallFilter loads prog as a seccomp filter on the calling thread with a notification listener
// (NEW_LISTENER | WAIT_KILLABLE_RECV) and returns the listener fd (close-on-exec, as the kernel makes
// it; it must stay so: a traced program holding its own listener would hang forever). The caller
// must have locked its OS thread and set no_new_privs.
func InstallFilter(prog []unix.SockFilter) (int, error) {
	if len(prog) == 0 || len(prog) > 4096 {
		return -1, fmt.Errorf("filter has %d instructions", len(prog))
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	fd, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, listenerFilterFlags, uintptr(unsafe.Pointer(&fprog)))
	switch errno {
	case 0:
		return int(fd), nil
	case unix.EBUSY:
		return -1, fmt.Errorf("already running under a seccomp notification supervisor (torsocks inside torsocks, or a container runtime): %w", errno)
	case unix.EINVAL:
		return -1, fmt.Errorf("the kernel refused the seccomp filter or its flags (seccomp user notification unavailable?): %w", errno)
	case unix.ENOSYS:
		return -1, fmt.Errorf("seccomp is not available in this kernel: %w", errno)
	default:
		return -1, fmt.Errorf("seccomp(SET_MODE_FILTER): %w", errno)
	}
}

// Confine puts a plain filter (no listener) on every thread of the calling process, with
// no_new_privs: for torsocks' own helper processes, which have no supervisor.
func Confine(prog []unix.SockFilter) error {
	if len(prog) == 0 || len(prog) > 4096 {
		return fmt.Errorf("filter has %d instructions", len(prog))
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_NO_NEW_PRIVS): %w", err)
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	r, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&fprog)))
	if errno != 0 {
		return fmt.Errorf("seccomp(SET_MODE_FILTER, TSYNC): %w", errno)
	}
	if r != 0 {
		return fmt.Errorf("seccomp(SET_MODE_FILTER, TSYNC): thread %d could not be synchronized", r)
	}
	return nil
}

// Listener is the supervisor's end of a seccomp notification listener.
type Listener struct {
	fd int
}

// NewListener wraps a listener fd (InstallFilter's).
func NewListener(fd int) *Listener { return &Listener{fd: fd} }

// FD returns the listener's file descriptor.
func (l *Listener) FD() int { return l.fd }

// Close closes the listener: every pending and later notified syscall then fails with ENOSYS.
func (l *Listener) Close() error { return unix.Close(l.fd) }

// SyncWakeUp asks the kernel (Linux 6.6, SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP) to wake the
// supervisor thread waiting on the listener on the CPU of the notifying thread, which then sleeps
// until the answer: the two hand the CPU to each other instead of one waking the other across
// CPUs. Older kernels refuse it (the caller ignores that: only speed differs).
func (l *Listener) SyncWakeUp() error {
	// The flags are the ioctl's argument itself, not a pointer to them.
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(l.fd), unix.SECCOMP_IOCTL_NOTIF_SET_FLAGS, unix.SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP); errno != 0 {
		return fmt.Errorf("SECCOMP_IOCTL_NOTIF_SET_FLAGS: %w", errno)
	}
	return nil
}

// Wait blocks until a notification is pending (true) or no task uses the filter any more (false).
func (l *Listener) Wait() (bool, error) {
	fds := []unix.PollFd{{Fd: int32(l.fd), Events: unix.POLLIN}}
	for {
		_, err := unix.Poll(fds, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("poll seccomp listener: %w", err)
		}
		if fds[0].Revents&unix.POLLIN != 0 {
			return true, nil
		}
		// POLLHUP: no task uses the filter any more. POLLERR is not an end: the kernel's poll
		// returns it when it could not take the listener's lock because a signal is pending on
		// this thread (mutex_lock_interruptible in seccomp_notify_poll), which happens when
		// another thread answers or installs a descriptor at that moment and the Go runtime
		// preempts this one with SIGURG. Taking it for the end stopped the serving loop with
		// the program still running (TestAddFDUnderSignals hung so).
		if fds[0].Revents&(unix.POLLHUP|unix.POLLNVAL) != 0 {
			return false, nil
		}
	}
}

// Recv receives one notification into n, which it zeroes first (the kernel refuses a dirty buffer).
// It returns ErrNotifGone when the notification vanished between poll and receive.
func (l *Listener) Recv(n *Notif) error {
	*n = Notif{}
	_, err := l.ioctl("SECCOMP_IOCTL_NOTIF_RECV", unix.SECCOMP_IOCTL_NOTIF_RECV, unsafe.Pointer(n))
	return err
}

// Send answers a notification: r.Val with r.Error 0 is a result, Val -1 with Error -errno an
// error, Flags SECCOMP_USER_NOTIF_FLAG_CONTINUE lets the kernel run the call as the program made
// it (only safe where nothing the program can change after the decision, memory it points to or
// a racing thread, can turn the call into a way around Tor).
func (l *Listener) Send(r *Resp) error {
	_, err := l.ioctl("SECCOMP_IOCTL_NOTIF_SEND", unix.SECCOMP_IOCTL_NOTIF_SEND, unsafe.Pointer(r))
	return err
}

// Valid reports ErrNotifGone unless the notification id is still pending. Call it after every read
// of the program's memory (the thread may have died and its id been reused) and before every write.
func (l *Listener) Valid(id uint64) error {
	_, err := l.ioctl("SECCOMP_IOCTL_NOTIF_ID_VALID", unix.SECCOMP_IOCTL_NOTIF_ID_VALID, unsafe.Pointer(&id))
	return err
}

// AddFD installs srcfd in the traced process (O_CLOEXEC if cloexec) without answering the call,
// and returns the descriptor number it got there. The caller answers with Send (the number, or an
// emulated recvmsg's result once the numbers are in the program's control buffer).
//
// Installing and answering take two ioctls, ADDFD and then SEND, never the atomic
// SECCOMP_ADDFD_FLAG_SEND: that flag marks the notification replied before the ioctl waits for the
// traced thread to install the descriptor, and the wait is interruptible. A signal to our thread
// (the Go runtime preempts with SIGURG) ends the wait, the kernel takes the queued descriptor back
// and restarts the ioctl (SA_RESTART), which then fails with EINPROGRESS, while the traced thread,
// finding the notification replied with nothing to install, returns 0 from socket(): its standard
// input, not a socket (TestAddFDUnderSignals, seen in CI). Blocking every signal on the thread
// for the ioctl (locked to it) is not enough: a group stop (SIGSTOP, Ctrl-Z's SIGTSTP, which
// torsocks does not catch), the cgroup freezer and system suspend wake every thread of the
// process from its interruptible waits whatever its mask, with the same result: under a
// SIGSTOP/SIGCONT storm 1 socket() in 10 to 40 returned 0 that way, none with two ioctls
// (TestAddFDUnderSignals/SIGSTOP). The flag would save one ioctl and one wake-up of the traced
// thread per socket() (measured: 0.6 context switches and 10 µs of supervisor CPU per glibc
// name lookup). A plain ADDFD is safe to restart: an interrupted one either completed (its
// result is returned) or was withdrawn, and the notification is still pending. If the thread is
// killed between the two ioctls, its descriptors go with it.
// EMFILE and ENFILE (errors.Is) mean the program's descriptor table is full.
func (l *Listener) AddFD(id uint64, srcfd int, cloexec bool) (int, error) {
	a := addFD{ID: id, SrcFD: uint32(srcfd)}
	if cloexec {
		a.NewFDFlags = unix.O_CLOEXEC
	}
	r, err := l.ioctl("SECCOMP_IOCTL_NOTIF_ADDFD", unix.SECCOMP_IOCTL_NOTIF_ADDFD, unsafe.Pointer(&a))
	return int(r), err
}

// ioctl runs one listener ioctl, restarting it when a signal interrupts it (each of them either
// completed or did nothing then), and reports ENOENT, the notification is gone (or, for RECV,
// vanished between poll and receive), as ErrNotifGone.
func (l *Listener) ioctl(name string, req uintptr, arg unsafe.Pointer) (uintptr, error) {
	for {
		r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(l.fd), req, uintptr(arg))
		switch errno {
		case 0:
			return r, nil
		case unix.EINTR:
			continue
		case unix.ENOENT:
			return 0, ErrNotifGone
		default:
			return 0, fmt.Errorf("%s: %w", name, errno)
		}
	}
}

// OpenThread opens a pidfd for thread tid. It uses PIDFD_THREAD (Linux 6.9) so the pidfd names the
// thread itself and polls readable when that thread exits; older kernels refuse pidfd_open on a
// non-leader thread, so the fallback opens the thread group leader read from /proc/TID/status.
// The caller must check the notification id afterwards: only then is tid known not to be recycled.
//
// tgid is 0 when the kernel opened the thread itself (the caller reads it with Tgid only when it
// needs it: a /proc read costs as much as the rest of a notification's bookkeeping).
func OpenThread(tid int) (pidfd int, tgid int, err error) {
	fd, err := unix.PidfdOpen(tid, pidfdThread)
	if err == nil {
		return fd, 0, nil
	}
	if err != unix.EINVAL && err != unix.ENOENT {
		return -1, 0, fmt.Errorf("pidfd_open(%d): %w", tid, err)
	}
	tgid, terr := Tgid(tid)
	if terr != nil {
		return -1, 0, terr
	}
	fd, err = unix.PidfdOpen(tgid, 0)
	if err != nil {
		return -1, 0, fmt.Errorf("pidfd_open(%d) for thread %d: %w", tgid, tid, err)
	}
	return fd, tgid, nil
}

// Tgid reads the thread group id (process id) of thread tid from /proc.
func Tgid(tid int) (int, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(tid) + "/status")
	if err != nil {
		return 0, fmt.Errorf("read status of thread %d: %w", tid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Tgid:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				return 0, fmt.Errorf("parse Tgid of thread %d: %w", tid, err)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("no Tgid in /proc/%d/status", tid)
}

// GetFD duplicates the traced process's descriptor fd into the supervisor (close-on-exec). The copy
// shares the open file description: its O_NONBLOCK flag is the program's, so callers never change
// flags on it and never hand it to the Go runtime's poller.
func GetFD(pidfd, fd int) (int, error) {
	c, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		return -1, fmt.Errorf("pidfd_getfd(fd %d): %w", fd, err)
	}
	return c, nil
}
