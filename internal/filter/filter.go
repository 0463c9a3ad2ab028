package filter

import (
	"fmt"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Options shape the filter.
type Options struct {
	// EnableIPv6 allows AF_INET6 stream sockets to be created unmediated. When false they are
	// notified and refused (torsocks' "EnableIPv6 0": ENOSYS, so programs fall back to IPv4).
	EnableIPv6 bool
	// VetReceived notifies recvmsg and recvmmsg (and on i386 their socketcall sub-calls), so the
	// supervisor can carry them out and vet the descriptors a message brings (VetReceivedSockets).
	// BPF cannot see the msghdr, so every call is notified.
	VetReceived bool
	// SealedTCP notifies the creation of inet and inet6 TCP stream sockets too, so the supervisor
	// makes them in the sandbox network namespace (SealedNetwork) and installs them with ADDFD.
	SealedTCP bool
	// PeerByKernel (with SealedTCP) lets getpeername run unnotified: every TCP socket of the
	// program is then one of the sandbox, joined inside it to an endpoint bound to the address
	// the program connected to, so the kernel's answer is the one a direct connection gives. The
	// caller sets it only where the sandbox is known to work (run: peerByKernel); a program whose
	// sockets stay on the host network needs the supervisor's answer (the kernel's would be Tor's
	// SocksPort). It saves one notification per getpeername: Go calls it after every connect.
	PeerByKernel bool
}

// seccomp_data offsets (little-endian: an argument's low 32 bits are at its offset).
const (
	offNr   = 0
	offArch = 4
)

func offArg(i int) uint32 { return 16 + 8*uint32(i) }

// Actions (golang.org/x/sys/unix's names).
const (
	actAllow  = unix.SECCOMP_RET_ALLOW
	actNotify = unix.SECCOMP_RET_USER_NOTIF
	actKill   = unix.SECCOMP_RET_KILL_PROCESS
)

func actErrno(e unix.Errno) uint32 { return unix.SECCOMP_RET_ERRNO | uint32(e) }

// Build returns the BPF program for the given ABIs. Every ABI not listed kills the process.
//
// Per ABI:
//   - connect, getpeername, listen: notified (their decisions need the socket and memory);
//     getpeername allowed with SealedTCP and PeerByKernel.
//     bind: notified with SealedTCP (a TCP socket of the sandbox bound to port 0 gets a port that
//     is free on the host too, where its listener will be mirrored), else allowed.
//   - socket: allowed for unix, netlink and inet/inet6 TCP stream (with SealedTCP the TCP ones are
//     notified too, for the supervisor to make them in the sandbox); anything else notified, so
//     the supervisor can log why and refuse it (the supervisor never lets it run).
//   - sendto/sendmsg/sendmmsg: allowed unless MSG_FASTOPEN is set (a connect in disguise).
//     Ordinary sends need no mediation: UDP and raw sockets cannot be created, and a TCP socket
//     can only send on a connection the supervisor made.
//   - socketcall (i386): its arguments are in memory, so every sub-call that socket, connect,
//     listen, getpeername, the send family (and with SealedTCP, bind) reach is notified.
//   - setsockopt: allowed for the options on the allowlist (sockopt.go), checked on level and
//     name; any other notified, for the supervisor to refuse.
//   - ioctl: notified for the requests in RefusedIoctls (the supervisor refuses them with a log
//     line); every other request allowed.
//   - recvmsg, recvmmsg (and recvmmsg_time64): notified when Options.VetReceived, else allowed.
//   - io_uring: ENOSYS (IORING_OP_CONNECT would bypass everything); pidfd_getfd: EPERM (it could
//     take a socket from a process outside the tree); x32 numbers: ENOSYS.
func Build(abis []*ABI, opts Options) ([]unix.SockFilter, error) {
	var a asm
	// One section per ABI, each entered from an arch check in front of it and ending in its own
	// return instructions, so that no jump spans more than one section (BPF jumps reach 255).
	for i, abi := range abis {
		p := abi.Name + "_"
		a.label(fmt.Sprintf("arch%d", i))
		a.ins(bpf.LoadAbsolute{Off: offArch, Size: 4})
		a.jeq(abi.Arch, "", fmt.Sprintf("arch%d", i+1))
		a.ins(bpf.LoadAbsolute{Off: offNr, Size: 4})
		if abi.X32Bit != 0 {
			a.jset(abi.X32Bit, p+"enosys", "")
		}
		for _, nr := range []int32{abi.Connect, abi.Listen} {
			a.jeqNr(nr, p+"notify")
		}
		peerByKernel := opts.SealedTCP && opts.PeerByKernel
		if !peerByKernel {
			a.jeqNr(abi.Getpeername, p+"notify")
		}
		if opts.SealedTCP {
			a.jeqNr(abi.Bind, p+"notify")
		}
		if opts.VetReceived {
			for _, nr := range []int32{abi.Recvmsg, abi.Recvmmsg, abi.RecvmmsgTime64} {
				a.jeqNr(nr, p+"notify")
			}
		}
		a.jeqNr(abi.Socket, p+"socket")
		a.jeqNr(abi.Sendto, p+"flags3")
		a.jeqNr(abi.Sendmmsg, p+"flags3")
		a.jeqNr(abi.Sendmsg, p+"flags2")
		a.jeqNr(abi.Socketcall, p+"socketcall")
		for _, nr := range []int32{abi.IOUringSetup, abi.IOUringEnter, abi.IOUringRegist} {
			a.jeqNr(nr, p+"enosys")
		}
		a.jeqNr(abi.PidfdGetfd, p+"eperm")
		a.jeqNr(abi.Ioctl, p+"ioctl")
		a.jeqNr(abi.Setsockopt, p+"setsockopt")
		a.ret(actAllow)

		a.setsockoptBlock(p) // sockopt.go

		// ioctl: the kernel's request is an unsigned int, so only the low 32 bits of arg 1 count.
		a.label(p + "ioctl")
		a.ins(bpf.LoadAbsolute{Off: offArg(1), Size: 4})
		for _, req := range RefusedIoctls {
			a.jeq(req, p+"notify", "")
		}
		a.ret(actAllow)

		a.label(p + "flags3")
		a.ins(bpf.LoadAbsolute{Off: offArg(3), Size: 4})
		a.jset(unix.MSG_FASTOPEN, p+"notify", p+"allow")
		a.label(p + "flags2")
		a.ins(bpf.LoadAbsolute{Off: offArg(2), Size: 4})
		a.jset(unix.MSG_FASTOPEN, p+"notify", p+"allow")

		if abi.Socketcall >= 0 {
			a.label(p + "socketcall")
			a.ins(bpf.LoadAbsolute{Off: offArg(0), Size: 4})
			subs := []uint32{SysSocket, SysConnect, SysListen, SysSendto, SysSendmsg, SysSendmmsg, SysSetsockopt}
			if !peerByKernel {
				subs = append(subs, SysGetpeername)
			}
			if opts.VetReceived {
				subs = append(subs, SysRecvmsg, SysRecvmmsg)
			}
			if opts.SealedTCP {
				subs = append(subs, SysBind)
			}
			for _, c := range subs {
				a.jeq(c, p+"notify", "")
			}
			a.ret(actAllow)
		}

		a.label(p + "socket")
		a.ins(bpf.LoadAbsolute{Off: offArg(0), Size: 4})
		a.jeq(unix.AF_UNIX, p+"allow", "")
		a.jeq(unix.AF_NETLINK, p+"allow", "")
		a.jeq(unix.AF_INET, p+"inet", "")
		if opts.EnableIPv6 {
			a.jeq(unix.AF_INET6, p+"inet", "")
		}
		a.ret(actNotify)
		a.label(p + "inet")
		a.ins(bpf.LoadAbsolute{Off: offArg(1), Size: 4})
		a.ins(bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0xf})
		a.jeq(unix.SOCK_STREAM, p+"stream", p+"notify")
		a.label(p + "stream")
		if opts.SealedTCP {
			a.ret(actNotify)
		} else {
			a.ins(bpf.LoadAbsolute{Off: offArg(2), Size: 4})
			a.jeq(0, p+"allow", "")
			a.jeq(unix.IPPROTO_TCP, p+"allow", p+"notify")
		}
		a.label(p + "allow")
		a.ret(actAllow)
		a.label(p + "notify")
		a.ret(actNotify)
		a.label(p + "enosys")
		a.ret(actErrno(unix.ENOSYS))
		a.label(p + "eperm")
		a.ret(actErrno(unix.EPERM))
	}
	a.label(fmt.Sprintf("arch%d", len(abis)))
	a.ret(actKill)
	return a.assemble()
}

// asm is a tiny assembler with labels over x/net/bpf instructions.
type asm struct {
	prog   []bpf.Instruction
	jumps  map[int][2]string // pc -> (true label, false label); "" = next instruction
	labels map[string]int
}

func (a *asm) ins(i bpf.Instruction) { a.prog = append(a.prog, i) }
func (a *asm) ret(v uint32)          { a.ins(bpf.RetConstant{Val: v}) }

func (a *asm) label(name string) {
	if a.labels == nil {
		a.labels = map[string]int{}
	}
	a.labels[name] = len(a.prog)
}

func (a *asm) jump(cond bpf.JumpTest, val uint32, t, f string) {
	if a.jumps == nil {
		a.jumps = map[int][2]string{}
	}
	a.jumps[len(a.prog)] = [2]string{t, f}
	a.ins(bpf.JumpIf{Cond: cond, Val: val})
}

func (a *asm) jeq(val uint32, t, f string)  { a.jump(bpf.JumpEqual, val, t, f) }
func (a *asm) jset(val uint32, t, f string) { a.jump(bpf.JumpBitsSet, val, t, f) }

// jeqNr jumps to t when the loaded syscall number is nr; nr < 0 means the ABI has no such call.
func (a *asm) jeqNr(nr int32, t string) {
	if nr >= 0 {
		a.jeq(uint32(nr), t, "")
	}
}

func (a *asm) assemble() ([]unix.SockFilter, error) {
	for pc, j := range a.jumps {
		ji := a.prog[pc].(bpf.JumpIf)
		skip := func(label string) (uint8, error) {
			if label == "" {
				return 0, nil
			}
			target, ok := a.labels[label]
			if !ok {
				return 0, fmt.Errorf("filter: undefined label %q", label)
			}
			d := target - pc - 1
			if d < 0 || d > 255 {
				return 0, fmt.Errorf("filter: jump from %d to %q (%d) out of range", pc, label, target)
			}
			return uint8(d), nil
		}
		var err error
		if ji.SkipTrue, err = skip(j[0]); err != nil {
			return nil, err
		}
		if ji.SkipFalse, err = skip(j[1]); err != nil {
			return nil, err
		}
		a.prog[pc] = ji
	}
	raw, err := bpf.Assemble(a.prog)
	if err != nil {
		return nil, fmt.Errorf("filter: assemble: %w", err)
	}
	out := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		out[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	return out, nil
}
