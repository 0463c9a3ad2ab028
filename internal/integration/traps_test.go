package integration

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/gotorsocks/torsocks/internal/netnstest"
	"github.com/gotorsocks/torsocks/internal/socks5test"
)

// A server that speaks first (SSH, SMTP): the supervisor reads the SOCKS reply exactly, so not one
// byte of the banner is lost or stolen.
func TestServerSpeaksFirst(t *testing.T) {
	env(t)
	banner := "SSH-2.0-canary\r\n"
	c, err := socks5test.StartCanaryWith(socks5test.CanaryOptions{
		Addr:    "203.0.113.10:22",
		Allowed: []netip.Addr{netnstest.SocksSrcV4, netnstest.SocksSrcV6},
		Banner:  banner,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	script := `
import socket
s = socket.create_connection(("203.0.113.10", 22), timeout=20)
got = b""
while len(got) < 16:
    b = s.recv(100)
    if not b: break
    got += b
print(repr(got))
`
	r := torsocks(t, nil, "python3", "-c", script)
	if r.code != 0 || !strings.Contains(r.stdout, `b'SSH-2.0-canary\r\n'`) {
		t.Fatalf("banner: exit %d %q %s", r.code, r.stdout, r.stderr)
	}
	if l := c.Leaks(); len(l) > 0 {
		t.Fatalf("LEAK: %v", l)
	}
}

// An IPv6-only socket cannot reach an IPv4 SocksPort through ::ffff:: a clear error, and it works
// once an IPv6 SocksPort is configured. With SealedNetwork 1 the program's socket never reaches
// the SocksPort (the supervisor's own socket does): it works either way.
func TestV6OnlySocket(t *testing.T) {
	env(t)
	script := `
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
s.settimeout(20)
try:
    s.connect(("2001:db8::10", 80))
except OSError as e:
    print("error", e.errno)
    sys.exit(0)
s.sendall(b"GET / HTTP/1.0\r\n\r\n")
print("ok", b"canary" in s.recv(4096))
`
	r := torsocks(t, nil, "python3", "-c", script)
	switch {
	case sealedMode():
		if !strings.Contains(r.stdout, "ok True") || r.stderr != "" {
			t.Errorf("V6ONLY without an IPv6 SocksPort, SealedNetwork 1: want a working connection, no line: %q %q", r.stdout, r.stderr)
		}
	case !strings.Contains(r.stdout, "error 101") || !strings.Contains(r.stderr, "IPV6_V6ONLY"):
		t.Errorf("V6ONLY without an IPv6 SocksPort: want ENETUNREACH and a line naming IPV6_V6ONLY: %q %q", r.stdout, r.stderr)
	}
	r = torsocks(t, []string{"TORSOCKS_TOR_ADDRESS_IPV6=[::1]:9050"}, "python3", "-c", script)
	if !strings.Contains(r.stdout, "ok True") {
		t.Errorf("V6ONLY with an IPv6 SocksPort: %q %q", r.stdout, r.stderr)
	}
	noLeaks(t)
}
