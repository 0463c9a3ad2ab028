package run

import (
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// reaper receives the signals torsocks gets, for its whole life: it forwards them to the program
// once the program exists, and reaps every child (the program and re-parented orphans).
//
// Enabling a signal (signal.Notify) is a round trip to the Go runtime's signal-mask thread, about
// 60 µs each on a loaded 2-core VM, so enabling the 13 signals took ~0.8 ms of start-up. They are
// enabled from the start of Main on a goroutine of their own (startReaper), while torsocks reads
// its configuration and checks what it refuses, and the program is not started before that has
// returned (beforeFork). Until the program exists, a signal gets what Go's runtime gives it when
// it is not enabled, so torsocks behaves as before: SIGHUP, SIGINT, SIGTERM and SIGQUIT end it
// (a Ctrl-C during a long Tor bootstrap still works), the others are dropped. The fork of the
// program happens under mu, so a signal received meanwhile waits for its pid and is forwarded.
type reaper struct {
	sigs  chan os.Signal
	ready chan struct{} // closed once every signal torsocks forwards is enabled

	mu    sync.Mutex   // guards log, child and gone; held across the program's fork (beforeFork)
	log   *slog.Logger // the session's, from beforeFork on
	child int          // the program's pid; 0 before it is started
	gone  bool         // the program has been reaped: its pid may be another process's now

	statusMu sync.Mutex // guards status
	status   unix.WaitStatus
	once     sync.Once
	done     chan struct{} // closed when the program has been reaped (status is set)
}

// startReaper enables the signals torsocks forwards (and SIGCHLD) in the background and starts
// receiving them.
func startReaper() *reaper {
	r := &reaper{sigs: make(chan os.Signal, 32), ready: make(chan struct{}), done: make(chan struct{})}
	go func() {
		// One call: os/signal takes its lock once for all of them.
		signal.Notify(r.sigs, append(forwarded(), unix.SIGCHLD)...)
		close(r.ready)
		r.loop()
	}()
	return r
}

// beforeFork is called on the thread that starts the program, just before its fork: it waits
// until the signals are enabled and holds the signals back until started gives the pid (0: the
// program could not be started).
func (r *reaper) beforeFork(log *slog.Logger) (started func(pid int)) {
	<-r.ready
	r.mu.Lock()
	r.log = log
	return func(pid int) {
		r.child = pid
		r.mu.Unlock()
	}
}

func (r *reaper) loop() {
	for sig := range r.sigs {
		s, ok := sig.(syscall.Signal)
		if !ok {
			continue
		}
		r.mu.Lock()
		log, child, gone := r.log, r.child, r.gone
		if child == 0 || gone {
			// No program to forward to (not started yet, or already reaped): what Go's runtime
			// does with a signal torsocks has not enabled, holding mu so that no program starts
			// meanwhile. Children are not reaped before the program exists: they would be
			// torstart's, which waits for its own.
			if s != unix.SIGCHLD && endsGoProgram(s) {
				dieBy(s)
			}
			r.mu.Unlock()
			continue
		}
		r.mu.Unlock()
		if s == unix.SIGCHLD {
			r.reap()
			continue
		}
		if shouldForward(s) {
			if err := unix.Kill(child, s); err != nil && err != unix.ESRCH {
				log.Debug(fmt.Sprintf("forward %v to pid %d: %v", s, child, err))
			}
		}
	}
}

// reap reaps every child that has ended, without waiting.
func (r *reaper) reap() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		r.reaped(pid, ws)
	}
}

// reaped records the program's status when pid is the program.
func (r *reaper) reaped(pid int, ws unix.WaitStatus) {
	r.mu.Lock()
	child := r.child
	if pid == child && child != 0 && (ws.Exited() || ws.Signaled()) {
		r.gone = true
	} else {
		child = -1
	}
	r.mu.Unlock()
	if pid != child {
		return
	}
	r.statusMu.Lock()
	r.status = ws
	r.statusMu.Unlock()
	r.once.Do(func() { close(r.done) })
}

// wait waits until the program has ended and been reaped and returns how it ended. It waits for
// the program itself rather than for its SIGCHLD (a signal, then a goroutine hand-off or two):
// the program ends before Serve returns, unless the supervisor failed, and then it is waited for
// as long as it runs. When the loop reaped it first, Wait4 fails (ECHILD) and done tells.
func (r *reaper) wait() unix.WaitStatus {
	r.mu.Lock()
	child := r.child
	r.mu.Unlock()
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(child, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err == nil && pid == child {
			r.reaped(pid, ws)
		}
		if err != nil || ws.Exited() || ws.Signaled() {
			break
		}
	}
	<-r.done
	r.statusMu.Lock()
	defer r.statusMu.Unlock()
	return r.status
}

// exitStatus returns the program's exit status, or re-raises the signal that killed it so that
// the calling shell reports it exactly as it would without torsocks.
func exitStatus(ws unix.WaitStatus) int {
	if ws.Exited() {
		return ws.ExitStatus()
	}
	sig := ws.Signal()
	dieBy(sig)
	return 128 + int(sig)
}

// dieBy ends torsocks by sig, as the default action of sig would (without a core dump: the program
// dumped core if it was to). It returns only if sig does not end a process.
func dieBy(sig syscall.Signal) {
	signal.Reset(sig)
	unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{})
	unix.Kill(os.Getpid(), sig)
	time.Sleep(time.Second) // the signal is delivered asynchronously; do not exit before it lands
}

// endsGoProgram reports whether sig, not enabled with signal.Notify, ends a Go program: SIGHUP,
// SIGINT and SIGTERM end it, SIGQUIT with a stack dump (here: ended by it); the other signals
// torsocks forwards are caught and dropped (os/signal's documentation, "Default behavior").
func endsGoProgram(sig syscall.Signal) bool {
	switch sig {
	case unix.SIGHUP, unix.SIGINT, unix.SIGTERM, unix.SIGQUIT:
		return true
	}
	return false
}

// forwarded lists the signals torsocks passes on to the program. Signals it was started with
// ignored stay ignored (the program inherits that, as it would without torsocks).
func forwarded() []os.Signal {
	var out []os.Signal
	for _, s := range []syscall.Signal{unix.SIGHUP, unix.SIGINT, unix.SIGQUIT, unix.SIGTERM, unix.SIGUSR1,
		unix.SIGUSR2, unix.SIGALRM, unix.SIGWINCH, unix.SIGCONT, unix.SIGPWR, unix.SIGVTALRM, unix.SIGPROF} {
		if !signal.Ignored(s) {
			out = append(out, s)
		}
	}
	return out
}

// shouldForward tells whether a signal torsocks received should be passed to the program. The
// terminal sends SIGINT, SIGQUIT, SIGWINCH and SIGHUP to the whole foreground process group, which
// the program shares with torsocks: it already has them, and a second copy would be wrong (Python
// would raise KeyboardInterrupt twice). Sent by kill(1) to torsocks alone, they are forwarded.
func shouldForward(s syscall.Signal) bool {
	switch s {
	case unix.SIGINT, unix.SIGQUIT, unix.SIGWINCH, unix.SIGHUP:
		return !inForeground()
	}
	return true
}

func inForeground() bool {
	fd, err := unix.Open("/dev/tty", unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	pgrp, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP)
	return err == nil && pgrp == unix.Getpgrp()
}
