package integration

import (
	"strings"
	"testing"
)

// The programs users run most, by IPv4 and IPv6 address: the page comes back, the canary sees the
// connection come from the SOCKS server, and the program sees the real destination as its peer.
func TestCurl(t *testing.T) {
	env(t)
	for _, url := range []string{"http://203.0.113.10/", "http://[2001:db8::10]/"} {
		r := torsocks(t, nil, "curl", "-sS", "--max-time", "20", "-w", "remote=%{remote_ip}\n", url)
		if r.code != 0 {
			t.Fatalf("curl %s: exit %d\n%s", url, r.code, r.stderr)
		}
		if !strings.Contains(r.stdout, "canary") || !strings.Contains(r.stdout, "from 198.51.100.1") && !strings.Contains(r.stdout, "from [2001:db8:5::1]") {
			t.Errorf("curl %s: unexpected page %q", url, r.stdout)
		}
		host := strings.Trim(strings.TrimSuffix(strings.TrimPrefix(url, "http://"), "/"), "[]")
		if !strings.Contains(r.stdout, "remote="+host) {
			t.Errorf("curl %s: getpeername did not show the destination: %q", url, r.stdout)
		}
	}
	noLeaks(t)
}

func TestPython(t *testing.T) {
	env(t)
	script := `
import socket, urllib.request, sys
for url, host in (("http://203.0.113.10/", "203.0.113.10"), ("http://[2001:db8::10]/", "2001:db8::10")):
    body = urllib.request.urlopen(url, timeout=20).read().decode()
    assert "canary" in body, body
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.connect((host, 80))
    peer = s.getpeername()[0]
    assert peer == host, (peer, host)
    s.close()
    print("ok", host, peer)
`
	r := torsocks(t, nil, "python3", "-c", script)
	if r.code != 0 {
		t.Fatalf("python3: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if strings.Count(r.stdout, "ok ") != 2 {
		t.Errorf("python3: %q", r.stdout)
	}
	noLeaks(t)
}

func TestStaticGoClient(t *testing.T) {
	env(t)
	bin := buildGoClient(t)
	r := torsocks(t, nil, bin, "http://203.0.113.10/", "http://[2001:db8::10]/")
	if r.code != 0 {
		t.Fatalf("goclient: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	for _, want := range []string{"remote=203.0.113.10:80", "remote=[2001:db8::10]:80"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("goclient: missing %q in %q", want, r.stdout)
		}
	}
	noLeaks(t)
}
