// Package launch starts the traced program: it re-executes the torsocks binary as a helper that
// loads the seccomp filter and then becomes the program, and hands the filter's notification
// listener to the supervisor before the program runs a single instruction.
//
// The hand-off, over a SOCK_SEQPACKET socketpair that the helper inherits (not at a fixed fd
// number, so fds the user passes to the program, like 3<file, stay where they are):
//
//	supervisor                                   helper (torsocks --internal-helper FD FLAGS PATH ARGV...)
//	   │  socketpair(sup, hlp); hlp inheritable
//	   │  fork+exec helper ───────────────────────▶ LockOSThread (filter and exec on one thread)
//	   │  send: BPF program ──────────────────────▶ read BPF program
//	   │                                            drop capabilities (unless FLAGS keeps them)
//	   │                                            prctl(NO_NEW_PRIVS)
//	   │                                            Landlock domain (landlock_linux.go)
//	   │                                            seccomp(SET_MODE_FILTER, NEW_LISTENER|WAIT_KILLABLE_RECV)
//	   │  fdpass.Receive: Landlock mode ◀────────── fdpass.Send (or fdpass.SendError: errno and
//	   │           + listener (SCM_RIGHTS)          reason, then exit 1)
//	   │                                            close(listener)  (the program must never hold it)
//	   │  send: 'G' ──────────────────────────────▶ read ack (EOF: supervisor gone, exit 1)
//	   │  serve notifications                       execve(PATH, ARGV) on the same thread
//	   ▼                                            = the program, filtered, with all its descendants
//
// After the filter is loaded the helper makes only sendmsg on a unix socket, read, close and
// execve: none of them is notified, so it cannot deadlock waiting for its own supervisor.
package launch

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/gotorsocks/torsocks/internal/fdpass"
	"github.com/gotorsocks/torsocks/internal/seccomp"
)

// HelperArg is the first argument that makes the torsocks binary act as the helper.
const HelperArg = "--internal-helper"

// Options are what the helper does to itself before it becomes the program.
type Options struct {
	// KeepCapabilities leaves the program its capabilities; otherwise DroppedCapabilities go.
	KeepCapabilities bool
	// BeforeExec, when set, runs once the filter is loaded, before the helper is let go to
	// execute the program (the helper's start overlaps what it waits for).
	BeforeExec func()
}

// Child is the started program.
type Child struct {
	Pid      int
	Listener *seccomp.Listener
	Landlock string // the program's Landlock domain: "none", "tcp-connect" or "ptrace-scope-only"
}

// helper flags (the argument after the hand-off descriptor).
const (
	flagDropCaps = "-"
	flagKeepCaps = "k"
)

// Start runs path (argv, env) under the filter prog and returns once the program is about to exec.
// self is the torsocks binary (normally /proc/self/exe).
func Start(self, path string, argv, env []string, prog []unix.SockFilter, opts Options) (*Child, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socketpair: %w", err)
	}
	sup, hlp := fds[0], fds[1]
	defer unix.Close(sup)
	// The helper's end must survive exec of the helper (but not the helper's exec of the program:
	// the helper closes it). Clearing close-on-exec here is safe because nothing else in the
	// supervisor starts processes concurrently with Start.
	if _, err := unix.FcntlInt(uintptr(hlp), unix.F_SETFD, 0); err != nil {
		unix.Close(hlp)
		return nil, fmt.Errorf("clear close-on-exec on hand-off socket: %w", err)
	}
	flags := flagDropCaps
	if opts.KeepCapabilities {
		flags = flagKeepCaps
	}
	args := append([]string{"torsocks", HelperArg, strconv.Itoa(hlp), flags, path}, argv...)
	proc, err := os.StartProcess(self, args, &os.ProcAttr{
		Env:   env,
		Files: []*os.File{os.Stdin, os.Stdout, os.Stderr},
	})
	unix.Close(hlp)
	if err != nil {
		return nil, fmt.Errorf("start helper %s: %w", self, err)
	}
	fail := func(err error) (*Child, error) {
		proc.Kill()
		var ws unix.WaitStatus
		unix.Wait4(proc.Pid, &ws, 0, nil)
		return nil, err
	}
	if _, err := unix.Write(sup, filterBytes(prog)); err != nil {
		return fail(fmt.Errorf("send filter to helper: %w", err))
	}
	landlock, lfd, err := fdpass.Receive(sup, 512)
	switch {
	case err == io.EOF:
		return fail(errors.New("helper exited before loading the filter"))
	case errors.As(err, new(*fdpass.Error)):
		return fail(err) // the helper's reason
	case err != nil:
		return fail(fmt.Errorf("receive seccomp listener from helper: %w", err))
	case lfd < 0:
		return fail(errors.New("helper sent no listener"))
	}
	l := seccomp.NewListener(lfd)
	if opts.BeforeExec != nil {
		opts.BeforeExec()
	}
	if _, err := unix.Write(sup, []byte{'G'}); err != nil {
		l.Close()
		return fail(fmt.Errorf("release helper: %w", err))
	}
	return &Child{Pid: proc.Pid, Listener: l, Landlock: string(landlock)}, nil
}

func filterBytes(prog []unix.SockFilter) []byte {
	if len(prog) == 0 {
		return nil
	}
	n := len(prog) * int(unsafe.Sizeof(prog[0]))
	return unsafe.Slice((*byte)(unsafe.Pointer(&prog[0])), n)
}

// RunHelper is the helper's whole life; args are what follows HelperArg. It never returns: it
// becomes the program or exits with status 1 after saying why on stderr.
func RunHelper(args []string) {
	runtime.LockOSThread()
	if len(args) < 3 || (args[1] != flagDropCaps && args[1] != flagKeepCaps) {
		die("internal helper: bad arguments")
	}
	fd, err := strconv.Atoi(args[0])
	if err != nil || fd < 3 {
		die("internal helper: bad hand-off descriptor")
	}
	unix.CloseOnExec(fd)
	keepCaps, path, argv := args[1] == flagKeepCaps, args[2], args[3:]

	buf := make([]byte, 8*4096)
	n, err := unix.Read(fd, buf)
	if err != nil || n == 0 || n%8 != 0 {
		die(fmt.Sprintf("internal helper: read filter: n=%d err=%v", n, err))
	}
	prog := unsafe.Slice((*unix.SockFilter)(unsafe.Pointer(&buf[0])), n/8)

	report := func(err error) {
		fdpass.SendError(fd, err)
		os.Exit(1)
	}
	if !keepCaps {
		if err := dropCapabilities(); err != nil {
			report(fmt.Errorf("drop capabilities: %w", err))
		}
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		report(fmt.Errorf("prctl(PR_SET_NO_NEW_PRIVS): %w", err))
	}
	landlock := restrictSelf()
	lfd, err := seccomp.InstallFilter(prog)
	if err != nil {
		report(err)
	}
	// From here on, only unnotified syscalls: sendmsg on a unix socket, read, close, execve.
	if err := fdpass.Send(fd, []byte(landlock), lfd); err != nil {
		os.Exit(1)
	}
	unix.Close(lfd)
	ack := make([]byte, 1)
	if n, err := unix.Read(fd, ack); err != nil || n != 1 || ack[0] != 'G' {
		os.Exit(1)
	}
	unix.Close(fd)
	err = unix.Exec(path, argv, os.Environ())
	die(fmt.Sprintf("torsocks: cannot execute %s: %v", path, err))
}

func die(msg string) {
	os.Stderr.WriteString(msg + "\n")
	os.Exit(1)
}
