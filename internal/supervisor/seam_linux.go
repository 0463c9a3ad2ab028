package supervisor

import (
	"os"
	"strconv"
	"strings"

	"github.com/gotorsocks/torsocks/internal/seccomp"
)

// The supervisor touches the kernel and the traced program only through the two small interfaces
// below. The real ones are a *seccomp.Listener and the program's processes (procTracee); the fakes
// in internal/supervisor/supervisortest let the worker loop, the receiver hand-over, the watchdog,
// errno mapping and IsolatePID run in-process, without root, in milliseconds.

// Kernel is the seccomp notification listener: the kernel side of every call.
type Kernel interface {
	// FD is polled (POLLIN) by a call that waits while it holds the receiver role, to hand the
	// role over as soon as another notification is pending.
	FD() int
	// Wait blocks until a notification is pending (true) or no task uses the filter any more
	// (false).
	Wait() (bool, error)
	// Recv receives one notification (seccomp.ErrNotifGone: it vanished since Wait).
	Recv(n *seccomp.Notif) error
	// Send answers a notification; seccomp.ErrNotifGone if it is no longer pending.
	Send(r *seccomp.Resp) error
	// AddFD installs a copy of srcfd in the calling process without answering.
	AddFD(id uint64, srcfd int, cloexec bool) (int, error)
	// Valid reports seccomp.ErrNotifGone unless the notification is still pending.
	Valid(id uint64) error
}

// Tracee is the program side: its threads, descriptors and memory. Reads are followed by a
// Kernel.Valid check and writes preceded by one (call.read, call.writeV): only then are they known
// to concern the thread that made the call and not one that reused its id.
type Tracee interface {
	// OpenThread opens a pidfd for thread tid: polled readable when the thread exits, and the
	// handle GetFD takes descriptors through. tgid is 0 if the kernel did not say.
	OpenThread(tid int) (pidfd, tgid int, err error)
	// Tgid is the process (thread group) of thread tid.
	Tgid(tid int) (int, error)
	// GetFD copies descriptor fd of the process of pidfd into the supervisor (pidfd_getfd).
	GetFD(pidfd, fd int) (int, error)
	// ReadMem reads len(b) bytes at addr of thread tid (short: EFAULT).
	ReadMem(tid int, addr uint64, b []byte) error
	// WriteMem writes every segment into thread tid's memory, in order.
	WriteMem(tid int, segs []seccomp.Seg) error
	// Started names the life of process pid (its start time), so a recycled pid is told from the
	// process that had it before; "" if it is gone.
	Started(pid int) string
}

// procTracee is the real program: pidfds, pidfd_getfd, process_vm_readv/writev and /proc.
type procTracee struct{}

func (procTracee) OpenThread(tid int) (int, int, error)         { return seccomp.OpenThread(tid) }
func (procTracee) Tgid(tid int) (int, error)                    { return seccomp.Tgid(tid) }
func (procTracee) GetFD(pidfd, fd int) (int, error)             { return seccomp.GetFD(pidfd, fd) }
func (procTracee) ReadMem(tid int, addr uint64, b []byte) error { return seccomp.ReadMem(tid, addr, b) }
func (procTracee) WriteMem(tid int, segs []seccomp.Seg) error   { return seccomp.WriteMemV(tid, segs) }
func (procTracee) Started(pid int) string                       { return processStart(pid) }

// processStart returns field 22 of /proc/PID/stat (start time in clock ticks), "" if unreadable.
func processStart(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 {
		f := strings.Fields(s[i+1:])
		if len(f) > 19 {
			return f[19]
		}
	}
	return ""
}
