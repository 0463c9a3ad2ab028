package integration

import (
	"encoding/binary"
	"fmt"
	"net"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Socket options that decide where a connection's packets go must not travel with the program's
// socket into the supervisor's connect: a loose source route (IP_OPTIONS) would send the SYN for
// Tor's SocksPort to a first hop the program chose, from the machine's address, with 32 bytes of
// the program's data in the route; IPV6_RTHDR the same for IPv6; SO_BINDTODEVICE and the
// *_UNICAST_IF options choose the interface. so_probe sets them before connecting and from a
// racing thread during a connect, natively (setsockopt, checked by the filter) and -m32 through
// socketcall (checked and carried out by the supervisor). A packet sniffer on lo flags any packet
// with IP options or IPv6 extension headers. The options programs set every day keep working.
//
// On the previous code the source route was accepted and the sniffer saw the SYN to 127.0.0.1:9050
// leave for 203.0.113.10 with the route in its header.
func TestSockoptRouting(t *testing.T) {
	env(t)
	for _, build := range [][]string{nil, {"-m32", "-static"}} {
		name := "native"
		if build != nil {
			name = "i386-socketcall"
		}
		t.Run(name, func(t *testing.T) {
			bin := buildC(t, "so_probe", build...)
			sniff := sniffLo(t)
			r := torsocks(t, nil, bin)
			bad := sniff()
			if len(bad) > 0 {
				t.Errorf("LEAK: packets carrying routing options:\n%s", strings.Join(bad, "\n"))
			}
			want := []string{
				"IP_OPTIONS EPERM", "SO_BINDTODEVICE EPERM", "IP_UNICAST_IF EPERM",
				"SO_KEEPALIVE ok", "TCP_NODELAY ok", "SO_RCVTIMEO ok", "SO_RCVTIMEO read back 7.2",
				"connect ok", "raced connect ok",
				"IPV6_RTHDR EPERM", "IPV6_UNICAST_IF EPERM", "IPV6_V6ONLY ok",
			}
			for _, w := range want {
				if !strings.Contains(r.stdout, w) {
					t.Errorf("missing %q\nstdout:\n%s\nstderr:\n%s", w, r.stdout, r.stderr)
				}
			}
			if r.code != 0 {
				t.Errorf("exit %d\n%s", r.code, r.stderr)
			}
			for _, opt := range []string{"IP_OPTIONS", "SO_BINDTODEVICE", "IP_UNICAST_IF", "IPV6_RTHDR", "IPV6_UNICAST_IF"} {
				if !strings.Contains(r.stderr, "setsockopt "+opt+" (") {
					t.Errorf("no log line for the refused %s:\n%s", opt, r.stderr)
				}
			}
			noLeaks(t)
		})
	}
}

// sniffLo starts capturing every packet on lo and returns a function that stops and describes
// the captured packets that carry IPv4 options or IPv6 extension headers. Packets on lo are
// handed to packet sockets as they are sent, so everything a finished program sent is there.
func sniffLo(t *testing.T) func() []string {
	t.Helper()
	fd := capture(t)
	return func() []string {
		defer unix.Close(fd)
		var bad []string
		buf := make([]byte, 65536)
		for {
			n, _, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT)
			if err != nil {
				break
			}
			if d := routed(buf[:n]); d != "" {
				bad = append(bad, d)
			}
		}
		return bad
	}
}

// capture opens a packet socket that captures every packet on lo.
func capture(t *testing.T) int {
	t.Helper()
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		t.Fatalf("packet socket: %v", err)
	}
	ifi, err := net.InterfaceByName("lo")
	if err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		t.Fatalf("bind packet socket: %v", err)
	}
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20)
	return fd
}

// routed describes an Ethernet-framed packet (lo's frames) that carries IPv4 options or an IPv6
// hop-by-hop, routing or destination-options header, or returns "".
func routed(f []byte) string {
	if len(f) < 14+20 {
		return ""
	}
	p := f[14:]
	switch binary.BigEndian.Uint16(f[12:14]) {
	case unix.ETH_P_IP:
		if ihl := int(p[0]&0xf) * 4; ihl > 20 && len(p) >= ihl {
			return fmt.Sprintf("IPv4 %v -> %v options % x", net.IP(p[12:16]), net.IP(p[16:20]), p[20:ihl])
		}
	case unix.ETH_P_IPV6:
		if len(p) >= 40 {
			switch p[6] {
			case 0, 43, 60:
				return fmt.Sprintf("IPv6 %v -> %v next header %d", net.IP(p[8:24]), net.IP(p[24:40]), p[6])
			}
		}
	}
	return ""
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
