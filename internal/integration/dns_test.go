package integration

// DNS through Tor (issue 4, item 7): every resolver a program may carry, run under torsocks in the
// private network namespace, with canaries on UDP and TCP port 53 of the nameserver addresses the
// program is configured with (192.0.2.53, 2001:db8:53::53, in the test's namespace). The program's
// UDP sockets live in torsocks' sandbox namespace, so a canary that sees anything saw a leak.
//
// Resolver path → how it is answered (map mode unless said; "responder" is torsocks' DNS server in
// the UDP sandbox, which answers from the very address queried):
//
//	glibc getaddrinfo (curl, python3, getent ahosts)      UDP, connected socket, sendmmsg (A+AAAA) to the
//	                                                      resolv.conf nameserver → responder: A 127.192.0.0/10,
//	                                                      AAAA fd74:6f72:736b::/48; CONNECT carries the name
//	glibc gethostbyname(2) (getent hosts, python)         same; getent hosts asks AAAA first → IPv6 stand-in
//	glibc getnameinfo / gethostbyaddr of a stand-in       PTR → the name; unallocated stand-in → NXDOMAIN
//	glibc res_query A / AAAA / MX / TXT / SRV / HTTPS     same path; non-address types NOERROR/NODATA at once
//	glibc with "options use-vc"                           TCP to port 53 → connected to the responder
//	glibc via nscd (/run/nscd/socket)                     connect refused (ECONNREFUSED) → glibc falls back to DNS
//	nss-resolve / nss-mdns sockets (resolved, avahi)      connect refused (ECONNREFUSED), nothing reaches them
//	musl static getaddrinfo / getnameinfo / res_query     UDP, unconnected socket, sendto, reply source
//	                                                      checked → accepted (answer from the queried address)
//	Go pure resolver (static, CGO_ENABLED=0)              UDP connected (write/read); TCP with use-vc
//	c-ares 1.18 ares_getaddrinfo                          UDP connected → same answers
//	dig @192.0.2.53 | @8.8.8.8 | @203.0.113.10            UDP (libuv sendmsg) to that address → answered from it
//	dig +tcp @any                                         TCP port 53 → connected to the responder
//	any resolver with an IPv6 nameserver (UDP)            answered from that address once the responder's v6
//	                                                      socket has IPV6_FREEBIND (bug 1); TCP works today
//	dig -x STAND-IN                                       PTR → the name
//	/etc/hosts names, localhost, *.localhost              locally: nsswitch "files", and the responder answers
//	                                                      them from the hosts file it read at start
//	names that are not host names ("bad!name")            NXDOMAIN
//	.onion from glibc, musl, python3, curl 7.88, dig      A 127.42.42.0/24 (OnionAddrRange), AAAA from the
//	                                                      fd74:6f72:736b::/48 range, any letter case → same
//	                                                      stand-in; connect → CONNECT name (ATYP 3);
//	                                                      getpeername shows the stand-in
//	.onion from Go's pure resolver and from c-ares        never queried: both refuse .onion (RFC 7686), the
//	                                                      lookup fails in the program, nothing is sent
//	connect to an unallocated stand-in                    EHOSTUNREACH + one WARNING "... refused: it is a
//	                                                      stand-in address ..."; nothing sent anywhere
//	resolve mode (--dns resolve, TORSOCKS_DNS_MODE,       A/AAAA from Tor's RESOLVE (one request serves A and
//	DNSMode resolve)                                      AAAA), connect by IP; unknown → NXDOMAIN at once;
//	                                                      PTR of a global address → RESOLVE_PTR; /etc/hosts
//	                                                      locally; .onion still stand-ins, never RESOLVE
//	full stand-in range (all held by live connections)    SERVFAIL → EAI_AGAIN, no live address reused; after
//	                                                      a close the freed address must come back (bug 2)
//	16 threads × 200 getaddrinfo (glibc, musl)            all 3200 answered, about 1 s
//	2000 malformed datagrams (v4, v6) + bad DNS over TCP  answered (FORMERR/NOTIMP...) or dropped; later
//	                                                      lookups work; exit status is the program's
//	UDP to another port (sendto, sendmsg, connect+send)   succeeds in the program, dropped in the sandbox,
//	                                                      one WARNING "UDP to ADDR:PORT refused: ..." per
//	                                                      destination a minute (can be lost at exit: bug 3)
//	connected UDP (QUIC) to ADDR:443                      next recv: ECONNREFUSED at once (falls back to TCP)
//	AllowOutboundLocalhost 1                              UDP to loopback dropped in the sandbox like any UDP
//	AllowOutboundLocalhost 2                              UDP to loopback relayed to the service on the host
//	                                                      (mirror sockets); a burst sent before the mirror
//	                                                      exists loses datagrams (bug 4)

import (
	"debug/elf"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gotorsocks/torsocks/internal/netnstest"
	"github.com/gotorsocks/torsocks/internal/socks5"
	"github.com/gotorsocks/torsocks/internal/socks5test"
)

// DNS fixtures, shared by the DNS tests: a SOCKS server that knows names, canaries on port 53 of
// the nameserver addresses (UDP and TCP, in the test's namespace: the program's UDP sockets live
// in torsocks' sandbox namespace, so anything arriving here leaked), and test resolv.conf and
// hosts files bind-mounted over /etc for each program (a private mount namespace per run).
var (
	dnsOnce        sync.Once
	dnsErr         error
	nameSocks      *socks5test.Server // 127.0.0.1:9081 and [::1]:9081
	dnsUDPCanaries []*socks5test.UDPCanary
	dnsTCPCanaries []*socks5test.Canary
	resolvV4       string // nameserver 192.0.2.53
	resolvV6       string // nameserver 2001:db8:53::53
	hostsFile      string
)

const nameSocksPort = "9081"

// Names the SOCKS server resolves (RESOLVE and CONNECT by name); every .onion connects to the
// IPv4 canary.
var dnsNames = map[string][]netip.Addr{
	"web.test":  {netnstest.DestV4},
	"web6.test": {netnstest.DestV6},
}

func startDNSFixtures(t *testing.T) {
	t.Helper()
	dnsOnce.Do(func() { dnsErr = setupDNS() })
	if dnsErr != nil {
		t.Fatal(dnsErr)
	}
}

func setupDNS() error {
	var err error
	nameSocks, err = socks5test.Start(socks5test.Options{
		Listen:   []string{"127.0.0.1:" + nameSocksPort, "[::1]:" + nameSocksPort},
		SourceV4: netnstest.SocksSrcV4,
		SourceV6: netnstest.SocksSrcV6,
		Resolve:  dnsNames,
		ResolveName: func(host string) (netip.Addr, bool) {
			h := strings.ToLower(host)
			if strings.HasSuffix(h, ".onion") {
				return netnstest.DestV4, true
			}
			if a, ok := dnsNames[h]; ok {
				return a[0], true
			}
			return netip.Addr{}, false
		},
	})
	if err != nil {
		return err
	}
	for _, ns := range []netip.Addr{netnstest.NameserverV4, netnstest.NameserverV6} {
		ap := netip.AddrPortFrom(ns, 53).String()
		u, err := socks5test.StartUDPCanary(ap)
		if err != nil {
			return err
		}
		dnsUDPCanaries = append(dnsUDPCanaries, u)
		c, err := socks5test.StartCanary(ap) // no allowed source: every connection is a leak
		if err != nil {
			return err
		}
		dnsTCPCanaries = append(dnsTCPCanaries, c)
	}
	dir, err := os.MkdirTemp(buildDir, "dns-")
	if err != nil {
		return err
	}
	resolvV4 = filepath.Join(dir, "resolv4.conf")
	resolvV6 = filepath.Join(dir, "resolv6.conf")
	hostsFile = filepath.Join(dir, "hosts")
	for p, text := range map[string]string{
		// Short time-outs bound a failing test (answers come at once when all is well).
		resolvV4:  "nameserver 192.0.2.53\noptions timeout:2 attempts:2\n",
		resolvV6:  "nameserver 2001:db8:53::53\noptions timeout:2 attempts:2\n",
		hostsFile: "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n203.0.113.10 hosts-file.test\n",
	} {
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// dnsNoLeaks fails the test if a DNS canary saw a datagram or a connection, or a destination
// canary a connection not made by a SOCKS server.
func dnsNoLeaks(t *testing.T) {
	t.Helper()
	for _, u := range dnsUDPCanaries {
		settle(t, u)
		if n := u.Packets(); n != 0 {
			t.Errorf("DNS LEAK: %d datagrams reached %v from %v", n, u.Addr(), u.Sources())
		}
	}
	for _, c := range dnsTCPCanaries {
		settle(t, c)
		if n := c.Accepted(); n != 0 {
			t.Errorf("DNS LEAK: %d connections reached %v from %v", n, c.Addr(), c.Remotes())
		}
	}
	noLeaks(t)
}

// runDNS runs args under torsocks (SOCKS server nameSocks unless env says otherwise) in a private
// mount namespace where /etc/resolv.conf is resolv and /etc/hosts the test hosts file. args[0]
// may be a torsocks option; torsocks finds the program.
func runDNS(t *testing.T, resolv string, env []string, args ...string) result {
	t.Helper()
	return runDNSRun(t, resolv, "", env, args...)
}

// runDNSRun is runDNS with directory run (if not "") mounted over /run as well.
func runDNSRun(t *testing.T, resolv, run string, env []string, args ...string) result {
	t.Helper()
	script := `mount --bind "$1" /etc/resolv.conf && mount --bind "$2" /etc/hosts && ` +
		`{ [ -z "$3" ] || mount --bind "$3" /run; } && shift 3 && exec "$@"`
	cmd := append([]string{"unshare", "-m", "sh", "-c", script, "sh", resolv, hostsFile, run, torsocksBin}, args...)
	return runCmd(t, append([]string{"TORSOCKS_TOR_PORT=" + nameSocksPort}, env...), cmd...)
}

// buildMusl compiles testdata/c/NAME.c statically with musl-gcc once.
func buildMusl(t *testing.T, name string) string {
	t.Helper()
	if _, err := exec.LookPath("musl-gcc"); err != nil {
		netnstest.Skip(t, "no musl-gcc (Debian's musl-tools)")
	}
	buildMu.Lock()
	defer buildMu.Unlock()
	out := filepath.Join(buildDir, name+"_musl_static")
	if _, err := os.Stat(out); err == nil {
		return out
	}
	args := []string{"-static", "-O1", "-Wall", "-o", out, filepath.Join("testdata", "c", name+".c"), "-lpthread"}
	if o, err := exec.Command("musl-gcc", args...).CombinedOutput(); err != nil {
		t.Fatalf("musl-gcc %v: %v\n%s", args, err, o)
	}
	return out
}

// Stand-in ranges (internal/dns defaults and OnionAddrRange's).
var (
	mapV4Range   = netip.MustParsePrefix("127.192.0.0/10")
	mapV6Range   = netip.MustParsePrefix("fd74:6f72:736b::/48")
	onionV4Range = netip.MustParsePrefix("127.42.42.0/24")
)

// Two spellings of one v3 onion name (case must not matter).
const (
	onionLower = "abcdefghijklmnopqrstuvwxyz234567abcdefghijklmnopqrstuvwx.onion"
	onionUpper = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567abcdefghijklmnopqrstuvwx.onion"
)

// kvLine is one "word key=value key=value" line a test program printed; the leading word, if any,
// is under "".
type kvLine map[string]string

func kvLines(out string) []kvLine {
	var lines []kvLine
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		kv := kvLine{}
		for i, w := range f {
			k, v, ok := strings.Cut(w, "=")
			switch {
			case ok:
				kv[k] = v
			case i == 0:
				kv[""] = w
			}
		}
		lines = append(lines, kv)
	}
	return lines
}

// findKV returns the first line of out holding key=val (val "" : any value of key).
func findKV(t *testing.T, r result, key, val string) kvLine {
	t.Helper()
	for _, l := range kvLines(r.stdout) {
		if v, ok := l[key]; ok && (val == "" || v == val) || val == "" && l[""] == key {
			return l
		}
	}
	t.Fatalf("no line with %s=%s\nstdout:\n%s\nstderr:\n%s", key, val, r.stdout, r.stderr)
	return nil
}

// addrIn parses s and fails unless it is inside p.
func addrIn(t *testing.T, s string, p netip.Prefix) netip.Addr {
	t.Helper()
	a, err := netip.ParseAddr(s)
	if err != nil || !p.Contains(a) {
		t.Fatalf("address %q is not inside %v", s, p)
	}
	return a
}

// wantOK fails unless the run exited with status 0.
func wantOK(t *testing.T, what string, r result) {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("%s: exit %d\nstdout:\n%s\nstderr:\n%s", what, r.code, r.stdout, r.stderr)
	}
}

// wantNamedConnects checks that reqs are one or more SOCKS CONNECTs (two when a client races
// IPv6 and IPv4) carrying name with ATYP 3 to port 80, and nothing else (no RESOLVE).
func wantNamedConnects(t *testing.T, reqs []socks5test.Request, name string) {
	t.Helper()
	if len(reqs) == 0 || len(reqs) > 2 {
		t.Fatalf("SOCKS server saw %d requests %+v, want a CONNECT to %s", len(reqs), reqs, name)
	}
	for _, q := range reqs {
		if q.Cmd != socks5.CmdConnect || q.ATYP != socks5.AtypDomain || q.Host != name || q.Port != 80 {
			t.Errorf("request cmd %#x atyp %d %s:%d; want CONNECT atyp 3 %s:80", q.Cmd, q.ATYP, q.Host, q.Port, name)
		}
	}
}

// wantCanaryPage fails unless out holds the page of the canary on dst, fetched by the SOCKS server.
func wantCanaryPage(t *testing.T, r result, dst string) {
	t.Helper()
	if !strings.Contains(r.stdout, "canary "+dst+" says hello from ") {
		t.Fatalf("no page from the canary on %s\nstdout:\n%s\nstderr:\n%s", dst, r.stdout, r.stderr)
	}
}

// noWarnings fails if torsocks logged a warning or an error.
func noWarnings(t *testing.T, r result) {
	t.Helper()
	lines, _ := parseLog(r.stderr)
	if len(levelLines(lines, "WARNING"))+len(levelLines(lines, "ERROR")) != 0 {
		t.Errorf("torsocks logged:\n%s", r.stderr)
	}
}

// dnsTest starts the fixtures, runs f as a subtest per nameserver file (IPv4, IPv6) and checks
// the canaries after each.
func dnsTest(t *testing.T, f func(t *testing.T, resolv string)) {
	t.Helper()
	env(t)
	startDNSFixtures(t)
	for _, ns := range []struct{ name, file string }{{"ns4", resolvV4}, {"ns6", resolvV6}} {
		t.Run(ns.name, func(t *testing.T) {
			f(t, ns.file)
			dnsNoLeaks(t)
		})
	}
}

// 1. glibc: getaddrinfo (curl, python3), gethostbyname, getnameinfo/gethostbyaddr of a stand-in,
// res_query for A and other types, getent; c-ares.
func TestDNSGlibc(t *testing.T) {
	dnsTest(t, func(t *testing.T, resolv string) {
		t.Run("curl", func(t *testing.T) {
			for _, tc := range []struct{ flag, name, dst string }{
				{"-4", "web.test", "203.0.113.10:80"}, {"-6", "web.test", "203.0.113.10:80"},
				{"", "web.test", "203.0.113.10:80"}, {"", "web6.test", "[2001:db8::10]:80"},
			} {
				n := len(nameSocks.Requests())
				args := []string{"curl", "-sS", "--max-time", "20"}
				if tc.flag != "" {
					args = append(args, tc.flag)
				}
				r := runDNS(t, resolv, nil, append(args, "http://"+tc.name+"/")...)
				wantOK(t, "curl "+tc.flag, r)
				wantCanaryPage(t, r, tc.dst)
				wantNamedConnects(t, newRequests(nameSocks, n), tc.name)
				noWarnings(t, r)
			}
		})
		t.Run("python3", func(t *testing.T) {
			n := len(nameSocks.Requests())
			r := runDNS(t, resolv, nil, "python3", "-c", `
import socket
a = socket.gethostbyname("web.test")
print("gethostbyname=" + a)
print("getaddrinfo=" + ",".join(sorted({ai[4][0] for ai in socket.getaddrinfo("web.test", 80, type=socket.SOCK_STREAM)})))
print("gethostbyaddr=" + socket.gethostbyaddr(a)[0])
print("getnameinfo=" + socket.getnameinfo((a, 80), socket.NI_NAMEREQD)[0])
s = socket.create_connection(("web.test", 80), timeout=20)
print("peer=" + s.getpeername()[0])
s.sendall(b"GET / HTTP/1.0\r\nHost: web.test\r\n\r\n")
body = b""
while True:
    b = s.recv(4096)
    if not b: break
    body += b
print(body.decode().splitlines()[-1])
`)
			wantOK(t, "python3", r)
			addrIn(t, findKV(t, r, "gethostbyname", "")["gethostbyname"], mapV4Range)
			gai := strings.Split(findKV(t, r, "getaddrinfo", "")["getaddrinfo"], ",")
			if len(gai) != 2 {
				t.Fatalf("getaddrinfo: %v, want a stand-in of each family", gai)
			}
			addrIn(t, gai[0], mapV4Range)
			addrIn(t, gai[1], mapV6Range)
			findKV(t, r, "gethostbyaddr", "web.test")
			findKV(t, r, "getnameinfo", "web.test")
			if p := findKV(t, r, "peer", "")["peer"]; p != gai[0] && p != gai[1] {
				t.Errorf("getpeername %s is not a stand-in of web.test %v", p, gai)
			}
			wantCanaryPage(t, r, "203.0.113.10:80")
			wantNamedConnects(t, newRequests(nameSocks, n), "web.test")
		})
		t.Run("getnameinfo-gethostbyaddr", func(t *testing.T) {
			bin := buildC(t, "dns_probe", "-lresolv")
			for _, fam := range []struct {
				f string
				p netip.Prefix
			}{{"4", mapV4Range}, {"6", mapV6Range}} {
				r := runDNS(t, resolv, nil, bin, "rev", "web.test", fam.f)
				wantOK(t, "rev", r)
				addrIn(t, findKV(t, r, "addr", "")["addr"], fam.p)
				findKV(t, r, "nameinfo", "web.test")
				findKV(t, r, "hostbyaddr", "web.test")
			}
			// A stand-in nobody resolved has no name: an answer (NXDOMAIN), not a time-out, which
			// glibc would report as EAI_AGAIN and TRY_AGAIN (h_errno 2).
			r := runDNS(t, resolv, nil, bin, "revaddr", "127.192.200.1")
			if l := findKV(t, r, "nameinfo", "-"); l["rc"] != "EAI_NONAME" {
				t.Errorf("getnameinfo of an unallocated stand-in: %v, want EAI_NONAME (NXDOMAIN)", l)
			}
			if l := findKV(t, r, "hostbyaddr", "-"); l["h_errno"] != "1" {
				t.Errorf("gethostbyaddr of an unallocated stand-in: %v, want HOST_NOT_FOUND (h_errno 1)", l)
			}
		})
		t.Run("gethostbyname", func(t *testing.T) {
			r := runDNS(t, resolv, nil, buildC(t, "dns_probe", "-lresolv"), "hostbyname", "web.test")
			addrIn(t, findKV(t, r, "hostbyname", "")["hostbyname"], mapV4Range)
		})
		t.Run("res_query", func(t *testing.T) {
			bin := buildC(t, "dns_probe", "-lresolv")
			r := runDNS(t, resolv, nil, bin, "resq", "web.test", "A")
			l := findKV(t, r, "rcode", "0")
			if l["ancount"] != "1" {
				t.Fatalf("res_query A: %v", l)
			}
			addrIn(t, findKV(t, r, "answer", "")["answer"], mapV4Range)
			r = runDNS(t, resolv, nil, bin, "resq", "web.test", "AAAA")
			addrIn(t, findKV(t, r, "answer", "")["answer"], mapV6Range)
			// Other types: NODATA (res_query -1, h_errno NO_DATA = 4), an answer: a time-out would
			// be TRY_AGAIN (h_errno 2).
			for _, typ := range []string{"MX", "TXT", "SRV", "HTTPS"} {
				r := runDNS(t, resolv, nil, bin, "resq", "web.test", typ)
				l := findKV(t, r, "resq", "")
				if l["len"] != "-1" || l["h_errno"] != "4" {
					t.Errorf("res_query %s: %v, want NODATA (h_errno 4)", typ, l)
				}
			}
		})
		t.Run("getent", func(t *testing.T) {
			// getent hosts asks AAAA first (gethostbyname2 AF_INET6): the IPv6 stand-in.
			r := runDNS(t, resolv, nil, "getent", "hosts", "web.test")
			wantOK(t, "getent hosts", r)
			f := strings.Fields(r.stdout)
			if len(f) != 2 || f[1] != "web.test" {
				t.Fatalf("getent hosts web.test: %q", r.stdout)
			}
			addrIn(t, f[0], mapV6Range)
			r = runDNS(t, resolv, nil, "getent", "ahostsv4", "web.test")
			wantOK(t, "getent ahostsv4", r)
			addrIn(t, strings.Fields(r.stdout)[0], mapV4Range)
			// /etc/hosts and localhost behave as without torsocks.
			r = runDNS(t, resolv, nil, "getent", "hosts", "hosts-file.test")
			if strings.Join(strings.Fields(r.stdout), " ") != "203.0.113.10 hosts-file.test" {
				t.Errorf("getent hosts hosts-file.test: %q", r.stdout)
			}
			r = runDNS(t, resolv, nil, "getent", "ahostsv4", "localhost")
			if f := strings.Fields(r.stdout); len(f) == 0 || f[0] != "127.0.0.1" {
				t.Errorf("getent ahostsv4 localhost: %q", r.stdout)
			}
			// A single-label name that is nowhere: not found, an answer (NXDOMAIN, HOST_NOT_FOUND),
			// not a time-out (TRY_AGAIN, h_errno 2).
			if r := runDNS(t, resolv, nil, "getent", "hosts", "nosuchhost"); r.code != 2 {
				t.Errorf("getent hosts nosuchhost: exit %d, want 2\n%s", r.code, r.stderr)
			}
			r = runDNS(t, resolv, nil, buildC(t, "dns_probe", "-lresolv"), "hostbyname", "nosuchhost")
			if l := findKV(t, r, "hostbyname", "-"); l["h_errno"] != "1" {
				t.Errorf("gethostbyname nosuchhost: %v, want HOST_NOT_FOUND (h_errno 1)", l)
			}
		})
		t.Run("use-vc", func(t *testing.T) {
			// "options use-vc": glibc asks over TCP to port 53, which goes to the responder.
			n := len(nameSocks.Requests())
			r := runDNS(t, vcResolv(t, resolv), nil, "curl", "-sS", "--max-time", "20", "http://web.test/")
			wantOK(t, "curl (use-vc)", r)
			wantCanaryPage(t, r, "203.0.113.10:80")
			wantNamedConnects(t, newRequests(nameSocks, n), "web.test")
		})
		t.Run("c-ares", func(t *testing.T) {
			bin := buildCares(t)
			n := len(nameSocks.Requests())
			r := runDNS(t, resolv, nil, bin, "web.test", "80")
			wantOK(t, "dns_cares", r)
			l := findKV(t, r, "cares", "")
			if !strings.Contains(r.stdout, "status=Successful") {
				t.Fatalf("c-ares: %v\n%s", l, r.stderr)
			}
			findKV(t, r, "page", "canary")
			wantNamedConnects(t, newRequests(nameSocks, n), "web.test")
		})
	})
}

// vcResolv returns a copy of resolv with "options use-vc" (DNS over TCP).
func vcResolv(t *testing.T, resolv string) string {
	t.Helper()
	b, err := os.ReadFile(resolv)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "resolv-vc.conf")
	if err := os.WriteFile(p, append(b, "options use-vc\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// buildCares builds testdata/c/dns_cares.c against c-ares, or skips without its headers.
func buildCares(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat("/usr/include/ares.h"); err != nil {
		netnstest.Skip(t, "no c-ares headers (Debian's libc-ares-dev)")
	}
	return buildC(t, "dns_cares", "-lcares")
}

// 2. A static musl client: musl sends its queries with sendto on an unconnected socket to each
// nameserver and checks where the answer came from.
func TestDNSMusl(t *testing.T) {
	dnsTest(t, func(t *testing.T, resolv string) {
		bin := buildMusl(t, "dns_probe")
		if f, err := elf.Open(bin); err != nil {
			t.Fatal(err)
		} else {
			for _, p := range f.Progs {
				if p.Type == elf.PT_INTERP {
					t.Fatalf("%s is not static", bin)
				}
			}
			f.Close()
		}
		r := runDNS(t, resolv, nil, bin, "gai", "any", "web.test")
		l := findKV(t, r, "gai", "")
		if l["rc"] != "0" {
			t.Fatalf("musl getaddrinfo: %v\n%s", l, r.stderr)
		}
		n := len(nameSocks.Requests())
		r = runDNS(t, resolv, nil, bin, "connect", "web.test", "80")
		findKV(t, r, "connect", "0")
		addrIn(t, strings.Split(findKV(t, r, "peer", "")["peer"], ":80")[0], mapV4Range)
		findKV(t, r, "page", "canary")
		wantNamedConnects(t, newRequests(nameSocks, n), "web.test")
		r = runDNS(t, resolv, nil, bin, "rev", "web.test", "4")
		findKV(t, r, "nameinfo", "web.test")
		r = runDNS(t, resolv, nil, bin, "resq", "web.test", "MX")
		// An answer (NOERROR, no records); a time-out would be TRY_AGAIN (h_errno 2).
		if l := findKV(t, r, "resq", ""); l["rcode"] != "0" && l["h_errno"] == "2" {
			t.Errorf("musl res_query MX: %v", l)
		}
	})
}

// 3. The static Go client with Go's own resolver (UDP; TCP with use-vc).
func TestDNSGoResolver(t *testing.T) {
	dnsTest(t, func(t *testing.T, resolv string) {
		bin := buildGoClient(t)
		for _, rv := range []struct{ name, file string }{{"udp", resolv}, {"use-vc", vcResolv(t, resolv)}} {
			n := len(nameSocks.Requests())
			r := runDNS(t, rv.file, nil, bin, "http://web.test/", "http://web6.test/")
			wantOK(t, "goclient "+rv.name, r)
			wantCanaryPage(t, r, "203.0.113.10:80")
			wantCanaryPage(t, r, "[2001:db8::10]:80")
			for _, l := range kvLines(r.stdout) {
				if rem, ok := l["remote"]; ok {
					ap, err := netip.ParseAddrPort(rem)
					if err != nil || !(mapV4Range.Contains(ap.Addr()) || mapV6Range.Contains(ap.Addr())) {
						t.Errorf("%s: remote %q is not a stand-in", rv.name, rem)
					}
				}
			}
			reqs := newRequests(nameSocks, n)
			var hosts []string
			for _, q := range reqs {
				if q.Cmd != socks5.CmdConnect || q.ATYP != socks5.AtypDomain {
					t.Errorf("%s: request %+v", rv.name, q)
				}
				hosts = append(hosts, q.Host)
			}
			if !slices.Contains(hosts, "web.test") || !slices.Contains(hosts, "web6.test") {
				t.Errorf("%s: CONNECTs to %v, want web.test and web6.test by name", rv.name, hosts)
			}
		}
	})
}

// 4. dig: its own resolver, any server address, UDP and TCP, every type answered on the first
// try (+tries=1: a query the responder dropped fails the run, "no servers could be reached").
func TestDNSDig(t *testing.T) {
	env(t)
	startDNSFixtures(t)
	if _, err := exec.LookPath("dig"); err != nil {
		netnstest.Skip(t, "no dig (Debian's dnsutils)")
	}
	dig := func(t *testing.T, args ...string) result {
		t.Helper()
		return runDNS(t, resolvV4, nil, append([]string{"dig", "+time=2", "+tries=1"}, args...)...)
	}
	for _, tc := range []struct {
		name string
		args []string
		want netip.Prefix
	}{
		{"resolv.conf", []string{"web.test"}, mapV4Range},
		{"@192.0.2.53", []string{"@192.0.2.53", "web.test"}, mapV4Range},
		{"@8.8.8.8", []string{"@8.8.8.8", "web.test"}, mapV4Range},
		{"@203.0.113.10", []string{"@203.0.113.10", "web.test"}, mapV4Range},
		{"+tcp", []string{"+tcp", "@192.0.2.53", "web.test"}, mapV4Range},
		{"+tcp @8.8.8.8", []string{"+tcp", "@8.8.8.8", "web.test"}, mapV4Range},
		{"AAAA", []string{"@192.0.2.53", "AAAA", "web.test"}, mapV6Range},
		{"@2001:db8:53::53 +tcp", []string{"+tcp", "@2001:db8:53::53", "web.test"}, mapV4Range},
		{"@2001:db8:53::53", []string{"@2001:db8:53::53", "web.test"}, mapV4Range},
		{"@2001:4860:4860::8888 AAAA", []string{"@2001:4860:4860::8888", "AAAA", "web.test"}, mapV6Range},
		{"onion", []string{"@192.0.2.53", onionUpper}, onionV4Range},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := dig(t, append([]string{"+short"}, tc.args...)...)
			wantOK(t, "dig", r)
			addrIn(t, strings.TrimSpace(r.stdout), tc.want)
		})
	}
	// Other types: NOERROR with no answer.
	for _, typ := range []string{"MX", "TXT", "HTTPS", "SRV", "NS", "SOA", "ANY"} {
		t.Run(typ, func(t *testing.T) {
			r := dig(t, "+noall", "+comments", "@192.0.2.53", typ, "web.test")
			wantOK(t, "dig "+typ, r)
			if !strings.Contains(r.stdout, "status: NOERROR") || !strings.Contains(r.stdout, "ANSWER: 0,") {
				t.Errorf("dig %s: want NOERROR without answers\n%s", typ, r.stdout)
			}
		})
	}
	t.Run("not-a-host-name", func(t *testing.T) {
		r := dig(t, "+noall", "+comments", "@192.0.2.53", "bad!name.test")
		if !strings.Contains(r.stdout, "status: NXDOMAIN") {
			t.Errorf("dig bad!name.test: want NXDOMAIN\n%s", r.stdout)
		}
	})
	t.Run("reverse", func(t *testing.T) {
		// One invocation: the stand-in and its reverse lookup share a table.
		r := runDNS(t, resolvV4, nil, "sh", "-c", `ip=$(dig +short +time=2 +tries=1 web.test) && dig +short +time=2 +tries=1 -x "$ip"`)
		wantOK(t, "dig -x", r)
		if strings.TrimSpace(r.stdout) != "web.test." {
			t.Errorf("dig -x of the stand-in of web.test: %q", r.stdout)
		}
	})
	t.Run("hosts-and-localhost", func(t *testing.T) {
		for name, want := range map[string]string{"hosts-file.test": "203.0.113.10", "localhost": "127.0.0.1", "foo.localhost": "127.0.0.1"} {
			r := dig(t, "+short", "@192.0.2.53", name)
			if strings.TrimSpace(r.stdout) != want {
				t.Errorf("dig %s: %q, want %s", name, r.stdout, want)
			}
		}
	})
	dnsNoLeaks(t)
}

// 5. .onion by name: a stand-in from OnionAddrRange, case-insensitive, and the name in the CONNECT.
func TestDNSOnion(t *testing.T) {
	dnsTest(t, func(t *testing.T, resolv string) {
		glibc := buildC(t, "dns_probe", "-lresolv")
		t.Run("case-insensitive", func(t *testing.T) {
			r := runDNS(t, resolv, nil, glibc, "gai", "any", onionLower, onionUpper)
			var addrs []string
			for _, l := range kvLines(r.stdout) {
				if l[""] == "gai" {
					if l["rc"] != "0" {
						t.Fatalf("getaddrinfo: %v", l)
					}
					addrs = append(addrs, l["addrs"])
				}
			}
			if len(addrs) != 2 || addrs[0] != addrs[1] {
				t.Fatalf("the two spellings got %v", addrs)
			}
			a := strings.Split(addrs[0], ",")
			if len(a) != 2 {
				t.Fatalf("want one stand-in of each family: %v", a)
			}
			addrIn(t, a[0], onionV4Range)
			addrIn(t, a[1], mapV6Range)
		})
		t.Run("curl", func(t *testing.T) {
			for _, name := range []string{onionLower, onionUpper} {
				n := len(nameSocks.Requests())
				r := runDNS(t, resolv, nil, "curl", "-sS", "--max-time", "20", "http://"+name+"/")
				wantOK(t, "curl", r)
				wantCanaryPage(t, r, "203.0.113.10:80")
				wantNamedConnects(t, newRequests(nameSocks, n), onionLower)
			}
		})
		t.Run("glibc-musl", func(t *testing.T) {
			for _, bin := range []string{glibc, buildMusl(t, "dns_probe")} {
				n := len(nameSocks.Requests())
				r := runDNS(t, resolv, nil, bin, "connect", onionUpper, "80")
				findKV(t, r, "connect", "0")
				peer, err := netip.ParseAddrPort(findKV(t, r, "peer", "")["peer"])
				if err != nil || !onionV4Range.Contains(peer.Addr()) {
					t.Errorf("%s: getpeername %v is not an onion stand-in", bin, peer)
				}
				findKV(t, r, "page", "canary")
				wantNamedConnects(t, newRequests(nameSocks, n), onionLower)
			}
		})
		t.Run("python3", func(t *testing.T) {
			n := len(nameSocks.Requests())
			r := runDNS(t, resolv, nil, "python3", "-c", `
import socket, sys
name = sys.argv[1]
print("gethostbyname=" + socket.gethostbyname(name))
s = socket.create_connection((name, 80), timeout=20)
print("peer=" + s.getpeername()[0])
s.sendall(b"GET / HTTP/1.0\r\n\r\n")
body = b""
while True:
    b = s.recv(4096)
    if not b: break
    body += b
print(body.decode().splitlines()[-1])
`, onionLower)
			wantOK(t, "python3", r)
			addrIn(t, findKV(t, r, "gethostbyname", "")["gethostbyname"], onionV4Range)
			p := findKV(t, r, "peer", "")["peer"]
			if a, err := netip.ParseAddr(p); err != nil || !(onionV4Range.Contains(a) || mapV6Range.Contains(a)) {
				t.Errorf("getpeername %q is not a stand-in", p)
			}
			wantCanaryPage(t, r, "203.0.113.10:80")
			wantNamedConnects(t, newRequests(nameSocks, n), onionLower)
		})
		// Go's resolver and c-ares refuse .onion names themselves (RFC 7686): the lookup fails in
		// the program, no query is sent, nothing reaches Tor.
		t.Run("go-and-c-ares-refuse-onion", func(t *testing.T) {
			n := len(nameSocks.Requests())
			r := runDNS(t, resolv, nil, buildGoClient(t), "http://"+onionLower+"/")
			if r.code == 0 {
				t.Logf("the Go resolver resolved .onion (it refused before Go %s?):\n%s", runtime.Version(), r.stdout)
				wantNamedConnects(t, newRequests(nameSocks, n), onionLower)
			} else if q := newRequests(nameSocks, n); len(q) != 0 {
				t.Errorf("failed Go lookup still sent %+v", q)
			}
			if _, err := os.Stat("/usr/include/ares.h"); err == nil {
				r := runDNS(t, resolv, nil, buildCares(t), onionLower, "80")
				if !strings.Contains(r.stdout, "status=Domain name not found") && !strings.Contains(r.stdout, "page=canary") {
					t.Errorf("c-ares .onion: %s", r.stdout)
				}
			}
		})
	})
}

// 6. Resolve mode (flag, environment, file): real addresses from Tor's RESOLVE, connect by IP;
// unknown names NXDOMAIN at once; reverse lookups through RESOLVE_PTR; .onion still stand-ins.
// Map mode (the default) never sends RESOLVE.
func TestDNSResolveMode(t *testing.T) {
	env(t)
	startDNSFixtures(t)
	resolveConf := confFile(t, "DNSMode resolve\n")
	for _, mode := range []struct {
		name      string
		env, opts []string
	}{
		{"flag", nil, []string{"--dns", "resolve"}},
		{"env", []string{"TORSOCKS_DNS_MODE=resolve"}, nil},
		{"conf", []string{"TORSOCKS_CONF_FILE=" + resolveConf}, nil},
	} {
		t.Run(mode.name, func(t *testing.T) {
			run := func(args ...string) result {
				return runDNS(t, resolvV4, mode.env, append(append([]string{}, mode.opts...), args...)...)
			}
			n := len(nameSocks.Requests())
			r := run("getent", "hosts", "web.test")
			wantOK(t, "getent hosts", r)
			if strings.Join(strings.Fields(r.stdout), " ") != "203.0.113.10 web.test" {
				t.Fatalf("getent hosts web.test: %q", r.stdout)
			}
			reqs := newRequests(nameSocks, n)
			if len(reqs) != 1 || reqs[0].Cmd != socks5.CmdResolve || reqs[0].Host != "web.test" {
				t.Errorf("want one RESOLVE web.test (the answer cached for AAAA and A), got %+v", reqs)
			}
			r = run("getent", "hosts", "web6.test")
			if strings.Join(strings.Fields(r.stdout), " ") != "2001:db8::10 web6.test" {
				t.Errorf("getent hosts web6.test: %q", r.stdout)
			}

			n = len(nameSocks.Requests())
			r = run("curl", "-sS", "--max-time", "20", "http://web.test/")
			wantOK(t, "curl", r)
			wantCanaryPage(t, r, "203.0.113.10:80")
			var connects []socks5test.Request
			for _, q := range newRequests(nameSocks, n) {
				if q.Cmd == socks5.CmdConnect {
					connects = append(connects, q)
				}
			}
			wantConnectRequests(t, connects, dest4)

			// Unknown: an answer (NXDOMAIN, HOST_NOT_FOUND), not a time-out (TRY_AGAIN, h_errno 2).
			r = run("getent", "hosts", "nxdomain.test")
			if r.code != 2 {
				t.Errorf("getent hosts nxdomain.test: exit %d, want 2\n%s%s", r.code, r.stdout, r.stderr)
			}
			r = run(buildC(t, "dns_probe", "-lresolv"), "hostbyname", "nxdomain.test")
			if l := findKV(t, r, "hostbyname", "-"); l["h_errno"] != "1" {
				t.Errorf("gethostbyname nxdomain.test: %v, want HOST_NOT_FOUND (h_errno 1)", l)
			}

			// Reverse: /etc/hosts locally, a global address through RESOLVE_PTR.
			r = run("getent", "hosts", "203.0.113.10")
			if strings.Join(strings.Fields(r.stdout), " ") != "203.0.113.10 hosts-file.test" {
				t.Errorf("getent hosts 203.0.113.10: %q", r.stdout)
			}
			n = len(nameSocks.Requests())
			r = run("getent", "hosts", "2001:db8::10")
			if strings.Join(strings.Fields(r.stdout), " ") != "2001:db8::10 web6.test" {
				t.Errorf("getent hosts 2001:db8::10: %q\n%s", r.stdout, r.stderr)
			}
			if q := newRequests(nameSocks, n); len(q) != 1 || q[0].Cmd != socks5.CmdResolvePTR {
				t.Errorf("want one RESOLVE_PTR, got %+v", q)
			}

			// .onion: a stand-in, never RESOLVE (Tor refuses it).
			n = len(nameSocks.Requests())
			r = run(buildC(t, "dns_probe", "-lresolv"), "connect", onionLower, "80", "4")
			addrIn(t, strings.TrimSuffix(findKV(t, r, "peer", "")["peer"], ":80"), onionV4Range)
			findKV(t, r, "page", "canary")
			wantNamedConnects(t, newRequests(nameSocks, n), onionLower)
			dnsNoLeaks(t)
		})
	}
	t.Run("map-default", func(t *testing.T) {
		n := len(nameSocks.Requests())
		r := runDNS(t, resolvV4, nil, "getent", "ahostsv4", "web.test")
		addrIn(t, strings.Fields(r.stdout)[0], mapV4Range)
		r = runDNS(t, resolvV4, []string{"TORSOCKS_DNS_MODE=resolve"}, "--dns", "map", "getent", "ahostsv4", "web.test")
		addrIn(t, strings.Fields(r.stdout)[0], mapV4Range)
		if q := newRequests(nameSocks, n); len(q) != 0 {
			t.Errorf("map mode sent %+v", q)
		}
		dnsNoLeaks(t)
	})
}

// Item 5 of the issue: local resolver daemons reached over unix sockets (nscd, systemd-resolved's
// varlink socket, avahi) would resolve outside Tor. Connects to them are refused, so glibc falls
// back to DNS, which torsocks answers. Fake daemons listen where the real ones would (a directory
// mounted over /run in the program's mount namespace) and must see no connection.
func TestDNSResolverDaemons(t *testing.T) {
	env(t)
	startDNSFixtures(t)
	run := t.TempDir()
	paths := []string{"nscd/socket", "systemd/resolve/io.systemd.Resolve", "avahi-daemon/socket"}
	var daemons []*socks5test.Sink
	for _, p := range paths {
		full := filepath.Join(run, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		d, err := socks5test.Listen("unix", full, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		daemons = append(daemons, d)
	}
	// glibc asks nscd first (getent), then DNS.
	r := runDNSRun(t, resolvV4, run, nil, "getent", "ahostsv4", "web.test")
	wantOK(t, "getent", r)
	addrIn(t, strings.Fields(r.stdout)[0], mapV4Range)
	// What nss-resolve and nss-mdns would do: connect to the daemons' sockets.
	r = runDNSRun(t, resolvV4, run, nil, "python3", "-c", `
import socket, sys
for p in sys.argv[1:]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect("/run/" + p)
        print("connect=0 path=" + p)
    except OSError as e:
        print("connect=%s path=%s" % (e.errno, p))
`, paths[0], paths[1], paths[2])
	wantOK(t, "python3", r)
	for _, l := range kvLines(r.stdout) {
		if l["connect"] == "0" {
			t.Errorf("connect to the resolver daemon socket /run/%s succeeded", l["path"])
		}
	}
	for i, d := range daemons {
		settle(t, d)
		if n := d.Accepted(); n != 0 {
			t.Errorf("LEAK: the local resolver daemon /run/%s was reached %d times (it resolves outside Tor)", paths[i], n)
		}
	}
	dnsNoLeaks(t)
}

// 7. A name resolved in a parent, connected from an exec'd child: one stand-in table per torsocks
// invocation, shared by the whole tree.
func TestDNSParentChild(t *testing.T) {
	dnsTest(t, func(t *testing.T, resolv string) {
		for _, tc := range []struct{ name, script string }{
			{"v4", `ip=$(getent ahostsv4 web.test | head -n1 | cut -d" " -f1) && echo "ip=$ip" && exec curl -sS --max-time 20 "http://$ip/"`},
			{"v6", `ip=$(getent hosts web.test | cut -d" " -f1) && echo "ip=$ip" && exec curl -sS -g --max-time 20 "http://[$ip]/"`},
			{"onion", `ip=$(getent ahostsv4 ` + onionUpper + ` | head -n1 | cut -d" " -f1) && echo "ip=$ip" && exec curl -sS --max-time 20 "http://$ip/"`},
		} {
			t.Run(tc.name, func(t *testing.T) {
				n := len(nameSocks.Requests())
				r := runDNS(t, resolv, nil, "sh", "-c", tc.script)
				wantOK(t, "sh", r)
				ip := findKV(t, r, "ip", "")["ip"]
				if a, err := netip.ParseAddr(ip); err != nil || !(mapV4Range.Contains(a) || mapV6Range.Contains(a) || onionV4Range.Contains(a)) {
					t.Fatalf("the parent got %q, not a stand-in", ip)
				}
				wantCanaryPage(t, r, "203.0.113.10:80")
				name := "web.test"
				if tc.name == "onion" {
					name = onionLower
				}
				wantNamedConnects(t, newRequests(nameSocks, n), name)
			})
		}
	})
}

// 8. A full stand-in range: OnionAddrRange 127.42.42.0/30 has 2 usable addresses. Two onions
// connected and held, a third lookup fails cleanly (SERVFAIL: EAI_AGAIN) and never gets a live
// address; after one connection closes, the third gets the freed address and connects.
func TestDNSFullRange(t *testing.T) {
	env(t)
	startDNSFixtures(t)
	conf := confFile(t, "OnionAddrRange 127.42.42.0/30\n")
	bin := buildC(t, "dns_probe", "-lresolv")
	n := len(nameSocks.Requests())
	r := runDNS(t, resolvV4, []string{"TORSOCKS_CONF_FILE=" + conf}, bin, "hold", "one.onion", "two.onion", "three.onion")
	errLines := strings.Split(r.stderr, "\n")
	t.Logf("%s%s", r.stdout, strings.Join(errLines[:min(len(errLines), 5)], "\n"))
	findKV(t, r, "held", "2")
	var live []string
	for _, l := range kvLines(r.stdout) {
		if l["connect"] == "0" {
			live = append(live, l["addr"])
		}
	}
	if len(live) < 2 {
		t.Fatalf("connections: %v", live)
	}
	for _, a := range live[:2] {
		addrIn(t, a, netip.MustParsePrefix("127.42.42.0/30"))
	}
	var full []kvLine
	for _, l := range kvLines(r.stdout) {
		if l[""] == "gai" && l["name"] == "three.onion" {
			full = append(full, l)
		}
	}
	if len(full) != 2 {
		t.Fatalf("lookups of the third name: %v", full)
	}
	if full[0]["rc"] != "EAI_AGAIN" {
		t.Errorf("IPv4 lookup with the range full: %v, want EAI_AGAIN (SERVFAIL)", full[0])
	}
	for _, l := range full {
		for _, a := range strings.Split(l["addrs"], ",") {
			if slices.Contains(live[:2], a) {
				t.Errorf("the third name got %s, held by a live connection", a)
			}
		}
	}
	if l := findKV(t, r, "after-close", ""); l["after-close"] != "rc=0" && l["rc"] != "0" {
		t.Fatalf("after closing one connection: %v", l)
	}
	if len(live) != 3 || live[2] != live[0] {
		t.Errorf("the third name connected via %v, want the freed address %s", live[2:], live[0])
	}
	findKV(t, r, "page3", "canary")
	findKV(t, r, "page2", "canary")
	if !strings.Contains(r.stderr, "three.onion") {
		t.Errorf("no log line says the range is full:\n%s", r.stderr)
	}
	var hosts []string
	for _, q := range newRequests(nameSocks, n) {
		hosts = append(hosts, q.Host)
	}
	if !slices.Equal(hosts, []string{"one.onion", "two.onion", "three.onion"}) {
		t.Errorf("CONNECTs: %v", hosts)
	}
	dnsNoLeaks(t)
}

// 9. A connect to a stand-in address nobody resolved is refused with a clear line and reaches
// nothing.
func TestDNSUnallocatedStandIn(t *testing.T) {
	env(t)
	startDNSFixtures(t)
	for _, host := range []string{"127.192.200.1", "127.42.42.77", "fd74:6f72:736b::99"} {
		t.Run(host, func(t *testing.T) {
			var c *socks5test.Canary
			if !strings.Contains(host, ":") {
				c = startCanary(t, host+":80")
			}
			n, m := len(nameSocks.Requests()), len(socks.Requests())
			r := probe(t, nil, nil, "connect", host, "80")
			wantLines(t, r, "connect=-1 errno=EHOSTUNREACH")
			l := oneRefusal(t, r, net.JoinHostPort(host, "80"))
			if !strings.Contains(l.msg, "stand-in") {
				t.Errorf("refusal does not say why: %q", l.msg)
			}
			if c != nil {
				settle(t, c)
				if c.Accepted() != 0 {
					t.Errorf("the connect reached %v", c.Addr())
				}
			}
			if q := newRequests(nameSocks, n); len(q) != 0 {
				t.Errorf("sent to the SOCKS server: %+v", q)
			}
			if q := newRequests(socks, m); len(q) != 0 {
				t.Errorf("sent to the SOCKS server: %+v", q)
			}
		})
	}
	dnsNoLeaks(t)
}

// 10. A query storm: 16 threads × 200 getaddrinfo of distinct names (glibc: connected sockets;
// musl: unconnected), every one answered. How long it takes is logged, not bounded: speed is
// bench's business (docs/benchmarks.md).
func TestDNSQueryStorm(t *testing.T) {
	env(t)
	startDNSFixtures(t)
	for _, b := range []struct{ name, bin string }{{"glibc", buildC(t, "dns_probe", "-lresolv")}, {"musl", buildMusl(t, "dns_probe")}} {
		t.Run(b.name, func(t *testing.T) {
			r := runDNS(t, resolvV4, nil, b.bin, "storm", "16", "200")
			l := findKV(t, r, "storm", "")
			if l["ok"] != "3200" || l["fail"] != "0" {
				t.Errorf("storm: %v\n%s", l, r.stderr)
			}
			t.Logf("%s: 3200 lookups in %s ms", b.name, l["ms"])
		})
	}
	dnsNoLeaks(t)
}

// 11. Malformed DNS: 2000 random and mutated datagrams to the nameservers and malformed DNS over
// TCP, then a normal lookup and connect still work; the supervisor survives (the exit status is
// the program's).
func TestDNSMalformed(t *testing.T) {
	env(t)
	startDNSFixtures(t)
	bin := buildC(t, "dns_probe", "-lresolv")
	for _, seed := range []string{"1", strconv.FormatInt(time.Now().UnixNano()%1000000, 10)} {
		t.Run("seed="+seed, func(t *testing.T) {
			n := len(nameSocks.Requests())
			r := runDNS(t, resolvV4, nil, bin, "fuzz", "2000", seed)
			if r.code != 7 {
				t.Fatalf("exit %d, want the program's 7\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
			}
			l := findKV(t, r, "fuzz", "")
			if l["sent"] != "2000" {
				t.Errorf("fuzz: %v", l)
			}
			t.Logf("%s", strings.TrimSpace(r.stdout))
			findKV(t, r, "page", "canary")
			wantNamedConnects(t, newRequests(nameSocks, n), "web.test")
			for _, bad := range []string{"panic", "internal error", "goroutine ", "supervisor stopped"} {
				if strings.Contains(r.stderr, bad) {
					t.Errorf("stderr has %q:\n%s", bad, r.stderr)
				}
			}
		})
	}
	dnsNoLeaks(t)
}

// 12. UDP to other ports: the program's sends succeed but the datagrams are dropped in the
// sandbox (the canary sees nothing), with one warning line; a connected (QUIC-like) socket gets
// ECONNREFUSED on its next receive, so the program falls back to TCP (without it, the receive
// would wait for its 5 s SO_RCVTIMEO and fail with EAGAIN).
func TestDNSOtherUDP(t *testing.T) {
	env(t)
	startDNSFixtures(t)
	bin := buildC(t, "dns_probe", "-lresolv")
	for _, host := range []string{"203.0.113.10", "2001:db8::10"} {
		t.Run(host, func(t *testing.T) {
			u, err := socks5test.StartUDPCanary(net.JoinHostPort(host, "9999"))
			if err != nil {
				t.Fatal(err)
			}
			defer u.Close()
			q, err := socks5test.StartUDPCanary(net.JoinHostPort(host, "443"))
			if err != nil {
				t.Fatal(err)
			}
			defer q.Close()
			r := probe(t, nil, nil, "udp", host, "9999")
			wantLines(t, r, "socket=0 errno=0", "sendto=19 errno=0", "sendmsg=19 errno=0", "connect=0 errno=0", "send=19 errno=0")
			wantUDPRefusal(t, r, net.JoinHostPort(host, "9999"))

			r = runDNS(t, resolvV4, nil, bin, "quic", host, "443")
			findKV(t, r, "send", "1200")
			l := findKV(t, r, "recv", "")
			if l["recv"] != "-1" || l["errno"] != "ECONNREFUSED" {
				t.Errorf("recv on the connected UDP socket: %v, want ECONNREFUSED", l)
			}
			wantUDPRefusal(t, r, net.JoinHostPort(host, "443"))
			for _, c := range []*socks5test.UDPCanary{u, q} {
				settle(t, c)
				if p := c.Packets(); p != 0 {
					t.Errorf("LEAK: %d datagrams reached %v from %v", p, c.Addr(), c.Sources())
				}
			}
		})
	}
	dnsNoLeaks(t)
}

// wantUDPRefusal checks that torsocks logged exactly one line, a WARNING "UDP to DEST refused: ...".
func wantUDPRefusal(t *testing.T, r result, dest string) {
	t.Helper()
	lines, other := parseLog(r.stderr)
	if len(other) > 0 {
		t.Errorf("stderr lines not in torsocks' format: %q", other)
	}
	if len(lines) != 1 || lines[0].level != "WARNING" || !strings.HasPrefix(lines[0].msg, "UDP to "+dest+" refused: ") {
		t.Errorf("want one WARNING \"UDP to %s refused: ...\", got:\n%s", dest, r.stderr)
	}
}
