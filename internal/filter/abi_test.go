package filter

import (
	"testing"

	"golang.org/x/sys/unix"
)

// The native ABI's numbers must be the ones x/sys/unix has for this architecture (a wrong number
// would silently let a syscall through unmediated).
func TestNativeNumbers(t *testing.T) {
	abi := HostABIs[0]
	for _, c := range []struct {
		name      string
		got, want int32
	}{
		{"socket", abi.Socket, unix.SYS_SOCKET},
		{"connect", abi.Connect, unix.SYS_CONNECT},
		{"getpeername", abi.Getpeername, unix.SYS_GETPEERNAME},
		{"listen", abi.Listen, unix.SYS_LISTEN},
		{"bind", abi.Bind, unix.SYS_BIND},
		{"sendto", abi.Sendto, unix.SYS_SENDTO},
		{"sendmsg", abi.Sendmsg, unix.SYS_SENDMSG},
		{"sendmmsg", abi.Sendmmsg, unix.SYS_SENDMMSG},
		{"recvmsg", abi.Recvmsg, unix.SYS_RECVMSG},
		{"recvmmsg", abi.Recvmmsg, unix.SYS_RECVMMSG},
		{"io_uring_setup", abi.IOUringSetup, unix.SYS_IO_URING_SETUP},
		{"io_uring_enter", abi.IOUringEnter, unix.SYS_IO_URING_ENTER},
		{"io_uring_register", abi.IOUringRegist, unix.SYS_IO_URING_REGISTER},
		{"pidfd_getfd", abi.PidfdGetfd, unix.SYS_PIDFD_GETFD},
		{"ioctl", abi.Ioctl, unix.SYS_IOCTL},
	} {
		if c.got != c.want {
			t.Errorf("%s ABI: %s is %d, x/sys/unix says %d", abi.Name, c.name, c.got, c.want)
		}
	}
	if Lookup(abi.Arch) != abi {
		t.Errorf("Lookup(%#x) does not find the native ABI", abi.Arch)
	}
}
