package integration

import (
	"os"
	"strings"
	"testing"

	"github.com/gotorsocks/torsocks/internal/netnstest"
)

// Local resolver daemons (nscd, systemd-resolved's varlink socket, avahi) would look names up for
// the program around Tor: connecting to them is refused as if they were not running (glibc then
// falls back to DNS, which torsocks answers); other unix sockets work as usual. The daemons'
// sockets are faked in a private mount namespace, so the machine's /run is left alone.
func TestResolverDaemonsRefused(t *testing.T) {
	env(t)
	if err := os.MkdirAll("/run/nscd", 0o755); err != nil {
		netnstest.Skip(t, "cannot make /run/nscd: %v", err)
	}
	script := `set -e
mount -t tmpfs tmpfs /run/nscd
python3 - <<'PY' &
import socket, os, time
for p in ("/run/nscd/socket", "/run/nscd/other"):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.bind(p); s.listen(8)
    globals()[p] = s
time.sleep(15)
PY
for i in $(seq 50); do [ -S /run/nscd/other ] && break; sleep 0.1; done
"$TORSOCKS" python3 -c '
import socket
for p in ("/run/nscd/socket", "/var/run/nscd/socket", "/run/nscd/other"):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(p); print(p, "connected")
    except OSError as e:
        print(p, "errno", e.errno)
'
kill $! 2>/dev/null || true
`
	r := runCmd(t, []string{"TORSOCKS=" + torsocksBin}, "unshare", "-m", "--propagation", "private", "sh", "-c", script)
	for _, want := range []string{"/run/nscd/socket errno 111", "/var/run/nscd/socket errno 111", "/run/nscd/other connected"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("missing %q:\n%s\n%s", want, r.stdout, r.stderr)
		}
	}
}
