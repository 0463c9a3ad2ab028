package filter

import (
	"encoding/binary"
	"testing"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// run evaluates the filter on a seccomp_data. x/net/bpf's VM loads words big-endian while the
// kernel loads them native-endian, so the data is laid out big-endian word by word here.
func run(t *testing.T, prog []unix.SockFilter, arch uint32, nr uint32, args ...uint64) uint32 {
	t.Helper()
	insns := make([]bpf.Instruction, len(prog))
	for i, f := range prog {
		insns[i] = bpf.RawInstruction{Op: f.Code, Jt: f.Jt, Jf: f.Jf, K: f.K}.Disassemble()
	}
	vm, err := bpf.NewVM(insns)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 64)
	binary.BigEndian.PutUint32(data[0:], nr)
	binary.BigEndian.PutUint32(data[4:], arch)
	for i, a := range args {
		binary.BigEndian.PutUint32(data[16+8*i:], uint32(a))
		binary.BigEndian.PutUint32(data[16+8*i+4:], uint32(a>>32))
	}
	out, err := vm.Run(data)
	if err != nil {
		t.Fatal(err)
	}
	return uint32(out)
}

func TestFilterDecisions(t *testing.T) {
	prog, err := Build([]*ABI{X86_64, I386, AArch64}, Options{EnableIPv6: true})
	if err != nil {
		t.Fatal(err)
	}
	noV6, err := Build([]*ABI{X86_64}, Options{EnableIPv6: false})
	if err != nil {
		t.Fatal(err)
	}
	vet, err := Build([]*ABI{X86_64, I386, AArch64}, Options{EnableIPv6: true, VetReceived: true})
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := Build([]*ABI{X86_64, I386, AArch64}, Options{EnableIPv6: true, SealedTCP: true})
	if err != nil {
		t.Fatal(err)
	}
	sealedNoV6, err := Build([]*ABI{X86_64}, Options{EnableIPv6: false, SealedTCP: true})
	if err != nil {
		t.Fatal(err)
	}
	peer, err := Build([]*ABI{X86_64, I386, AArch64}, Options{EnableIPv6: true, SealedTCP: true, PeerByKernel: true})
	if err != nil {
		t.Fatal(err)
	}
	peerHost, err := Build([]*ABI{X86_64, I386}, Options{EnableIPv6: true, PeerByKernel: true})
	if err != nil {
		t.Fatal(err)
	}
	const (
		allow  = actAllow
		notify = actNotify
		kill   = actKill
	)
	enosys := actErrno(unix.ENOSYS)
	eperm := actErrno(unix.EPERM)
	x, i, a := X86_64, I386, AArch64
	cases := []struct {
		name string
		prog []unix.SockFilter
		abi  *ABI
		arch uint32
		nr   int32
		args []uint64
		want uint32
	}{
		{"read", prog, x, 0, 0, nil, allow},
		{"connect", prog, x, 0, x.Connect, nil, notify},
		{"getpeername", prog, x, 0, x.Getpeername, nil, notify},
		{"getpeername, sealed", sealed, x, 0, x.Getpeername, nil, notify},
		{"getpeername, sealed, by the kernel", peer, x, 0, x.Getpeername, nil, allow},
		{"i386 getpeername, by the kernel", peer, i, 0, i.Getpeername, nil, allow},
		{"i386 socketcall getpeername, by the kernel", peer, i, 0, i.Socketcall, []uint64{SysGetpeername, 0}, allow},
		{"i386 socketcall getpeername", sealed, i, 0, i.Socketcall, []uint64{SysGetpeername, 0}, notify},
		{"arm64 getpeername, by the kernel", peer, a, 0, a.Getpeername, nil, allow},
		{"connect, peer by the kernel", peer, x, 0, x.Connect, nil, notify},
		{"i386 socketcall connect, peer by the kernel", peer, i, 0, i.Socketcall, []uint64{SysConnect, 0}, notify},
		{"getpeername, by the kernel without SealedTCP: notified", peerHost, x, 0, x.Getpeername, nil, notify},
		{"i386 socketcall getpeername, by the kernel without SealedTCP", peerHost, i, 0, i.Socketcall, []uint64{SysGetpeername, 0}, notify},
		{"listen", prog, x, 0, x.Listen, nil, notify},
		{"bind, host mode", prog, x, 0, x.Bind, nil, allow},
		{"bind, sealed", sealed, x, 0, x.Bind, nil, notify},
		{"i386 bind, host mode", prog, i, 0, i.Bind, nil, allow},
		{"i386 bind, sealed", sealed, i, 0, i.Bind, nil, notify},
		{"i386 socketcall bind, host mode", prog, i, 0, i.Socketcall, []uint64{SysBind, 0}, allow},
		{"i386 socketcall bind, sealed", sealed, i, 0, i.Socketcall, []uint64{SysBind, 0}, notify},
		{"arm64 bind, sealed", sealed, a, 0, a.Bind, nil, notify},
		{"tcp socket", prog, x, 0, x.Socket, []uint64{unix.AF_INET, unix.SOCK_STREAM | unix.SOCK_CLOEXEC, 0}, allow},
		{"tcp socket proto 6", prog, x, 0, x.Socket, []uint64{unix.AF_INET6, unix.SOCK_STREAM, 6}, allow},
		{"tcp6 socket v6 off", noV6, x, 0, x.Socket, []uint64{unix.AF_INET6, unix.SOCK_STREAM, 6}, notify},
		{"sctp stream", prog, x, 0, x.Socket, []uint64{unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_SCTP}, notify},
		{"mptcp", prog, x, 0, x.Socket, []uint64{unix.AF_INET, unix.SOCK_STREAM, 262}, notify},
		{"udp socket", prog, x, 0, x.Socket, []uint64{unix.AF_INET, unix.SOCK_DGRAM, 0}, notify},
		{"raw socket", prog, x, 0, x.Socket, []uint64{unix.AF_INET, unix.SOCK_RAW, 1}, notify},
		{"packet socket", prog, x, 0, x.Socket, []uint64{unix.AF_PACKET, unix.SOCK_RAW, 0}, notify},
		{"vsock", prog, x, 0, x.Socket, []uint64{unix.AF_VSOCK, unix.SOCK_STREAM, 0}, notify},
		{"unix socket", prog, x, 0, x.Socket, []uint64{unix.AF_UNIX, unix.SOCK_DGRAM, 0}, allow},
		{"netlink socket", prog, x, 0, x.Socket, []uint64{unix.AF_NETLINK, unix.SOCK_RAW, 0}, allow},
		{"high bits ignored like the kernel", prog, x, 0, x.Socket, []uint64{1<<32 | unix.AF_INET, unix.SOCK_DGRAM, 0}, notify},
		{"sendto plain", prog, x, 0, x.Sendto, []uint64{3, 0, 10, 0, 0, 0}, allow},
		{"sendto fastopen", prog, x, 0, x.Sendto, []uint64{3, 0, 10, unix.MSG_FASTOPEN, 0, 0}, notify},
		{"sendmsg fastopen", prog, x, 0, x.Sendmsg, []uint64{3, 0, unix.MSG_FASTOPEN | unix.MSG_NOSIGNAL}, notify},
		{"sendmsg plain", prog, x, 0, x.Sendmsg, []uint64{3, 0, unix.MSG_NOSIGNAL}, allow},
		{"sendmmsg fastopen", prog, x, 0, x.Sendmmsg, []uint64{3, 0, 1, unix.MSG_FASTOPEN}, notify},
		{"io_uring_setup", prog, x, 0, x.IOUringSetup, nil, enosys},
		{"io_uring_enter", prog, x, 0, x.IOUringEnter, nil, enosys},
		{"io_uring_register", prog, x, 0, x.IOUringRegist, nil, enosys},
		{"pidfd_getfd", prog, x, 0, x.PidfdGetfd, nil, eperm},
		{"ioctl TIOCSTI", prog, x, 0, x.Ioctl, []uint64{0, unix.TIOCSTI}, notify},
		{"ioctl TIOCSTI high bits ignored like the kernel", prog, x, 0, x.Ioctl, []uint64{0, 1<<32 | unix.TIOCSTI}, notify},
		{"ioctl TIOCLINUX", prog, x, 0, x.Ioctl, []uint64{0, unix.TIOCLINUX}, notify},
		{"ioctl TUNSETIFF", prog, x, 0, x.Ioctl, []uint64{0, unix.TUNSETIFF}, notify},
		{"ioctl TCGETS", prog, x, 0, x.Ioctl, []uint64{0, unix.TCGETS}, allow},
		{"ioctl TIOCINQ", prog, x, 0, x.Ioctl, []uint64{0, unix.TIOCINQ}, allow},
		{"i386 ioctl TIOCSTI", prog, i, 0, i.Ioctl, []uint64{0, unix.TIOCSTI}, notify},
		{"i386 ioctl TUNSETIFF", prog, i, 0, i.Ioctl, []uint64{0, unix.TUNSETIFF}, notify},
		{"i386 ioctl TCGETS", prog, i, 0, i.Ioctl, []uint64{0, unix.TCGETS}, allow},
		{"arm64 ioctl TIOCSTI", prog, a, 0, a.Ioctl, []uint64{0, unix.TIOCSTI}, notify},
		{"arm64 ioctl TIOCLINUX", prog, a, 0, a.Ioctl, []uint64{0, unix.TIOCLINUX}, notify},
		{"arm64 ioctl TCGETS", prog, a, 0, a.Ioctl, []uint64{0, unix.TCGETS}, allow},
		{"x32 connect", prog, x, 0, 0x40000000 | 42, nil, enosys},
		{"x32 read", prog, x, 0, 0x40000000, nil, enosys},
		{"i386 connect", prog, i, 0, i.Connect, nil, notify},
		{"i386 socketcall connect", prog, i, 0, i.Socketcall, []uint64{SysConnect, 0}, notify},
		{"i386 socketcall socket", prog, i, 0, i.Socketcall, []uint64{SysSocket, 0}, notify},
		{"i386 socketcall sendto", prog, i, 0, i.Socketcall, []uint64{SysSendto, 0}, notify},
		{"i386 socketcall recv", prog, i, 0, i.Socketcall, []uint64{10, 0}, allow},
		{"i386 socket udp", prog, i, 0, i.Socket, []uint64{unix.AF_INET, unix.SOCK_DGRAM, 0}, notify},
		{"i386 socket tcp", prog, i, 0, i.Socket, []uint64{unix.AF_INET, unix.SOCK_STREAM, 0}, allow},
		{"i386 x32-bit is not special", prog, i, 0, 3, nil, allow},
		{"arm64 connect", prog, a, 0, a.Connect, nil, notify},
		{"arm64 udp", prog, a, 0, a.Socket, []uint64{unix.AF_INET, unix.SOCK_DGRAM, 0}, notify},
		{"recvmsg, vetting off", prog, x, 0, x.Recvmsg, []uint64{3, 0, 0}, allow},
		{"recvmmsg, vetting off", prog, x, 0, x.Recvmmsg, []uint64{3, 0, 1, 0, 0}, allow},
		{"i386 recvmsg, vetting off", prog, i, 0, i.Recvmsg, nil, allow},
		{"i386 socketcall recvmsg, vetting off", prog, i, 0, i.Socketcall, []uint64{SysRecvmsg, 0}, allow},
		{"recvmsg", vet, x, 0, x.Recvmsg, []uint64{3, 0, 0}, notify},
		{"recvmmsg", vet, x, 0, x.Recvmmsg, []uint64{3, 0, 1, 0, 0}, notify},
		{"recvfrom, vetting on", vet, x, 0, 45, nil, allow},
		{"connect, vetting on", vet, x, 0, x.Connect, nil, notify},
		{"tcp socket, vetting on", vet, x, 0, x.Socket, []uint64{unix.AF_INET, unix.SOCK_STREAM, 0}, allow},
		{"i386 recvmsg", vet, i, 0, i.Recvmsg, nil, notify},
		{"i386 recvmmsg", vet, i, 0, i.Recvmmsg, nil, notify},
		{"i386 recvmmsg_time64", vet, i, 0, i.RecvmmsgTime64, nil, notify},
		{"i386 socketcall recvmsg", vet, i, 0, i.Socketcall, []uint64{SysRecvmsg, 0}, notify},
		{"i386 socketcall recvmmsg", vet, i, 0, i.Socketcall, []uint64{SysRecvmmsg, 0}, notify},
		{"i386 socketcall recvfrom, vetting on", vet, i, 0, i.Socketcall, []uint64{12, 0}, allow},
		{"i386 socketcall connect, vetting on", vet, i, 0, i.Socketcall, []uint64{SysConnect, 0}, notify},
		{"arm64 recvmsg", vet, a, 0, a.Recvmsg, nil, notify},
		{"arm64 recvmmsg", vet, a, 0, a.Recvmmsg, nil, notify},
		{"arm64 read, vetting on", vet, a, 0, 63, nil, allow},
		{"sealed tcp socket", sealed, x, 0, x.Socket, []uint64{unix.AF_INET, unix.SOCK_STREAM | unix.SOCK_CLOEXEC, 0}, notify},
		{"sealed tcp socket nonblock", sealed, x, 0, x.Socket, []uint64{unix.AF_INET, unix.SOCK_STREAM | unix.SOCK_NONBLOCK, 6}, notify},
		{"sealed tcp6 socket", sealed, x, 0, x.Socket, []uint64{unix.AF_INET6, unix.SOCK_STREAM, 0}, notify},
		{"sealed tcp6 socket v6 off", sealedNoV6, x, 0, x.Socket, []uint64{unix.AF_INET6, unix.SOCK_STREAM, 0}, notify},
		{"sealed i386 tcp socket", sealed, i, 0, i.Socket, []uint64{unix.AF_INET, unix.SOCK_STREAM, 0}, notify},
		{"sealed i386 socketcall socket", sealed, i, 0, i.Socketcall, []uint64{SysSocket, 0}, notify},
		{"sealed arm64 tcp socket", sealed, a, 0, a.Socket, []uint64{unix.AF_INET, unix.SOCK_STREAM, 0}, notify},
		{"sealed arm64 tcp6 socket", sealed, a, 0, a.Socket, []uint64{unix.AF_INET6, unix.SOCK_STREAM, 6}, notify},
		{"sealed unix socket", sealed, x, 0, x.Socket, []uint64{unix.AF_UNIX, unix.SOCK_STREAM, 0}, allow},
		{"sealed netlink socket", sealed, x, 0, x.Socket, []uint64{unix.AF_NETLINK, unix.SOCK_RAW, 0}, allow},
		{"sealed udp socket", sealed, x, 0, x.Socket, []uint64{unix.AF_INET, unix.SOCK_DGRAM, 0}, notify},
		{"sealed connect", sealed, x, 0, x.Connect, nil, notify},
		{"unknown arch", prog, nil, unix.AUDIT_ARCH_ARM, 0, nil, kill},
		{"i386 on a x86_64-only filter", noV6, i, 0, i.Connect, nil, kill},
	}
	for _, c := range cases {
		arch := c.arch
		if c.abi != nil {
			arch = c.abi.Arch
		}
		if got := run(t, c.prog, arch, uint32(c.nr), c.args...); got != c.want {
			t.Errorf("%s: got %#x, want %#x", c.name, got, c.want)
		}
	}
}
