// Package launch starts the traced program under the seccomp filter, with the filter's
// notification listener in the supervisor's hands before the program runs a single instruction.
//
// Everything the program must start with (no capabilities to reconfigure the network, no new
// privileges, a Landlock domain, the filter) belongs to a thread, not to a process: the kernel
// keeps credentials, no_new_privs, Landlock domains and seccomp filters per task, and a child
// starts with those of the thread that cloned it. So one OS thread of the supervisor is given
// them and starts the program; no second torsocks process (and no second Go runtime) is needed:
//
//	supervisor goroutine                      its own locked OS thread (never returned to Go)
//	   │  Start ─────────────────────────────▶ LockOSThread
//	   │                                        drop capabilities (unless KeepCapabilities)
//	   │                                        prctl(NO_NEW_PRIVS)
//	   │                                        Landlock domain (landlock_linux.go)
//	   │                                        seccomp(SET_MODE_FILTER, NEW_LISTENER|WAIT_KILLABLE_RECV)
//	   │                                          → listener fd (close-on-exec: never the program's)
//	   │                                        fork+exec PATH (syscall.ForkExec): the child inherits
//	   │                                          this thread's filter, domain and credentials
//	   │  ◀──────────────────── Child{pid, listener}; the goroutine ends still locked, and the Go
//	   │                                        runtime ends the thread with it
//	   │  serve notifications (the program's first notified call waits in the kernel until then)
//	   ▼
//
// Why that thread cannot hurt the supervisor: the Go runtime never runs another goroutine on a
// locked thread and never clones new threads from one (it asks its template thread), so the filter
// reaches only this thread and the program; between loading the filter and its end the thread
// makes only unnotified calls (clone, the child's dup2/execve, read of syscall.ForkExec's status
// pipe, wait), so it cannot wait on its own supervisor.
package launch

import (
	"fmt"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/gotorsocks/torsocks/internal/seccomp"
)

// The thread that starts the program must be one the Go runtime ends when its goroutine does: a
// locked goroutine that exits on the main thread parks that thread forever instead, and the
// filter it carries would keep the listener from ever reporting that the program's tree is gone.
// Pinning the main goroutine to the main thread keeps every other goroutine off it.
func init() { runtime.LockOSThread() }

// Options are what the program starts with besides the filter.
type Options struct {
	// KeepCapabilities leaves the program its capabilities; otherwise DroppedCapabilities go.
	KeepCapabilities bool
	// Unconfined, when set, is called on the starting thread before the program's fork if the
	// program gets no Landlock domain: nothing then keeps it from attaching to processes of its
	// user outside its tree (see landlock_linux.go), so what must be confined before the program
	// runs a single instruction (the non-root sandbox's socket factory) is waited for here.
	Unconfined func()
	// BeforeFork, when set, is called on the starting thread just before the program's fork, once
	// the filter is loaded; the function it returns is called right after the fork with the
	// program's pid (0 if it could not be started). The signal forwarder waits there until its
	// signals are enabled and holds them back until it knows the pid.
	BeforeFork func() (started func(pid int))
}

// Child is the started program.
type Child struct {
	Pid      int
	Listener *seccomp.Listener
	Landlock string // the program's Landlock domain: "none", "tcp-connect" or "ptrace-scope-only"
}

// Start runs path (argv, env) under the filter prog. The program inherits the caller's standard
// descriptors and every other descriptor without close-on-exec (3<file stays 3).
func Start(path string, argv, env []string, prog []unix.SockFilter, opts Options) (*Child, error) {
	type result struct {
		child *Child
		err   error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		// Never unlocked: the thread carries the program's filter, domain and credentials, and
		// ends with this goroutine.
		c, err := startOnThisThread(path, argv, env, prog, opts)
		done <- result{c, err}
	}()
	r := <-done
	return r.child, r.err
}

// startOnThisThread gives the calling (locked) thread what the program must start with, loads the
// filter and starts the program from this thread.
func startOnThisThread(path string, argv, env []string, prog []unix.SockFilter, opts Options) (*Child, error) {
	if !opts.KeepCapabilities {
		if err := dropCapabilities(); err != nil {
			return nil, fmt.Errorf("drop capabilities: %w", err)
		}
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return nil, fmt.Errorf("prctl(PR_SET_NO_NEW_PRIVS): %w", err)
	}
	landlock := restrictSelf()
	if landlock == landlockNone && opts.Unconfined != nil {
		opts.Unconfined()
	}
	lfd, err := seccomp.InstallFilter(prog)
	if err != nil {
		return nil, err
	}
	l := seccomp.NewListener(lfd)
	l.SyncWakeUp() // Linux 6.6; without it, only the round trip is slower
	started := func(int) {}
	if opts.BeforeFork != nil {
		started = opts.BeforeFork()
	}
	// syscall.ForkExec, not os.StartProcess: the supervisor's reaper waits for the program by pid,
	// and os.StartProcess first probes pidfd support with a throwaway vfork (once per process:
	// pidfd_open, waitid, pidfd_send_signal, a clone and its wait, ~0.15 ms here) for a pidfd
	// that would be released at once.
	pid, err := syscall.ForkExec(path, argv, &syscall.ProcAttr{Env: env, Files: []uintptr{0, 1, 2}})
	if err != nil {
		started(0)
		l.Close()
		return nil, fmt.Errorf("cannot execute %s: %v", path, err)
	}
	started(pid)
	return &Child{Pid: pid, Listener: l, Landlock: landlock}, nil
}
