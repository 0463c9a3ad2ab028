package integration

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/gotorsocks/torsocks/internal/netnstest"
	"github.com/gotorsocks/torsocks/internal/socks5test"
)

// Tor's "SocksPort unix:/path": TorAddress may be a unix socket path (the C torsocks cannot).
func TestUnixSocksPort(t *testing.T) {
	env(t)
	path := filepath.Join(t.TempDir(), "socks.sock")
	srv, err := socks5test.Start(socks5test.Options{
		Listen:   []string{path},
		SourceV4: netnstest.SocksSrcV4,
		SourceV6: netnstest.SocksSrcV6,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	for _, url := range []string{"http://203.0.113.10/", "http://[2001:db8::10]/"} {
		r := torsocks(t, []string{"TORSOCKS_TOR_ADDRESS=" + path}, "curl", "-sS", "--max-time", "20", url)
		if r.code != 0 || !strings.Contains(r.stdout, "canary") {
			t.Fatalf("curl %s via unix SocksPort: exit %d\n%s\n%s", url, r.code, r.stdout, r.stderr)
		}
	}
	if n := len(srv.Requests()); n != 2 {
		t.Errorf("unix SOCKS server saw %d requests, want 2", n)
	}
	noLeaks(t)
}
