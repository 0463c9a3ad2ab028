package filter

import (
	"testing"

	"golang.org/x/sys/unix"
)

func TestFactoryFilterDecisions(t *testing.T) {
	prog, err := BuildFactory([]*ABI{X86_64, I386, AArch64})
	if err != nil {
		t.Fatal(err)
	}
	eperm := actErrno(unix.EPERM)
	x, i, a := X86_64, I386, AArch64
	cases := []struct {
		name string
		abi  *ABI
		nr   int32
		args []uint64
		want uint32
	}{
		{"x86_64 socket", x, x.Socket, []uint64{unix.AF_INET, unix.SOCK_DGRAM, 0}, actAllow},
		{"x86_64 connect", x, x.Connect, nil, eperm},
		{"x86_64 sendmsg (the factory's own)", x, x.Sendmsg, []uint64{3, 0, 0}, actAllow},
		{"x86_64 sendmsg MSG_FASTOPEN", x, x.Sendmsg, []uint64{3, 0, unix.MSG_FASTOPEN}, eperm},
		{"x86_64 sendto MSG_FASTOPEN", x, x.Sendto, []uint64{3, 0, 0, unix.MSG_FASTOPEN}, eperm},
		{"x86_64 sendmmsg MSG_FASTOPEN", x, x.Sendmmsg, []uint64{3, 0, 0, unix.MSG_FASTOPEN}, eperm},
		{"x86_64 sendto", x, x.Sendto, []uint64{3, 0, 0, 0}, actAllow},
		{"x86_64 io_uring_setup", x, x.IOUringSetup, nil, eperm},
		{"x32 connect", x, int32(x.X32Bit) | x.Connect, nil, eperm},
		{"x86_64 read", x, 0, nil, actAllow},
		{"i386 socketcall", i, i.Socketcall, []uint64{SysSocket}, eperm},
		{"i386 connect", i, i.Connect, nil, eperm},
		{"aarch64 connect", a, a.Connect, nil, eperm},
		{"aarch64 sendmsg MSG_FASTOPEN", a, a.Sendmsg, []uint64{3, 0, unix.MSG_FASTOPEN}, eperm},
		{"aarch64 read", a, 63, nil, actAllow},
	}
	for _, c := range cases {
		if got := run(t, prog, c.abi.Arch, uint32(c.nr), c.args...); got != c.want {
			t.Errorf("%s: got %#x, want %#x", c.name, got, c.want)
		}
	}
	if got := run(t, prog, unix.AUDIT_ARCH_ARM, 0); got != actKill {
		t.Errorf("unknown arch: got %#x, want kill", got)
	}
}
