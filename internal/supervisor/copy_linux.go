package supervisor

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The supervisor decides on its copy of the program's socket. Letting the kernel run the call
// afterwards (CONTINUE) would make it look the descriptor number up again, and a racing thread
// may have dup2()ed another socket onto that number meanwhile (a TCP socket, connected directly).
// So every call whose safety depends on which socket the number names is carried out here, on the
// copy, with the arguments read once.

// connectRaw connects fd to the raw sockaddr sa (as the program passed it).
func connectRaw(fd int, sa []byte) error {
	if len(sa) == 0 {
		return unix.EINVAL
	}
	_, _, errno := unix.Syscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&sa[0])), uintptr(len(sa)))
	if errno != 0 {
		return errno
	}
	return nil
}

// newMsghdr is a struct msghdr of the supervisor's own over buf (one iovec), name and oob (nil:
// none of it); iov is the iovec it points to.
func newMsghdr(iov *unix.Iovec, buf, name, oob []byte) unix.Msghdr {
	var msg unix.Msghdr
	if len(buf) > 0 {
		iov.Base = &buf[0]
		iov.SetLen(len(buf))
		msg.Iov = iov
		msg.SetIovlen(1)
	}
	if len(name) > 0 {
		msg.Name = &name[0]
		msg.Namelen = uint32(len(name))
	}
	if len(oob) > 0 {
		msg.Control = &oob[0]
		msg.SetControllen(len(oob))
	}
	return msg
}

// sendRaw sends data on fd to the raw sockaddr name (nil: none) with flags.
func sendRaw(fd int, data, name []byte, flags int) (int, error) {
	var iov unix.Iovec
	msg := newMsghdr(&iov, data, name, nil)
	n, _, errno := unix.Syscall(unix.SYS_SENDMSG, uintptr(fd), uintptr(unsafe.Pointer(&msg)), uintptr(flags))
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// unixCall carries out f, a connect or a send on the copy of a unix socket, to the unix-domain
// sockaddr raw of the program (empty: none), with the credentials of the thread that made the
// call (creds_linux.go; caps: the capabilities that matter to f, unixConnectCaps or
// unixSendCaps). f gets the address to use for the same socket file: a pathname is looked
// up in the program's root and working directory (its mount namespace, chroot and cwd are not the
// supervisor's) and replaced by /proc/self/fd/K of an O_PATH descriptor of the socket file, open
// while f runs. Abstract and unnamed addresses are used as they are.
//
// The lookup runs with the caller's credentials too, so the directories on the way must be
// searchable by the caller: the kernel's permission check at connect sees only the socket file
// (through /proc/self/fd/K, whose magic link skips the path). Only /proc/TID/root and cwd are
// opened with the supervisor's (a program that dropped privileges may not open its own).
//
// Errors other than f's: what the kernel would have answered (ENOENT, EACCES), a *callError
// (resolverDaemonRefused; deputyRefused: EACCES with the reason), seccomp.ErrNotifGone.
func (c *call) unixCall(raw []byte, caps uint64, f func(sa []byte) error) error {
	cr, err := c.callerCreds(caps)
	if err != nil {
		return err
	}
	if len(raw) <= 2 || raw[2] == 0 {
		return asCaller(cr, func() error { return f(raw) })
	}
	path := raw[2:]
	if i := indexByte(path, 0); i >= 0 {
		path = path[:i]
	}
	p := string(path)
	proc := "/proc/" + strconv.Itoa(c.tid)
	dirName := "/cwd"
	if p[0] == '/' {
		dirName = "/root"
	}
	dir, err := unix.Open(proc+dirName, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s of pid %d: %w", dirName[1:], c.tid, err)
	}
	defer unix.Close(dir)
	daemons := resolverDaemonIDs()
	return asCaller(cr, func() error {
		var fd int
		var err error
		if p[0] == '/' {
			fd, err = unix.Openat2(dir, p, &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT})
		} else {
			fd, err = unix.Openat(dir, p, unix.O_PATH|unix.O_CLOEXEC, 0)
		}
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := c.s.k.Valid(c.id); err != nil {
			return err
		}
		if d := daemons.match(fd); d != "" {
			return resolverDaemonRefused(d)
		}
		if r := c.s.opts.RefuseUnix; r != nil {
			if err := r(fd); err != nil {
				return err
			}
		}
		sa := make([]byte, 2, 2+32)
		binary.LittleEndian.PutUint16(sa, unix.AF_UNIX)
		sa = append(sa, "/proc/self/fd/"+strconv.Itoa(fd)...)
		sa = append(sa, 0)
		return f(sa)
	})
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

// connectCopy connects the copy of a unix, netlink or sandboxed UDP socket to the address the
// program passed.
func (s *Supervisor) connectCopy(c *call, cp int, si sockInfo, raw []byte) (reply, error) {
	if si.domain != unix.AF_UNIX {
		if err := connectRaw(cp, raw); err != nil {
			return reply{}, failed(err)
		}
		return value(0), nil
	}
	var connErr error
	connected := false
	err := c.unixCall(raw, unixConnectCaps, func(sa []byte) error {
		connected = true
		connErr = connectRaw(cp, sa)
		return nil
	})
	switch {
	case connected && connErr != nil:
		return reply{}, failed(connErr)
	case connected:
		return value(0), nil
	}
	// ENOENT, EACCES...: what the kernel would have answered (glibc probes nscd's socket on every
	// lookup and expects ENOENT), or a local resolver daemon refused as if it were not running, so
	// the lookup falls back to DNS (a debug line, resolverDaemonRefused); nothing to warn about.
	// A deputy that could not take the program's credentials is worth a line.
	var ce *callError
	if errors.As(err, &ce) && ce.errno == unix.EACCES && ce.msg != "" {
		return reply{}, refused(unix.EACCES, "connect to a unix socket refused: "+ce.msg)
	}
	return reply{}, failed(err)
}

// resolverDaemons are the unix sockets of local daemons that resolve names for their clients (and
// so would send DNS queries for the program, around Tor): nscd, systemd-resolved's varlink
// interface (nss-resolve), avahi (nss-mdns). Connecting to them is refused as if they were not
// running, and the program's libc falls back to DNS, which torsocks answers through Tor.
var resolverDaemons = []string{
	"/run/nscd/socket",
	"/run/systemd/resolve/io.systemd.Resolve",
	"/run/systemd/resolve/io.systemd.Resolve.Monitor",
	"/run/avahi-daemon/socket",
}

// resolverDaemonRefused is the answer to a unix call to resolver daemon name.
func resolverDaemonRefused(name string) error {
	return &callError{errno: unix.ECONNREFUSED, level: slog.LevelDebug, pc: caller(),
		msg: "connection to " + name + " refused: a local resolver daemon would look names up around Tor"}
}

// daemonIDs are the device and inode numbers of the resolver daemon sockets that exist.
type daemonIDs []struct {
	name     string
	dev, ino uint64
}

// resolverDaemonIDs stats the resolver daemon sockets (with the supervisor's credentials: a
// program that cannot see /run/nscd may still reach its socket by another link).
func resolverDaemonIDs() daemonIDs {
	var ids daemonIDs
	for _, p := range resolverDaemons {
		var d unix.Stat_t
		if unix.Stat(p, &d) == nil {
			ids = append(ids, struct {
				name     string
				dev, ino uint64
			}{p, d.Dev, d.Ino})
		}
	}
	return ids
}

// match names the resolver daemon socket that fd (an O_PATH descriptor of the file the program
// connects to) is, or returns "". Files are compared by device and inode, so /var/run links and
// relative paths do not matter.
func (ids daemonIDs) match(fd int) string {
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return ""
	}
	for _, d := range ids {
		if d.dev == st.Dev && d.ino == st.Ino {
			return d.name
		}
	}
	return ""
}
