package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gotorsocks/torsocks/internal/filter"
	"github.com/gotorsocks/torsocks/internal/seccomp"
)

// The lifecycle of one notified call, in order:
//
//  1. worker (supervisor_linux.go) receives it and lends it the receiver role;
//  2. serve picks its handler (dispatch) and runs it;
//  3. the handler decides, carries the call out on the program's behalf if it must, and returns
//     what the program gets: a reply (a value, CONTINUE, a descriptor to install) or an error,
//     a *callError made where the decision was made (refused, failed, fromErr, proxyFailed) so
//     that its log line names the deciding function;
//  4. answer, the only function that answers the kernel, answers it exactly once and logs the
//     refusal; a handler that returns neither a reply nor an error is caught there.

// call is one notified syscall being served, by the worker that received it.
type call struct {
	s        *Supervisor
	id       uint64
	tid      int
	abi      *filter.ABI
	data     seccomp.Data
	lease    *lease // the receiver role lent to this call (nil in tests that serve directly)
	pidfd    int    // -1 until opened
	tgid     int
	answered bool
	// unchecked: the pidfd was opened by openLater and no validity check has followed yet, so
	// it is not known to name the calling thread (see openLater).
	unchecked bool
	// keep: pidfd is a thread pidfd of the real kernel, which close gives to pidfdCache;
	// cached: it came from there, and no descriptor was copied through it yet (copyFD).
	keep, cached bool

	connectFirst bool // a connect folded into a send (MSG_FASTOPEN): never asynchronous
	kept         bool // connectAsync kept the copy of the program's socket: connect must not close it
}

// newCall makes the call for notification n; abi is nil for an unknown architecture.
func (s *Supervisor) newCall(n *seccomp.Notif, l *lease) *call {
	return &call{s: s, id: n.ID, tid: int(n.Pid), abi: filter.Lookup(n.Data.Arch), data: n.Data, lease: l, pidfd: -1}
}

// serve runs the call's handler and answers the kernel.
func (s *Supervisor) serve(c *call) {
	h := s.dispatch
	if s.handler != nil {
		h = s.handler
	}
	r, err := h(c)
	s.answer(c, r, err)
}

// reply is what a call that succeeded answers: a value, CONTINUE, or a descriptor installed.
type reply struct {
	kind    replyKind
	val     int64
	fd      int // replyInstall: the supervisor's descriptor, closed once installed
	cloexec bool
}

type replyKind uint8

const (
	replyNone     replyKind = iota // no answer decided: a handler bug, caught by answer
	replyValue                     // the syscall returns val
	replyContinue                  // the kernel runs the syscall as the program made it
	replyInstall                   // fd is installed in the program; the syscall returns its number
)

func value(v int64) reply { return reply{kind: replyValue, val: v} }

// letRun lets the kernel run the call. Only where nothing the program can change after the
// decision (memory it points to, a racing thread) can turn the call into a way around Tor; the
// handler says why in a comment.
func letRun() reply { return reply{kind: replyContinue} }

// install answers with fd installed in the program (O_CLOEXEC if cloexec): answer owns fd.
func install(fd int, cloexec bool) reply { return reply{kind: replyInstall, fd: fd, cloexec: cloexec} }

// callError is how a call fails: the errno the program gets and, unless msg is empty, one log
// line at level, attributed to the function that decided (pc).
type callError struct {
	errno unix.Errno
	level slog.Level
	msg   string
	pc    uintptr
}

func (e *callError) Error() string {
	if e.msg != "" {
		return e.msg
	}
	return e.errno.Error()
}

func (e *callError) Unwrap() error { return e.errno }

// caller is the PC of the function that called the function calling caller.
func caller() uintptr {
	var pcs [1]uintptr
	runtime.Callers(3, pcs[:])
	return pcs[0]
}

// refused fails the call with errno and a warning saying why.
func refused(errno unix.Errno, msg string) error {
	return &callError{errno: errno, level: slog.LevelWarn, msg: msg, pc: caller()}
}

// failed fails the call with err's errno (EPERM if it has none), without a line: for errors the
// kernel itself would have returned. A *callError or a notification gone stays as it is.
func failed(err error) error {
	var ce *callError
	if errors.As(err, &ce) || isGone(err) {
		return err
	}
	return &callError{errno: errnoOf(err)}
}

// fromErr fails the call with the errno that best describes err (fail closed: EPERM when
// unknown), logging it: at debug level for the errors of a program that passed a bad argument,
// as a warning otherwise. A notification gone stays as it is.
func fromErr(what string, err error) error {
	if isGone(err) {
		return err
	}
	errno := errnoOf(err)
	switch errno {
	case unix.EBADF, unix.ENOTSOCK, unix.EFAULT, unix.EINVAL:
		return &callError{errno: errno, level: slog.LevelDebug, msg: fmt.Sprintf("%s: %v", what, err), pc: caller()}
	}
	return &callError{errno: errno, level: slog.LevelWarn, msg: fmt.Sprintf("%s refused: %v", what, err), pc: caller()}
}

// errTaskGone: the calling thread exited while its call was served.
var errTaskGone = errors.New("the calling thread exited")

// isGone reports an error after which the call needs no answer: its notification is gone, or the
// thread that made it.
func isGone(err error) bool {
	return errors.Is(err, seccomp.ErrNotifGone) || errors.Is(err, errTaskGone)
}

// errnoOf is the errno in err, EPERM if it has none.
func errnoOf(err error) unix.Errno {
	var errno unix.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return unix.EPERM
}

// answer answers the kernel for c, exactly once: with the error if err is set, else with r.
func (s *Supervisor) answer(c *call, r reply, err error) {
	if c.answered {
		s.log.Error(fmt.Sprintf("internal error: syscall %d of pid %d answered twice", c.data.Nr, c.tid))
		return
	}
	c.answered = true
	defer c.close()
	resp := seccomp.Resp{ID: c.id}
	if err == nil {
		switch r.kind {
		case replyValue:
			resp.Val = r.val
		case replyContinue:
			resp.Flags = unix.SECCOMP_USER_NOTIF_FLAG_CONTINUE
		case replyInstall:
			// Two steps, ADDFD then SEND, never the atomic SECCOMP_ADDFD_FLAG_SEND (see
			// seccomp.Listener.AddFD).
			fd, aerr := s.k.AddFD(c.id, r.fd, r.cloexec)
			unix.Close(r.fd)
			resp.Val, err = int64(fd), fromErr("socket", aerr)
			if aerr == nil {
				err = nil
			}
		default:
			// Every path must answer; a handler that forgot is a bug, and the safe answer is
			// an error.
			s.log.Error(fmt.Sprintf("internal error: syscall %d of pid %d left unanswered", c.data.Nr, c.tid))
			err = &callError{errno: unix.EPERM}
		}
	} else if r.kind == replyInstall {
		unix.Close(r.fd)
	}
	if err != nil {
		if isGone(err) {
			return // nobody waits for the answer
		}
		var ce *callError
		if !errors.As(err, &ce) {
			ce = &callError{errno: errnoOf(err)}
		}
		if ce.msg != "" {
			c.log(ce.level, ce.msg, ce.pc)
		}
		resp.Val, resp.Error, resp.Flags = -1, -int32(ce.errno), 0
	}
	if err := s.k.Send(&resp); err != nil && !isGone(err) {
		s.log.Error(fmt.Sprintf("answer syscall of pid %d: %v", c.tid, err))
	}
}

// close closes what the call opened.
func (c *call) close() {
	if c.pidfd >= 0 {
		if c.keep {
			c.s.pidfds.give(c.tid, c.pidfd)
		} else {
			unix.Close(c.pidfd)
		}
		c.pidfd = -1
	}
}

// log logs msg on behalf of the program's process, attributed (torsocks' "in func() at
// file:line") to pc, the function that decided.
func (c *call) log(level slog.Level, msg string, pc uintptr) {
	ctx := context.Background()
	if !c.s.log.Enabled(ctx, level) {
		return
	}
	r := slog.NewRecord(time.Now(), level, msg, pc)
	r.AddAttrs(slog.Int("pid", c.pid()))
	c.s.log.Handler().Handle(ctx, r)
}

// logf is log attributed to its caller, for lines that are not a refusal.
func (c *call) logf(level slog.Level, format string, args ...any) {
	if c.s.log.Enabled(context.Background(), level) {
		c.log(level, fmt.Sprintf(format, args...), caller())
	}
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
	if c.pidfd < 0 {
		if err := c.openLater(); err != nil {
			return err
		}
	}
	if !c.unchecked {
		return nil
	}
	if err := c.s.k.Valid(c.id); err != nil {
		return err
	}
	c.unchecked = false
	return nil
}

// openLater opens a pidfd for the calling thread and leaves the validity check to the next
// c.read or c.writeV: a notification still valid then means the thread has lived since it was
// received, so the thread id named it when the pidfd was opened, and what was copied through
// the pidfd is the thread's. One SECCOMP_IOCTL_NOTIF_ID_VALID less. Only for a handler that
// acts on nothing it took through the pidfd (getfdLater) before that read or write, and logs
// nothing about it (a recycled id would name another process's descriptor): connect, which
// reads the address next.
//
// The thread's pidfd kept from its previous call (pidfdCache, which says why that is as good)
// is taken instead of a new one when there is one.
func (c *call) openLater() error {
	if fd := c.s.pidfds.take(c.tid); fd >= 0 {
		c.pidfd, c.unchecked, c.keep, c.cached = fd, true, true, true
		return nil
	}
	return c.openFresh()
}

// openFresh opens a new pidfd for the calling thread (unchecked, as openLater).
func (c *call) openFresh() error {
	fd, tgid, err := c.s.tr.OpenThread(c.tid)
	if err != nil {
		return err
	}
	c.pidfd, c.tgid, c.unchecked = fd, tgid, true
	// seccomp.OpenThread says tgid 0 when it opened the thread itself (PIDFD_THREAD); its
	// fallback names the process, which pidfdCache must never keep.
	_, real := c.s.tr.(procTracee)
	c.keep, c.cached = real && tgid == 0, false
	return nil
}

// getfd copies the program's descriptor fd into the supervisor.
func (c *call) getfd(fd int) (int, error) {
	if err := c.open(); err != nil {
		return -1, err
	}
	return c.copyFD(fd, true)
}

// getfdLater is getfd with the check left to the next read or write (openLater).
func (c *call) getfdLater(fd int) (int, error) {
	if c.pidfd < 0 {
		if err := c.openLater(); err != nil {
			return -1, err
		}
	}
	return c.copyFD(fd, false)
}

// copyFD copies descriptor fd through the call's pidfd. A cached pidfd whose thread is gone
// (ESRCH: the calling thread has its id now) is replaced by a fresh one, checked before the copy
// if checked says the caller had checked the old one (getfd), or left unchecked (getfdLater).
func (c *call) copyFD(fd int, checked bool) (int, error) {
	cp, err := c.s.tr.GetFD(c.pidfd, fd)
	if err == nil || !c.cached || !isStale(err) {
		c.cached = false
		return cp, err
	}
	unix.Close(c.pidfd)
	c.pidfd = -1
	if err := c.openFresh(); err != nil {
		return -1, err
	}
	if checked {
		if err := c.open(); err != nil { // the check again, for the fresh pidfd
			return -1, err
		}
	}
	return c.s.tr.GetFD(c.pidfd, fd)
}

// sock copies the program's socket fd and asks the copy what it is (the copy is the only basis
// for a decision); the caller closes cp.
func (c *call) sock(fd int) (cp int, si sockInfo, err error) { return c.sockFor(fd, false) }

// sockFor is sock; forConnect as for readSockInfo, and the copy is taken by getfdLater: the
// caller reads the program's memory (c.read) before it acts on cp or logs what si says.
func (c *call) sockFor(fd int, forConnect bool) (cp int, si sockInfo, err error) {
	if forConnect {
		cp, err = c.getfdLater(fd)
	} else {
		cp, err = c.getfd(fd)
	}
	if err != nil {
		return -1, si, err
	}
	// One getsockopt: a socket the supervisor made in the sandbox itself is known by its cookie
	// (sockCache, which says why that is safe); the others are asked the rest.
	cookie, err := unix.GetsockoptUint64(cp, unix.SOL_SOCKET, unix.SO_COOKIE)
	if err != nil {
		unix.Close(cp)
		return -1, si, fmt.Errorf("SO_COOKIE: %w", err)
	}
	if known, ok := c.s.socks.get(cookie); ok {
		return cp, known, nil
	}
	if si, err = readSockInfo(cp, forConnect, cookie); err != nil {
		unix.Close(cp)
		return -1, si, err
	}
	return cp, si, nil
}

// read reads n bytes of the program's memory at addr and then checks the notification is still
// valid (otherwise the bytes may belong to another process that reused the thread id).
func (c *call) read(addr uint64, n int) ([]byte, error) {
	if addr == 0 && n > 0 {
		return nil, unix.EFAULT
	}
	b := make([]byte, n)
	if err := c.s.tr.ReadMem(c.tid, addr, b); err != nil {
		return nil, err
	}
	if err := c.s.k.Valid(c.id); err != nil {
		return nil, err
	}
	c.unchecked = false // the pidfd, if opened, names the thread (openLater)
	return b, nil
}

// write writes b at addr of the program, checking validity right before.
func (c *call) write(addr uint64, b []byte) error {
	if addr == 0 {
		return unix.EFAULT
	}
	return c.writeV([]seccomp.Seg{{Addr: addr, B: b}})
}

// writeV writes every segment into the program's memory, checking validity right before.
func (c *call) writeV(segs []seccomp.Seg) error {
	if err := c.s.k.Valid(c.id); err != nil {
		return err
	}
	c.unchecked = false // the pidfd, if opened, names the thread (openLater)
	return c.s.tr.WriteMem(c.tid, segs)
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

// pid is the process that made the call (thread group id), read on first use; the thread id if
// that fails (the thread is gone).
func (c *call) pid() int {
	if c.tgid == 0 {
		if tgid, err := c.s.tr.Tgid(c.tid); err == nil {
			c.tgid = tgid
		} else {
			c.tgid = c.tid
		}
	}
	return c.tgid
}
