package launch

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// Landlock puts the program in a domain of its own before it runs. Two things come with any
// domain, whatever it restricts:
//   - ptrace scoping: a process in a domain can ptrace (attach, open /proc/PID/mem or
//     /proc/PID/fd, process_vm_readv/writev, pidfd_getfd) only processes in the same domain or a
//     nested one. The supervisor, the UDP sandbox's socket factory and every process the user runs
//     outside torsocks are outside it, so the program cannot take them over, root or not. Inside
//     the tree (strace, gdb under torsocks) ptrace works as before.
//   - on Linux 6.7+ (ABI 4), the rule itself: no TCP connect() in the program's own context
//     (the supervisor connects its own copy of each socket), a backstop against a supervisor bug.
//
// Kernels with Landlock but no network rules (ABI 2 and 3: 5.19 to 6.6, Debian 12's 6.1) get a
// file-system domain that restricts nothing a program does: it handles the right to make block
// devices and to re-parent files (REFER, which every file-system domain denies unless allowed) and
// allows both beneath "/". A file-system domain also forbids mount(2), umount(2) and pivot_root(2);
// that costs nothing by default, as the program has no CAP_SYS_ADMIN (see DroppedCapabilities).
// Without Landlock (not in the kernel's lsm= list) only PR_SET_DUMPABLE protects the supervisor,
// and the README says what remains open.

// Landlock outcomes, for the debug log.
const (
	landlockNone    = "none"              // no Landlock: not protected from ptrace of outside processes
	landlockNet     = "tcp-connect"       // ABI 4+: network rule
	landlockFSScope = "ptrace-scope-only" // ABI 2-3: a domain that restricts nothing else
)

// restrictSelf puts the calling thread (and what it execs) into a Landlock domain, the strongest
// one the kernel offers, and says which.
func restrictSelf() string {
	abi, _, errno := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, 0, 0, unix.LANDLOCK_CREATE_RULESET_VERSION)
	if errno != 0 || abi < 2 {
		return landlockNone
	}
	if abi >= 4 {
		attr := struct{ handledAccessFS, handledAccessNet uint64 }{0, unix.LANDLOCK_ACCESS_NET_CONNECT_TCP}
		if fd, errno := createRuleset(unsafe.Pointer(&attr), unsafe.Sizeof(attr)); errno == 0 {
			if restrictWith(fd) {
				return landlockNet
			}
		}
		// The network ruleset was refused (a kernel that reports 4 but does not take it, or a
		// test emulating an older kernel): fall back to the file-system domain.
	}
	const access = unix.LANDLOCK_ACCESS_FS_MAKE_BLOCK | unix.LANDLOCK_ACCESS_FS_REFER
	attr := struct{ handledAccessFS uint64 }{access}
	fd, errno := createRuleset(unsafe.Pointer(&attr), unsafe.Sizeof(attr))
	if errno != 0 {
		return landlockNone
	}
	root, err := unix.Open("/", unix.O_PATH|unix.O_CLOEXEC|unix.O_DIRECTORY, 0)
	if err != nil {
		unix.Close(fd)
		return landlockNone
	}
	rule := unix.LandlockPathBeneathAttr{Allowed_access: access, Parent_fd: int32(root)}
	_, _, errno = unix.Syscall6(unix.SYS_LANDLOCK_ADD_RULE, uintptr(fd), unix.LANDLOCK_RULE_PATH_BENEATH,
		uintptr(unsafe.Pointer(&rule)), 0, 0, 0)
	unix.Close(root)
	if errno != 0 {
		unix.Close(fd)
		return landlockNone
	}
	if !restrictWith(fd) {
		return landlockNone
	}
	return landlockFSScope
}

func createRuleset(attr unsafe.Pointer, size uintptr) (int, unix.Errno) {
	fd, _, errno := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, uintptr(attr), size, 0)
	return int(fd), errno
}

// restrictWith enforces the ruleset fd on the calling thread and closes it.
func restrictWith(fd int) bool {
	defer unix.Close(fd)
	_, _, errno := unix.Syscall(unix.SYS_LANDLOCK_RESTRICT_SELF, uintptr(fd), 0, 0)
	return errno == 0
}
