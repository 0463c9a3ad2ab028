package integration

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Issue 10's option attacks, each run in every mode torsocks can be in:
//
//   - sealed: SealedNetwork 1, the program's TCP sockets made in the sandbox network namespace
//     (nothing but lo there); the socket-option allowlist is the second layer;
//   - fallback: SealedNetwork 1 where the sandbox cannot be made (kernel_older nosandbox in front
//     of torsocks refuses clone and unshare with CLONE_NEWUSER or CLONE_NEWNET, as a kernel with
//     user namespaces disabled or Ubuntu 24.04's AppArmor policy would for a normal user): TCP
//     sockets on the host network, the allowlist the only layer, and one warning;
//   - each as root and as nobody (the non-root sandbox is made in a user namespace).
//
// The namespace the tests run in gets a second interface for the duration (attackIface: a veth
// whose far end has no address, ARP off so that every packet routed to it is sent at once): a
// first hop, a next hop or a device binding that took effect would send the supervisor's SYN to
// Tor's SocksPort out of it. A sniffer on it flags every IP packet (nothing of torsocks' may use
// it; the kernel's own neighbour discovery and MLD are left out) and prints its IPv4 options or
// IPv6 extension headers; one on lo flags packets with IP options or extension headers and any
// packet from or to the interface's addresses. TestAttackSnifferControl shows, without torsocks,
// that each attack does send such a packet on this kernel.

const (
	attackIfName = "sealtest0"
	attackPeer   = "sealtest1"
)

var (
	attackNet4  = netip.MustParsePrefix("10.99.0.1/24")
	attackNet6  = netip.MustParsePrefix("fd00:99::1/64")
	attackHop4  = netip.MustParseAddr("10.99.0.254") // first hop of the source routes
	attackHop6  = netip.MustParseAddr("fd00:99::fe") // first segment of the routing headers
	attackFree4 = netip.MustParseAddr("10.99.0.77")  // not local: bound with IP_FREEBIND
	attackFree6 = netip.MustParseAddr("fd00:99::77")
)

// attackIface adds the attack interface for the test and removes it afterwards; its index.
func attackIface(t *testing.T) int {
	t.Helper()
	ipc := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	exec.Command("ip", "link", "del", attackIfName).Run() // left over by a killed run
	ipc("link", "add", attackIfName, "type", "veth", "peer", "name", attackPeer)
	t.Cleanup(func() { exec.Command("ip", "link", "del", attackIfName).Run() })
	for _, dev := range []string{attackIfName, attackPeer} {
		// No link-local address, no router solicitations: the interface stays quiet.
		ipc("link", "set", dev, "addrgenmode", "none", "arp", "off")
	}
	os.WriteFile("/proc/sys/net/ipv6/conf/"+attackPeer+"/disable_ipv6", []byte("1"), 0)
	ipc("addr", "add", attackNet4.String(), "dev", attackIfName)
	ipc("-6", "addr", "add", attackNet6.String(), "dev", attackIfName, "nodad")
	ipc("link", "set", attackPeer, "up")
	ipc("link", "set", attackIfName, "up")
	ifi, err := net.InterfaceByName(attackIfName)
	if err != nil {
		t.Fatal(err)
	}
	return ifi.Index
}

// captureOn opens a packet socket capturing every frame on interface ifindex.
func captureOn(t *testing.T, ifindex int) int {
	t.Helper()
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		t.Fatalf("packet socket: %v", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex}); err != nil {
		unix.Close(fd)
		t.Fatalf("bind packet socket: %v", err)
	}
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20)
	return fd
}

// attackSniffer watches the attack interface and lo from start to stop.
type attackSniffer struct {
	iface, lo int
}

func sniffAttack(t *testing.T, ifindex int) *attackSniffer {
	t.Helper()
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	return &attackSniffer{iface: captureOn(t, ifindex), lo: captureOn(t, lo.Index)}
}

// stop closes the captures and describes every flagged packet. A packet socket is handed a
// frame as it is sent, so everything a finished program sent is queued by then.
func (s *attackSniffer) stop() []string {
	var bad []string
	drain := func(fd int, judge func([]byte) string) {
		defer unix.Close(fd)
		buf := make([]byte, 65536)
		for {
			n, _, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT)
			if err != nil {
				return
			}
			if d := judge(buf[:n]); d != "" {
				bad = append(bad, d)
			}
		}
	}
	drain(s.iface, func(f []byte) string {
		if d := describeFrame(f); d != "" && !neighbourNoise(f) {
			return attackIfName + ": " + d
		}
		return ""
	})
	drain(s.lo, func(f []byte) string {
		if d := routed(f); d != "" {
			return "lo: " + d
		}
		if d := describeFrame(f); d != "" && touchesAttackNet(f) {
			return "lo: " + d
		}
		return ""
	})
	return bad
}

// describeFrame describes an Ethernet-framed IP packet: addresses, protocol, ports, and its
// IPv4 options or IPv6 extension headers in hex; "" for other frames.
func describeFrame(f []byte) string {
	if len(f) < 14 {
		return ""
	}
	p := f[14:]
	switch binary.BigEndian.Uint16(f[12:14]) {
	case unix.ETH_P_IP:
		if len(p) < 20 {
			return ""
		}
		ihl := int(p[0]&0xf) * 4
		d := fmt.Sprintf("IPv4 %v -> %v proto %d", net.IP(p[12:16]), net.IP(p[16:20]), p[9])
		if ihl > 20 && len(p) >= ihl {
			d += fmt.Sprintf(" options % x (%q)", p[20:ihl], printable(p[20:ihl]))
		}
		if p[9] == unix.IPPROTO_TCP && len(p) >= ihl+4 {
			d += fmt.Sprintf(" ports %d -> %d", binary.BigEndian.Uint16(p[ihl:]), binary.BigEndian.Uint16(p[ihl+2:]))
		}
		return d
	case unix.ETH_P_IPV6:
		if len(p) < 40 {
			return ""
		}
		d := fmt.Sprintf("IPv6 %v -> %v", net.IP(p[8:24]), net.IP(p[24:40]))
		next, off := p[6], 40
		for (next == 0 || next == 43 || next == 60) && len(p) >= off+8 {
			n := (int(p[off+1]) + 1) * 8
			if len(p) < off+n {
				break
			}
			d += fmt.Sprintf(" ext %d % x (%q)", next, p[off:off+n], printable(p[off:off+n]))
			next, off = p[off], off+n
		}
		d += fmt.Sprintf(" proto %d", next)
		if next == unix.IPPROTO_TCP && len(p) >= off+4 {
			d += fmt.Sprintf(" ports %d -> %d", binary.BigEndian.Uint16(p[off:]), binary.BigEndian.Uint16(p[off+2:]))
		}
		return d
	}
	return ""
}

// neighbourNoise: ICMPv6 neighbour discovery and MLD the kernel sends for an interface's
// addresses (not the program's doing, and no routing header ahead of them).
func neighbourNoise(f []byte) bool {
	if len(f) < 14+40 || binary.BigEndian.Uint16(f[12:14]) != unix.ETH_P_IPV6 {
		return false
	}
	p := f[14:]
	next, off := p[6], 40
	if next == 0 && len(p) >= off+8 { // MLD's hop-by-hop router alert
		next, off = p[off], off+(int(p[off+1])+1)*8
	}
	if next != unix.IPPROTO_ICMPV6 || len(p) <= off {
		return false
	}
	typ := p[off]
	return (typ >= 130 && typ <= 137) || typ == 143
}

// touchesAttackNet: an IP packet from or to an address of the attack interface's networks.
func touchesAttackNet(f []byte) bool {
	if len(f) < 14+20 {
		return false
	}
	p := f[14:]
	switch binary.BigEndian.Uint16(f[12:14]) {
	case unix.ETH_P_IP:
		s, d := netip.AddrFrom4([4]byte(p[12:16])), netip.AddrFrom4([4]byte(p[16:20]))
		return attackNet4.Masked().Contains(s) || attackNet4.Masked().Contains(d)
	case unix.ETH_P_IPV6:
		if len(p) < 40 {
			return false
		}
		s, d := netip.AddrFrom16([16]byte(p[8:24])), netip.AddrFrom16([16]byte(p[24:40]))
		return attackNet6.Masked().Contains(s) || attackNet6.Masked().Contains(d)
	}
	return false
}

func printable(b []byte) string {
	r := []byte(string(b))
	for i, c := range r {
		if c < 0x20 || c > 0x7e {
			r[i] = '.'
		}
	}
	return string(r)
}

// attackMode is one way torsocks runs for the attack tests.
type attackMode struct {
	name     string
	prefix   []string // in front of torsocks: setpriv, kernel_older nosandbox
	sealed   bool     // the program's sockets are expected in the sandbox
	fallback bool     // the sandbox is unavailable
}

func attackModes(t *testing.T) []attackMode {
	t.Helper()
	older := buildC(t, "kernel_older")
	nobody := []string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"}
	return []attackMode{
		{name: "sealed", sealed: true},
		{name: "sealed-nobody", prefix: nobody, sealed: true},
		{name: "fallback", prefix: []string{older, "nosandbox"}, fallback: true},
		{name: "fallback-nobody", prefix: append(append([]string{}, nobody...), older, "nosandbox"), fallback: true},
	}
}

// hostNetnsCookie is SO_NETNS_COOKIE of a socket of the test's own network namespace.
func hostNetnsCookie(t *testing.T) uint64 {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	c, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// attackOut is seal_attack's output by line kind: "before SPEC" -> RESULT, and so on.
type attackOut struct {
	lines     map[string]string
	connectMS int
}

func parseAttack(stdout string) attackOut {
	o := attackOut{lines: map[string]string{}, connectMS: -1}
	for _, l := range strings.Split(strings.TrimSpace(stdout), "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) >= 3 && (f[0] == "before" || f[0] == "after"):
			o.lines[f[0]+" "+f[1]] = strings.Join(f[2:], " ")
		case len(f) == 3 && f[0] == "connect":
			o.lines["connect"] = f[1]
			o.connectMS, _ = strconv.Atoi(f[2])
		case len(f) >= 2:
			o.lines[f[0]] = strings.Join(f[1:], " ")
		}
	}
	return o
}

// The attacks, run without torsocks against Tor's SocksPort (what the supervisor's connect of the
// program's own socket would do if the option reached it): each sends a packet out of the attack
// interface on this kernel, and the sniffer sees it. This keeps the other tests from passing
// because the interface, the routes or the sniffer do not work.
func TestAttackSnifferControl(t *testing.T) {
	env(t)
	ifindex := attackIface(t)
	bin := buildC(t, "seal_attack")
	cases := []struct {
		name   string
		args   []string
		expect string // in a flagged packet
	}{
		{"lsrr", []string{"127.0.0.1", "9050", "lsrr:" + attackHop4.String()}, "SECRET-DATA"},
		{"ssrr", []string{"127.0.0.1", "9050", "ssrr:" + attackHop4.String()}, "SECRET-DATA"},
		{"lsrr-v6-mapped", []string{"::ffff:127.0.0.1", "9050", "lsrr:" + attackHop4.String()}, "SECRET-DATA"},
		{"srh", []string{"::1", "9050", "srh:" + attackHop6.String()}, "SECRET-DATA"},
		{"bindtodevice", []string{"127.0.0.1", "9050", "dev:" + attackIfName}, "-> 127.0.0.1"},
		{"bindtoifindex", []string{"127.0.0.1", "9050", "ifindex:" + strconv.Itoa(ifindex)}, "-> 127.0.0.1"},
		{"accepted-lsrr", []string{"listen", "127.0.0.1", "lsrr:" + attackHop4.String()}, "options 01 83 27"}, // stays on lo, the route in its header
		{"accepted-srh", []string{"listen", "::1", "srh:" + attackHop6.String()}, "SECRET-DATA"},
		{"freebind-ipv6", []string{"::1", "9050", "freebind:" + attackFree6.String()}, "-> " + attackFree6.String()},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := sniffAttack(t, ifindex)
			var r result
			if c.args[0] == "listen" {
				// The program's data on an accepted connection leaves for the first hop: the
				// test reads nothing (for a second).
				r, _, _ = acceptFromOutside(t, c.args[1], time.Second, append([]string{bin}, c.args...))
			} else {
				r = runCmd(t, nil, append([]string{bin, "connect"}, append(c.args, "sndtimeo:300")...)...)
			}
			bad := s.stop()
			// What leaked keeps leaking after the program exits: its orphaned accepted socket
			// retransmits its data by the routing header for minutes, the SOCKS server's
			// SYN-ACKs to the freebind address for a minute. Those packets would be flagged
			// in the tests that follow: abort every connection of the test's namespace
			// (nothing else runs in it now; the listeners stay).
			if out, err := exec.Command("ss", "-K", "-tan", "exclude", "listening").CombinedOutput(); err != nil {
				t.Fatalf("ss -K: %v\n%s", err, out)
			}
			t.Logf("stdout:\n%s\nflagged:\n%s", r.stdout, strings.Join(bad, "\n"))
			found := false
			for _, b := range bad {
				found = found || strings.Contains(b, c.expect)
			}
			if !found {
				t.Errorf("the sniffer saw no packet with %q: the attack or the sniffer does not work here", c.expect)
			}
		})
	}
}

// fallbackWarning is in the one line torsocks writes when SealedNetwork 1 cannot have its sandbox.
const fallbackWarning = "kernel-enforced layer (SealedNetwork) is off"

// attackEnv: a short ConnectTimeout (a connect held for the SYN retries, ~2 minutes, shows), an
// IPv6 SocksPort for IPv6 sockets (the routing-header attacks need one).
var attackEnv = []string{"TORSOCKS_SEALED_NETWORK=1", "TORSOCKS_CONNECT_TIMEOUT=5", "TORSOCKS_TOR_ADDRESS_IPV6=[::1]:9050"}

// attackConnectBound: the longest a connect may take, ConnectTimeout and some slack for a loaded
// machine (a connect through the local SOCKS server takes milliseconds).
const attackConnectBound = 5000 + 5000

// attackCheck checks one seal_attack run in mode m: every option refused (EPERM, with its log
// line), the racing thread never got one in, the socket where the mode puts it, the connect
// answered in time (and, unless wantConnect is "", with wantConnect and the reply wantReply), the
// fallback's warning once, and no flagged packet.
func attackCheck(t *testing.T, m attackMode, host uint64, r result, bad []string, refusedOpts []string, wantConnect, wantReply string) {
	t.Helper()
	o := parseAttack(r.stdout)
	fail := func(format string, args ...any) {
		t.Helper()
		t.Errorf(format+"\nstdout:\n%s\nstderr:\n%s", append(args, r.stdout, r.stderr)...)
	}
	if len(bad) > 0 {
		t.Errorf("LEAK: packets the sniffer flagged:\n%s\nstdout:\n%s", strings.Join(bad, "\n"), r.stdout)
	}
	if r.code != 0 {
		fail("exit %d", r.code)
	}
	for k, v := range o.lines {
		if (strings.HasPrefix(k, "before ") || strings.HasPrefix(k, "after ")) && v != "EPERM" {
			fail("%s: %s, want EPERM", k, v)
		}
	}
	if race, ok := o.lines["race"]; ok && !strings.HasPrefix(race, "0/") {
		fail("the racing thread's IP_OPTIONS got in (accepted/tried %s)", race)
	}
	c, err := strconv.ParseUint(o.lines["cookie"], 10, 64)
	switch {
	case err != nil || c == 0:
		fail("no netns cookie")
	case m.sealed && c == host:
		fail("the program's socket is on the host network (netns cookie %d), want the sandbox", c)
	case m.fallback && c != host:
		fail("the program's socket is in netns %d, not the host's %d: the fallback did not happen", c, host)
	}
	if _, accepted := o.lines["listening"]; !accepted && (o.connectMS < 0 || o.connectMS > attackConnectBound) {
		fail("connect took %d ms (ConnectTimeout 5 s)", o.connectMS)
	}
	if wantConnect != "" && o.lines["connect"] != wantConnect {
		fail("connect %s, want %s", o.lines["connect"], wantConnect)
	}
	if wantReply != "" && o.lines["reply"] != wantReply {
		fail("reply %q, want %q", o.lines["reply"], wantReply)
	}
	for _, opt := range refusedOpts {
		if !strings.Contains(r.stderr, "setsockopt "+opt+" (") {
			fail("no log line for the refused %s", opt)
		}
	}
	if !m.fallback && strings.Contains(r.stderr, fallbackWarning) {
		fail("the fallback warning with the sandbox available")
	}
}

// runAttack runs seal_attack's args under torsocks in mode m with the sniffer on.
func runAttack(t *testing.T, m attackMode, ifindex int, bin string, args ...string) (result, []string) {
	t.Helper()
	s := sniffAttack(t, ifindex)
	cmd := append(append(append([]string{}, m.prefix...), torsocksBin, bin), args...)
	r := runCmd(t, attackEnv, cmd...)
	return r, s.stop()
}

// Issue 10: IP_OPTIONS source routes (loose and strict; IPv4 and IPv6-mapped sockets; toggled by
// a racing thread during the connect), IPv6 routing headers (type 0 and segment routing) with an
// IPv6 SocksPort, SO_BINDTODEVICE and SO_BINDTOIFINDEX to the attack interface, on connecting
// and connected sockets and on DNS-over-TCP ones, and the options that would drop the SYN-ACK
// (TCP_MD5SIG, IP_MINTTL, IPV6_MINHOPCOUNT, a drop-all socket filter) or route replies out
// (IPV6_FREEBIND to an address of the attack network): 64-bit and i386 through socketcall, in
// every mode (see attackModes). Every option is refused, no packet leaves by the attack interface
// nor carries a route on lo, no canary hears anything, and every connect is answered within
// ConnectTimeout: through Tor (the canary's page), or for DNS over TCP without the sandbox,
// refused at once.
//
// On the code before this test, TCP_MD5SIG, IP_MINTTL, IPV6_MINHOPCOUNT (and, as nobody in the
// sealed mode, the socket filter) were allowed and the connect hung until the test gave up, in
// every mode; without the sandbox, IPV6_FREEBIND let the SOCKS server's SYN-ACKs out of the
// attack interface to fd00:99::77.
func TestSealedOptionAttacks(t *testing.T) {
	env(t)
	ifindex := attackIface(t)
	host := hostNetnsCookie(t)
	h4, h6 := attackHop4.String(), attackHop6.String()
	dev, idx := "dev:"+attackIfName, "ifindex:"+strconv.Itoa(ifindex)
	cases := []struct {
		name    string
		args    []string
		refused []string // the log lines expected
		connect string   // "" for any clean answer
		reply   string
	}{
		{"ipv4-srr-device", []string{"203.0.113.10", "80", "lsrr:" + h4, "ssrr:" + h4, dev, idx},
			[]string{"IP_OPTIONS", "SO_BINDTODEVICE", "SO_BINDTOIFINDEX"}, "ok", "canary"},
		{"ipv4-race", []string{"203.0.113.10", "80", "race:" + h4}, []string{"IP_OPTIONS"}, "ok", "canary"},
		{"ipv6-mapped-srr", []string{"::ffff:203.0.113.10", "80", "lsrr:" + h4, "ssrr:" + h4, dev},
			[]string{"IP_OPTIONS", "SO_BINDTODEVICE"}, "ok", "canary"},
		{"ipv6-mapped-race", []string{"::ffff:203.0.113.10", "80", "race:" + h4}, []string{"IP_OPTIONS"}, "ok", "canary"},
		{"ipv6-rthdr-device", []string{"2001:db8::10", "80", "rthdr0:" + h6, "srh:" + h6, dev, idx},
			[]string{"IPV6_RTHDR", "SO_BINDTODEVICE", "SO_BINDTOIFINDEX"}, "ok", "canary"},
		{"dns-tcp-ipv4", []string{"192.0.2.53", "53", "lsrr:" + h4, dev, idx},
			[]string{"IP_OPTIONS", "SO_BINDTODEVICE", "SO_BINDTOIFINDEX"}, "", ""},
		{"dns-tcp-ipv6", []string{"2001:db8:53::53", "53", "srh:" + h6, dev, idx},
			[]string{"IPV6_RTHDR", "SO_BINDTODEVICE", "SO_BINDTOIFINDEX"}, "", ""},
		{"syn-ack-dropped-ipv4", []string{"203.0.113.10", "80", "md5:127.0.0.1", "md5:203.0.113.10", "minttl", "filter"},
			[]string{"TCP_MD5SIG", "IP_MINTTL", "SO_ATTACH_FILTER"}, "ok", "canary"},
		{"syn-ack-dropped-ipv6", []string{"2001:db8::10", "80", "md5:::1", "md5:2001:db8::10", "minttl"},
			[]string{"TCP_MD5SIG", "IPV6_MINHOPCOUNT"}, "ok", "canary"},
		{"freebind-ipv4", []string{"203.0.113.10", "80", "freebind:" + attackFree4.String()}, []string{"IP_FREEBIND"}, "ok", "canary"},
		{"freebind-ipv6", []string{"2001:db8::10", "80", "freebind:" + attackFree6.String()}, []string{"IPV6_FREEBIND"}, "ok", "canary"},
	}
	for _, m := range attackModes(t) {
		for _, abi := range [][]string{nil, {"-m32", "-static"}} {
			name := m.name + "/native"
			if abi != nil {
				name = m.name + "/i386-socketcall"
			}
			t.Run(name, func(t *testing.T) {
				bin := buildC(t, "seal_attack", abi...)
				for _, c := range cases {
					t.Run(c.name, func(t *testing.T) {
						r, bad := runAttack(t, m, ifindex, bin, append([]string{"connect"}, c.args...)...)
						connect, reply := c.connect, c.reply
						if c.connect == "" && !m.fallback {
							connect, reply = "ok", "dns 47 bytes"
						}
						if c.connect == "" && m.fallback {
							connect = "ECONNREFUSED" // no DNS responder without the sandbox
						}
						attackCheck(t, m, host, r, bad, c.refused, connect, reply)
					})
				}
			})
		}
	}
	noLeaks(t)
}

// Where the sandbox cannot be made, SealedNetwork 1 says so once, with the reason, before the
// program's first TCP socket: as root and as nobody, for a program that makes several sockets.
func TestSealedFallbackWarning(t *testing.T) {
	env(t)
	bin := buildC(t, "seal_attack")
	for _, m := range attackModes(t) {
		if !m.fallback {
			continue
		}
		t.Run(m.name, func(t *testing.T) {
			script := fmt.Sprintf("%s connect 203.0.113.10 80 && %s connect 2001:db8::10 80 && %s connect 192.0.2.53 53", bin, bin, bin)
			r := runCmd(t, attackEnv, append(append([]string{}, m.prefix...), torsocksBin, "sh", "-c", script)...)
			if r.code != 0 || strings.Count(r.stdout, "reply canary") != 2 {
				t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
			}
			var lines []string
			for _, l := range strings.Split(r.stderr, "\n") {
				if strings.Contains(l, fallbackWarning) {
					lines = append(lines, l)
				}
			}
			if len(lines) != 1 {
				t.Fatalf("want one line saying %q, got %d:\n%s", fallbackWarning, len(lines), r.stderr)
			}
			if !strings.Contains(lines[0], "operation not permitted") {
				t.Errorf("the warning does not say why the sandbox is unavailable (kernel_older's EPERM): %s", lines[0])
			}
		})
	}
	noLeaks(t)
}

// getpeername on a proxied socket shows the destination in every mode: the sealed network (the
// kernel answers: the filter lets getpeername run there, filter.Options.PeerByKernel), the
// fallbacks (the supervisor answers: as root, torsocks under a seccomp filter does not expect the
// sandbox; as nobody, the factory fails before the program starts and the filter is rebuilt with
// getpeername notified) and SealedNetwork 0.
func TestGetpeernameEveryMode(t *testing.T) {
	env(t)
	bin := buildC(t, "pol_probe")
	modes := attackModes(t)
	modes = append(modes, attackMode{name: "host"})
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			e := attackEnv
			if m.name == "host" {
				e = append(append([]string{}, attackEnv...), "TORSOCKS_SEALED_NETWORK=0")
			}
			for _, c := range []struct{ host, want string }{
				{"203.0.113.10", "peer=203.0.113.10:80 len=16"},
				{"2001:db8::10", "peer=[2001:db8::10]:80 len=28"},
			} {
				r := runCmd(t, e, append(append([]string{}, m.prefix...), torsocksBin, bin, "connect", c.host, "80")...)
				if r.code != 0 {
					t.Fatalf("pol_probe connect %s: exit %d\nstdout: %s\nstderr: %s", c.host, r.code, r.stdout, r.stderr)
				}
				wantLines(t, r, c.want)
			}
		})
	}
	noLeaks(t)
}

// The option attacks on an accepted socket: the program listens on loopback, the test connects
// from outside the tree, and the program sets the source route, routing header and device
// bindings on the accepted connection before writing to it (a source route set then would send
// its data to the first hop). Every mode, 64-bit and i386 socketcall.
//
// Gate: a sealed TCP socket can listen only once listeners are mirrored to the host (issue 10
// item 3). Until then listen() on it is refused with "... is not supported with SealedNetwork
// yet", and the sealed subtests log that and stop there (the fallback ones run in full). The
// probe is the subtest's own first step, so the sealed subtests run by themselves once the
// mirror lands.
func TestSealedAcceptedSocketAttacks(t *testing.T) {
	env(t)
	ifindex := attackIface(t)
	host := hostNetnsCookie(t)
	dev, idx := "dev:"+attackIfName, "ifindex:"+strconv.Itoa(ifindex)
	cases := []struct {
		name    string
		args    []string
		refused []string
	}{
		{"ipv4", []string{"127.0.0.1", "lsrr:" + attackHop4.String(), "ssrr:" + attackHop4.String(), dev, idx},
			[]string{"IP_OPTIONS", "SO_BINDTODEVICE", "SO_BINDTOIFINDEX"}},
		{"ipv6", []string{"::1", "srh:" + attackHop6.String(), dev, idx},
			[]string{"IPV6_RTHDR", "SO_BINDTODEVICE", "SO_BINDTOIFINDEX"}},
	}
	for _, m := range attackModes(t) {
		for _, abi := range [][]string{nil, {"-m32", "-static"}} {
			name := m.name + "/native"
			if abi != nil {
				name = m.name + "/i386-socketcall"
			}
			t.Run(name, func(t *testing.T) {
				bin := buildC(t, "seal_attack", abi...)
				for _, c := range cases {
					t.Run(c.name, func(t *testing.T) {
						s := sniffAttack(t, ifindex)
						args := append(append(append([]string{}, m.prefix...), torsocksBin, bin, "listen"), c.args...)
						r, got, listened := acceptFromOutside(t, c.args[0], 30*time.Second, args)
						bad := s.stop()
						if !listened {
							if m.sealed && strings.Contains(r.stderr, "is not supported with SealedNetwork yet") {
								t.Logf("gate: listen() on a sealed socket is refused (no mirror to the host yet); not run:\n%s", r.stderr)
								return
							}
							t.Fatalf("the program did not listen\nstdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
						}
						if got != "hello from accepted\n" {
							t.Errorf("read %q from the program's accepted socket", got)
						}
						if o := parseAttack(r.stdout); o.lines["write"] != "ok" {
							t.Errorf("the program's write on its accepted socket: %s", o.lines["write"])
						}
						attackCheck(t, m, host, r, bad, c.refused, "", "")
					})
				}
			})
		}
	}
	noLeaks(t)
}

// acceptFromOutside runs args (seal_attack listen ...), connects to the port it prints on addr
// and reads what the program writes (for at most wait); the run's result, what was read, and
// whether it listened.
func acceptFromOutside(t *testing.T, addr string, wait time.Duration, args []string) (result, string, bool) {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), attackEnv...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	var stdout strings.Builder
	lines := bufio.NewScanner(out)
	var got string
	listened := false
	for lines.Scan() {
		l := lines.Text()
		stdout.WriteString(l + "\n")
		if p, ok := strings.CutPrefix(l, "listening "); ok {
			listened = true
			conn, err := net.DialTimeout("tcp", net.JoinHostPort(addr, p), 10*time.Second)
			if err != nil {
				t.Errorf("connect to the program's listener: %v", err)
				break
			}
			conn.SetDeadline(time.Now().Add(wait))
			b, _ := io.ReadAll(conn)
			conn.Close()
			got = string(b)
		}
	}
	err = cmd.Wait()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
	}
	return r, got, listened
}

// SO_ATTACH_FILTER and SO_ATTACH_BPF are off the allowlist for TCP sockets only (a filter that
// drops the SYN-ACK would hold the supervisor's connect): on the program's other sockets the
// supervisor carries them out (udev monitors filter their netlink socket). A drop-all filter on
// one end of a unix datagram pair takes effect (nothing is received); the filters set on a UDP
// and a netlink socket are read back; a TCP socket gets EPERM.
func TestSocketFilterNotTCP(t *testing.T) {
	env(t)
	script := `
import ctypes, errno, socket, struct
def fprog(ret):
    buf = ctypes.create_string_buffer(struct.pack("HBBI", 6, 0, 0, ret))  # BPF_RET|BPF_K
    fprog.keep.append(buf)
    return struct.pack("HxxxxxxQ", 1, ctypes.addressof(buf))
fprog.keep = []
SO_ATTACH_FILTER = 26
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
b.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog(0))
a.send(b"x")
b.settimeout(0.5)
try:
    b.recv(10)
    print("unix filter ignored")
except socket.timeout:
    print("unix filter ok")
# Read back (SO_GET_FILTER, the same number): its length is in instructions, so one byte of
# the one instruction comes back (BPF_RET|BPF_K), nothing without a filter.
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog(0))
print("udp filter", u.getsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, 64).hex())
n = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
n.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog(0xffffffff))
print("netlink filter", n.getsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, 64).hex())
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
try:
    s.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog(0))
    print("tcp filter accepted")
except OSError as e:
    print("tcp filter", errno.errorcode[e.errno])
`
	for _, mode := range []struct {
		name string
		env  []string
	}{{"sealed", sealedEnv}, {"unsealed", []string{"TORSOCKS_SEALED_NETWORK=0"}}} {
		t.Run(mode.name, func(t *testing.T) {
			r := torsocks(t, mode.env, "python3", "-c", script)
			for _, want := range []string{"unix filter ok", "udp filter 06\n", "netlink filter 06\n", "tcp filter EPERM"} {
				if !strings.Contains(r.stdout, want) {
					t.Errorf("missing %q\nstdout:\n%s\nstderr:\n%s", want, r.stdout, r.stderr)
				}
			}
			if !strings.Contains(r.stderr, "setsockopt SO_ATTACH_FILTER (") {
				t.Errorf("no log line for the refused filter:\n%s", r.stderr)
			}
		})
	}
}
