package torstart

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gotorsocks/torsocks/internal/torcontrol"
)

// Options configures Ensure.
type Options struct {
	Paths Paths
	UID   int
	// Binary is the tor executable (a path; see exec.LookPath).
	Binary string
	// Extra are the TorConfig file's lines, ExtraName its name (for errors and the torrc comment).
	Extra     []byte
	ExtraName string
	// BootstrapTimeout bounds the wait for Bootstrapped 100% (and the wait for the lock).
	BootstrapTimeout time.Duration
	// Progress, if set, is called at each new bootstrap status.
	Progress func(Progress)
	// Env is tor's environment (nil: this process's).
	Env []string
	// Idle is how long the tor stays up once no torsocks uses it (default 5 min; see RunKeeper).
	Idle time.Duration
	// Keeper is the command that runs RunKeeper, to which RUNDIR IDLE TOR are appended
	// (default /proc/self/exe KeeperArg: the torsocks binary, or a test binary that dispatches
	// KeeperArg).
	Keeper []string
}

// Tor is the user's running, bootstrapped tor.
type Tor struct {
	Pid     int
	Socks   string // the unix SocksPort
	Started bool   // this call started it (else it was running)
	// OtherSettings: it was running, started with another torrc than this call would have
	// written (another TorConfig, or a changed one); torsocks --tor-stop restarts it.
	OtherSettings bool
	users         *os.File
	control       socketID
	controlPath   string
}

// socketID is a file's device and inode.
type socketID struct{ dev, ino uint64 }

func statID(path string) (socketID, bool) {
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil {
		return socketID{}, false
	}
	return socketID{st.Dev, st.Ino}, true
}

// IsControl tells whether fd (a descriptor of a file, O_PATH will do) is the tor's ControlPort
// socket: the one Ensure saw, or the one at the path now (a tor started since by another
// torsocks). A program under torsocks runs as the same user as its tor and could otherwise
// connect to the control port and reconfigure Tor (a Socks5Proxy, a bridge of its choice).
func (t *Tor) IsControl(fd int) bool {
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return false
	}
	id := socketID{st.Dev, st.Ino}
	if id == t.control {
		return true
	}
	now, ok := statID(t.controlPath)
	return ok && now == id
}

// Release drops this torsocks' hold on the tor (the shared lock on Paths.Users).
func (t *Tor) Release() {
	if t.users != nil {
		t.users.Close()
		t.users = nil
	}
}

// ErrBootstrap is wrapped by the error of a tor that did not bootstrap in time or exited.
var ErrBootstrap = errors.New("tor did not bootstrap")

// Ensure returns the user's tor, started if none answers, once it has bootstrapped. A stale pid
// file or socket (tor dead, or alive but not answering) is cleared and a new tor started. The
// caller holds the tor (a shared lock) until Release.
func Ensure(ctx context.Context, o Options) (*Tor, error) {
	if o.BootstrapTimeout <= 0 {
		o.BootstrapTimeout = 120 * time.Second
	}
	if o.Idle <= 0 {
		o.Idle = 5 * time.Minute
	}
	if o.Keeper == nil {
		o.Keeper = []string{"/proc/self/exe", KeeperArg}
	}
	ctx, cancel := context.WithTimeout(ctx, o.BootstrapTimeout)
	defer cancel()
	p := o.Paths
	if err := p.Prepare(o.UID); err != nil {
		return nil, err
	}
	lock, err := flock(ctx, p.Lock(), unix.LOCK_EX)
	if err != nil {
		return nil, err
	}
	defer lock.Close()
	torrc, err := Torrc(p, o.Extra, o.ExtraName)
	if err != nil {
		return nil, err
	}

	t := &Tor{Socks: p.Socks(), controlPath: p.Control()}
	var exited <-chan struct{}
	var logFrom int64
	keeperPid := 0
	pid, state := probe(ctx, p)
	switch state {
	case live:
		t.Pid = pid
		if was, err := os.ReadFile(p.Torrc()); err == nil && string(was) != torrc {
			t.OtherSettings = true
		}
	case unresponsive:
		if err := kill(pid); err != nil {
			return nil, err
		}
		fallthrough
	default:
		if k := readPid(p.KeeperPid()); k > 0 && isOurKeeper(k, p) {
			kill(k)
		}
		for _, f := range []string{p.Socks(), p.Control(), p.Cookie(), p.PidFile(), p.KeeperPid()} {
			if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("torstart: removing the stale %s: %w", f, err)
			}
		}
		if st, err := os.Stat(p.Log()); err == nil {
			logFrom = st.Size()
		}
		if keeperPid, exited, err = start(p, o, torrc); err != nil {
			return nil, err
		}
		t.Started = true
	}
	if err := waitBootstrap(ctx, p, o.Progress, exited); err != nil {
		if t.Started {
			kill(keeperPid) // it stops tor
			if pid := readPid(p.PidFile()); pid > 0 && isOurTor(pid, p) {
				kill(pid)
			}
		}
		warn := lastWarning(p, logFrom)
		if warn != "" {
			warn = "; Tor's last warning: " + warn
		}
		return nil, fmt.Errorf("%w within %v (%s)%s; its log: %s", ErrBootstrap, o.BootstrapTimeout, err, warn, p.Log())
	}
	if t.Started {
		t.Pid = readPid(p.PidFile())
	}
	t.control, _ = statID(p.Control())
	if t.users, err = flock(ctx, p.Users(), unix.LOCK_SH); err != nil {
		return nil, err
	}
	return t, nil
}

type torState int

const (
	absent       torState = iota // no pid file, or its process is gone
	unresponsive                 // our tor's process is alive but its control port does not answer
	live
)

// probe checks the pid file's process, its keeper and its control port. A tor without its
// keeper (killed, or a tor of an older torsocks) would never exit by itself: unresponsive.
func probe(ctx context.Context, p Paths) (int, torState) {
	pid := readPid(p.PidFile())
	if pid <= 0 || !isOurTor(pid, p) {
		return 0, absent
	}
	if k := readPid(p.KeeperPid()); k <= 0 || !isOurKeeper(k, p) {
		return pid, unresponsive
	}
	cc, err := dialControl(ctx, p, 3*time.Second)
	if err != nil {
		return pid, unresponsive
	}
	cc.Close()
	return pid, live
}

func readPid(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0
	}
	return pid
}

// isOurTor tells whether pid is a live (not zombie) process started with our torrc: a reused
// pid of another process is never taken for the tor, nor killed.
func isOurTor(pid int, p Paths) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	if i := bytes.LastIndexByte(stat, ')'); i < 0 || i+2 >= len(stat) || stat[i+2] == 'Z' || stat[i+2] == 'X' {
		return false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	for _, a := range bytes.Split(cmdline, []byte{0}) {
		if string(a) == p.Torrc() {
			return true
		}
	}
	return false
}

// isOurKeeper tells whether pid is a live keeper (RunKeeper) of p.RunDir.
func isOurKeeper(pid int, p Paths) bool {
	if gone(pid) {
		return false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	args := bytes.Split(cmdline, []byte{0})
	for i, a := range args {
		if string(a) == KeeperArg && i+1 < len(args) && string(args[i+1]) == p.RunDir {
			return true
		}
	}
	return false
}

// kill stops pid (SIGTERM, then SIGKILL after 5 s) and waits for it to be gone.
func kill(pid int) error {
	if err := unix.Kill(pid, unix.SIGTERM); err != nil {
		if err == unix.ESRCH {
			return nil
		}
		return fmt.Errorf("torstart: stopping tor (pid %d): %w", pid, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !gone(pid) {
		if time.Now().After(deadline) {
			unix.Kill(pid, unix.SIGKILL)
			deadline = time.Now().Add(time.Hour)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// gone tells whether pid has exited (a zombie has).
func gone(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(stat, ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] == 'Z' || stat[i+2] == 'X'
}

// start writes the torrc and starts the keeper (RunKeeper), which starts tor, in a session of
// its own, so that both outlive this torsocks and do not get the terminal's signals. It returns
// the keeper's pid; exited is closed when the keeper exits (it does when tor does).
func start(p Paths, o Options, torrc string) (int, <-chan struct{}, error) {
	if err := os.WriteFile(p.Torrc(), []byte(torrc), 0o600); err != nil {
		return 0, nil, fmt.Errorf("torstart: %w", err)
	}
	if err := os.WriteFile(p.Defaults(), nil, 0o600); err != nil {
		return 0, nil, fmt.Errorf("torstart: %w", err)
	}
	out, err := os.OpenFile(p.Output(), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, nil, fmt.Errorf("torstart: %w", err)
	}
	defer out.Close()
	args := append(o.Keeper[1:len(o.Keeper):len(o.Keeper)], p.RunDir, o.Idle.String(), o.Binary)
	cmd := exec.Command(o.Keeper[0], args...)
	cmd.Env = o.Env
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, nil, fmt.Errorf("torstart: starting %s: %w", o.Keeper[0], err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait() // may fail with ECHILD once run's reaper reaps it: it has exited either way
		close(exited)
	}()
	return cmd.Process.Pid, exited, nil
}

// waitBootstrap follows status/bootstrap-phase until 100%, reporting each new status.
func waitBootstrap(ctx context.Context, p Paths, progress func(Progress), exited <-chan struct{}) error {
	var last Progress
	var cc *torcontrol.Conn
	defer func() {
		if cc != nil {
			cc.Close()
		}
	}()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if cc == nil {
			c, err := dialControl(ctx, p, time.Second)
			if err == nil {
				cc = c
			}
		}
		if cc != nil {
			v, err := cc.GetInfo("status/bootstrap-phase")
			if err != nil {
				cc.Close()
				cc = nil
			} else if pr, err := parseBootstrap(v); err == nil {
				if pr != last && progress != nil {
					progress(pr)
				}
				last = pr
				if pr.Percent == 100 {
					return nil
				}
			}
		}
		select {
		case <-exited:
			return errors.New("tor exited")
		case <-ctx.Done():
			if last.Summary != "" {
				return fmt.Errorf("timed out at %s", last)
			}
			return errors.New("timed out before its control port answered")
		case <-tick.C:
		}
	}
}

// lastWarning returns tor's last [warn] or [err] line, from its output or from its log after
// offset from, without the time stamp.
func lastWarning(p Paths, from int64) string {
	var last string
	scan := func(path string, off int64) {
		f, err := os.Open(path)
		if err != nil {
			return
		}
		defer f.Close()
		if _, err := f.Seek(off, io.SeekStart); err != nil {
			return
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			l := sc.Text()
			for _, tag := range []string{"[warn] ", "[err] "} {
				if i := strings.Index(l, tag); i >= 0 && !noise(l) {
					last = strings.TrimSpace(l[i+len(tag):])
				}
			}
		}
	}
	scan(p.Output(), 0)
	scan(p.Log(), from)
	return last
}

// noise tells the warnings that say nothing about why tor does not bootstrap: running as root,
// and those of every TorConfig for a private network (DirAuthority lines, TestingTorNetwork).
func noise(l string) bool {
	for _, s := range []string{"running Tor as root", "to specify alternate directory authorities", "TestingTorNetwork is set"} {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}

// Stop stops the user's tor, if one is running: SIGNAL HALT on its control port, or SIGTERM when
// the control port does not answer. It reports whether there was one.
func Stop(ctx context.Context, p Paths, uid int) (bool, error) {
	if err := p.Prepare(uid); err != nil {
		return false, err
	}
	lock, err := flock(ctx, p.Lock(), unix.LOCK_EX)
	if err != nil {
		return false, err
	}
	defer lock.Close()
	pid, state := probe(ctx, p)
	switch state {
	case absent:
		return false, nil
	case live:
		if cc, err := dialControl(ctx, p, 3*time.Second); err == nil {
			cc.Do("SIGNAL HALT") // tor may close the connection before answering
			cc.Close()
			deadline := time.Now().Add(5 * time.Second)
			for !gone(pid) && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
	if err := kill(pid); err != nil {
		return true, err
	}
	// The keeper exits once it has seen tor exit and got the lock; what it would clear is
	// cleared here.
	for _, f := range []string{p.Socks(), p.Control(), p.PidFile(), p.KeeperPid()} {
		os.Remove(f)
	}
	return true, nil
}
