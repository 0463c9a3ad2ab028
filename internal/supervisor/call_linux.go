package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gotorsocks/torsocks/internal/filter"
	"github.com/gotorsocks/torsocks/internal/seccomp"
)

// call is one notified syscall being served. It is owned by one goroutine at a time.
type call struct {
	s     *Supervisor
	id    uint64
	tid   int
	abi   *filter.ABI
	data  seccomp.Data
	pidfd int // -1 until opened
	tgid  int
	done  bool
	// handedOff: a goroutine started by goCall owns the call now and must answer it.
	handedOff bool
	// lead: the worker serving c still holds the receiver role (see Serve); cleared by whoever
	// hands it over (handOff), the watchdog included, so it is atomic.
	lead atomic.Bool
}

// newCall makes the call for notification n; abi is nil for an unknown architecture.
func (s *Supervisor) newCall(n *seccomp.Notif) *call {
	return &call{s: s, id: n.ID, tid: int(n.Pid), abi: filter.Lookup(n.Data.Arch), data: n.Data, pidfd: -1}
}

// arg returns argument i as the ABI passes it (32-bit ABIs: the low 32 bits).
func (c *call) arg(i int) uint64 {
	v := c.data.Args[i]
	if c.abi.PtrSize == 4 {
		v &= 0xffffffff
	}
	return v
}

// fdArg returns argument i as a file descriptor (an int in every ABI).
func (c *call) fdArg(i int) int { return int(int32(uint32(c.data.Args[i]))) }

// open opens a pidfd for the calling thread and checks that the notification is still valid, so
// the pidfd is known to name the thread that made the call and not a recycled id.
func (c *call) open() error {
	if c.pidfd >= 0 {
		return nil
	}
	fd, tgid, err := seccomp.OpenThread(c.tid)
	if err != nil {
		return err
	}
	c.pidfd, c.tgid = fd, tgid
	return c.s.l.Valid(c.id)
}

// getfd copies the program's descriptor fd into the supervisor.
func (c *call) getfd(fd int) (int, error) {
	if err := c.open(); err != nil {
		return -1, err
	}
	return seccomp.GetFD(c.pidfd, fd)
}

// read reads n bytes of the program's memory at addr and then checks the notification is still
// valid (otherwise the bytes may belong to another process that reused the thread id).
func (c *call) read(addr uint64, n int) ([]byte, error) {
	if addr == 0 && n > 0 {
		return nil, unix.EFAULT
	}
	b := make([]byte, n)
	if err := seccomp.ReadMem(c.tid, addr, b); err != nil {
		return nil, err
	}
	if err := c.s.l.Valid(c.id); err != nil {
		return nil, err
	}
	return b, nil
}

// write writes b at addr of the program, checking validity right before.
func (c *call) write(addr uint64, b []byte) error {
	if addr == 0 {
		return unix.EFAULT
	}
	if err := c.s.l.Valid(c.id); err != nil {
		return err
	}
	return seccomp.WriteMem(c.tid, addr, b)
}

// readArgs reads the i386 socketcall argument array (n unsigned longs of 4 bytes).
func (c *call) readArgs(addr uint64, n int) ([]uint64, error) {
	b, err := c.read(addr, 4*n)
	if err != nil {
		return nil, err
	}
	out := make([]uint64, n)
	for i := range out {
		out[i] = uint64(uint32(b[4*i]) | uint32(b[4*i+1])<<8 | uint32(b[4*i+2])<<16 | uint32(b[4*i+3])<<24)
	}
	return out, nil
}

func (c *call) finish(err error) {
	c.done = true
	if c.pidfd >= 0 {
		unix.Close(c.pidfd)
		c.pidfd = -1
	}
	if err != nil && !errors.Is(err, seccomp.ErrNotifGone) {
		c.s.log.Error(fmt.Sprintf("answer syscall of pid %d: %v", c.tid, err))
	}
}

// ok answers the call with a result.
func (c *call) ok(val int64) { c.finish(c.s.l.Return(c.id, val)) }

// fail answers the call with an error.
func (c *call) fail(errno unix.Errno) { c.finish(c.s.l.Fail(c.id, errno)) }

// cont lets the kernel run the call; see seccomp.Listener.Continue for when that is allowed.
func (c *call) cont() { c.finish(c.s.l.Continue(c.id)) }

// refuse logs reason at warning level on behalf of the program and fails the call.
func (c *call) refuse(errno unix.Errno, reason string) {
	c.logAt(slog.LevelWarn, reason)
	c.fail(errno)
}

// logAt logs msg on behalf of the program's process, attributing the line (torsocks' "in func()
// at file:line") to the handler that decided, not to this helper or its callers in this file.
func (c *call) logAt(level slog.Level, msg string) {
	ctx := context.Background()
	if !c.s.log.Enabled(ctx, level) {
		return
	}
	var pcs [8]uintptr
	n := runtime.Callers(2, pcs[:])
	pc := pcs[0]
	frames := runtime.CallersFrames(pcs[:n])
	for {
		f, more := frames.Next()
		if !strings.HasSuffix(f.File, "/call_linux.go") && !strings.HasSuffix(f.File, "/copy_linux.go") {
			pc = f.PC
			break
		}
		if !more {
			break
		}
	}
	r := slog.NewRecord(time.Now(), level, msg, pc)
	r.AddAttrs(slog.Int("pid", c.pid()))
	c.s.log.Handler().Handle(ctx, r)
}

// failErr answers with the errno that best describes err (fail closed: EPERM when unknown), unless
// the notification is gone. Unexpected errors are logged.
func (c *call) failErr(what string, err error) {
	if errors.Is(err, seccomp.ErrNotifGone) {
		c.finish(nil)
		return
	}
	var errno unix.Errno
	if !errors.As(err, &errno) {
		errno = unix.EPERM
	}
	switch errno {
	case unix.EBADF, unix.ENOTSOCK, unix.EFAULT, unix.EINVAL:
		c.logAt(slog.LevelDebug, fmt.Sprintf("%s: %v", what, err))
	default:
		c.logAt(slog.LevelWarn, fmt.Sprintf("%s refused: %v", what, err))
	}
	c.fail(errno)
}

// pid is the process that made the call (thread group id), read from /proc on first use; the
// thread id if that fails (the thread is gone).
func (c *call) pid() int {
	if c.tgid == 0 {
		if tgid, err := seccomp.Tgid(c.tid); err == nil {
			c.tgid = tgid
		} else {
			c.tgid = c.tid
		}
	}
	return c.tgid
}
