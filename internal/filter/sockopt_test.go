package filter

import (
	"testing"

	"golang.org/x/sys/unix"
)

func TestSetsockoptDecisions(t *testing.T) {
	prog, err := Build([]*ABI{X86_64, I386, AArch64}, Options{EnableIPv6: true, VetReceived: true})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name        string
		level, opt  uint64
		wantAllowed bool
	}{
		{"SO_KEEPALIVE", unix.SOL_SOCKET, unix.SO_KEEPALIVE, true},
		{"SO_REUSEADDR", unix.SOL_SOCKET, unix.SO_REUSEADDR, true},
		{"SO_RCVTIMEO_NEW", unix.SOL_SOCKET, unix.SO_RCVTIMEO_NEW, true},
		{"SO_BINDTODEVICE", unix.SOL_SOCKET, unix.SO_BINDTODEVICE, false},
		{"SO_BINDTOIFINDEX", unix.SOL_SOCKET, unix.SO_BINDTOIFINDEX, false},
		{"SO_MARK", unix.SOL_SOCKET, unix.SO_MARK, false},
		{"SO_DONTROUTE", unix.SOL_SOCKET, unix.SO_DONTROUTE, false},
		{"IP_TOS", unix.IPPROTO_IP, unix.IP_TOS, true},
		{"IP_RECVERR", unix.IPPROTO_IP, unix.IP_RECVERR, true},
		{"IP_MTU_DISCOVER", unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, true},
		{"IP_ADD_MEMBERSHIP", unix.IPPROTO_IP, unix.IP_ADD_MEMBERSHIP, true},
		{"IP_OPTIONS", unix.IPPROTO_IP, unix.IP_OPTIONS, false},
		{"IP_RETOPTS", unix.IPPROTO_IP, unix.IP_RETOPTS, false},
		{"IP_UNICAST_IF", unix.IPPROTO_IP, unix.IP_UNICAST_IF, false},
		{"IP_TRANSPARENT", unix.IPPROTO_IP, unix.IP_TRANSPARENT, false},
		{"IPV6_V6ONLY", unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, true},
		{"IPV6_TCLASS", unix.IPPROTO_IPV6, unix.IPV6_TCLASS, true},
		{"IPV6_RECVPKTINFO", unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, true},
		{"IPV6_RTHDR", unix.IPPROTO_IPV6, unix.IPV6_RTHDR, false},
		{"IPV6_2292RTHDR", unix.IPPROTO_IPV6, unix.IPV6_2292RTHDR, false},
		{"IPV6_PKTINFO", unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, false},
		{"IPV6_NEXTHOP", unix.IPPROTO_IPV6, unix.IPV6_NEXTHOP, false},
		{"IPV6_UNICAST_IF", unix.IPPROTO_IPV6, unix.IPV6_UNICAST_IF, false},
		{"TCP_NODELAY", unix.IPPROTO_TCP, unix.TCP_NODELAY, true},
		{"TCP_KEEPIDLE", unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, true},
		{"TCP_FASTOPEN_CONNECT", unix.IPPROTO_TCP, unix.TCP_FASTOPEN_CONNECT, true},
		{"TCP_REPAIR", unix.IPPROTO_TCP, unix.TCP_REPAIR, false},
		// A dropped SYN-ACK would hold a blocking connect for minutes; a non-local source address
		// would have the replies routed out of the machine.
		{"TCP_MD5SIG", unix.IPPROTO_TCP, unix.TCP_MD5SIG, false},
		{"TCP_MD5SIG_EXT", unix.IPPROTO_TCP, unix.TCP_MD5SIG_EXT, false},
		{"TCP_AO_ADD_KEY", unix.IPPROTO_TCP, tcpAOaddkey, false},
		{"TCP_AO_INFO", unix.IPPROTO_TCP, tcpAOinfo, false},
		{"TCP_THIN_LINEAR_TIMEOUTS", unix.IPPROTO_TCP, unix.TCP_THIN_LINEAR_TIMEOUTS, true},
		{"TCP_FASTOPEN_KEY", unix.IPPROTO_TCP, unix.TCP_FASTOPEN_KEY, true},
		{"TCP_TX_DELAY", unix.IPPROTO_TCP, unix.TCP_TX_DELAY, true},
		{"IP_MINTTL", unix.IPPROTO_IP, unix.IP_MINTTL, false},
		{"IP_FREEBIND", unix.IPPROTO_IP, unix.IP_FREEBIND, false},
		{"IP_RECVTOS", unix.IPPROTO_IP, unix.IP_RECVTOS, true},
		{"IP_PASSSEC", unix.IPPROTO_IP, unix.IP_PASSSEC, true},
		{"IP_RECVORIGDSTADDR", unix.IPPROTO_IP, unix.IP_RECVORIGDSTADDR, true},
		{"IPV6_MINHOPCOUNT", unix.IPPROTO_IPV6, unix.IPV6_MINHOPCOUNT, false},
		{"IPV6_FREEBIND", unix.IPPROTO_IPV6, unix.IPV6_FREEBIND, false},
		{"IPV6_ADDR_PREFERENCES", unix.IPPROTO_IPV6, unix.IPV6_ADDR_PREFERENCES, true},
		{"IPV6_RECVORIGDSTADDR", unix.IPPROTO_IPV6, unix.IPV6_RECVORIGDSTADDR, true},
		{"SO_ATTACH_FILTER", unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, false},
		{"SO_ATTACH_BPF", unix.SOL_SOCKET, unix.SO_ATTACH_BPF, false},
		{"SO_DETACH_FILTER", unix.SOL_SOCKET, unix.SO_DETACH_FILTER, true},
		{"SO_INCOMING_CPU", unix.SOL_SOCKET, unix.SO_INCOMING_CPU, true},
		{"SO_ATTACH_REUSEPORT_CBPF", unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF, true},
		{"UDP_SEGMENT", unix.SOL_UDP, unix.UDP_SEGMENT, true},
		{"SOL_PACKET", unix.SOL_PACKET, unix.PACKET_ADD_MEMBERSHIP, false},
		{"SOL_RAW", unix.SOL_RAW, 1, false},
		{"level high bits ignored", unix.IPPROTO_IP | 1<<32, unix.IP_OPTIONS, false},
		{"name high bits ignored", unix.SOL_SOCKET, unix.SO_KEEPALIVE | 1<<32, true},
	}
	for _, abi := range []*ABI{X86_64, I386, AArch64} {
		for _, c := range cases {
			want := uint32(actNotify)
			if c.wantAllowed {
				want = actAllow
			}
			if got := run(t, prog, abi.Arch, uint32(abi.Setsockopt), 3, c.level, c.opt); got != want {
				t.Errorf("%s %s: got %#x, want %#x", abi.Name, c.name, got, want)
			}
			if got := SockoptAllowed(int(int32(c.level)), int(int32(c.opt))); got != c.wantAllowed {
				t.Errorf("SockoptAllowed %s = %v", c.name, got)
			}
		}
	}
	// The filter and the table the supervisor checks (the i386 socketcall path) agree everywhere.
	for _, abi := range []*ABI{X86_64, AArch64} {
		levels := []int{0, 1, 2, 6, 17, 41, 58, 132, 136, 255, 263, 270, 271, 279, 282, 283, 284, 285}
		for _, level := range levels {
			for name := 0; name < 120; name++ {
				want := uint32(actNotify)
				if SockoptAllowed(level, name) {
					want = actAllow
				}
				if got := run(t, prog, abi.Arch, uint32(abi.Setsockopt), 3, uint64(level), uint64(name)); got != want {
					t.Fatalf("%s level %d name %d: filter %#x, SockoptAllowed %v", abi.Name, level, name, got, want == actAllow)
				}
			}
		}
	}
	if got := run(t, prog, I386.Arch, uint32(I386.Socketcall), SysSetsockopt); got != actNotify {
		t.Errorf("i386 socketcall SYS_SETSOCKOPT: got %#x, want notify", got)
	}
	if !SockoptNotTCP(unix.SOL_SOCKET, unix.SO_ATTACH_FILTER) || !SockoptNotTCP(unix.SOL_SOCKET, unix.SO_ATTACH_BPF) || SockoptNotTCP(unix.SOL_SOCKET, unix.SO_KEEPALIVE) {
		t.Error("SockoptNotTCP")
	}
	for k := range sockoptNames {
		if SockoptAllowed(k[0], k[1]) {
			t.Errorf("%s is named as refused but allowed", SockoptName(k[0], k[1]))
		}
	}
	if SockoptName(unix.IPPROTO_IP, unix.IP_OPTIONS) == "level 0 option 4" || SockoptName(99, 7) != "level 99 option 7" {
		t.Error("SockoptName")
	}
}
