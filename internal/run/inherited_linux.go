package run

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// checkInherited refuses to start when torsocks holds, without close-on-exec, a descriptor that the
// program would inherit and that could carry traffic around Tor: it was made outside torsocks, so
// nothing the supervisor sees at the program's system calls would cover it.
//
// It is an allowlist. Passed on are regular files and directories (except writable files of the
// kernel's interface file systems, such as /proc/PID/mem of a process outside the tree), pipes and
// FIFOs, terminals (not pseudo-terminal masters), /dev/null, zero, full, random and urandom,
// eventfd, timerfd, signalfd and inotify instances, and unix sockets that are listening or have
// nothing queued (neither data nor descriptors: a socket received over SCM_RIGHTS could be one
// connected outside torsocks). Everything else refuses, naming the descriptor and what it is:
// internet, packet, netlink and other sockets, io_uring instances (with SQPOLL the kernel submits
// socket and connect calls the filter never sees), pidfds (handles on processes outside the
// tree, whose network namespace setns would enter), epoll and other anonymous inodes, namespaces, TUN and other devices.
//
// Descriptors are only looked at: a unix socket's queue is peeked (MSG_PEEK), never read.
func checkInherited() error {
	dir, err := os.Open("/proc/self/fd")
	if err != nil {
		return fmt.Errorf("list open descriptors: %w", err)
	}
	defer dir.Close()
	names, err := dir.Readdirnames(-1)
	if err != nil {
		return fmt.Errorf("list open descriptors: %w", err)
	}
	own := int(dir.Fd())
	var fds []int
	for _, name := range names {
		if fd, err := strconv.Atoi(name); err == nil && fd != own {
			fds = append(fds, fd)
		}
	}
	slices.Sort(fds)
	for _, fd := range fds {
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if err != nil || flags&unix.FD_CLOEXEC != 0 {
			continue // closed meanwhile, or not passed on to the program
		}
		if r := inspectInherited(fd); r != nil {
			return fmt.Errorf("descriptor %d is %s, inherited from the caller; %s, so torsocks refuses to start (close it first, e.g. %d>&-)", fd, r.what, r.why, fd)
		}
	}
	return nil
}

// refusal is why an inherited descriptor may not be passed on: what it is, and why that matters.
type refusal struct {
	what, why string
}

// aroundTor is the reason for descriptors whose traffic would bypass the supervisor.
const aroundTor = "traffic on it would go around Tor"

// inspectInherited returns why descriptor fd may not be passed on to the program, or nil.
func inspectInherited(fd int) *refusal {
	// What /proc/self/fd/N names it: read only for an anonymous inode (whose name is its kind) and
	// for the message of a refusal, not for the files, pipes and terminals most descriptors are.
	link := func() string {
		l, _ := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
		return l
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return &refusal{fmt.Sprintf("a descriptor torsocks cannot inspect (fstat: %v)", err), "torsocks cannot tell whether traffic on it would go around Tor"}
	}
	var fs unix.Statfs_t
	if err := unix.Fstatfs(fd, &fs); err != nil {
		return &refusal{fmt.Sprintf("a descriptor torsocks cannot inspect (fstatfs: %v)", err), "torsocks cannot tell whether traffic on it would go around Tor"}
	}
	// Anonymous inodes, pidfds and namespaces first: their mode tells nothing (anonymous inodes
	// have no file type; pidfs and nsfs inodes look like regular files).
	switch int64(fs.Type) {
	case unix.ANON_INODE_FS_MAGIC:
		return inspectAnon(link())
	case unix.PID_FS_MAGIC:
		return pidfdRefusal
	case unix.NSFS_MAGIC:
		return &refusal{fmt.Sprintf("a namespace (%s)", link()), "entering it could leave the network namespace torsocks watches"}
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		if kernelFS(int64(fs.Type)) && writable(fd) {
			return &refusal{fmt.Sprintf("a writable kernel interface file (%s)", link()), "torsocks cannot tell what writing to it would do outside the program's tree"}
		}
		return nil
	case unix.S_IFDIR, unix.S_IFIFO, unix.S_IFLNK:
		return nil
	case unix.S_IFCHR:
		return inspectCharDev(fd, st.Rdev, link)
	case unix.S_IFBLK:
		return &refusal{fmt.Sprintf("a block device (%d:%d, %s)", unix.Major(st.Rdev), unix.Minor(st.Rdev), link()), "torsocks cannot tell whether traffic on it would go around Tor"}
	case unix.S_IFSOCK:
		return inspectSocket(fd)
	}
	return &refusal{fmt.Sprintf("an unknown kind of descriptor (mode %#o, %s)", st.Mode, link()), "torsocks cannot tell whether traffic on it would go around Tor"}
}

// pidfdRefusal: a pidfd is a handle on a process outside the program's tree (setns into its
// namespaces; pidfd_getfd is refused by the filter, but only for calls the program makes).
var pidfdRefusal = &refusal{"a pidfd", "it is a handle on a process outside the program's tree (setns into its network namespace), which torsocks does not watch"}

// inspectAnon judges an anonymous inode by its name ("anon_inode:[eventfd]", "anon_inode:inotify").
func inspectAnon(link string) *refusal {
	name := strings.TrimPrefix(link, "anon_inode:")
	switch name {
	case "[eventfd]", "[timerfd]", "[signalfd]", "inotify":
		return nil // counters, timers and notifications: nothing reaches the network through them
	case "[io_uring]":
		return &refusal{"an io_uring instance", "it can make and connect sockets with no system call torsocks sees (SQPOLL), and traffic on them would go around Tor"}
	case "[pidfd]":
		return pidfdRefusal
	case "[eventpoll]":
		return &refusal{"an epoll instance", "it may watch descriptors that live outside the program's tree, which torsocks cannot check"}
	}
	if name == "" {
		name = "?"
	}
	return &refusal{fmt.Sprintf("an anonymous inode (%s)", name), "torsocks cannot tell whether traffic through it would go around Tor"}
}

// configfsMagic is CONFIGFS_MAGIC (include/uapi/linux/magic.h), which x/sys/unix lacks.
const configfsMagic = 0x62656570

// kernelFS reports whether a file system's files are interfaces to the kernel (or to other
// processes), where what a write does depends on who opened the file, not on who writes.
func kernelFS(magic int64) bool {
	switch magic {
	case unix.PROC_SUPER_MAGIC, unix.SYSFS_MAGIC, unix.DEBUGFS_MAGIC, unix.TRACEFS_MAGIC,
		unix.SECURITYFS_MAGIC, unix.CGROUP_SUPER_MAGIC, unix.CGROUP2_SUPER_MAGIC, unix.BPF_FS_MAGIC,
		configfsMagic:
		return true
	}
	return false
}

// writable reports whether fd was opened for writing (or its flags cannot be read).
func writable(fd int) bool {
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return true
	}
	return fl&unix.O_ACCMODE != unix.O_RDONLY
}

// Character devices by major number (Documentation/admin-guide/devices.txt).
const (
	majorMem       = 1  // null 3, zero 5, full 7, random 8, urandom 9 (mem 1, kmem 2, port 4 are not harmless)
	majorPTYMaster = 2  // legacy BSD pseudo-terminal masters
	majorTTYAux    = 5  // 0 /dev/tty, 1 /dev/console, 2 /dev/ptmx
	majorMisc      = 10 // 200 /dev/net/tun
	minorPtmx      = 2
	minorTUN       = 200
)

// inspectCharDev allows the data sinks and sources of major 1 and terminals; a pseudo-terminal
// master is refused (what is written to it is typed into whatever runs on the other side, outside
// torsocks), as are TUN and every other device.
func inspectCharDev(fd int, rdev uint64, link func() string) *refusal {
	major, minor := unix.Major(rdev), unix.Minor(rdev)
	switch {
	case major == majorMem && (minor == 3 || minor == 5 || minor == 7 || minor == 8 || minor == 9):
		return nil
	case major == majorMisc && minor == minorTUN:
		return &refusal{"a TUN device (/dev/net/tun)", "packets written to it would go around Tor"}
	case major == majorPTYMaster || (major == majorTTYAux && minor == minorPtmx):
		return &refusal{fmt.Sprintf("a pseudo-terminal master (%s)", link()), "what is written to it is typed into the terminal's other side, outside torsocks"}
	}
	if _, err := unix.IoctlGetTermios(fd, unix.TCGETS); err == nil {
		if _, err := unix.IoctlGetUint32(fd, unix.TIOCGPTN); err == nil {
			return &refusal{fmt.Sprintf("a pseudo-terminal master (%s)", link()), "what is written to it is typed into the terminal's other side, outside torsocks"}
		}
		return nil // a terminal: TIOCSTI and TIOCLINUX are refused by the filter
	}
	return &refusal{fmt.Sprintf("a character device (%d:%d, %s)", major, minor, link()), "torsocks cannot tell whether traffic on it would go around Tor"}
}

// sockaddrString is an internet socket address as host:port.
func sockaddrString(sa unix.Sockaddr) string {
	switch v := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(v.Addr), uint16(v.Port)).String()
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(v.Addr), uint16(v.Port)).String()
	}
	return "?"
}

// familyNames names the socket families an error message is likely to meet.
var familyNames = map[int]string{
	unix.AF_PACKET:    "a packet socket",
	unix.AF_NETLINK:   "a netlink socket",
	unix.AF_VSOCK:     "a vsock socket",
	unix.AF_BLUETOOTH: "a Bluetooth socket",
	unix.AF_CAN:       "a CAN socket",
	unix.AF_XDP:       "an XDP socket",
	unix.AF_SMC:       "an SMC socket",
	unix.AF_TIPC:      "a TIPC socket",
	unix.AF_ALG:       "an AF_ALG socket",
}

// inspectSocket allows unix sockets with nothing queued; every other family is refused.
func inspectSocket(fd int) *refusal {
	domain, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return &refusal{fmt.Sprintf("a socket torsocks cannot inspect (SO_DOMAIN: %v)", err), "torsocks cannot tell whether traffic on it would go around Tor"}
	}
	switch domain {
	case unix.AF_UNIX:
		return inspectUnix(fd)
	case unix.AF_INET, unix.AF_INET6:
		what := "an internet socket"
		if sa, err := unix.Getpeername(fd); err == nil {
			what = fmt.Sprintf("an internet socket connected to %s", sockaddrString(sa))
		} else if sa, err := unix.Getsockname(fd); err == nil {
			what = fmt.Sprintf("an internet socket bound to %s", sockaddrString(sa))
		}
		return &refusal{what, aroundTor}
	}
	what, ok := familyNames[domain]
	if !ok {
		what = fmt.Sprintf("a socket of address family %d", domain)
	}
	if domain == unix.AF_NETLINK {
		return &refusal{what, "it reaches the kernel's network configuration from outside torsocks' view"}
	}
	return &refusal{what, aroundTor}
}

// scmMaxFD is the most descriptors one unix message can carry (SCM_MAX_FD).
const scmMaxFD = 253

// inspectUnix refuses a unix socket with data or descriptors queued: a descriptor received from
// it could be a socket connected outside torsocks, and data (or an empty message) ahead of one
// hides it from a peek. A listening socket is allowed (its peers connect later, as they could to
// any socket the program finds). The queue is peeked, never read; descriptors the peek installs
// (SCM_RIGHTS, SCM_PIDFD) are closed again.
func inspectUnix(fd int) *refusal {
	if listening, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err == nil && listening != 0 {
		return nil
	}
	// With SO_PEEK_OFF enabled a peek starts at the peek offset and moves it: disable it for the
	// peek and put it back after.
	if off, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF); err == nil && off >= 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF, -1); err != nil {
			return &refusal{"a unix socket whose queue torsocks cannot inspect", fmt.Sprintf("its peek offset could not be reset (%v)", err)}
		}
		defer unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF, off)
	}
	buf := make([]byte, 1)
	oob := make([]byte, unix.CmsgSpace(scmMaxFD*4)+unix.CmsgSpace(4)+unix.CmsgSpace(64))
	n, oobn, flags, _, err := unix.Recvmsg(fd, buf, oob, unix.MSG_PEEK|unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
	switch {
	case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOTCONN):
		// Nothing queued, or not connected (EINVAL): nothing to receive.
	case err != nil:
		return &refusal{"a unix socket whose queue torsocks cannot inspect", fmt.Sprintf("peeking at it failed (%v)", err)}
	default:
		if rights := closePassed(oob[:oobn]); rights || flags&unix.MSG_CTRUNC != 0 {
			return &refusal{"a unix socket with a descriptor queued (SCM_RIGHTS)", "the descriptor could be a socket connected outside torsocks, and traffic on it would go around Tor"}
		}
		if n > 0 || !peerGone(fd) {
			return unixDataQueued // n == 0 with the peer still there: an empty message
		}
	}
	if q, err := unix.IoctlGetInt(fd, unix.SIOCINQ); err == nil && q > 0 {
		return unixDataQueued
	}
	return nil
}

// peerGone reports whether a socket's peer has shut down (a receive of 0 bytes is then end of
// file rather than an empty datagram or SEQPACKET message).
func peerGone(fd int) bool {
	p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLRDHUP}}
	n, err := unix.Poll(p, 0)
	return err == nil && n == 1 && p[0].Revents&(unix.POLLRDHUP|unix.POLLHUP) != 0
}

var unixDataQueued = &refusal{"a unix socket with data queued", "descriptors sent behind the data (SCM_RIGHTS) could be sockets connected outside torsocks, and traffic on them would go around Tor"}

// closePassed closes the descriptors a peek installed from the control messages in oob
// (SCM_RIGHTS, and the sender's pidfd with SO_PASSPIDFD) and reports whether any were SCM_RIGHTS
// (or the messages could not be parsed).
func closePassed(oob []byte) bool {
	if len(oob) == 0 {
		return false
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return true
	}
	rights := false
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_SOCKET || (m.Header.Type != unix.SCM_RIGHTS && m.Header.Type != unix.SCM_PIDFD) {
			continue
		}
		if m.Header.Type == unix.SCM_RIGHTS {
			rights = true
		}
		for i := 0; i+4 <= len(m.Data); i += 4 {
			unix.Close(int(int32(binary.NativeEndian.Uint32(m.Data[i:]))))
		}
	}
	return rights
}
