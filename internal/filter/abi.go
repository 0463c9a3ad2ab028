package filter

import "golang.org/x/sys/unix"

// ABI is one system call convention the traced program may use. Numbers are -1 where the ABI has
// no such call.
type ABI struct {
	Name    string
	Arch    uint32 // AUDIT_ARCH_* value in seccomp_data.arch
	PtrSize int    // size of a pointer and of a long, in bytes

	Socket, Connect, Getpeername, Listen      int32
	Bind                                      int32 // notified with SealedTCP only
	Sendto, Sendmsg, Sendmmsg                 int32
	Recvmsg, Recvmmsg                         int32
	RecvmmsgTime64                            int32 // i386: recvmmsg with a 64-bit timespec
	Socketcall                                int32 // i386 multiplexer; args in memory
	IOUringSetup, IOUringEnter, IOUringRegist int32
	PidfdGetfd                                int32
	Ioctl                                     int32
	Setsockopt                                int32

	// X32Bit marks syscall numbers of the x32 ABI, which arrive labelled as x86_64 (0 if none).
	X32Bit uint32
}

// Socketcall sub-call numbers (linux/net.h).
const (
	SysSocket      = 1
	SysBind        = 2
	SysConnect     = 3
	SysListen      = 4
	SysGetpeername = 7
	SysSendto      = 11
	SysSendmsg     = 16
	SysSendmmsg    = 20
	SysSetsockopt  = 14
	SysRecvmsg     = 17
	SysRecvmmsg    = 19
)

var (
	// X86_64 is the native amd64 ABI.
	X86_64 = &ABI{Name: "x86_64", Arch: unix.AUDIT_ARCH_X86_64, PtrSize: 8,
		Socket: 41, Connect: 42, Getpeername: 52, Listen: 50, Bind: 49,
		Sendto: 44, Sendmsg: 46, Sendmmsg: 307, Socketcall: -1,
		Recvmsg: 47, Recvmmsg: 299, RecvmmsgTime64: -1,
		IOUringSetup: 425, IOUringEnter: 426, IOUringRegist: 427, PidfdGetfd: 438, Ioctl: 16, Setsockopt: 54,
		X32Bit: 0x40000000}
	// I386 is the 32-bit ABI reachable from amd64 (int 0x80, 32-bit binaries).
	I386 = &ABI{Name: "i386", Arch: unix.AUDIT_ARCH_I386, PtrSize: 4,
		Socket: 359, Connect: 362, Getpeername: 368, Listen: 363, Bind: 361,
		Sendto: 369, Sendmsg: 370, Sendmmsg: 345, Socketcall: 102,
		Recvmsg: 372, Recvmmsg: 337, RecvmmsgTime64: 417,
		IOUringSetup: 425, IOUringEnter: 426, IOUringRegist: 427, PidfdGetfd: 438, Ioctl: 54, Setsockopt: 366}
	// AArch64 is the native arm64 ABI.
	AArch64 = &ABI{Name: "aarch64", Arch: unix.AUDIT_ARCH_AARCH64, PtrSize: 8,
		Socket: 198, Connect: 203, Getpeername: 205, Listen: 201, Bind: 200,
		Sendto: 206, Sendmsg: 211, Sendmmsg: 269, Socketcall: -1,
		Recvmsg: 212, Recvmmsg: 243, RecvmmsgTime64: -1,
		IOUringSetup: 425, IOUringEnter: 426, IOUringRegist: 427, PidfdGetfd: 438, Ioctl: 29, Setsockopt: 208}
)

// Lookup returns the ABI of a notification's arch field, or nil for one this build does not serve.
func Lookup(arch uint32) *ABI {
	for _, a := range HostABIs {
		if a.Arch == arch {
			return a
		}
	}
	return nil
}

// ioctl requests the filter notifies so that the supervisor refuses them (EPERM, one log line).
const (
	// TIOCSTI pushes a byte into a terminal's input queue: the program could type commands into
	// the shell that started torsocks, which runs them unwrapped after torsocks exits.
	TIOCSTI = 0x5412
	// TIOCLINUX (subcode 2/3: selection paste) can inject input into a virtual console the same way.
	TIOCLINUX = 0x541c
	// TUNSETIFF attaches a TUN/TAP device: packets written to it leave by a route Tor never sees.
	TUNSETIFF = 0x400454ca
)

// RefusedIoctls are the ioctl requests the filter notifies.
var RefusedIoctls = []uint32{TIOCSTI, TIOCLINUX, TUNSETIFF}
