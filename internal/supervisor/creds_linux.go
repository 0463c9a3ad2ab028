package supervisor

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Unix sockets are connected by the supervisor, on its copy of the program's socket (see
// copy_linux.go). Done with the supervisor's own credentials, that would make it a confused
// deputy: under a root torsocks, a program process that dropped to nobody would still reach a
// root-only socket (docker.sock), and every unix server would see root in SO_PEERCRED.
//
// So a unix connect (and a unix send the supervisor carries out) is made with the credentials of
// the thread that made the call:
//
//   - Before acting, the supervisor reads the calling thread's credentials from
//     /proc/TID/status (the notification's pid is the thread id): real, effective and filesystem
//     uid and gid, supplementary groups, effective capabilities; and its user namespace. Then it
//     checks that the notification is still valid: the thread was then still blocked in this very
//     call, so the tid was not recycled and what was read is what that thread held while it made
//     the call (a thread's credentials change only by its own doing, and it is stopped in the
//     syscall; if a signal handler ran meanwhile, the notification is gone and the kernel
//     restarts the call with a new one).
//   - If they equal the supervisor's, the call is carried out as before (the common case: one
//     /proc read more). Capabilities count only where they matter to a unix call (unixConnectCaps,
//     unixSendCaps): a root program that lost CAP_NET_ADMIN & co. (launch.DroppedCapabilities) still qualifies.
//   - Otherwise it is carried out by a deputy: a goroutine locked to its OS thread
//     (runtime.LockOSThread) takes the caller's credentials on that thread only, looks the path up
//     (so directory search permission is the caller's), connects or sends, and puts the
//     supervisor's credentials back. The kernel checks permission on the socket file and on the
//     directories with the filesystem ids, groups and effective capabilities of the thread that
//     looks up, and stores the connecting thread's credentials as the peer credentials
//     (SO_PEERCRED gives the effective ids, SCM_CREDENTIALS the real ones): the server sees the
//     program's uid and gid.
//   - If the supervisor cannot take the caller's credentials (it is not root, or the caller holds
//     capabilities the supervisor does not), the call is refused with EACCES and one log line.
//
// Why raw syscalls on a locked thread: in Linux credentials belong to each thread (task), and the
// setresuid/setresgid/setfsuid/setfsgid/setgroups/capset system calls change only the calling
// thread's. libc and Go's syscall.Setuid & co. make them process-wide by running them on every
// thread (the runtime's AllThreadsSyscall); the deputy must not, so it calls the kernel directly
// (unix.RawSyscall, on the thread runtime.LockOSThread wired it to). No other goroutine runs on a
// locked thread, and the Go runtime starts new threads from a template thread rather than cloning
// a locked one, so the borrowed credentials reach nothing but the deputy's own calls. The thread
// is unlocked (returned to the runtime) only once every id, group and capability set reads back
// as it was; otherwise its goroutine exits still locked, and the runtime ends the thread.
//
// Capabilities held in another user namespace (a program under unshare -U, bwrap) are counted as
// none: they grant nothing over sockets whose owner is not mapped there, and may grant something
// over those that are, so this is stricter than the kernel for such programs only when the
// supervisor is privileged, never looser.

// creds are the credentials of a thread that decide what a unix connect may reach and what the
// peer sees. Ids are in the supervisor's user namespace (as /proc shows them to it).
type creds struct {
	ruid, euid, fsuid uint32
	rgid, egid, fsgid uint32
	groups            []uint32 // sorted
	capEff            uint64   // effective capabilities (in the supervisor's user namespace)
}

func (a *creds) equal(b *creds) bool {
	return a.ruid == b.ruid && a.euid == b.euid && a.fsuid == b.fsuid &&
		a.rgid == b.rgid && a.egid == b.egid && a.fsgid == b.fsgid &&
		a.capEff == b.capEff && slices.Equal(a.groups, b.groups)
}

func (a *creds) String() string {
	return fmt.Sprintf("uid %d (real %d, fs %d), gid %d (real %d, fs %d), groups %v, capabilities %#x",
		a.euid, a.ruid, a.fsuid, a.egid, a.rgid, a.fsgid, a.groups, a.capEff)
}

// parseStatus reads the credentials out of a /proc/PID/status file.
func parseStatus(b []byte) (*creds, error) {
	cr := &creds{}
	var have int
	for line := range strings.SplitSeq(string(b), "\n") {
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(val)
		switch key {
		case "Uid", "Gid":
			if len(f) != 4 {
				return nil, fmt.Errorf("bad %s line %q", key, line)
			}
			r, err0 := strconv.ParseUint(f[0], 10, 32)
			e, err1 := strconv.ParseUint(f[1], 10, 32)
			fs, err2 := strconv.ParseUint(f[3], 10, 32)
			if err := errors.Join(err0, err1, err2); err != nil {
				return nil, fmt.Errorf("bad %s line %q: %w", key, line, err)
			}
			if key == "Uid" {
				cr.ruid, cr.euid, cr.fsuid = uint32(r), uint32(e), uint32(fs)
			} else {
				cr.rgid, cr.egid, cr.fsgid = uint32(r), uint32(e), uint32(fs)
			}
			have++
		case "Groups":
			for _, g := range f {
				n, err := strconv.ParseUint(g, 10, 32)
				if err != nil {
					return nil, fmt.Errorf("bad Groups line %q: %w", line, err)
				}
				cr.groups = append(cr.groups, uint32(n))
			}
			have++
		case "CapEff":
			if len(f) != 1 {
				return nil, fmt.Errorf("bad CapEff line %q", line)
			}
			n, err := strconv.ParseUint(f[0], 16, 64)
			if err != nil {
				return nil, fmt.Errorf("bad CapEff line %q: %w", line, err)
			}
			cr.capEff = n
			have++
		}
	}
	if have != 4 {
		return nil, errors.New("status lacks Uid, Gid, Groups or CapEff")
	}
	slices.Sort(cr.groups)
	cr.groups = slices.Compact(cr.groups)
	return cr, nil
}

// userNS identifies the user namespace /proc/X/ns/user names.
func userNS(path string) ([2]uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return [2]uint64{}, err
	}
	return [2]uint64{st.Dev, st.Ino}, nil
}

// ownCreds are the supervisor's credentials (every thread of it has the same, the deputies' aside
// while they work), read once; the user namespace along with them.
type ownCreds struct {
	cr  *creds
	ns  [2]uint64
	err error
}

func readOwnCreds() ownCreds {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return ownCreds{err: err}
	}
	cr, err := parseStatus(b)
	if err != nil {
		return ownCreds{err: err}
	}
	ns, err := userNS("/proc/self/ns/user")
	if err != nil {
		return ownCreds{err: err}
	}
	return ownCreds{cr: cr, ns: ns}
}

// callerCreds returns the credentials of the thread that made the call, or nil if they are the
// supervisor's as far as a call to which the capabilities caps matter goes. It checks the
// notification is still valid after reading them (see above).
func (c *call) callerCreds(caps uint64) (*creds, error) {
	own := c.s.own()
	if own.err != nil {
		return nil, fmt.Errorf("read torsocks' own credentials: %w", own.err)
	}
	proc := "/proc/" + strconv.Itoa(c.tid)
	b, err := os.ReadFile(proc + "/status")
	var ns [2]uint64
	if err == nil {
		ns, err = userNS(proc + "/ns/user")
	}
	if verr := c.s.k.Valid(c.id); verr != nil {
		return nil, verr // the thread is gone (its /proc entry with it, or recycled)
	}
	if err != nil {
		return nil, fmt.Errorf("credentials of thread %d: %w", c.tid, err)
	}
	cr, err := parseStatus(b)
	if err != nil {
		return nil, fmt.Errorf("credentials of thread %d: %w", c.tid, err)
	}
	if ns != own.ns {
		cr.capEff = 0
	}
	if cr.sameFor(own.cr, caps) {
		return nil, nil
	}
	return cr, nil
}

// The capabilities that can change what a unix call may reach or carry. A connect: permission on
// the socket file and on the directories of its path. A send carries credentials and descriptors
// too (SCM_CREDENTIALS naming other ids or pids, descriptors in flight beyond RLIMIT_NOFILE).
// Other capabilities (those a root program loses by default, launch.DroppedCapabilities, among
// them) change nothing there, so the supervisor's own credentials serve.
const (
	unixConnectCaps = 1<<unix.CAP_DAC_OVERRIDE | 1<<unix.CAP_DAC_READ_SEARCH | 1<<unix.CAP_MAC_OVERRIDE
	unixSendCaps    = unixConnectCaps | 1<<unix.CAP_SETUID | 1<<unix.CAP_SETGID | 1<<unix.CAP_SYS_ADMIN |
		1<<unix.CAP_SYS_RESOURCE
)

// sameFor tells whether a unix call to which the capabilities caps matter has the same outcome
// made with a's credentials as with b's.
func (a *creds) sameFor(b *creds, caps uint64) bool {
	x, y := *a, *b
	x.capEff &= caps
	y.capEff &= caps
	return x.equal(&y)
}

// deputyRefused refuses a unix call (EACCES) because the supervisor could not take the caller's
// credentials cr to carry it out.
func deputyRefused(cr *creds, err error) error {
	return &callError{errno: unix.EACCES, level: slog.LevelWarn, pc: caller(),
		msg: fmt.Sprintf("the program's credentials (%v) are not torsocks' and torsocks cannot take them on (%v)", cr, err)}
}

// asCaller runs f with the credentials cr (nil: the supervisor's own, f runs right here). With
// other credentials, f runs on a deputy thread that holds them while f runs (see above): f must
// neither block on the supervisor's locks nor start goroutines that expect its credentials. The
// error is f's, or deputyRefused's if the credentials could not be taken.
func asCaller(cr *creds, f func() error) error {
	if cr == nil {
		return f()
	}
	res := make(chan error, 1)
	go func() {
		// Never unlocked unless the supervisor's credentials are back: a goroutine that exits
		// locked takes its thread with it.
		runtime.LockOSThread()
		saved, err := threadCreds()
		if err != nil {
			runtime.UnlockOSThread() // nothing changed yet
			res <- deputyRefused(cr, err)
			return
		}
		err = saved.become(cr)
		if err == nil {
			err = f()
		} else {
			err = deputyRefused(cr, err)
		}
		if saved.restore() == nil {
			runtime.UnlockOSThread()
		}
		res <- err
	}()
	return <-res
}

// tcreds is a thread's full credential state as the deputy saves and restores it.
type tcreds struct {
	ruid, euid, suid, fsuid uint32
	rgid, egid, sgid, fsgid uint32
	groups                  []uint32
	caps                    [2]unix.CapUserData // effective, permitted, inheritable (64 bits in two words)
}

func capHeader() *unix.CapUserHeader {
	return &unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
}

// Thread-local system calls: each acts on the calling thread's credentials only.

func sys3(trap, a1, a2, a3 uintptr) (uintptr, error) {
	r, _, errno := unix.RawSyscall(trap, a1, a2, a3)
	if errno != 0 {
		return 0, errno
	}
	return r, nil
}

// setresuid sets the real and effective uid; the saved one is left alone.
func setresuid(r, e uint32) error {
	if _, err := sys3(unix.SYS_SETRESUID, uintptr(r), uintptr(e), ^uintptr(0)); err != nil {
		return fmt.Errorf("setresuid(%d, %d, -1): %w", r, e, err)
	}
	return nil
}

// setresgid sets the real and effective gid; the saved one is left alone.
func setresgid(r, e uint32) error {
	if _, err := sys3(unix.SYS_SETRESGID, uintptr(r), uintptr(e), ^uintptr(0)); err != nil {
		return fmt.Errorf("setresgid(%d, %d, -1): %w", r, e, err)
	}
	return nil
}

// setfsuid sets the filesystem uid; it reports no error, so the result is read back: setfsuid
// with an invalid id (-1) changes nothing and returns the current one.
func setfsuid(id uint32) error {
	unix.RawSyscall(unix.SYS_SETFSUID, uintptr(id), 0, 0)
	if r, _, _ := unix.RawSyscall(unix.SYS_SETFSUID, ^uintptr(0), 0, 0); uint32(r) != id {
		return fmt.Errorf("setfsuid(%d): fsuid is %d", id, uint32(r))
	}
	return nil
}

func setfsgid(id uint32) error {
	unix.RawSyscall(unix.SYS_SETFSGID, uintptr(id), 0, 0)
	if r, _, _ := unix.RawSyscall(unix.SYS_SETFSGID, ^uintptr(0), 0, 0); uint32(r) != id {
		return fmt.Errorf("setfsgid(%d): fsgid is %d", id, uint32(r))
	}
	return nil
}

func setgroups(g []uint32) error {
	var p uintptr
	if len(g) > 0 {
		p = uintptr(unsafe.Pointer(&g[0]))
	}
	_, err := sys3(unix.SYS_SETGROUPS, uintptr(len(g)), p, 0)
	runtime.KeepAlive(g)
	if err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	return nil
}

func getgroups() ([]uint32, error) {
	n, err := sys3(unix.SYS_GETGROUPS, 0, 0, 0)
	if err != nil || n == 0 {
		return nil, err
	}
	g := make([]uint32, n)
	n, err = sys3(unix.SYS_GETGROUPS, n, uintptr(unsafe.Pointer(&g[0])), 0)
	if err != nil {
		return nil, err
	}
	g = g[:n]
	slices.Sort(g)
	return slices.Compact(g), nil
}

func capset(d [2]unix.CapUserData) error {
	if err := unix.Capset(capHeader(), &d[0]); err != nil {
		return fmt.Errorf("capset: %w", err)
	}
	return nil
}

// threadCreds reads the calling thread's credentials with thread-local system calls.
func threadCreds() (*tcreds, error) {
	t := &tcreds{}
	if _, _, e := unix.RawSyscall(unix.SYS_GETRESUID, uintptr(unsafe.Pointer(&t.ruid)), uintptr(unsafe.Pointer(&t.euid)), uintptr(unsafe.Pointer(&t.suid))); e != 0 {
		return nil, e
	}
	if _, _, e := unix.RawSyscall(unix.SYS_GETRESGID, uintptr(unsafe.Pointer(&t.rgid)), uintptr(unsafe.Pointer(&t.egid)), uintptr(unsafe.Pointer(&t.sgid))); e != 0 {
		return nil, e
	}
	r, _, _ := unix.RawSyscall(unix.SYS_SETFSUID, ^uintptr(0), 0, 0)
	t.fsuid = uint32(r)
	r, _, _ = unix.RawSyscall(unix.SYS_SETFSGID, ^uintptr(0), 0, 0)
	t.fsgid = uint32(r)
	var err error
	if t.groups, err = getgroups(); err != nil {
		return nil, err
	}
	if err := unix.Capget(capHeader(), &t.caps[0]); err != nil {
		return nil, err
	}
	return t, nil
}

func (t *tcreds) equal(u *tcreds) bool {
	return t.ruid == u.ruid && t.euid == u.euid && t.suid == u.suid && t.fsuid == u.fsuid &&
		t.rgid == u.rgid && t.egid == u.egid && t.sgid == u.sgid && t.fsgid == u.fsgid &&
		slices.Equal(t.groups, u.groups) && t.caps == u.caps
}

// withEffective is the saved capability sets with effective set eff (64 bits).
func (t *tcreds) withEffective(eff uint64) [2]unix.CapUserData {
	d := t.caps
	d[0].Effective, d[1].Effective = uint32(eff), uint32(eff>>32)
	return d
}

func (t *tcreds) permitted() uint64 {
	return uint64(t.caps[0].Permitted) | uint64(t.caps[1].Permitted)<<32
}

// become gives the calling (locked) thread, whose credentials are t, the credentials cr. Saved
// ids stay the supervisor's, so the way back stays open: the kernel clears the
// effective capabilities when the effective uid leaves 0, and the permitted set stays (a root
// real uid), from which they are raised again. Groups and gids go first, while CAP_SETGID is
// still effective.
func (t *tcreds) become(cr *creds) error {
	if cr.capEff&^t.permitted() != 0 {
		return fmt.Errorf("capabilities %#x not held", cr.capEff&^t.permitted())
	}
	if !slices.Equal(cr.groups, t.groups) {
		if err := setgroups(cr.groups); err != nil {
			return err
		}
	}
	if err := setresgid(cr.rgid, cr.egid); err != nil {
		return err
	}
	if err := setfsgid(cr.fsgid); err != nil {
		return err
	}
	if err := setresuid(cr.ruid, cr.euid); err != nil {
		return err
	}
	// The effective uid may have cleared the effective capabilities; CAP_SETUID back for setfsuid.
	if err := capset(t.withEffective(t.permitted())); err != nil {
		return err
	}
	if err := setfsuid(cr.fsuid); err != nil {
		return err
	}
	// Last, the caller's effective capabilities exactly (none for an unprivileged caller: no
	// CAP_DAC_OVERRIDE past a socket's mode).
	if err := capset(t.withEffective(cr.capEff)); err != nil {
		return err
	}
	now, err := threadCreds()
	if err != nil {
		return err
	}
	if now.ruid != cr.ruid || now.euid != cr.euid || now.fsuid != cr.fsuid ||
		now.rgid != cr.rgid || now.egid != cr.egid || now.fsgid != cr.fsgid ||
		!slices.Equal(now.groups, cr.groups) || now.withEffective(cr.capEff) != now.caps ||
		now.permitted() != t.permitted() {
		return errors.New("credentials did not take")
	}
	return nil
}

// restore puts the calling thread's credentials back to t (after become, even a failed one) and
// checks they read back so; an error means the thread must not be used again.
func (t *tcreds) restore() error {
	// Every effective capability the thread may hold back first (permitted was never changed),
	// then ids, groups, and the saved capability sets exactly.
	errs := []error{capset(t.withEffective(t.permitted()))}
	errs = append(errs, setresuid(t.ruid, t.euid), setfsuid(t.fsuid))
	errs = append(errs, setresgid(t.rgid, t.egid), setfsgid(t.fsgid))
	if g, err := getgroups(); err != nil || !slices.Equal(g, t.groups) {
		errs = append(errs, setgroups(t.groups))
	}
	errs = append(errs, capset(t.caps))
	if err := errors.Join(errs...); err != nil {
		return err
	}
	now, err := threadCreds()
	if err != nil {
		return err
	}
	if !now.equal(t) {
		return errors.New("credentials not restored")
	}
	return nil
}
