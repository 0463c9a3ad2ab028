package torstart

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// KeeperArg is the first argument of the keeper role of the torsocks binary:
//
//	/proc/self/exe --internal-tor-keeper RUNDIR IDLE TOR
//
// cmd/torsocks dispatches it to RunKeeper.
const KeeperArg = "--internal-tor-keeper"

// RunKeeper is the keeper process (args RUNDIR IDLE TOR; it returns the exit status). Ensure
// starts it, detached in a session of its own, instead of tor: the keeper writes its pid file,
// starts tor (TOR -f RUNDIR/torrc, which Ensure wrote) as its child and watches two things:
//
//   - tor: when it exits (crashed, killed, --tor-stop), the keeper clears what tor left behind
//     and exits. Tor is told to watch the keeper too (__OwningControllerProcess): a killed
//     keeper does not leave a tor running for ever.
//   - the users lock (Paths.Users), held shared by every torsocks using the tor: when nobody has
//     held it for IDLE, the keeper takes the start lock (so no torsocks is checking for or
//     starting tor right then), checks the users lock once more, shuts tor down (SIGNAL
//     SHUTDOWN on its control port, SIGTERM when that does not answer), removes the sockets and
//     pid files and exits.
//
// SIGTERM, SIGINT and SIGHUP stop tor the same way.
func RunKeeper(args []string) int {
	if len(args) != 3 {
		fmt.Fprintf(os.Stderr, "torsocks keeper: want RUNDIR IDLE TOR, got %q\n", args)
		return 2
	}
	idle, err := time.ParseDuration(args[1])
	if err != nil || idle <= 0 {
		fmt.Fprintf(os.Stderr, "torsocks keeper: idle time %q: not a positive duration\n", args[1])
		return 2
	}
	k := &keeper{p: Paths{RunDir: args[0]}, idle: idle, logf: func(format string, a ...any) {
		fmt.Fprintf(os.Stderr, "torsocks keeper: "+format+"\n", a...)
	}}
	if err := k.startTor(args[2]); err != nil {
		k.logf("%v", err)
		k.clear()
		return 1
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT, unix.SIGHUP)
	return k.loop(sigs)
}

type keeper struct {
	p      Paths
	idle   time.Duration
	logf   func(string, ...any)
	torPid int
	exited chan struct{} // closed when tor has exited
	// ticks, when set, replaces the poll ticker (tests); the time of a tick is the clock.
	ticks <-chan time.Time
}

func (k *keeper) startTor(bin string) error {
	if err := os.WriteFile(k.p.KeeperPid(), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600); err != nil {
		return err
	}
	cmd := exec.Command(bin, "-f", k.p.Torrc(), "--defaults-torrc", k.p.Defaults(),
		"__OwningControllerProcess", strconv.Itoa(os.Getpid()))
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.Dir = "/"
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", bin, err)
	}
	k.torPid = cmd.Process.Pid
	k.exited = make(chan struct{})
	go func() {
		cmd.Wait()
		close(k.exited)
	}()
	return nil
}

// pollInterval is how often the keeper looks at the users lock: about once a second, more often
// for a short idle time (tests).
func pollInterval(idle time.Duration) time.Duration {
	return min(max(idle/4, 20*time.Millisecond), time.Second)
}

func (k *keeper) loop(sigs <-chan os.Signal) int {
	users, err := os.OpenFile(k.p.Users(), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		k.logf("%v", err)
		k.stopTor()
		k.clear()
		return 1
	}
	defer users.Close()
	ticks := k.ticks
	if ticks == nil {
		tick := time.NewTicker(pollInterval(k.idle))
		defer tick.Stop()
		ticks = tick.C
	}
	var now time.Time
	var idleSince time.Time // zero while some torsocks holds the users lock
	for {
		select {
		case <-k.exited:
			// Tor exited by itself or was stopped (--tor-stop holds the start lock and clears
			// up itself). A torsocks may be starting a new tor already: clear only what is ours.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			lock, err := flock(ctx, k.p.Lock(), unix.LOCK_EX)
			cancel()
			if err == nil {
				defer lock.Close()
			}
			k.clear()
			return 0
		case sig := <-sigs:
			k.logf("%v: stopping tor", sig)
			k.stopTor()
			k.clear()
			return 0
		case now = <-ticks:
		}
		if !free(users) {
			idleSince = time.Time{}
			continue
		}
		if idleSince.IsZero() {
			idleSince = now
		}
		if now.Sub(idleSince) < k.idle {
			continue
		}
		if lock := tryLock(k.p.Lock()); lock != nil {
			if free(users) { // no torsocks took the tor between the two looks
				k.stopTor()
				k.clear()
				lock.Close()
				return 0
			}
			lock.Close()
			idleSince = time.Time{}
		}
	}
}

// free tells whether no torsocks holds the users lock: it takes it exclusively without waiting,
// and drops it at once.
func free(users *os.File) bool {
	if unix.Flock(int(users.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
		return false
	}
	unix.Flock(int(users.Fd()), unix.LOCK_UN)
	return true
}

// tryLock takes path's lock exclusively if that needs no wait, else returns nil.
func tryLock(path string) *os.File {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil
	}
	if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
		f.Close()
		return nil
	}
	return f
}

// stopTor shuts tor down (SIGNAL SHUTDOWN, which a client obeys at once; SIGTERM when the
// control port does not answer within 3 s or tor is still there 10 s later; SIGKILL 5 s after
// that) and waits for it to exit.
func (k *keeper) stopTor() {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	wait := func(d time.Duration) bool {
		select {
		case <-k.exited:
			return true
		case <-time.After(d):
			return false
		}
	}
	if cc, err := dialControl(ctx, k.p, 3*time.Second); err == nil {
		cc.Do("SIGNAL SHUTDOWN") // tor may close the connection before answering
		cc.Close()
		if wait(10 * time.Second) {
			return
		}
	}
	unix.Kill(k.torPid, unix.SIGTERM)
	if wait(5 * time.Second) {
		return
	}
	unix.Kill(k.torPid, unix.SIGKILL)
	<-k.exited
}

// clear removes tor's sockets and the pid files, if the keeper pid file is still this keeper's
// (else a new tor may be starting, and they are its).
func (k *keeper) clear() {
	if readPid(k.p.KeeperPid()) != os.Getpid() {
		return
	}
	for _, f := range []string{k.p.Socks(), k.p.Control(), k.p.PidFile(), k.p.KeeperPid()} {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			k.logf("%v", err)
		}
	}
}
