package filter

import (
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// BuildFactory returns the filter the UDP sandbox's socket factory puts on itself. The factory
// lives in the sandbox's network namespace and only makes sockets there, but it is a process
// outside the program's tree: on a kernel without Landlock a non-root program owns the factory's
// user namespace, so it can ptrace the factory and make it do what it wants. Whatever it then makes
// the factory do, the factory cannot open a connection: connect, every socketcall (i386), sends
// with MSG_FASTOPEN and io_uring are refused, x32 numbers too, and an unknown ABI is killed. The
// factory itself needs none of them.
func BuildFactory(abis []*ABI) ([]unix.SockFilter, error) {
	var a asm
	a.ins(bpf.LoadAbsolute{Off: offArch, Size: 4})
	for _, abi := range abis {
		a.jeq(abi.Arch, "abi_"+abi.Name, "")
	}
	a.ret(actKill)
	for _, abi := range abis {
		p := abi.Name + "_"
		a.label("abi_" + abi.Name)
		a.ins(bpf.LoadAbsolute{Off: offNr, Size: 4})
		if abi.X32Bit != 0 {
			a.jset(abi.X32Bit, "eperm", "")
		}
		a.jeqNr(abi.Connect, "eperm")
		a.jeqNr(abi.Socketcall, "eperm")
		a.jeqNr(abi.Sendto, p+"flags3")
		a.jeqNr(abi.Sendmmsg, p+"flags3")
		a.jeqNr(abi.Sendmsg, p+"flags2")
		for _, nr := range []int32{abi.IOUringSetup, abi.IOUringEnter, abi.IOUringRegist} {
			a.jeqNr(nr, "eperm")
		}
		a.ret(actAllow)
		a.label(p + "flags3")
		a.ins(bpf.LoadAbsolute{Off: offArg(3), Size: 4})
		a.jset(unix.MSG_FASTOPEN, "eperm", "allow")
		a.label(p + "flags2")
		a.ins(bpf.LoadAbsolute{Off: offArg(2), Size: 4})
		a.jset(unix.MSG_FASTOPEN, "eperm", "allow")
	}
	a.label("allow")
	a.ret(actAllow)
	a.label("eperm")
	a.ret(actErrno(unix.EPERM))
	return a.assemble()
}
